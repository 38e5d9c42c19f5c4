//! One reconcile of a pool: the finalizer around the apply and cleanup paths, the outcome
//! counted, and how soon a failing pool is tried again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Error as FinalizerError, Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource as _, ResourceExt as _};

use api::RunnerDeployment;

use super::{Context, FIELD_MANAGER, FINALIZER, apply, finalize};
use crate::error::{Error, Result, RetryClass};

/// Reconciles one pool: the finalizer around [`apply::apply`] and [`finalize::cleanup`].
#[tracing::instrument(skip_all, fields(pool = %rd.name_any(), namespace = rd.namespace().unwrap_or_default()))]
pub async fn reconcile(rd: Arc<RunnerDeployment>, ctx: Arc<Context>) -> Result<Action> {
    if !ctx.may_write() {
        // Becoming the leader reconciles every pool again.
        return Ok(Action::await_change());
    }
    let started = Instant::now();
    let namespace = rd.namespace().unwrap_or_default();
    let api: Api<RunnerDeployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, rd, |event| async {
        match event {
            FinalizerEvent::Apply(rd) => apply::apply(rd, ctx.clone()).await,
            FinalizerEvent::Cleanup(rd) => finalize::cleanup(rd, ctx.clone()).await,
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
pub fn error_policy(rd: Arc<RunnerDeployment>, error: &Error, ctx: Arc<Context>) -> Action {
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
