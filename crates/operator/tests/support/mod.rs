//! Shared pieces of the cluster tier: the control plane's kubeconfigs (set by
//! `cargo xtask test`), a namespace per test, the operator as a real process holding only
//! its generated RBAC, and a Forgejo stand-in on loopback.

#![allow(dead_code)]

pub mod kubelet;
pub mod partition;
mod pools;

// Not every test binary uses them.
#[allow(unused_imports)]
pub use pools::{node_pool, wait_for_results};

use std::future::Future;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use api::RunnerDeployment;
use forgejo_stand_in::{StandIn, StandInConfig};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt as _};
use serde_json::json;

/// The Forgejo version the stand-in plays unless a test says otherwise.
pub const FORGEJO_15: &str = "15.0.3+gitea-1.22.0";

fn needs(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: the cluster tier needs the local control plane; run `cargo xtask test`")
    })
}

/// The address pods reach this machine at: test servers for pods listen there.
pub fn node_ip() -> std::net::IpAddr {
    let value = needs("FRC_TEST_NODE_IP");
    value
        .parse()
        .unwrap_or_else(|e| panic!("FRC_TEST_NODE_IP={value} is not an IP address: {e}"))
}

/// The runner test image (the double, or the real runner of `FRC_E2E_RUNNER`, at
/// `/bin/forgejo-runner`).
pub fn runner_image() -> String {
    needs("FRC_TEST_RUNNER_IMAGE")
}

/// The label image of kubernetes-mode tests (it has `/etc/frc-label-image`).
pub fn label_image() -> String {
    needs("FRC_TEST_LABEL_IMAGE")
}

/// The kustomize overlay that installs the operator in-cluster from the local image.
pub fn overlay() -> String {
    needs("FRC_TEST_OVERLAY")
}

/// A client with the admin identity of the local control plane.
pub async fn admin_client() -> Client {
    client_from(&needs("FRC_TEST_KUBECONFIG")).await
}

/// The operator ServiceAccount's kubeconfig (its generated RBAC only).
pub fn operator_kubeconfig() -> String {
    needs("FRC_TEST_OPERATOR_KUBECONFIG")
}

/// A client with the operator ServiceAccount's identity (its generated RBAC only).
pub async fn operator_client() -> Client {
    client_from(&needs("FRC_TEST_OPERATOR_KUBECONFIG")).await
}

async fn client_from(path: &str) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .unwrap_or_else(|e| panic!("reading kubeconfig {path}: {e}"));
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("loading kubeconfig {path}: {e}"));
    Client::try_from(config).expect("kube client")
}

/// Polls `check` every 100 ms until it returns `Some`, or panics naming `what` after `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn random_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{:08x}",
        (nanos as u64 ^ u64::from(std::process::id()) << 20) as u32
    )
}

/// One test's world: a namespace, a Forgejo stand-in with a unique token, a token Secret.
pub struct World {
    /// Admin client.
    pub client: Client,
    /// The test's namespace (deleted on drop).
    pub ns: String,
    /// The Forgejo stand-in.
    pub forgejo: StandIn,
    /// The API token the stand-in accepts (unique, so leaks are greppable).
    pub token: String,
}

impl World {
    /// A world with a Forgejo 15 stand-in that knows every organization.
    pub async fn new(prefix: &str) -> Self {
        Self::with_forgejo(prefix, |config| config).await
    }

    /// A world whose stand-in config `adjust` may change.
    pub async fn with_forgejo(
        prefix: &str,
        adjust: impl FnOnce(StandInConfig) -> StandInConfig,
    ) -> Self {
        Self::in_namespace(&format!("{prefix}-{}", random_suffix()), adjust).await
    }

    /// A world in the namespace `ns` (created here) whose stand-in listens where pods reach
    /// it (the node's address), for tests whose pods really run.
    pub async fn on_node(prefix: &str) -> Self {
        Self::on_node_with(prefix, |config| config).await
    }

    /// [`World::on_node`] with a stand-in config `adjust` may change.
    pub async fn on_node_with(
        prefix: &str,
        adjust: impl FnOnce(StandInConfig) -> StandInConfig,
    ) -> Self {
        Self::in_namespace(&format!("{prefix}-{}", random_suffix()), |config| {
            adjust(StandInConfig {
                bind: SocketAddr::new(node_ip(), 0),
                ..config
            })
        })
        .await
    }

    /// A world in the namespace `ns`, created here.
    pub async fn in_namespace(
        ns: &str,
        adjust: impl FnOnce(StandInConfig) -> StandInConfig,
    ) -> Self {
        let client = admin_client().await;
        let ns = ns.to_owned();
        create_namespace(&client, &ns).await;
        let token = format!("frc-test-token-{}", random_suffix());
        let forgejo = StandIn::start(adjust(StandInConfig::with_token(FORGEJO_15, &token)));
        let world = Self {
            client,
            ns,
            forgejo,
            token,
        };
        world
            .put_secret("forgejo-token", "token", &world.token)
            .await;
        world
    }

    /// Creates or replaces a Secret with one key.
    pub async fn put_secret(&self, name: &str, key: &str, value: &str) {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
        let _ = secrets.delete(name, &DeleteParams::default()).await;
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": name},
            "stringData": {key: value},
        }))
        .expect("secret");
        wait_until("the Secret to be created", Duration::from_secs(10), || {
            let secrets = secrets.clone();
            let secret = secret.clone();
            async move { secrets.create(&PostParams::default(), &secret).await.ok() }
        })
        .await;
    }

    /// Creates a pool of `org` on the stand-in with `labels` and `max_runners`, polling every second.
    pub async fn create_pool(
        &self,
        name: &str,
        org: &str,
        labels: &str,
        max_runners: i32,
    ) -> RunnerDeployment {
        self.create_pool_from(json!({
            "metadata": {"name": name},
            "spec": {
                "forgejoServer": self.forgejo.url(),
                "organization": org,
                "labels": labels,
                "tokenSecretRef": {"name": "forgejo-token", "key": "token"},
                "pollInterval": "1s",
                "maxRunners": max_runners,
            }
        }))
        .await
    }

    /// Creates a pool from raw JSON (apiVersion and kind are added). Its pods are left to the
    /// kubelet stand-in (`schedulerName: kubelet-stand-in`) unless the JSON names a scheduler:
    /// `default-scheduler` puts them on the real node.
    pub async fn create_pool_from(&self, mut value: serde_json::Value) -> RunnerDeployment {
        value["apiVersion"] = "forgejo.runners.dev/v1alpha1".into();
        value["kind"] = "RunnerDeployment".into();
        let pod_spec = &mut value["spec"]["jobTemplate"]["spec"];
        if pod_spec.get("schedulerName").is_none() {
            pod_spec["schedulerName"] = kubelet::STAND_IN_SCHEDULER.into();
        }
        let rd: RunnerDeployment = serde_json::from_value(value).expect("pool");
        self.pools()
            .create(&PostParams::default(), &rd)
            .await
            .expect("creating the pool")
    }

    /// The pools API of the namespace.
    pub fn pools(&self) -> Api<RunnerDeployment> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// The last lines each pod of the namespace logged (its runner container, or its only
    /// one), for a failing test to show what the runners did.
    pub async fn pod_logs(&self) -> String {
        let pods: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(self.client.clone(), &self.ns);
        let Ok(list) = pods.list(&ListParams::default()).await else {
            return "(the pods cannot be listed)".to_owned();
        };
        let mut out = String::new();
        for pod in list.items {
            let name = pod.name_any();
            let container = pod
                .spec
                .as_ref()
                .and_then(|spec| spec.containers.iter().find(|c| c.name == "runner"))
                .map(|c| c.name.clone());
            let params = kube::api::LogParams {
                container,
                tail_lines: Some(40),
                timestamps: true,
                ..kube::api::LogParams::default()
            };
            let logs = pods
                .logs(&name, &params)
                .await
                .unwrap_or_else(|e| format!("(no log: {e})"));
            out.push_str(&format!("--- pod {name} ---\n{logs}\n"));
        }
        out
    }

    /// The runner Jobs in the namespace, oldest first.
    pub async fn runner_jobs_opt(&self) -> Option<Vec<Job>> {
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &self.ns);
        let params = ListParams::default().labels(&scheduler::labels::owned_jobs_selector());
        jobs.list(&params).await.ok().map(|list| list.items)
    }

    /// The runner Jobs in the namespace.
    pub async fn runner_jobs(&self) -> Vec<Job> {
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &self.ns);
        let mut items = jobs
            .list(&ListParams::default().labels(&scheduler::labels::owned_jobs_selector()))
            .await
            .expect("listing runner Jobs")
            .items;
        items.sort_by_key(|job| job.creation_timestamp().map(|t| t.0));
        items
    }

    /// Asserts exactly one runner Job per Forgejo job, for `waiting` jobs: no duplicate, none
    /// lost.
    pub async fn assert_one_job_each(&self, waiting: usize) {
        let mut ids: Vec<String> = self
            .runner_jobs()
            .await
            .iter()
            .filter_map(|job| {
                job.metadata
                    .labels
                    .as_ref()?
                    .get(scheduler::labels::FORGEJO_JOB_ID)
                    .cloned()
            })
            .collect();
        ids.sort();
        let jobs = ids.len();
        ids.dedup();
        assert_eq!(jobs, ids.len(), "duplicate runner Jobs: {ids:?}");
        assert_eq!(
            ids.len(),
            waiting,
            "a waiting job has no runner Job (lost): {ids:?}"
        );
    }

    /// The runner Jobs not finished and not being deleted.
    pub async fn live_runner_jobs(&self) -> Vec<Job> {
        self.runner_jobs()
            .await
            .into_iter()
            .filter(|job| job.metadata.deletion_timestamp.is_none() && !is_finished(job))
            .collect()
    }

    /// The Secret of this name, if it exists.
    pub async fn secret(&self, name: &str) -> Option<Secret> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
        secrets.get_opt(name).await.expect("reading a Secret")
    }

    /// The events on a pool.
    pub async fn events_of(&self, pool: &str) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        events
            .list(&ListParams::default())
            .await
            .expect("listing events")
            .items
            .into_iter()
            .filter(|event| event.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pool))
            .collect()
    }

    /// Waits for an event with `reason` on `pool`, and returns it.
    pub async fn wait_for_event(&self, pool: &str, reason: &str) -> Event {
        wait_until(
            &format!("event {reason} on {pool}"),
            Duration::from_secs(30),
            || async {
                self.events_of(pool)
                    .await
                    .into_iter()
                    .find(|event| event.reason.as_deref() == Some(reason))
            },
        )
        .await
    }

    /// The pool's condition of `type_`, as (status, reason).
    pub async fn condition(&self, pool: &str, type_: &str) -> Option<(String, String)> {
        let rd = self.pools().get(pool).await.ok()?;
        rd.status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status, c.reason))
    }

    /// Waits until the pool's condition `type_` has `status` and `reason`.
    pub async fn wait_for_condition(&self, pool: &str, type_: &str, status: &str, reason: &str) {
        let want = (status.to_owned(), reason.to_owned());
        wait_until(
            &format!("{pool}: condition {type_}={status} ({reason})"),
            Duration::from_secs(45),
            || async { (self.condition(pool, type_).await.as_ref() == Some(&want)).then_some(()) },
        )
        .await;
    }

    /// Number of job listings the stand-in has answered.
    pub fn polls(&self) -> usize {
        self.forgejo
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/actions/runners/jobs"))
            .count()
    }

    /// Waits until the stand-in has answered `n` more job listings than now.
    pub async fn wait_for_polls(&self, n: usize) {
        let start = self.polls();
        wait_until(
            &format!("{n} more polls"),
            Duration::from_secs(30),
            || async { (self.polls() >= start + n).then_some(()) },
        )
        .await;
    }
}

/// Creates a namespace and waits for its `default` ServiceAccount (pods are refused before the
/// ServiceAccount controller made it).
pub async fn create_namespace(client: &Client, ns: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": ns}})).expect("namespace");
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .expect("creating the test namespace");
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), ns);
    wait_until(
        "the namespace's default ServiceAccount",
        Duration::from_secs(30),
        || async { accounts.get_opt("default").await.ok().flatten() },
    )
    .await;
}

impl Drop for World {
    fn drop(&mut self) {
        let ns = self.ns.clone();
        if std::env::var_os("FRC_TEST_NO_CLEANUP").is_some() {
            return;
        }
        // A new client on a new runtime: the test's runtime is blocked in this drop.
        std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Runtime::new() {
                runtime.block_on(async move {
                    let namespaces: Api<Namespace> = Api::all(admin_client().await);
                    let _ = namespaces.delete(&ns, &DeleteParams::background()).await;
                });
            }
        })
        .join()
        .ok();
    }
}

/// Whether a runner Job is finished, by the operator's own rule.
pub fn is_finished(job: &Job) -> bool {
    // The operator's own rule (conditions, including SuccessCriteriaMet and FailureTarget
    // that come before Complete and Failed, then the pod counters): a test that counted
    // only Complete saw a slot the operator had rightly reused.
    if let Some(owned) = scheduler::OwnedJob::from_objects(job, &[], None) {
        return owned.state.is_finished();
    }
    scheduler::WarmRunner::from_objects(job, &[], None).is_some_and(|warm| warm.state.is_finished())
}

/// The operator binary, run as its ServiceAccount, watching one namespace.
pub struct Operator {
    child: Child,
    /// Where its admin server listens.
    pub admin_addr: SocketAddr,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

/// Short timeouts so cleanup tests finish in seconds.
pub const FAST_TIMEOUTS: &[&str] = &[
    "--not-waiting-grace=2s",
    "--image-pull-deadline=2s",
    "--unschedulable-deadline=2s",
    "--retry-after=2s",
];

impl Operator {
    /// Starts the operator on `ns` without leader election.
    pub fn start(ns: &str) -> Self {
        let mut args = vec!["--leader-election=false"];
        args.extend_from_slice(FAST_TIMEOUTS);
        Self::start_with(ns, &args)
    }

    /// Starts the operator on `ns` with these extra arguments.
    pub fn start_with(ns: &str, extra: &[&str]) -> Self {
        Self::start_with_kubeconfig(&needs("FRC_TEST_OPERATOR_KUBECONFIG"), ns, extra)
    }

    /// Starts the operator on `ns` with this kubeconfig and these extra arguments.
    pub fn start_with_kubeconfig(kubeconfig: &str, ns: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log_path = dir.path().join("operator.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let admin_addr = free_addr();
        let child = Command::new(env!("CARGO_BIN_EXE_operator"))
            .arg(format!("--kubeconfig={kubeconfig}"))
            .arg(format!("--namespace={ns}"))
            .arg(format!("--admin-addr={admin_addr}"))
            .arg("--log-format=json")
            .arg("--log-level=info,operator=debug,forgejo=debug")
            .args(extra)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("starting the operator binary");
        Self {
            child,
            admin_addr,
            log_path,
            _dir: dir,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILLs the process and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits up to `timeout` for a clean exit; returns whether it exited 0.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Everything it logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// GETs a path of its admin server: (status, body); `None` if it does not answer.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.admin_addr, path)
    }

    /// The value of a metric line starting with `prefix` (name and labels), if present.
    pub fn metric(&self, prefix: &str) -> Option<f64> {
        metric(self.admin_addr, prefix)
    }

    /// The sum of the samples of metric `name` whose labels contain each of `having`
    /// (e.g. `result="success"`); 0 when none or no answer.
    pub fn metric_sum(&self, name: &str, having: &[&str]) -> f64 {
        let Some((_, body)) = http_get(self.admin_addr, "/metrics") else {
            return 0.0;
        };
        body.lines()
            .filter(|line| line.starts_with(&format!("{name}{{")))
            .filter(|line| having.iter().all(|h| line.contains(h)))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// GETs `path` of a plain-HTTP server: (status, body); `None` if it does not answer.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// The value of a metric line starting with `prefix` (name and labels) on the admin server
/// at `addr`, if present.
pub fn metric(addr: SocketAddr, prefix: &str) -> Option<f64> {
    let (_, body) = http_get(addr, "/metrics")?;
    body.lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() || std::env::var_os("FRC_TEST_SHOW_LOGS").is_some() {
            eprintln!("--- operator log ---\n{}", self.logs());
        }
    }
}

/// A free loopback address for a listener.
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().expect("local addr")
}

/// Runs the control plane's kubectl with the admin kubeconfig; returns stdout.
pub fn kubectl(args: &[&str]) -> String {
    let output = Command::new(needs("FRC_TEST_KUBECTL"))
        .arg(format!("--kubeconfig={}", needs("FRC_TEST_KUBECONFIG")))
        .args(args)
        .output()
        .expect("running kubectl");
    assert!(
        output.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
