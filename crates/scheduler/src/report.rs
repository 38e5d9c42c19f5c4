//! What a plan reports: the Jobs that ended since the last status, and the next status.

use std::collections::{BTreeMap, BTreeSet};

use api::{RunnerDeploymentStatus, ScheduledJob, condition_types};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::capacity::Capacity;
use crate::cleanup::truncate;
use crate::items::FinishedJob;
use crate::owned::JobState;
use crate::pool::Pool;
use crate::reason::Reason;
use crate::status::{bound_scheduled_jobs, condition, reasons, set_condition};
use crate::view::{PoolView, holds_slot};

/// The next status and what ended since the last one.
pub(crate) struct Report {
    /// The status to write.
    pub(crate) status: RunnerDeploymentStatus,
    /// Jobs that left the status on their own.
    pub(crate) finished: Vec<FinishedJob>,
    /// Runner Jobs active once the plan is applied.
    pub(crate) active: usize,
}

/// The live Jobs and the new ones in `scheduledJobs` (bounded), `activeJobs`, and, when
/// Forgejo answered, `AtCapacity`.
pub(crate) fn report(
    pool: &Pool,
    view: &PoolView<'_>,
    deleted: &BTreeSet<&str>,
    capacity: &Capacity<'_>,
    previous: RunnerDeploymentStatus,
    now: &Time,
) -> Report {
    let previous_at: BTreeMap<&str, &ScheduledJob> = previous
        .scheduled_jobs
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
    scheduled.extend(capacity.create_jobs.iter().map(|c| ScheduledJob {
        forgejo_job_id: c.forgejo_job_id,
        attempt: (c.attempt > 0).then_some(c.attempt),
        kubernetes_job_name: c.name.clone(),
        scheduled_at: scheduled_at(&c.name, None),
    }));
    let active = scheduled.len();
    let in_status: BTreeSet<&str> = scheduled
        .iter()
        .map(|s| s.kubernetes_job_name.as_str())
        .collect();
    let finished = finished_since(view, deleted, &in_status, &previous.scheduled_jobs);

    let mut status = previous;
    status.observed_generation = pool.generation;
    status.scheduled_jobs = bound_scheduled_jobs(scheduled);
    status.active_jobs = Some(i32::try_from(active).unwrap_or(i32::MAX));
    if view.forgejo.is_some() {
        let at_capacity = at_capacity(pool, capacity.unscheduled, active, now);
        set_condition(&mut status.conditions, at_capacity, now.clone());
    }
    Report {
        status,
        finished,
        active,
    }
}

/// The Jobs of the previous status that left it on their own (not deleted by this plan).
fn finished_since(
    view: &PoolView<'_>,
    deleted: &BTreeSet<&str>,
    in_status: &BTreeSet<&str>,
    previous: &[ScheduledJob],
) -> Vec<FinishedJob> {
    let mut finished = Vec::new();
    for entry in previous {
        let name = entry.kubernetes_job_name.as_str();
        if in_status.contains(name) || deleted.contains(name) {
            continue;
        }
        let id = entry.forgejo_job_id;
        let (reason, message) = match view.owned.get(name).map(|j| (&j.state, j.deleting)) {
            Some((JobState::Succeeded, _)) => (
                Reason::JobSucceeded,
                format!("Job {name} for Forgejo job {id} succeeded"),
            ),
            Some((JobState::Failed { reason, message }, _)) => (
                Reason::JobFailed,
                format!(
                    "Job {name} for Forgejo job {id} failed: {reason}: {}",
                    truncate(message, 512)
                ),
            ),
            Some((JobState::Active, true)) => (
                Reason::JobVanished,
                format!("Job {name} for Forgejo job {id} is being deleted"),
            ),
            Some((JobState::Active, false)) => continue,
            None => (
                Reason::JobVanished,
                format!("Job {name} for Forgejo job {id} is gone"),
            ),
        };
        finished.push(FinishedJob {
            name: name.to_owned(),
            forgejo_job_id: id,
            reason,
            message,
        });
    }
    finished
}

fn at_capacity(
    pool: &Pool,
    unscheduled: usize,
    active: usize,
    now: &Time,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
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
