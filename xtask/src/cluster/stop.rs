//! `cargo xtask cluster down`: stops exactly the recorded processes, in an order that lets
//! the kubelet clean up its pods first, then tears the node down, so that nothing of the
//! cluster is left on the machine (checked by the cluster tier's leftovers test).

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use super::binaries::Binaries;
use super::kubectl::kubectl;
use super::process::{process_matches, stop_processes};
use super::state::{Proc, RUNTIME_PROCESS, State, read_state, state_dir};
use crate::node;

/// Stops exactly the processes `up` started (by recorded pid), tears the node down (mounts,
/// bridge, cgroups, kernel settings) and removes the cluster's data.
pub fn down(workspace_root: &Path) -> Result<()> {
    let dir = state_dir(workspace_root);
    if let Some(state) = read_state(&dir)? {
        stop_all(&dir, &state)?;
        eprintln!("cluster: stopped");
    } else {
        eprintln!("cluster: not running");
        node::teardown(&dir)?;
    }
    if dir.exists() {
        // Keep logs/ for post-mortems; everything else belongs to the stopped cluster.
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.file_name().is_some_and(|n| n == "logs") {
                continue;
            }
            if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            }
            .with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// Deletes the pods (the kubelet unmounts their volumes and removes their veths), stops
/// everything but containerd newest first, kills containers left over, stops containerd and
/// tears the node down.
pub(super) fn stop_all(dir: &Path, state: &State) -> Result<()> {
    let bins = Binaries {
        bin_dir: state.bin_dir.clone(),
    };
    let admin = dir.join("admin.kubeconfig");
    let kubelet_up = state
        .processes
        .iter()
        .any(|p| p.name == "kubelet" && process_matches(p));
    if kubelet_up && admin.exists() {
        // Controllers first, so nothing recreates the pods being deleted.
        for kinds in ["deployments,replicasets,jobs", "pods"] {
            if let Err(e) = kubectl(
                &bins,
                &admin,
                &[
                    "delete",
                    kinds,
                    "--all",
                    "--all-namespaces",
                    "--wait=true",
                    "--timeout=60s",
                ],
            ) {
                eprintln!("cluster: deleting {kinds} before stopping: {e:#}");
            }
        }
    }
    let (runtime, rest): (Vec<Proc>, Vec<Proc>) = state
        .processes
        .iter()
        .cloned()
        .partition(|p| p.name == RUNTIME_PROCESS);
    stop_processes(&rest)?;
    let dirs = node::NodeDirs::new(dir);
    if runtime.iter().any(process_matches) {
        node::kill_containers(&dirs);
    }
    stop_processes(&runtime)?;
    node::teardown(dir)
}
