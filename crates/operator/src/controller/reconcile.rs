//! One reconcile of a pool: the finalizer around the apply and cleanup paths, the outcome
//! counted, and how soon a failing pool is tried again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt as _;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Error as FinalizerError, Event as FinalizerEvent, finalizer};

use api::RunnerDeployment;

use super::{Context, FINALIZER, apply, backoff, finalize};
use crate::error::{Error, Result};

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
    let pool = rd.clone();
    let result = finalizer(&api, FINALIZER, rd, |event| async {
        match event {
            FinalizerEvent::Apply(rd) => apply::apply(rd, ctx.clone()).await,
            FinalizerEvent::Cleanup(rd) => finalize::cleanup(rd, ctx.clone()).await,
        }
    })
    .await;
    let result = match result {
        Ok(action) => {
            backoff::reset_backoff(&ctx, &pool);
            Ok(action)
        }
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
    let failures = backoff::count_failure(&ctx, &rd);
    let interval = rd.spec.poll_interval().unwrap_or(Duration::from_secs(30));
    let delay = backoff::backoff(failures, interval, error.retry_class());
    tracing::warn!(reason = error.reason(), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}
