//! Events on pools, and the one place where a plan item is recorded: its metric, its log
//! line and its event.

use kube::Resource as _;
use kube::runtime::events::{Event, EventType};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use api::RunnerDeployment;
use scheduler::Reason;

use super::Context;
use crate::metrics::{ReasonLabels, ReconcileMetrics};

/// Records one plan item carried out: counts it under `reason` in `family` (if it is
/// counted) and publishes its event (a Warning for failures).
pub async fn record_item(
    ctx: &Context,
    rd: &RunnerDeployment,
    family: Option<&Family<ReasonLabels, Counter>>,
    reason: Reason,
    action: &str,
    message: &str,
) {
    if let Some(family) = family {
        ReconcileMetrics::count(family, reason.as_str());
    }
    let type_ = if reason.is_failure() {
        EventType::Warning
    } else {
        EventType::Normal
    };
    publish(ctx, rd, type_, reason.as_str(), action, message).await;
}

/// Publishes an event on the pool; events are best effort and never fail a reconcile.
pub async fn publish(
    ctx: &Context,
    rd: &RunnerDeployment,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
) {
    let note: String = note.chars().take(1000).collect();
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    let reference = rd.object_ref(&());
    match ctx
        .writer
        .write(ctx.recorder.publish(&event, &reference))
        .await
    {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "publishing an event failed"),
        Err(not_leader) => {
            tracing::debug!(%not_leader, reason = %event.reason, "event not published")
        }
    }
}
