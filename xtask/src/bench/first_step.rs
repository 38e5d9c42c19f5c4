//! Time to a job's first step on the real node: from the moment a job becomes waiting in
//! the stand-in to the stand-in receiving that job's first log row (the runner started the
//! job), for single jobs and a burst, cold (a Job made per job after a poll) and warm (idle
//! warm runners fetching every second). The node's pod start (Job seen → runner container
//! started, cold Jobs) is measured in the same run, for the cold target.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use forgejo_stand_in::{StandIn, StandInConfig, StandInJob};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::TOKEN;
use super::setup::{
    OperatorBinary, apply_pool, fresh_namespace, listings, pool_value, start_operator,
};
use super::start::{Timeline, percentile, watch};
use crate::{cluster, image, node};

/// Single jobs per scenario, one after the other.
const SINGLES: usize = 5;
/// When each single job comes, as a fraction of the poll interval after a jobs listing:
/// spread over the interval as jobs that come at random are, so that the cold wait for the
/// next poll samples the interval (and its p50 is half of it), not the moment right after
/// a poll.
const ARRIVALS: [f64; SINGLES] = [0.1, 0.3, 0.5, 0.7, 0.9];
/// Jobs of the burst.
const BURST: usize = 20;
/// How long one job may take to send its first log row.
const FIRST_ROW_DEADLINE: Duration = Duration::from_secs(180);
/// How long warm runners may take to be ready.
const READY_DEADLINE: Duration = Duration::from_secs(240);
/// The pools' poll interval, in seconds: the default of `spec.pollInterval`.
const POLL_INTERVAL_SECS: u64 = 10;

/// One row of the table: a scenario's single jobs and its burst.
struct Row {
    name: String,
    singles: Vec<f64>,
    burst: Vec<f64>,
    /// For each single job: when it was added, when the first jobs listing after that
    /// reached the stand-in, and when its first log row arrived.
    single_times: Vec<(i64, Instant, Option<Instant>, Instant)>,
}

/// Runs the cold and warm scenarios and prints their figures.
pub(super) async fn bench_first_step(
    root: &Path,
    client: &Client,
    operator: &OperatorBinary,
) -> anyhow::Result<()> {
    let runner = image::build_runner_test(root, None)?;
    cluster::import_image(root, &runner.tar)?;
    let ns = "bench-first-step";
    fresh_namespace(client, ns).await?;
    let forgejo = StandIn::start(StandInConfig {
        bind: SocketAddr::new(node::NODE_IP.into(), 0),
        ..StandInConfig::with_token("15.0.3+gitea-1.22.0", TOKEN)
    });
    let timeline = Timeline::default();
    let watches = watch(client, ns, &timeline);
    let _operator = start_operator(operator, ns)?;
    let mut rows = Vec::new();
    for warm in [0, 2, 20] {
        let name = if warm == 0 {
            "cold".to_owned()
        } else {
            format!("warm{warm}")
        };
        let scenario = Scenario {
            client,
            ns,
            forgejo: &forgejo,
            pool: format!("fs-{name}"),
            label: name.clone(),
            warm,
        };
        println!("==> first-step: {name}");
        rows.push(scenario.run(&runner.reference).await?);
    }
    for task in watches {
        task.abort();
    }
    let seen = timeline.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let pod_start: Vec<f64> = seen
        .values()
        .filter_map(|s| Some((s.running? - s.job?).as_secs_f64() * 1e3))
        .collect();
    report(&rows, &pod_start);
    if let Some(cold) = rows.first() {
        cold_breakdown(cold, &seen);
    }
    Ok(())
}

/// One pool on a label of its own, with `warm` warm runners (0: none).
struct Scenario<'a> {
    client: &'a Client,
    ns: &'a str,
    forgejo: &'a StandIn,
    pool: String,
    label: String,
    warm: usize,
}

impl Scenario<'_> {
    async fn run(&self, image: &str) -> anyhow::Result<Row> {
        let mut pool = pool_value(
            &self.pool,
            &self.forgejo.url(),
            &format!("{}:host", self.label),
            (self.warm + BURST) * 2,
            &format!("{POLL_INTERVAL_SECS}s"),
        );
        pool["spec"]["runnerImage"] = image.into();
        pool["spec"]["jobTemplate"] = json!({"spec": {"containers": [{
            "name": scheduler::RUNNER_CONTAINER,
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}
        }]}});
        if self.warm > 0 {
            pool["spec"]["warmRunners"] = json!({
                "runners": [{"label": self.label, "count": self.warm}],
                "fetchInterval": "1s",
                "activityWindow": "0s",
            });
        }
        apply_pool(self.client, self.ns, pool).await?;
        let mut singles = Vec::new();
        let mut single_times = Vec::new();
        for (i, arrival) in ARRIVALS.iter().enumerate() {
            self.wait_for_warm_runners().await?;
            self.after_a_listing(*arrival).await?;
            let job = self.job(&format!("single-{i}"));
            let listed_before = listings(self.forgejo);
            let fetched_before = self.forgejo.fetches().len();
            let added = Instant::now();
            let id = self.forgejo.add_job(job).id;
            let (first, listed) = self.first_row_and_listing(id, added, listed_before).await?;
            self.print_taker(id, fetched_before);
            singles.push(first.duration_since(added).as_secs_f64() * 1e3);
            single_times.push((id, added, listed, first));
            self.wait_for_results(&[id]).await?;
        }
        self.wait_for_warm_runners().await?;
        let fetched_before = self.forgejo.fetches().len();
        let burst_start = Instant::now();
        let mut added = Vec::new();
        for i in 0..BURST {
            let job = self.job(&format!("burst-{i}"));
            let at = Instant::now();
            added.push((self.forgejo.add_job(job).id, at));
        }
        let burst = self.first_rows(&added).await?;
        self.print_burst_fetches(fetched_before, burst_start);
        let ids: Vec<i64> = added.iter().map(|(id, _)| *id).collect();
        self.wait_for_results(&ids).await?;
        if self.warm > 0 {
            // Retire them (the spec no longer asks for any), so the next scenario runs on a
            // quiet node.
            let patch = json!({"spec": {"warmRunners": null}});
            Api::<api::RunnerDeployment>::namespaced(self.client.clone(), self.ns)
                .patch(&self.pool, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            self.wait_for_idle_warm(0).await?;
        }
        Ok(Row {
            name: self.label.clone(),
            singles,
            burst,
            single_times,
        })
    }

    fn job(&self, name: &str) -> StandInJob {
        StandInJob::new("bench/app", name, &[self.label.as_str()]).with_steps(&["echo first-step"])
    }

    /// Prints which runner took job `id` and how often each runner fetched since the
    /// `fetched_before`th fetch: a warm single job that a cold Job took shows why.
    fn print_taker(&self, id: i64, fetched_before: usize) {
        let fetches = self.forgejo.fetches();
        let since = fetches.get(fetched_before..).unwrap_or_default();
        let taker = since
            .iter()
            .find(|f| f.job_id == Some(id))
            .map_or("nobody", |f| f.runner_name.as_str());
        let mut per_runner: BTreeMap<&str, usize> = BTreeMap::new();
        for fetch in since {
            *per_runner.entry(fetch.runner_name.as_str()).or_default() += 1;
        }
        println!(
            "first-step {}: job {id} taken by {taker}; fetches since it was added: {per_runner:?}",
            self.pool
        );
    }

    /// Prints, for each runner that fetched since the burst began, how often it fetched,
    /// its first and last fetch and the job it took (ms after the burst began): a burst
    /// that warm runners should have taken at once shows who fetched and who did not.
    fn print_burst_fetches(&self, fetched_before: usize, burst_start: Instant) {
        let fetches = self.forgejo.fetches();
        let since = fetches.get(fetched_before..).unwrap_or_default();
        let ms = |at: Instant| at.saturating_duration_since(burst_start).as_millis();
        let mut per_runner: BTreeMap<&str, RunnerFetches> = BTreeMap::new();
        for fetch in since {
            let entry = per_runner
                .entry(fetch.runner_name.as_str())
                .or_insert(RunnerFetches {
                    count: 0,
                    first: ms(fetch.at),
                    last: 0,
                    took: None,
                });
            entry.count += 1;
            entry.last = ms(fetch.at);
            if let Some(job) = fetch.job_id {
                entry.took = Some((job, ms(fetch.at)));
            }
        }
        for (runner, fetches) in per_runner {
            let RunnerFetches {
                count,
                first,
                last,
                took,
            } = fetches;
            let took = took.map_or("nothing".to_owned(), |(job, at)| {
                format!("job {job} at {at} ms")
            });
            println!(
                "first-step {} burst: {runner}: {count} fetches, first at {first} ms, last at {last} ms, took {took}",
                self.pool
            );
        }
    }

    /// Waits for the next jobs listing, then `fraction` of the poll interval.
    async fn after_a_listing(&self, fraction: f64) -> anyhow::Result<()> {
        let before = listings(self.forgejo);
        let interval = Duration::from_secs(POLL_INTERVAL_SECS);
        let deadline = Instant::now() + interval * 3;
        while listings(self.forgejo) == before {
            anyhow::ensure!(
                Instant::now() < deadline,
                "first-step {}: no jobs listing in {:?}",
                self.pool,
                interval * 3
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(interval.mul_f64(fraction)).await;
        Ok(())
    }

    /// Waits until the stand-in lists this pool's warm runners, all idle (polling).
    async fn wait_for_warm_runners(&self) -> anyhow::Result<()> {
        if self.warm == 0 {
            return Ok(());
        }
        self.wait_for_idle_warm(self.warm).await
    }

    /// Waits until exactly `count` warm runners of this pool are registered and idle.
    async fn wait_for_idle_warm(&self, count: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_DEADLINE;
        let of_pool = format!("{}/{} for label", self.ns, self.pool);
        loop {
            let runners = self.forgejo.runners();
            let ours: Vec<_> = runners
                .iter()
                .filter(|r| r.description.contains(&of_pool))
                .collect();
            // Ready is polling: each has asked for a task since it registered.
            let fetched: BTreeSet<String> = self
                .forgejo
                .fetches()
                .into_iter()
                .map(|f| f.runner_name)
                .collect();
            let ready = ours
                .iter()
                .all(|r| r.status == "idle" && (count == 0 || fetched.contains(&r.name)));
            if ours.len() == count && ready {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "first-step {}: {} of {count} warm runners idle after {READY_DEADLINE:?}",
                self.pool,
                ours.iter().filter(|r| r.status == "idle").count()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// When job `id`'s first log row arrived, and when the first jobs listing after
    /// `listed_before` listings reached the stand-in (the poll that could see it).
    async fn first_row_and_listing(
        &self,
        id: i64,
        added: Instant,
        listed_before: usize,
    ) -> anyhow::Result<(Instant, Option<Instant>)> {
        let deadline = added + FIRST_ROW_DEADLINE;
        let mut listed = None;
        loop {
            if listed.is_none() && listings(self.forgejo) > listed_before {
                listed = Some(Instant::now());
            }
            if !self.forgejo.log_lines(id).is_empty() {
                return Ok((Instant::now(), listed));
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "first-step {}: job {id} did not start in {FIRST_ROW_DEADLINE:?}",
                self.pool
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// For each (job, when it was added), the milliseconds until its first log row arrived.
    async fn first_rows(&self, added: &[(i64, Instant)]) -> anyhow::Result<Vec<f64>> {
        let deadline = Instant::now() + FIRST_ROW_DEADLINE;
        let mut first: BTreeMap<i64, f64> = BTreeMap::new();
        while first.len() < added.len() {
            for (id, at) in added {
                if !first.contains_key(id) && !self.forgejo.log_lines(*id).is_empty() {
                    first.insert(*id, at.elapsed().as_secs_f64() * 1e3);
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "first-step {}: {} of {} jobs started after {FIRST_ROW_DEADLINE:?}",
                self.pool,
                first.len(),
                added.len()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(first.into_values().collect())
    }

    async fn wait_for_results(&self, ids: &[i64]) -> anyhow::Result<()> {
        let deadline = Instant::now() + FIRST_ROW_DEADLINE;
        let wanted: BTreeSet<i64> = ids.iter().copied().collect();
        loop {
            let done = self
                .forgejo
                .jobs()
                .into_iter()
                .filter(|j| wanted.contains(&j.id) && j.status == "success")
                .count();
            if done == ids.len() {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "first-step {}: {done} of {} jobs succeeded",
                self.pool,
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// One runner's fetches during a burst, in ms after the burst began.
struct RunnerFetches {
    count: usize,
    first: u128,
    last: u128,
    /// The job it took, and when.
    took: Option<(i64, u128)>,
}

/// Where a cold single job's time goes: the wait for the poll, the operator, the pod start,
/// the runner's first report.
fn cold_breakdown(cold: &Row, seen: &std::collections::HashMap<String, super::start::Seen>) {
    let ms = |from: Option<Instant>, to: Option<Instant>| match (from, to) {
        (Some(from), Some(to)) => to.saturating_duration_since(from).as_secs_f64() * 1e3,
        _ => f64::NAN,
    };
    let mut parts: [(&str, Vec<f64>); 4] = [
        ("job waiting -> the next jobs listing (poll)", Vec::new()),
        ("that listing -> its Job seen", Vec::new()),
        ("Job seen -> runner container started", Vec::new()),
        ("runner started -> first log row", Vec::new()),
    ];
    for (id, added, listed, first) in &cold.single_times {
        let job = seen.get(&id.to_string()).copied().unwrap_or_default();
        parts[0].1.push(ms(Some(*added), *listed));
        parts[1].1.push(ms(*listed, job.job));
        parts[2].1.push(ms(job.job, job.running));
        parts[3].1.push(ms(job.running, Some(*first)));
    }
    for (name, values) in parts {
        println!(
            "first-step: cold single jobs, {name}: p50 {:.0} ms, p95 {:.0} ms",
            percentile(&values, 0.5),
            percentile(&values, 0.95)
        );
    }
}

fn report(rows: &[Row], pod_start: &[f64]) {
    let start = percentile(pod_start, 0.5);
    println!(
        "first-step: node pod start (cold Jobs, Job seen -> runner container started): p50 {start:.0} ms, p95 {:.0} ms; cold target p50 <= {:.0} ms (pollInterval/2 + pod start)",
        percentile(pod_start, 0.95),
        POLL_INTERVAL_SECS as f64 * 500.0 + start
    );
    println!();
    println!(
        "| Runners | Single jobs ({SINGLES}, one at a time): p50 / p95 | Burst of {BURST}: p50 / p95 |"
    );
    println!("|---|---|---|");
    for row in rows {
        println!(
            "| {} | {:.0} ms / {:.0} ms | {:.0} ms / {:.0} ms |",
            row.name,
            percentile(&row.singles, 0.5),
            percentile(&row.singles, 0.95),
            percentile(&row.burst, 0.5),
            percentile(&row.burst, 0.95)
        );
    }
}
