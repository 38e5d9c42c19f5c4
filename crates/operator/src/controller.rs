//! The RunnerDeployment controller: observe → `scheduler::plan` → act → write status.
//!
//! Reconciles of different pools run concurrently; one pool's slow or failing Forgejo never
//! holds up another. Only the leader writes: a replica that is not the leader keeps its
//! caches warm and does nothing else.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::{mpsc, watch};

use api::RunnerDeployment;

use crate::admin::Readiness;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::polls::{ForgejoSettings, PoolRef, SharedPolls};

mod apply;
mod backoff;
mod cache;
mod cache_objects;
mod deleted;
mod events;
mod executor;
mod finalize;
mod hook;
mod latency;
mod lifecycle;
mod not_waiting;
mod observe;
mod recent;
mod reconcile;
mod start_pause;
mod status;
mod sweep;
mod token_watch;
mod trim;
mod warm;
mod watches;
mod writer;

#[cfg(test)]
mod tests;

pub use backoff::{backoff, reset_backoff};
pub use status::apply_status;

/// The finalizer that removes a pool's runner registrations from Forgejo before it goes.
pub const FINALIZER: &str = "forgejo.runners.dev/runner-registrations";
/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "forgejo-runner-controller";

/// How the controller runs, from the command line.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Watch these namespaces only (empty: every namespace).
    pub namespaces: Vec<String>,
    /// Timeout of one Forgejo request.
    pub forgejo_timeout: Duration,
    /// Extra CA certificates (PEM) for Forgejo servers.
    pub forgejo_extra_ca: Option<Vec<u8>>,
    /// Let `forgejoServer` resolve to link-local and cloud metadata addresses.
    pub allow_link_local_forgejo: bool,
    /// Let `jobTemplate` ask for privileged pods, host namespaces, hostPath volumes and
    /// ServiceAccount tokens.
    pub allow_privileged_runners: bool,
    /// Grace periods and deadlines of the scheduler.
    pub timeouts: scheduler::Timeouts,
    /// Which optional labels the job metrics carry.
    pub job_metric_labels: crate::metrics::JobMetricLabels,
}

/// The watch caches the reconciler reads instead of asking the apiserver.
#[derive(Clone)]
pub struct Stores {
    /// Runner Jobs of every pool.
    pub jobs: Store<trim::RunnerJob>,
    /// Runner pods of every pool.
    pub pods: Store<trim::RunnerPod>,
    /// Runner credential Secrets of every pool.
    pub secrets: Store<Secret>,
    /// Cache server Deployments of every pool.
    pub cache_servers: Store<Deployment>,
}

/// What every reconcile shares.
pub struct Context {
    /// The Kubernetes client.
    pub client: kube::Client,
    /// Publishes events on pools.
    pub recorder: Recorder,
    /// Metrics of the process.
    pub metrics: Metrics,
    /// Forgejo clients and shared polls (shared by every namespace watched).
    pub polls: Arc<SharedPolls>,
    /// Whether `jobTemplate` may ask for privileges (see [`ControllerConfig`]).
    pub allow_privileged_runners: bool,
    /// Watch caches of what the pools own.
    pub stores: Stores,
    /// The one gated writer: every write asks it, per write, whether this replica leads.
    pub writer: writer::Writer,
    /// Grace periods and deadlines of the scheduler.
    pub timeouts: scheduler::Timeouts,
    /// When each waiting job was first seen, by pool uid, for the latency metric.
    pub first_seen: Mutex<HashMap<String, latency::FirstSeen>>,
    /// Consecutive failures per pool, for backoff.
    pub failures: Mutex<HashMap<ObjectRef<RunnerDeployment>, u32>>,
    /// Pools whose runner pods cannot start, and until when their new Jobs wait.
    pub start_pause: start_pause::StartPause,
    /// Runner registrations deleted lately, so that an older listing does not repeat it.
    pub deleted: deleted::DeletedRegistrations,
    /// When each pool last listed its runner registrations, and whether it changed any since.
    pub sweeps: sweep::RegistrationSweeps,
    /// The pools' token Secrets, as their watches see them.
    pub tokens: token_watch::TokenSecrets,
    /// Runner Jobs and Secrets created lately, which the caches may not show yet.
    pub recent: recent::RecentWrites,
    /// The cache objects last applied per pool.
    pub caches: cache::AppliedCaches,
    /// When each runner Job's Forgejo job was first seen not waiting.
    pub not_waiting: not_waiting::NotWaitingSince,
    /// Which webhook wake stamp each pool's polls answered.
    pub wakes: crate::webhook::AnsweredWakes,
    /// The Forgejo hooks this process registered for pools.
    pub hooks: hook::RegisteredHooks,
    /// The Forgejo jobs each pool runs, followed for the job metrics.
    pub jobs_seen: lifecycle::JobsSeen,
}

/// Requests (to the apiserver and Forgejo) that the reconciles of one controller make at
/// once. Each request in flight holds an HTTP/1.1 connection with its TLS state and
/// buffers: unbounded, a burst of 1,000 jobs opened about as many connections (tens of MiB)
/// and gained no speed, as the apiserver was the bottleneck.
pub const MAX_CONCURRENT_REQUESTS: usize = 32;

impl Context {
    /// Whether this replica may write now (it holds the Lease): a reconcile asks before it
    /// starts work whose only use is a write; each write asks [`writer::Writer`] again.
    pub fn may_write(&self) -> bool {
        self.writer.may_write()
    }
}

/// Runs the controller until `shutdown` resolves, then drains in-flight reconciles: one
/// controller per namespace watched (or one for all), sharing Forgejo clients and polls.
pub async fn run(
    client: kube::Client,
    config: ControllerConfig,
    metrics: Metrics,
    readiness: Readiness,
    leader: watch::Receiver<bool>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    pools: crate::webhook::PoolDirectory,
) -> Result<()> {
    let scopes: Vec<Option<String>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    };
    let (recovered_sender, mut recovered) = mpsc::unbounded_channel();
    let polls = Arc::new(SharedPolls::new(
        ForgejoSettings {
            request_timeout: config.forgejo_timeout,
            extra_ca: config.forgejo_extra_ca.clone(),
            allow_link_local: config.allow_link_local_forgejo,
        },
        metrics.forgejo.clone(),
        recovered_sender,
    ));
    let shutdown = shutdown.shared();
    let unsynced = Arc::new(AtomicUsize::new(scopes.len()));
    let mut routes = HashMap::new();
    let mut runs = Vec::new();
    for scope in scopes {
        let (sender, receiver) = mpsc::unbounded_channel();
        routes.insert(scope.clone(), sender);
        let name = scope.clone();
        runs.push(
            run_scope(ScopeRun {
                client: client.clone(),
                scope,
                config: config.clone(),
                metrics: metrics.clone(),
                readiness: readiness.clone(),
                unsynced: unsynced.clone(),
                leader: leader.clone(),
                shutdown: shutdown.clone(),
                polls: polls.clone(),
                recovered: receiver,
                directory: pools.clone(),
            })
            .inspect(move |result| {
                // Said at once: the other namespaces go on, and this one would wait until shutdown.
                if let Err(error) = result {
                    tracing::error!(namespace = ?name, %error, "this namespace is not served");
                }
            }),
        );
    }
    // A pool woken by another pool's poll goes to the controller of its namespace.
    let router = tokio::spawn(async move {
        while let Some(pool) = recovered.recv().await {
            let route = routes.get(&None).or_else(|| routes.get(&pool.namespace));
            if let Some(route) = route {
                let _ = route.send(pool);
            }
        }
    });
    let results = futures::future::join_all(runs).await;
    router.abort();
    results.into_iter().collect()
}

/// One controller: the pools of one namespace (or all) and what they own.
struct ScopeRun<S> {
    client: kube::Client,
    scope: Option<String>,
    config: ControllerConfig,
    metrics: Metrics,
    readiness: Readiness,
    /// Controllers whose caches have not synced yet; the last one marks the process ready.
    unsynced: Arc<AtomicUsize>,
    leader: watch::Receiver<bool>,
    shutdown: S,
    polls: Arc<SharedPolls>,
    recovered: mpsc::UnboundedReceiver<PoolRef>,
    /// Where the webhook receiver finds this controller's pools.
    directory: crate::webhook::PoolDirectory,
}

async fn run_scope<S>(run: ScopeRun<S>) -> Result<()>
where
    S: Future<Output = ()> + Send + Sync + 'static,
{
    let ScopeRun {
        client,
        scope,
        config,
        metrics,
        readiness,
        unsynced,
        leader,
        shutdown,
        polls,
        recovered,
        directory,
    } = run;
    let (pools, jobs, pods, secrets, servers) = match &scope {
        Some(ns) => (
            Api::<RunnerDeployment>::namespaced(client.clone(), ns),
            Api::<trim::RunnerJob>::namespaced(client.clone(), ns),
            Api::<trim::RunnerPod>::namespaced(client.clone(), ns),
            Api::<Secret>::namespaced(client.clone(), ns),
            Api::<Deployment>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    ensure_pools_readable(&pools, scope.as_deref()).await?;

    let owned = watches::owned(jobs, pods, secrets, servers);
    let tokens = token_watch::TokenSecrets::default();
    let stores = owned.stores.clone();
    let reporter = Reporter {
        controller: FIELD_MANAGER.to_owned(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client: client.clone(),
        polls,
        allow_privileged_runners: config.allow_privileged_runners,
        metrics,
        stores: owned.stores.clone(),
        writer: writer::Writer::new(leader.clone(), MAX_CONCURRENT_REQUESTS),
        timeouts: config.timeouts,
        first_seen: Mutex::default(),
        failures: Mutex::default(),
        start_pause: start_pause::StartPause::default(),
        deleted: deleted::DeletedRegistrations::default(),
        sweeps: sweep::RegistrationSweeps::default(),
        tokens: tokens.clone(),
        recent: recent::RecentWrites::default(),
        caches: cache::AppliedCaches::default(),
        not_waiting: not_waiting::NotWaitingSince::default(),
        wakes: crate::webhook::AnsweredWakes::default(),
        hooks: hook::RegisteredHooks::default(),
        jobs_seen: lifecycle::JobsSeen::new(config.job_metric_labels),
    });

    let (pool_store, pool_stream) = watches::pools(pools);
    directory.add(pool_store.clone());
    let controller = Controller::for_stream(pool_stream, pool_store.clone());
    let pool_ready = pool_store.clone();
    let pod_pools = pool_store.clone();
    let secret_pools = pool_store.clone();
    // Token Secrets are not ours and carry no label: each is watched alone, by name.
    let token_changes =
        token_watch::token_secret_changes(client.clone(), pool_store.clone(), tokens);

    // Becoming the leader reconciles every pool at once.
    let leadership_gained =
        leadership_changes(leader).filter_map(|leading| async move { leading.then_some(()) });

    let readiness_task =
        watches::report_readiness(pool_ready, stores, unsynced, readiness, scope.clone());

    controller
        .owns_stream(owned.jobs)
        .owns_stream(owned.cache_servers)
        .watches_stream(owned.pods, move |pod: trim::RunnerPod| {
            pool_of(&pod, &pod_pools).into_iter()
        })
        .watches_stream(owned.secrets, move |secret: Secret| {
            pool_of(&secret, &secret_pools).into_iter()
        })
        .reconcile_on(token_changes)
        .reconcile_all_on(leadership_gained)
        // A pool whose poll failed goes again as soon as another pool's poll of it works.
        .reconcile_on(futures::stream::unfold(
            recovered,
            |mut receiver| async move { receiver.recv().await.map(|pool| (pool, receiver)) },
        ))
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile trigger failed");
            }
        })
        .await;
    readiness_task.abort();
    Ok(())
}

/// Fails fast, with the cause, when the CRD is missing or RBAC forbids listing pools.
async fn ensure_pools_readable(pools: &Api<RunnerDeployment>, scope: Option<&str>) -> Result<()> {
    let where_ = scope.map_or_else(
        || "in any namespace".to_owned(),
        |ns| format!("in namespace {ns}"),
    );
    pools
        .list(&ListParams::default().limit(1))
        .await
        .map(|_| ())
        .map_err(|e| Error::kube(format!("list RunnerDeployments {where_} (is the CRD installed, and does the operator's RBAC cover this namespace? kubectl apply --server-side -k deploy/)"), e))
}

/// Every change of leadership, as a stream.
fn leadership_changes(
    receiver: watch::Receiver<bool>,
) -> impl futures::Stream<Item = bool> + Send + 'static {
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.changed().await.ok()?;
        let leading = *receiver.borrow_and_update();
        Some((leading, receiver))
    })
}

/// The pool a runner pod or runner Secret belongs to, by the pool uid label every object we
/// make carries (names may be too long for a label; uids never are).
fn pool_of<K: kube::Resource>(
    object: &K,
    pools: &Store<RunnerDeployment>,
) -> Option<ObjectRef<RunnerDeployment>> {
    let namespace = object.meta().namespace.as_deref()?;
    let uid = scheduler::labels::pool_uid_of(object.meta().labels.as_ref())?;
    pools
        .state()
        .iter()
        .find(|rd| rd.namespace().as_deref() == Some(namespace) && rd.uid().as_deref() == Some(uid))
        .map(|rd| ObjectRef::from_obj(rd.as_ref()))
}
