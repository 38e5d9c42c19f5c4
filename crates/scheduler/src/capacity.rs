//! Which waiting jobs get a runner Job now: the oldest first, within `maxRunners`.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::input::{ForgejoJob, RunnerPath};
use crate::items::{JobCreation, RunnerFor};
use crate::naming::RunnerJobName;
use crate::pod::{PodMode, pick_label, runner_job};
use crate::pool::Pool;
use crate::reason::Reason;
use crate::text::truncate;
use crate::view::{PoolView, holds_slot};

/// The Jobs to create, and how many waiting jobs stay without one for lack of room.
pub(crate) struct Capacity<'a> {
    /// The waiting jobs, oldest first.
    pub(crate) waiting: Vec<&'a ForgejoJob>,
    /// The Jobs to create.
    pub(crate) create_jobs: Vec<JobCreation>,
    /// Waiting jobs left without a Job because `maxRunners` Jobs are active.
    pub(crate) unscheduled: usize,
    /// Free slots left once the Jobs are created.
    pub(crate) free_slots: usize,
}

/// Fills the free slots (`maxRunners` minus the Jobs, warm runners' included, that hold
/// one once the `deleted` ones are gone) with the oldest waiting jobs that have no Job yet
/// and are not left to warm runners (`deferred`).
pub(crate) fn jobs_to_create<'a>(
    pool: &Arc<Pool>,
    view: &PoolView<'a>,
    deleted: &BTreeSet<&str>,
    path: RunnerPath,
    warm_live: usize,
    deferred: &BTreeSet<(i64, i64)>,
) -> Capacity<'a> {
    let waiting = view.waiting();
    let live = live_jobs(view, deleted) + warm_live;
    let mut slots = pool.max_runners.saturating_sub(live);
    let mut create_jobs = Vec::new();
    let mut unscheduled = 0;
    for job in &waiting {
        let Ok(name) = RunnerJobName::new(&pool.uid, job.id, job.attempt) else {
            continue;
        };
        if view.owned.contains_key(name.as_str())
            || deferred.contains(&(job.id, job.attempt_number()))
        {
            continue;
        }
        if slots == 0 {
            unscheduled += 1;
            continue;
        }
        // A job whose Job cannot be built is left waiting; the Job itself is built when
        // it is created (see `JobCreation::job`).
        if runner_job(pool, job, path).is_err() {
            continue;
        }
        let mode = pick_label(&pool.labels, &job.runs_on)
            .map(PodMode::for_label)
            .unwrap_or(PodMode::Host);
        slots -= 1;
        create_jobs.push(JobCreation {
            message: format!(
                "Forgejo job {} (attempt {}) {:?} waits on [{}]: creating Job {} ({} pod)",
                job.id,
                job.attempt_number(),
                truncate(&job.name, 200),
                job.runs_on.join(","),
                name,
                mode.as_str()
            ),
            name: name.into_string(),
            pool: Arc::clone(pool),
            runner: RunnerFor::Job((*job).clone()),
            path,
            forgejo_job_id: job.id,
            attempt: job.attempt_number(),
            mode,
            reason: Reason::JobWaiting,
        });
    }
    Capacity {
        waiting,
        create_jobs,
        unscheduled,
        free_slots: slots,
    }
}

/// How many of the pool's Jobs hold a slot once the `deleted` ones are gone.
fn live_jobs(view: &PoolView<'_>, deleted: &BTreeSet<&str>) -> usize {
    view.owned
        .values()
        .filter(|j| holds_slot(j, deleted))
        .count()
}
