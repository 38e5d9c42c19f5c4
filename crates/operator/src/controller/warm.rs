//! What a reconcile reports of a pool's warm runners: the idle and busy gauges, and one
//! event when they start or stop being kept.

use kube::runtime::events::EventType;

use api::RunnerDeployment;
use scheduler::Plan;

use super::Context;
use super::events::publish;
use crate::metrics::{PoolLabels, WarmLabels};

/// Sets the pool's warm runner gauges from the plan's status, and publishes the window
/// change, if any.
pub async fn report(ctx: &Context, rd: &RunnerDeployment, plan: &Plan, pool: &PoolLabels) {
    let warm = plan.status.warm_runners.as_ref();
    let gauges = &ctx.metrics.reconcile.warm_runners;
    for (state, count) in [
        ("idle", warm.map_or(0, |w| w.idle)),
        ("busy", warm.map_or(0, |w| w.busy)),
    ] {
        let labels = WarmLabels {
            namespace: pool.namespace.clone(),
            pool: pool.pool.clone(),
            state,
        };
        if warm.is_some() || gauges.get(&labels).is_some() {
            gauges.get_or_create(&labels).set(i64::from(count));
        }
    }
    if let Some((reason, message)) = &plan.warm_window {
        let action = "KeepWarmRunners";
        publish(ctx, rd, EventType::Normal, reason.as_str(), action, message).await;
    }
}
