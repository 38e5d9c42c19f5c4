//! What a plan asks for: the items the operator carries out, and the plan itself.

use std::sync::Arc;
use std::time::Duration;

use api::{RunnerDeploymentStatus, RunnerLabel};
use k8s_openapi::api::batch::v1::Job;

use crate::input::{ForgejoJob, RunnerPath};
use crate::naming::WarmRunnerName;
use crate::pod::{PodError, PodMode, runner_job, warm_runner_job};
use crate::pool::Pool;
use crate::reason::Reason;

/// A runner Job to create.
#[derive(Debug, Clone, PartialEq)]
pub struct JobCreation {
    /// The Job name.
    pub name: String,
    /// The pool, shared by the plan's creations: see [`JobCreation::job`].
    pub(crate) pool: Arc<Pool>,
    /// What its runner runs.
    pub(crate) runner: RunnerFor,
    /// How its runner gets credentials.
    pub(crate) path: RunnerPath,
    /// The Forgejo job id; 0 for a warm runner.
    pub forgejo_job_id: i64,
    /// The Forgejo job attempt, 0 when unknown.
    pub attempt: i64,
    /// How its pod runs steps.
    pub mode: PodMode,
    /// Why.
    pub reason: Reason,
    /// For people.
    pub message: String,
}

impl JobCreation {
    /// The complete `batch/v1` Job, built when it is about to be created: a plan of thousands
    /// of creations then holds none of them (each is tens of KiB). The plan built it once
    /// already, so this fails only if building is not deterministic.
    pub fn job(&self) -> Result<Job, PodError> {
        match &self.runner {
            RunnerFor::Job(job) => runner_job(&self.pool, job, self.path),
            RunnerFor::Warm {
                name,
                label,
                fetch_interval,
            } => Ok(warm_runner_job(
                &self.pool,
                name,
                label,
                *fetch_interval,
                self.path,
            )),
        }
    }

    /// Whether it is a warm runner's Job.
    pub fn is_warm(&self) -> bool {
        matches!(self.runner, RunnerFor::Warm { .. })
    }
}

/// What a new runner Job's runner runs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RunnerFor {
    /// This Forgejo job attempt.
    Job(ForgejoJob),
    /// The next job of `label`: a warm runner.
    Warm {
        /// Its name.
        name: WarmRunnerName,
        /// The label it serves.
        label: RunnerLabel,
        /// How often it asks for a job.
        fetch_interval: Duration,
    },
}

/// A runner Job that needs its credential Secret (created just now, or lost after a crash).
///
/// The operator first checks that the Secret really is missing (its cache may lag its own
/// writes): if it exists, it skips the request, `stale_registrations` included. Otherwise
/// it deletes `stale_registrations`, registers an ephemeral runner named
/// `registration_name` (v15) or fetches the registration token (legacy), and creates the
/// Secret with [`runner_secret`](crate::runner_secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRequest {
    /// The Job, and Secret, name.
    pub job_name: String,
    /// The Forgejo job id.
    pub forgejo_job_id: i64,
    /// The Forgejo job attempt, 0 when unknown.
    pub attempt: i64,
    /// Which credentials the Secret holds.
    pub path: RunnerPath,
    /// The runner name to register (v15): the Job name.
    pub registration_name: String,
    /// The runner description to register (v15).
    pub registration_description: String,
    /// Registrations with this name whose token is lost: delete them first.
    pub stale_registrations: Vec<RegistrationDeletion>,
    /// Why ([`Reason::NewJob`] or [`Reason::SecretMissing`]).
    pub reason: Reason,
    /// For people.
    pub message: String,
}

/// A runner Job, or its Secret (same name), to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    /// The object name.
    pub name: String,
    /// The Forgejo job id it was made for.
    pub forgejo_job_id: i64,
    /// The Forgejo job attempt, 0 when unknown.
    pub attempt: i64,
    /// Why.
    pub reason: Reason,
    /// For people.
    pub message: String,
}

/// A warm runner to retire. The operator reads each registration again first: if one is
/// `active` now (the runner took a job since the listing), nothing is deleted; else it
/// deletes the registrations, then the Job (its Secret goes with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmRetirement {
    /// Its registrations (none when it never registered, or on the legacy path).
    pub registrations: Vec<RegistrationDeletion>,
    /// Its Job.
    pub job: Deletion,
}

/// A Forgejo runner registration to delete (`DELETE …/actions/runners/{id}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationDeletion {
    /// The registration id.
    pub id: i64,
    /// The runner uuid.
    pub uuid: String,
    /// The runner name.
    pub name: String,
    /// Why.
    pub reason: Reason,
    /// For people.
    pub message: String,
}

/// A Job that left `status.scheduledJobs` since the last plan without being deleted by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedJob {
    /// The Job name.
    pub name: String,
    /// The Forgejo job id.
    pub forgejo_job_id: i64,
    /// How it ended: [`Reason::JobSucceeded`], [`Reason::JobFailed`] or [`Reason::JobVanished`].
    pub reason: Reason,
    /// For people.
    pub message: String,
}

/// Counts behind the plan, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlanSummary {
    /// Forgejo jobs of this pool waiting for a runner.
    pub waiting: usize,
    /// Runner Jobs active once the plan is applied.
    pub active: usize,
    /// `spec.maxRunners`.
    pub max_runners: usize,
    /// Waiting jobs left without a Job because `maxRunners` Jobs are active.
    pub unscheduled: usize,
}

/// What the operator should do, and the status to write.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Runner Jobs to create, oldest Forgejo job first.
    pub create_jobs: Vec<JobCreation>,
    /// Runner Secrets to create (after the Jobs), each after registering a runner.
    pub create_secrets: Vec<SecretRequest>,
    /// Runner Jobs to delete (propagation `Background`).
    pub delete_jobs: Vec<Deletion>,
    /// The live Jobs whose Forgejo job is listed as not waiting (taken or gone): the caller
    /// remembers when it first saw each and passes it back in
    /// [`PlanInput::not_waiting_since`](crate::PlanInput::not_waiting_since).
    pub not_waiting_jobs: Vec<String>,
    /// Warm runners to retire, each its registration then its Job.
    pub retire_warm_runners: Vec<WarmRetirement>,
    /// Runner Secrets to delete.
    pub delete_secrets: Vec<Deletion>,
    /// Runner registrations to delete.
    pub delete_registrations: Vec<RegistrationDeletion>,
    /// Jobs that ended since the last status, to report once.
    pub finished: Vec<FinishedJob>,
    /// Whether warm runners started or stopped being kept, to report once.
    pub warm_window: Option<(Reason, String)>,
    /// The next status: the previous one with `observedGeneration`, `scheduledJobs`,
    /// `activeJobs` and the `AtCapacity` condition updated.
    pub status: RunnerDeploymentStatus,
    /// Counts.
    pub summary: PlanSummary,
    /// The pool's waiting job attempts (id, attempt with 0 for unknown), oldest first.
    pub waiting_jobs: Vec<(i64, i64)>,
    /// When a grace period or deadline runs out, if sooner than never: plan again then.
    pub recheck_after: Option<Duration>,
}

impl Plan {
    /// Whether the plan asks the operator to change anything (besides the status).
    pub fn has_actions(&self) -> bool {
        !(self.create_jobs.is_empty()
            && self.create_secrets.is_empty()
            && self.delete_jobs.is_empty()
            && self.retire_warm_runners.is_empty()
            && self.delete_secrets.is_empty()
            && self.delete_registrations.is_empty())
    }
}
