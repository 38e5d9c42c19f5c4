//! `target/cluster/state.json`: what a running cluster is made of (pids, command lines,
//! ports), written after every process start so that `down` and a later `up` find exactly
//! what was started, even after xtask itself died.
//!
//! A leaf module: every other part of the cluster reads its paths and state from here.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use serde::{Deserialize, Serialize};

/// What `up` returns.
#[derive(Debug, Clone)]
pub struct ClusterInfo {
    pub admin_kubeconfig: PathBuf,
    pub server: String,
    pub version: String,
}

impl ClusterInfo {
    /// The info of the cluster `state` describes.
    pub(super) fn of(workspace_root: &Path, state: State) -> Self {
        Self {
            admin_kubeconfig: admin_kubeconfig_path(workspace_root),
            server: state.server,
            version: state.version,
        }
    }
}

/// Persisted in `target/cluster/state.json` while the cluster runs.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct State {
    pub(super) bin_dir: PathBuf,
    pub(super) server: String,
    pub(super) version: String,
    pub(super) etcd_client_port: u16,
    pub(super) apiserver_port: u16,
    pub(super) controller_manager_port: u16,
    pub(super) processes: Vec<Proc>,
}

/// Processes stopped after the others, once pods' containers are gone.
pub(super) const RUNTIME_PROCESS: &str = "containerd";

/// One process `up` started.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Proc {
    /// Binary name, e.g. `kube-apiserver`; checked against `/proc/<pid>/cmdline` before any signal.
    pub(super) name: String,
    pub(super) pid: u32,
    /// The program and arguments it was started with, to start it again if it dies.
    #[serde(default)]
    pub(super) program: PathBuf,
    #[serde(default)]
    pub(super) args: Vec<String>,
}

/// `<workspace>/target/cluster`: everything a running cluster owns.
pub(super) fn state_dir(root: &Path) -> PathBuf {
    root.join("target").join("cluster")
}

/// The admin (system:masters) kubeconfig of the cluster.
pub(super) fn admin_kubeconfig_path(root: &Path) -> PathBuf {
    state_dir(root).join("admin.kubeconfig")
}

/// The recorded state, or `None` when no cluster is up.
pub(super) fn read_state(dir: &Path) -> Result<Option<State>> {
    let path = dir.join("state.json");
    match fs::read(&path) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The recorded state; an error telling how to start the cluster when it is not up.
pub(super) fn running_state(dir: &Path) -> Result<State> {
    read_state(dir)?
        .ok_or_else(|| anyhow!("the local cluster is not up; run `cargo xtask cluster up`"))
}

/// Replaces `state.json` atomically (write to a temporary file, then rename).
pub(super) fn write_state(dir: &Path, state: &State) -> Result<()> {
    let tmp = dir.join("state.json.tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(state)?)?;
    fs::rename(&tmp, dir.join("state.json"))?;
    Ok(())
}
