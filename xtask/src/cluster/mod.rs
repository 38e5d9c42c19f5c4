//! `cargo xtask cluster up|down|env`: a local Kubernetes cluster with one real node.
//!
//! etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy and
//! kubectl are built from source with Go, from the pinned wrapper modules in
//! `xtask/controlplane/{etcd,kube}` (see the README there), into a cache outside the
//! repository that is keyed by version:
//! `${FRC_CACHE_DIR:-$HOME/.cache/forgejo-runner-controller}/controlplane/<k8s>-etcd<etcd>/bin`.
//!
//! The node (`xtask/src/node/`) is containerd + runc from Debian, a kubelet and kube-proxy
//! (nftables mode): pods really run, and reach Services at their ClusterIPs. The apiserver
//! listens on the pod network's gateway address, which pods and this machine both reach (the
//! `kubernetes` Service has no endpoints, so kube-proxy refuses its ClusterIP). Pods with
//! `schedulerName: kubelet-stand-in` are left to a test that plays kubelet for states a
//! real node cannot produce (`crates/operator/tests/support/kubelet.rs`). The controller-manager runs only the
//! controllers the cluster needs (see `up.rs`); no pod garbage collector, so the
//! stand-in's pods on a node that does not exist stay.
//!
//! Everything a running cluster owns lives in `<workspace>/target/cluster/`: certificates,
//! kubeconfigs, etcd data, logs and `state.json` (pids and ports). `down` stops exactly the
//! recorded pids and removes all of it except `logs/`.
//!
//! The parts, each depending only on those listed before it (this file only assembles them):
//! `state` (state.json and paths), `binaries` (the Go build), `pki` (certificates),
//! `kubeconfig`, `process` (spawn, pid checks, signals), `kubectl` (probes of the running
//! cluster), `stop` (`down`), `restart` (reusing a running cluster), `up`, and `overlay`
//! (installing the operator's manifests and identity). Beside them, `keda` builds the KEDA
//! operator (from `xtask/controlplane/keda`) to compare with.

mod binaries;
mod keda;
mod kubeconfig;
mod kubectl;
mod overlay;
mod pki;
mod process;
mod restart;
mod state;
mod stop;
mod up;

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

pub(crate) use binaries::ensure_binaries;
pub use keda::print_keda;
pub(crate) use keda::{KEDA_CRDS, Keda, OperatorRun, ensure_keda, write_grpc_certs};
pub(crate) use overlay::{install_identity_from, write_overlay};
pub use overlay::{install_operator_identity, write_local_overlay, write_test_overlay};
pub use state::ClusterInfo;
pub use stop::down;
pub use up::up;

use process::process_matches;
use state::{admin_kubeconfig_path, read_state, running_state, state_dir};

use crate::node;

/// Pids `up` recorded, for the leftovers check after `down` (empty when not up).
pub fn recorded_pids(workspace_root: &Path) -> Result<Vec<u32>> {
    Ok(read_state(&state_dir(workspace_root))?
        .map(|s| s.processes.iter().map(|p| p.pid).collect())
        .unwrap_or_default())
}

/// What a `down` left behind on this machine (processes, mounts, the bridge, paths, cgroups,
/// unrestored kernel settings); empty when clean.
pub fn leftovers(workspace_root: &Path, pids: &[u32]) -> Vec<String> {
    node::leftovers(&state_dir(workspace_root), pids)
}

/// Imports a docker-archive image into the running node's containerd.
pub fn import_image(workspace_root: &Path, tar: &Path) -> Result<()> {
    node::import_image(&node::NodeDirs::new(&state_dir(workspace_root)), tar)
}

/// Path of the admin kubeconfig of the running cluster (error if not up).
pub fn env(workspace_root: &Path) -> Result<PathBuf> {
    let dir = state_dir(workspace_root);
    let state = running_state(&dir)?;
    if let Some(dead) = state.processes.iter().find(|p| !process_matches(p)) {
        bail!(
            "the local cluster is broken: {} (pid {}) is not running; see {} and run `cargo xtask cluster down` then `up`",
            dead.name,
            dead.pid,
            dir.join("logs")
                .join(format!("{}.log", dead.name))
                .display()
        );
    }
    Ok(admin_kubeconfig_path(workspace_root))
}
