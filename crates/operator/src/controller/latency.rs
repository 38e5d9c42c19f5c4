//! The scheduling latency metric: from the poll that first lists a waiting job to its Job.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt as _;

use api::RunnerDeployment;

use super::Context;
use crate::metrics::PathLabels;

/// When each waiting job (id, attempt) of one pool was first seen.
pub type FirstSeen = HashMap<(i64, i64), Instant>;

/// Remembers when each waiting job attempt of the pool (as the plan found them) was first
/// seen; forgets the pool's jobs that stopped waiting without a Job of ours. With warm
/// runners, such a job was most likely taken by one: its latency is observed on the warm
/// path (to this poll, so at most the poll's age too long).
pub fn note_first_seen(ctx: &Context, rd: &RunnerDeployment, waiting: &[(i64, i64)]) {
    let uid = rd.uid().unwrap_or_default();
    let now = Instant::now();
    let warm = rd.spec.warm_runners.is_some();
    let mut seen = ctx.first_seen.lock().unwrap_or_else(|p| p.into_inner());
    let pool = seen.entry(uid).or_default();
    // A set, as this runs every reconcile of every pool over every waiting job.
    let still_waiting: HashSet<&(i64, i64)> = waiting.iter().collect();
    let latency = &ctx.metrics.reconcile.job_scheduling_latency;
    pool.retain(|key, first| {
        let waits = still_waiting.contains(key);
        if !waits && warm {
            let path = PathLabels { path: "warm" };
            latency
                .get_or_create(&path)
                .observe(first.elapsed().as_secs_f64());
        }
        waits
    });
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
            .get_or_create(&PathLabels { path: "cold" })
            .observe(first.elapsed().as_secs_f64());
    }
}

/// When each waiting job of the pool was first seen, on the wall clock.
pub fn waiting_since(ctx: &Context, rd: &RunnerDeployment) -> Vec<((i64, i64), Time)> {
    let uid = rd.uid().unwrap_or_default();
    let seen = ctx.first_seen.lock().unwrap_or_else(|p| p.into_inner());
    seen.get(&uid)
        .map(|pool| {
            pool.iter()
                .map(|(key, at)| (*key, wall_clock(*at)))
                .collect()
        })
        .unwrap_or_default()
}

/// The wall-clock time of a monotonic instant in the past.
pub fn wall_clock(at: Instant) -> Time {
    let ago = SignedDuration::try_from(at.elapsed()).unwrap_or(SignedDuration::ZERO);
    let now = Timestamp::now();
    Time(now.checked_sub(ago).unwrap_or(now))
}

/// Forgets everything of a deleted pool.
pub fn forget_pool(ctx: &Context, pool_uid: &str) {
    ctx.first_seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(pool_uid);
}
