//! Unit tests of the per-Job cleanup decisions.
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
        pod_create_refused: None,
        secret_exists: true,
        runner_uuid: Some("u-5".into()),
    }
}

/// Decides at `now` on a Job whose Forgejo job was seen not waiting from the start.
fn decide(
    job: &OwnedJob,
    forgejo: ForgejoState,
    regs: &[RunnerRegistration],
    now: i64,
) -> JobDecision {
    decide_seen(job, forgejo, regs, now, 0)
}

/// Decides at `now` on a Job whose Forgejo job was first seen not waiting at `seen`.
fn decide_seen(
    job: &OwnedJob,
    forgejo: ForgejoState,
    regs: &[RunnerRegistration],
    now: i64,
    seen: i64,
) -> JobDecision {
    let seen = at(seen);
    let mut by_name: BTreeMap<&str, Vec<&RunnerRegistration>> = BTreeMap::new();
    for r in regs {
        by_name.entry(r.name.as_str()).or_default().push(r);
    }
    let now = at(now);
    let ctx = JobContext {
        path: RunnerPath::Ephemeral,
        timeouts: Timeouts::default(),
        registrations: &by_name,
        not_waiting_since: BTreeMap::from([(job.name.as_str(), &seen)]),
        registrations_listed_at: Some(&now),
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
fn a_runner_listed_idle_keeps_its_job_for_the_grace_after_the_job_left_waiting() {
    // The runner started long ago but fetched its task just before the registrations were
    // listed: Forgejo lists it `idle` until its first report. The grace counts from when
    // the job was first seen taken, so the listings of the next minute show it `active`.
    let job = OwnedJob {
        runner_started_at: Some(at(10)),
        ..active_job()
    };
    let regs = [registration(RegistrationStatus::Idle)];
    assert_eq!(
        decide_seen(&job, ForgejoState::Taken, &regs, 500, 480),
        JobDecision::Keep {
            recheck_at: Some(at(540).0)
        }
    );
    let decision = decide_seen(&job, ForgejoState::Taken, &regs, 540, 480);
    assert_eq!(deleted_for(&decision), Some(Reason::ForgejoJobNotWaiting));
}

#[test]
fn an_idle_listing_made_before_the_runner_could_report_proves_nothing() {
    let job = OwnedJob {
        runner_started_at: Some(at(10)),
        ..active_job()
    };
    let regs = [registration(RegistrationStatus::Idle)];
    let mut by_name = BTreeMap::new();
    by_name.insert(job.name.as_str(), vec![&regs[0]]);
    let (seen, now) = (at(100), at(10_000));
    for (listed, deleted) in [(at(50), false), (at(102), false), (at(103), true)] {
        let ctx = JobContext {
            path: RunnerPath::Ephemeral,
            timeouts: Timeouts::default(),
            registrations: &by_name,
            not_waiting_since: BTreeMap::from([(job.name.as_str(), &seen)]),
            registrations_listed_at: Some(&listed),
            now: &now,
        };
        let decision = decide_job(&job, ForgejoState::Taken, &ctx);
        assert_eq!(
            deleted_for(&decision).is_some(),
            deleted,
            "listed at {listed:?}: {decision:?}"
        );
    }
}

#[test]
fn a_job_seen_not_waiting_for_the_first_time_is_kept() {
    let job = OwnedJob {
        runner_started_at: Some(at(10)),
        ..active_job()
    };
    let regs = [registration(RegistrationStatus::Idle)];
    let now = at(10_000);
    let by_name = BTreeMap::from([(job.name.as_str(), vec![&regs[0]])]);
    let ctx = JobContext {
        path: RunnerPath::Ephemeral,
        timeouts: Timeouts::default(),
        registrations: &by_name,
        not_waiting_since: BTreeMap::new(),
        registrations_listed_at: Some(&now),
        now: &now,
    };
    assert_eq!(
        decide_job(&job, ForgejoState::Taken, &ctx),
        JobDecision::Keep { recheck_at: None }
    );
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
        pod_create_refused: Some("pods \"x\" is forbidden: violates PodSecurity".into()),
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
    assert!(message.contains("violates PodSecurity"), "{message}");
    // With a pod, however slow, the Job stays.
    assert_eq!(
        decide(&active_job(), ForgejoState::Waiting, &[], 10_000),
        JobDecision::Keep { recheck_at: None }
    );
}

#[test]
fn a_job_whose_pod_is_only_late_stays() {
    // No FailedCreate: the job controller is behind, and a new Job would queue behind it too.
    let job = OwnedJob {
        has_pod: false,
        ..active_job()
    };
    assert!(matches!(
        decide(&job, ForgejoState::Waiting, &[], 10_000),
        JobDecision::Keep { .. }
    ));
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
