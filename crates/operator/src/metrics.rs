//! Prometheus metrics, one struct per component, each in its own sub-registry.
//!
//! Labels are bounded: reasons are `&'static str` from error enums and plans, and the only
//! per-object labels are a pool's namespace and name (pools are few and user-made).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

mod jobs;

pub use jobs::{FinishedLabels, JobLabels, JobMetricLabels, JobMetrics, RunnerStateLabels};

/// Label set: an outcome or reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// PascalCase reason, or `Ok`.
    pub reason: String,
}

/// Label set: a pool.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// The RunnerDeployment's namespace.
    pub namespace: String,
    /// The RunnerDeployment's name.
    pub pool: String,
}

/// Label set: how a job got its runner.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabels {
    /// `cold` (a Job made for it) or `warm` (an idle warm runner took it).
    pub path: &'static str,
}

/// Label set: a pool's warm runners in one state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WarmLabels {
    /// The RunnerDeployment's namespace.
    pub namespace: String,
    /// The RunnerDeployment's name.
    pub pool: String,
    /// `idle` or `busy`.
    pub state: &'static str,
}

/// Label set: a Forgejo endpoint and the outcome of a request to it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Which operation, e.g. `list_jobs`.
    pub endpoint: String,
    /// `ok` or the error reason.
    pub outcome: String,
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Metrics of the reconcile loop and its decisions.
#[derive(Clone)]
pub struct ReconcileMetrics {
    /// Reconciles by outcome (`Ok` or an error reason).
    pub reconciles: Family<ReasonLabels, Counter>,
    /// Reconcile errors by reason.
    pub reconcile_errors: Family<ReasonLabels, Counter>,
    /// Reconcile duration.
    pub reconcile_duration: Histogram,
    /// Forgejo polls by outcome.
    pub polls: Family<ReasonLabels, Counter>,
    /// Latency of a poll (including requests shared with other pools).
    pub poll_duration: Histogram,
    /// Waiting jobs seen in the last poll, per pool.
    pub waiting_jobs: Family<PoolLabels, Gauge>,
    /// Active runner Jobs, per pool.
    pub active_jobs: Family<PoolLabels, Gauge>,
    /// Runner Jobs created.
    pub jobs_created: Counter,
    /// Runner Job (or runner Secret) creations that failed, by reason.
    pub create_failures: Family<ReasonLabels, Counter>,
    /// Cleanups (Jobs, Secrets, registrations) by reason.
    pub cleanups: Family<ReasonLabels, Counter>,
    /// Time from first seeing a waiting job to its Kubernetes Job existing.
    pub job_scheduling_latency: Family<PathLabels, Histogram>,
    /// Warm runners per pool, idle or busy.
    pub warm_runners: Family<WarmLabels, Gauge>,
    /// Whether the pool's shared cache is ready (`CacheReady`), per pool.
    pub cache_ready: Family<PoolLabels, Gauge>,
}

impl Default for ReconcileMetrics {
    fn default() -> Self {
        Self {
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: latency_histogram(),
            polls: Family::default(),
            poll_duration: latency_histogram(),
            waiting_jobs: Family::default(),
            active_jobs: Family::default(),
            jobs_created: Counter::default(),
            create_failures: Family::default(),
            cleanups: Family::default(),
            job_scheduling_latency: Family::new_with_constructor(latency_histogram),
            warm_runners: Family::default(),
            cache_ready: Family::default(),
        }
    }
}

impl ReconcileMetrics {
    /// Registers every metric under `registry`.
    pub fn register(self, registry: &mut Registry) -> Self {
        registry.register(
            "reconciles",
            "Reconciles by outcome",
            self.reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconcile errors by reason",
            self.reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            self.reconcile_duration.clone(),
        );
        registry.register("polls", "Forgejo polls by outcome", self.polls.clone());
        registry.register(
            "poll_duration_seconds",
            "Latency of polling Forgejo for waiting jobs",
            self.poll_duration.clone(),
        );
        registry.register(
            "waiting_jobs",
            "Forgejo jobs waiting for a runner, seen in the last poll",
            self.waiting_jobs.clone(),
        );
        registry.register(
            "active_jobs",
            "Active runner Jobs",
            self.active_jobs.clone(),
        );
        registry.register(
            "cache_ready",
            "Whether the pool's shared Actions cache is ready (1) or not (0)",
            self.cache_ready.clone(),
        );
        registry.register(
            "jobs_created",
            "Runner Jobs created",
            self.jobs_created.clone(),
        );
        registry.register(
            "create_failures",
            "Runner Job or runner Secret creations that failed",
            self.create_failures.clone(),
        );
        registry.register(
            "cleanups",
            "Runner Jobs, Secrets and registrations removed, by reason",
            self.cleanups.clone(),
        );
        registry.register(
            "job_scheduling_latency_seconds",
            "Time from first seeing a waiting Forgejo job to its runner: its Kubernetes Job existing (path cold), or the first poll that sees a warm runner took it (path warm)",
            self.job_scheduling_latency.clone(),
        );
        registry.register(
            "warm_runners",
            "Warm runners per pool, idle (ready for a job) or busy (running one)",
            self.warm_runners.clone(),
        );
        self
    }

    /// Counts one reason in a family.
    pub fn count(family: &Family<ReasonLabels, Counter>, reason: &str) {
        family
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }
}

/// Metrics of requests to Forgejo.
#[derive(Clone)]
pub struct ForgejoMetrics {
    /// Requests by endpoint and outcome.
    pub requests: Family<RequestLabels, Counter>,
    /// Request latency by endpoint and outcome.
    pub request_duration: Family<RequestLabels, Histogram>,
}

impl Default for ForgejoMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
        }
    }
}

impl ForgejoMetrics {
    /// Registers every metric under `registry`.
    pub fn register(self, registry: &mut Registry) -> Self {
        registry.register(
            "requests",
            "Requests to Forgejo by endpoint and outcome",
            self.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Latency of requests to Forgejo",
            self.request_duration.clone(),
        );
        self
    }

    /// Records one request.
    pub fn observe(&self, endpoint: &str, outcome: &str, duration: Duration) {
        let labels = RequestLabels {
            endpoint: endpoint.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.requests.get_or_create(&labels).inc();
        self.request_duration
            .get_or_create(&labels)
            .observe(duration.as_secs_f64());
    }
}

/// Metrics of leader election.
#[derive(Clone, Default)]
pub struct LeaseMetrics {
    /// 1 while this replica holds the lease.
    pub is_leader: Gauge,
    /// Times this replica gained or lost the lease.
    pub transitions: Counter,
}

impl LeaseMetrics {
    /// Registers every metric under `registry`.
    pub fn register(self, registry: &mut Registry) -> Self {
        registry.register(
            "is_leader",
            "1 while this replica holds the leader lease",
            self.is_leader.clone(),
        );
        registry.register(
            "transitions",
            "Times this replica gained or lost the leader lease",
            self.transitions.clone(),
        );
        self
    }
}

/// Metrics of the webhook receiver.
#[derive(Clone, Default)]
pub struct WebhookMetrics {
    /// Deliveries received, by outcome.
    pub deliveries: Family<OutcomeLabels, Counter>,
}

/// Label set: what a delivery came to.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// One of the receiver's outcomes, e.g. `woke`, `bad_signature`.
    pub outcome: &'static str,
}

impl WebhookMetrics {
    /// Registers every metric under `registry`.
    pub fn register(self, registry: &mut Registry) -> Self {
        registry.register(
            "deliveries",
            "Webhook deliveries received, by outcome (woke, coalesced, no_match, ignored_event, missing_signature, bad_signature, too_large, timeout, method_not_allowed, unknown_pool, malformed, secret_unavailable, wake_failed)",
            self.deliveries.clone(),
        );
        self
    }

    /// Counts one delivery with `outcome`.
    pub fn count(&self, outcome: &'static str) {
        self.deliveries
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }
}

/// All metrics of the process.
#[derive(Clone)]
pub struct Metrics {
    /// The reconcile loop.
    pub reconcile: ReconcileMetrics,
    /// Requests to Forgejo.
    pub forgejo: ForgejoMetrics,
    /// Leader election.
    pub lease: LeaseMetrics,
    /// The webhook receiver.
    pub webhook: WebhookMetrics,
    /// The Forgejo jobs the pools run.
    pub jobs: JobMetrics,
}

impl Metrics {
    /// Creates the metrics and registers them under `forgejo_runner_controller_*`.
    pub fn new(registry: &mut Registry) -> Self {
        let root = registry.sub_registry_with_prefix("forgejo_runner_controller");
        Self {
            reconcile: ReconcileMetrics::default().register(root),
            forgejo: ForgejoMetrics::default().register(root.sub_registry_with_prefix("forgejo")),
            lease: LeaseMetrics::default().register(root.sub_registry_with_prefix("lease")),
            webhook: WebhookMetrics::default().register(root.sub_registry_with_prefix("webhook")),
            jobs: JobMetrics::default().register(root),
        }
    }
}

#[cfg(test)]
mod tests;
