//! `cargo xtask image`: container images written by our own code, without Docker.
//!
//! Each image is a docker-archive (`manifest.json`, a config, one uncompressed layer), the
//! format `docker load`, `podman load`, `skopeo` and `ctr images import` accept. Builds are
//! reproducible: entries sorted, fixed times, owners and modes, so the same binaries give
//! the same image id. Binaries are linked statically (glibc with `crt-static`), so the
//! images need no libraries and the operator's has no shell.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use serde_json::json;
use sha2::{Digest as _, Sha256};

/// The pause image every pod sandbox runs.
pub(crate) const PAUSE_IMAGE: &str = "localhost/pause:frc";
/// The operator image as built here.
pub(crate) const OPERATOR_IMAGE: &str = "localhost/forgejo-runner-controller:dev";
/// The runner test image: `/bin/forgejo-runner` is the double or `FRC_E2E_RUNNER`.
pub(crate) const RUNNER_TEST_IMAGE: &str = "localhost/forgejo-runner-test:dev";
/// The label image of kubernetes-mode tests and the demo (it has `/etc/frc-label-image`).
pub(crate) const LABEL_IMAGE: &str = "localhost/frc-label:dev";
/// The name `deploy/operator/deployment.yaml` uses; overlays rewrite it with `images:`.
pub(crate) const PUBLISHED_OPERATOR_IMAGE: &str = "ghcr.io/forgejo-runner-controller/operator";

/// The environment variable naming a real forgejo-runner binary for the runner test image.
pub(crate) const E2E_RUNNER_ENV: &str = "FRC_E2E_RUNNER";

/// The target the static binaries are built for: an explicit `--target` keeps
/// `crt-static` off build scripts and proc macros, and off the host build's artifacts.
const TARGET: &str = "x86_64-unknown-linux-gnu";
/// Debian busybox-static's binary: the shell and tools of the runner and label images.
const BUSYBOX: &str = "/bin/busybox";
/// The busybox applets linked into `/bin`: what runner scripts and the tests call.
const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "echo", "cat", "ls", "id", "sleep", "cp", "env", "mkdir", "rm", "stat", "test", "true",
    "false", "printf", "grep", "head", "tail", "wc", "chmod", "touch", "date", "uname", "whoami",
    "hostname", "pwd", "mv", "sed", "kill", "ps", "[",
];
/// Our pause program (xtask/images/pause.c), compiled by `build_pause`.
const PAUSE_SOURCE: &str = include_str!("../images/pause.c");

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

/// The images the cluster tier and the demo import.
#[derive(Debug, Clone)]
pub(crate) struct TestImages {
    /// The operator.
    pub(crate) operator: BuiltImage,
    /// The runner test image.
    pub(crate) runner: BuiltImage,
    /// The label image.
    pub(crate) label: BuiltImage,
    /// The pause image.
    pub(crate) pause: BuiltImage,
}

impl TestImages {
    /// Every image, for importing.
    pub(crate) fn all(&self) -> [&BuiltImage; 4] {
        [&self.pause, &self.operator, &self.runner, &self.label]
    }
}

/// Builds every image; `runner` overrides the binary of the runner test image.
pub(crate) fn build_all(root: &Path, runner: Option<&Path>) -> Result<TestImages> {
    Ok(TestImages {
        pause: build_pause(root)?,
        operator: build_operator(root)?,
        runner: build_runner_test(root, runner)?,
        label: build_label(root)?,
    })
}

/// `cargo xtask image`: builds every image and prints where they are.
pub(crate) fn run(root: &Path, runner: Option<&Path>) -> Result<()> {
    let mut images = vec![build_pause(root)?, build_operator(root)?];
    // A shell script standing in for the runner would prove nothing: without a runner
    // binary the CLI leaves that image out, while `build_all` (tests, demo) fails.
    if runner.is_none() && runner_from_env().is_none() && !root.join(RUNNER_DOUBLE).is_file() {
        eprintln!(
            "image: skipping {RUNNER_TEST_IMAGE}: {RUNNER_DOUBLE} does not exist yet; pass \
             --runner PATH or set {E2E_RUNNER_ENV} to a forgejo-runner binary"
        );
    } else {
        images.push(build_runner_test(root, runner)?);
    }
    images.push(build_label(root)?);
    for image in &images {
        println!(
            "{}\t{}\t{}",
            image.reference,
            image.image_id,
            image.tar.display()
        );
    }
    Ok(())
}

/// `<root>/target/images`, created if needed.
fn images_dir(root: &Path) -> Result<PathBuf> {
    let dir = root.join("target").join("images");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The pause image: our own tiny C program, linked statically.
pub(crate) fn build_pause(root: &Path) -> Result<BuiltImage> {
    let dir = images_dir(root)?;
    let source = dir.join("pause.c");
    let binary = dir.join("pause");
    if fs::read_to_string(&source).ok().as_deref() != Some(PAUSE_SOURCE) || !binary.exists() {
        fs::write(&source, PAUSE_SOURCE)
            .with_context(|| format!("writing {}", source.display()))?;
        let status = Command::new("gcc")
            .args(["-static", "-Os", "-s", "-o"])
            .arg(&binary)
            .arg(&source)
            .status()
            .context("running gcc (install the Debian packages gcc and libc6-dev)")?;
        if !status.success() {
            bail!(
                "gcc could not build the pause program; install the Debian packages gcc and libc6-dev"
            );
        }
    }
    let mut layer = Layer::default();
    layer.file("pause", read(&binary)?, 0o755, 0);
    write_image(
        &dir.join("pause.tar"),
        PAUSE_IMAGE,
        &layer,
        &ImageConfig {
            entrypoint: vec!["/pause".into()],
            ..ImageConfig::default()
        },
    )
}

/// The operator image: the static release binary, uid 65532, CA certificates, no shell.
pub(crate) fn build_operator(root: &Path) -> Result<BuiltImage> {
    let binary = build_static(root, "operator", "operator")?;
    // A static binary that cannot start (e.g. a libc feature missing from libc.a) would only
    // show up as a CrashLoopBackOff in the cluster: run it once here.
    let help = Command::new(&binary)
        .arg("--help")
        .output()
        .with_context(|| format!("running {} --help", binary.display()))?;
    if !help.status.success() {
        bail!(
            "{} --help failed ({}): {}",
            binary.display(),
            help.status,
            String::from_utf8_lossy(&help.stderr)
        );
    }
    let mut layer = Layer::default();
    layer.file("forgejo-runner-controller", read(&binary)?, 0o755, 0);
    layer.users(&[("root", 0), ("nonroot", 65532)]);
    layer.dir("tmp", 0o1777, 0);
    let ca = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if ca.exists() {
        layer.file("etc/ssl/certs/ca-certificates.crt", read(ca)?, 0o644, 0);
    } else {
        // The operator also trusts its built-in webpki roots, so this is not fatal.
        eprintln!(
            "image: warning: {} is missing (Debian package ca-certificates); the operator image has no CA bundle",
            ca.display()
        );
    }
    write_image(
        &images_dir(root)?.join("operator.tar"),
        OPERATOR_IMAGE,
        &layer,
        &ImageConfig {
            user: "65532:65532".into(),
            entrypoint: vec!["/forgejo-runner-controller".into()],
            ..ImageConfig::default()
        },
    )
}

/// The runner test image, laid out like `data.forgejo.org/forgejo/runner`: the binary at
/// `/bin/forgejo-runner`, uid 1000, `HOME=/data`, busybox for `sh`, no entrypoint.
pub(crate) fn build_runner_test(root: &Path, runner: Option<&Path>) -> Result<BuiltImage> {
    let binary = match runner.map(Path::to_path_buf).or_else(runner_from_env) {
        Some(path) => {
            if !path.is_file() {
                bail!("the runner binary {} does not exist", path.display());
            }
            if has_interpreter(&read(&path)?)? {
                eprintln!(
                    "image: warning: {} is dynamically linked; the runner test image has no libraries",
                    path.display()
                );
            }
            eprintln!("image: runner test image with {}", path.display());
            path
        }
        None => build_runner_double(root)?,
    };
    let mut layer = busybox_layer()?;
    layer.file("bin/forgejo-runner", read(&binary)?, 0o755, 0);
    layer.users(&[("root", 0), ("runner", 1000)]);
    layer.dir("data", 0o755, 1000);
    write_image(
        &images_dir(root)?.join("runner-test.tar"),
        RUNNER_TEST_IMAGE,
        &layer,
        &ImageConfig {
            user: "1000:1000".into(),
            env: vec!["HOME=/data".into()],
            working_dir: "/data".into(),
            ..ImageConfig::default()
        },
    )
}

/// The runner binary named by `FRC_E2E_RUNNER`, if set and not empty.
fn runner_from_env() -> Option<PathBuf> {
    std::env::var_os(E2E_RUNNER_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The runner double's manifest, relative to the workspace root.
const RUNNER_DOUBLE: &str = "crates/runner-double/Cargo.toml";

/// The runner double (crates/runner-double) built statically; a clear error while it is absent.
fn build_runner_double(root: &Path) -> Result<PathBuf> {
    if !root.join(RUNNER_DOUBLE).is_file() {
        bail!(
            "the runner double is missing ({RUNNER_DOUBLE} does not exist): pass --runner PATH or \
             set {E2E_RUNNER_ENV} to a forgejo-runner binary"
        );
    }
    build_static(root, "forgejo-runner-double", "forgejo-runner").with_context(|| {
        format!(
            "the runner double is missing: crates/runner-double does not build; pass --runner \
             PATH or set {E2E_RUNNER_ENV} to a forgejo-runner binary"
        )
    })
}

/// The label image of kubernetes mode: busybox and a marker file only it has.
pub(crate) fn build_label(root: &Path) -> Result<BuiltImage> {
    let mut layer = busybox_layer()?;
    layer.users(&[("root", 0), ("runner", 1000)]);
    layer.file(
        "etc/frc-label-image",
        b"frc-label-image\n".to_vec(),
        0o644,
        0,
    );
    write_image(
        &images_dir(root)?.join("label.tar"),
        LABEL_IMAGE,
        &layer,
        &ImageConfig {
            cmd: vec!["/bin/sh".into()],
            ..ImageConfig::default()
        },
    )
}

/// A layer with static busybox, its applets in `/bin` and a world-writable `/tmp`.
fn busybox_layer() -> Result<Layer> {
    let busybox = fs::read(BUSYBOX)
        .with_context(|| format!("reading {BUSYBOX}: install the Debian package busybox-static"))?;
    if has_interpreter(&busybox)? {
        bail!("{BUSYBOX} is not static: install the Debian package busybox-static");
    }
    let mut layer = Layer::default();
    layer.file("bin/busybox", busybox, 0o755, 0);
    for applet in BUSYBOX_APPLETS {
        layer.symlink(&format!("bin/{applet}"), "busybox");
    }
    layer.dir("tmp", 0o1777, 0);
    Ok(layer)
}

/// Builds `bin` of `package` in release mode, statically linked; returns its path.
fn build_static(root: &Path, package: &str, bin: &str) -> Result<PathBuf> {
    eprintln!("image: cargo build --release -p {package} (static, {TARGET})");
    let status = Command::new("cargo")
        .args([
            "build",
            "--quiet",
            "--release",
            "--target",
            TARGET,
            "-p",
            package,
            "--bin",
            bin,
        ])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .current_dir(root)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release -p {package} failed");
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| if d.is_absolute() { d } else { root.join(d) })
        .unwrap_or_else(|| root.join("target"));
    let path = target_dir.join(TARGET).join("release").join(bin);
    if has_interpreter(&read(&path)?)? {
        bail!(
            "{} is dynamically linked although built with crt-static",
            path.display()
        );
    }
    Ok(path)
}

/// Whether an ELF file asks for a dynamic loader (a `PT_INTERP` program header).
fn has_interpreter(elf: &[u8]) -> Result<bool> {
    const PT_INTERP: u32 = 3;
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        bail!("not a 64-bit little-endian ELF file");
    }
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]);
    let phoff = usize::try_from(u64::from_le_bytes(elf[32..40].try_into()?))?;
    let phentsize = usize::from(u16_at(54));
    let phnum = usize::from(u16_at(56));
    for i in 0..phnum {
        // Checked: the offsets come from the file, which may be truncated or corrupt.
        let header = i
            .checked_mul(phentsize)
            .and_then(|off| off.checked_add(phoff))
            .and_then(|at| elf.get(at..at.checked_add(4)?));
        let Some(header) = header else {
            bail!("truncated ELF program headers");
        };
        if u32::from_le_bytes(header.try_into()?) == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

/// What goes into an image's config.
#[derive(Debug, Default)]
struct ImageConfig {
    /// `uid:gid`; empty: root.
    user: String,
    /// Variables besides the default `PATH`.
    env: Vec<String>,
    /// Empty: none.
    entrypoint: Vec<String>,
    /// Empty: none.
    cmd: Vec<String>,
    /// Empty: `/`.
    working_dir: String,
}

/// One layer's entries by path (no leading `/`), sorted by the map.
#[derive(Debug, Default)]
struct Layer {
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
    fn file(&mut self, path: &str, data: Vec<u8>, mode: u32, owner: u64) {
        self.parents(path);
        self.entries
            .insert(path.to_owned(), Entry::File { data, mode, owner });
    }
    /// Adds a directory with its parents.
    fn dir(&mut self, path: &str, mode: u32, owner: u64) {
        self.parents(path);
        self.entries
            .insert(path.to_owned(), Entry::Dir { mode, owner });
    }
    /// Adds a symbolic link with its parents.
    fn symlink(&mut self, path: &str, target: &str) {
        self.parents(path);
        self.entries.insert(
            path.to_owned(),
            Entry::Symlink {
                target: target.to_owned(),
            },
        );
    }
    /// `/etc/passwd` and `/etc/group` with one group per user of the same id.
    fn users(&mut self, users: &[(&str, u32)]) {
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
fn read(path: &Path) -> Result<Vec<u8>> {
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
fn write_image(
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

    #[test]
    fn static_and_dynamic_binaries_are_told_apart() -> Result<()> {
        assert!(!has_interpreter(&read(Path::new(BUSYBOX))?)?);
        assert!(has_interpreter(&read(Path::new("/bin/ls"))?)?);
        assert!(has_interpreter(b"not an elf").is_err());
        Ok(())
    }
}
