//! The entry point: [`plan`] turns what the operator observed into what it should do.
//!
//! ```text
//! Forgejo jobs ─┐
//! owned Jobs ───┼─> plan(input, now) ─> Plan { create_jobs, create_secrets, delete_*,
//! registrations ┘                              finished, status, recheck_after }
//! ```
//!
//! The operator applies a plan in this order: delete registrations, delete Jobs, delete
//! Secrets, create Jobs, then for each [`SecretRequest`] register a runner (v15) and create
//! the Secret, then write the status and publish one event per item. Applying a plan and
//! planning again from the result asks for nothing new.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::cleanup::{self, JobContext, earliest};
use crate::input::{ForgejoJob, PlanInput};
use crate::items::{Plan, PlanSummary, SecretRequest};
use crate::naming::RunnerJobName;
use crate::pool::{PlanError, Pool};
use crate::view::PoolView;
use crate::{capacity, credentials, finished, report, warm};

/// Decides everything for one pool at `now`. Pure: the same input gives the same plan.
///
/// The decisions, in order: which Jobs go (`cleanup`), where the warm runners stand and
/// which waiting jobs are left to them (`warm`), which waiting jobs get a Job within
/// `maxRunners` (`capacity`), which warm runners start or retire (`warm`), which Jobs need credentials (`credentials`), which Secrets and
/// registrations go (`cleanup`), which Jobs ended (`finished`), and the status (`report`).
pub fn plan(input: &PlanInput<'_>, now: Time) -> Result<Plan, PlanError> {
    let mut pool = Pool::from_resource(input.pool)?;
    pool.cache = input.cache.cloned();
    let pool = std::sync::Arc::new(pool);
    let view = PoolView::new(&pool, input);
    let path = input.runner_path;
    let cleanup = cleanup::job_deletions(&view, &JobContext::new(input, &view, &now));
    let deleted = &cleanup.deleted;
    let warm_view = warm::observe(&pool, input, &view, &now);
    let waiting = view.waiting();
    let owned_name = |job: &ForgejoJob| {
        RunnerJobName::new(&pool.uid, job.id, job.attempt)
            .is_ok_and(|name| view.owned.contains_key(name.as_str()))
    };
    let deferrals = warm::deferrals(&pool, &warm_view, input, &waiting, owned_name, &now);
    let warm_live = warm_view.live_count();
    let capacity =
        capacity::jobs_to_create(&pool, &view, deleted, path, warm_live, &deferrals.jobs);
    let warm = warm::decide(
        &warm_view,
        &warm::WarmContext {
            pool: &pool,
            view: &view,
            path,
            start_deadline: input.timeouts.image_pull_deadline,
            free_slots: capacity.free_slots,
            now: &now,
        },
    );
    let created = &capacity.create_jobs;
    let create_secrets = credentials::secrets_to_create(&pool, &view, deleted, created, path);
    let delete_secrets = cleanup::secret_deletions(&view, deleted);
    let requested = requested(&create_secrets);
    let mut delete_registrations = cleanup::registration_deletions(&view, deleted, &requested);
    let previous = input.pool.status.clone().unwrap_or_default();
    let (warm_status, warm_window) = warm::report(&warm_view, &warm, &pool, &previous);
    let scheduled = report::scheduled_jobs(&view, deleted, created, &previous.scheduled_jobs, &now);
    let finished = finished::finished_since(&view, deleted, &scheduled, &previous.scheduled_jobs);
    let active = scheduled.len();
    let unscheduled = capacity.unscheduled;
    let mut status = report::next_status(&pool, &view, previous, scheduled, unscheduled, &now);
    status.warm_runners = warm_status;
    if view.forgejo.is_some() {
        status.waiting_jobs = Some(i32::try_from(capacity.waiting.len()).unwrap_or(i32::MAX));
    }
    let mut create_jobs = capacity.create_jobs;
    create_jobs.extend(warm.create_jobs);
    let mut create_secrets = create_secrets;
    create_secrets.extend(warm.create_secrets);
    delete_registrations.extend(warm.delete_registrations);
    let recheck_at = earliest(
        cleanup.recheck_at,
        earliest(deferrals.recheck_at, warm.recheck_at),
    );
    Ok(Plan {
        summary: PlanSummary {
            waiting: capacity.waiting.len(),
            active,
            max_runners: pool.max_runners,
            unscheduled,
        },
        waiting_jobs: attempts(&capacity.waiting),
        create_jobs,
        create_secrets,
        delete_jobs: cleanup.delete_jobs,
        not_waiting_jobs: cleanup.not_waiting,
        retire_warm_runners: warm.retire,
        delete_secrets,
        delete_registrations,
        finished,
        warm_window,
        status,
        recheck_after: recheck_after(recheck_at, &now),
    })
}

/// The Jobs whose Secret is requested: their request deletes their stale registrations.
fn requested(requests: &[SecretRequest]) -> BTreeSet<&str> {
    requests.iter().map(|r| r.job_name.as_str()).collect()
}

/// The attempts of `jobs`: (id, attempt with 0 for unknown).
fn attempts(jobs: &[&ForgejoJob]) -> Vec<(i64, i64)> {
    jobs.iter()
        .map(|job| (job.id, job.attempt_number()))
        .collect()
}

/// How long until `at`, at least a second (plan again then); `None` for never.
fn recheck_after(at: Option<Timestamp>, now: &Time) -> Option<Duration> {
    at.map(|at| {
        let wait = at.duration_since(now.0);
        Duration::try_from(wait)
            .unwrap_or(Duration::ZERO)
            .max(Duration::from_secs(1))
    })
}
