//! Metrics of the Forgejo jobs a pool runs: how long each waited for a runner, how long
//! runners took to start, how long jobs ran and how they ended.
//!
//! Labels are bounded: a pool's namespace and name, and (switchable with
//! `--job-metric-labels`) the job's repository and its `runs-on` labels, which are as many
//! as the repositories and label sets that run on the pool. A label switched off is empty,
//! which Prometheus treats as absent.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::PoolLabels;

/// Label set: a job of a pool.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    /// The RunnerDeployment's namespace.
    pub namespace: String,
    /// The RunnerDeployment's name.
    pub pool: String,
    /// The job's repository, `owner/name` (its id while the name is unknown); empty when
    /// switched off.
    pub repository: String,
    /// The job's `runs-on` labels, joined with `,`; empty when switched off.
    pub label: String,
}

/// Label set: a finished job and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FinishedLabels {
    /// The RunnerDeployment's namespace.
    pub namespace: String,
    /// The RunnerDeployment's name.
    pub pool: String,
    /// As in [`JobLabels`].
    pub repository: String,
    /// As in [`JobLabels`].
    pub label: String,
    /// `success`, `failure`, `cancelled`, `skipped` or `unknown`.
    pub result: &'static str,
}

impl FinishedLabels {
    /// A job's labels with its result.
    pub fn of(job: &JobLabels, result: &'static str) -> Self {
        Self {
            namespace: job.namespace.clone(),
            pool: job.pool.clone(),
            repository: job.repository.clone(),
            label: job.label.clone(),
            result,
        }
    }
}

/// Label set: a pool's runner Jobs in one state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunnerStateLabels {
    /// The RunnerDeployment's namespace.
    pub namespace: String,
    /// The RunnerDeployment's name.
    pub pool: String,
    /// `starting` (no runner container started yet) or `running`.
    pub state: &'static str,
}

/// Which optional labels the job metrics carry (`--job-metric-labels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobMetricLabels {
    /// The job's repository.
    pub repository: bool,
    /// The job's `runs-on` labels.
    pub label: bool,
}

impl Default for JobMetricLabels {
    fn default() -> Self {
        Self {
            repository: true,
            label: true,
        }
    }
}

impl std::str::FromStr for JobMetricLabels {
    type Err = String;

    /// Parses a comma-separated list of `repository` and `label` (empty: neither).
    fn from_str(text: &str) -> Result<Self, String> {
        let mut labels = Self {
            repository: false,
            label: false,
        };
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "repository" => labels.repository = true,
                "label" => labels.label = true,
                other => {
                    return Err(format!(
                        "--job-metric-labels: unknown label {other:?}; use repository, label, both (repository,label) or none (\"\")"
                    ));
                }
            }
        }
        Ok(labels)
    }
}

/// Seconds a job waits: 0.5 s to about 2.3 h.
fn wait_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.5, 2.0, 15))
}

/// Seconds a job runs: 1 s to about 9 h.
fn run_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 16))
}

/// Seconds a runner takes to start: 0.25 s to about 8.5 min.
fn start_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.25, 2.0, 12))
}

/// The job metrics.
#[derive(Clone)]
pub struct JobMetrics {
    /// First listing showing a job waiting → first showing a runner took it.
    pub wait: Family<JobLabels, Histogram>,
    /// A runner Job created → its runner container running.
    pub runner_start: Family<PoolLabels, Histogram>,
    /// Task started → task finished, as Forgejo's task listing tells.
    pub run: Family<JobLabels, Histogram>,
    /// Jobs that left the listing after a runner took them, or while waiting, by result.
    pub finished: Family<FinishedLabels, Counter>,
    /// How long the pool's longest-waiting job has waited.
    pub oldest_wait: Family<PoolLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// The pool's runner Jobs, starting or running.
    pub runners: Family<RunnerStateLabels, Gauge>,
}

impl Default for JobMetrics {
    fn default() -> Self {
        Self {
            wait: Family::new_with_constructor(wait_histogram),
            runner_start: Family::new_with_constructor(start_histogram),
            run: Family::new_with_constructor(run_histogram),
            finished: Family::default(),
            oldest_wait: Family::default(),
            runners: Family::default(),
        }
    }
}

impl JobMetrics {
    /// Removes the gauges of a deleted pool (its histograms and counters stay: they count
    /// what happened).
    pub fn forget_pool(&self, pool: &PoolLabels) {
        self.oldest_wait.remove(pool);
        for state in ["starting", "running"] {
            self.runners.remove(&RunnerStateLabels {
                namespace: pool.namespace.clone(),
                pool: pool.pool.clone(),
                state,
            });
        }
    }

    /// Registers every metric under `registry`.
    pub fn register(self, registry: &mut Registry) -> Self {
        registry.register(
            "job_wait_seconds",
            "Time a Forgejo job waited for a runner: from the first listing that showed it waiting to the first that showed a runner took it (each at most a poll late)",
            self.wait.clone(),
        );
        registry.register(
            "runner_start_seconds",
            "Time from a runner Job's creation to its runner container running",
            self.runner_start.clone(),
        );
        registry.register(
            "job_run_seconds",
            "Time a Forgejo job ran: its task's start to its last update, from Forgejo's task listing",
            self.run.clone(),
        );
        registry.register(
            "jobs_finished",
            "Forgejo jobs of the pool that finished, by result (success, failure, cancelled, skipped, unknown)",
            self.finished.clone(),
        );
        registry.register(
            "oldest_waiting_job_seconds",
            "How long the pool's longest-waiting Forgejo job has waited (0 when none waits)",
            self.oldest_wait.clone(),
        );
        registry.register(
            "runners",
            "The pool's runner Jobs: starting (no runner container started yet) or running",
            self.runners.clone(),
        );
        self
    }
}
