//! The real node of the local cluster: containerd + runc, a bridge CNI network, a kubelet
//! and kube-proxy.
//!
//! Pods really run here. Everything the node owns lives under `target/cluster/node/`, except
//! what the kubelet and containerd cannot be told to put elsewhere (`/var/lib/kubelet/
//! device-plugins`, `/var/log/containers`, `/run/containerd/{s,runc}`), the bridge `frc0`,
//! the `kubepods` cgroups, three kernel settings the kubelet rewrites, and kube-proxy's
//! nftables tables (`ip kube-proxy`, `ip6 kube-proxy`, which it leaves when stopped).
//! [`teardown`] removes or restores each of them (and the iptables chains a kubelet of an
//! earlier cluster made: ours makes none), and [`leftovers`] lists whatever is still there,
//! so a test can prove `cluster down` is clean.
//!
//! The pod network is a /24 behind the bridge. Its gateway address is also where the
//! apiserver, the kubelet and test servers listen for pods, since loopback is not theirs.
//! kube-proxy (nftables mode) makes Service ClusterIPs (10.0.0.0/24) lead to their ready
//! pods, masquerading as the gateway address; the `kubernetes` Service has no endpoints,
//! so pods reach the apiserver at the gateway address, not at its ClusterIP.
//!
//! The parts: `base` (names, addresses, layout, tools), `config` (configuration files and
//! command lines), `teardown` (saving and restoring the machine); this file starts and
//! stops the node with them.

mod base;
mod config;
mod teardown;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

pub(crate) use base::{BRIDGE, CONTAINERD, NODE_IP, NODE_NAME, NODE_READY_TIMEOUT, NodeDirs};
use base::{ctr, ip, ip_output, link_exists};
pub(crate) use config::{containerd_args, kube_proxy_args, kubelet_args, write_configs};
pub(crate) use teardown::{current_sysctls, leftovers, save_sysctls, teardown};

/// Creates the bridge with the gateway address, so the apiserver can listen there before
/// the first pod exists (the bridge plugin adopts an existing bridge).
pub(crate) fn create_bridge() -> Result<()> {
    if !link_exists(BRIDGE) {
        ip(&["link", "add", BRIDGE, "type", "bridge"])?;
    }
    let cidr = format!("{NODE_IP}/24");
    let shown = ip_output(&["-4", "addr", "show", "dev", BRIDGE])?;
    if !shown.contains(&format!("inet {cidr}")) {
        ip(&["addr", "add", &cidr, "dev", BRIDGE])?;
    }
    ip(&["link", "set", BRIDGE, "up"])
}

/// Waits for containerd's socket.
pub(crate) fn wait_for_containerd(dirs: &NodeDirs, alive: impl Fn() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if dirs.containerd_socket().exists() && ctr(dirs, &["version"]).is_ok() {
            return Ok(());
        }
        if !alive() {
            bail!("containerd exited at start");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("containerd's socket did not answer within 30s")
}

/// Imports a docker-archive into the node's image store.
pub(crate) fn import_image(dirs: &NodeDirs, tar: &Path) -> Result<()> {
    ctr(dirs, &["images", "import", &tar.display().to_string()])
        .with_context(|| format!("importing {}", tar.display()))
        .map(drop)
}

/// Kills the containers the kubelet did not stop (it was stopped first), so their shims exit
/// and containerd's mounts go with them.
pub(crate) fn kill_containers(dirs: &NodeDirs) {
    let Ok(tasks) = ctr(dirs, &["tasks", "ls", "-q"]) else {
        return;
    };
    for task in tasks.lines().map(str::trim).filter(|t| !t.is_empty()) {
        let _ = ctr(dirs, &["tasks", "kill", "-s", "SIGKILL", task]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while ctr(dirs, &["tasks", "rm", task]).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
