//! What goes into each image (pause, operator, runner test, label) and their names: kept
//! apart from the archive format so that changing an image's content never risks its
//! reproducibility.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use super::archive::{BuiltImage, ImageConfig, Layer, read, write_image};
use super::binary::{build_static, build_static_in, has_interpreter};

/// The pause image every pod sandbox runs.
pub(crate) const PAUSE_IMAGE: &str = "localhost/pause:frc";
/// The operator image as built here, tagged with the release (the workspace's version).
pub(crate) const OPERATOR_IMAGE: &str = concat!(
    "localhost/forgejo-runner-controller:v",
    env!("CARGO_PKG_VERSION")
);
/// The runner test image: `/bin/forgejo-runner` is the double or `FRC_E2E_RUNNER`.
pub(crate) const RUNNER_TEST_IMAGE: &str = "localhost/forgejo-runner-test:dev";
/// The label image of kubernetes-mode tests and the demo (it has `/etc/frc-label-image`).
pub(crate) const LABEL_IMAGE: &str = "localhost/frc-label:dev";
/// The name `deploy/operator/deployment.yaml` uses; overlays rewrite it with `images:`.
pub(crate) const PUBLISHED_OPERATOR_IMAGE: &str = "ghcr.io/forgejo-runner-controller/operator";

/// The environment variable naming a real forgejo-runner binary for the runner test image.
pub(crate) const E2E_RUNNER_ENV: &str = "FRC_E2E_RUNNER";

/// Debian busybox-static's binary: the shell and tools of the runner and label images.
const BUSYBOX: &str = "/bin/busybox";
/// The busybox applets linked into `/bin`: what runner scripts and the tests call.
const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "echo", "cat", "ls", "id", "sleep", "cp", "env", "mkdir", "rm", "stat", "test", "true",
    "false", "printf", "grep", "head", "tail", "wc", "chmod", "touch", "date", "uname", "whoami",
    "hostname", "pwd", "mv", "sed", "kill", "ps", "[", "wget", "nc", "tr", "cut",
];
/// Our pause program (xtask/images/pause.c), compiled by `build_pause`.
const PAUSE_SOURCE: &str = include_str!("../../images/pause.c");
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
    operator_image(root, &binary, OPERATOR_IMAGE, "operator.tar")
}

/// The operator's static release binary of the workspace at `root`, built into `target_dir`.
pub(crate) fn build_static_operator_in(root: &Path, target_dir: &Path) -> Result<PathBuf> {
    build_static_in(root, target_dir, "operator", "operator")
}

/// The operator image of `binary`, named `reference`, written to `target/images/<file>`.
pub(crate) fn operator_image(
    root: &Path,
    binary: &Path,
    reference: &str,
    file: &str,
) -> Result<BuiltImage> {
    // A static binary that cannot start (e.g. a libc feature missing from libc.a) would only
    // show up as a CrashLoopBackOff in the cluster: run it once here.
    let help = Command::new(binary)
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
    layer.file("forgejo-runner-controller", read(binary)?, 0o755, 0);
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
        &images_dir(root)?.join(file),
        reference,
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
pub(super) fn runner_from_env() -> Option<PathBuf> {
    std::env::var_os(E2E_RUNNER_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The runner double's manifest, relative to the workspace root.
pub(super) const RUNNER_DOUBLE: &str = "crates/runner-double/Cargo.toml";

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_and_dynamic_binaries_are_told_apart() -> Result<()> {
        assert!(!has_interpreter(&read(Path::new(BUSYBOX))?)?);
        assert!(has_interpreter(&read(Path::new("/bin/ls"))?)?);
        assert!(has_interpreter(b"not an elf").is_err());
        Ok(())
    }

    /// The published image `deploy/` installs is the release the workspace's version names.
    #[test]
    fn deploy_installs_the_image_of_this_release() {
        let deployment = include_str!("../../../deploy/operator/deployment.yaml");
        let image = format!(
            "image: {}:v{}",
            super::PUBLISHED_OPERATOR_IMAGE,
            env!("CARGO_PKG_VERSION")
        );
        assert!(
            deployment.contains(&image),
            "deploy/operator/deployment.yaml does not name {image}"
        );
    }
}
