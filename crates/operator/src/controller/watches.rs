//! The watch caches of one controller: what the pools own (Jobs, pods, runner Secrets, each
//! by label) and the pools themselves, with readiness once all have listed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::BoxStream;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{Predicate as _, WatchStreamExt as _, predicates, watcher};
use kube::{Resource, ResourceExt as _};
use serde::de::DeserializeOwned;

use api::RunnerDeployment;

use super::Stores;
use super::trim::{self, RunnerJob, RunnerPod};
use crate::admin::Readiness;

/// A cache and the stream of the objects it saw change.
pub type Watched<K> = (Store<K>, BoxStream<'static, Result<K, watcher::Error>>);

/// Watches `api` with `config` into a cache that keeps what `trim` leaves of each object
/// (see [`super::trim`]).
pub fn cached<K>(api: Api<K>, config: watcher::Config, trim: fn(&mut K)) -> Watched<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(trim)
        .reflect(writer)
        .touched_objects()
        .boxed();
    (store, stream)
}

/// The Jobs, pods and runner Secrets the pools own, by label.
pub fn owned(
    jobs: Api<RunnerJob>,
    pods: Api<RunnerPod>,
    secrets: Api<Secret>,
    servers: Api<Deployment>,
) -> OwnedWatches {
    let owned = watcher::Config::default().labels(&scheduler::labels::owned_jobs_selector());
    let runner_secrets =
        watcher::Config::default().labels(&scheduler::labels::runner_secrets_selector());
    let (job_store, jobs) = cached(jobs, owned.clone(), trim::job);
    let (pod_store, pods) = cached(pods, owned, trim::pod);
    let (secret_store, secrets) = cached(secrets, runner_secrets, trim::secret);
    let cache_servers =
        watcher::Config::default().labels(&scheduler::labels::cache_servers_selector());
    let (server_store, servers) = cached(servers, cache_servers, trim::deployment);
    OwnedWatches {
        stores: Stores {
            jobs: job_store,
            pods: pod_store,
            secrets: secret_store,
            cache_servers: server_store,
        },
        jobs,
        pods,
        secrets,
        cache_servers: servers,
    }
}

/// What [`owned`] returns: the caches, and a stream of changes per kind.
pub struct OwnedWatches {
    /// The caches.
    pub stores: Stores,
    /// Changed runner Jobs.
    pub jobs: BoxStream<'static, Result<RunnerJob, watcher::Error>>,
    /// Changed runner pods.
    pub pods: BoxStream<'static, Result<RunnerPod, watcher::Error>>,
    /// Changed runner Secrets.
    pub secrets: BoxStream<'static, Result<Secret, watcher::Error>>,
    /// Changed cache server Deployments.
    pub cache_servers: BoxStream<'static, Result<Deployment, watcher::Error>>,
}

/// The pools, and the changes that trigger a reconcile: only spec changes, finalizer changes
/// and deletion, because the status the reconciler writes every poll must not trigger the
/// next poll.
pub fn pools(api: Api<RunnerDeployment>) -> Watched<RunnerDeployment> {
    let (store, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|rd| rd.managed_fields_mut().clear())
        .reflect(writer)
        .applied_objects()
        .predicate_filter(
            predicates::generation
                .combine(predicates::finalizers)
                .combine(wake_stamp),
            Default::default(),
        )
        .boxed();
    (store, stream)
}

/// A hash of the pool's webhook wake stamp: a new stamp reconciles the pool.
fn wake_stamp(rd: &RunnerDeployment) -> Option<u64> {
    use std::hash::{Hash as _, Hasher as _};
    let stamp = crate::webhook::wake_stamp(rd)?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    stamp.hash(&mut hasher);
    Some(hasher.finish())
}

/// Marks the process ready once every cache of every controller has listed: `unsynced`
/// counts the controllers still waiting.
pub fn report_readiness(
    pools: Store<RunnerDeployment>,
    stores: Stores,
    unsynced: Arc<AtomicUsize>,
    readiness: Readiness,
    scope: Option<String>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let waits: [(&str, futures::future::BoxFuture<'static, bool>); 5] = [
            (
                "RunnerDeployments",
                Box::pin(async move { store_synced(&pools).await }),
            ),
            (
                "Jobs",
                Box::pin(async move { store_synced(&stores.jobs).await }),
            ),
            (
                "Pods",
                Box::pin(async move { store_synced(&stores.pods).await }),
            ),
            (
                "Secrets",
                Box::pin(async move { store_synced(&stores.secrets.clone()).await }),
            ),
            (
                "Deployments",
                Box::pin(async move { store_synced(&stores.cache_servers).await }),
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
        tracing::info!(scope = ?scope, "watch caches synced");
        if unsynced.fetch_sub(1, Ordering::SeqCst) == 1 {
            readiness.set_caches_synced();
        }
    })
}

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
