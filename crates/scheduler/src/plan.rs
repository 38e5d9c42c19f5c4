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

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use api::{RunnerDeploymentStatus, ScheduledJob, condition_types};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::cleanup::{ForgejoState, JobContext, JobDecision, decide_job, earliest, truncate};
use crate::input::{ForgejoJob, PlanInput, RunnerPath, RunnerRegistration};
use crate::naming::{RunnerJobName, parse_job_name, pool_hash};
use crate::owned::{JobState, OwnedJob};
use crate::pod::{PodMode, pick_label, runner_job};
use crate::pool::{PlanError, Pool};
use crate::reason::Reason;
use crate::status::{bound_scheduled_jobs, condition, reasons, set_condition};

/// A runner Job to create.
#[derive(Debug, Clone, PartialEq)]
pub struct JobCreation {
    /// The Job name.
    pub name: String,
    /// The complete `batch/v1` Job.
    pub job: Job,
    /// The Forgejo job id.
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
    /// Runner Secrets to delete.
    pub delete_secrets: Vec<Deletion>,
    /// Runner registrations to delete.
    pub delete_registrations: Vec<RegistrationDeletion>,
    /// Jobs that ended since the last status, to report once.
    pub finished: Vec<FinishedJob>,
    /// The next status: the previous one with `observedGeneration`, `scheduledJobs`,
    /// `activeJobs` and the `AtCapacity` condition updated.
    pub status: RunnerDeploymentStatus,
    /// Counts.
    pub summary: PlanSummary,
    /// When a grace period or deadline runs out, if sooner than never: plan again then.
    pub recheck_after: Option<Duration>,
}

impl Plan {
    /// Whether the plan asks the operator to change anything (besides the status).
    pub fn has_actions(&self) -> bool {
        !(self.create_jobs.is_empty()
            && self.create_secrets.is_empty()
            && self.delete_jobs.is_empty()
            && self.delete_secrets.is_empty()
            && self.delete_registrations.is_empty())
    }
}

/// A Forgejo job attempt: (id, attempt with 0 for unknown).
type JobKey = (i64, i64);

/// Decides everything for one pool at `now`. Pure: the same input gives the same plan.
pub fn plan(input: &PlanInput<'_>, now: Time) -> Result<Plan, PlanError> {
    let pool = Pool::from_resource(input.pool)?;
    let our_hash = pool_hash(&pool.uid);
    let previous = input.pool.status.clone().unwrap_or_default();

    // The pool's Forgejo jobs by attempt; a waiting listing wins over another of the same key.
    let forgejo: Option<BTreeMap<JobKey, &ForgejoJob>> = input.forgejo_jobs.map(|jobs| {
        let mut map: BTreeMap<JobKey, &ForgejoJob> = BTreeMap::new();
        for job in jobs {
            if job.id <= 0 || job.attempt_number() < 0 || !pool.serves(&job.runs_on) {
                continue;
            }
            let key = (job.id, job.attempt_number());
            if !map.get(&key).is_some_and(|known| known.is_waiting()) {
                map.insert(key, job);
            }
        }
        map
    });
    let forgejo_state = |key: JobKey| match &forgejo {
        None => ForgejoState::Unknown,
        Some(map) => match map.get(&key) {
            Some(job) if job.is_waiting() => ForgejoState::Waiting,
            Some(_) => ForgejoState::Taken,
            None => ForgejoState::Absent,
        },
    };

    // This pool's Jobs by name (a Job of another pool or not named by us is not ours).
    let mut owned: BTreeMap<&str, &OwnedJob> = BTreeMap::new();
    for job in input.owned_jobs {
        if parse_job_name(&job.name).is_some_and(|p| p.pool_hash == our_hash) {
            owned.entry(job.name.as_str()).or_insert(job);
        }
    }
    let mut registrations: BTreeMap<&str, Vec<&RunnerRegistration>> = BTreeMap::new();
    for registration in input.registrations {
        if parse_job_name(&registration.name).is_some_and(|p| p.pool_hash == our_hash) {
            registrations
                .entry(registration.name.as_str())
                .or_default()
                .push(registration);
        }
    }

    // Cleanup of existing Jobs.
    let ctx = JobContext {
        path: input.runner_path,
        timeouts: input.timeouts,
        registrations: &registrations,
        now: &now,
    };
    let mut recheck_at: Option<Timestamp> = None;
    let mut delete_jobs = Vec::new();
    let mut deleted: BTreeSet<&str> = BTreeSet::new();
    for job in owned.values() {
        match decide_job(job, forgejo_state((job.forgejo_job_id, job.attempt)), &ctx) {
            JobDecision::Keep { recheck_at: at } => recheck_at = earliest(recheck_at, at),
            JobDecision::Delete { reason, message } => {
                deleted.insert(job.name.as_str());
                delete_jobs.push(Deletion {
                    name: job.name.clone(),
                    forgejo_job_id: job.forgejo_job_id,
                    attempt: job.attempt,
                    reason,
                    message,
                });
            }
        }
    }
    let is_live = |job: &OwnedJob| job.is_live() && !deleted.contains(job.name.as_str());

    // Capacity: the oldest waiting jobs first, within maxRunners.
    let live_count = owned.values().filter(|j| is_live(j)).count();
    let mut slots = pool.max_runners.saturating_sub(live_count);
    let mut waiting: Vec<&ForgejoJob> = forgejo
        .iter()
        .flat_map(|map| map.values())
        .filter(|job| job.is_waiting())
        .copied()
        .collect();
    waiting.sort_by_key(|job| (job.id, job.attempt_number()));
    let mut create_jobs = Vec::new();
    let mut unscheduled = 0;
    for job in &waiting {
        let Ok(name) = RunnerJobName::new(&pool.uid, job.id, job.attempt) else {
            continue;
        };
        if owned.contains_key(name.as_str()) {
            continue;
        }
        if slots == 0 {
            unscheduled += 1;
            continue;
        }
        let Ok(built) = runner_job(&pool, job, input.runner_path) else {
            continue;
        };
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
            job: built,
            forgejo_job_id: job.id,
            attempt: job.attempt_number(),
            mode,
            reason: Reason::JobWaiting,
        });
    }

    // Secrets: for the new Jobs, and for live Jobs that lost theirs.
    let description = |id: i64| {
        format!(
            "one-shot runner of {}/{} for Forgejo job {id}",
            pool.namespace, pool.name
        )
    };
    let stale = |name: &str, reason: Reason| -> Vec<RegistrationDeletion> {
        registrations
            .get(name)
            .into_iter()
            .flatten()
            .map(|r| RegistrationDeletion {
                id: r.id,
                uuid: r.uuid.clone(),
                name: r.name.clone(),
                reason,
                message: format!(
                    "runner registration {} ({}) of Job {name} lost its token; a new one replaces it",
                    r.id, r.uuid
                ),
            })
            .collect()
    };
    // A runner that started already read its credentials: a new Secret would not reach it.
    let mut create_secrets: Vec<SecretRequest> = Vec::new();
    let lost = |j: &OwnedJob| is_live(j) && !j.secret_exists && j.runner_started_at.is_none();
    for job in owned.values().filter(|j| lost(j)) {
        create_secrets.push(SecretRequest {
            job_name: job.name.clone(),
            forgejo_job_id: job.forgejo_job_id,
            attempt: job.attempt,
            path: input.runner_path,
            registration_name: job.name.clone(),
            registration_description: description(job.forgejo_job_id),
            stale_registrations: stale(&job.name, Reason::CredentialsLost),
            reason: Reason::SecretMissing,
            message: format!("Job {} has no runner Secret: creating it", job.name),
        });
    }
    for created in &create_jobs {
        create_secrets.push(SecretRequest {
            job_name: created.name.clone(),
            forgejo_job_id: created.forgejo_job_id,
            attempt: created.attempt,
            path: input.runner_path,
            registration_name: created.name.clone(),
            registration_description: description(created.forgejo_job_id),
            stale_registrations: stale(&created.name, Reason::RegistrationOrphaned),
            reason: Reason::NewJob,
            message: format!("creating the runner Secret of new Job {}", created.name),
        });
    }
    let requested: BTreeSet<&str> = create_secrets.iter().map(|r| r.job_name.as_str()).collect();

    // Secrets to delete: of Jobs deleted now or being deleted, and of finished Jobs.
    let mut delete_secrets = Vec::new();
    for job in owned.values().filter(|j| j.secret_exists) {
        let (reason, message) = if deleted.contains(job.name.as_str()) || job.deleting {
            (
                Reason::JobDeleted,
                format!("Job {} is deleted: deleting its runner Secret", job.name),
            )
        } else if job.state.is_finished() {
            (
                Reason::JobFinished,
                format!("Job {} finished: deleting its runner Secret", job.name),
            )
        } else {
            continue;
        };
        delete_secrets.push(Deletion {
            name: job.name.clone(),
            forgejo_job_id: job.forgejo_job_id,
            attempt: job.attempt,
            reason,
            message,
        });
    }

    // Registrations no live Job can use.
    let mut delete_registrations = Vec::new();
    for (name, regs) in &registrations {
        if requested.contains(name) {
            continue;
        }
        let verdict: Option<(Reason, String)> = match owned.get(name) {
            Some(job) if is_live(job) => {
                for r in regs {
                    if job.runner_uuid.as_ref().is_some_and(|uuid| uuid != &r.uuid) {
                        delete_registrations.push(RegistrationDeletion {
                            id: r.id,
                            uuid: r.uuid.clone(),
                            name: r.name.clone(),
                            reason: Reason::RegistrationSuperseded,
                            message: format!(
                                "runner registration {} ({}) of Job {name} was replaced by another one",
                                r.id, r.uuid
                            ),
                        });
                    }
                }
                None
            }
            Some(job) if job.state.is_finished() && !job.deleting && !deleted.contains(name) => {
                Some((Reason::JobFinished, format!("Job {name} finished")))
            }
            Some(_) => Some((Reason::JobDeleted, format!("Job {name} is deleted"))),
            None => {
                let key = parse_job_name(name).map(|p| (p.forgejo_job_id, p.attempt));
                let state = key.map_or(ForgejoState::Absent, &forgejo_state);
                match state {
                    ForgejoState::Waiting | ForgejoState::Unknown => None,
                    ForgejoState::Taken | ForgejoState::Absent => Some((
                        Reason::RegistrationOrphaned,
                        format!("no Job {name} exists and its Forgejo job does not wait"),
                    )),
                }
            }
        };
        if let Some((reason, why)) = verdict {
            for r in regs {
                delete_registrations.push(RegistrationDeletion {
                    id: r.id,
                    uuid: r.uuid.clone(),
                    name: r.name.clone(),
                    reason,
                    message: format!(
                        "{why}: deleting its runner registration {} ({})",
                        r.id, r.uuid
                    ),
                });
            }
        }
    }

    // Status: the live Jobs and the new ones, bounded.
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
    let mut scheduled: Vec<ScheduledJob> = owned
        .values()
        .filter(|j| is_live(j))
        .map(|j| ScheduledJob {
            forgejo_job_id: j.forgejo_job_id,
            attempt: (j.attempt > 0).then_some(j.attempt),
            kubernetes_job_name: j.name.clone(),
            scheduled_at: scheduled_at(&j.name, j.created_at.as_ref()),
        })
        .collect();
    scheduled.extend(create_jobs.iter().map(|c| ScheduledJob {
        forgejo_job_id: c.forgejo_job_id,
        attempt: (c.attempt > 0).then_some(c.attempt),
        kubernetes_job_name: c.name.clone(),
        scheduled_at: scheduled_at(&c.name, None),
    }));
    let active = scheduled.len();
    let in_status: BTreeSet<String> = scheduled
        .iter()
        .map(|s| s.kubernetes_job_name.clone())
        .collect();

    // Jobs that left the status on their own.
    let mut finished = Vec::new();
    for entry in &previous.scheduled_jobs {
        let name = entry.kubernetes_job_name.as_str();
        if in_status.contains(name) || deleted.contains(name) {
            continue;
        }
        let (reason, message) = match owned.get(name).map(|j| (&j.state, j.deleting)) {
            Some((JobState::Succeeded, _)) => (
                Reason::JobSucceeded,
                format!(
                    "Job {name} for Forgejo job {} succeeded",
                    entry.forgejo_job_id
                ),
            ),
            Some((JobState::Failed { reason, message }, _)) => (
                Reason::JobFailed,
                format!(
                    "Job {name} for Forgejo job {} failed: {reason}: {}",
                    entry.forgejo_job_id,
                    truncate(message, 512)
                ),
            ),
            Some((JobState::Active, true)) => (
                Reason::JobVanished,
                format!(
                    "Job {name} for Forgejo job {} is being deleted",
                    entry.forgejo_job_id
                ),
            ),
            Some((JobState::Active, false)) => continue,
            None => (
                Reason::JobVanished,
                format!(
                    "Job {name} for Forgejo job {} is gone",
                    entry.forgejo_job_id
                ),
            ),
        };
        finished.push(FinishedJob {
            name: name.to_owned(),
            forgejo_job_id: entry.forgejo_job_id,
            reason,
            message,
        });
    }

    let mut status = previous;
    status.observed_generation = pool.generation;
    status.scheduled_jobs = bound_scheduled_jobs(scheduled);
    status.active_jobs = Some(i32::try_from(active).unwrap_or(i32::MAX));
    if forgejo.is_some() {
        let at_capacity = if unscheduled > 0 {
            condition(
                condition_types::AT_CAPACITY,
                true,
                reasons::MAX_RUNNERS_REACHED,
                format!(
                    "{unscheduled} waiting Forgejo job(s) have no runner yet: {active} of spec.maxRunners={} runner Jobs are active",
                    pool.max_runners
                ),
                pool.generation,
                now.clone(),
            )
        } else {
            condition(
                condition_types::AT_CAPACITY,
                false,
                reasons::BELOW_MAX_RUNNERS,
                format!(
                    "{active} of spec.maxRunners={} runner Jobs are active",
                    pool.max_runners
                ),
                pool.generation,
                now.clone(),
            )
        };
        set_condition(&mut status.conditions, at_capacity, now.clone());
    }

    let recheck_after = recheck_at.map(|at| {
        let wait = at.duration_since(now.0);
        Duration::try_from(wait)
            .unwrap_or(Duration::ZERO)
            .max(Duration::from_secs(1))
    });

    Ok(Plan {
        create_jobs,
        create_secrets,
        delete_jobs,
        delete_secrets,
        delete_registrations,
        finished,
        status,
        summary: PlanSummary {
            waiting: waiting.len(),
            active,
            max_runners: pool.max_runners,
            unscheduled,
        },
        recheck_after,
    })
}
