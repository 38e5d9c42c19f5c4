//! The node's configuration files (containerd's TOML, the CNI bridge network, the kubelet's
//! KubeletConfiguration) and the command lines of containerd, the kubelet and kube-proxy:
//! everything that decides how pods run and reach each other, in one place.

use std::fs;
use std::path::Path;

use anyhow::Result;
use serde_json::json;

use super::base::{BRIDGE, NODE_IP, NODE_NAME, NodeDirs, POD_SUBNET, SANDBOX_IMAGE};

/// kube-proxy's mode: its rules live in nftables tables of its own (`ip kube-proxy`, `ip6
/// kube-proxy`), which `teardown` deletes whole; iptables mode would leave chains it never
/// removes (its copy of the kubelet's KUBE-FIREWALL) in tables other programs share.
const KUBE_PROXY_MODE: &str = "nftables";

/// Writes containerd's, the CNI's and the kubelet's configuration files.
pub(crate) fn write_configs(dirs: &NodeDirs, pki: &Path) -> Result<()> {
    write_containerd_config(dirs)?;
    write_cni_config(dirs)?;
    write_kubelet_config(dirs, pki)
}

/// containerd's `config.toml`.
fn write_containerd_config(dirs: &NodeDirs) -> Result<()> {
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
    Ok(())
}

/// The CNI bridge network of the pods.
fn write_cni_config(dirs: &NodeDirs) -> Result<()> {
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
    Ok(())
}

/// The kubelet's KubeletConfiguration.
fn write_kubelet_config(dirs: &NodeDirs, pki: &Path) -> Result<()> {
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
        // No KUBE-FIREWALL, KUBE-IPTABLES-HINT or KUBE-KUBELET-CANARY iptables chains: the
        // kubelet never removes them, and nothing here needs them (kube-proxy runs in
        // nftables mode, in tables of its own).
        "makeIPTablesUtilChains": false,
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

/// kube-proxy's command line: it authenticates with `kubeconfig`, serves its healthz and
/// metrics on loopback at the given ports, and changes no kernel setting.
pub(crate) fn kube_proxy_args(
    kubeconfig: &Path,
    healthz_port: u16,
    metrics_port: u16,
) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--proxy-mode={KUBE_PROXY_MODE}"),
        format!("--hostname-override={NODE_NAME}"),
        format!("--bind-address={NODE_IP}"),
        format!("--cluster-cidr={POD_SUBNET}"),
        // The bridge CNI does not masquerade, and without br_netfilter the reply of a pod
        // to a pod on the same bridge would skip the host's conntrack and never be
        // un-DNATed: SNAT every ClusterIP connection to the node IP, so replies come back
        // through the host. Servers then see 10.244.0.1 as the client.
        "--masquerade-all".into(),
        // No CAP_SYS_RESOURCE here, and the machine's conntrack settings are not ours to
        // change: leave nf_conntrack_max and the TCP timeouts as they are (UDP timeouts and
        // tcp_be_liberal are left alone by default), and do not lower its own oom_score_adj.
        "--conntrack-max-per-core=0".into(),
        "--conntrack-tcp-timeout-established=0".into(),
        "--conntrack-tcp-timeout-close-wait=0".into(),
        "--oom-score-adj=0".into(),
        format!("--healthz-bind-address=127.0.0.1:{healthz_port}"),
        format!("--metrics-bind-address=127.0.0.1:{metrics_port}"),
        "--v=1".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_config_names_the_node_ip_and_socket() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = NodeDirs::new(dir.path());
        write_configs(&dirs, Path::new("/pki")).unwrap();
        let kubelet = fs::read_to_string(dirs.kubelet_config()).unwrap();
        assert!(kubelet.contains("address: 10.244.0.1"), "{kubelet}");
        assert!(kubelet.contains("failCgroupV1: false"), "{kubelet}");
        assert!(
            kubelet.contains("makeIPTablesUtilChains: false"),
            "{kubelet}"
        );
        let conflist = fs::read_to_string(dirs.cni_conf_dir().join("10-frc.conflist")).unwrap();
        let value: serde_json::Value = serde_json::from_str(&conflist).unwrap();
        assert_eq!(value["plugins"][0]["bridge"], BRIDGE);
    }

    #[test]
    fn kube_proxy_runs_in_nftables_mode_on_the_node_and_changes_no_kernel_setting() {
        let args = kube_proxy_args(Path::new("/kp.kubeconfig"), 1, 2);
        for flag in [
            "--proxy-mode=nftables",
            "--hostname-override=frc-node",
            "--cluster-cidr=10.244.0.0/24",
            "--masquerade-all",
            "--conntrack-max-per-core=0",
            "--conntrack-tcp-timeout-established=0",
            "--conntrack-tcp-timeout-close-wait=0",
            "--oom-score-adj=0",
            "--healthz-bind-address=127.0.0.1:1",
            "--metrics-bind-address=127.0.0.1:2",
        ] {
            assert!(
                args.iter().any(|a| a == flag),
                "{flag} missing from {args:?}"
            );
        }
    }
}
