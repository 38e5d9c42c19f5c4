//! A pool's shared Actions cache in one reconcile: its objects made, kept or removed for
//! `spec.cache.mode`, what runner pods mount, and the `CacheReady` condition.
//!
//! The cache never holds a runner back: while it is not usable, runner pods are made
//! without it (each runner keeps its own cache, as without `spec.cache`), and a cache
//! server that is not up yet only makes `actions/cache` miss.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams};
use kube::runtime::events::EventType;

use api::condition_types::CACHE_READY;
use api::{CacheMode, RunnerDeployment};
use scheduler::{CacheNames, Pool, RunnerCache};

use super::Context;
use super::cache_objects::{CacheError, CacheWriter};
use super::events::publish;

/// An unchanged cache is applied again after this long, so that a deleted or edited object
/// comes back without a watch on each kind.
const REAPPLY_AFTER: Duration = Duration::from_secs(600);

/// What one reconcile made of the pool's cache.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheOutcome {
    /// What runner pods mount; `None`: no shared cache for the pods made now.
    pub runner_cache: Option<RunnerCache>,
    /// `CacheReady`.
    pub ready: bool,
    /// Its reason.
    pub reason: &'static str,
    /// Its message (never a secret).
    pub message: String,
    /// Whether a not-ready outcome needs someone (an event on change).
    pub problem: bool,
}

impl CacheOutcome {
    fn not_ready(runner_cache: Option<RunnerCache>, error: &CacheError) -> Self {
        Self {
            runner_cache,
            ready: false,
            reason: error.reason(),
            message: error.to_string(),
            problem: true,
        }
    }
}

/// What was last applied for each pool (by uid).
#[derive(Default)]
pub struct AppliedCaches(Mutex<HashMap<String, Applied>>);

#[derive(Clone)]
struct Applied {
    fingerprint: u64,
    at: Instant,
    runner_cache: RunnerCache,
    mode: CacheMode,
}

impl AppliedCaches {
    fn fresh(&self, uid: &str, fingerprint: u64) -> Option<RunnerCache> {
        let map = self.0.lock().ok()?;
        map.get(uid)
            .filter(|a| a.fingerprint == fingerprint && a.at.elapsed() < REAPPLY_AFTER)
            .map(|a| a.runner_cache.clone())
    }

    fn remember(&self, uid: &str, fingerprint: u64, runner_cache: &RunnerCache, mode: CacheMode) {
        if let Ok(mut map) = self.0.lock() {
            let applied = Applied {
                fingerprint,
                at: Instant::now(),
                runner_cache: runner_cache.clone(),
                mode,
            };
            map.insert(uid.to_owned(), applied);
        }
    }

    /// Forgets a pool; returns the mode it had, if any.
    pub fn forget(&self, uid: &str) -> Option<CacheMode> {
        self.0.lock().ok()?.remove(uid).map(|a| a.mode)
    }
}

fn fingerprint(parts: &[String]) -> u64 {
    let mut hasher = DefaultHasher::new();
    parts.hash(&mut hasher);
    hasher.finish()
}

/// Makes, keeps or removes the pool's cache objects for its mode.
pub async fn reconcile_cache(ctx: &Context, rd: &RunnerDeployment, pool: &Pool) -> CacheOutcome {
    let mode = rd.spec.cache_mode();
    let writer = CacheWriter::new(ctx, pool);
    let server = server_of(ctx, pool, writer.names());
    let applied_mode = if mode == CacheMode::Disabled {
        ctx.caches.forget(&pool.uid)
    } else {
        None
    };
    let leftovers = (mode != CacheMode::Managed && server.is_some())
        || applied_mode.is_some_and(|m| m != CacheMode::Disabled);
    if leftovers {
        match writer.remove(mode).await {
            Ok(0) => {}
            Ok(removed) => {
                let note = format!(
                    "spec.cache.mode is {}: removed {removed} object(s) of the managed cache server",
                    mode.as_str()
                );
                publish(
                    ctx,
                    rd,
                    EventType::Normal,
                    "CacheServerRemoved",
                    "Cache",
                    &note,
                )
                .await;
            }
            Err(error) => return CacheOutcome::not_ready(None, &error),
        }
    }
    match (mode, rd.spec.cache.as_ref().and_then(|c| c.external.as_ref())) {
        (CacheMode::Managed, _) => managed(ctx, rd, pool, &writer, server).await,
        (CacheMode::External, Some(external)) => {
            let print = fingerprint(&[
                external.url.clone(),
                external.secret_ref.name.clone(),
                external.secret_ref.key.clone(),
            ]);
            let applied = match ctx.caches.fresh(&pool.uid, print) {
                Some(cache) => Ok(cache),
                None => writer.apply_external(&external.url, &external.secret_ref).await,
            };
            match applied {
                Ok(cache) => {
                    ctx.caches.remember(&pool.uid, print, &cache, mode);
                    CacheOutcome {
                        runner_cache: Some(cache),
                        ready: true,
                        reason: "External",
                        message: format!("runners use the cache server at {}", external.url),
                        problem: false,
                    }
                }
                Err(error) => CacheOutcome::not_ready(None, &error),
            }
        }
        (CacheMode::External, None) | (CacheMode::Disabled, _) => CacheOutcome {
            runner_cache: None,
            ready: false,
            reason: "Disabled",
            message: "spec.cache.mode is Disabled (the default with a runnerImage other than the default): each runner keeps its own cache, lost with its pod".to_owned(),
            problem: false,
        },
    }
}

/// The pool's cache server Deployment, as the watch sees it.
fn server_of(ctx: &Context, pool: &Pool, names: &CacheNames) -> Option<std::sync::Arc<Deployment>> {
    ctx.stores.cache_servers.state().into_iter().find(|d| {
        d.namespace().as_deref() == Some(pool.namespace.as_str())
            && d.name_any() == names.server()
            && scheduler::labels::pool_uid_of(d.metadata.labels.as_ref()) == Some(pool.uid.as_str())
    })
}

async fn managed(
    ctx: &Context,
    rd: &RunnerDeployment,
    pool: &Pool,
    writer: &CacheWriter<'_>,
    server: Option<std::sync::Arc<Deployment>>,
) -> CacheOutcome {
    let names = writer.names();
    let spec = rd.spec.cache.clone().unwrap_or_default();
    let class = spec
        .storage
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref());
    let print = fingerprint(&[
        serde_json::to_string(&scheduler::cache_deployment(pool, names, None)).unwrap_or_default(),
        serde_json::to_string(&scheduler::cache_claim(pool, names, &spec.size(), class))
            .unwrap_or_default(),
    ]);
    let fresh = server
        .is_some()
        .then(|| ctx.caches.fresh(&pool.uid, print))
        .flatten();
    let runner_cache = match fresh {
        Some(cache) => cache,
        None => match writer.apply_managed(rd).await {
            Ok((cache, None)) => {
                ctx.caches
                    .remember(&pool.uid, print, &cache, CacheMode::Managed);
                cache
            }
            Ok((cache, Some(late))) => return CacheOutcome::not_ready(Some(cache), &late),
            Err(error) => return CacheOutcome::not_ready(None, &error),
        },
    };
    let available = server
        .as_ref()
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
        >= 1;
    if available {
        return CacheOutcome {
            runner_cache: Some(runner_cache),
            ready: true,
            reason: "ServerAvailable",
            message: format!(
                "the cache server {} is available; runners use it",
                names.server()
            ),
            problem: false,
        };
    }
    let (problem, detail) = diagnose(ctx, pool).await;
    CacheOutcome {
        runner_cache: Some(runner_cache),
        ready: false,
        reason: if problem {
            "ServerFailing"
        } else {
            "ServerStarting"
        },
        message: format!(
            "the cache server {} is not available yet ({detail}); runners start meanwhile and their cache lookups miss",
            names.server()
        ),
        problem,
    }
}

/// Why the server's pod is not serving: whether it needs someone, and what its pod says.
async fn diagnose(ctx: &Context, pool: &Pool) -> (bool, String) {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pool.namespace);
    let selector = format!(
        "{},{}={}",
        scheduler::labels::cache_servers_selector(),
        scheduler::labels::RUNNER_DEPLOYMENT_UID,
        pool.uid
    );
    let pods = {
        let _permit = ctx.requests.acquire().await.ok();
        api.list(&ListParams::default().labels(&selector)).await
    };
    let pods = match pods {
        Ok(pods) => pods.items,
        Err(error) => return (false, format!("its pods could not be listed: {error}")),
    };
    let Some(pod) = pods.first() else {
        return (false, "no pod yet".to_owned());
    };
    super::cache_pod::diagnose_pod(&pod.name_any(), &pod.status.clone().unwrap_or_default())
}

/// Writes `CacheReady`, the metric, and an event when the condition changed to a problem
/// (or back to ready).
pub async fn record(
    ctx: &Context,
    rd: &RunnerDeployment,
    outcome: &CacheOutcome,
    status: &mut api::RunnerDeploymentStatus,
    now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) {
    let previous = status
        .conditions
        .iter()
        .find(|c| c.type_ == CACHE_READY)
        .map(|c| (c.status == "True", c.reason.clone(), c.message.clone()));
    scheduler::set_condition(
        &mut status.conditions,
        scheduler::condition(
            CACHE_READY,
            outcome.ready,
            outcome.reason,
            outcome.message.clone(),
            rd.metadata.generation,
            now.clone(),
        ),
        now.clone(),
    );
    let labels = crate::metrics::PoolLabels {
        namespace: rd.namespace().unwrap_or_default(),
        pool: rd.name_any(),
    };
    ctx.metrics
        .reconcile
        .cache_ready
        .get_or_create(&labels)
        .set(i64::from(outcome.ready));
    let changed = previous.as_ref().is_none_or(|(ready, reason, message)| {
        *ready != outcome.ready || reason != outcome.reason || *message != outcome.message
    });
    if !changed {
        return;
    }
    if outcome.problem {
        let reason = format!("Cache{}", outcome.reason);
        publish(
            ctx,
            rd,
            EventType::Warning,
            &reason,
            "Cache",
            &outcome.message,
        )
        .await;
    } else if outcome.ready && previous.is_some_and(|(ready, _, _)| !ready) {
        publish(
            ctx,
            rd,
            EventType::Normal,
            "CacheReady",
            "Cache",
            &outcome.message,
        )
        .await;
    }
}
