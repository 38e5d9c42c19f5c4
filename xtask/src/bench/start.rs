//! Start latency on the real node: a burst of waiting jobs, and for each the time from the
//! poll answer that lists it to its runner pod Running, split into where it goes: the Job
//! create, the pod create (job controller), scheduling, and the sandbox and container start
//! (kubelet). Times are when a watch in this process saw each change (Kubernetes'
//! timestamps have whole seconds only).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use forgejo_stand_in::{StandIn, StandInConfig, StandInJob};
use futures::StreamExt as _;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher::{self, watcher};
use kube::{Client, ResourceExt as _};

use super::TOKEN;
use super::setup::{
    OperatorBinary, apply_pool, fresh_namespace, listings, pool_value, start_operator,
};
use crate::{cluster, image, node};

/// How long the pods may take to reach Running.
const RUNNING_DEADLINE: Duration = Duration::from_secs(300);

/// When this process saw each step of one runner Job.
#[derive(Default, Clone, Copy)]
pub(super) struct Seen {
    pub(super) job: Option<Instant>,
    pub(super) pod: Option<Instant>,
    pub(super) scheduled: Option<Instant>,
    pub(super) running: Option<Instant>,
}

/// Seen steps by Forgejo job id (the label on the Job and, through the template, the pod).
pub(super) type Timeline = Arc<Mutex<HashMap<String, Seen>>>;

fn note(timeline: &Timeline, job_id: Option<&String>, step: impl FnOnce(&mut Seen)) {
    if let Some(id) = job_id {
        let mut map = timeline.lock().unwrap_or_else(|p| p.into_inner());
        step(map.entry(id.clone()).or_default());
    }
}

/// Watches the namespace's runner Jobs and pods, noting when each step was first seen.
pub(super) fn watch(
    client: &Client,
    ns: &str,
    timeline: &Timeline,
) -> Vec<tokio::task::JoinHandle<()>> {
    let selector = scheduler::labels::owned_jobs_selector();
    let config = watcher::Config::default().labels(&selector);
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let (job_times, pod_times) = (timeline.clone(), timeline.clone());
    let job_config = config.clone();
    let job_task = tokio::spawn(async move {
        let mut events = watcher(jobs, job_config).boxed();
        while let Some(event) = events.next().await {
            if let Ok(watcher::Event::Apply(job) | watcher::Event::InitApply(job)) = event {
                let id = job.labels().get(scheduler::labels::FORGEJO_JOB_ID);
                note(&job_times, id, |seen| {
                    seen.job.get_or_insert_with(Instant::now);
                });
            }
        }
    });
    let pod_task = tokio::spawn(async move {
        let mut events = watcher(pods, config).boxed();
        while let Some(event) = events.next().await {
            let Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) = event else {
                continue;
            };
            let now = Instant::now();
            let scheduled = pod.spec.as_ref().is_some_and(|s| s.node_name.is_some());
            let started = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .into_iter()
                .flatten()
                .filter(|c| c.name == scheduler::RUNNER_CONTAINER)
                .any(|c| {
                    c.state
                        .as_ref()
                        .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
                });
            let id = pod.labels().get(scheduler::labels::FORGEJO_JOB_ID);
            note(&pod_times, id, |seen| {
                seen.pod.get_or_insert(now);
                if scheduled {
                    seen.scheduled.get_or_insert(now);
                }
                if started {
                    seen.running.get_or_insert(now);
                }
            });
        }
    });
    vec![job_task, pod_task]
}

/// Runs the start-latency burst and prints its figures.
pub(super) async fn bench_start(
    root: &Path,
    client: &Client,
    operator: &OperatorBinary,
    n: usize,
) -> anyhow::Result<()> {
    let runner = image::build_runner_test(root, None)?;
    cluster::import_image(root, &runner.tar)?;
    let ns = "bench-start";
    fresh_namespace(client, ns).await?;
    // Runner pods reach this machine at the node's address, not at loopback.
    let forgejo = StandIn::start(StandInConfig {
        bind: SocketAddr::new(node::NODE_IP.into(), 0),
        ..StandInConfig::with_token("15.0.3+gitea-1.22.0", TOKEN)
    });
    let mut pool = pool_value("start", &forgejo.url(), "linux:host", n, "30s");
    pool["spec"]["runnerImage"] = runner.reference.clone().into();
    // The default request (250m CPU per runner) fits 8 runner pods on this 2-core node, so
    // 50 would start in waves and measure capacity: ask for little, to measure the start.
    pool["spec"]["jobTemplate"] = serde_json::json!({"spec": {"containers": [{
        "name": scheduler::RUNNER_CONTAINER,
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}
    }]}});
    apply_pool(client, ns, pool).await?;
    let timeline = Timeline::default();
    let watches = watch(client, ns, &timeline);
    let _operator = start_operator(operator, ns)?;
    while listings(&forgejo) == 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = listings(&forgejo);
    for i in 0..n {
        // The step outlasts the kubelet's status updates, so Running is seen.
        let job = StandInJob::new("bench/app", &format!("start-{i}"), &["linux"])
            .with_steps(&["sleep 5"]);
        forgejo.add_job(job);
    }
    while listings(&forgejo) == before {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let listed = Instant::now();
    let deadline = listed + RUNNING_DEADLINE;
    let running = |timeline: &Timeline| {
        let map = timeline.lock().unwrap_or_else(|p| p.into_inner());
        map.values().filter(|s| s.running.is_some()).count()
    };
    while running(&timeline) < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "start: {} of {n} runner pods Running after {RUNNING_DEADLINE:?}",
            running(&timeline)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for task in watches {
        task.abort();
    }
    let seen: Vec<Seen> = timeline
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .copied()
        .collect();
    report(n, listed, &seen);
    Ok(())
}

fn report(n: usize, listed: Instant, seen: &[Seen]) {
    let ms = |from: Option<Instant>, to: Option<Instant>| match (from, to) {
        (Some(from), Some(to)) => to.saturating_duration_since(from).as_secs_f64() * 1e3,
        _ => f64::NAN,
    };
    let column = |f: &dyn Fn(&Seen) -> f64| -> Vec<f64> { seen.iter().map(f).collect() };
    let total = column(&|s| ms(Some(listed), s.running));
    let parts = [
        ("Job create", column(&|s| ms(Some(listed), s.job))),
        ("pod create", column(&|s| ms(s.job, s.pod))),
        ("scheduling", column(&|s| ms(s.pod, s.scheduled))),
        (
            "sandbox + container start",
            column(&|s| ms(s.scheduled, s.running)),
        ),
    ];
    println!(
        "start: {n} waiting jobs, poll answer -> runner pod Running: p50 {:.0} ms, p95 {:.0} ms (runner image on the node)",
        percentile(&total, 0.5),
        percentile(&total, 0.95)
    );
    for (name, values) in parts {
        println!(
            "start:   {name}: p50 {:.0} ms, p95 {:.0} ms",
            percentile(&values, 0.5),
            percentile(&values, 0.95)
        );
    }
}

/// The `q` quantile (nearest rank) of `values`.
pub(super) fn percentile(values: &[f64], q: f64) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
