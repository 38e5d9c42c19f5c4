//! Asking the running cluster: kubectl (the one built with the apiserver, so client and
//! server versions match), etcd's and kube-proxy's health endpoints and the node's
//! readiness. Every call uses an explicit kubeconfig and ignores `$KUBECONFIG`, so a
//! developer's own cluster is never touched.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::binaries::Binaries;
use super::process::{process_matches, tail};
use super::state::{Proc, admin_kubeconfig_path};
use crate::node;

/// etcd answers `GET /health` on its plain-HTTP loopback client URL.
pub(super) fn etcd_healthy(port: u16) -> bool {
    http_ok(port, "/health")
}

/// True if `GET <path>` on plain HTTP at `127.0.0.1:<port>` answers 200 (etcd's health,
/// kube-proxy's healthz).
pub(super) fn http_ok(port: u16, path: &str) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    if s.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.starts_with("HTTP/1.0 200") || resp.starts_with("HTTP/1.1 200")
}

/// True if the node reports the condition Ready=True.
fn node_ready(bins: &Binaries, admin: &Path) -> bool {
    kubectl(
        bins,
        admin,
        &[
            "get",
            "node",
            node::NODE_NAME,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
    )
    .is_ok_and(|s| s.trim() == "True")
}

/// Waits until the node is registered and Ready, then until the `default` ServiceAccount
/// exists (pods are refused before it); a node not Ready in time fails with the kubelet's log.
pub(super) fn wait_for_node(
    bins: &Binaries,
    admin: &Path,
    kubelet: &Proc,
    logs: &Path,
) -> Result<()> {
    let started = Instant::now();
    let log = logs.join("kubelet.log");
    while !node_ready(bins, admin) {
        if !process_matches(kubelet) {
            bail!(
                "the kubelet exited before the node was Ready; last lines of {}:\n{}",
                log.display(),
                tail(&log, 40)
            );
        }
        if started.elapsed() > node::NODE_READY_TIMEOUT {
            bail!(
                "node {} not Ready after {}s; last lines of {}:\n{}",
                node::NODE_NAME,
                node::NODE_READY_TIMEOUT.as_secs(),
                log.display(),
                tail(&log, 40)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "cluster: node {} Ready after {:.1}s",
        node::NODE_NAME,
        started.elapsed().as_secs_f64()
    );
    kubectl(
        bins,
        admin,
        &[
            "wait",
            "--for=create",
            "serviceaccount/default",
            "-n",
            "default",
            "--timeout=60s",
        ],
    )?;
    Ok(())
}

/// True if the apiserver of the cluster under `root` answers `/readyz`.
pub(super) fn apiserver_ready(bins: &Binaries, root: &Path) -> bool {
    kubectl_quiet(
        bins,
        &admin_kubeconfig_path(root),
        &["get", "--raw=/readyz"],
    )
}

/// The apiserver's `gitVersion`.
pub(super) fn server_version(bins: &Binaries, kubeconfig: &Path) -> Result<String> {
    let v: serde_json::Value =
        serde_json::from_str(&kubectl(bins, kubeconfig, &["get", "--raw=/version"])?)?;
    Ok(v["gitVersion"].as_str().unwrap_or("unknown").to_owned())
}

fn kubectl_command(bins: &Binaries, kubeconfig: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bins.kubectl());
    cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null());
    cmd
}

/// Runs kubectl with a 5s request timeout and no output; true if it succeeded.
pub(super) fn kubectl_quiet(bins: &Binaries, kubeconfig: &Path, args: &[&str]) -> bool {
    kubectl_command(
        bins,
        kubeconfig,
        &[&["--request-timeout=5s"], args].concat(),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .status()
    .is_ok_and(|s| s.success())
}

/// Runs kubectl and returns its stdout; on failure the error carries its stderr.
pub(super) fn kubectl(bins: &Binaries, kubeconfig: &Path, args: &[&str]) -> Result<String> {
    let out = kubectl_command(bins, kubeconfig, args)
        .output()
        .with_context(|| format!("running {} {}", bins.kubectl().display(), args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "kubectl {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}
