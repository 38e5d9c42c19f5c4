//! Layers and docker-archives, byte for byte reproducible (sorted entries, fixed times,
//! owners and modes), so the same binaries give the same image id and an unchanged image is
//! not rewritten.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde_json::json;
use sha2::{Digest as _, Sha256};

/// An image written to a docker-archive.
#[derive(Debug, Clone)]
pub(crate) struct BuiltImage {
    /// The image reference, e.g. `localhost/pause:frc`.
    pub(crate) reference: String,
    /// The docker-archive.
    pub(crate) tar: PathBuf,
    /// `sha256:` of the config: the image id.
    pub(crate) image_id: String,
}

/// What goes into an image's config.
#[derive(Debug, Default)]
pub(super) struct ImageConfig {
    /// `uid:gid`; empty: root.
    pub(super) user: String,
    /// Variables besides the default `PATH`.
    pub(super) env: Vec<String>,
    /// Empty: none.
    pub(super) entrypoint: Vec<String>,
    /// Empty: none.
    pub(super) cmd: Vec<String>,
    /// Empty: `/`.
    pub(super) working_dir: String,
}

/// One layer's entries by path (no leading `/`), sorted by the map.
#[derive(Debug, Default)]
pub(super) struct Layer {
    entries: BTreeMap<String, Entry>,
}

/// One layer entry; symlinks are root-owned 0777 like everywhere.
#[derive(Debug)]
enum Entry {
    File {
        data: Vec<u8>,
        mode: u32,
        owner: u64,
    },
    Dir {
        mode: u32,
        owner: u64,
    },
    Symlink {
        target: String,
    },
}

impl Layer {
    /// Adds a regular file with its parents.
    pub(super) fn file(&mut self, path: &str, data: Vec<u8>, mode: u32, owner: u64) {
        self.parents(path);
        self.entries
            .insert(path.to_owned(), Entry::File { data, mode, owner });
    }
    /// Adds a directory with its parents.
    pub(super) fn dir(&mut self, path: &str, mode: u32, owner: u64) {
        self.parents(path);
        self.entries
            .insert(path.to_owned(), Entry::Dir { mode, owner });
    }
    /// Adds a symbolic link with its parents.
    pub(super) fn symlink(&mut self, path: &str, target: &str) {
        self.parents(path);
        self.entries.insert(
            path.to_owned(),
            Entry::Symlink {
                target: target.to_owned(),
            },
        );
    }
    /// `/etc/passwd` and `/etc/group` with one group per user of the same id.
    pub(super) fn users(&mut self, users: &[(&str, u32)]) {
        let home = |name: &str| if name == "root" { "/root" } else { "/data" };
        let passwd: String = users
            .iter()
            .map(|(name, id)| format!("{name}:x:{id}:{id}:{name}:{}:/sbin/nologin\n", home(name)))
            .collect();
        let group: String = users
            .iter()
            .map(|(name, id)| format!("{name}:x:{id}:\n"))
            .collect();
        self.file("etc/passwd", passwd.into_bytes(), 0o644, 0);
        self.file("etc/group", group.into_bytes(), 0o644, 0);
    }
    /// Directories above `path` that are not there yet: root-owned, 0755.
    fn parents(&mut self, path: &str) {
        let mut prefix = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            self.entries.entry(prefix.clone()).or_insert(Entry::Dir {
                mode: 0o755,
                owner: 0,
            });
        }
    }

    /// The layer as an uncompressed tar: every header fixed, so equal layers are equal bytes.
    fn to_tar(&self) -> Result<Vec<u8>> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, entry) in &self.entries {
            let mut header = tar::Header::new_gnu();
            header.set_mtime(0);
            header.set_username("")?;
            header.set_groupname("")?;
            match entry {
                Entry::File { data, mode, owner } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_uid(*owner);
                    header.set_gid(*owner);
                    header.set_size(data.len() as u64);
                    builder.append_data(&mut header, path, data.as_slice())?;
                }
                Entry::Dir { mode, owner } => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(*mode);
                    header.set_uid(*owner);
                    header.set_gid(*owner);
                    header.set_size(0);
                    builder.append_data(&mut header, format!("{path}/"), std::io::empty())?;
                }
                Entry::Symlink { target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_uid(0);
                    header.set_gid(0);
                    header.set_size(0);
                    builder.append_link(&mut header, path, target)?;
                }
            }
        }
        Ok(builder.into_inner()?)
    }
}

/// `fs::read` naming the file in its error.
pub(super) fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Lowercase hex of the SHA-256 of `bytes`.
fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes the docker-archive at `out` unless an identical one is there; returns the image.
pub(super) fn write_image(
    out: &Path,
    reference: &str,
    layer: &Layer,
    config: &ImageConfig,
) -> Result<BuiltImage> {
    let archive = docker_archive(reference, layer, config)?;
    let image_id = format!("sha256:{}", archive.config_digest);
    if fs::read(out).ok().as_deref() != Some(archive.bytes.as_slice()) {
        let tmp = out.with_extension("tar.tmp");
        let mut file =
            fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        file.write_all(&archive.bytes)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, out).with_context(|| format!("renaming {}", tmp.display()))?;
    }
    eprintln!(
        "image: {reference} {image_id} {} ({} KiB)",
        out.display(),
        archive.bytes.len() / 1024
    );
    Ok(BuiltImage {
        reference: reference.to_owned(),
        tar: out.to_path_buf(),
        image_id,
    })
}

/// A docker-archive in memory and its image id (without `sha256:`).
struct Archive {
    bytes: Vec<u8>,
    config_digest: String,
}

/// Builds the docker-archive: one layer, its config, and `manifest.json` tagging `reference`.
fn docker_archive(reference: &str, layer: &Layer, config: &ImageConfig) -> Result<Archive> {
    let layer_tar = layer.to_tar()?;
    let diff_id = sha256_hex(&layer_tar);
    let mut container_config = serde_json::Map::new();
    let mut set = |key: &str, value: serde_json::Value, present: bool| {
        if present {
            container_config.insert(key.to_owned(), value);
        }
    };
    set("User", json!(config.user), !config.user.is_empty());
    let mut env =
        vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned()];
    env.extend(config.env.iter().cloned());
    set("Env", json!(env), true);
    set(
        "Entrypoint",
        json!(config.entrypoint),
        !config.entrypoint.is_empty(),
    );
    set("Cmd", json!(config.cmd), !config.cmd.is_empty());
    set(
        "WorkingDir",
        json!(config.working_dir),
        !config.working_dir.is_empty(),
    );
    let config_json = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        // A fixed date: the image id depends on the content only.
        "created": "1970-01-01T00:00:00Z",
        "config": container_config,
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
    }))?;
    let config_digest = sha256_hex(&config_json);
    let config_name = format!("{config_digest}.json");
    let layer_name = format!("{diff_id}/layer.tar");
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name,
        "RepoTags": [reference],
        "Layers": [layer_name],
    }]))?;

    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8], dir: bool| -> Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        if dir {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
        } else {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
            header.set_size(data.len() as u64);
        }
        builder.append_data(&mut header, path, data)?;
        Ok(())
    };
    add(&format!("{diff_id}/"), &[], true)?;
    add(&layer_name, &layer_tar, false)?;
    add(&config_name, &config_json, false)?;
    add("manifest.json", &manifest, false)?;
    Ok(Archive {
        bytes: builder.into_inner()?,
        config_digest,
    })
}
#[cfg(test)]
mod tests {
    use super::*;

    use std::io::Read as _;

    fn sample() -> (Layer, ImageConfig) {
        let mut layer = Layer::default();
        layer.file("bin/tool", b"#!tool".to_vec(), 0o755, 0);
        layer.dir("data", 0o755, 1000);
        layer.symlink("bin/alias", "tool");
        let config = ImageConfig {
            user: "1000:1000".into(),
            env: vec!["HOME=/data".into()],
            ..ImageConfig::default()
        };
        (layer, config)
    }

    /// Every file of a tar by path.
    fn files(tar_bytes: &[u8]) -> Result<BTreeMap<String, Vec<u8>>> {
        let mut files = BTreeMap::new();
        let mut reader = tar::Archive::new(tar_bytes);
        for entry in reader.entries()? {
            let mut entry = entry?;
            let path = entry.path()?.display().to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data)?;
            files.insert(path, data);
        }
        Ok(files)
    }

    #[test]
    fn the_same_inputs_give_the_same_bytes_and_image_id() -> Result<()> {
        let (layer, config) = sample();
        let a = docker_archive("localhost/x:1", &layer, &config)?;
        let (layer, config) = sample();
        let b = docker_archive("localhost/x:1", &layer, &config)?;
        assert_eq!(sha256_hex(&a.bytes), sha256_hex(&b.bytes));
        assert_eq!(a.config_digest, b.config_digest);
        Ok(())
    }

    #[test]
    fn manifest_names_the_config_and_the_layer_by_its_diff_id() -> Result<()> {
        let (layer, config) = sample();
        let archive = docker_archive("localhost/x:1", &layer, &config)?;
        let files = files(&archive.bytes)?;
        let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"])?;
        let config_name = manifest[0]["Config"].as_str().context("no Config")?;
        let layer_name = manifest[0]["Layers"][0].as_str().context("no Layers")?;
        assert_eq!(manifest[0]["RepoTags"][0], "localhost/x:1");
        let config: serde_json::Value = serde_json::from_slice(&files[config_name])?;
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            format!("sha256:{}", sha256_hex(&files[layer_name]))
        );
        assert_eq!(config["config"]["User"], "1000:1000");
        assert_eq!(config["config"]["Env"][1], "HOME=/data");
        assert_eq!(
            (config["architecture"].as_str(), config["os"].as_str()),
            (Some("amd64"), Some("linux"))
        );
        assert_eq!(
            format!("{}.json", sha256_hex(&files[config_name])),
            config_name
        );
        Ok(())
    }

    #[test]
    fn layer_entries_have_the_asked_modes_and_owners() -> Result<()> {
        let (layer, _) = sample();
        let tar_bytes = layer.to_tar()?;
        let mut reader = tar::Archive::new(tar_bytes.as_slice());
        let mut seen = BTreeMap::new();
        for entry in reader.entries()? {
            let entry = entry?;
            let header = entry.header();
            seen.insert(
                entry.path()?.display().to_string(),
                (
                    header.mode()?,
                    header.uid()?,
                    header.mtime()?,
                    header.username()?.map(str::to_owned),
                ),
            );
        }
        assert_eq!(seen["bin/tool"], (0o755, 0, 0, Some(String::new())));
        assert_eq!(seen["data/"], (0o755, 1000, 0, Some(String::new())));
        assert_eq!(seen["bin/"], (0o755, 0, 0, Some(String::new())));
        // Sorted by path, so insertion order never shows in the bytes.
        let paths: Vec<&String> = seen.keys().collect();
        assert_eq!(paths, ["bin/", "bin/alias", "bin/tool", "data/"]);
        Ok(())
    }
}
