//! The scheduling latency metric: from the poll that first lists a waiting job to its Job.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use kube::ResourceExt as _;

use api::RunnerDeployment;

use super::Context;

/// When each waiting job (id, attempt) of one pool was first seen.
pub type FirstSeen = HashMap<(i64, i64), Instant>;

/// Remembers when each waiting job attempt of the pool (as the plan found them) was first
/// seen; forgets the pool's jobs that stopped waiting without a Job of ours.
pub fn note_first_seen(ctx: &Context, rd: &RunnerDeployment, waiting: &[(i64, i64)]) {
    let uid = rd.uid().unwrap_or_default();
    let now = Instant::now();
    let mut seen = ctx.first_seen.lock().unwrap_or_else(|p| p.into_inner());
    let pool = seen.entry(uid).or_default();
    // A set, as this runs every reconcile of every pool over every waiting job.
    let still_waiting: HashSet<&(i64, i64)> = waiting.iter().collect();
    pool.retain(|key, _| still_waiting.contains(key));
    for &key in waiting {
        pool.entry(key).or_insert(now);
    }
}

/// Observes the latency of the Job just created for job `id`, attempt `attempt`.
pub fn observe_latency(ctx: &Context, rd: &RunnerDeployment, id: i64, attempt: i64) {
    let uid = rd.uid().unwrap_or_default();
    let first = ctx
        .first_seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_mut(&uid)
        .and_then(|pool| pool.remove(&(id, attempt)));
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
        .remove(pool_uid);
}
