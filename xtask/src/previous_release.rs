//! The previous release, for the upgrade tier (`crates/operator/tests/upgrade.rs`): its
//! source taken from git history, its operator image built once per commit and cached beside
//! the control plane, and kustomize overlays of its `deploy/` and of ours that serve the same
//! namespace, so the test can install the old operator and `kubectl apply -k` the new one
//! over it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::cluster;
use crate::image::{self, BuiltImage};

/// The release the upgrade tier upgrades from. Until v0.1.0 it is main as it last landed
/// before the tag (0c7a0c1); after a release, set it to the commit of the newest tag.
pub(crate) const PREVIOUS_RELEASE: &str = "0c7a0c1e3e5b21f3d5f7c9f031ade34ff23e7e31";
/// The namespace both installs of the upgrade tier serve (`--namespace`).
pub(crate) const UPGRADE_NAMESPACE: &str = "frc-upgrade";

/// The previous release's operator image and the two overlays of the upgrade tier.
pub(crate) struct Upgrade {
    /// The previous release's operator image.
    pub(crate) image: BuiltImage,
    /// `target/cluster/overlay-previous`: its `deploy/` with its image.
    pub(crate) previous_overlay: PathBuf,
    /// `target/cluster/overlay-upgrade`: our `deploy/` with our image.
    pub(crate) current_overlay: PathBuf,
}

/// The cache directory of the previous release's source, binary and build.
fn cache_dir() -> Result<PathBuf> {
    Ok(crate::build_cache::cache_root()?.join("previous-release"))
}

/// Builds (once per commit) the previous release's operator image.
pub(crate) fn build_image(root: &Path) -> Result<BuiltImage> {
    let dir = cache_dir()?.join(PREVIOUS_RELEASE);
    let binary = dir.join("operator");
    if !binary.is_file() {
        let src = source(root, &dir)?;
        // Its own target directory: the previous source has the same crate names and
        // relative paths as ours, so a shared one would mix up their artifacts.
        let built = image::build_static_operator_in(&src, &cache_dir()?.join("target"))?;
        let partial = dir.join("operator.partial");
        fs::copy(&built, &partial)
            .with_context(|| format!("copying {} to {}", built.display(), partial.display()))?;
        fs::rename(&partial, &binary)?;
    }
    let short = &PREVIOUS_RELEASE[..7];
    image::operator_image(
        root,
        &binary,
        &format!("localhost/forgejo-runner-controller:{short}"),
        "operator-previous.tar",
    )
}

/// Writes the overlays of the upgrade tier (the cluster must be running).
pub(crate) fn overlays(root: &Path, previous: BuiltImage, current_image: &str) -> Result<Upgrade> {
    let src = source(root, &cache_dir()?.join(PREVIOUS_RELEASE))?;
    let previous_overlay = cluster::write_overlay(
        root,
        "overlay-previous",
        &src.join("deploy"),
        &previous.reference,
        UPGRADE_NAMESPACE,
    )?;
    let current_overlay = cluster::write_overlay(
        root,
        "overlay-upgrade",
        &root.join("deploy"),
        current_image,
        UPGRADE_NAMESPACE,
    )?;
    Ok(Upgrade {
        image: previous,
        previous_overlay,
        current_overlay,
    })
}

/// The previous release's source tree under `dir/src`, taken from git once.
fn source(root: &Path, dir: &Path) -> Result<PathBuf> {
    let src = dir.join("src");
    if src.join("Cargo.toml").is_file() {
        return Ok(src);
    }
    let commit = format!("{PREVIOUS_RELEASE}^{{commit}}");
    let known = Command::new("git")
        .args(["cat-file", "-e", &commit])
        .current_dir(root)
        .status()
        .context("running git (the upgrade tier takes the previous release from history)")?;
    if !known.success() {
        bail!(
            "the upgrade tier needs the previous release {PREVIOUS_RELEASE} in this clone's \
             history; a shallow clone lacks it: run `git fetch --unshallow`"
        );
    }
    fs::create_dir_all(dir)?;
    let tar = dir.join("src.tar");
    let archived = Command::new("git")
        .args(["archive", "--format=tar", "-o"])
        .arg(&tar)
        .arg(PREVIOUS_RELEASE)
        .current_dir(root)
        .status()
        .context("running git archive")?;
    if !archived.success() {
        bail!("git archive {PREVIOUS_RELEASE} failed ({archived})");
    }
    let partial = dir.join("src.partial");
    if partial.exists() {
        fs::remove_dir_all(&partial)?;
    }
    let file = fs::File::open(&tar).with_context(|| format!("opening {}", tar.display()))?;
    tar::Archive::new(file)
        .unpack(&partial)
        .with_context(|| format!("unpacking {}", tar.display()))?;
    fs::rename(&partial, &src)?;
    fs::remove_file(&tar)?;
    Ok(src)
}
