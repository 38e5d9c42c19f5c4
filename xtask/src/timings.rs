//! How long each long build took on this machine, kept beside the build caches, so that the
//! next cold build can say how long it will take and how far it is.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;

/// The file under the cache root that holds the figures (step → seconds).
const FILE: &str = "build-timings.json";

fn path() -> Option<PathBuf> {
    crate::build_cache::cache_root()
        .ok()
        .map(|root| root.join(FILE))
}

fn read_all() -> BTreeMap<String, u64> {
    path()
        .and_then(|p| fs::read(p).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// The seconds `step` took the last time it ran here.
pub(crate) fn last(step: &str) -> Option<u64> {
    read_all().get(step).copied()
}

/// Records that `step` took `took`; a cache that cannot be written only loses the estimate.
pub(crate) fn record(step: &str, took: Duration) {
    let Some(path) = path() else { return };
    let mut all = read_all();
    all.insert(step.to_owned(), took.as_secs());
    if let Some(dir) = path.parent() {
        let _ = fs::create_dir_all(dir);
    }
    if let Ok(json) = serde_json::to_vec_pretty(&all) {
        let _ = fs::write(path, json);
    }
}

/// "last time on this machine: N s", else the figure measured on a 2-core machine.
pub(crate) fn expectation(step: &str, measured_elsewhere: &str) -> String {
    match last(step) {
        Some(secs) => format!("last time on this machine: {secs} s"),
        None => format!("first build here; {measured_elsewhere}"),
    }
}

/// Runs `build`, saying before how long it is expected to take and after how long it took.
pub(crate) fn timed<T>(
    step: &str,
    measured_elsewhere: &str,
    build: impl FnOnce() -> Result<T>,
) -> Result<T> {
    eprintln!("==> {step} ({})", expectation(step, measured_elsewhere));
    let started = Instant::now();
    let out = build()?;
    let took = started.elapsed();
    record(step, took);
    eprintln!("==> {step}: done in {} s", took.as_secs());
    Ok(out)
}
