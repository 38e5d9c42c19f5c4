//! The real node of the local cluster: containerd + runc, a bridge CNI network, a kubelet.
//!
//! Pods really run here. Everything the node owns lives under `target/cluster/node/`, except
//! what the kubelet and containerd cannot be told to put elsewhere (`/var/lib/kubelet/
//! device-plugins`, `/var/log/containers`, `/run/containerd/{s,runc}`), the bridge `frc0`,
//! the `kubepods` cgroups and three kernel settings the kubelet rewrites. [`teardown`]
//! removes or restores each of them, and [`leftovers`] lists whatever is still there, so a
//! test can prove `cluster down` is clean.
//!
//! The pod network is a /24 behind the bridge. Its gateway address is also where the
//! apiserver, the kubelet and test servers listen for pods: there is no kube-proxy, so
//! pods cannot use Service IPs, and loopback is not theirs.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The node's name (and the CN of its client certificate, `system:node:<name>`).
pub(crate) const NODE_NAME: &str = "frc-node";
/// The bridge the pods' veths attach to.
pub(crate) const BRIDGE: &str = "frc0";
/// The bridge's address: the pods' gateway, the node IP, and where the apiserver listens.
pub(crate) const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
/// The pod network.
const POD_SUBNET: &str = "10.244.0.0/24";
/// The pause image every pod sandbox runs (written by `image.rs`, imported at `up`).
pub(crate) const SANDBOX_IMAGE: &str = crate::image::PAUSE_IMAGE;
/// How long `up` waits for the node to be Ready.
pub(crate) const NODE_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Kernel settings the kubelet changes (`protectKernelDefaults: false`): saved before it
/// starts, restored by [`teardown`].
const KUBELET_SYSCTLS: [&str; 3] = [
    "vm/overcommit_memory",
    "kernel/panic",
    "kernel/panic_on_oops",
];

/// Paths outside `target/cluster` that the kubelet or containerd create and nobody else uses.
const FIXED_PATHS: [&str; 4] = [
    "/var/lib/kubelet/device-plugins",
    "/var/log/containers",
    "/run/containerd/s",
    "/run/containerd/runc",
];

/// cgroup v1 hierarchies (and the v2 one of a hybrid host) where the kubelet makes `kubepods`.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// containerd from Debian's package.
pub(crate) const CONTAINERD: &str = "/usr/bin/containerd";

/// Debian packages the node needs, with a file each installs.
const PACKAGES: [(&str, &str); 4] = [
    ("containerd", "/usr/bin/containerd"),
    ("runc", "/usr/sbin/runc"),
    ("containernetworking-plugins", "/usr/lib/cni/bridge"),
    ("iproute2", "/usr/sbin/ip"),
];

/// The node's directory layout under the cluster state dir.
#[derive(Debug, Clone)]
pub(crate) struct NodeDirs {
    /// `target/cluster/node`.
    pub(crate) root: PathBuf,
}

impl NodeDirs {
    pub(crate) fn new(cluster_dir: &Path) -> Self {
        Self {
            root: cluster_dir.join("node"),
        }
    }
    fn containerd(&self) -> PathBuf {
        self.root.join("containerd")
    }
    /// containerd's gRPC socket (kubelet's runtime endpoint and `ctr -a`).
    pub(crate) fn containerd_socket(&self) -> PathBuf {
        self.containerd().join("containerd.sock")
    }
    fn cni_conf_dir(&self) -> PathBuf {
        self.root.join("cni").join("net.d")
    }
    fn kubelet_root(&self) -> PathBuf {
        self.root.join("kubelet")
    }
    fn kubelet_config(&self) -> PathBuf {
        self.root.join("kubelet-config.yaml")
    }
    /// Saved kernel settings; outside `node/` so a second `up` cannot overwrite the originals.
    fn sysctl_originals(&self) -> PathBuf {
        self.root
            .parent()
            .unwrap_or(&self.root)
            .join("sysctl-originals.json")
    }
}

/// Fails with the package to install when a tool of the node is missing.
pub(crate) fn check_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, file)| !Path::new(file).exists())
        .map(|(package, _)| *package)
        .collect();
    if !missing.is_empty() {
        bail!(
            "the local node needs Debian packages that are not installed: {}; run `apt-get install -y {}` (.ci/run does this)",
            missing.join(", "),
            missing.join(" ")
        );
    }
    Ok(())
}

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

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn ip(args: &[&str]) -> Result<()> {
    ip_output(args).map(drop)
}

fn ip_output(args: &[&str]) -> Result<String> {
    tool_output("ip", "iproute2", &[], args)
}

/// Runs a node tool and returns its stdout; a failure names the tool's Debian package when
/// it cannot start, and carries its stderr when it fails.
fn tool_output(program: &str, package: &str, fixed: &[&str], args: &[&str]) -> Result<String> {
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

/// Writes containerd's, the CNI's and the kubelet's configuration files.
pub(crate) fn write_configs(dirs: &NodeDirs, pki: &Path) -> Result<()> {
    let containerd = dirs.containerd();
    fs::create_dir_all(&containerd)?;
    // The one TOML file: a template is clearer than a dependency for twenty fixed lines.
    let toml = format!(
        r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[debug]
  address = "{debug}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox}"
  # No CAP_SYS_RESOURCE on this machine: never lower a process's oom_score_adj.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "/usr/sbin/runc"
        Root = "{runc}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
"#,
        root = containerd.join("root").display(),
        state = containerd.join("state").display(),
        socket = dirs.containerd_socket().display(),
        debug = containerd.join("debug.sock").display(),
        sandbox = SANDBOX_IMAGE,
        runc = containerd.join("runc").display(),
        cni = dirs.cni_conf_dir().display(),
    );
    fs::write(containerd.join("config.toml"), toml)?;

    fs::create_dir_all(dirs.cni_conf_dir())?;
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": "frc",
        "plugins": [{
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": true,
            // No masquerading: pods reach this machine's addresses only, nothing beyond.
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": POD_SUBNET, "gateway": NODE_IP.to_string()}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": dirs.root.join("cni").join("ipam").display().to_string(),
            },
        }],
    });
    fs::write(
        dirs.cni_conf_dir().join("10-frc.conflist"),
        serde_json::to_vec_pretty(&conflist)?,
    )?;

    let p = |f: &str| pki.join(f).display().to_string();
    let kubelet = json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        // cgroup v1 is deprecated in 1.37 and refused unless this is false.
        "failCgroupV1": false,
        "cgroupDriver": "cgroupfs",
        "cgroupsPerQOS": true,
        "enforceNodeAllocatable": ["pods"],
        "failSwapOn": false,
        "containerRuntimeEndpoint": format!("unix://{}", dirs.containerd_socket().display()),
        "address": NODE_IP.to_string(),
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "tlsCertFile": p("kubelet-serving.crt"),
        "tlsPrivateKeyFile": p("kubelet-serving.key"),
        "authentication": {
            "anonymous": {"enabled": false},
            "webhook": {"enabled": true},
            "x509": {"clientCAFile": p("ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "podLogsDir": dirs.root.join("pod-logs").display().to_string(),
        "volumePluginDir": dirs.root.join("kubelet-plugins").display().to_string(),
        // The hard nofile limit here, which cannot be raised without CAP_SYS_RESOURCE.
        "maxOpenFiles": 20000,
        "oomScoreAdj": 0,
        "evictionHard": {
            "memory.available": "50Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        // Images are imported, not pulled: never garbage-collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "maxPods": 60,
        "serializeImagePulls": false,
        "resolvConf": "/etc/resolv.conf",
        "registerNode": true,
    });
    fs::write(dirs.kubelet_config(), serde_yaml::to_string(&kubelet)?)?;
    Ok(())
}

/// containerd's command line.
pub(crate) fn containerd_args(dirs: &NodeDirs) -> Vec<String> {
    vec![format!(
        "--config={}",
        dirs.containerd().join("config.toml").display()
    )]
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

/// Runs `ctr` against our containerd in the kubelet's namespace.
pub(crate) fn ctr(dirs: &NodeDirs, args: &[&str]) -> Result<String> {
    let socket = dirs.containerd_socket().display().to_string();
    tool_output("ctr", "containerd", &["-a", &socket, "-n", "k8s.io"], args)
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

/// Saves the kernel settings the kubelet will change, unless saved already (a crashed run
/// must not record the kubelet's values as the originals).
pub(crate) fn save_sysctls(dirs: &NodeDirs) -> Result<()> {
    let path = dirs.sysctl_originals();
    if path.exists() {
        return Ok(());
    }
    let mut saved = Vec::new();
    for key in KUBELET_SYSCTLS {
        let value = fs::read_to_string(Path::new("/proc/sys").join(key))
            .with_context(|| format!("reading /proc/sys/{key}"))?;
        saved.push(Sysctl {
            key: key.to_owned(),
            value: value.trim().to_owned(),
        });
    }
    fs::write(&path, serde_json::to_vec_pretty(&saved)?)?;
    Ok(())
}

#[derive(Debug, Serialize, Deserialize)]
struct Sysctl {
    key: String,
    value: String,
}

/// The kubelet's command line.
pub(crate) fn kubelet_args(dirs: &NodeDirs, kubeconfig: &Path) -> Vec<String> {
    vec![
        format!("--config={}", dirs.kubelet_config().display()),
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--hostname-override={NODE_NAME}"),
        format!("--node-ip={NODE_IP}"),
        format!("--root-dir={}", dirs.kubelet_root().display()),
        format!("--cert-dir={}", dirs.kubelet_root().join("pki").display()),
        "--v=1".into(),
    ]
}

/// What `down` could not remove; empty when the machine is as before `up`.
pub(crate) fn leftovers(cluster_dir: &Path, pids: &[u32]) -> Vec<String> {
    let dirs = NodeDirs::new(cluster_dir);
    let mut left = Vec::new();
    for pid in pids {
        if Path::new("/proc").join(pid.to_string()).exists() && !is_zombie(*pid) {
            left.push(format!("process {pid} still runs"));
        }
    }
    for pid in processes_naming(&dirs.root) {
        left.push(format!("process {pid} still uses {}", dirs.root.display()));
    }
    for mount in mounts_under(cluster_dir) {
        left.push(format!("mount {mount}"));
    }
    if link_exists(BRIDGE) {
        left.push(format!("network link {BRIDGE}"));
    }
    for path in FIXED_PATHS {
        if Path::new(path).exists() {
            left.push(format!("path {path}"));
        }
    }
    for cgroup in kubepods_cgroups() {
        left.push(format!("cgroup {}", cgroup.display()));
    }
    if let Ok(text) = fs::read(dirs.sysctl_originals()) {
        left.push(format!(
            "saved kernel settings not restored ({} bytes in {})",
            text.len(),
            dirs.sysctl_originals().display()
        ));
    }
    left
}

/// Tears the node down after its processes were stopped: leftover containers and shims,
/// mounts, the bridge, fixed paths, cgroups, and the kernel settings.
pub(crate) fn teardown(cluster_dir: &Path) -> Result<()> {
    let dirs = NodeDirs::new(cluster_dir);
    for pid in processes_naming(&dirs.root) {
        eprintln!("cluster: killing leftover process {pid} of the node");
        crate::cluster::signal(pid, rustix::process::Signal::KILL);
    }
    wait_gone(&processes_naming_fn(&dirs.root), Duration::from_secs(10));
    // Deepest first, so a parent mount is never busy with a child.
    let mut mounts = mounts_under(cluster_dir);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for mount in mounts {
        unmount(&mount);
    }
    if link_exists(BRIDGE) {
        ip(&["link", "del", BRIDGE])?;
    }
    for path in FIXED_PATHS {
        let path = Path::new(path);
        if path.exists() {
            fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    // Parents the kubelet and containerd made for the paths above, when nothing else is there.
    for parent in ["/var/lib/kubelet", "/run/containerd"] {
        let _ = fs::remove_dir(parent);
    }
    for cgroup in kubepods_cgroups() {
        remove_cgroup_tree(&cgroup);
    }
    restore_sysctls(&dirs)
}

fn restore_sysctls(dirs: &NodeDirs) -> Result<()> {
    let path = dirs.sysctl_originals();
    let Ok(bytes) = fs::read(&path) else {
        return Ok(());
    };
    let saved: Vec<Sysctl> =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    for sysctl in saved {
        let file = Path::new("/proc/sys").join(&sysctl.key);
        let now = fs::read_to_string(&file).unwrap_or_default();
        if now.trim() != sysctl.value {
            fs::write(&file, &sysctl.value)
                .with_context(|| format!("restoring {} to {}", file.display(), sysctl.value))?;
            eprintln!(
                "cluster: restored {} = {} (was {})",
                sysctl.key,
                sysctl.value,
                now.trim()
            );
        }
    }
    fs::remove_file(&path)?;
    Ok(())
}

/// The live values of the kernel settings the kubelet changes, to compare before `up` and
/// after `down`.
pub(crate) fn current_sysctls() -> Vec<(String, String)> {
    KUBELET_SYSCTLS
        .iter()
        .map(|key| {
            let value = fs::read_to_string(Path::new("/proc/sys").join(key)).unwrap_or_default();
            ((*key).to_owned(), value.trim().to_owned())
        })
        .collect()
}

fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_owned))
        })
        .is_none_or(|state| state == "Z" || state == "X")
}

/// Live processes whose command line names `dir` (containerd shims name our socket).
fn processes_naming(dir: &Path) -> Vec<u32> {
    processes_naming_fn(dir)()
}

fn processes_naming_fn(dir: &Path) -> impl Fn() -> Vec<u32> + use<> {
    let needle = dir.display().to_string().into_bytes();
    move || {
        let me = std::process::id();
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| *pid != me && !is_zombie(*pid))
            .filter(|pid| {
                fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle.as_slice()))
            })
            .collect()
    }
}

fn wait_gone(list: &impl Fn() -> Vec<u32>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !list().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Mount points at or below `dir`, from `/proc/self/mountinfo`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|m| m == &prefix || m.starts_with(&format!("{prefix}/")))
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(raw: &str) -> String {
    raw.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Unmounts `path`; a busy mount is detached (the kernel frees it once unused).
fn unmount(path: &str) {
    use rustix::mount::{UnmountFlags, unmount};
    if unmount(path, UnmountFlags::empty()).is_err() {
        // Busy: detach it now, the kernel frees it once unused.
        let _ = unmount(path, UnmountFlags::DETACH);
    }
}

/// `kubepods` directories the kubelet made in each cgroup hierarchy.
fn kubepods_cgroups() -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(CGROUP_ROOT) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| Some(e.ok()?.path().join("kubepods")))
        .filter(|p| p.is_dir())
        .collect()
}

/// Removes an (empty of processes) cgroup tree, children first; cgroupfs dirs take rmdir only.
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                remove_cgroup_tree(&path);
            }
        }
    }
    if let Err(e) = fs::remove_dir(dir) {
        eprintln!("cluster: cannot remove cgroup {}: {e}", dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_mount_path("/a\\040b\\134c"), "/a b\\c");
    }

    #[test]
    fn kubelet_config_names_the_node_ip_and_socket() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = NodeDirs::new(dir.path());
        write_configs(&dirs, Path::new("/pki")).unwrap();
        let kubelet = fs::read_to_string(dirs.kubelet_config()).unwrap();
        assert!(kubelet.contains("address: 10.244.0.1"), "{kubelet}");
        assert!(kubelet.contains("failCgroupV1: false"), "{kubelet}");
        let conflist = fs::read_to_string(dirs.cni_conf_dir().join("10-frc.conflist")).unwrap();
        let value: serde_json::Value = serde_json::from_str(&conflist).unwrap();
        assert_eq!(value["plugins"][0]["bridge"], BRIDGE);
    }
}
