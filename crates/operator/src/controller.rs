//! The RunnerDeployment controller: observe → `scheduler::plan` → act → write status.
//!
//! Reconciles of different pools run concurrently; one pool's slow or failing Forgejo never
//! holds up another. Only the leader writes: a replica that is not the leader keeps its
//! caches warm and does nothing else.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt as _, StreamExt as _};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::finalizer::{Error as FinalizerError, Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Predicate as _, WatchStreamExt as _, predicates, watcher};
use kube::{Resource as _, ResourceExt as _};
use tokio::sync::{mpsc, watch};

use api::RunnerDeployment;

use crate::admin::Readiness;
use crate::error::{Error, Result, RetryClass};
use crate::metrics::Metrics;
use crate::polls::{ForgejoSettings, PoolRef, SharedPolls};

mod act;
mod deleted;
mod observe;
mod start_backoff;
mod status;
mod token_watch;

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
}

/// The watch caches the reconciler reads instead of asking the apiserver.
#[derive(Clone)]
pub struct Stores {
    /// Runner Jobs of every pool.
    pub jobs: Store<Job>,
    /// Runner pods of every pool.
    pub pods: Store<Pod>,
    /// Runner credential Secrets of every pool.
    pub secrets: Store<Secret>,
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
    /// Whether this replica leads.
    pub leader: watch::Receiver<bool>,
    /// Grace periods and deadlines of the scheduler.
    pub timeouts: scheduler::Timeouts,
    /// When each waiting job (pool uid, job id, attempt) was first seen, for the latency metric.
    pub first_seen: Mutex<HashMap<(String, i64, i64), Instant>>,
    /// Consecutive failures per pool, for backoff.
    pub failures: Mutex<HashMap<ObjectRef<RunnerDeployment>, u32>>,
    /// Pools whose runner pods cannot start, and until when their new Jobs wait.
    pub start_backoff: start_backoff::StartBackoff,
    /// Runner registrations deleted lately, so that an older listing does not repeat it.
    pub deleted: deleted::DeletedRegistrations,
}

impl Context {
    /// Whether this replica may write now.
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
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
        runs.push(run_scope(ScopeRun {
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
        }));
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
    } = run;
    let (pools, jobs, pods, secrets) = match &scope {
        Some(ns) => (
            Api::<RunnerDeployment>::namespaced(client.clone(), ns),
            Api::<Job>::namespaced(client.clone(), ns),
            Api::<Pod>::namespaced(client.clone(), ns),
            Api::<Secret>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    let where_ = scope.as_deref().map_or_else(
        || "in any namespace".to_owned(),
        |ns| format!("in namespace {ns}"),
    );
    // Fail fast, with the cause, when the CRD is missing or RBAC forbids the basics.
    pools
        .list(&ListParams::default().limit(1))
        .await
        .map_err(|e| Error::kube(format!("list RunnerDeployments {where_} (is the CRD installed, and does the operator's RBAC cover this namespace? kubectl apply --server-side -k deploy/)"), e))?;

    let owned = watcher::Config::default().labels(&scheduler::labels::owned_jobs_selector());
    let (job_store, job_writer) = reflector::store();
    // Managed fields are a large share of every object and the reconciler never reads them.
    let job_stream = watcher(jobs, owned.clone())
        .default_backoff()
        .modify(|job| job.managed_fields_mut().clear())
        .reflect(job_writer)
        .touched_objects();
    let (pod_store, pod_writer) = reflector::store();
    let pod_stream = watcher(pods, owned)
        .default_backoff()
        .modify(|pod| pod.managed_fields_mut().clear())
        .reflect(pod_writer)
        .touched_objects();
    let (secret_store, secret_writer) = reflector::store();
    let secret_config =
        watcher::Config::default().labels(&scheduler::labels::runner_secrets_selector());
    let secret_stream = watcher(secrets, secret_config)
        .default_backoff()
        .modify(|secret| secret.managed_fields_mut().clear())
        .reflect(secret_writer)
        .touched_objects();

    let stores = Stores {
        jobs: job_store.clone(),
        pods: pod_store.clone(),
        secrets: secret_store.clone(),
    };
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
        stores,
        leader: leader.clone(),
        timeouts: config.timeouts,
        first_seen: Mutex::default(),
        failures: Mutex::default(),
        start_backoff: start_backoff::StartBackoff::default(),
        deleted: deleted::DeletedRegistrations::default(),
    });

    // Only spec changes, finalizer changes and deletion trigger a pool: the status the
    // reconciler writes every poll must not trigger the next poll.
    let (pool_store, pool_writer) = reflector::store();
    let pool_stream = watcher(pools, watcher::Config::default())
        .default_backoff()
        .modify(|rd| rd.managed_fields_mut().clear())
        .reflect(pool_writer)
        .applied_objects()
        .predicate_filter(
            predicates::generation.combine(predicates::finalizers),
            Default::default(),
        );
    let controller = Controller::for_stream(pool_stream, pool_store.clone());
    let pool_ready = pool_store.clone();
    let pod_pools = pool_store.clone();
    let secret_pools = pool_store.clone();
    // Token Secrets are not ours and carry no label: each is watched alone, by name.
    let token_changes = token_watch::token_secret_changes(client.clone(), pool_store.clone());

    // Becoming the leader reconciles every pool at once.
    let leadership_gained =
        leadership_changes(leader).filter_map(|leading| async move { leading.then_some(()) });

    let scope_name = scope.clone();
    let readiness_task = tokio::spawn(async move {
        let waits: [(&str, futures::future::BoxFuture<'static, bool>); 4] = [
            (
                "RunnerDeployments",
                Box::pin(async move { store_synced(&pool_ready).await }),
            ),
            (
                "Jobs",
                Box::pin(async move { store_synced(&job_store).await }),
            ),
            (
                "Pods",
                Box::pin(async move { store_synced(&pod_store).await }),
            ),
            (
                "Secrets",
                Box::pin(async move { store_synced(&secret_store).await }),
            ),
        ];
        let results = futures::future::join_all(waits.into_iter().map(|(name, wait)| async move {
            let synced = wait.await;
            if synced {
                tracing::debug!(cache = name, "watch cache synced");
            } else {
                tracing::error!(cache = name, "a watch cache stopped before it synced");
            }
            synced
        }))
        .await;
        if results.contains(&false) {
            return;
        }
        tracing::info!(scope = ?scope_name, "watch caches synced");
        if unsynced.fetch_sub(1, Ordering::SeqCst) == 1 {
            readiness.set_caches_synced();
        }
    });

    controller
        .owns_stream(job_stream)
        .watches_stream(pod_stream, move |pod: Pod| {
            pool_of(&pod, &pod_pools).into_iter()
        })
        .watches_stream(secret_stream, move |secret: Secret| {
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
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile trigger failed");
            }
        })
        .await;
    readiness_task.abort();
    Ok(())
}

/// Every change of leadership, as a stream.
/// Whether a reflector store got its first full list; false if its writer went away first.
///
/// The Controller waits on the pool store too, and a store's readiness future can wake one
/// waiter only: a standby replica then stayed unready forever. Asking again every second
/// cannot miss the moment, since a ready store answers a new ask at once.
async fn store_synced<K>(store: &Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(1), store.wait_until_ready()).await {
            Ok(ready) => return ready.is_ok(),
            Err(_elapsed) => continue,
        }
    }
}

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

/// Reconciles one pool: the finalizer around [`observe`], plan and [`act`].
#[tracing::instrument(skip_all, fields(pool = %rd.name_any(), namespace = rd.namespace().unwrap_or_default()))]
async fn reconcile(rd: Arc<RunnerDeployment>, ctx: Arc<Context>) -> Result<Action> {
    if !ctx.is_leader() {
        // Becoming the leader reconciles every pool again.
        return Ok(Action::await_change());
    }
    let started = Instant::now();
    let namespace = rd.namespace().unwrap_or_default();
    let api: Api<RunnerDeployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, rd, |event| async {
        match event {
            FinalizerEvent::Apply(rd) => act::apply(rd, ctx.clone()).await,
            FinalizerEvent::Cleanup(rd) => act::cleanup(rd, ctx.clone()).await,
        }
    })
    .await;
    let result = match result {
        Ok(action) => Ok(action),
        Err(FinalizerError::ApplyFailed(error) | FinalizerError::CleanupFailed(error)) => {
            Err(error)
        }
        // The JSON patch's test failed: our cache lags a finalizer change we made a moment
        // ago. Not a failure; look again once the watch caught up.
        Err(
            FinalizerError::AddFinalizer(kube::Error::Api(status))
            | FinalizerError::RemoveFinalizer(kube::Error::Api(status)),
        ) if status.code == 422 || status.code == 409 => {
            tracing::debug!("finalizer patch raced the watch cache; retrying");
            Ok(Action::requeue(Duration::from_millis(500)))
        }
        Err(other) => Err(Error::Finalizer(Box::new(other))),
    };
    let metrics = &ctx.metrics.reconcile;
    metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    let outcome = match &result {
        Ok(_) => "Ok",
        Err(error) => error.reason(),
    };
    crate::metrics::ReconcileMetrics::count(&metrics.reconciles, outcome);
    result
}

/// Backs off a failing pool: from a few seconds, doubling, with jitter; slower for what
/// needs a person. Other pools are not affected.
fn error_policy(rd: Arc<RunnerDeployment>, error: &Error, ctx: Arc<Context>) -> Action {
    crate::metrics::ReconcileMetrics::count(
        &ctx.metrics.reconcile.reconcile_errors,
        error.reason(),
    );
    let failures = {
        let mut failures = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
        let count = failures
            .entry(ObjectRef::from_obj(rd.as_ref()))
            .or_insert(0);
        *count = count.saturating_add(1);
        *count
    };
    let interval = rd.spec.poll_interval().unwrap_or(Duration::from_secs(30));
    let delay = backoff(failures, interval, error.retry_class());
    tracing::warn!(reason = error.reason(), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The delay before retry number `failures` (1-based) of a pool polling every `interval`.
///
/// An outage is retried from 1 s, doubling, but never later than one interval, so that a
/// pool is back within one interval of Forgejo's return however long the outage was. What
/// needs a person backs off to ten intervals (at most 5 minutes). A `Retry-After` is kept.
pub fn backoff(failures: u32, interval: Duration, class: RetryClass) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    match class {
        RetryClass::Transient => {
            let cap = interval.max(Duration::from_secs(1));
            let delay = Duration::from_secs(1)
                .saturating_mul(1 << exponent)
                .min(cap);
            // Jitter only downwards, so the cap holds, and pools failing together spread out.
            delay.mul_f64(rand::random_range(0.8..=1.0))
        }
        RetryClass::After(asked) => asked
            .max(Duration::from_millis(100))
            .mul_f64(rand::random_range(1.0..1.1)),
        RetryClass::NeedsAPerson => {
            let base = interval.max(Duration::from_secs(5));
            let cap = (interval * 10).clamp(Duration::from_secs(10), Duration::from_secs(300));
            let delay = base.saturating_mul(1 << exponent).min(cap);
            delay.mul_f64(rand::random_range(0.8..1.2))
        }
    }
}

/// Clears a pool's failure count after a success.
pub fn reset_backoff(ctx: &Context, rd: &RunnerDeployment) {
    ctx.failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&ObjectRef::from_obj(rd));
}

/// Server-side-applies a status (the whole of it: fields this manager leaves out are removed).
pub async fn apply_status(
    ctx: &Context,
    rd: &RunnerDeployment,
    status: &api::RunnerDeploymentStatus,
) -> Result<()> {
    let name = rd.name_any();
    let api: Api<RunnerDeployment> =
        Api::namespaced(ctx.client.clone(), &rd.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": RunnerDeployment::api_version(&()),
        "kind": RunnerDeployment::kind(&()),
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|e| Error::kube(format!("apply the status of RunnerDeployment {name}"), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(30);

    #[test]
    fn an_outage_is_retried_within_one_interval_however_long_it_lasts() {
        // A 180 s outage at a 30 s interval used to reach 300 s between tries.
        for failures in 1..=40 {
            let delay = backoff(failures, INTERVAL, RetryClass::Transient);
            assert!(delay <= INTERVAL, "try {failures}: {delay:?}");
        }
        assert!(backoff(1, INTERVAL, RetryClass::Transient) <= Duration::from_secs(1));
    }

    #[test]
    fn a_retry_after_is_never_cut_short() {
        let asked = Duration::from_secs(5);
        for failures in 1..=5 {
            let delay = backoff(failures, INTERVAL, RetryClass::After(asked));
            assert!(delay >= asked && delay < asked * 2, "{delay:?}");
        }
    }

    #[test]
    fn what_needs_a_person_backs_off_to_ten_intervals_at_most() {
        assert!(backoff(1, INTERVAL, RetryClass::NeedsAPerson) >= INTERVAL.mul_f64(0.8));
        for failures in 1..=20 {
            let delay = backoff(failures, INTERVAL, RetryClass::NeedsAPerson);
            assert!(delay <= Duration::from_secs(360), "{delay:?}");
        }
    }

    #[tokio::test]
    async fn a_maintenance_page_is_an_outage_not_a_misconfiguration() {
        use forgejo::stand_in::{Fault, StandIn, StandInConfig, Times};
        let forgejo = StandIn::start(StandInConfig::with_token("15.0.3", "good"));
        forgejo.inject_fault(
            "/api/v1/orgs/faro/actions/runners/jobs",
            Fault::Body(200, "<html>down for maintenance</html>".into()),
            Times::Always,
        );
        let client = forgejo::Client::new(
            &forgejo.url(),
            forgejo::Token::new("good"),
            forgejo::ClientOptions::default(),
        )
        .unwrap();
        let page = client
            .list_jobs(&forgejo::Scope::Organization("faro".into()), None)
            .await
            .unwrap_err();
        assert_eq!(page.reason(), "InvalidResponse");
        assert_eq!(Error::from(page).retry_class(), RetryClass::Transient);
    }
}
