//! The cache outside the repository that keeps long builds (the control plane, KEDA, the
//! previous release, build timings), so a `cargo clean` or a second checkout does not cost
//! them again.

use std::path::PathBuf;

use anyhow::{Result, anyhow};

/// The cache's root: `$FRC_CACHE_DIR`, else `$HOME/.cache/forgejo-runner-controller`.
pub(crate) fn cache_root() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("FRC_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home =
        std::env::var_os("HOME").ok_or_else(|| anyhow!("neither FRC_CACHE_DIR nor HOME is set"))?;
    Ok(PathBuf::from(home)
        .join(".cache")
        .join("forgejo-runner-controller"))
}
