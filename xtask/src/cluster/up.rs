//! `cargo xtask cluster up`: a fresh cluster, one component at a time in dependency order
//! (containerd, etcd, apiserver, controller-manager, scheduler, kubelet, kube-proxy), each waited for
//! before the next, and recorded in `state.json` the moment it runs, so a failure half-way
//! stops exactly what was started.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::binaries::{Binaries, ensure_binaries};
use super::kubeconfig::write_kubeconfig_cert;
use super::kubectl::{etcd_healthy, http_ok, kubectl_quiet, server_version, wait_for_node};
use super::pki::generate_pki;
use super::process::{process_matches, spawn, spawn_program, tail, wait_until};
use super::restart::reuse_running;
use super::state::{
    ClusterInfo, Proc, RUNTIME_PROCESS, State, admin_kubeconfig_path, state_dir, write_state,
};
use super::stop::stop_all;
use crate::node;

/// ClusterIP range handed to the apiserver, which allocates Service IPs from it; kube-proxy
/// (nftables mode) makes each Service's ClusterIP lead to its ready endpoints, for pods and
/// for this machine.
const SERVICE_CLUSTER_IP_RANGE: &str = "10.0.0.0/24";

/// Controllers run by kube-controller-manager: Jobs and their pods, owner-reference garbage
/// collection, Job TTL, namespace deletion (so tests can clean up by namespace), Deployments
/// (the operator runs in-cluster).
/// For the real node: ServiceAccounts and the root CA ConfigMap (token volumes) and the node
/// lifecycle (it lifts the not-ready taint). Volumes: claims bind to PersistentVolumes, and
/// the protection finalizers of claims and volumes are lifted (a pool's cache claim).
/// For Services: EndpointSlices, which kube-proxy turns into rules.
const CONTROLLERS: &str = "job-controller,garbage-collector-controller,ttl-after-finished-controller,namespace-controller,serviceaccount-controller,root-ca-certificate-publisher-controller,node-lifecycle-controller,replicaset-controller,deployment-controller,endpointslice-controller,persistentvolume-binder-controller,persistentvolume-protection-controller,persistentvolumeclaim-protection-controller";

/// Builds (if needed) and starts etcd + kube-apiserver + kube-controller-manager; idempotent
/// if already up and healthy.
pub fn up(workspace_root: &Path) -> Result<ClusterInfo> {
    let started = Instant::now();
    crate::preflight::ensure()?;
    let bins = ensure_binaries(workspace_root)?;
    let pause = crate::image::build_pause(workspace_root)?;
    let dir = state_dir(workspace_root);
    if let Some(info) = reuse_running(workspace_root, &bins, &dir)? {
        return Ok(info);
    }

    let logs = fresh_dirs(&dir)?;
    let pki = generate_pki(&dir)?;
    let ports = Ports::pick()?;
    let server = format!("https://{}:{}", node::NODE_IP, ports.apiserver);
    let dirs = node::NodeDirs::new(&dir);
    node::create_bridge()?;
    node::write_configs(&dirs, &pki)?;

    let mut state = State {
        bin_dir: bins.bin_dir.clone(),
        server: server.clone(),
        version: String::new(),
        etcd_client_port: ports.etcd_client,
        apiserver_port: ports.apiserver,
        controller_manager_port: ports.controller_manager,
        processes: Vec::new(),
    };
    let start = Start {
        root: workspace_root,
        bins: &bins,
        dir: &dir,
        logs: &logs,
        pki: &pki,
        dirs: &dirs,
        server: &server,
        ports: &ports,
    };
    if let Err(e) = start.all(&mut state, &pause.tar) {
        eprintln!("cluster: start failed; stopping the processes started so far");
        if let Err(stop) = stop_all(&dir, &state) {
            eprintln!("cluster: stopping failed too: {stop:#}");
        }
        let _ = fs::remove_file(dir.join("state.json"));
        return Err(e);
    }

    eprintln!(
        "cluster: up at {} ({}) in {:.1}s; admin kubeconfig {}",
        state.server,
        state.version,
        started.elapsed().as_secs_f64(),
        admin_kubeconfig_path(workspace_root).display()
    );
    Ok(ClusterInfo::of(workspace_root, state))
}

/// Creates `dir` without the data of an earlier cluster and with empty `logs/`; returns
/// `logs/`.
fn fresh_dirs(dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Leftovers of a cluster whose state file is gone (e.g. killed xtask): start clean.
    for sub in ["etcd", "pki", "controller-manager", "scheduler", "node"] {
        let p = dir.join(sub);
        if p.exists() {
            fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    let logs = dir.join("logs");
    // A new cluster starts new logs (components started again append to theirs).
    if logs.exists() {
        fs::remove_dir_all(&logs).with_context(|| format!("removing {}", logs.display()))?;
    }
    fs::create_dir_all(&logs)?;
    Ok(logs)
}

/// A free TCP port on 127.0.0.1 (asked of the kernel, then released for the component).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The ports of a new cluster.
struct Ports {
    etcd_client: u16,
    etcd_peer: u16,
    apiserver: u16,
    controller_manager: u16,
    scheduler: u16,
    kube_proxy_healthz: u16,
    kube_proxy_metrics: u16,
}

impl Ports {
    fn pick() -> Result<Self> {
        Ok(Self {
            etcd_client: free_port()?,
            etcd_peer: free_port()?,
            apiserver: free_port()?,
            controller_manager: free_port()?,
            scheduler: free_port()?,
            kube_proxy_healthz: free_port()?,
            kube_proxy_metrics: free_port()?,
        })
    }
}

/// Everything the start of each component needs.
struct Start<'a> {
    root: &'a Path,
    bins: &'a Binaries,
    dir: &'a Path,
    logs: &'a Path,
    pki: &'a Path,
    dirs: &'a node::NodeDirs,
    server: &'a str,
    ports: &'a Ports,
}

impl Start<'_> {
    /// Starts every component in order and records the server version.
    fn all(&self, state: &mut State, pause_tar: &Path) -> Result<()> {
        self.containerd(state, pause_tar)?;
        self.etcd(state)?;
        self.apiserver(state)?;
        self.controller_manager(state)?;
        let scheduler = self.scheduler(state)?;
        self.kubelet(state)?;
        self.kube_proxy(state)?;
        if !process_matches(&scheduler) {
            bail!(
                "kube-scheduler exited; last lines of its log:\n{}",
                tail(&self.logs.join("kube-scheduler.log"), 30)
            );
        }
        let admin = admin_kubeconfig_path(self.root);
        state.version = server_version(self.bins, &admin)?;
        write_state(self.dir, state)
    }

    /// Records a started process in `state.json` right away; returns it.
    fn record(&self, state: &mut State, p: Proc) -> Result<Proc> {
        state.processes.push(p.clone());
        write_state(self.dir, state)?;
        Ok(p)
    }

    /// `<pki>/<file>` as an argument value.
    fn pki_file(&self, file: &str) -> String {
        self.pki.join(file).display().to_string()
    }

    /// containerd first: the pause image must be in its store before the kubelet asks.
    fn containerd(&self, state: &mut State, pause_tar: &Path) -> Result<()> {
        let containerd = spawn_program(
            Path::new(node::CONTAINERD),
            RUNTIME_PROCESS,
            self.logs,
            &node::containerd_args(self.dirs),
        )?;
        let containerd = self.record(state, containerd)?;
        node::wait_for_containerd(self.dirs, || process_matches(&containerd)).with_context(
            || {
                format!(
                    "last lines of containerd's log:\n{}",
                    tail(&self.logs.join("containerd.log"), 30)
                )
            },
        )?;
        node::import_image(self.dirs, pause_tar)
    }

    fn etcd_client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.etcd_client)
    }

    fn etcd(&self, state: &mut State) -> Result<()> {
        let etcd_client = self.etcd_client_url();
        let etcd_peer = format!("http://127.0.0.1:{}", self.ports.etcd_peer);
        let etcd = spawn(
            self.bins,
            "etcd",
            self.logs,
            &[
                "--name=frc".into(),
                format!("--data-dir={}", self.dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_client}"),
                format!("--advertise-client-urls={etcd_client}"),
                format!("--listen-peer-urls={etcd_peer}"),
                format!("--initial-advertise-peer-urls={etcd_peer}"),
                format!("--initial-cluster=frc={etcd_peer}"),
                "--initial-cluster-state=new".into(),
                // A throwaway test store: durability is not worth the fsync latency.
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
        )?;
        let etcd = self.record(state, etcd)?;
        let port = self.ports.etcd_client;
        wait_until(&etcd, self.logs, "etcd /health", || etcd_healthy(port))
    }

    fn apiserver_args(&self) -> Vec<String> {
        let p = |f: &str| self.pki_file(f);
        let server = self.server;
        vec![
            format!("--etcd-servers={}", self.etcd_client_url()),
            format!("--bind-address={}", node::NODE_IP),
            format!("--advertise-address={}", node::NODE_IP),
            format!("--secure-port={}", self.ports.apiserver),
            format!("--cert-dir={}", self.pki.display()),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            "--authorization-mode=Node,RBAC".into(),
            "--enable-admission-plugins=NodeRestriction".into(),
            format!(
                "--kubelet-client-certificate={}",
                p("apiserver-kubelet-client.crt")
            ),
            format!("--kubelet-client-key={}", p("apiserver-kubelet-client.key")),
            format!("--kubelet-certificate-authority={}", p("ca.crt")),
            "--kubelet-preferred-address-types=InternalIP,Hostname".into(),
            format!("--service-account-issuer={server}"),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"),
            // The `kubernetes` Service gets no endpoints, so kube-proxy refuses its ClusterIP:
            // pods reach the apiserver at the node IP (the overlay sets
            // KUBERNETES_SERVICE_HOST), the one address this machine and pods share.
            "--endpoint-reconciler-type=none".into(),
            "--allow-privileged=true".into(),
        ]
    }

    /// The apiserver, then the admin and controller-manager kubeconfigs, then `/readyz`.
    fn apiserver(&self, state: &mut State) -> Result<()> {
        let apiserver = spawn(
            self.bins,
            "kube-apiserver",
            self.logs,
            &self.apiserver_args(),
        )?;
        let apiserver = self.record(state, apiserver)?;
        let admin = admin_kubeconfig_path(self.root);
        write_kubeconfig_cert(&admin, self.server, self.pki, "admin", true)?;
        write_kubeconfig_cert(
            &self.dir.join("controller-manager.kubeconfig"),
            self.server,
            self.pki,
            "controller-manager",
            true,
        )?;
        wait_until(&apiserver, self.logs, "kube-apiserver /readyz", || {
            kubectl_quiet(self.bins, &admin, &["get", "--raw=/readyz"])
        })
    }

    fn controller_manager(&self, state: &mut State) -> Result<()> {
        let port = self.ports.controller_manager;
        let kcm = spawn(
            self.bins,
            "kube-controller-manager",
            self.logs,
            &[
                format!(
                    "--kubeconfig={}",
                    self.dir.join("controller-manager.kubeconfig").display()
                ),
                format!("--controllers={CONTROLLERS}"),
                // The bench scale run has the job controller create 10,000 pods: at the
                // default 20 requests/s that alone would take over 8 minutes.
                "--kube-api-qps=200".into(),
                "--kube-api-burst=400".into(),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={port}"),
                format!(
                    "--cert-dir={}",
                    self.dir.join("controller-manager").display()
                ),
                format!("--root-ca-file={}", self.pki_file("ca.crt")),
            ],
        )?;
        let kcm = self.record(state, kcm)?;
        // The controller-manager serves a self-signed certificate of its own: skip verifying it.
        let health = self.dir.join("controller-manager-health.kubeconfig");
        write_kubeconfig_cert(
            &health,
            &format!("https://127.0.0.1:{port}"),
            self.pki,
            "controller-manager",
            false,
        )?;
        wait_until(&kcm, self.logs, "kube-controller-manager /healthz", || {
            kubectl_quiet(self.bins, &health, &["get", "--raw=/healthz"])
        })
    }

    /// The scheduler, not waited for here (the node's readiness takes longer); returned so
    /// `all` checks it still runs once the node is Ready.
    fn scheduler(&self, state: &mut State) -> Result<Proc> {
        let scheduler_kubeconfig = self.dir.join("scheduler.kubeconfig");
        write_kubeconfig_cert(
            &scheduler_kubeconfig,
            self.server,
            self.pki,
            "scheduler",
            true,
        )?;
        let scheduler_config = scheduler_kubeconfig.display().to_string();
        let scheduler = spawn(
            self.bins,
            "kube-scheduler",
            self.logs,
            &[
                format!("--kubeconfig={scheduler_config}"),
                format!("--authentication-kubeconfig={scheduler_config}"),
                format!("--authorization-kubeconfig={scheduler_config}"),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", self.ports.scheduler),
                format!("--cert-dir={}", self.dir.join("scheduler").display()),
            ],
        )?;
        self.record(state, scheduler)
    }

    fn kubelet(&self, state: &mut State) -> Result<()> {
        let kubelet_kubeconfig = self.dir.join("kubelet.kubeconfig");
        write_kubeconfig_cert(&kubelet_kubeconfig, self.server, self.pki, "kubelet", true)?;
        node::save_sysctls(self.dirs)?;
        let kubelet = spawn(
            self.bins,
            "kubelet",
            self.logs,
            &node::kubelet_args(self.dirs, &kubelet_kubeconfig),
        )?;
        let kubelet = self.record(state, kubelet)?;
        let admin = admin_kubeconfig_path(self.root);
        wait_for_node(self.bins, &admin, &kubelet, self.logs)
    }

    /// kube-proxy (nftables mode), once the node is registered; waited for until its
    /// `/healthz` says the first sync of its rules is done, so Services work when `up`
    /// returns. `down` removes its nftables tables (node::teardown).
    fn kube_proxy(&self, state: &mut State) -> Result<()> {
        let kubeconfig = self.dir.join("kube-proxy.kubeconfig");
        write_kubeconfig_cert(&kubeconfig, self.server, self.pki, "kube-proxy", true)?;
        let healthz = self.ports.kube_proxy_healthz;
        let proxy = spawn(
            self.bins,
            "kube-proxy",
            self.logs,
            &node::kube_proxy_args(&kubeconfig, healthz, self.ports.kube_proxy_metrics),
        )?;
        let proxy = self.record(state, proxy)?;
        wait_until(&proxy, self.logs, "kube-proxy /healthz", || {
            http_ok(healthz, "/healthz")
        })
    }
}
