//! Which runner Jobs and runner registrations should go, and when to look again.
//!
//! A Job goes when:
//! - its Forgejo job no longer waits and its runner runs nothing, for `not_waiting_grace`
//!   since the runner started and the job was first seen not waiting (or since the Job was
//!   created, if no runner started): the job was cancelled, or another runner took it;
//! - its pod cannot start: an image error or a container config error for
//!   `image_pull_deadline`, or unschedulable for `unschedulable_deadline` (failures);
//! - it finished while its Forgejo job still waits, `retry_after` ago: a new Job may try.
//!
//! "Runs nothing": the runner container has not started; or (v15) its registration is not
//! `active`. Forgejo calls a runner `active` only once it reported on its task (`UpdateTask`
//! or `UpdateLog`, which a runner sends at once and then every second), so a runner that
//! fetched its task just before a registrations listing is still `idle` in it. So `idle`
//! counts only in a listing made [`REPORT_GAP`] after the job was first seen not waiting
//! (any runner that took it had reported by then), and the grace counts from that sighting
//! too. A started runner whose registration is gone was an ephemeral runner that took
//! its task (Forgejo deletes those when the task ends): it is left to exit. On the legacy
//! path a started runner may be running any job of its labels, so it is left alone until
//! its `activeDeadlineSeconds`.
//!
//! A registration of this pool (named after one of its Jobs) goes when no live Job can use
//! it: its Job finished or is deleted, or there is no Job and its Forgejo job does not wait;
//! or when a newer registration replaced it (the Job's Secret names another uuid).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::input::{PlanInput, RegistrationStatus, RunnerPath, RunnerRegistration, Timeouts};
use crate::items::{Deletion, RegistrationDeletion};
use crate::naming::parse_job_name;
use crate::owned::{JobState, OwnedJob};
use crate::reason::Reason;
use crate::text::truncate;
use crate::view::{ForgejoState, PoolView, holds_slot};

/// How long after taking a task a runner has surely reported on it (forgejo-runner reports
/// at once, then every second), so that Forgejo lists it `active`.
pub const REPORT_GAP: Duration = Duration::from_secs(3);

/// What to do with one runner Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JobDecision {
    /// Leave it; look again at the instant, if any, when a rule may fire.
    Keep {
        /// When a grace period or deadline runs out, if any.
        recheck_at: Option<Timestamp>,
    },
    /// Delete it.
    Delete {
        /// Why.
        reason: Reason,
        /// For people.
        message: String,
    },
}

/// What the per-Job decisions read besides the Job.
pub(crate) struct JobContext<'a> {
    /// How runners get their credentials (a legacy runner may run any job).
    pub(crate) path: RunnerPath,
    /// The grace periods and deadlines.
    pub(crate) timeouts: Timeouts,
    /// When each live Job's Forgejo job was first seen not waiting, by Job name.
    pub(crate) not_waiting_since: BTreeMap<&'a str, &'a Time>,
    /// When the registrations were listed (`None`: not by this poll).
    pub(crate) registrations_listed_at: Option<&'a Time>,
    /// The pool's runner registrations by name.
    pub(crate) registrations: &'a BTreeMap<&'a str, Vec<&'a RunnerRegistration>>,
    /// The time of the plan.
    pub(crate) now: &'a Time,
}

impl<'a> JobContext<'a> {
    /// The context of a plan of `input`, narrowed to `view`, at `now`.
    pub(crate) fn new(input: &PlanInput<'a>, view: &'a PoolView<'_>, now: &'a Time) -> Self {
        Self {
            path: input.runner_path,
            timeouts: input.timeouts,
            registrations: &view.registrations,
            not_waiting_since: input
                .not_waiting_since
                .iter()
                .map(|(name, at)| (name.as_str(), at))
                .collect(),
            registrations_listed_at: input.warm.registrations_listed_at,
            now,
        }
    }
}

/// Decides whether `job`, whose Forgejo job attempt stands at `forgejo`, should go.
///
/// A finished Job has one rule ([`retry_waiting_job`]); an active one has three, tried in
/// order ([`forgejo_job_gone`], [`pod_waiting_too_long`], [`pod_not_created`]).
pub(crate) fn decide_job(
    job: &OwnedJob,
    forgejo: ForgejoState,
    ctx: &JobContext<'_>,
) -> JobDecision {
    if job.deleting {
        return JobDecision::Keep { recheck_at: None };
    }
    let mut deadlines = Deadlines {
        now: ctx.now,
        recheck_at: None,
    };
    let decision = if let JobState::Succeeded | JobState::Failed { .. } = &job.state {
        retry_waiting_job(job, forgejo, ctx, &mut deadlines)
    } else {
        forgejo_job_gone(job, forgejo, ctx, &mut deadlines)
            .or_else(|| pod_waiting_too_long(job, ctx, &mut deadlines))
            .or_else(|| pod_not_created(job, ctx, &mut deadlines))
    };
    decision.unwrap_or(JobDecision::Keep {
        recheck_at: deadlines.recheck_at,
    })
}

/// The deadlines of the rules tried on one Job: the earliest not yet reached is when to
/// look again.
struct Deadlines<'a> {
    /// The time of the plan.
    now: &'a Time,
    /// The earliest deadline not yet reached.
    recheck_at: Option<Timestamp>,
}

impl Deadlines<'_> {
    /// `Delete` once `at` is reached; until then, remembers `at`.
    fn due(&mut self, at: Timestamp, reason: Reason, message: String) -> Option<JobDecision> {
        if self.now.0 >= at {
            Some(JobDecision::Delete { reason, message })
        } else {
            self.recheck_at = earliest(self.recheck_at, Some(at));
            None
        }
    }
}

/// A finished Job whose Forgejo job still waits goes `retry_after` after it ended, so that a
/// new Job may take the job.
fn retry_waiting_job(
    job: &OwnedJob,
    forgejo: ForgejoState,
    ctx: &JobContext<'_>,
    deadlines: &mut Deadlines<'_>,
) -> Option<JobDecision> {
    if !forgejo.is_waiting() {
        return None;
    }
    let finished = job.finished_at.as_ref().or(job.created_at.as_ref())?;
    let message = format!(
        "Job {} ended without running Forgejo job {}, which still waits; deleting it so that a new runner Job can take the job",
        job.name, job.forgejo_job_id
    );
    deadlines.due(
        after(finished, ctx.timeouts.retry_after),
        Reason::RetryWaitingJob,
        message,
    )
}

/// A Job whose Forgejo job no longer waits and whose runner runs nothing goes
/// `not_waiting_grace` after its runner started (or it was created).
fn forgejo_job_gone(
    job: &OwnedJob,
    forgejo: ForgejoState,
    ctx: &JobContext<'_>,
    deadlines: &mut Deadlines<'_>,
) -> Option<JobDecision> {
    let seen = ctx
        .not_waiting_since
        .get(job.name.as_str())
        .copied()
        .unwrap_or(ctx.now);
    if !matches!(forgejo, ForgejoState::Taken | ForgejoState::Absent)
        || runner_may_be_busy(job, seen, ctx)
    {
        return None;
    }
    // A runner that never started cannot have taken the task: its grace runs from the Job's
    // creation, as a pod that cannot start is best gone soon.
    let idle_since = match (&job.runner_started_at, &job.created_at) {
        (Some(started), _) if seen.0 > started.0 => seen,
        (Some(started), _) => started,
        (None, created) => created.as_ref()?,
    };
    let whereabouts = if forgejo == ForgejoState::Taken {
        "was taken by another runner"
    } else {
        "is no longer waiting"
    };
    let message = format!(
        "Forgejo job {} {whereabouts} and the runner of Job {} runs nothing; deleting the Job",
        job.forgejo_job_id, job.name
    );
    deadlines.due(
        after(idle_since, ctx.timeouts.not_waiting_grace),
        Reason::ForgejoJobNotWaiting,
        message,
    )
}

/// When the Job was created, if its runner has not started (only such a pod can be stuck).
fn created_unstarted(job: &OwnedJob) -> Option<&Time> {
    if job.runner_started_at.is_some() {
        return None;
    }
    job.created_at.as_ref()
}

/// A Job whose pod waits on an image or config error, or is unschedulable, goes after the
/// deadline of that failure (counted from its creation).
fn pod_waiting_too_long(
    job: &OwnedJob,
    ctx: &JobContext<'_>,
    deadlines: &mut Deadlines<'_>,
) -> Option<JobDecision> {
    let created = created_unstarted(job)?;
    for waiting in &job.pod_waiting {
        let Some((reason, deadline)) = stuck_reason(&waiting.reason, &ctx.timeouts) else {
            continue;
        };
        let container = waiting
            .container
            .as_deref()
            .map(|c| format!(" (container {c})"))
            .unwrap_or_default();
        let message = format!(
            "the pod of Job {} for Forgejo job {} is stuck in {}{container} for {}s: {}; deleting the Job",
            job.name,
            job.forgejo_job_id,
            waiting.reason,
            deadline.as_secs(),
            truncate(&waiting.message, 512)
        );
        if let Some(decision) = deadlines.due(after(created, deadline), reason, message) {
            return Some(decision);
        }
    }
    None
}

/// A Job whose pod Kubernetes refused to make (admission) goes `pod_create_deadline` after
/// its creation. A Job that merely has no pod yet stays: the job controller may be behind
/// (it made 10,000 pods at about 100 a second in the scale bench), and a new Job would wait
/// in the same queue.
fn pod_not_created(
    job: &OwnedJob,
    ctx: &JobContext<'_>,
    deadlines: &mut Deadlines<'_>,
) -> Option<JobDecision> {
    let created = created_unstarted(job)?;
    if job.has_pod {
        return None;
    }
    let refused = job.pod_create_refused.as_deref()?;
    let message = format!(
        "Kubernetes created no pod for Job {} (Forgejo job {}) in {}s: the namespace's Pod Security level or another admission check refuses it (kubectl describe job {} shows FailedCreate); deleting the Job; Kubernetes says: {refused}",
        job.name,
        job.forgejo_job_id,
        ctx.timeouts.pod_create_deadline.as_secs(),
        job.name
    );
    let deadline = after(created, ctx.timeouts.pod_create_deadline);
    deadlines.due(deadline, Reason::PodNotCreated, message)
}

/// The failure a pod waiting reason stands for, and how long it is tolerated.
fn stuck_reason(waiting_reason: &str, timeouts: &Timeouts) -> Option<(Reason, Duration)> {
    match waiting_reason {
        "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull" => {
            Some((Reason::ImagePullFailed, timeouts.image_pull_deadline))
        }
        "CreateContainerConfigError" => {
            Some((Reason::ContainerConfigError, timeouts.image_pull_deadline))
        }
        "Unschedulable" => Some((Reason::Unschedulable, timeouts.unschedulable_deadline)),
        _ => None,
    }
}

/// Whether the Job's runner may be running a task (so the Job must not be deleted).
fn runner_may_be_busy(job: &OwnedJob, not_waiting_since: &Time, ctx: &JobContext<'_>) -> bool {
    if job.runner_started_at.is_none() {
        return false;
    }
    match ctx.path {
        RunnerPath::Legacy => true,
        RunnerPath::Ephemeral => {
            let registrations = own_registrations(job, ctx.registrations);
            if registrations.is_empty() {
                // A started runner had its registration; Forgejo deletes an ephemeral runner
                // when its task ends, so it is exiting (or the list is incomplete): leave it.
                true
            } else {
                // Only a listing made a report's time after the job left waiting shows the
                // runner that took it as `active`.
                let listed_after_a_report = ctx
                    .registrations_listed_at
                    .is_some_and(|at| at.0 >= after(not_waiting_since, REPORT_GAP));
                !listed_after_a_report
                    || registrations
                        .iter()
                        .any(|r| r.status == RegistrationStatus::Active)
            }
        }
    }
}

/// The registrations named after `job` (and, if its Secret's uuid is known, that one).
fn own_registrations<'a>(
    job: &OwnedJob,
    registrations: &BTreeMap<&str, Vec<&'a RunnerRegistration>>,
) -> Vec<&'a RunnerRegistration> {
    registrations
        .get(job.name.as_str())
        .into_iter()
        .flatten()
        .filter(|r| job.runner_uuid.as_ref().is_none_or(|uuid| &r.uuid == uuid))
        .copied()
        .collect()
}

/// The Jobs a plan deletes, the names it deletes, and when to look again.
pub(crate) struct JobCleanup<'a> {
    /// The Jobs to delete.
    pub(crate) delete_jobs: Vec<Deletion>,
    /// The live Jobs whose Forgejo job is listed as not waiting (taken or gone).
    pub(crate) not_waiting: Vec<String>,
    /// Their names.
    pub(crate) deleted: BTreeSet<&'a str>,
    /// The earliest moment a kept Job's grace period or deadline runs out.
    pub(crate) recheck_at: Option<Timestamp>,
}

/// Decides, for each of the pool's Jobs, whether it goes now.
pub(crate) fn job_deletions<'a>(view: &PoolView<'a>, ctx: &JobContext<'_>) -> JobCleanup<'a> {
    let mut cleanup = JobCleanup {
        delete_jobs: Vec::new(),
        not_waiting: Vec::new(),
        deleted: BTreeSet::new(),
        recheck_at: None,
    };
    for job in view.owned.values() {
        let forgejo = view.forgejo_state((job.forgejo_job_id, job.attempt));
        if job.is_live() && matches!(forgejo, ForgejoState::Taken | ForgejoState::Absent) {
            cleanup.not_waiting.push(job.name.clone());
        }
        match decide_job(job, forgejo, ctx) {
            JobDecision::Keep { recheck_at } => {
                cleanup.recheck_at = earliest(cleanup.recheck_at, recheck_at);
            }
            JobDecision::Delete { reason, message } => {
                cleanup.deleted.insert(job.name.as_str());
                cleanup.delete_jobs.push(Deletion::of(job, reason, message));
            }
        }
    }
    cleanup
}

/// The Secrets to delete: of Jobs deleted now or being deleted, and of finished Jobs.
pub(crate) fn secret_deletions(view: &PoolView<'_>, deleted: &BTreeSet<&str>) -> Vec<Deletion> {
    let mut deletions = Vec::new();
    for job in view.owned.values().filter(|j| j.secret_exists) {
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
        deletions.push(Deletion::of(job, reason, message));
    }
    deletions
}

/// The registrations no live Job can use, except those of Jobs whose Secret is `requested`
/// now (their request deletes them first).
pub(crate) fn registration_deletions(
    view: &PoolView<'_>,
    deleted: &BTreeSet<&str>,
    requested: &BTreeSet<&str>,
) -> Vec<RegistrationDeletion> {
    let mut deletions = Vec::new();
    for (name, regs) in &view.registrations {
        if requested.contains(name) {
            continue;
        }
        let verdict: Option<(Reason, String)> = match view.owned.get(name) {
            Some(job) if holds_slot(job, deleted) => {
                let superseded = regs
                    .iter()
                    .filter(|r| job.runner_uuid.as_ref().is_some_and(|uuid| uuid != &r.uuid));
                for r in superseded {
                    let why = format!(
                        "runner registration {} ({}) of Job {name} was replaced by another one",
                        r.id, r.uuid
                    );
                    deletions.push(RegistrationDeletion::of(
                        r,
                        Reason::RegistrationSuperseded,
                        why,
                    ));
                }
                None
            }
            Some(job) if job.state.is_finished() && !job.deleting && !deleted.contains(name) => {
                Some((Reason::JobFinished, format!("Job {name} finished")))
            }
            Some(_) => Some((Reason::JobDeleted, format!("Job {name} is deleted"))),
            None => orphaned(view, name),
        };
        if let Some((reason, why)) = verdict {
            for r in regs {
                let message = format!(
                    "{why}: deleting its runner registration {} ({})",
                    r.id, r.uuid
                );
                deletions.push(RegistrationDeletion::of(r, reason, message));
            }
        }
    }
    deletions
}

/// A registration with no Job: orphaned unless its Forgejo job still waits (its Job comes).
fn orphaned(view: &PoolView<'_>, name: &str) -> Option<(Reason, String)> {
    let key = parse_job_name(name).map(|p| (p.forgejo_job_id, p.attempt));
    match key.map_or(ForgejoState::Absent, |key| view.forgejo_state(key)) {
        ForgejoState::Waiting | ForgejoState::Unknown => None,
        ForgejoState::Taken | ForgejoState::Absent => Some((
            Reason::RegistrationOrphaned,
            format!("no Job {name} exists and its Forgejo job does not wait"),
        )),
    }
}

impl Deletion {
    /// The deletion of `job` (or its Secret, which has its name).
    pub(crate) fn of(job: &OwnedJob, reason: Reason, message: String) -> Self {
        Self {
            name: job.name.clone(),
            forgejo_job_id: job.forgejo_job_id,
            attempt: job.attempt,
            reason,
            message,
        }
    }
}

impl RegistrationDeletion {
    /// The deletion of registration `r`.
    pub(crate) fn of(r: &RunnerRegistration, reason: Reason, message: String) -> Self {
        Self {
            id: r.id,
            uuid: r.uuid.clone(),
            name: r.name.clone(),
            reason,
            message,
        }
    }
}

/// `at` plus `duration`, saturating at the end of time.
pub(crate) fn after(at: &Time, duration: Duration) -> Timestamp {
    SignedDuration::try_from(duration)
        .ok()
        .and_then(|d| at.0.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// The earlier of two optional instants.
pub(crate) fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests;
