//! A pool's shared Actions cache in one reconcile: its objects made, kept or removed for
//! `spec.cache.mode`, what runner pods mount, and the `CacheReady` condition.
//!
//! The cache never holds a runner back: while it is not usable, runner pods are made
//! without it (each runner keeps its own cache, as without `spec.cache`), and a cache
//! server that is not up yet only makes `actions/cache` miss.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::sync::Mutex;
use std::time::Instant;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams};
use kube::runtime::events::EventType;

use api::condition_types::CACHE_READY;
use api::{CacheMode, RunnerDeployment};
use scheduler::{
    CacheApply, CacheNames, CacheObservation, CacheReport, LastApplied, Pool, RunnerCache,
};

use super::Context;
use super::cache_objects::{CacheError, CacheWriter};
use super::events::publish;

/// What one reconcile made of the pool's cache.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheOutcome {
    /// What runner pods mount; `None`: no shared cache for the pods made now.
    pub runner_cache: Option<RunnerCache>,
    /// `CacheReady`, as the scheduler words it.
    pub report: CacheReport,
}

impl CacheOutcome {
    fn from_report(runner_cache: Option<RunnerCache>, report: CacheReport) -> Self {
        Self {
            runner_cache,
            report,
        }
    }

    fn failed(runner_cache: Option<RunnerCache>, error: &CacheError) -> Self {
        Self::from_report(
            runner_cache,
            CacheReport::failed(error.reason(), error.to_string()),
        )
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
    /// What was last applied for the pool, compared with `fingerprint` of what it asks now.
    fn last(&self, uid: &str, fingerprint: u64) -> Option<LastApplied> {
        let map = self.0.lock().ok()?;
        map.get(uid).map(|a| LastApplied {
            mode: a.mode,
            unchanged: a.fingerprint == fingerprint,
            age: a.at.elapsed(),
        })
    }

    /// What the pool's runner pods mount, as last applied.
    fn runner_cache(&self, uid: &str) -> Option<RunnerCache> {
        let map = self.0.lock().ok()?;
        map.get(uid).map(|a| a.runner_cache.clone())
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

/// Makes, keeps or removes the pool's cache objects for its mode: observes, asks
/// [`scheduler::cache_steps`] what to write, writes it, and reports as the scheduler says.
pub async fn reconcile_cache(ctx: &Context, rd: &RunnerDeployment, pool: &Pool) -> CacheOutcome {
    let mode = rd.spec.cache_mode();
    let writer = CacheWriter::new(ctx, pool);
    let server = server_of(ctx, pool, writer.names());
    let external = rd.spec.cache.as_ref().and_then(|c| c.external.as_ref());
    let print = applied_fingerprint(rd, pool, writer.names(), mode);
    let steps = scheduler::cache_steps(&CacheObservation {
        mode,
        external_set: external.is_some(),
        server: server.as_deref(),
        last_applied: ctx.caches.last(&pool.uid, print),
    });
    if steps.remove_managed {
        match writer.remove(mode).await {
            Ok(removed) => {
                if mode == CacheMode::Disabled {
                    ctx.caches.forget(&pool.uid);
                }
                if removed > 0 {
                    let note = format!(
                        "spec.cache.mode is {}: removed {removed} object(s) of the managed cache server",
                        mode.as_str()
                    );
                    let (kind, reason) = (EventType::Normal, "CacheServerRemoved");
                    publish(ctx, rd, kind, reason, "Cache", &note).await;
                }
            }
            Err(error) => return CacheOutcome::failed(None, &error),
        }
    }
    let runner_cache = match steps.apply {
        CacheApply::Nothing => {
            return CacheOutcome::from_report(None, CacheReport::disabled());
        }
        CacheApply::Unchanged => ctx.caches.runner_cache(&pool.uid),
        CacheApply::Managed => match writer.apply_managed(rd).await {
            Ok((cache, None)) => Some(cache),
            Ok((cache, Some(late))) => return CacheOutcome::failed(Some(cache), &late),
            Err(error) => return CacheOutcome::failed(None, &error),
        },
        CacheApply::External => {
            let Some(external) = external else {
                return CacheOutcome::from_report(None, CacheReport::disabled());
            };
            match writer
                .apply_external(&external.url, &external.secret_ref)
                .await
            {
                Ok(cache) => Some(cache),
                Err(error) => return CacheOutcome::failed(None, &error),
            }
        }
    };
    let Some(runner_cache) = runner_cache else {
        // Applied by an earlier reconcile whose record is gone: apply again next time.
        ctx.caches.forget(&pool.uid);
        return CacheOutcome::from_report(None, CacheReport::disabled());
    };
    if steps.apply != CacheApply::Unchanged {
        ctx.caches.remember(&pool.uid, print, &runner_cache, mode);
    }
    let report = match (mode, external) {
        (CacheMode::External, Some(external)) => CacheReport::external(&external.url),
        _ => {
            let name = writer.names().server();
            let pod = if scheduler::server_available(server.as_deref()) {
                None
            } else {
                server_pod(ctx, pool).await
            };
            CacheReport::managed(name, server.as_deref(), pod.as_ref())
        }
    };
    CacheOutcome::from_report(Some(runner_cache), report)
}

/// What identifies the objects the spec asks for, to tell a change from a repeat.
fn applied_fingerprint(
    rd: &RunnerDeployment,
    pool: &Pool,
    names: &CacheNames,
    mode: CacheMode,
) -> u64 {
    let spec = rd.spec.cache.clone().unwrap_or_default();
    match (mode, spec.external.as_ref()) {
        (CacheMode::External, Some(external)) => fingerprint(&[
            external.url.clone(),
            external.secret_ref.name.clone(),
            external.secret_ref.key.clone(),
        ]),
        _ => {
            let class = spec
                .storage
                .as_ref()
                .and_then(|s| s.storage_class_name.as_deref());
            fingerprint(&[
                serde_json::to_string(&scheduler::cache_deployment(pool, names, None))
                    .unwrap_or_default(),
                serde_json::to_string(&scheduler::cache_claim(pool, names, &spec.size(), class))
                    .unwrap_or_default(),
            ])
        }
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

/// The first pod of the pool's cache server, for the diagnosis of a server that is not up.
async fn server_pod(ctx: &Context, pool: &Pool) -> Option<Pod> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pool.namespace);
    let selector = format!(
        "{},{}={}",
        scheduler::labels::cache_servers_selector(),
        scheduler::labels::RUNNER_DEPLOYMENT_UID,
        pool.uid
    );
    let listed = ctx
        .writer
        .read(api.list(&ListParams::default().labels(&selector)))
        .await;
    match listed {
        Ok(pods) => pods.items.into_iter().next(),
        Err(error) => {
            tracing::debug!(%error, "listing the cache server's pods failed");
            None
        }
    }
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
            outcome.report.ready,
            outcome.report.reason,
            outcome.report.message.clone(),
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
        .set(i64::from(outcome.report.ready));
    let previous = previous
        .as_ref()
        .map(|(ready, reason, message)| (*ready, reason.as_str(), message.as_str()));
    let Some(event) = scheduler::cache_event(previous, &outcome.report) else {
        return;
    };
    let type_ = if event.warning {
        EventType::Warning
    } else {
        EventType::Normal
    };
    publish(
        ctx,
        rd,
        type_,
        &event.reason,
        "Cache",
        &outcome.report.message,
    )
    .await;
}
