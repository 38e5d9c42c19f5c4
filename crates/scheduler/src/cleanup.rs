//! Which runner Jobs and runner registrations should go, and when to look again.
//!
//! A Job goes when:
//! - its Forgejo job no longer waits and its runner runs nothing, for `not_waiting_grace`
//!   since the runner started (or since the Job was created, if no runner started): the job
//!   was cancelled, or another runner took it;
//! - its pod cannot start: an image error or a container config error for
//!   `image_pull_deadline`, or unschedulable for `unschedulable_deadline` (failures);
//! - it finished while its Forgejo job still waits, `retry_after` ago: a new Job may try.
//!
//! "Runs nothing": the runner container has not started; or (v15) its registration is not
//! `active`. A started runner whose registration is gone was an ephemeral runner that took
//! its task (Forgejo deletes those when the task ends): it is left to exit. On the legacy
//! path a started runner may be running any job of its labels, so it is left alone until
//! its `activeDeadlineSeconds`.
//!
//! A registration of this pool (named after one of its Jobs) goes when no live Job can use
//! it: its Job finished or is deleted, or there is no Job and its Forgejo job does not wait;
//! or when a newer registration replaced it (the Job's Secret names another uuid).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::input::{RegistrationStatus, RunnerPath, RunnerRegistration, Timeouts};
use crate::owned::{JobState, OwnedJob};
use crate::reason::Reason;

/// Where a Forgejo job attempt stands, as far as the last poll tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForgejoState {
    /// Listed as waiting.
    Waiting,
    /// Listed, not waiting: a runner took it.
    Taken,
    /// Not listed: done, cancelled, or not this pool's.
    Absent,
    /// The poll failed: nothing is known.
    Unknown,
}

impl ForgejoState {
    pub(crate) fn is_waiting(self) -> bool {
        self == Self::Waiting
    }
}

/// What to do with one runner Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JobDecision {
    /// Leave it; look again at the instant, if any, when a rule may fire.
    Keep { recheck_at: Option<Timestamp> },
    /// Delete it.
    Delete { reason: Reason, message: String },
}

/// What the per-Job decisions read besides the Job.
pub(crate) struct JobContext<'a> {
    pub(crate) path: RunnerPath,
    pub(crate) timeouts: Timeouts,
    pub(crate) registrations: &'a BTreeMap<&'a str, Vec<&'a RunnerRegistration>>,
    pub(crate) now: &'a Time,
}

/// Decides whether `job`, whose Forgejo job attempt stands at `forgejo`, should go.
pub(crate) fn decide_job(
    job: &OwnedJob,
    forgejo: ForgejoState,
    ctx: &JobContext<'_>,
) -> JobDecision {
    if job.deleting {
        return JobDecision::Keep { recheck_at: None };
    }
    let mut recheck_at = None;
    let mut due = |at: Timestamp, reason: Reason, message: String| -> Option<JobDecision> {
        if ctx.now.0 >= at {
            Some(JobDecision::Delete { reason, message })
        } else {
            recheck_at = earliest(recheck_at, Some(at));
            None
        }
    };

    if let JobState::Succeeded | JobState::Failed { .. } = &job.state {
        if forgejo.is_waiting()
            && let Some(finished) = job.finished_at.as_ref().or(job.created_at.as_ref())
        {
            let message = format!(
                "Job {} ended without running Forgejo job {}, which still waits; deleting it so that a new runner Job can take the job",
                job.name, job.forgejo_job_id
            );
            if let Some(decision) = due(
                after(finished, ctx.timeouts.retry_after),
                Reason::RetryWaitingJob,
                message,
            ) {
                return decision;
            }
        }
        return JobDecision::Keep { recheck_at };
    }

    if matches!(forgejo, ForgejoState::Taken | ForgejoState::Absent)
        && !runner_may_be_busy(job, ctx)
        && let Some(idle_since) = job.runner_started_at.as_ref().or(job.created_at.as_ref())
    {
        let whereabouts = if forgejo == ForgejoState::Taken {
            "was taken by another runner"
        } else {
            "is no longer waiting"
        };
        let message = format!(
            "Forgejo job {} {whereabouts} and the runner of Job {} runs nothing; deleting the Job",
            job.forgejo_job_id, job.name
        );
        if let Some(decision) = due(
            after(idle_since, ctx.timeouts.not_waiting_grace),
            Reason::ForgejoJobNotWaiting,
            message,
        ) {
            return decision;
        }
    }

    if job.runner_started_at.is_none()
        && let Some(created) = job.created_at.as_ref()
    {
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
            if let Some(decision) = due(after(created, deadline), reason, message) {
                return decision;
            }
        }
        if !job.has_pod {
            let message = format!(
                "Kubernetes created no pod for Job {} (Forgejo job {}) in {}s: the namespace's Pod Security level or another admission check refuses it (kubectl describe job {} shows FailedCreate); deleting the Job",
                job.name,
                job.forgejo_job_id,
                ctx.timeouts.pod_create_deadline.as_secs(),
                job.name
            );
            let deadline = after(created, ctx.timeouts.pod_create_deadline);
            if let Some(decision) = due(deadline, Reason::PodNotCreated, message) {
                return decision;
            }
        }
    }
    JobDecision::Keep { recheck_at }
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
fn runner_may_be_busy(job: &OwnedJob, ctx: &JobContext<'_>) -> bool {
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
                registrations
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

/// At most `max` bytes of `text`, cut at a character boundary, with an ellipsis if cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::owned::PodWaiting;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(1_800_000_000 + seconds).unwrap())
    }

    fn active_job() -> OwnedJob {
        OwnedJob {
            name: "forgejo-job-5-1-0123456789".into(),
            forgejo_job_id: 5,
            attempt: 1,
            created_at: Some(at(0)),
            state: JobState::Active,
            finished_at: None,
            deleting: false,
            runner_started_at: None,
            pod_waiting: Vec::new(),
            has_pod: true,
            secret_exists: true,
            runner_uuid: Some("u-5".into()),
        }
    }

    fn decide(
        job: &OwnedJob,
        forgejo: ForgejoState,
        regs: &[RunnerRegistration],
        now: i64,
    ) -> JobDecision {
        let mut by_name: BTreeMap<&str, Vec<&RunnerRegistration>> = BTreeMap::new();
        for r in regs {
            by_name.entry(r.name.as_str()).or_default().push(r);
        }
        let now = at(now);
        let ctx = JobContext {
            path: RunnerPath::Ephemeral,
            timeouts: Timeouts::default(),
            registrations: &by_name,
            now: &now,
        };
        decide_job(job, forgejo, &ctx)
    }

    fn registration(status: RegistrationStatus) -> RunnerRegistration {
        RunnerRegistration {
            id: 1,
            uuid: "u-5".into(),
            name: "forgejo-job-5-1-0123456789".into(),
            status,
        }
    }

    fn deleted_for(decision: &JobDecision) -> Option<Reason> {
        match decision {
            JobDecision::Delete { reason, .. } => Some(*reason),
            JobDecision::Keep { .. } => None,
        }
    }

    #[test]
    fn waiting_job_keeps_its_runner_job() {
        let decision = decide(&active_job(), ForgejoState::Waiting, &[], 10_000);
        assert_eq!(decision, JobDecision::Keep { recheck_at: None });
    }

    #[test]
    fn cancelled_job_with_a_pending_pod_goes_after_the_grace() {
        let job = active_job();
        let early = decide(&job, ForgejoState::Absent, &[], 30);
        assert_eq!(
            early,
            JobDecision::Keep {
                recheck_at: Some(at(60).0)
            }
        );
        let late = decide(&job, ForgejoState::Absent, &[], 60);
        assert_eq!(deleted_for(&late), Some(Reason::ForgejoJobNotWaiting));
    }

    #[test]
    fn an_active_runner_is_never_interrupted() {
        let job = OwnedJob {
            runner_started_at: Some(at(10)),
            ..active_job()
        };
        let regs = [registration(RegistrationStatus::Active)];
        let decision = decide(&job, ForgejoState::Taken, &regs, 10_000);
        assert_eq!(decision, JobDecision::Keep { recheck_at: None });
    }

    #[test]
    fn an_idle_runner_whose_job_was_taken_elsewhere_goes() {
        let job = OwnedJob {
            runner_started_at: Some(at(10)),
            ..active_job()
        };
        let regs = [registration(RegistrationStatus::Idle)];
        assert_eq!(
            decide(&job, ForgejoState::Taken, &regs, 69),
            JobDecision::Keep {
                recheck_at: Some(at(70).0)
            }
        );
        let decision = decide(&job, ForgejoState::Taken, &regs, 70);
        assert_eq!(deleted_for(&decision), Some(Reason::ForgejoJobNotWaiting));
    }

    #[test]
    fn a_consumed_ephemeral_runner_is_left_to_exit() {
        let job = OwnedJob {
            runner_started_at: Some(at(10)),
            ..active_job()
        };
        let decision = decide(&job, ForgejoState::Absent, &[], 10_000);
        assert_eq!(decision, JobDecision::Keep { recheck_at: None });
    }

    #[test]
    fn image_pull_errors_fail_the_job_after_the_deadline() {
        let job = OwnedJob {
            pod_waiting: vec![PodWaiting {
                container: Some("runner".into()),
                reason: "ImagePullBackOff".into(),
                message: "Back-off pulling image \"nod:22\"".into(),
            }],
            ..active_job()
        };
        assert_eq!(
            decide(&job, ForgejoState::Waiting, &[], 299),
            JobDecision::Keep {
                recheck_at: Some(at(300).0)
            }
        );
        let JobDecision::Delete { reason, message } = decide(&job, ForgejoState::Waiting, &[], 300)
        else {
            panic!("expected a deletion");
        };
        assert_eq!(reason, Reason::ImagePullFailed);
        assert!(
            message.contains("ImagePullBackOff (container runner)"),
            "{message}"
        );
        assert!(message.contains("nod:22"), "{message}");
    }

    #[test]
    fn a_job_kubernetes_makes_no_pod_for_goes_after_the_pod_create_deadline() {
        let job = OwnedJob {
            has_pod: false,
            ..active_job()
        };
        assert_eq!(
            decide(&job, ForgejoState::Waiting, &[], 59),
            JobDecision::Keep {
                recheck_at: Some(at(60).0)
            }
        );
        let JobDecision::Delete { reason, message } = decide(&job, ForgejoState::Waiting, &[], 60)
        else {
            panic!("expected a deletion");
        };
        assert_eq!(reason, Reason::PodNotCreated);
        assert!(message.contains("FailedCreate"), "{message}");
        // With a pod, however slow, the Job stays.
        assert_eq!(
            decide(&active_job(), ForgejoState::Waiting, &[], 10_000),
            JobDecision::Keep { recheck_at: None }
        );
    }

    #[test]
    fn unschedulable_pods_get_a_longer_deadline() {
        let job = OwnedJob {
            pod_waiting: vec![PodWaiting {
                container: None,
                reason: "Unschedulable".into(),
                message: "0/3 nodes are available".into(),
            }],
            ..active_job()
        };
        assert!(matches!(
            decide(&job, ForgejoState::Waiting, &[], 300),
            JobDecision::Keep { .. }
        ));
        let decision = decide(&job, ForgejoState::Waiting, &[], 600);
        assert_eq!(deleted_for(&decision), Some(Reason::Unschedulable));
    }

    #[test]
    fn a_finished_job_whose_forgejo_job_waits_is_retried() {
        let job = OwnedJob {
            state: JobState::Failed {
                reason: "DeadlineExceeded".into(),
                message: String::new(),
            },
            finished_at: Some(at(100)),
            ..active_job()
        };
        assert_eq!(
            decide(&job, ForgejoState::Waiting, &[], 120),
            JobDecision::Keep {
                recheck_at: Some(at(160).0)
            }
        );
        let decision = decide(&job, ForgejoState::Waiting, &[], 160);
        assert_eq!(deleted_for(&decision), Some(Reason::RetryWaitingJob));
        let decision = decide(&job, ForgejoState::Absent, &[], 10_000);
        assert_eq!(decision, JobDecision::Keep { recheck_at: None });
    }

    #[test]
    fn nothing_is_decided_about_a_job_being_deleted_or_when_forgejo_is_unknown() {
        let job = OwnedJob {
            deleting: true,
            ..active_job()
        };
        assert_eq!(
            decide(&job, ForgejoState::Absent, &[], 10_000),
            JobDecision::Keep { recheck_at: None }
        );
        assert_eq!(
            decide(&active_job(), ForgejoState::Unknown, &[], 10_000),
            JobDecision::Keep { recheck_at: None }
        );
    }

    #[test]
    fn truncate_cuts_at_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h…");
        assert_eq!(truncate("hello", 10), "hello");
    }
}
