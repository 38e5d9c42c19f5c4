//! What every cluster stage needs: a namespace with the token, pools, the operator, counts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context as _;
use std::time::{Duration, Instant};

use api::RunnerDeployment;
use forgejo_stand_in::{RecordedRequest, StandIn};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::TOKEN;

pub(super) fn pool_value(
    name: &str,
    server: &str,
    labels: &str,
    max_runners: usize,
    interval: &str,
) -> serde_json::Value {
    json!({
        "apiVersion": "forgejo.runners.dev/v1alpha1", "kind": "RunnerDeployment",
        "metadata": {"name": name, "uid": format!("00000000-0000-4000-8000-{:012}", name.len())},
        "spec": {"forgejoServer": server, "organization": "bench", "labels": labels,
                 "tokenSecretRef": {"name": "forgejo-token"}, "pollInterval": interval,
                 "maxRunners": max_runners,
                 // The controller's costs are measured, not a node's: no scheduler takes
                 // pods of this name, so they stay Pending as on a cluster without capacity.
                 "jobTemplate": {"spec": {"schedulerName": "bench-unscheduled"}},
                 // Scheduling is measured: no cache server per pool (comparable with the
                 // figures from before spec.cache, and with peers that have none).
                 "cache": {"mode": "Disabled"}}
    })
}

pub(super) async fn admin_client(kubeconfig: &Path) -> anyhow::Result<Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(Client::try_from(config)?)
}

/// A namespace of its own for one stage (the control plane goes away at the end), with the
/// token Secret. Pools are never deleted: their finalizer would need the stage's operator.
pub(super) async fn fresh_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    namespaces.create(&PostParams::default(), &ns).await?;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "forgejo-token"}, "stringData": {"token": TOKEN}
    }))?;
    Api::<Secret>::namespaced(client.clone(), name)
        .create(&PostParams::default(), &secret)
        .await?;
    Ok(())
}

pub(super) async fn apply_pool(
    client: &Client,
    ns: &str,
    value: serde_json::Value,
) -> anyhow::Result<()> {
    let mut value = value;
    if let Some(metadata) = value["metadata"].as_object_mut() {
        metadata.remove("uid");
    }
    let name = value["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Api::<RunnerDeployment>::namespaced(client.clone(), ns)
        .patch(
            &name,
            &PatchParams::apply("xtask-bench"),
            &Patch::Apply(&value),
        )
        .await?;
    Ok(())
}

/// The operator binary the stages run, and how.
pub(super) struct OperatorBinary {
    /// The built binary.
    pub path: PathBuf,
    /// The kubeconfig of the operator's ServiceAccount.
    pub kubeconfig: PathBuf,
    /// `release` or `debug`, for the figures.
    pub build: &'static str,
}

/// Starts the operator as its ServiceAccount on `ns`, without leader election, behind
/// `FRC_BENCH_WRAP` (a profiler) when that is set.
pub(super) fn start_operator(
    operator: &OperatorBinary,
    ns: &str,
) -> anyhow::Result<OperatorProcess> {
    start_operator_with(operator, ns, &[])
}

/// [`start_operator`] with `extra` arguments.
pub(super) fn start_operator_with(
    operator: &OperatorBinary,
    ns: &str,
    extra: &[String],
) -> anyhow::Result<OperatorProcess> {
    let log_path = operator_log(ns);
    println!("    ({ns}: operator log in {})", log_path.display());
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let wrap = std::env::var("FRC_BENCH_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    let mut command = match words.next() {
        Some(profiler) => {
            let mut command = Command::new(profiler);
            command.args(words).arg(&operator.path);
            command
        }
        None => Command::new(&operator.path),
    };
    let child = command
        .arg(format!("--kubeconfig={}", operator.kubeconfig.display()))
        .arg(format!("--namespace={ns}"))
        .args(["--leader-election=false", "--admin-addr=127.0.0.1:0"])
        .args(["--log-level=info,operator=debug", "--log-format=json"])
        .args(extra)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting the operator")?;
    Ok(OperatorProcess(child))
}

/// Stops the operator when its stage ends, however it ends: SIGTERM first, so that a
/// profiler wrapping it writes its data, then SIGKILL after 20 s.
pub(super) struct OperatorProcess(pub(super) Child);

impl OperatorProcess {
    /// The process id (the profiler's, when wrapped).
    pub(super) fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        crate::pid::signal(self.0.id(), rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Where the operator of stage `ns` logs.
pub(super) fn operator_log(ns: &str) -> PathBuf {
    std::env::temp_dir().join(format!("forgejo-runner-controller-{ns}.log"))
}

/// Job listings the stand-in has answered.
pub(super) fn listings(forgejo: &StandIn) -> usize {
    forgejo.count_requests(is_listing)
}

/// Whether `request` is a job listing.
pub(super) fn is_listing(request: &RecordedRequest) -> bool {
    request.path.ends_with("/runners/jobs")
}

pub(super) async fn count_jobs(client: &Client, ns: &str) -> anyhow::Result<usize> {
    Ok(Api::<Job>::namespaced(client.clone(), ns)
        .list_metadata(&ListParams::default().labels(&scheduler::labels::owned_jobs_selector()))
        .await?
        .items
        .len())
}

pub(super) async fn wait_for_jobs(
    client: &Client,
    ns: &str,
    want: usize,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if count_jobs(client, ns).await? >= want {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "fewer than {want} Jobs after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A size line of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), e.g. "31200 kB".
pub(super) fn rss(pid: u32, field: &str) -> anyhow::Result<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let prefix = format!("{field}:");
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|l| l.trim().to_owned())
        .unwrap_or_default())
}

/// One apiserver Job create, measured the way the operator does it (over HTTPS), as the
/// mean of 20 suspended Jobs (which make no pods and belong to no pool).
pub(super) async fn measure_one_create(client: &Client, ns: &str) -> anyhow::Result<Duration> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let started = Instant::now();
    for i in 0..20 {
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": format!("probe-{i}")},
            "spec": {"suspend": true, "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox"}]}}}
        }))?;
        jobs.create(&PostParams::default(), &job).await?;
    }
    Ok(started.elapsed() / 20)
}

pub(super) fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the command name.
    let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(utime + stime)
}
