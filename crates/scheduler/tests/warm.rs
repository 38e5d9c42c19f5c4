//! Warm runners: when they are kept, which waiting jobs are left to them, how they retire,
//! and the limits every plan keeps (`maxRunners`, never a busy runner retired, a job left
//! to warm runners only within its grace).

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use api::{Day, RunnerDeployment, WarmLabel, WarmRunnersSpec, WarmRunnersStatus, WarmSchedule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use proptest::prelude::*;
use scheduler::naming::{WarmRunnerName, parse_warm_name};
use scheduler::{
    ForgejoJob, JobState, OwnedJob, Plan, PlanInput, Reason, RegistrationStatus, RunnerPath,
    RunnerRegistration, Timeouts, WarmInput, WarmRunner, warm_grace,
};
use support::{UID, at, live_job, pool, waiting};

/// A pool on `docker` and `gpu` with `count` warm runners of `docker`, a 30 m activity
/// window and no schedule.
fn warm_pool(max_runners: i32, count: i32) -> RunnerDeployment {
    let mut rd = pool(UID, "docker,gpu", max_runners);
    rd.spec.warm_runners = Some(WarmRunnersSpec {
        runners: vec![WarmLabel {
            label: "docker".into(),
            count,
        }],
        fetch_interval: "1s".into(),
        activity_window: "30m".into(),
        schedules: Vec::new(),
    });
    rd
}

/// The pool with warm runners last seen kept, a job seen at `last_job_seen`.
fn was_kept(mut rd: RunnerDeployment, last_job_seen: Time) -> RunnerDeployment {
    let mut status = rd.status.take().unwrap_or_default();
    status.warm_runners = Some(WarmRunnersStatus {
        idle: 0,
        busy: 0,
        kept: true,
        last_job_seen: Some(last_job_seen),
    });
    rd.status = Some(status);
    rd
}

/// Where a test warm runner stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Job made, no Secret yet.
    Unregistered,
    /// Registered, its pod not started.
    Starting,
    /// Registered (idle), started.
    Idle,
    /// Registered and active.
    Busy,
    /// Its registration is gone (task done, or retired).
    RegistrationGone,
    /// Its Job finished.
    Finished,
}

/// Warm runner `serial` of label `label` at `stage`, created at 0.
fn warm(serial: u32, label: &str, stage: Stage) -> (WarmRunner, Option<RunnerRegistration>) {
    let name = WarmRunnerName::new(UID, serial).unwrap().into_string();
    let registered = stage != Stage::Unregistered;
    let runner = WarmRunner {
        name: name.clone(),
        serial,
        label: label.into(),
        created_at: Some(at(0)),
        state: if stage == Stage::Finished {
            JobState::Succeeded
        } else {
            JobState::Active
        },
        deleting: false,
        runner_started_at: (!matches!(stage, Stage::Unregistered | Stage::Starting)).then(|| at(5)),
        pod_waiting: false,
        secret_created_at: registered.then(|| at(1)),
        runner_uuid: registered.then(|| format!("uuid-{name}")),
    };
    let status = match stage {
        Stage::Starting | Stage::Idle => Some(RegistrationStatus::Idle),
        Stage::Busy => Some(RegistrationStatus::Active),
        _ => None,
    };
    let registration = status.map(|status| RunnerRegistration {
        id: 900 + i64::from(serial),
        uuid: format!("uuid-{name}"),
        name,
        status,
    });
    (runner, registration)
}

/// One scenario: the pool, Forgejo's jobs, the pool's Jobs and warm runners, when.
#[derive(Debug, Clone)]
struct Scene {
    rd: RunnerDeployment,
    jobs: Vec<ForgejoJob>,
    owned: Vec<OwnedJob>,
    warm: Vec<WarmRunner>,
    registrations: Vec<RunnerRegistration>,
    waiting_since: Vec<((i64, i64), Time)>,
    path: RunnerPath,
    now: Time,
}

impl Scene {
    fn new(rd: RunnerDeployment, now: i64) -> Self {
        Self {
            rd,
            jobs: Vec::new(),
            owned: Vec::new(),
            warm: Vec::new(),
            registrations: Vec::new(),
            waiting_since: Vec::new(),
            path: RunnerPath::Ephemeral,
            now: at(now),
        }
    }

    fn with_warm(mut self, runners: &[(WarmRunner, Option<RunnerRegistration>)]) -> Self {
        for (runner, registration) in runners {
            self.warm.push(runner.clone());
            self.registrations.extend(registration.clone());
        }
        self
    }

    fn plan(&self) -> Plan {
        let listed = self.now.clone();
        let input = PlanInput {
            pool: &self.rd,
            forgejo_jobs: Some(&self.jobs),
            owned_jobs: &self.owned,
            registrations: &self.registrations,
            runner_path: self.path,
            timeouts: Timeouts::default(),
            cache: None,
            warm: WarmInput {
                runners: &self.warm,
                registrations_listed_at: (self.path == RunnerPath::Ephemeral).then_some(&listed),
                waiting_since: &self.waiting_since,
            },
            not_waiting_since: &[],
        };
        scheduler::plan(&input, self.now.clone()).unwrap()
    }
}

fn warm_creations(plan: &Plan) -> usize {
    plan.create_jobs.iter().filter(|c| c.is_warm()).count()
}

fn cold_creations(plan: &Plan) -> Vec<i64> {
    plan.create_jobs
        .iter()
        .filter(|c| !c.is_warm())
        .map(|c| c.forgejo_job_id)
        .collect()
}

#[test]
fn a_quiet_pool_starts_no_warm_runner() {
    let plan = Scene::new(warm_pool(10, 2), 100).plan();
    assert!(plan.create_jobs.is_empty(), "{:?}", plan.create_jobs);
    let status = plan.status.warm_runners.unwrap();
    assert!(!status.kept);
    assert_eq!((status.idle, status.busy), (0, 0));
    assert_eq!(plan.warm_window, None);
}

#[test]
fn the_first_job_gets_its_own_job_and_opens_the_window() {
    let mut scene = Scene::new(warm_pool(10, 2), 100);
    scene.jobs = vec![waiting(1, &["docker"])];
    let plan = scene.plan();
    assert_eq!(cold_creations(&plan), [1]);
    assert_eq!(warm_creations(&plan), 2);
    let names: Vec<&str> = plan.create_jobs.iter().map(|c| c.name.as_str()).collect();
    for n in 0..2 {
        assert!(names.contains(&WarmRunnerName::new(UID, n).unwrap().as_str()));
    }
    // Each warm runner gets credentials, registered under its Job's name.
    let warm_secrets = plan
        .create_secrets
        .iter()
        .filter(|s| parse_warm_name(&s.job_name).is_some())
        .count();
    assert_eq!(warm_secrets, 2);
    assert_eq!(
        plan.warm_window.as_ref().unwrap().0,
        Reason::WarmWindowOpened
    );
    let status = plan.status.warm_runners.unwrap();
    assert!(status.kept);
    assert_eq!(status.last_job_seen, Some(at(100)));
    assert_eq!(status.idle, 2);
    // The warm runner's pod fetches any job of its label, at its interval.
    let job = plan
        .create_jobs
        .iter()
        .find(|c| c.is_warm())
        .unwrap()
        .job()
        .unwrap();
    let args = job.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap()
        .join(" ");
    assert!(args.contains("--label docker") && args.contains("--fetch-interval 1s --wait"));
    assert!(!args.contains("--handle"), "{args}");
}

#[test]
fn idle_warm_runners_are_left_the_jobs_they_can_take_within_the_grace() {
    let rd = was_kept(warm_pool(10, 2), at(90));
    let mut scene = Scene::new(rd, 100).with_warm(&[
        warm(0, "docker", Stage::Idle),
        warm(1, "docker", Stage::Idle),
    ]);
    scene.jobs = vec![
        waiting(1, &["docker"]),
        waiting(2, &["gpu"]),
        waiting(3, &["docker"]),
        waiting(4, &["docker"]),
    ];
    let plan = scene.plan();
    // Jobs 1 and 3 are left to the two idle runners; gpu has none, 4 is one too many.
    assert_eq!(cold_creations(&plan), [2, 4]);
    assert_eq!(warm_creations(&plan), 0, "both ready runners count");
    let recheck = plan.recheck_after.unwrap();
    assert!(recheck <= warm_grace(Duration::from_secs(1)), "{recheck:?}");
    assert!(plan.delete_registrations.is_empty() && plan.retire_warm_runners.is_empty());
}

#[test]
fn a_job_still_waiting_after_the_grace_gets_its_own_job() {
    let rd = was_kept(warm_pool(10, 2), at(90));
    let mut scene = Scene::new(rd, 100).with_warm(&[warm(0, "docker", Stage::Idle)]);
    scene.jobs = vec![waiting(1, &["docker"])];
    let grace = i64::try_from(warm_grace(Duration::from_secs(1)).as_secs()).unwrap();
    scene.waiting_since = vec![((1, 1), at(100 - grace))];
    assert_eq!(cold_creations(&scene.plan()), [1]);
    scene.waiting_since = vec![((1, 1), at(100 - grace + 1))];
    assert!(cold_creations(&scene.plan()).is_empty());
}

#[test]
fn a_started_warm_runner_not_yet_listed_holds_a_job_for_the_grace() {
    // Registered a moment ago: the registrations listed now predate it (Unknown), but its
    // runner runs, so it is most likely fetching.
    let rd = was_kept(warm_pool(10, 1), at(90));
    let (mut runner, _) = warm(0, "docker", Stage::Idle);
    runner.secret_created_at = Some(at(100));
    runner.runner_started_at = Some(at(100));
    let mut scene = Scene::new(rd, 100).with_warm(&[(runner, None)]);
    scene.jobs = vec![waiting(1, &["docker"])];
    assert!(cold_creations(&scene.plan()).is_empty());
    let grace = i64::try_from(warm_grace(Duration::from_secs(1)).as_secs()).unwrap();
    scene.waiting_since = vec![((1, 1), at(100 - grace))];
    assert_eq!(cold_creations(&scene.plan()), [1]);
}

#[test]
fn warm_runners_count_toward_max_runners() {
    let rd = was_kept(warm_pool(3, 2), at(90));
    let mut scene = Scene::new(rd, 100).with_warm(&[
        warm(0, "docker", Stage::Idle),
        warm(1, "docker", Stage::Busy),
    ]);
    scene.jobs = vec![waiting(1, &["gpu"]), waiting(2, &["gpu"])];
    let plan = scene.plan();
    assert_eq!(cold_creations(&plan), [1]);
    assert_eq!(plan.summary.unscheduled, 1);
    assert_eq!(warm_creations(&plan), 0, "no room for a second idle one");
}

#[test]
fn a_closing_window_retires_idle_runners_registration_first_and_never_a_busy_one() {
    let rd = was_kept(warm_pool(10, 3), at(0));
    let (mut just_made, _) = warm(3, "docker", Stage::Unregistered);
    just_made.created_at = Some(at(1800));
    let scene = Scene::new(rd, 1801).with_warm(&[
        warm(0, "docker", Stage::Idle),
        warm(1, "docker", Stage::Busy),
        warm(2, "docker", Stage::RegistrationGone),
        (just_made, None),
    ]);
    let plan = scene.plan();
    assert_eq!(
        plan.warm_window.as_ref().unwrap().0,
        Reason::WarmWindowClosed
    );
    let name = |n| WarmRunnerName::new(UID, n).unwrap().into_string();
    let retired: Vec<(String, Vec<String>)> = plan
        .retire_warm_runners
        .iter()
        .map(|r| {
            let registrations = r.registrations.iter().map(|d| d.name.clone()).collect();
            (r.job.name.clone(), registrations)
        })
        .collect();
    assert_eq!(
        retired,
        [(name(0), vec![name(0)]), (name(3), vec![])],
        "the idle one (its registration, then its Job) and the one never registered (its \
         Job); not the busy one, nor the one whose task ended (its pod exits by itself)"
    );
    assert!(
        plan.retire_warm_runners
            .iter()
            .all(|r| r.job.reason == Reason::WarmRunnerRetired)
    );
    assert!(plan.delete_jobs.is_empty() && plan.delete_registrations.is_empty());
    assert!(plan.create_jobs.is_empty());
    let status = plan.status.warm_runners.unwrap();
    assert!(!status.kept);
    assert_eq!(
        status.busy, 2,
        "the one running and the one whose task ended"
    );
}

#[test]
fn a_schedule_window_keeps_them_without_jobs() {
    let mut rd = warm_pool(10, 1);
    if let Some(warm) = rd.spec.warm_runners.as_mut() {
        warm.schedules = vec![WarmSchedule {
            days: vec![
                Day::Mon,
                Day::Tue,
                Day::Wed,
                Day::Thu,
                Day::Fri,
                Day::Sat,
                Day::Sun,
            ],
            start: "00:00".into(),
            end: "24:00".into(),
            time_zone: "Europe/Berlin".into(),
        }];
    }
    let plan = Scene::new(rd, 100).plan();
    assert_eq!(warm_creations(&plan), 1);
    assert!(plan.status.warm_runners.unwrap().kept);
}

#[test]
fn a_pod_that_never_starts_its_runner_is_replaced() {
    let rd = was_kept(warm_pool(10, 1), at(390));
    let scene = Scene::new(rd, 400).with_warm(&[warm(0, "docker", Stage::Starting)]);
    let plan = scene.plan();
    let retired = &plan.retire_warm_runners[0];
    assert_eq!(
        retired.registrations.len(),
        1,
        "its registration, then its Job"
    );
    assert_eq!(retired.job.reason, Reason::WarmRunnerNotStarted);
    let scene = Scene::new(was_kept(warm_pool(10, 1), at(390)), 400).with_warm(&[warm(
        0,
        "docker",
        Stage::Unregistered,
    )]);
    let plan = scene.plan();
    assert!(plan.retire_warm_runners[0].registrations.is_empty());
    assert_eq!(
        plan.retire_warm_runners[0].job.reason,
        Reason::WarmRunnerNotStarted
    );
    assert_eq!(warm_creations(&plan), 1, "a new one replaces it");
}

#[test]
fn a_registration_of_a_finished_warm_runner_goes() {
    let rd = was_kept(warm_pool(10, 1), at(90));
    let (runner, _) = warm(0, "docker", Stage::Finished);
    let registration = RunnerRegistration {
        id: 77,
        uuid: runner.runner_uuid.clone().unwrap(),
        name: runner.name.clone(),
        status: RegistrationStatus::Offline,
    };
    let scene = Scene::new(rd, 100).with_warm(&[(runner, Some(registration))]);
    let plan = scene.plan();
    assert_eq!(plan.delete_registrations.len(), 1);
    assert_eq!(plan.delete_registrations[0].reason, Reason::JobFinished);
    assert_eq!(warm_creations(&plan), 1, "a new one replaces it");
}

#[test]
fn on_the_legacy_path_idle_runners_retire_only_with_no_job_running() {
    let rd = was_kept(warm_pool(10, 2), at(0));
    let mut scene = Scene::new(rd, 1801).with_warm(&[
        warm(0, "docker", Stage::Idle),
        warm(1, "docker", Stage::Idle),
    ]);
    scene.path = RunnerPath::Legacy;
    scene.registrations.clear();
    let plan = scene.plan();
    assert_eq!(
        plan.retire_warm_runners.len(),
        2,
        "no job at all: none is busy"
    );
    // A job running on the label: one of them may be running it, so none is retired (a
    // running job is no demand: the window stays closed).
    scene.jobs = vec![support::forgejo_job(5, 1, &["docker"], "running")];
    let plan = scene.plan();
    assert!(plan.retire_warm_runners.is_empty());
    let status = plan.status.warm_runners.unwrap();
    assert_eq!((status.busy, status.kept), (1, false));
}

#[test]
fn a_pool_without_warm_runners_plans_as_before() {
    let mut scene = Scene::new(pool(UID, "docker", 2), 100);
    scene.jobs = vec![waiting(1, &["docker"])];
    scene.owned = vec![live_job("forgejo-job-9-1-x", 9, 1, 0)];
    let plan = scene.plan();
    assert_eq!(plan.status.warm_runners, None);
    assert_eq!(plan.warm_window, None);
    assert_eq!(cold_creations(&plan), [1]);
}

// Properties over random pools, runners and jobs.

fn stage() -> impl Strategy<Value = Stage> {
    prop_oneof![
        Just(Stage::Unregistered),
        Just(Stage::Starting),
        Just(Stage::Idle),
        Just(Stage::Busy),
        Just(Stage::RegistrationGone),
        Just(Stage::Finished),
    ]
}

fn label() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("docker"), Just("gpu")]
}

prop_compose! {
    fn scene()(
        max in 1i32..8,
        count in 1i32..5,
        stages in prop::collection::vec((stage(), label()), 0..8),
        jobs in prop::collection::vec((label(), 0i64..20, any::<bool>()), 0..8),
        last_seen in prop::option::of(0i64..4000),
        now in 1000i64..4000,
    ) -> Scene {
        let mut rd = warm_pool(max, count);
        if let Some(warm) = rd.spec.warm_runners.as_mut() {
            warm.runners.push(WarmLabel { label: "gpu".into(), count: 1 });
        }
        let rd = match last_seen {
            Some(seen) => was_kept(rd, at(seen.min(now))),
            None => rd,
        };
        let runners: Vec<_> = stages
            .iter()
            .enumerate()
            .map(|(n, (stage, label))| warm(u32::try_from(n).unwrap(), label, *stage))
            .collect();
        let mut scene = Scene::new(rd, now).with_warm(&runners);
        for (n, (label, waited, is_waiting)) in jobs.iter().enumerate() {
            let id = i64::try_from(n).unwrap() + 1;
            let status = if *is_waiting { "waiting" } else { "running" };
            scene.jobs.push(support::forgejo_job(id, 1, &[label], status));
            scene.waiting_since.push(((id, 1), at(now - waited)));
        }
        scene
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn plans_never_start_runners_beyond_max_runners(s in scene()) {
        let plan = s.plan();
        let deleted: BTreeSet<&str> = plan
            .retire_warm_runners
            .iter()
            .map(|r| r.job.name.as_str())
            .collect();
        let live_warm = s
            .warm
            .iter()
            .filter(|r| r.is_live() && !deleted.contains(r.name.as_str()))
            .count();
        let after = live_warm + plan.create_jobs.len();
        let max = usize::try_from(s.rd.spec.max_runners).unwrap();
        prop_assert!(plan.create_jobs.is_empty() || after <= max, "{after} > {max}");
    }

    #[test]
    fn plans_never_retire_a_runner_with_a_task(s in scene()) {
        let plan = s.plan();
        let busy: BTreeSet<&str> = s
            .registrations
            .iter()
            .filter(|r| r.status == RegistrationStatus::Active)
            .map(|r| r.name.as_str())
            .collect();
        let jobs = plan
            .delete_jobs
            .iter()
            .chain(plan.retire_warm_runners.iter().map(|r| &r.job));
        for d in jobs {
            prop_assert!(!busy.contains(d.name.as_str()), "deleted busy Job {}", d.name);
        }
        let registrations = plan
            .delete_registrations
            .iter()
            .chain(plan.retire_warm_runners.iter().flat_map(|r| &r.registrations));
        for d in registrations {
            prop_assert!(!busy.contains(d.name.as_str()), "deleted busy registration {}", d.name);
        }
    }

    #[test]
    fn jobs_are_left_to_warm_runners_only_within_the_grace(s in scene()) {
        let plan = s.plan();
        let grace = i64::try_from(warm_grace(Duration::from_secs(1)).as_secs()).unwrap();
        let waiting: Vec<&ForgejoJob> = s.jobs.iter().filter(|j| j.is_waiting()).collect();
        let left = waiting.len() - cold_creations(&plan).len() - plan.summary.unscheduled;
        let in_grace = waiting
            .iter()
            .filter(|j| {
                let since = &s.waiting_since.iter().find(|(k, _)| k.0 == j.id).unwrap().1;
                s.now.0.as_second() - since.0.as_second() < grace
            })
            .count();
        let idle = s
            .warm
            .iter()
            .zip(0..)
            .filter(|(r, _)| r.is_live() && r.runner_started_at.is_some())
            .filter(|(r, _)| {
                s.registrations
                    .iter()
                    .any(|g| g.name == r.name && g.status == RegistrationStatus::Idle)
            })
            .count();
        prop_assert!(left <= in_grace, "{left} left, {in_grace} in grace");
        prop_assert!(left <= idle, "{left} left to {idle} idle runners");
        // A job left to warm runners is not also given its own Job.
        let created: BTreeSet<i64> = cold_creations(&plan).into_iter().collect();
        prop_assert_eq!(created.len(), cold_creations(&plan).len());
    }
}
