//! `scheduler::plan` on large inputs: pure, no cluster.

use std::time::{Duration, Instant};

use api::RunnerDeployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::setup::pool_value;

/// `scheduler::plan` for one pool with 1,000 waiting jobs: first with no Jobs (it creates
/// 1,000), then with all 1,000 Jobs live (it creates nothing).
pub(super) fn bench_plan() {
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
        cache: None,
        warm: Default::default(),
        not_waiting_since: &[],
    };
    let (first, plan) = time_it(20, || scheduler::plan(&input, now.clone()).expect("plan"));
    let owned: Vec<scheduler::OwnedJob> = plan
        .create_jobs
        .iter()
        .filter_map(|creation| {
            let mut job = creation.job().expect("a planned Job builds");
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
