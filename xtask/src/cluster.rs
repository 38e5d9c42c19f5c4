//! `cargo xtask cluster up|down|env`: a local Kubernetes cluster with one real node.
//!
//! etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kubectl are
//! built from source with Go,
//! from the pinned wrapper modules in `xtask/controlplane/{etcd,kube}` (see the README
//! there), into a cache outside the repository that is keyed by version:
//! `${FRC_CACHE_DIR:-$HOME/.cache/forgejo-runner-controller}/controlplane/<k8s>-etcd<etcd>/bin`.
//!
//! The node (`node.rs`) is containerd + runc from Debian and a kubelet: pods really run.
//! The apiserver listens on the pod network's gateway address, which pods and this machine
//! both reach (there is no kube-proxy). Pods with `schedulerName: kubelet-stand-in` are left
//! to a test that plays kubelet for states a real node cannot produce
//! (`crates/operator/tests/support/kubelet.rs`). The controller-manager runs only the
//! controllers the cluster needs (see [`CONTROLLERS`]); no pod garbage collector, so the
//! stand-in's pods on a node that does not exist stay.
//!
//! Everything a running cluster owns lives in `<workspace>/target/cluster/`: certificates,
//! kubeconfigs, etcd data, logs and `state.json` (pids and ports). `down` stops exactly the
//! recorded pids and removes all of it except `logs/`.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::node;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Namespace and ServiceAccount of the operator, as generated into `deploy/`.
const OPERATOR_NAMESPACE: &str = "forgejo-runner-system";
const OPERATOR_SERVICE_ACCOUNT: &str = "forgejo-runner-controller";

/// ClusterIP range handed to the apiserver. Nothing routes to it (there is no kube-proxy);
/// the apiserver only allocates Service IPs from it.
const SERVICE_CLUSTER_IP_RANGE: &str = "10.0.0.0/24";

/// Controllers run by kube-controller-manager: Jobs and their pods, owner-reference garbage
/// collection, Job TTL, namespace deletion (so tests can clean up by namespace), Deployments
/// (the operator runs in-cluster).
/// For the real node: ServiceAccounts and the root CA ConfigMap (token volumes) and the node
/// lifecycle (it lifts the not-ready taint).
const CONTROLLERS: &str = "job-controller,garbage-collector-controller,ttl-after-finished-controller,namespace-controller,serviceaccount-controller,root-ca-certificate-publisher-controller,node-lifecycle-controller,replicaset-controller,deployment-controller";

const READY_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What `up` returns.
#[derive(Debug, Clone)]
pub struct ClusterInfo {
    pub admin_kubeconfig: PathBuf,
    pub server: String,
    pub version: String,
}

/// Persisted in `target/cluster/state.json` while the cluster runs.
#[derive(Debug, Serialize, Deserialize)]
struct State {
    bin_dir: PathBuf,
    server: String,
    version: String,
    etcd_client_port: u16,
    apiserver_port: u16,
    controller_manager_port: u16,
    processes: Vec<Proc>,
}

/// Processes stopped after the others, once pods' containers are gone.
const RUNTIME_PROCESS: &str = "containerd";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Proc {
    /// Binary name, e.g. `kube-apiserver`; checked against `/proc/<pid>/cmdline` before any signal.
    name: String,
    pid: u32,
    /// The program and arguments it was started with, to start it again if it dies.
    #[serde(default)]
    program: PathBuf,
    #[serde(default)]
    args: Vec<String>,
}

/// The Go-built binaries of one pinned version set.
#[derive(Debug, Clone)]
pub(crate) struct Binaries {
    pub(crate) bin_dir: PathBuf,
}

impl Binaries {
    fn path(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }
    /// The kubectl built from the same Kubernetes release as the apiserver.
    pub(crate) fn kubectl(&self) -> PathBuf {
        self.path("kubectl")
    }
}

const BINARIES: [&str; 6] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kubelet",
];

fn state_dir(root: &Path) -> PathBuf {
    root.join("target").join("cluster")
}

fn admin_kubeconfig_path(root: &Path) -> PathBuf {
    state_dir(root).join("admin.kubeconfig")
}

// ---------------------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------------------

/// Builds (if needed) and starts etcd + kube-apiserver + kube-controller-manager; idempotent
/// if already up and healthy.
pub fn up(workspace_root: &Path) -> Result<ClusterInfo> {
    let started = Instant::now();
    node::check_packages()?;
    let bins = ensure_binaries(workspace_root)?;
    let pause = crate::image::build_pause(workspace_root)?;
    let dir = state_dir(workspace_root);

    if let Some(mut state) = read_state(&dir)? {
        if state.processes.iter().all(process_matches) && apiserver_ready(&bins, workspace_root) {
            eprintln!(
                "cluster: already up at {} ({})",
                state.server, state.version
            );
            return Ok(ClusterInfo {
                admin_kubeconfig: admin_kubeconfig_path(workspace_root),
                server: state.server,
                version: state.version,
            });
        }
        // Some components died: start them again on the same data (etcd keeps the objects).
        match restart_what_died(workspace_root, &dir, &mut state) {
            Ok(()) => {
                return Ok(ClusterInfo {
                    admin_kubeconfig: admin_kubeconfig_path(workspace_root),
                    server: state.server,
                    version: state.version,
                });
            }
            Err(error) => eprintln!(
                "cluster: restarting what died failed ({error:#}); stopping what is left of it"
            ),
        }
        down(workspace_root)?;
    }

    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
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

    let pki = generate_pki(&dir)?;
    let etcd_client_port = free_port()?;
    let etcd_peer_port = free_port()?;
    let apiserver_port = free_port()?;
    let controller_manager_port = free_port()?;
    let scheduler_port = free_port()?;
    let server = format!("https://{}:{apiserver_port}", node::NODE_IP);
    let dirs = node::NodeDirs::new(&dir);
    node::create_bridge()?;
    node::write_configs(&dirs, &pki)?;

    let mut state = State {
        bin_dir: bins.bin_dir.clone(),
        server: server.clone(),
        version: String::new(),
        etcd_client_port,
        apiserver_port,
        controller_manager_port,
        processes: Vec::new(),
    };

    let result = (|| -> Result<()> {
        // containerd first: the pause image must be in its store before the kubelet asks.
        let containerd = spawn_program(
            Path::new(node::CONTAINERD),
            RUNTIME_PROCESS,
            &logs,
            &node::containerd_args(&dirs),
        )?;
        state.processes.push(containerd.clone());
        write_state(&dir, &state)?;
        node::wait_for_containerd(&dirs, || process_matches(&containerd)).with_context(|| {
            format!(
                "last lines of containerd's log:\n{}",
                tail(&logs.join("containerd.log"), 30)
            )
        })?;
        node::import_image(&dirs, &pause.tar)?;

        // etcd
        let etcd_client = format!("http://127.0.0.1:{etcd_client_port}");
        let etcd_peer = format!("http://127.0.0.1:{etcd_peer_port}");
        let etcd = spawn(
            &bins,
            "etcd",
            &logs,
            &[
                "--name=frc".into(),
                format!("--data-dir={}", dir.join("etcd").display()),
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
        state.processes.push(etcd.clone());
        write_state(&dir, &state)?;
        wait_until(&etcd, &logs, "etcd /health", || {
            etcd_healthy(etcd_client_port)
        })?;

        // kube-apiserver
        let p = |f: &str| pki.join(f).display().to_string();
        let apiserver = spawn(
            &bins,
            "kube-apiserver",
            &logs,
            &[
                format!("--etcd-servers={etcd_client}"),
                format!("--bind-address={}", node::NODE_IP),
                format!("--advertise-address={}", node::NODE_IP),
                format!("--secure-port={apiserver_port}"),
                format!("--cert-dir={}", pki.display()),
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
                // A loopback address cannot be written to the `kubernetes` Endpoints.
                "--endpoint-reconciler-type=none".into(),
                "--allow-privileged=true".into(),
            ],
        )?;
        state.processes.push(apiserver.clone());
        write_state(&dir, &state)?;

        write_kubeconfig_cert(
            &admin_kubeconfig_path(workspace_root),
            &server,
            &pki,
            "admin",
            true,
        )?;
        write_kubeconfig_cert(
            &dir.join("controller-manager.kubeconfig"),
            &server,
            &pki,
            "controller-manager",
            true,
        )?;
        let admin = admin_kubeconfig_path(workspace_root);
        wait_until(&apiserver, &logs, "kube-apiserver /readyz", || {
            kubectl_quiet(&bins, &admin, &["get", "--raw=/readyz"])
        })?;

        // kube-controller-manager
        let kcm = spawn(
            &bins,
            "kube-controller-manager",
            &logs,
            &[
                format!(
                    "--kubeconfig={}",
                    dir.join("controller-manager.kubeconfig").display()
                ),
                format!("--controllers={CONTROLLERS}"),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={controller_manager_port}"),
                format!("--cert-dir={}", dir.join("controller-manager").display()),
                format!("--root-ca-file={}", p("ca.crt")),
            ],
        )?;
        state.processes.push(kcm.clone());
        write_state(&dir, &state)?;
        // The controller-manager serves a self-signed certificate of its own: skip verifying it.
        let health = dir.join("controller-manager-health.kubeconfig");
        write_kubeconfig_cert(
            &health,
            &format!("https://127.0.0.1:{controller_manager_port}"),
            &pki,
            "controller-manager",
            false,
        )?;
        wait_until(&kcm, &logs, "kube-controller-manager /healthz", || {
            kubectl_quiet(&bins, &health, &["get", "--raw=/healthz"])
        })?;

        // kube-scheduler
        let scheduler_kubeconfig = dir.join("scheduler.kubeconfig");
        write_kubeconfig_cert(&scheduler_kubeconfig, &server, &pki, "scheduler", true)?;
        let scheduler_config = scheduler_kubeconfig.display().to_string();
        let scheduler = spawn(
            &bins,
            "kube-scheduler",
            &logs,
            &[
                format!("--kubeconfig={scheduler_config}"),
                format!("--authentication-kubeconfig={scheduler_config}"),
                format!("--authorization-kubeconfig={scheduler_config}"),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={scheduler_port}"),
                format!("--cert-dir={}", dir.join("scheduler").display()),
            ],
        )?;
        state.processes.push(scheduler.clone());
        write_state(&dir, &state)?;

        // kubelet
        let kubelet_kubeconfig = dir.join("kubelet.kubeconfig");
        write_kubeconfig_cert(&kubelet_kubeconfig, &server, &pki, "kubelet", true)?;
        node::save_sysctls(&dirs)?;
        let kubelet = spawn(
            &bins,
            "kubelet",
            &logs,
            &node::kubelet_args(&dirs, &kubelet_kubeconfig),
        )?;
        state.processes.push(kubelet.clone());
        write_state(&dir, &state)?;
        wait_for_node(&bins, &admin, &kubelet, &logs)?;
        if !process_matches(&scheduler) {
            bail!(
                "kube-scheduler exited; last lines of its log:\n{}",
                tail(&logs.join("kube-scheduler.log"), 30)
            );
        }

        state.version = server_version(&bins, &admin)?;
        write_state(&dir, &state)?;
        Ok(())
    })();

    if let Err(e) = result {
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
    Ok(ClusterInfo {
        admin_kubeconfig: admin_kubeconfig_path(workspace_root),
        server: state.server,
        version: state.version,
    })
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

/// Stops exactly the processes `up` started (by recorded pid), tears the node down (mounts,
/// bridge, cgroups, kernel settings) and removes the cluster's data.
pub fn down(workspace_root: &Path) -> Result<()> {
    let dir = state_dir(workspace_root);
    if let Some(state) = read_state(&dir)? {
        stop_all(&dir, &state)?;
        eprintln!("cluster: stopped");
    } else {
        eprintln!("cluster: not running");
        node::teardown(&dir)?;
    }
    if dir.exists() {
        // Keep logs/ for post-mortems; everything else belongs to the stopped cluster.
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.file_name().is_some_and(|n| n == "logs") {
                continue;
            }
            if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            }
            .with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

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

/// Deletes the pods (the kubelet unmounts their volumes and removes their veths), stops
/// everything but containerd newest first, kills containers left over, stops containerd and
/// tears the node down.
fn stop_all(dir: &Path, state: &State) -> Result<()> {
    let bins = Binaries {
        bin_dir: state.bin_dir.clone(),
    };
    let admin = dir.join("admin.kubeconfig");
    let kubelet_up = state
        .processes
        .iter()
        .any(|p| p.name == "kubelet" && process_matches(p));
    if kubelet_up && admin.exists() {
        // Controllers first, so nothing recreates the pods being deleted.
        for kinds in ["deployments,replicasets,jobs", "pods"] {
            if let Err(e) = kubectl(
                &bins,
                &admin,
                &[
                    "delete",
                    kinds,
                    "--all",
                    "--all-namespaces",
                    "--wait=true",
                    "--timeout=60s",
                ],
            ) {
                eprintln!("cluster: deleting {kinds} before stopping: {e:#}");
            }
        }
    }
    let (runtime, rest): (Vec<Proc>, Vec<Proc>) = state
        .processes
        .iter()
        .cloned()
        .partition(|p| p.name == RUNTIME_PROCESS);
    stop_processes(&rest)?;
    let dirs = node::NodeDirs::new(dir);
    if runtime.iter().any(process_matches) {
        node::kill_containers(&dirs);
    }
    stop_processes(&runtime)?;
    node::teardown(dir)
}

/// Imports a docker-archive image into the running node's containerd.
pub fn import_image(workspace_root: &Path, tar: &Path) -> Result<()> {
    node::import_image(&node::NodeDirs::new(&state_dir(workspace_root)), tar)
}

/// The namespace whose pools the in-cluster operator of the test overlay serves.
pub const IN_CLUSTER_TEST_NAMESPACE: &str = "frc-in-cluster";

/// [`write_local_overlay`] for the cluster tier: the operator serves
/// [`IN_CLUSTER_TEST_NAMESPACE`] only, so it leaves other tests' pools alone.
pub fn write_test_overlay(workspace_root: &Path, operator_image: &str) -> Result<PathBuf> {
    write_local_overlay(workspace_root, operator_image, IN_CLUSTER_TEST_NAMESPACE)
}

/// Writes `target/cluster/overlay/`: `deploy/` with the local operator image, the apiserver
/// address pods can reach (no kube-proxy here, so the `kubernetes` Service IP leads nowhere)
/// and one served namespace.
pub fn write_local_overlay(
    workspace_root: &Path,
    operator_image: &str,
    served_namespace: &str,
) -> Result<PathBuf> {
    let dir = state_dir(workspace_root);
    let state = read_state(&dir)?
        .ok_or_else(|| anyhow!("the local cluster is not up; run `cargo xtask cluster up`"))?;
    let overlay = dir.join("overlay");
    fs::create_dir_all(&overlay)?;
    let (name, tag) = operator_image
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("image reference {operator_image} has no tag"))?;
    let patch = serde_json::json!([
        {"op": "add", "path": "/spec/template/spec/containers/0/env/-",
         "value": {"name": "KUBERNETES_SERVICE_HOST", "value": node::NODE_IP.to_string()}},
        {"op": "add", "path": "/spec/template/spec/containers/0/env/-",
         "value": {"name": "KUBERNETES_SERVICE_PORT", "value": state.apiserver_port.to_string()}},
        {"op": "add", "path": "/spec/template/spec/containers/0/args/-",
         "value": format!("--namespace={served_namespace}")},
        {"op": "add", "path": "/spec/template/spec/containers/0/args/-",
         "value": "--log-level=info,operator=debug"},
    ]);
    let kustomization = serde_json::json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["../../../deploy"],
        "images": [{"name": crate::image::PUBLISHED_OPERATOR_IMAGE, "newName": name, "newTag": tag}],
        "patches": [{
            "target": {"kind": "Deployment", "name": "forgejo-runner-controller"},
            "patch": serde_json::to_string(&patch)?,
        }],
    });
    fs::write(
        overlay.join("kustomization.yaml"),
        serde_yaml::to_string(&kustomization)?,
    )?;
    Ok(overlay)
}

/// Path of the admin kubeconfig of the running cluster (error if not up).
pub fn env(workspace_root: &Path) -> Result<PathBuf> {
    let dir = state_dir(workspace_root);
    let state = read_state(&dir)?
        .ok_or_else(|| anyhow!("the local cluster is not up; run `cargo xtask cluster up`"))?;
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

/// Applies deploy/ (`kubectl apply --server-side -k deploy/`), waits for CRDs Established,
/// and writes a kubeconfig for the operator's ServiceAccount (only its generated RBAC).
/// Returns that kubeconfig's path.
pub fn install_operator_identity(
    workspace_root: &Path,
    admin_kubeconfig: &Path,
) -> Result<PathBuf> {
    install_identity_from(
        workspace_root,
        admin_kubeconfig,
        &workspace_root.join("deploy"),
    )
}

pub(crate) fn install_identity_from(
    workspace_root: &Path,
    admin_kubeconfig: &Path,
    kustomize_dir: &Path,
) -> Result<PathBuf> {
    let bins = ensure_binaries(workspace_root)?;
    let dir = state_dir(workspace_root);
    let state = read_state(&dir)?
        .ok_or_else(|| anyhow!("the local cluster is not up; run `cargo xtask cluster up`"))?;

    let kustomize = kustomize_dir.display().to_string();
    kubectl(
        &bins,
        admin_kubeconfig,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-k",
            &kustomize,
        ],
    )?;
    kubectl(
        &bins,
        admin_kubeconfig,
        &[
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=60s",
        ],
    )?;
    let token = kubectl(
        &bins,
        admin_kubeconfig,
        &[
            "create",
            "token",
            OPERATOR_SERVICE_ACCOUNT,
            "-n",
            OPERATOR_NAMESPACE,
            "--duration=24h",
        ],
    )?;
    let token = token.trim();
    if token.is_empty() {
        bail!("kubectl create token returned an empty token");
    }
    let ca = fs::read(dir.join("pki").join("ca.crt"))?;
    let path = dir.join("operator.kubeconfig");
    let b64 = base64::engine::general_purpose::STANDARD;
    write_private(
        &path,
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\ncontexts:\n- name: operator\n  context:\n    cluster: local\n    user: {sa}\n    namespace: {ns}\nusers:\n- name: {sa}\n  user:\n    token: {token}\ncurrent-context: operator\n",
            server = state.server,
            ca = b64.encode(ca),
            sa = OPERATOR_SERVICE_ACCOUNT,
            ns = OPERATOR_NAMESPACE,
        ),
    )?;
    eprintln!(
        "cluster: operator identity system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT} in {}",
        path.display()
    );
    Ok(path)
}

// ---------------------------------------------------------------------------------------
// Building the binaries
// ---------------------------------------------------------------------------------------

/// Version of `module` in a wrapper's `require` line.
fn required_version(go_mod: &Path, module: &str) -> Result<String> {
    let text =
        fs::read_to_string(go_mod).with_context(|| format!("reading {}", go_mod.display()))?;
    text.lines()
        .map(|l| l.trim().trim_start_matches("require").trim())
        .find_map(|l| {
            let mut parts = l.split_whitespace();
            (parts.next() == Some(module))
                .then(|| parts.next().map(str::to_owned))
                .flatten()
        })
        .ok_or_else(|| anyhow!("{} does not require {module}", go_mod.display()))
}

fn cache_root() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("FRC_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home =
        std::env::var_os("HOME").ok_or_else(|| anyhow!("neither FRC_CACHE_DIR nor HOME is set"))?;
    Ok(PathBuf::from(home)
        .join(".cache")
        .join("forgejo-runner-controller"))
}

/// Builds the pinned control-plane binaries once; returns where they are.
pub(crate) fn ensure_binaries(workspace_root: &Path) -> Result<Binaries> {
    let wrapper = workspace_root.join("xtask").join("controlplane");
    let kube_mod = wrapper.join("kube");
    let etcd_mod = wrapper.join("etcd");
    let k8s = required_version(&kube_mod.join("go.mod"), "k8s.io/kubernetes")?;
    let etcd = required_version(&etcd_mod.join("go.mod"), "go.etcd.io/etcd/server/v3")?;
    let key = format!("{k8s}-etcd{}", etcd.trim_start_matches('v'));
    let dir = cache_root()?.join("controlplane").join(&key);
    let bin_dir = dir.join("bin");
    let bins = Binaries {
        bin_dir: bin_dir.clone(),
    };
    if BINARIES.iter().all(|b| bin_dir.join(b).is_file()) {
        return Ok(bins);
    }

    let go_version = Command::new("go")
        .arg("version")
        .output()
        .context("running `go version`: Go is needed to build the local control plane")?;
    if !go_version.status.success() {
        bail!(
            "`go version` failed: {}",
            String::from_utf8_lossy(&go_version.stderr)
        );
    }
    eprintln!(
        "cluster: building Kubernetes {k8s} and etcd {etcd} from source with {} into {}",
        String::from_utf8_lossy(&go_version.stdout).trim(),
        bin_dir.display()
    );
    eprintln!("cluster: this happens once per version and takes several minutes on 2 cores");

    let partial = dir.join(format!("bin.partial-{}", std::process::id()));
    if partial.exists() {
        fs::remove_dir_all(&partial)?;
    }
    fs::create_dir_all(&partial)?;

    go_build(
        &etcd_mod,
        "etcd",
        &[
            "-trimpath",
            "-ldflags=-s -w",
            "-o",
            &partial.join("etcd").display().to_string(),
            "go.etcd.io/etcd/server/v3",
        ],
    )?;

    // Version stamping as the Kubernetes release build does (hack/lib/version.sh), so that
    // `kubectl version` shows the real server version. The module proxy does not carry the
    // git commit, so gitCommit stays empty; the build date is the release's module time.
    let time = go_output(
        &kube_mod,
        &[
            "list",
            "-m",
            "-f",
            "{{.Time.UTC.Format \"2006-01-02T15:04:05Z\"}}",
            "k8s.io/kubernetes",
        ],
    )?;
    let (major, minor) = {
        let mut it = k8s.trim_start_matches('v').split('.');
        (
            it.next().unwrap_or("").to_owned(),
            it.next().unwrap_or("").to_owned(),
        )
    };
    let mut ldflags = String::from("-s -w");
    for pkg in [
        "k8s.io/component-base/version",
        "k8s.io/client-go/pkg/version",
    ] {
        for (k, v) in [
            ("gitVersion", k8s.as_str()),
            ("gitMajor", major.as_str()),
            ("gitMinor", minor.as_str()),
            ("gitTreeState", "archive"),
            ("buildDate", time.trim()),
        ] {
            ldflags.push_str(&format!(" -X {pkg}.{k}={v}"));
        }
    }
    let out = format!("{}/", partial.display());
    go_build(
        &kube_mod,
        "kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet",
        &[
            "-trimpath",
            &format!("-ldflags={ldflags}"),
            "-o",
            &out,
            "k8s.io/kubernetes/cmd/kube-apiserver",
            "k8s.io/kubernetes/cmd/kube-controller-manager",
            "k8s.io/kubernetes/cmd/kube-scheduler",
            "k8s.io/kubernetes/cmd/kubectl",
            "k8s.io/kubernetes/cmd/kubelet",
        ],
    )?;

    if bin_dir.exists() {
        fs::remove_dir_all(&bin_dir)?;
    }
    fs::rename(&partial, &bin_dir)
        .with_context(|| format!("moving {} to {}", partial.display(), bin_dir.display()))?;
    Ok(bins)
}

fn go_command(module_dir: &Path) -> Command {
    let mut cmd = Command::new("go");
    cmd.current_dir(module_dir)
        .env("CGO_ENABLED", "0")
        // The wrapper's go.mod/go.sum are committed; never let a build rewrite them.
        .env("GOFLAGS", "-mod=readonly")
        .env("GOWORK", "off")
        .stdin(Stdio::null());
    cmd
}

fn go_output(module_dir: &Path, args: &[&str]) -> Result<String> {
    let out = go_command(module_dir)
        .args(args)
        .output()
        .with_context(|| format!("running go {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "go {} failed in {}: {}",
            args.join(" "),
            module_dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn go_build(module_dir: &Path, what: &str, args: &[&str]) -> Result<()> {
    let started = Instant::now();
    eprintln!("cluster: go build {what} ...");
    let mut child = go_command(module_dir)
        .arg("build")
        .args(args)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawning go build")?;
    let mut next_note = Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() >= next_note {
            eprintln!(
                "cluster:   still building {what} ({}s)",
                started.elapsed().as_secs()
            );
            next_note += Duration::from_secs(60);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    if !status.success() {
        bail!(
            "go build {what} failed ({status}) in {}",
            module_dir.display()
        );
    }
    eprintln!("cluster: built {what} in {}s", started.elapsed().as_secs());
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Certificates and kubeconfigs
// ---------------------------------------------------------------------------------------

/// CA, apiserver serving cert, client certs and the ServiceAccount signing key, in `<dir>/pki`.
fn generate_pki(dir: &Path) -> Result<PathBuf> {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let pki = dir.join("pki");
    fs::create_dir_all(&pki)?;

    let dn = |cn: &str, org: Option<&str>| {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        if let Some(o) = org {
            dn.push(DnType::OrganizationName, o);
        }
        dn
    };

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = dn("forgejo-runner-controller-local-ca", None);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    fs::write(pki.join("ca.crt"), ca_cert.pem())?;
    write_private(&pki.join("ca.key"), &ca_key.serialize_pem())?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf = |name: &str, params: CertificateParams| -> Result<()> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        fs::write(pki.join(format!("{name}.crt")), cert.pem())?;
        write_private(&pki.join(format!("{name}.key")), &key.serialize_pem())?;
        Ok(())
    };

    let mut serving = CertificateParams::new(vec![
        "127.0.0.1".to_owned(),
        node::NODE_IP.to_string(),
        // The `kubernetes` Service's ClusterIP, first of SERVICE_CLUSTER_IP_RANGE.
        "10.0.0.1".to_owned(),
        "localhost".to_owned(),
        "kubernetes".to_owned(),
        "kubernetes.default".to_owned(),
        "kubernetes.default.svc".to_owned(),
    ])?;
    serving.distinguished_name = dn("kube-apiserver", None);
    serving.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf("apiserver", serving)?;

    let client = |cn: &str, org: &str| {
        let mut p = CertificateParams::default();
        p.distinguished_name = dn(cn, Some(org));
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p
    };
    leaf("admin", client("admin", "system:masters"))?;
    // The controller-manager runs every controller under its own identity
    // (--use-service-account-credentials=false), so it needs more than the bootstrap
    // system:kube-controller-manager role grants: give it the masters group.
    leaf(
        "controller-manager",
        client("system:kube-controller-manager", "system:masters"),
    )?;
    leaf(
        "scheduler",
        client("system:kube-scheduler", "system:kube-scheduler"),
    )?;
    // The Node authorizer and NodeRestriction know a kubelet by this name and group.
    leaf(
        "kubelet",
        client(&format!("system:node:{}", node::NODE_NAME), "system:nodes"),
    )?;
    // The apiserver's identity towards the kubelet (logs, exec).
    leaf(
        "apiserver-kubelet-client",
        client("kube-apiserver-kubelet-client", "system:masters"),
    )?;
    let mut kubelet_serving = CertificateParams::new(vec![
        node::NODE_IP.to_string(),
        "127.0.0.1".to_owned(),
        node::NODE_NAME.to_owned(),
    ])?;
    kubelet_serving.distinguished_name = dn(
        &format!("system:node:{}", node::NODE_NAME),
        Some("system:nodes"),
    );
    kubelet_serving.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    kubelet_serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf("kubelet-serving", kubelet_serving)?;

    let sa = KeyPair::generate()?;
    write_private(&pki.join("sa.key"), &sa.serialize_pem())?;
    fs::write(pki.join("sa.pub"), sa.public_key_pem())?;
    Ok(pki)
}

/// Writes a kubeconfig that authenticates as `user` with `<pki>/<user>.{crt,key}`. The server
/// is verified against our CA if `verify_server`; otherwise (a component serving a
/// self-signed certificate of its own) it is not verified.
fn write_kubeconfig_cert(
    path: &Path,
    server: &str,
    pki: &Path,
    user: &str,
    verify_server: bool,
) -> Result<()> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let read = |f: String| fs::read(pki.join(&f)).with_context(|| format!("reading {f}"));
    let verify = if verify_server {
        format!(
            "certificate-authority-data: {}",
            b64.encode(read("ca.crt".into())?)
        )
    } else {
        "insecure-skip-tls-verify: true".to_owned()
    };
    write_private(
        path,
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    {verify}\ncontexts:\n- name: {user}@local\n  context:\n    cluster: local\n    user: {user}\ncurrent-context: {user}@local\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {crt}\n    client-key-data: {key}\n",
            crt = b64.encode(read(format!("{user}.crt"))?),
            key = b64.encode(read(format!("{user}.key"))?),
        ),
    )
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------

fn read_state(dir: &Path) -> Result<Option<State>> {
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

fn write_state(dir: &Path, state: &State) -> Result<()> {
    let tmp = dir.join("state.json.tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(state)?)?;
    fs::rename(&tmp, dir.join("state.json"))?;
    Ok(())
}

/// A free TCP port on 127.0.0.1 (asked of the kernel, then released for the component).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts a component in its own process group (so a terminal's Ctrl-C on xtask does not
/// reach it), stdin closed, stdout+stderr into `logs/<name>.log`.
fn spawn(bins: &Binaries, name: &str, logs: &Path, args: &[String]) -> Result<Proc> {
    spawn_program(&bins.path(name), name, logs, args)
}

/// [`spawn`] for a program outside the Go-built binaries (containerd).
fn spawn_program(program: &Path, name: &str, logs: &Path, args: &[String]) -> Result<Proc> {
    let log_path = logs.join(format!("{name}.log"));
    // Appended: a component started again keeps its first life's log for post-mortems.
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    eprintln!(
        "cluster: started {name} (pid {}), log {}",
        child.id(),
        log_path.display()
    );
    // The child is not waited for here: it outlives xtask. `down` stops it by pid.
    Ok(Proc {
        name: name.to_owned(),
        pid: child.id(),
        program: program.to_owned(),
        args: args.to_vec(),
    })
}

/// True if `pid` is a live (not zombie) process running the expected binary.
fn process_matches(p: &Proc) -> bool {
    reap(p.pid);
    let Ok(stat) = fs::read_to_string(format!("/proc/{}/stat", p.pid)) else {
        return false;
    };
    // Field 3, after the parenthesised command name: Z = zombie, X = dead.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, Some("Z") | Some("X") | None) {
        return false;
    }
    let Ok(cmdline) = fs::read(format!("/proc/{}/cmdline", p.pid)) else {
        return false;
    };
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    if argv0.is_empty() {
        // Seen once right after spawn: the cmdline is not readable yet, but the process lives.
        return true;
    }
    use std::os::unix::ffi::OsStrExt;
    Path::new(std::ffi::OsStr::from_bytes(argv0))
        .file_name()
        .is_some_and(|n| n == p.name.as_str())
}

/// Collects the exit status if `pid` is our own child that has exited (when `up` and `down`
/// run in one process); a no-op for processes that are not our children.
fn reap(pid: u32) {
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG on a specific pid only reads/writes `status`.
    unsafe {
        libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG);
    }
}

pub(crate) fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory effects; the pid was checked against its cmdline.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// SIGTERM, then SIGKILL after STOP_TIMEOUT; last started first.
fn stop_processes(procs: &[Proc]) -> Result<()> {
    for p in procs.iter().rev() {
        if !process_matches(p) {
            continue;
        }
        signal(p.pid, libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while process_matches(p) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if process_matches(p) {
            eprintln!(
                "cluster: {} (pid {}) ignored SIGTERM; sending SIGKILL",
                p.name, p.pid
            );
            signal(p.pid, libc::SIGKILL);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while process_matches(p) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if process_matches(p) {
                bail!("{} (pid {}) survived SIGKILL", p.name, p.pid);
            }
        }
    }
    Ok(())
}

/// Polls `ready` until it holds; fails early if the process died, and after READY_TIMEOUT,
/// with the tail of the component's log either way.
fn wait_until(p: &Proc, logs: &Path, what: &str, mut ready: impl FnMut() -> bool) -> Result<()> {
    let started = Instant::now();
    loop {
        if ready() {
            eprintln!(
                "cluster: {what} ready after {:.1}s",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        let log = logs.join(format!("{}.log", p.name));
        if !process_matches(p) {
            bail!(
                "{} (pid {}) exited before {what} was ready; last lines of {}:\n{}",
                p.name,
                p.pid,
                log.display(),
                tail(&log, 40)
            );
        }
        if started.elapsed() > READY_TIMEOUT {
            bail!(
                "{what} not ready after {}s; last lines of {}:\n{}",
                READY_TIMEOUT.as_secs(),
                log.display(),
                tail(&log, 40)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read: {e})"));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// etcd answers `GET /health` on its plain-HTTP loopback client URL.
fn etcd_healthy(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.starts_with("HTTP/1.0 200") || resp.starts_with("HTTP/1.1 200")
}

/// Waits until the node is registered and Ready, then until the `default` ServiceAccount
/// exists (pods are refused before it); a node not Ready in time fails with the kubelet's log.
fn wait_for_node(bins: &Binaries, admin: &Path, kubelet: &Proc, logs: &Path) -> Result<()> {
    let started = Instant::now();
    let log = logs.join("kubelet.log");
    loop {
        let ready = kubectl(
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
        .is_ok_and(|s| s.trim() == "True");
        if ready {
            break;
        }
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

fn apiserver_ready(bins: &Binaries, root: &Path) -> bool {
    kubectl_quiet(
        bins,
        &admin_kubeconfig_path(root),
        &["get", "--raw=/readyz"],
    )
}

fn server_version(bins: &Binaries, kubeconfig: &Path) -> Result<String> {
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

fn kubectl_quiet(bins: &Binaries, kubeconfig: &Path, args: &[&str]) -> bool {
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
fn kubectl(bins: &Binaries, kubeconfig: &Path, args: &[&str]) -> Result<String> {
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
