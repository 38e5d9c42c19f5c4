//! Static release builds of our binaries and the check that they are static: the images
//! carry no libraries, so a dynamically linked binary would only fail inside a pod.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use super::archive::read;

/// The target the static binaries are built for: an explicit `--target` keeps
/// `crt-static` off build scripts and proc macros, and off the host build's artifacts.
const TARGET: &str = "x86_64-unknown-linux-gnu";
/// Builds `bin` of `package` in release mode, statically linked; returns its path.
pub(super) fn build_static(root: &Path, package: &str, bin: &str) -> Result<PathBuf> {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| if d.is_absolute() { d } else { root.join(d) })
        .unwrap_or_else(|| root.join("target"));
    build_static_in(root, &target_dir, package, bin)
}

/// [`build_static`] of the workspace at `root` into `target_dir`.
pub(super) fn build_static_in(
    root: &Path,
    target_dir: &Path,
    package: &str,
    bin: &str,
) -> Result<PathBuf> {
    let step = format!("cargo build --release -p {package} (static, {TARGET})");
    crate::timings::timed(
        &step,
        "up to 40 min cold on a 2-core machine busy with other builds (the operator, measured 2026-12), seconds when nothing changed",
        || {
            let status = Command::new("cargo")
                .args([
                    "build",
                    "--release",
                    "--target",
                    TARGET,
                    "-p",
                    package,
                    "--bin",
                    bin,
                ])
                .env("RUSTFLAGS", "-C target-feature=+crt-static")
                .env("CARGO_TARGET_DIR", target_dir)
                .current_dir(root)
                .status()
                .context("running cargo build")?;
            if !status.success() {
                bail!("cargo build --release -p {package} failed");
            }
            Ok(())
        },
    )?;
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
pub(super) fn has_interpreter(elf: &[u8]) -> Result<bool> {
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
