//! The Forgejo jobs each pool runs, followed from listing to listing for the job metrics:
//! how long each waited, how long runner Jobs took to start, how long jobs ran and how
//! they ended.
//!
//! Costs: nothing per job per poll. A repository's name is read once per process
//! (`GET /repositories/{id}`, not at all for a repository-scope pool); a repository's task
//! listing is read once per new listing of the pool that showed one of its jobs gone,
//! usually one page. The result of a job that left the listing without a listing showing
//! its task (cancelled while waiting, or taken and finished between two polls) is
//! `unknown`.

mod names;
mod results;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use kube::ResourceExt as _;

use api::RunnerDeployment;
use scheduler::{ForgejoJob, JobEvent, JobLifecycle, JobOrigin, OwnedJob};

use crate::metrics::{
    FinishedLabels, JobLabels, JobMetricLabels, JobMetrics, PoolLabels, RunnerStateLabels,
};
use crate::polls::PollData;
pub use names::RepositoryNames;
use results::{AwaitingResult, ClaimedTasks};

/// How many task listings may lack a gone job's task before its result counts as
/// `unknown`: Forgejo writes the task's result as the job leaves the jobs listing, so one
/// is the rule; a job cancelled while waiting never has a task.
const RESULT_TRIES: u32 = 3;
/// At most this many repositories' task listings per reconcile; the rest wait for the next.
const REPOSITORIES_PER_RECONCILE: usize = 5;

/// What is followed of one pool.
#[derive(Debug, Default)]
struct PoolJobs {
    lifecycle: JobLifecycle,
    /// When the listing last taken in was made: a reconcile that reads the same shared
    /// listing again changes nothing.
    listing_at: Option<Instant>,
    awaiting: Vec<AwaitingResult>,
    /// Runner Jobs whose start was observed.
    started: HashSet<String>,
}

/// The jobs of every pool, the repository names, and which labels the metrics carry.
#[derive(Debug, Default)]
pub struct JobsSeen {
    pools: Mutex<HashMap<String, PoolJobs>>,
    /// Repository names by (server, id), shared by the pools.
    pub names: RepositoryNames,
    claimed: ClaimedTasks,
    labels: JobMetricLabels,
}

/// What one reconcile hands to [`JobsSeen::observe`].
pub struct Observation<'a> {
    /// The pool.
    pub rd: &'a RunnerDeployment,
    /// The pool's Forgejo client.
    pub client: &'a forgejo::Client,
    /// The jobs listing the reconcile read, if the poll succeeded.
    pub listing: Option<&'a PollData>,
    /// The runner Jobs it owns.
    pub owned: &'a [OwnedJob],
}

impl JobsSeen {
    /// Follows jobs for metrics labelled as `labels` says.
    pub fn new(labels: JobMetricLabels) -> Self {
        Self {
            labels,
            ..Self::default()
        }
    }

    /// Takes in one reconcile: runner Jobs started, a new listing's changes, the results
    /// of jobs gone; updates `metrics`.
    pub async fn observe(&self, seen: Observation<'_>, metrics: &JobMetrics) {
        let pool = PoolLabels {
            namespace: seen.rd.namespace().unwrap_or_default(),
            pool: seen.rd.name_any(),
        };
        let uid = seen.rd.uid().unwrap_or_default();
        let server = seen.rd.spec.forgejo_server.as_str();
        let names = pool_label_names(seen.rd);
        let mine: Vec<&ForgejoJob> = seen.listing.map_or_else(Vec::new, |listing| {
            listing
                .jobs
                .iter()
                .filter(|job| {
                    scheduler::runs_on_labels(&job.runs_on, names.iter().map(String::as_str))
                })
                .collect()
        });
        if self.labels.repository {
            let ids: Vec<i64> = mine.iter().map(|job| job.repo_id).collect();
            self.names
                .resolve(
                    seen.client,
                    server,
                    seen.rd.spec.repository.as_deref(),
                    &ids,
                )
                .await;
        }
        let awaiting = {
            let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
            let jobs = pools.entry(uid.clone()).or_default();
            self.observe_runners(jobs, seen.owned, &pool, metrics);
            match seen.listing.filter(|l| jobs.listing_at != Some(l.at)) {
                Some(listing) => {
                    jobs.listing_at = Some(listing.at);
                    let events = jobs.lifecycle.observe(&mine, listing.at);
                    self.take_events(jobs, events, &pool, server, metrics);
                    std::mem::take(&mut jobs.awaiting)
                }
                None => Vec::new(),
            }
        };
        if let Some(oldest) = self.oldest_wait(&uid) {
            metrics.oldest_wait.get_or_create(&pool).set(oldest);
        }
        if awaiting.is_empty() {
            return;
        }
        let left = self
            .ask_results(seen.client, server, awaiting, &pool, metrics)
            .await;
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools.entry(uid).or_default().awaiting.extend(left);
    }

    /// The runner gauges, and the start time of each runner Job once.
    fn observe_runners(
        &self,
        jobs: &mut PoolJobs,
        owned: &[OwnedJob],
        pool: &PoolLabels,
        metrics: &JobMetrics,
    ) {
        let (mut starting, mut running) = (0, 0);
        for job in owned.iter().filter(|job| job.is_live()) {
            match (&job.created_at, &job.runner_started_at) {
                (_, None) => starting += 1,
                (created, Some(started)) => {
                    running += 1;
                    if let Some(created) = created
                        && jobs.started.insert(job.name.clone())
                    {
                        let seconds = started.0.duration_since(created.0).as_secs_f64();
                        metrics
                            .runner_start
                            .get_or_create(pool)
                            .observe(seconds.max(0.0));
                    }
                }
            }
        }
        let names: HashSet<&str> = owned.iter().map(|job| job.name.as_str()).collect();
        jobs.started.retain(|name| names.contains(name.as_str()));
        for (state, count) in [("starting", starting), ("running", running)] {
            let labels = RunnerStateLabels {
                namespace: pool.namespace.clone(),
                pool: pool.pool.clone(),
                state,
            };
            metrics.runners.get_or_create(&labels).set(count);
        }
    }

    /// Turns a listing's changes into metrics, and gone jobs with a task into questions.
    fn take_events(
        &self,
        jobs: &mut PoolJobs,
        events: Vec<JobEvent>,
        pool: &PoolLabels,
        server: &str,
        metrics: &JobMetrics,
    ) {
        for event in events {
            match event {
                JobEvent::Taken {
                    origin,
                    waited: Some(waited),
                    ..
                } => {
                    let labels = self.job_labels(pool, server, &origin);
                    metrics
                        .wait
                        .get_or_create(&labels)
                        .observe(waited.as_secs_f64());
                }
                JobEvent::Taken { waited: None, .. } => {}
                JobEvent::Left {
                    origin,
                    task_id,
                    name,
                    first_seen,
                    waiting_since,
                    ..
                } => jobs.awaiting.push(AwaitingResult {
                    origin,
                    task_id,
                    name,
                    since: super::latency::wall_clock(first_seen).0,
                    waiting_since: waiting_since.map(|at| super::latency::wall_clock(at).0),
                    tries: 0,
                }),
            }
        }
    }

    /// Asks the task listings of the repositories of `awaiting` for their results; returns
    /// those to ask again.
    async fn ask_results(
        &self,
        client: &forgejo::Client,
        server: &str,
        awaiting: Vec<AwaitingResult>,
        pool: &PoolLabels,
        metrics: &JobMetrics,
    ) -> Vec<AwaitingResult> {
        let mut by_repository: HashMap<i64, Vec<AwaitingResult>> = HashMap::new();
        for job in awaiting {
            by_repository
                .entry(job.origin.repo_id)
                .or_default()
                .push(job);
        }
        let mut again = Vec::new();
        for (index, (repo_id, jobs)) in by_repository.into_iter().enumerate() {
            if index >= REPOSITORIES_PER_RECONCILE {
                again.extend(jobs);
                continue;
            }
            let tasks = match self.names.get(server, repo_id) {
                Some(name) => finished_tasks(client, &name, &jobs).await,
                None => Err("its name is unknown".to_owned()),
            };
            let tasks = match tasks {
                Ok(tasks) => tasks,
                Err(error) => {
                    tracing::debug!(repo_id, %error, "job results: the task listing cannot be read; results count as unknown");
                    for job in &jobs {
                        let labels = self.job_labels(pool, server, &job.origin);
                        count_finished(metrics, &labels, "unknown");
                    }
                    continue;
                }
            };
            for (mut job, task) in self.claimed.match_tasks(server, repo_id, jobs, &tasks) {
                let labels = self.job_labels(pool, server, &job.origin);
                match task {
                    Some(task) => {
                        count_finished(metrics, &labels, result_of(&task.status));
                        // Taken between two listings: Forgejo made the task as a runner
                        // took the job.
                        if let (Some(waiting), Some(taken)) = (job.waiting_since, task.created_at) {
                            let seconds = taken.duration_since(waiting).as_secs_f64();
                            metrics
                                .wait
                                .get_or_create(&labels)
                                .observe(seconds.max(0.0));
                        }
                        if let (Some(start), Some(end)) = (task.run_started_at, task.updated_at) {
                            let seconds = end.duration_since(start).as_secs_f64();
                            metrics.run.get_or_create(&labels).observe(seconds.max(0.0));
                        }
                    }
                    None if job.tries + 1 < RESULT_TRIES => {
                        job.tries += 1;
                        again.push(job);
                    }
                    None => count_finished(metrics, &labels, "unknown"),
                }
            }
        }
        again
    }

    /// The labels of a job of `pool`, with the optional ones as configured.
    fn job_labels(&self, pool: &PoolLabels, server: &str, origin: &JobOrigin) -> JobLabels {
        JobLabels {
            namespace: pool.namespace.clone(),
            pool: pool.pool.clone(),
            repository: if self.labels.repository {
                self.names
                    .get(server, origin.repo_id)
                    .unwrap_or_else(|| origin.repo_id.to_string())
            } else {
                String::new()
            },
            label: if self.labels.label {
                origin.runs_on.clone()
            } else {
                String::new()
            },
        }
    }

    /// How long the pool's longest-waiting job has waited, in seconds (0 when none waits).
    fn oldest_wait(&self, uid: &str) -> Option<f64> {
        let pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let jobs = pools.get(uid)?;
        Some(
            jobs.lifecycle
                .oldest_wait(Instant::now())
                .map_or(0.0, |wait| wait.as_secs_f64()),
        )
    }

    /// When the pool's longest-waiting job was first seen waiting, on the wall clock.
    pub fn oldest_waiting_since(
        &self,
        uid: &str,
    ) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> {
        let pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let first = pools.get(uid)?.lifecycle.oldest_waiting()?;
        Some(super::latency::wall_clock(first))
    }

    /// Forgets a deleted pool.
    pub fn forget_pool(&self, pool_uid: &str) {
        self.pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(pool_uid);
    }
}

/// The label names the pool runs (what Forgejo matches `runs-on` against); none when
/// `spec.labels` does not parse (the reconcile reports that).
fn pool_label_names(rd: &RunnerDeployment) -> Vec<String> {
    api::parse_labels(&rd.spec.labels)
        .map(|labels| labels.into_iter().map(|label| label.name).collect())
        .unwrap_or_default()
}

/// The finished tasks of `repository` (`owner/name`) that may be those of `jobs`: by their
/// task ids, and those created since the earliest sighting of a job without one.
async fn finished_tasks(
    client: &forgejo::Client,
    repository: &str,
    jobs: &[AwaitingResult],
) -> Result<Vec<forgejo::ActionTask>, String> {
    let Some((owner, name)) = repository.split_once('/') else {
        return Err(format!("{repository:?} is not owner/name"));
    };
    let mut tasks = Vec::new();
    let ids: Vec<i64> = jobs
        .iter()
        .map(|job| job.task_id)
        .filter(|id| *id > 0)
        .collect();
    if !ids.is_empty() {
        let found = client.finished_tasks(owner, name, &ids).await;
        tasks.extend(found.map_err(|error| error.to_string())?.tasks);
    }
    let since = jobs
        .iter()
        .filter(|job| job.task_id == 0)
        .map(AwaitingResult::earliest_task)
        .min();
    if let Some(since) = since {
        let found = client.finished_tasks_since(owner, name, since).await;
        tasks.extend(found.map_err(|error| error.to_string())?.tasks);
    }
    Ok(tasks)
}

/// A task status as the metric's result label.
fn result_of(status: &str) -> &'static str {
    match status {
        "success" => "success",
        "failure" => "failure",
        "cancelled" => "cancelled",
        "skipped" => "skipped",
        _ => "unknown",
    }
}

fn count_finished(metrics: &JobMetrics, labels: &JobLabels, result: &'static str) {
    metrics
        .finished
        .get_or_create(&FinishedLabels::of(labels, result))
        .inc();
}
