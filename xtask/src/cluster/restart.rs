//! A second `up` on a cluster that is already there: reuse it when every component runs,
//! otherwise start again only what died on the same data (etcd keeps the objects), because a
//! full restart costs a minute and loses what a developer had deployed.

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::binaries::Binaries;
use super::kubectl::{apiserver_ready, etcd_healthy, kubectl_quiet, wait_for_node};
use super::process::{process_matches, spawn_program, wait_until};
use super::state::{
    ClusterInfo, RUNTIME_PROCESS, State, admin_kubeconfig_path, read_state, write_state,
};
use super::stop::down;
use crate::node;

/// The running cluster recorded in `dir`, started again where components died; `None` when
/// there is none (or what was left of a broken one has been stopped).
pub(super) fn reuse_running(
    workspace_root: &Path,
    bins: &Binaries,
    dir: &Path,
) -> Result<Option<ClusterInfo>> {
    let Some(mut state) = read_state(dir)? else {
        return Ok(None);
    };
    if state.processes.iter().all(process_matches) && apiserver_ready(bins, workspace_root) {
        eprintln!(
            "cluster: already up at {} ({})",
            state.server, state.version
        );
        return Ok(Some(ClusterInfo::of(workspace_root, state)));
    }
    // Some components died: start them again on the same data (etcd keeps the objects).
    match restart_what_died(workspace_root, dir, &mut state) {
        Ok(()) => return Ok(Some(ClusterInfo::of(workspace_root, state))),
        Err(error) => eprintln!(
            "cluster: restarting what died failed ({error:#}); stopping what is left of it"
        ),
    }
    down(workspace_root)?;
    Ok(None)
}

/// Starts again, in start order and with their recorded command lines, the components of a
/// running cluster that died, then waits until the apiserver and the node are ready.
fn restart_what_died(workspace_root: &Path, dir: &Path, state: &mut State) -> Result<()> {
    let bins = Binaries {
        bin_dir: state.bin_dir.clone(),
    };
    let logs = dir.join("logs");
    let dirs = node::NodeDirs::new(dir);
    for index in 0..state.processes.len() {
        if process_matches(&state.processes[index]) {
            continue;
        }
        let dead = state.processes[index].clone();
        if dead.args.is_empty() {
            bail!("{} died and its command line was not recorded", dead.name);
        }
        eprintln!(
            "cluster: {} (pid {}) is not running; starting it again",
            dead.name, dead.pid
        );
        let started = spawn_program(&dead.program, &dead.name, &logs, &dead.args)?;
        state.processes[index] = started.clone();
        write_state(dir, state)?;
        match dead.name.as_str() {
            RUNTIME_PROCESS => node::wait_for_containerd(&dirs, || process_matches(&started))?,
            "etcd" => {
                let port = state.etcd_client_port;
                wait_until(&started, &logs, "etcd /health", || etcd_healthy(port))?;
            }
            _ => {}
        }
    }
    let admin = admin_kubeconfig_path(workspace_root);
    let apiserver = state
        .processes
        .iter()
        .find(|p| p.name == "kube-apiserver")
        .cloned()
        .context("the state names no kube-apiserver")?;
    wait_until(&apiserver, &logs, "kube-apiserver /readyz", || {
        kubectl_quiet(&bins, &admin, &["get", "--raw=/readyz"])
    })?;
    if let Some(kubelet) = state.processes.iter().find(|p| p.name == "kubelet") {
        wait_for_node(&bins, &admin, kubelet, &logs)?;
    }
    eprintln!(
        "cluster: up again at {} ({}), data kept",
        state.server, state.version
    );
    Ok(())
}
