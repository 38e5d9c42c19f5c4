//! Many pools on one server, organization and token, and many jobs: how long after the poll
//! that lists them every Job exists, how many creates found their Job already there, Forgejo
//! requests per interval, and the operator's RSS and idle CPU once every pod exists.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use forgejo_stand_in::{StandIn, StandInConfig, StandInJob};
use futures::StreamExt as _;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, watcher};

use super::TOKEN;
use super::setup::{
    OperatorBinary, apply_pool, cpu_ticks, fresh_namespace, is_listing, listings,
    measure_one_create, operator_log, pool_value, rss, start_operator,
};

/// The pools' poll interval: as deployed, and long enough that idle is idle.
const POLL_INTERVAL: Duration = Duration::from_secs(30);
/// How long the job controller may take to create every pod.
const PODS_DEADLINE: Duration = Duration::from_secs(20 * 60);
/// How long the operator may take to create every Job after the listing.
const JOBS_DEADLINE: Duration = Duration::from_secs(15 * 60);

/// The size of one run.
pub(super) struct Fleet {
    /// The stage, which names the namespace.
    name: &'static str,
    /// Pools, each with a label of its own.
    pools: usize,
    /// Waiting jobs (and so live Jobs) per pool.
    jobs_per_pool: usize,
}

impl Fleet {
    /// `pools` pools with `jobs_per_pool` waiting jobs each.
    pub(super) fn new(name: &'static str, pools: usize, jobs_per_pool: usize) -> Self {
        Self {
            name,
            pools,
            jobs_per_pool,
        }
    }

    fn total(&self) -> usize {
        self.pools * self.jobs_per_pool
    }
}

/// When each runner Job was first seen by a watch, by name.
#[derive(Clone, Default)]
struct JobArrivals(Arc<Mutex<HashMap<String, Instant>>>);

impl JobArrivals {
    /// Watches the runner Jobs of `ns` (metadata only) until dropped.
    fn watch(client: &Client, ns: &str) -> (Self, tokio::task::JoinHandle<()>) {
        let arrivals = Self::default();
        let api: Api<PartialObjectMeta<Job>> = Api::namespaced(client.clone(), ns);
        let config = watcher::Config::default().labels(&scheduler::labels::owned_jobs_selector());
        let seen = arrivals.clone();
        let task = tokio::spawn(async move {
            let mut events = watcher(api, config).boxed();
            while let Some(event) = events.next().await {
                let (watcher::Event::Apply(job) | watcher::Event::InitApply(job)) = (match event {
                    Ok(event) => event,
                    Err(_) => continue,
                }) else {
                    continue;
                };
                if let Some(name) = job.metadata.name {
                    let mut map = seen.0.lock().unwrap_or_else(|p| p.into_inner());
                    map.entry(name).or_insert_with(Instant::now);
                }
            }
        });
        (arrivals, task)
    }

    fn count(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn last(&self) -> Option<Instant> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .max()
            .copied()
    }
}

/// Runs one fleet and prints its figures.
pub(super) async fn bench_fleet(
    client: &Client,
    operator: &OperatorBinary,
    fleet: &Fleet,
) -> anyhow::Result<()> {
    let ns = format!("bench-{}", fleet.name);
    let total = fleet.total();
    fresh_namespace(client, &ns).await?;
    let one_create = measure_one_create(client, &ns).await?;
    let forgejo = StandIn::start(StandInConfig::with_token("15.0.3+gitea-1.22.0", TOKEN));
    for i in 0..fleet.pools {
        let pool = pool_value(
            &format!("pool-{i}"),
            &forgejo.url(),
            &format!("label-{i}"),
            fleet.jobs_per_pool,
            &format!("{}s", POLL_INTERVAL.as_secs()),
        );
        apply_pool(client, &ns, pool).await?;
    }
    let (arrivals, watch) = JobArrivals::watch(client, &ns);
    let process = start_operator(operator, &ns)?;
    while listings(&forgejo) == 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed = add_jobs_and_wait_for_listing(&forgejo, fleet).await;
    let deadline = Instant::now() + JOBS_DEADLINE;
    while arrivals.count() < total {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{}: {} of {total} Jobs after {JOBS_DEADLINE:?}",
            fleet.name,
            arrivals.count()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    watch.abort();
    let took = arrivals.last().unwrap_or(listed).duration_since(listed);
    let creates = CreateCounts::from_log(&ns)?;
    println!(
        "{}: {} pools, {total} waiting jobs -> {total} Jobs {:.0} ms after the poll that listed them; one create {:.1} ms, target {total} x create + 100 ms = {:.0} ms",
        fleet.name,
        fleet.pools,
        took.as_secs_f64() * 1e3,
        one_create.as_secs_f64() * 1e3,
        (one_create * total as u32).as_secs_f64() * 1e3 + 100.0
    );
    println!(
        "{}: {} Job creates, {} found their Job already there ({:.2} %)",
        fleet.name,
        creates.created + creates.already_exists,
        creates.already_exists,
        creates.already_exists_percent()
    );
    wait_for_pods(client, &ns, total).await?;
    // Let the caches and the allocator settle after the job controller's burst.
    tokio::time::sleep(Duration::from_secs(10)).await;
    measure_idle(fleet, &forgejo, process.pid(), operator.build).await
}

/// Adds the fleet's jobs to the stand-in and returns when the next listing (which lists
/// them) was answered.
async fn add_jobs_and_wait_for_listing(forgejo: &StandIn, fleet: &Fleet) -> Instant {
    let before = listings(forgejo);
    for i in 0..fleet.pools {
        let label = format!("label-{i}");
        for j in 0..fleet.jobs_per_pool {
            let name = format!("job-{i}-{j}");
            forgejo.add_job(StandInJob::new("bench/app", &name, &[label.as_str()]));
        }
    }
    while listings(forgejo) == before {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Instant::now()
}

/// Waits until the job controller has made a pod for every Job.
async fn wait_for_pods(client: &Client, ns: &str, total: usize) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let started = Instant::now();
    loop {
        let count = pods
            .list_metadata(&ListParams::default())
            .await?
            .items
            .len();
        if count >= total {
            println!(
                "    ({count} pods {:.0} s after the last Job)",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < PODS_DEADLINE,
            "the job controller made {count} of {total} pods in {PODS_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// RSS, CPU and Forgejo requests over two poll intervals of a fleet with nothing to do.
async fn measure_idle(
    fleet: &Fleet,
    forgejo: &StandIn,
    pid: u32,
    build: &str,
) -> anyhow::Result<()> {
    let requests_before = forgejo.count_requests(|_| true);
    let listings_before = forgejo.count_requests(is_listing);
    let cpu_before = cpu_ticks(pid)?;
    let window = POLL_INTERVAL * 2;
    tokio::time::sleep(window).await;
    let cpu = (cpu_ticks(pid)? - cpu_before) as f64 / 100.0 / window.as_secs_f64();
    let intervals = window.as_secs_f64() / POLL_INTERVAL.as_secs_f64();
    let requests = forgejo.count_requests(|_| true) - requests_before;
    let listed = forgejo.count_requests(is_listing) - listings_before;
    println!(
        "{}: idle with {} live Jobs: operator RSS {} (peak {}, {build} build), CPU {:.2} % of one core over {} s; Forgejo: {:.1} requests and {:.1} job listings per {} s interval",
        fleet.name,
        fleet.total(),
        rss(pid, "VmRSS")?,
        rss(pid, "VmHWM")?,
        cpu * 100.0,
        window.as_secs(),
        requests as f64 / intervals,
        listed as f64 / intervals,
        POLL_INTERVAL.as_secs()
    );
    Ok(())
}

/// The operator's Job creates, from its log.
struct CreateCounts {
    created: usize,
    already_exists: usize,
}

impl CreateCounts {
    fn from_log(ns: &str) -> anyhow::Result<Self> {
        let log = std::fs::read_to_string(operator_log(ns))?;
        let count = |message: &str| log.lines().filter(|l| l.contains(message)).count();
        Ok(Self {
            created: count("\"runner Job created\""),
            already_exists: count("\"runner Job already exists\""),
        })
    }

    fn already_exists_percent(&self) -> f64 {
        let all = (self.created + self.already_exists).max(1) as f64;
        self.already_exists as f64 * 100.0 / all
    }
}
