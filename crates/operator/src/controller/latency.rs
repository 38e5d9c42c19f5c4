//! The scheduling latency metric: from the poll that first lists a waiting job to its Job.

use std::time::Instant;

use kube::ResourceExt as _;

use api::RunnerDeployment;

use super::Context;

/// Remembers when each waiting job attempt of the pool (as the plan found them) was first
/// seen; forgets the pool's jobs that stopped waiting without a Job of ours.
pub fn note_first_seen(ctx: &Context, rd: &RunnerDeployment, waiting: &[(i64, i64)]) {
    let uid = rd.uid().unwrap_or_default();
    let now = Instant::now();
    let mut seen = ctx.first_seen.lock().unwrap_or_else(|p| p.into_inner());
    seen.retain(|(pool, id, attempt), _| pool != &uid || waiting.contains(&(*id, *attempt)));
    for &(id, attempt) in waiting {
        seen.entry((uid.clone(), id, attempt)).or_insert(now);
    }
}

/// Observes the latency of the Job just created for job `id`, attempt `attempt`.
pub fn observe_latency(ctx: &Context, rd: &RunnerDeployment, id: i64, attempt: i64) {
    let key = (rd.uid().unwrap_or_default(), id, attempt);
    let first = ctx
        .first_seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&key);
    if let Some(first) = first {
        ctx.metrics
            .reconcile
            .job_scheduling_latency
            .observe(first.elapsed().as_secs_f64());
    }
}

/// Forgets everything of a deleted pool.
pub fn forget_pool(ctx: &Context, pool_uid: &str) {
    ctx.first_seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|(pool, _, _), _| pool != pool_uid);
}
