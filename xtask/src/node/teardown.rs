//! Undoing the node: the kernel settings saved before the kubelet and kube-proxy may change
//! them, the teardown after `down` stopped the processes (kube-proxy's nftables tables
//! included), and the list of whatever is still there, so a test can prove that `cluster
//! down` leaves this machine as it found it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use super::base::{
    BRIDGE, CGROUP_ROOT, FIXED_PATHS, IPTABLES, KUBE_PROXY_SYSCTLS, KUBE_PROXY_TABLES,
    KUBELET_IPTABLES_CHAINS, KUBELET_SYSCTLS, NFT, NodeDirs, Sysctl, ip, link_exists, nft,
    tool_output,
};

/// Saves the kernel settings the kubelet and kube-proxy may change, unless saved already (a
/// crashed run must not record their values as the originals). kube-proxy's exist only while
/// `nf_conntrack` is loaded; those missing are not saved.
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
    for key in KUBE_PROXY_SYSCTLS {
        if let Ok(value) = fs::read_to_string(Path::new("/proc/sys").join(key)) {
            saved.push(Sysctl {
                key: key.to_owned(),
                value: value.trim().to_owned(),
            });
        }
    }
    fs::write(&path, serde_json::to_vec_pretty(&saved)?)?;
    Ok(())
}

/// kube-proxy's nftables tables that exist now, as `<family> <name>`; none when nft is not
/// installed (kube-proxy could not have made any).
fn kube_proxy_tables() -> Result<Vec<String>> {
    if !Path::new(NFT).exists() {
        return Ok(Vec::new());
    }
    let listed = nft(&["list", "tables"])?;
    Ok(KUBE_PROXY_TABLES
        .iter()
        .map(|(family, name)| format!("{family} {name}"))
        .filter(|table| listed.lines().any(|l| l.trim() == format!("table {table}")))
        .collect())
}

/// The kubelet's iptables chains that exist now, as (command, table, chain).
fn kubelet_iptables_chains() -> Vec<(&'static str, &'static str, &'static str)> {
    IPTABLES
        .iter()
        .filter(|command| Path::new(command).exists())
        .flat_map(|command| {
            KUBELET_IPTABLES_CHAINS
                .iter()
                .map(move |(table, chain)| (*command, *table, *chain))
        })
        .filter(|(command, table, chain)| iptables(command, &["-t", table, "-S", chain]).is_ok())
        .collect()
}

fn iptables(command: &str, args: &[&str]) -> Result<String> {
    tool_output(command, "iptables", &["-w"], args)
}

/// Removes the kubelet's iptables chains (left by a cluster whose kubelet made them): first
/// the jumps of INPUT and OUTPUT to `KUBE-FIREWALL`, then each chain.
fn remove_kubelet_iptables_chains() -> Result<()> {
    for (command, table, chain) in kubelet_iptables_chains() {
        if chain == "KUBE-FIREWALL" {
            for from in ["INPUT", "OUTPUT"] {
                while iptables(command, &["-t", table, "-D", from, "-j", chain]).is_ok() {}
            }
        }
        iptables(command, &["-t", table, "-F", chain])?;
        iptables(command, &["-t", table, "-X", chain])?;
        eprintln!("cluster: removed the kubelet's iptables chain {table}/{chain} ({command})");
    }
    Ok(())
}

/// Deletes kube-proxy's nftables tables, which it leaves in place when stopped (as
/// `kube-proxy --cleanup` does in nftables mode: one table per family holds every rule).
fn remove_kube_proxy_tables() -> Result<()> {
    for table in kube_proxy_tables()? {
        let mut args = vec!["delete", "table"];
        args.extend(table.split(' '));
        nft(&args)?;
        eprintln!("cluster: removed kube-proxy's nftables table {table}");
    }
    Ok(())
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
    match kube_proxy_tables() {
        Ok(tables) => left.extend(tables.iter().map(|t| format!("nftables table {t}"))),
        Err(e) => left.push(format!("cannot list nftables tables: {e:#}")),
    }
    for (command, table, chain) in kubelet_iptables_chains() {
        left.push(format!("iptables chain {table}/{chain} ({command})"));
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
/// mounts, the bridge, fixed paths, cgroups, kube-proxy's nftables tables, the kubelet's
/// iptables chains, and the kernel settings.
pub(crate) fn teardown(cluster_dir: &Path) -> Result<()> {
    let dirs = NodeDirs::new(cluster_dir);
    for pid in processes_naming(&dirs.root) {
        eprintln!("cluster: killing leftover process {pid} of the node");
        crate::pid::signal(pid, rustix::process::Signal::KILL);
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
    remove_kube_proxy_tables()?;
    remove_kubelet_iptables_chains()?;
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

/// The live values of the kernel settings the kubelet and kube-proxy may change, to compare
/// before `up` and after `down` (empty for one that does not exist).
pub(crate) fn current_sysctls() -> Vec<(String, String)> {
    KUBELET_SYSCTLS
        .iter()
        .chain(&KUBE_PROXY_SYSCTLS)
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
}
