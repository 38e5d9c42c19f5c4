//! The next status: which Jobs `scheduledJobs` lists once the plan is applied, how many are
//! active, and whether the pool is at capacity. Kept apart from the decisions so that the
//! status only reports them and never feeds back into them.

use std::collections::{BTreeMap, BTreeSet};

use api::{RunnerDeploymentStatus, ScheduledJob, condition_types};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::items::JobCreation;
use crate::pool::Pool;
use crate::status::{bound_scheduled_jobs, condition, reasons, set_condition};
use crate::view::{PoolView, holds_slot};

/// The live Jobs and the new ones, each with the `scheduledAt` of the previous status (or
/// its creation, or `now`), unbounded.
pub(crate) fn scheduled_jobs(
    view: &PoolView<'_>,
    deleted: &BTreeSet<&str>,
    created: &[JobCreation],
    previous: &[ScheduledJob],
    now: &Time,
) -> Vec<ScheduledJob> {
    let previous_at: BTreeMap<&str, &ScheduledJob> = previous
        .iter()
        .map(|s| (s.kubernetes_job_name.as_str(), s))
        .collect();
    let scheduled_at = |name: &str, created: Option<&Time>| {
        previous_at
            .get(name)
            .map(|s| s.scheduled_at.clone())
            .or_else(|| created.cloned())
            .unwrap_or_else(|| now.clone())
    };
    let mut scheduled: Vec<ScheduledJob> = view
        .owned
        .values()
        .filter(|j| holds_slot(j, deleted))
        .map(|j| ScheduledJob {
            forgejo_job_id: j.forgejo_job_id,
            attempt: (j.attempt > 0).then_some(j.attempt),
            kubernetes_job_name: j.name.clone(),
            scheduled_at: scheduled_at(&j.name, j.created_at.as_ref()),
        })
        .collect();
    scheduled.extend(created.iter().map(|c| ScheduledJob {
        forgejo_job_id: c.forgejo_job_id,
        attempt: (c.attempt > 0).then_some(c.attempt),
        kubernetes_job_name: c.name.clone(),
        scheduled_at: scheduled_at(&c.name, None),
    }));
    scheduled
}

/// The previous status with `observedGeneration`, `scheduledJobs` (bounded), `activeJobs`
/// and, when Forgejo answered, `AtCapacity` updated.
pub(crate) fn next_status(
    pool: &Pool,
    view: &PoolView<'_>,
    previous: RunnerDeploymentStatus,
    scheduled: Vec<ScheduledJob>,
    unscheduled: usize,
    now: &Time,
) -> RunnerDeploymentStatus {
    let active = scheduled.len();
    let mut status = previous;
    status.observed_generation = pool.generation;
    status.scheduled_jobs = bound_scheduled_jobs(scheduled);
    status.active_jobs = Some(i32::try_from(active).unwrap_or(i32::MAX));
    if view.forgejo.is_some() {
        let at_capacity = at_capacity(pool, unscheduled, active, now);
        set_condition(&mut status.conditions, at_capacity, now.clone());
    }
    status
}

/// The `AtCapacity` condition: true while waiting jobs have no Job for lack of room.
fn at_capacity(pool: &Pool, unscheduled: usize, active: usize, now: &Time) -> Condition {
    let max = pool.max_runners;
    if unscheduled > 0 {
        condition(
            condition_types::AT_CAPACITY,
            true,
            reasons::MAX_RUNNERS_REACHED,
            format!(
                "{unscheduled} waiting Forgejo job(s) have no runner yet: {active} of spec.maxRunners={max} runner Jobs are active"
            ),
            pool.generation,
            now.clone(),
        )
    } else {
        condition(
            condition_types::AT_CAPACITY,
            false,
            reasons::BELOW_MAX_RUNNERS,
            format!("{active} of spec.maxRunners={max} runner Jobs are active"),
            pool.generation,
            now.clone(),
        )
    }
}
