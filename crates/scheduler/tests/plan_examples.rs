//! Example plans: one scenario per decision, with the exact actions and reasons.

mod support;

use std::time::Duration;

use api::{RunnerDeploymentStatus, ScheduledJob, condition_types};
use scheduler::{
    JobState, MAX_SCHEDULED_JOBS, PlanError, PlanInput, PodMode, PodWaiting, Reason,
    RegistrationStatus, RunnerJobName, RunnerPath, RunnerRegistration, Timeouts,
};
use support::*;

fn name(id: i64, attempt: i64) -> String {
    RunnerJobName::new(UID, id, Some(attempt))
        .unwrap()
        .into_string()
}

fn names<'a>(items: impl IntoIterator<Item = &'a String>) -> Vec<&'a str> {
    items.into_iter().map(String::as_str).collect()
}

fn registration(
    id: i64,
    job_name: &str,
    uuid: &str,
    status: RegistrationStatus,
) -> RunnerRegistration {
    RunnerRegistration {
        id,
        uuid: uuid.into(),
        name: job_name.into(),
        status,
    }
}

fn at_capacity(
    status: &RunnerDeploymentStatus,
) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == condition_types::AT_CAPACITY)
        .unwrap()
}

#[test]
fn oldest_waiting_jobs_get_jobs_up_to_max_runners() {
    let rd = pool(UID, "docker:docker://node:22,x:host", 3);
    let jobs = [
        waiting(5, &["x"]),
        waiting(2, &["docker"]),
        waiting(4, &["docker"]),
        waiting(1, &["docker", "x"]),
        waiting(3, &["x"]),
    ];
    let plan = plan_for(&rd, &jobs, &[], &[], at(0));

    let created: Vec<_> = plan.create_jobs.iter().map(|c| c.forgejo_job_id).collect();
    assert_eq!(created, [1, 2, 3]);
    assert_eq!(plan.create_jobs[0].name, name(1, 1));
    assert_eq!(plan.create_jobs[0].mode, PodMode::Docker);
    assert_eq!(plan.create_jobs[2].mode, PodMode::Host);
    assert!(
        plan.create_jobs
            .iter()
            .all(|c| c.reason == Reason::JobWaiting)
    );
    assert_eq!(
        plan.create_jobs[0].message,
        format!(
            "Forgejo job 1 (attempt 1) \"build #1\" waits on [docker,x]: creating Job {} (Docker pod)",
            name(1, 1)
        )
    );

    let secrets: Vec<_> = plan
        .create_secrets
        .iter()
        .map(|s| (s.job_name.clone(), s.reason))
        .collect();
    assert_eq!(
        secrets,
        [
            (name(1, 1), Reason::NewJob),
            (name(2, 1), Reason::NewJob),
            (name(3, 1), Reason::NewJob)
        ]
    );
    assert_eq!(plan.create_secrets[0].registration_name, name(1, 1));
    assert_eq!(
        plan.create_secrets[0].registration_description,
        "one-shot runner of ci/faro for Forgejo job 1"
    );
    assert!(plan.delete_jobs.is_empty() && plan.delete_secrets.is_empty());
    assert!(plan.delete_registrations.is_empty() && plan.finished.is_empty());

    assert_eq!(plan.summary.waiting, 5);
    assert_eq!(plan.summary.active, 3);
    assert_eq!(plan.summary.unscheduled, 2);
    assert_eq!(plan.status.active_jobs, Some(3));
    assert_eq!(plan.status.observed_generation, Some(3));
    assert_eq!(
        plan.status.scheduled_jobs[0],
        ScheduledJob {
            forgejo_job_id: 1,
            attempt: Some(1),
            kubernetes_job_name: name(1, 1),
            scheduled_at: at(0),
        }
    );
    let condition = at_capacity(&plan.status);
    assert_eq!(condition.status, "True");
    assert_eq!(condition.reason, "MaxRunnersReached");
    assert_eq!(
        condition.message,
        "2 waiting Forgejo job(s) have no runner yet: 3 of spec.maxRunners=3 runner Jobs are active"
    );
    assert_eq!(condition.observed_generation, Some(3));
}

#[test]
fn running_jobs_and_jobs_of_other_labels_are_not_scheduled() {
    let rd = pool(UID, "docker", 10);
    let jobs = [
        forgejo_job(1, 1, &["docker"], "running"),
        waiting(2, &["docker", "gpu"]),
        waiting(3, &[]),
        waiting(4, &["docker"]),
    ];
    let plan = plan_for(&rd, &jobs, &[], &[], at(0));
    assert_eq!(
        names(plan.create_jobs.iter().map(|c| &c.name)),
        [name(4, 1)]
    );
    assert_eq!(plan.summary.waiting, 1);
    assert_eq!(at_capacity(&plan.status).status, "False");
    assert_eq!(
        at_capacity(&plan.status).message,
        "1 of spec.maxRunners=10 runner Jobs are active"
    );
}

#[test]
fn an_existing_job_prevents_a_second_one_even_after_a_restart() {
    let rd = pool(UID, "docker", 10);
    let owned = [live_job(&name(1, 1), 1, 1, -30)];
    let plan = plan_for(&rd, &[waiting(1, &["docker"])], &owned, &[], at(0));
    assert!(!plan.has_actions(), "{plan:#?}");
    assert_eq!(plan.status.scheduled_jobs[0].scheduled_at, at(-30));
    assert_eq!(plan.status.active_jobs, Some(1));
}

#[test]
fn a_new_attempt_of_the_same_job_gets_its_own_job() {
    let rd = pool(UID, "docker", 10);
    let mut old = live_job(&name(1, 1), 1, 1, -300);
    old.state = JobState::Succeeded;
    old.finished_at = Some(at(-100));
    old.secret_exists = false;
    let plan = plan_for(
        &rd,
        &[forgejo_job(1, 2, &["docker"], "waiting")],
        &[old],
        &[],
        at(0),
    );
    assert_eq!(
        names(plan.create_jobs.iter().map(|c| &c.name)),
        [name(1, 2)]
    );
    assert!(plan.delete_jobs.is_empty());
}

#[test]
fn a_job_that_lost_its_secret_gets_one_and_its_old_registration_goes_first() {
    let rd = pool(UID, "docker", 10);
    let mut job = live_job(&name(1, 1), 1, 1, -30);
    job.secret_exists = false;
    job.runner_uuid = None;
    let registrations = [registration(
        77,
        &name(1, 1),
        "old-uuid",
        RegistrationStatus::Offline,
    )];
    let plan = plan_for(
        &rd,
        &[waiting(1, &["docker"])],
        &[job],
        &registrations,
        at(0),
    );
    assert!(plan.create_jobs.is_empty());
    assert_eq!(plan.create_secrets.len(), 1);
    let request = &plan.create_secrets[0];
    assert_eq!(
        (request.job_name.as_str(), request.reason),
        (name(1, 1).as_str(), Reason::SecretMissing)
    );
    assert_eq!(request.path, RunnerPath::Ephemeral);
    assert_eq!(request.stale_registrations.len(), 1);
    assert_eq!(request.stale_registrations[0].id, 77);
    assert_eq!(
        request.stale_registrations[0].reason,
        Reason::CredentialsLost
    );
    assert!(
        plan.delete_registrations.is_empty(),
        "the request carries it"
    );
}

#[test]
fn a_cancelled_job_goes_with_its_secret_and_registration_and_frees_its_slot() {
    let rd = pool(UID, "docker", 1);
    let cancelled = live_job(&name(1, 1), 1, 1, -120);
    let uuid = cancelled.runner_uuid.clone().unwrap();
    let registrations = [registration(
        5,
        &name(1, 1),
        &uuid,
        RegistrationStatus::Offline,
    )];
    let plan = plan_for(
        &rd,
        &[waiting(2, &["docker"])],
        &[cancelled],
        &registrations,
        at(0),
    );

    assert_eq!(plan.delete_jobs.len(), 1);
    assert_eq!(plan.delete_jobs[0].name, name(1, 1));
    assert_eq!(plan.delete_jobs[0].reason, Reason::ForgejoJobNotWaiting);
    assert_eq!(
        plan.delete_jobs[0].message,
        format!(
            "Forgejo job 1 is no longer waiting and the runner of Job {} runs nothing; deleting the Job",
            name(1, 1)
        )
    );
    assert_eq!(plan.delete_secrets.len(), 1);
    assert_eq!(plan.delete_secrets[0].reason, Reason::JobDeleted);
    assert_eq!(plan.delete_registrations.len(), 1);
    assert_eq!(plan.delete_registrations[0].id, 5);
    assert_eq!(plan.delete_registrations[0].reason, Reason::JobDeleted);
    assert_eq!(
        names(plan.create_jobs.iter().map(|c| &c.name)),
        [name(2, 1)]
    );
    assert_eq!(plan.status.scheduled_jobs.len(), 1);
    assert!(
        plan.finished.is_empty(),
        "deletions are reported as deletions"
    );
}

#[test]
fn a_runner_running_its_task_is_never_deleted() {
    let rd = pool(UID, "docker", 1);
    let mut job = live_job(&name(1, 1), 1, 1, -5000);
    job.runner_started_at = Some(at(-4990));
    let uuid = job.runner_uuid.clone().unwrap();
    let registrations = [registration(
        5,
        &name(1, 1),
        &uuid,
        RegistrationStatus::Active,
    )];
    let jobs = [
        forgejo_job(1, 1, &["docker"], "running"),
        waiting(2, &["docker"]),
    ];
    let plan = plan_for(&rd, &jobs, &[job], &registrations, at(0));
    assert!(!plan.has_actions(), "{plan:#?}");
    assert_eq!(at_capacity(&plan.status).status, "True");
}

#[test]
fn a_pod_stuck_on_its_image_fails_after_the_deadline_and_its_slot_is_reused() {
    let rd = pool(UID, "docker", 1);
    let mut stuck = live_job(&name(1, 1), 1, 1, -300);
    stuck.pod_waiting = vec![PodWaiting {
        container: Some("dind".into()),
        reason: "ErrImagePull".into(),
        message: "manifest unknown".into(),
    }];
    let jobs = [waiting(1, &["docker"]), waiting(2, &["docker"])];
    let plan = plan_for(&rd, &jobs, &[stuck.clone()], &[], at(0));
    assert_eq!(plan.delete_jobs.len(), 1);
    assert_eq!(plan.delete_jobs[0].reason, Reason::ImagePullFailed);
    assert!(plan.delete_jobs[0].reason.is_failure());
    assert!(plan.delete_jobs[0].message.contains("manifest unknown"));
    assert_eq!(
        names(plan.create_jobs.iter().map(|c| &c.name)),
        [name(2, 1)]
    );

    let earlier = plan_for(&rd, &jobs, &[stuck], &[], at(-60));
    assert!(earlier.delete_jobs.is_empty());
    assert_eq!(earlier.recheck_after, Some(Duration::from_secs(60)));
}

#[test]
fn a_finished_job_whose_forgejo_job_still_waits_is_retried() {
    let rd = pool(UID, "docker", 2);
    let mut evicted = live_job(&name(1, 1), 1, 1, -600);
    evicted.state = JobState::Failed {
        reason: "PodFailed".into(),
        message: "The node was low on resource: memory.".into(),
    };
    evicted.finished_at = Some(at(-60));
    let plan = plan_for(&rd, &[waiting(1, &["docker"])], &[evicted], &[], at(0));
    assert_eq!(plan.delete_jobs[0].reason, Reason::RetryWaitingJob);
    assert_eq!(plan.delete_secrets[0].reason, Reason::JobDeleted);
    assert!(
        plan.create_jobs.is_empty(),
        "the name is free only once the Job is gone"
    );
}

#[test]
fn finished_jobs_leave_the_status_once_with_their_outcome() {
    let rd_base = pool(UID, "docker", 5);
    let mut succeeded = live_job(&name(1, 1), 1, 1, -600);
    succeeded.state = JobState::Succeeded;
    succeeded.finished_at = Some(at(-10));
    let mut failed = live_job(&name(2, 1), 2, 1, -600);
    failed.state = JobState::Failed {
        reason: "DeadlineExceeded".into(),
        message: "Job was active longer than specified deadline".into(),
    };
    failed.finished_at = Some(at(-10));
    failed.secret_exists = false;
    let running = live_job(&name(4, 1), 4, 1, -600);
    let entry = |id: i64| ScheduledJob {
        forgejo_job_id: id,
        attempt: Some(1),
        kubernetes_job_name: name(id, 1),
        scheduled_at: at(-600),
    };
    let mut rd = rd_base.clone();
    rd.status = Some(RunnerDeploymentStatus {
        scheduled_jobs: vec![entry(1), entry(2), entry(3), entry(4)],
        ..RunnerDeploymentStatus::default()
    });
    let owned = [succeeded, failed, running];
    let jobs = [waiting(4, &["docker"])];
    let plan = plan_for(&rd, &jobs, &owned, &[], at(0));

    let finished: Vec<_> = plan
        .finished
        .iter()
        .map(|f| (f.forgejo_job_id, f.reason))
        .collect();
    assert_eq!(
        finished,
        [
            (1, Reason::JobSucceeded),
            (2, Reason::JobFailed),
            (3, Reason::JobVanished)
        ]
    );
    assert_eq!(
        plan.finished[1].message,
        format!(
            "Job {} for Forgejo job 2 failed: DeadlineExceeded: Job was active longer than specified deadline",
            name(2, 1)
        )
    );
    assert_eq!(
        names(plan.delete_secrets.iter().map(|d| &d.name)),
        [name(1, 1)]
    );
    assert_eq!(plan.delete_secrets[0].reason, Reason::JobFinished);
    assert_eq!(
        names(
            plan.status
                .scheduled_jobs
                .iter()
                .map(|s| &s.kubernetes_job_name)
        ),
        [name(4, 1)]
    );

    rd.status = Some(plan.status.clone());
    let again = plan_for(&rd, &jobs, &owned, &[], at(1));
    assert!(again.finished.is_empty());
}

#[test]
fn a_failed_poll_creates_and_cleans_nothing_that_depends_on_forgejo() {
    let mut rd = pool(UID, "docker", 1);
    let idle = live_job(&name(1, 1), 1, 1, -10_000);
    let mut stuck = live_job(&name(2, 1), 2, 1, -10_000);
    stuck.pod_waiting = vec![PodWaiting {
        container: None,
        reason: "Unschedulable".into(),
        message: "0/3 nodes are available".into(),
    }];
    let previous = plan_for(
        &rd,
        &[waiting(1, &["docker"]), waiting(3, &["docker"])],
        std::slice::from_ref(&idle),
        &[],
        at(-100),
    );
    rd.status = Some(previous.status.clone());
    let owned = [idle, stuck];
    let input = PlanInput {
        pool: &rd,
        forgejo_jobs: None,
        owned_jobs: &owned,
        registrations: &[],
        runner_path: RunnerPath::Ephemeral,
        timeouts: Timeouts::default(),
        cache: None,
        warm: Default::default(),
        not_waiting_since: &[],
    };
    let plan = scheduler::plan(&input, at(0)).unwrap();
    assert!(plan.create_jobs.is_empty());
    assert_eq!(
        names(plan.delete_jobs.iter().map(|d| &d.name)),
        [name(2, 1)]
    );
    assert_eq!(plan.delete_jobs[0].reason, Reason::Unschedulable);
    assert_eq!(
        at_capacity(&plan.status),
        at_capacity(&previous.status),
        "AtCapacity is left as the last poll saw it"
    );
}

#[test]
fn registrations_no_live_job_can_use_are_deleted() {
    let rd = pool(UID, "docker", 1);
    let live = live_job(&name(1, 1), 1, 1, -30);
    let uuid = live.runner_uuid.clone().unwrap();
    let registrations = [
        registration(1, &name(1, 1), &uuid, RegistrationStatus::Idle),
        registration(2, &name(1, 1), "replaced", RegistrationStatus::Offline),
        registration(3, &name(9, 1), "u9", RegistrationStatus::Offline),
        registration(4, &name(8, 1), "u8", RegistrationStatus::Offline),
        registration(5, "static-runner", "u5", RegistrationStatus::Idle),
        registration(
            6,
            RunnerJobName::new("other-pool", 9, Some(1))
                .unwrap()
                .as_str(),
            "u6",
            RegistrationStatus::Offline,
        ),
    ];
    // Job 8 waits but the pool is full: its registration may belong to a Job in flight.
    let jobs = [waiting(1, &["docker"]), waiting(8, &["docker"])];
    let plan = plan_for(&rd, &jobs, &[live], &registrations, at(0));
    let deleted: Vec<_> = plan
        .delete_registrations
        .iter()
        .map(|r| (r.id, r.reason))
        .collect();
    assert_eq!(
        deleted,
        [
            (2, Reason::RegistrationSuperseded),
            (3, Reason::RegistrationOrphaned)
        ]
    );
}

#[test]
fn recheck_after_is_the_next_grace_or_deadline() {
    let rd = pool(UID, "docker", 5);
    let mut started = live_job(&name(1, 1), 1, 1, -100);
    started.runner_started_at = Some(at(-20));
    let registrations = [registration(
        1,
        &name(1, 1),
        started.runner_uuid.as_deref().unwrap(),
        RegistrationStatus::Idle,
    )];
    let plan = plan_for(&rd, &[], &[started], &registrations, at(0));
    assert!(plan.delete_jobs.is_empty());
    assert_eq!(plan.recheck_after, Some(Duration::from_secs(40)));
    let nothing = plan_for(&rd, &[], &[], &[], at(0));
    assert_eq!(nothing.recheck_after, None);
}

#[test]
fn legacy_runners_that_started_are_left_to_their_deadline() {
    let rd = pool(UID, "docker", 5);
    let mut started = live_job(&name(1, 0), 1, 0, -10_000);
    started.runner_started_at = Some(at(-9_990));
    started.runner_uuid = None;
    let pending = live_job(&name(2, 0), 2, 0, -10_000);
    let owned = [started, pending];
    let input = PlanInput {
        pool: &rd,
        forgejo_jobs: Some(&[]),
        owned_jobs: &owned,
        registrations: &[],
        runner_path: RunnerPath::Legacy,
        timeouts: Timeouts::default(),
        cache: None,
        warm: Default::default(),
        not_waiting_since: &seen_since_created(&owned),
    };
    let plan = scheduler::plan(&input, at(0)).unwrap();
    assert_eq!(
        names(plan.delete_jobs.iter().map(|d| &d.name)),
        [name(2, 0)]
    );
}

#[test]
fn legacy_jobs_without_attempts_are_named_attempt_zero() {
    let rd = pool(UID, "docker", 5);
    let mut job = waiting(1, &["docker"]);
    job.attempt = None;
    job.handle = None;
    let input = PlanInput {
        pool: &rd,
        forgejo_jobs: Some(std::slice::from_ref(&job)),
        owned_jobs: &[],
        registrations: &[],
        runner_path: RunnerPath::Legacy,
        timeouts: Timeouts::default(),
        cache: None,
        warm: Default::default(),
        not_waiting_since: &[],
    };
    let plan = scheduler::plan(&input, at(0)).unwrap();
    assert_eq!(plan.create_jobs[0].name, name(1, 0));
    assert_eq!(plan.create_secrets[0].path, RunnerPath::Legacy);
    assert_eq!(plan.status.scheduled_jobs[0].attempt, None);
}

#[test]
fn at_capacity_keeps_its_transition_time_while_it_holds() {
    let mut rd = pool(UID, "docker", 1);
    let jobs = [waiting(1, &["docker"]), waiting(2, &["docker"])];
    let first = plan_for(&rd, &jobs, &[], &[], at(0));
    assert_eq!(at_capacity(&first.status).last_transition_time, at(0));
    rd.status = Some(first.status);
    let owned = [live_job(&name(1, 1), 1, 1, 0)];
    let second = plan_for(&rd, &jobs, &owned, &[], at(30));
    assert_eq!(at_capacity(&second.status).status, "True");
    assert_eq!(at_capacity(&second.status).last_transition_time, at(0));
}

#[test]
fn status_stays_small_with_thousands_of_jobs() {
    let rd = pool(UID, "docker", 10_000);
    let owned: Vec<_> = (1..=5_000)
        .map(|id| live_job(&name(id, 1), id, 1, -id))
        .collect();
    let jobs: Vec<_> = (1..=8_000).map(|id| waiting(id, &["docker"])).collect();
    let plan = plan_for(&rd, &jobs, &owned, &[], at(0));
    assert_eq!(plan.create_jobs.len(), 3_000);
    assert_eq!(plan.status.active_jobs, Some(8_000));
    assert_eq!(plan.status.scheduled_jobs.len(), MAX_SCHEDULED_JOBS);
    let size = serde_json::to_vec(&plan.status).unwrap().len();
    assert!(size < 64 * 1024, "status is {size} bytes");
}

#[test]
fn invalid_pools_are_refused_with_a_reason() {
    let mut rd = pool(UID, "docker", 1);
    rd.metadata.uid = None;
    let input = PlanInput {
        pool: &rd,
        forgejo_jobs: Some(&[]),
        owned_jobs: &[],
        registrations: &[],
        runner_path: RunnerPath::Ephemeral,
        timeouts: Timeouts::default(),
        cache: None,
        warm: Default::default(),
        not_waiting_since: &[],
    };
    let error = scheduler::plan(&input, at(0)).unwrap_err();
    assert_eq!(error, PlanError::MissingMetadata("uid"));
    assert_eq!(error.reason(), "MissingMetadata");

    let mut rd = pool(UID, "docker", 1);
    rd.spec.labels = "a:lxc://debian".into();
    let input = PlanInput { pool: &rd, ..input };
    let error = scheduler::plan(&input, at(0)).unwrap_err();
    assert_eq!(error.reason(), "InvalidSpec");
    assert!(error.to_string().contains("a:lxc://debian"), "{error}");

    let rd = with_template(
        pool(UID, "docker", 1),
        serde_json::json!({"spec": {"containers": "nope"}}),
    );
    let input = PlanInput { pool: &rd, ..input };
    assert_eq!(
        scheduler::plan(&input, at(0)).unwrap_err().reason(),
        "InvalidSpec"
    );
}
