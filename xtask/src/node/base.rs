//! The node's names, addresses, directory layout and the tools it runs (`ip`, `ctr`): the
//! base every other part of the node builds on, so those parts never depend on each other.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

/// The node's name (and the CN of its client certificate, `system:node:<name>`).
pub(crate) const NODE_NAME: &str = "frc-node";
/// The bridge the pods' veths attach to.
pub(crate) const BRIDGE: &str = "frc0";
/// The bridge's address: the pods' gateway, the node IP, and where the apiserver listens.
pub(crate) const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
/// The pod network.
pub(super) const POD_SUBNET: &str = "10.244.0.0/24";
/// The pause image every pod sandbox runs (written by `xtask/src/image/`, imported at `up`).
pub(crate) const SANDBOX_IMAGE: &str = crate::image::PAUSE_IMAGE;
/// How long `up` waits for the node to be Ready.
pub(crate) const NODE_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Kernel settings the kubelet changes (`protectKernelDefaults: false`): saved before it
/// starts, restored by [`teardown`].
pub(super) const KUBELET_SYSCTLS: [&str; 3] = [
    "vm/overcommit_memory",
    "kernel/panic",
    "kernel/panic_on_oops",
];

/// The conntrack settings kube-proxy may change. Its flags (`kube_proxy_args`) tell it to
/// leave every one as it is; they are saved and restored like the kubelet's all the same, so
/// a flag whose default moves in a later release cannot leave the machine changed. Present
/// only while the `nf_conntrack` module is loaded: one missing at `up` is not saved.
pub(super) const KUBE_PROXY_SYSCTLS: [&str; 6] = [
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
    "net/netfilter/nf_conntrack_tcp_be_liberal",
    "net/netfilter/nf_conntrack_udp_timeout",
    "net/netfilter/nf_conntrack_udp_timeout_stream",
];

/// The nftables tables (family, name) kube-proxy's nftables mode keeps all its rules in;
/// [`teardown`] deletes them, as `kube-proxy --cleanup` does.
pub(super) const KUBE_PROXY_TABLES: [(&str, &str); 2] =
    [("ip", "kube-proxy"), ("ip6", "kube-proxy")];

/// The iptables chains (table, chain) a kubelet makes unless `makeIPTablesUtilChains` is
/// false, and never removes: ours has it false since kube-proxy came, and [`teardown`]
/// removes those an earlier cluster's kubelet left, with the jumps to `KUBE-FIREWALL`.
pub(super) const KUBELET_IPTABLES_CHAINS: [(&str, &str); 5] = [
    ("filter", "KUBE-FIREWALL"),
    ("mangle", "KUBE-IPTABLES-HINT"),
    ("mangle", "KUBE-KUBELET-CANARY"),
    ("nat", "KUBE-KUBELET-CANARY"),
    ("filter", "KUBE-KUBELET-CANARY"),
];

/// The iptables commands (IPv4, IPv6) the kubelet uses, from Debian's iptables.
pub(super) const IPTABLES: [&str; 2] = ["/usr/sbin/iptables", "/usr/sbin/ip6tables"];

/// nft, from Debian's nftables: kube-proxy runs it to write its rules, `teardown` to remove
/// them.
pub(super) const NFT: &str = "/usr/sbin/nft";

/// Paths outside `target/cluster` that the kubelet or containerd create and nobody else uses.
pub(super) const FIXED_PATHS: [&str; 4] = [
    "/var/lib/kubelet/device-plugins",
    "/var/log/containers",
    "/run/containerd/s",
    "/run/containerd/runc",
];

/// cgroup v1 hierarchies (and the v2 one of a hybrid host) where the kubelet makes `kubepods`.
pub(super) const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// containerd from Debian's package.
pub(crate) const CONTAINERD: &str = "/usr/bin/containerd";

/// The node's directory layout under the cluster state dir.
#[derive(Debug, Clone)]
pub(crate) struct NodeDirs {
    /// `target/cluster/node`.
    pub(crate) root: PathBuf,
}

impl NodeDirs {
    /// The layout under the cluster state dir `cluster_dir`.
    pub(crate) fn new(cluster_dir: &Path) -> Self {
        Self {
            root: cluster_dir.join("node"),
        }
    }
    /// containerd's directory (config, root, state).
    pub(super) fn containerd(&self) -> PathBuf {
        self.root.join("containerd")
    }
    /// containerd's gRPC socket (kubelet's runtime endpoint and `ctr -a`).
    pub(crate) fn containerd_socket(&self) -> PathBuf {
        self.containerd().join("containerd.sock")
    }
    /// The CNI configuration directory.
    pub(super) fn cni_conf_dir(&self) -> PathBuf {
        self.root.join("cni").join("net.d")
    }
    /// The kubelet's root directory.
    pub(super) fn kubelet_root(&self) -> PathBuf {
        self.root.join("kubelet")
    }
    /// The KubeletConfiguration file.
    pub(super) fn kubelet_config(&self) -> PathBuf {
        self.root.join("kubelet-config.yaml")
    }
    /// Saved kernel settings; outside `node/` so a second `up` cannot overwrite the originals.
    pub(super) fn sysctl_originals(&self) -> PathBuf {
        self.root
            .parent()
            .unwrap_or(&self.root)
            .join("sysctl-originals.json")
    }
}

/// True if the network link `name` exists.
pub(super) fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Runs `ip` with `args`.
pub(super) fn ip(args: &[&str]) -> Result<()> {
    ip_output(args).map(drop)
}

/// Runs `ip` with `args` and returns its stdout.
pub(super) fn ip_output(args: &[&str]) -> Result<String> {
    tool_output("ip", "iproute2", &[], args)
}

/// Runs `nft` with `args` and returns its stdout.
pub(super) fn nft(args: &[&str]) -> Result<String> {
    tool_output(NFT, "nftables", &[], args)
}

/// Runs a node tool and returns its stdout; a failure names the tool's Debian package when
/// it cannot start, and carries its stderr when it fails.
pub(super) fn tool_output(
    program: &str,
    package: &str,
    fixed: &[&str],
    args: &[&str],
) -> Result<String> {
    let out = Command::new(program)
        .args(fixed)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program} (Debian package {package})"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ctr` against our containerd in the kubelet's namespace.
pub(crate) fn ctr(dirs: &NodeDirs, args: &[&str]) -> Result<String> {
    let socket = dirs.containerd_socket().display().to_string();
    tool_output("ctr", "containerd", &["-a", &socket, "-n", "k8s.io"], args)
}

/// One saved kernel setting (`/proc/sys` path and value).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Sysctl {
    pub(super) key: String,
    pub(super) value: String,
}
