//! The shared cache's decisions for one reconcile, from what the operator observed: which
//! of the pool's cache objects it applies or removes ([`cache_steps`]), what `CacheReady`
//! says ([`CacheReport`]), and when that change is worth an event ([`cache_event`]). The
//! operator observes, calls these, and writes; it decides nothing about the cache itself.
//! `server_pod` reads why a server's pod is not serving from its status.

mod server_pod;

use std::time::Duration;

use api::CacheMode;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;

/// An unchanged cache is applied again after this long, so that a deleted or edited object
/// comes back without a watch on each kind.
pub const CACHE_REAPPLY_AFTER: Duration = Duration::from_secs(600);

/// What this process last applied for the pool's cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastApplied {
    /// The mode it was applied for.
    pub mode: CacheMode,
    /// Whether the objects it applied are the ones the spec asks for now.
    pub unchanged: bool,
    /// How long ago.
    pub age: Duration,
}

/// What the operator observed of a pool's cache before acting.
#[derive(Debug, Clone, Copy)]
pub struct CacheObservation<'a> {
    /// `spec.cache.mode`, as it takes effect.
    pub mode: CacheMode,
    /// Whether `spec.cache.external` is set.
    pub external_set: bool,
    /// The pool's cache server Deployment, as the watch sees it.
    pub server: Option<&'a Deployment>,
    /// What this process last applied, if anything.
    pub last_applied: Option<LastApplied>,
}

/// What the reconcile writes for the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSteps {
    /// Remove the managed server's objects (and its config unless the mode still uses it).
    pub remove_managed: bool,
    /// Then apply this.
    pub apply: CacheApply,
}

/// Which objects a reconcile applies for the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheApply {
    /// None: no shared cache (`Disabled`, or `External` without `external`).
    Nothing,
    /// What was applied last is unchanged and recent: no write, pods mount it as before.
    Unchanged,
    /// The managed server's Secret, claim, Service, config and Deployment.
    Managed,
    /// The runner config pointing at the external server (its Secret checked first).
    External,
}

/// Decides the cache's writes for one reconcile.
pub fn cache_steps(observed: &CacheObservation<'_>) -> CacheSteps {
    let mode = observed.mode;
    let applied_other = observed
        .last_applied
        .is_some_and(|last| last.mode != CacheMode::Disabled && last.mode != mode);
    let remove_managed = mode != CacheMode::Managed && (observed.server.is_some() || applied_other);
    let fresh = observed
        .last_applied
        .is_some_and(|last| last.mode == mode && last.unchanged && last.age < CACHE_REAPPLY_AFTER);
    let apply = match mode {
        CacheMode::Managed if fresh && observed.server.is_some() => CacheApply::Unchanged,
        CacheMode::Managed => CacheApply::Managed,
        CacheMode::External if !observed.external_set => CacheApply::Nothing,
        CacheMode::External if fresh => CacheApply::Unchanged,
        CacheMode::External => CacheApply::External,
        CacheMode::Disabled => CacheApply::Nothing,
    };
    CacheSteps {
        remove_managed,
        apply,
    }
}

/// Whether the server Deployment has an available replica.
pub fn server_available(server: Option<&Deployment>) -> bool {
    server
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
        >= 1
}

/// What `CacheReady` says, and whether a not-ready state needs someone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheReport {
    /// `CacheReady`.
    pub ready: bool,
    /// Its reason.
    pub reason: &'static str,
    /// Its message (never a secret).
    pub message: String,
    /// Whether a not-ready state needs someone (an event when it starts).
    pub problem: bool,
}

impl CacheReport {
    /// No shared cache.
    pub fn disabled() -> Self {
        Self {
            ready: false,
            reason: "Disabled",
            message: "spec.cache.mode is Disabled (the default with a runnerImage other than the default): each runner keeps its own cache, lost with its pod".to_owned(),
            problem: false,
        }
    }

    /// Runners use the external server at `url`.
    pub fn external(url: &str) -> Self {
        Self {
            ready: true,
            reason: "External",
            message: format!("runners use the cache server at {url}"),
            problem: false,
        }
    }

    /// A write or check failed with `reason` (a condition reason) and `message`.
    pub fn failed(reason: &'static str, message: String) -> Self {
        Self {
            ready: false,
            reason,
            message,
            problem: true,
        }
    }

    /// The managed server `name`, applied: available, starting, or failing as its pod says
    /// (`pod` is looked at only when the server is not available).
    pub fn managed(name: &str, server: Option<&Deployment>, pod: Option<&Pod>) -> Self {
        if server_available(server) {
            return Self {
                ready: true,
                reason: "ServerAvailable",
                message: format!("the cache server {name} is available; runners use it"),
                problem: false,
            };
        }
        let (problem, detail) = diagnose(pod);
        Self {
            ready: false,
            reason: if problem {
                "ServerFailing"
            } else {
                "ServerStarting"
            },
            message: format!(
                "the cache server {name} is not available yet ({detail}); runners start meanwhile and their cache lookups miss"
            ),
            problem,
        }
    }
}

/// Why the server's pod is not serving: whether it needs someone, and what its pod says.
pub fn diagnose(pod: Option<&Pod>) -> (bool, String) {
    match pod {
        Some(pod) => server_pod::diagnose_pod(
            pod.metadata.name.as_deref().unwrap_or_default(),
            &pod.status.clone().unwrap_or_default(),
        ),
        None => (false, "no pod yet".to_owned()),
    }
}

/// An event for a change of `CacheReady`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEvent {
    /// A Warning (a problem started) or Normal (ready again).
    pub warning: bool,
    /// The event reason: `Cache<Reason>` for a problem, `CacheReady` when ready again.
    pub reason: String,
}

/// The event for going from `previous` (ready, reason, message) to `report`: only when the
/// condition changed, and only to a problem or back to ready.
pub fn cache_event(
    previous: Option<(bool, &str, &str)>,
    report: &CacheReport,
) -> Option<CacheEvent> {
    let changed = previous.is_none_or(|(ready, reason, message)| {
        ready != report.ready || reason != report.reason || message != report.message
    });
    if !changed {
        return None;
    }
    if report.problem {
        return Some(CacheEvent {
            warning: true,
            reason: format!("Cache{}", report.reason),
        });
    }
    let recovered = report.ready && previous.is_some_and(|(ready, _, _)| !ready);
    recovered.then(|| CacheEvent {
        warning: false,
        reason: "CacheReady".to_owned(),
    })
}
