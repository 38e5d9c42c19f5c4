//! Which runner Jobs need a credential Secret: the new ones, and live ones that lost theirs
//! before their runner started (a started runner already read its credentials).

use std::collections::BTreeSet;

use crate::input::{RunnerPath, RunnerRegistration};
use crate::items::{JobCreation, RegistrationDeletion, SecretRequest};
use crate::owned::OwnedJob;
use crate::pool::Pool;
use crate::reason::Reason;
use crate::view::{PoolView, holds_slot};

/// The Secret requests of a plan, for Jobs that lost theirs first.
pub(crate) fn secrets_to_create(
    pool: &Pool,
    view: &PoolView<'_>,
    deleted: &BTreeSet<&str>,
    created: &[JobCreation],
    path: RunnerPath,
) -> Vec<SecretRequest> {
    let lost =
        |j: &OwnedJob| holds_slot(j, deleted) && !j.secret_exists && j.runner_started_at.is_none();
    let request =
        |name: &str, id_attempt| SecretRequest::for_job(pool, view, name, id_attempt, path);
    let lost_secrets = view.owned.values().filter(|j| lost(j)).map(|job| {
        let message = format!("Job {} has no runner Secret: creating it", job.name);
        request(&job.name, (job.forgejo_job_id, job.attempt)).because(
            Reason::SecretMissing,
            Reason::CredentialsLost,
            message,
        )
    });
    let new_secrets = created.iter().map(|new| {
        let message = format!("creating the runner Secret of new Job {}", new.name);
        request(&new.name, (new.forgejo_job_id, new.attempt)).because(
            Reason::NewJob,
            Reason::RegistrationOrphaned,
            message,
        )
    });
    lost_secrets.chain(new_secrets).collect()
}

/// A request being built: who it is for, before why.
pub(crate) struct RequestFor<'v> {
    /// The Job, and Secret, name.
    job_name: String,
    /// The Forgejo job id.
    forgejo_job_id: i64,
    /// The Forgejo job attempt, 0 when unknown.
    attempt: i64,
    /// Which credentials the Secret holds.
    path: RunnerPath,
    /// The runner description to register.
    registration_description: String,
    /// The registrations already named after the Job.
    stale: Vec<&'v RunnerRegistration>,
}

impl SecretRequest {
    /// The request for Job `job_name` of Forgejo job `(id, attempt)`; registrations already
    /// named after it are stale (their token is lost).
    pub(crate) fn for_job<'v>(
        pool: &Pool,
        view: &PoolView<'v>,
        job_name: &str,
        (forgejo_job_id, attempt): (i64, i64),
        path: RunnerPath,
    ) -> RequestFor<'v> {
        RequestFor {
            job_name: job_name.to_owned(),
            forgejo_job_id,
            attempt,
            path,
            registration_description: format!(
                "one-shot runner of {}/{} for Forgejo job {forgejo_job_id}",
                pool.namespace, pool.name
            ),
            stale: view
                .registrations
                .get(job_name)
                .into_iter()
                .flatten()
                .copied()
                .collect(),
        }
    }
}

impl RequestFor<'_> {
    /// Completes the request: `reason` for it, `stale_reason` for its stale registrations.
    pub(crate) fn because(
        self,
        reason: Reason,
        stale_reason: Reason,
        message: String,
    ) -> SecretRequest {
        let job_name = self.job_name;
        let stale_registrations = self
            .stale
            .into_iter()
            .map(|r| {
                let why = format!(
                    "runner registration {} ({}) of Job {job_name} lost its token; a new one replaces it",
                    r.id, r.uuid
                );
                RegistrationDeletion::of(r, stale_reason, why)
            })
            .collect();
        SecretRequest {
            registration_name: job_name.clone(),
            job_name,
            forgejo_job_id: self.forgejo_job_id,
            attempt: self.attempt,
            path: self.path,
            registration_description: self.registration_description,
            stale_registrations,
            reason,
            message,
        }
    }
}
