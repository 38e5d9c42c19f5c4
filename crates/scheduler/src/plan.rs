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

use crate::cleanup::{self, JobContext};
use crate::input::PlanInput;
use crate::items::{Plan, PlanSummary};
use crate::pool::{PlanError, Pool};
use crate::view::{PoolView, holds_slot};
use crate::{capacity, credentials, report};

/// Decides everything for one pool at `now`. Pure: the same input gives the same plan.
///
/// The decisions, in order: which Jobs go ([`cleanup`](crate::cleanup)), which waiting jobs
/// get a Job ([`capacity`](crate::capacity)), which Jobs need credentials
/// ([`credentials`](crate::credentials)), which Secrets and registrations go, and the status
/// ([`report`](crate::report)).
pub fn plan(input: &PlanInput<'_>, now: Time) -> Result<Plan, PlanError> {
    let pool = Pool::from_resource(input.pool)?;
    let view = PoolView::new(&pool, input);
    let ctx = JobContext {
        path: input.runner_path,
        timeouts: input.timeouts,
        registrations: &view.registrations,
        now: &now,
    };
    let cleanup = cleanup::job_deletions(&view, &ctx);
    let deleted = &cleanup.deleted;
    let live = view
        .owned
        .values()
        .filter(|j| holds_slot(j, deleted))
        .count();
    let capacity = capacity::jobs_to_create(&pool, &view, input.runner_path, live);
    let create_secrets = credentials::secrets_to_create(
        &pool,
        &view,
        deleted,
        &capacity.create_jobs,
        input.runner_path,
    );
    let requested: BTreeSet<&str> = create_secrets.iter().map(|r| r.job_name.as_str()).collect();
    let delete_secrets = cleanup::secret_deletions(&view, deleted);
    let delete_registrations = cleanup::registration_deletions(&view, deleted, &requested);
    let previous = input.pool.status.clone().unwrap_or_default();
    let report = report::report(&pool, &view, deleted, &capacity, previous, &now);

    let recheck_after = cleanup.recheck_at.map(|at| {
        let wait = at.duration_since(now.0);
        Duration::try_from(wait)
            .unwrap_or(Duration::ZERO)
            .max(Duration::from_secs(1))
    });
    Ok(Plan {
        summary: PlanSummary {
            waiting: capacity.waiting.len(),
            active: report.active,
            max_runners: pool.max_runners,
            unscheduled: capacity.unscheduled,
        },
        waiting_jobs: capacity
            .waiting
            .iter()
            .map(|job| (job.id, job.attempt_number()))
            .collect(),
        create_jobs: capacity.create_jobs,
        create_secrets,
        delete_jobs: cleanup.delete_jobs,
        delete_secrets,
        delete_registrations,
        finished: report.finished,
        status: report.status,
        recheck_after,
    })
}
