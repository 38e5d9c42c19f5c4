//! `cargo xtask bench`: measures the targets of DESIGN.md and prints the figures (recorded in
//! docs/benchmarks.md). Separate from the tests: nothing here asserts a time.
//!
//! 1. `scheduler::plan` on large inputs (pure, no cluster).
//! 2. On the local control plane with the Forgejo stand-in and the operator binary:
//!    N waiting jobs → N Jobs (latency), Forgejo requests per interval with many pools
//!    sharing one server+scope+token, and the operator's memory and idle CPU with many pools
//!    and live Jobs.

use std::path::Path;
use std::time::{Duration, Instant};

use api::RunnerDeployment;
use forgejo::stand_in::{StandIn, StandInConfig, StandInJob};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::cluster;
use crate::demo::{OperatorProcess, build_operator, spawn_operator};

const TOKEN: &str = "bench-token-not-a-secret";

/// What to measure, and how big.
pub struct BenchArgs {
    /// Waiting jobs in the latency run.
    pub burst: usize,
    /// Pools sharing one server+scope+token in the request-count run.
    pub shared_pools: usize,
    /// Pools in the memory run.
    pub pools: usize,
    /// Live Jobs per pool in the memory run.
    pub jobs_per_pool: usize,
    /// Measure a release build of the operator (as deployed) instead of a debug build.
    pub release: bool,
}

/// Runs every benchmark and prints its figures.
pub fn run(root: &Path, args: &BenchArgs) -> anyhow::Result<()> {
    bench_plan();
    println!("==> bench: starting the local control plane");
    let info = cluster::up(root)?;
    let result = (|| {
        let operator_kubeconfig = cluster::install_operator_identity(root, &info.admin_kubeconfig)?;
        let operator = build_operator(root, args.release)?;
        let build = if args.release { "release" } else { "debug" };
        let runtime = tokio::runtime::Runtime::new()?;
        runtime.block_on(async {
            let client = admin_client(&info.admin_kubeconfig).await?;
            bench_burst(&client, &operator_kubeconfig, &operator, args.burst).await?;
            bench_shared_polls(&client, &operator_kubeconfig, &operator, args.shared_pools).await?;
            bench_memory(
                build,
                &client,
                &operator_kubeconfig,
                &operator,
                args.pools,
                args.jobs_per_pool,
            )
            .await
        })
    })();
    println!("==> bench: stopping the local control plane");
    let stopped = cluster::down(root);
    result?;
    stopped
}

fn pool_value(
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
                 "jobTemplate": {"spec": {"schedulerName": "bench-unscheduled"}}}
    })
}

/// `scheduler::plan` for one pool with 1,000 waiting jobs: first with no Jobs (it creates
/// 1,000), then with all 1,000 Jobs live (it creates nothing).
fn bench_plan() {
    let mut rd: RunnerDeployment = serde_json::from_value(pool_value(
        "plan",
        "https://code.example.com",
        "docker",
        1000,
        "30s",
    ))
    .expect("a valid pool");
    rd.metadata.namespace = Some("bench".into());
    let jobs: Vec<scheduler::ForgejoJob> = (1..=1000)
        .map(|id| scheduler::ForgejoJob {
            id,
            attempt: Some(1),
            handle: Some(format!("handle-{id}")),
            runs_on: vec!["docker".into()],
            status: scheduler::WAITING.into(),
            ..scheduler::ForgejoJob::default()
        })
        .collect();
    let now = Time(Timestamp::now());
    let input = scheduler::PlanInput {
        pool: &rd,
        forgejo_jobs: Some(&jobs),
        owned_jobs: &[],
        registrations: &[],
        runner_path: scheduler::RunnerPath::Ephemeral,
        timeouts: scheduler::Timeouts::default(),
    };
    let (first, plan) = time_it(20, || scheduler::plan(&input, now.clone()).expect("plan"));
    let owned: Vec<scheduler::OwnedJob> = plan
        .create_jobs
        .iter()
        .filter_map(|creation| {
            let mut job = creation.job.clone();
            job.metadata.creation_timestamp = Some(now.clone());
            scheduler::OwnedJob::from_objects(&job, &[], None)
        })
        .collect();
    let steady = scheduler::PlanInput {
        owned_jobs: &owned,
        ..input
    };
    let (second, again) = time_it(20, || scheduler::plan(&steady, now.clone()).expect("plan"));
    println!(
        "plan: 1000 waiting, 0 Jobs -> {} creations: {:.2} ms per plan (mean of 20)",
        plan.create_jobs.len(),
        first.as_secs_f64() * 1e3
    );
    println!(
        "plan: 1000 waiting, 1000 live Jobs -> {} creations: {:.2} ms per plan (mean of 20)",
        again.create_jobs.len(),
        second.as_secs_f64() * 1e3
    );
}

fn time_it<T>(runs: u32, mut f: impl FnMut() -> T) -> (Duration, T) {
    let started = Instant::now();
    let mut last = f();
    for _ in 1..runs {
        last = f();
    }
    (started.elapsed() / runs, last)
}

async fn admin_client(kubeconfig: &Path) -> anyhow::Result<Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(Client::try_from(config)?)
}

/// A namespace of its own for one stage (the control plane goes away at the end), with the
/// token Secret. Pools are never deleted: their finalizer would need the stage's operator.
async fn fresh_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
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

async fn apply_pool(client: &Client, ns: &str, value: serde_json::Value) -> anyhow::Result<()> {
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

fn start_operator(operator: &Path, kubeconfig: &Path, ns: &str) -> anyhow::Result<OperatorProcess> {
    let log_path = std::env::temp_dir().join(format!("forgejo-runner-controller-{ns}.log"));
    println!("    ({ns}: operator log in {})", log_path.display());
    spawn_operator(
        operator,
        kubeconfig,
        ns,
        &log_path,
        &["--log-level=info,operator=debug", "--log-format=json"],
    )
}

/// Job listings the stand-in has answered.
fn listings(forgejo: &StandIn) -> usize {
    forgejo
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/runners/jobs"))
        .count()
}

async fn count_jobs(client: &Client, ns: &str) -> anyhow::Result<usize> {
    Ok(Api::<Job>::namespaced(client.clone(), ns)
        .list_metadata(&ListParams::default().labels(&scheduler::labels::owned_jobs_selector()))
        .await?
        .items
        .len())
}

async fn wait_for_jobs(
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

/// N jobs appear at once: how long until N Jobs exist, against N sequential apiserver creates.
async fn bench_burst(
    client: &Client,
    kubeconfig: &Path,
    operator: &Path,
    n: usize,
) -> anyhow::Result<()> {
    let ns = "bench-burst";
    fresh_namespace(client, ns).await?;
    // One apiserver create, measured the way the operator does it (a Job, over HTTPS).
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
    let one_create = started.elapsed() / 20;

    let forgejo = StandIn::start(StandInConfig::with_token("15.0.3+gitea-1.22.0", TOKEN));
    apply_pool(
        client,
        ns,
        pool_value("burst", &forgejo.url(), "docker", n, "1s"),
    )
    .await?;
    let _operator = start_operator(operator, kubeconfig, ns)?;
    // Let the operator settle on an empty pool, then add every job at once.
    while listings(&forgejo) == 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = listings(&forgejo);
    for i in 0..n {
        forgejo.add_job(StandInJob::new(
            "bench/app",
            &format!("job-{i}"),
            &["docker"],
        ));
    }
    // The next listing answers with all of them: time from that answer (seen within ~2 ms).
    let watcher = {
        let forgejo = forgejo.clone();
        tokio::spawn(async move {
            while listings(&forgejo) == before {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Instant::now()
        })
    };
    let appeared = Instant::now();
    wait_for_jobs(client, ns, n, Duration::from_secs(120)).await?;
    let done = Instant::now();
    let polled = watcher.await?;
    println!(
        "burst: {n} waiting jobs -> {n} Jobs {:.0} ms after the poll that listed them ({:.0} ms after they appeared; poll interval 1 s)",
        done.duration_since(polled).as_secs_f64() * 1e3,
        done.duration_since(appeared).as_secs_f64() * 1e3
    );
    println!(
        "burst: one apiserver Job create {:.1} ms (mean of 20); target N x create + 100 ms = {:.0} ms after the poll answer",
        one_create.as_secs_f64() * 1e3,
        (one_create * n as u32).as_secs_f64() * 1e3 + 100.0
    );
    Ok(())
}

/// Many pools on one server+scope+token: how many job listings per interval.
async fn bench_shared_polls(
    client: &Client,
    kubeconfig: &Path,
    operator: &Path,
    pools: usize,
) -> anyhow::Result<()> {
    let ns = "bench-shared";
    fresh_namespace(client, ns).await?;
    let forgejo = StandIn::start(StandInConfig::with_token("15.0.3+gitea-1.22.0", TOKEN));
    for i in 0..pools {
        apply_pool(
            client,
            ns,
            pool_value(
                &format!("shared-{i}"),
                &forgejo.url(),
                &format!("label-{i}"),
                10,
                "2s",
            ),
        )
        .await?;
    }
    let _operator = start_operator(operator, kubeconfig, ns)?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let before = listings(&forgejo);
    let window = Duration::from_secs(20);
    tokio::time::sleep(window).await;
    let during = listings(&forgejo) - before;
    let intervals = window.as_secs_f64() / 2.0;
    println!(
        "shared polls: {pools} pools, one server+org+token, interval 2 s: {during} job listings in {}s = {:.2} per interval (target 1)",
        window.as_secs(),
        during as f64 / intervals
    );
    Ok(())
}

/// Memory and idle CPU of the operator with many pools and live Jobs.
async fn bench_memory(
    build: &str,
    client: &Client,
    kubeconfig: &Path,
    operator: &Path,
    pools: usize,
    jobs_per_pool: usize,
) -> anyhow::Result<()> {
    let ns = "bench-memory";
    fresh_namespace(client, ns).await?;
    let forgejo = StandIn::start(StandInConfig::with_token("15.0.3+gitea-1.22.0", TOKEN));
    for i in 0..pools {
        let label = format!("label-{i}");
        for j in 0..jobs_per_pool {
            forgejo.add_job(StandInJob::new(
                "bench/app",
                &format!("job-{i}-{j}"),
                &[label.as_str()],
            ));
        }
        apply_pool(
            client,
            ns,
            pool_value(
                &format!("pool-{i}"),
                &forgejo.url(),
                &label,
                jobs_per_pool,
                "30s",
            ),
        )
        .await?;
    }
    let started = Instant::now();
    let operator = start_operator(operator, kubeconfig, ns)?;
    let total = pools * jobs_per_pool;
    let took = wait_for_jobs(client, ns, total, Duration::from_secs(900)).await?;
    println!(
        "memory: {pools} pools, {total} live Jobs created in {:.1} s",
        took.max(started.elapsed()).as_secs_f64()
    );
    // Idle means the job controller has created every pod and the caches settled.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), ns);
    let settle = Instant::now();
    while pods
        .list_metadata(&ListParams::default())
        .await?
        .items
        .len()
        < total
    {
        anyhow::ensure!(
            settle.elapsed() < Duration::from_secs(600),
            "the job controller did not create {total} pods in 10 min"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let pid = operator.0.id();
    let cpu_before = cpu_ticks(pid)?;
    let window = Duration::from_secs(30);
    tokio::time::sleep(window).await;
    let cpu = (cpu_ticks(pid)? - cpu_before) as f64 / 100.0 / window.as_secs_f64();
    println!(
        "memory: operator RSS {} ({build} build), CPU {:.1} % of one core over {}s with pollInterval 30s",
        rss(pid)?,
        cpu * 100.0,
        window.as_secs()
    );
    Ok(())
}

fn rss(pid: u32) -> anyhow::Result<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .map(|l| l.trim_start_matches("VmRSS:").trim().to_owned())
        .unwrap_or_default())
}

fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
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
