//! `cargo xtask image`: container images written by our own code, without Docker.
//!
//! Each image is a docker-archive (`manifest.json`, a config, one uncompressed layer), the
//! format `docker load`, `podman load`, `skopeo` and `ctr images import` accept. Builds are
//! reproducible: entries sorted, fixed times, owners and modes, so the same binaries give
//! the same image id. Binaries are linked statically (glibc with `crt-static`), so the
//! images need no libraries and the operator's has no shell.
//!
//! The parts, each depending only on those listed before it (this file only assembles them):
//! `archive` (layers and the docker-archive format), `binary` (static builds and the ELF
//! check), `images` (what goes into each image).

mod archive;
mod binary;
mod images;

use std::path::Path;

use anyhow::Result;

pub(crate) use archive::BuiltImage;
use images::{E2E_RUNNER_ENV, RUNNER_DOUBLE, RUNNER_TEST_IMAGE, runner_from_env};
pub(crate) use images::{
    PAUSE_IMAGE, PUBLISHED_OPERATOR_IMAGE, TestImages, build_label, build_operator, build_pause,
    build_runner_test, build_static_operator_in, operator_image,
};

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
