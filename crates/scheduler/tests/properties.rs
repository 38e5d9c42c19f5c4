//! Property tests: the scheduler's invariants over random job sets, existing Jobs,
//! registrations, restarts and multi-round runs.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use api::{ScheduledJob, condition_types, parse_labels};
use proptest::prelude::*;
use scheduler::naming::is_dns1123_label;
use scheduler::{
    ForgejoJob, JobState, ListingInput, MAX_SCHEDULED_JOBS, OwnedJob, Plan, PlanInput, PodWaiting,
    Reason, RegistrationStatus, RunnerJobName, RunnerPath, RunnerRegistration, Timeouts,
    lists_registrations, runs_on_labels,
};
use support::*;

const LABEL_SETS: [&str; 3] = [
    "docker",
    "docker:docker://node:22,x:host",
    "node:kubernetes://node:22,x:host,docker",
];
const RUNS_ON: [&[&str]; 8] = [
    &["docker"],
    &["x"],
    &["node"],
    &["docker", "x"],
    &["x", "node"],
    &["node", "docker"],
    &["other"],
    &[],
];
const UID2: &str = "ffffffff-0000-4000-8000-000000000002";

#[derive(Debug, Clone)]
struct Scenario {
    labels: &'static str,
    max_runners: i32,
    path: RunnerPath,
    jobs: Vec<ForgejoJob>,
    owned: Vec<OwnedJob>,
    registrations: Vec<RunnerRegistration>,
    previous: Vec<ScheduledJob>,
    now: i64,
}

fn job_name(uid: &str, id: i64, attempt: i64) -> String {
    RunnerJobName::new(uid, id, Some(attempt))
        .unwrap()
        .into_string()
}

fn forgejo_jobs() -> impl Strategy<Value = Vec<ForgejoJob>> {
    prop::collection::vec(
        (
            1..30i64,
            0..3i64,
            0..RUNS_ON.len(),
            prop::bool::weighted(0.7),
        ),
        0..25,
    )
    .prop_map(|jobs| {
        jobs.into_iter()
            .map(|(id, attempt, runs_on, waiting)| {
                let status = if waiting { "waiting" } else { "running" };
                forgejo_job(id, attempt, RUNS_ON[runs_on], status)
            })
            .collect()
    })
}

fn owned_jobs() -> impl Strategy<Value = Vec<OwnedJob>> {
    let one = (
        (1..30i64, 0..3i64, 0..4u8, prop::bool::weighted(0.1)),
        (0..2000i64, prop::option::of(0..1000i64), 0..6u8),
        (any::<bool>(), any::<bool>(), prop::bool::weighted(0.1)),
    );
    prop::collection::vec(one, 0..15).prop_map(|specs| {
        let mut by_name: BTreeMap<String, OwnedJob> = BTreeMap::new();
        for (
            (id, attempt, state, deleting),
            (created, started, waiting),
            (secret, uuid_known, foreign),
        ) in specs
        {
            let name = job_name(if foreign { UID2 } else { UID }, id, attempt);
            let state = match state {
                0 | 1 => JobState::Active,
                2 => JobState::Succeeded,
                _ => JobState::Failed {
                    reason: "DeadlineExceeded".into(),
                    message: "too long".into(),
                },
            };
            let pod_waiting = match waiting {
                1 => vec!["ImagePullBackOff"],
                2 => vec!["Unschedulable"],
                3 => vec!["CreateContainerConfigError"],
                4 => vec!["ContainerCreating"],
                _ => vec![],
            }
            .into_iter()
            .map(|reason| PodWaiting {
                container: Some("runner".into()),
                reason: reason.into(),
                message: String::new(),
            })
            .collect();
            let finished = state.is_finished();
            by_name.insert(
                name.clone(),
                OwnedJob {
                    runner_uuid: (secret && uuid_known).then(|| format!("uuid-{name}")),
                    name,
                    forgejo_job_id: id,
                    attempt,
                    created_at: Some(at(created)),
                    state,
                    finished_at: finished.then(|| at(created + 50)),
                    deleting,
                    runner_started_at: started.map(|s| at(created + s)),
                    pod_waiting,
                    has_pod: true,
                    pod_create_refused: None,
                    secret_exists: secret,
                },
            );
        }
        by_name.into_values().collect()
    })
}

fn registrations() -> impl Strategy<Value = Vec<RunnerRegistration>> {
    prop::collection::vec((1..30i64, 0..3i64, any::<bool>(), 0..3u8), 0..12).prop_map(|regs| {
        regs.into_iter()
            .enumerate()
            .map(|(index, (id, attempt, matching, status))| {
                let name = job_name(UID, id, attempt);
                RunnerRegistration {
                    id: index as i64 + 1,
                    uuid: if matching {
                        format!("uuid-{name}")
                    } else {
                        format!("other-{index}")
                    },
                    name,
                    status: match status {
                        0 => RegistrationStatus::Offline,
                        1 => RegistrationStatus::Idle,
                        _ => RegistrationStatus::Active,
                    },
                }
            })
            .collect()
    })
}

fn previous() -> impl Strategy<Value = Vec<ScheduledJob>> {
    prop::collection::btree_set((1..30i64, 0..3i64), 0..10).prop_map(|keys| {
        keys.into_iter()
            .map(|(id, attempt)| ScheduledJob {
                forgejo_job_id: id,
                attempt: (attempt > 0).then_some(attempt),
                kubernetes_job_name: job_name(UID, id, attempt),
                scheduled_at: at(id),
            })
            .collect()
    })
}

prop_compose! {
    fn scenario()(
        labels in 0..LABEL_SETS.len(),
        max_runners in 1..6i32,
        legacy in prop::bool::weighted(0.3),
        jobs in forgejo_jobs(),
        owned in owned_jobs(),
        registrations in registrations(),
        previous in previous(),
        now in 2000..3000i64,
    ) -> Scenario {
        Scenario {
            labels: LABEL_SETS[labels],
            max_runners,
            path: if legacy { RunnerPath::Legacy } else { RunnerPath::Ephemeral },
            jobs,
            owned,
            // The legacy path has no registration API.
            registrations: if legacy { Vec::new() } else { registrations },
            previous,
            now,
        }
    }
}

fn run_with(
    s: &Scenario,
    uid: &str,
    owned: &[OwnedJob],
    registrations: &[RunnerRegistration],
    previous: Option<Vec<ScheduledJob>>,
) -> Plan {
    let mut rd = pool(uid, s.labels, s.max_runners);
    rd.status = previous.map(|scheduled_jobs| api::RunnerDeploymentStatus {
        scheduled_jobs,
        ..api::RunnerDeploymentStatus::default()
    });
    let now = at(s.now);
    let input = PlanInput {
        pool: &rd,
        forgejo_jobs: Some(&s.jobs),
        owned_jobs: owned,
        registrations,
        runner_path: s.path,
        timeouts: Timeouts::default(),
        cache: None,
        warm: scheduler::WarmInput {
            registrations_listed_at: Some(&now),
            ..Default::default()
        },
        not_waiting_since: &seen_since_created(owned),
    };
    scheduler::plan(&input, now.clone()).unwrap()
}

fn run(s: &Scenario) -> Plan {
    run_with(s, UID, &s.owned, &s.registrations, Some(s.previous.clone()))
}

/// The scenario's Jobs of the default pool.
fn pool_jobs(s: &Scenario) -> impl Iterator<Item = &OwnedJob> {
    s.owned
        .iter()
        .filter(|j| scheduler::naming::is_pool_job_name(&j.name, UID))
}

/// The waiting Forgejo job attempts the pool serves.
fn waiting_keys(s: &Scenario) -> BTreeSet<(i64, i64)> {
    let labels = parse_labels(s.labels).unwrap();
    s.jobs
        .iter()
        .filter(|j| j.is_waiting())
        .filter(|j| runs_on_labels(&j.runs_on, labels.iter().map(|l| l.name.as_str())))
        .map(|j| (j.id, j.attempt_number()))
        .collect()
}

fn deleted_names(plan: &Plan) -> BTreeSet<&str> {
    plan.delete_jobs.iter().map(|d| d.name.as_str()).collect()
}

fn at_capacity(plan: &Plan) -> bool {
    plan.status
        .conditions
        .iter()
        .any(|c| c.type_ == condition_types::AT_CAPACITY && c.status == "True")
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn never_two_jobs_for_one_job_attempt(s in scenario()) {
        let plan = run(&s);
        let existing: BTreeSet<&str> = pool_jobs(&s).map(|j| j.name.as_str()).collect();
        let mut keys = BTreeSet::new();
        let mut names = BTreeSet::new();
        for created in &plan.create_jobs {
            prop_assert!(keys.insert((created.forgejo_job_id, created.attempt)), "two creates for one attempt");
            prop_assert!(names.insert(created.name.clone()));
            prop_assert!(!existing.contains(created.name.as_str()), "{} exists already", created.name);
            prop_assert_eq!(
                &created.name,
                &job_name(UID, created.forgejo_job_id, created.attempt),
                "the name is the pure function of the attempt, so a stale cache only hits AlreadyExists"
            );
            let job = created.job().expect("a planned Job builds");
            prop_assert_eq!(job.metadata.name.as_deref(), Some(created.name.as_str()));
        }
    }

    #[test]
    fn never_more_than_max_runners_active(s in scenario()) {
        let plan = run(&s);
        let max = s.max_runners as usize;
        let deleted = deleted_names(&plan);
        let live_before = pool_jobs(&s).filter(|j| j.is_live()).count();
        let live_after = pool_jobs(&s)
            .filter(|j| j.is_live() && !deleted.contains(j.name.as_str()))
            .count();
        prop_assert_eq!(plan.summary.active, live_after + plan.create_jobs.len());
        prop_assert_eq!(plan.status.active_jobs, Some(plan.summary.active as i32));
        if !plan.create_jobs.is_empty() {
            prop_assert!(plan.summary.active <= max, "{} active > {max}", plan.summary.active);
        }
        prop_assert!(plan.summary.active <= max.max(live_before));
    }

    #[test]
    fn every_waiting_job_within_capacity_gets_a_job_oldest_first(s in scenario()) {
        let plan = run(&s);
        let occupied: BTreeSet<&str> = pool_jobs(&s).map(|j| j.name.as_str()).collect();
        let free: Vec<(i64, i64)> = waiting_keys(&s)
            .into_iter()
            .filter(|(id, attempt)| !occupied.contains(job_name(UID, *id, *attempt).as_str()))
            .collect();
        let created: Vec<(i64, i64)> = plan.create_jobs.iter().map(|c| (c.forgejo_job_id, c.attempt)).collect();
        prop_assert_eq!(&created[..], &free[..created.len()], "creates are the oldest free waiting jobs");
        let left = free.len() - created.len();
        prop_assert_eq!(plan.summary.unscheduled, left);
        prop_assert_eq!(at_capacity(&plan), left > 0);
        if left > 0 {
            prop_assert!(plan.summary.active >= s.max_runners as usize, "jobs left while below capacity");
        }
    }

    #[test]
    fn applying_a_plan_and_planning_again_asks_for_nothing(s in scenario()) {
        let first = run(&s);
        let mut world = World {
            jobs: s.owned.iter().map(|j| (j.name.clone(), j.clone())).collect(),
            registrations: s.registrations.clone(),
            next_registration: 0,
        };
        world.apply(&first, &at(s.now));
        let second = run_with(
            &s,
            UID,
            &world.owned(),
            &world.registrations,
            Some(first.status.scheduled_jobs.clone()),
        );
        prop_assert!(!second.has_actions(), "second plan: {:#?}", second);
        prop_assert!(second.finished.is_empty());
        prop_assert_eq!(&second.status.scheduled_jobs, &first.status.scheduled_jobs);
        prop_assert_eq!(second.summary, first.summary);
    }

    #[test]
    fn created_names_are_valid_and_unique_across_pools(s in scenario()) {
        let ours = run(&s);
        let theirs = run_with(&s, UID2, &s.owned, &s.registrations, None);
        let our_names: BTreeSet<&str> = ours.create_jobs.iter().map(|c| c.name.as_str()).collect();
        for created in ours.create_jobs.iter().chain(&theirs.create_jobs) {
            prop_assert!(is_dns1123_label(&created.name), "{}", created.name);
            prop_assert!(created.name.len() <= 63);
        }
        for created in &theirs.create_jobs {
            prop_assert!(!our_names.contains(created.name.as_str()), "{} in both pools", created.name);
        }
    }

    #[test]
    fn status_is_bounded_and_lists_the_active_jobs(s in scenario()) {
        let plan = run(&s);
        let listed = plan.status.scheduled_jobs.len();
        prop_assert!(listed <= MAX_SCHEDULED_JOBS);
        prop_assert_eq!(listed, plan.summary.active.min(MAX_SCHEDULED_JOBS));
        let names: BTreeSet<&str> = plan.status.scheduled_jobs.iter().map(|j| j.kubernetes_job_name.as_str()).collect();
        prop_assert_eq!(names.len(), listed, "no name twice");
        prop_assert!(plan.status.scheduled_jobs.windows(2).all(|w| w[0].scheduled_at <= w[1].scheduled_at));
    }

    #[test]
    fn a_restart_or_a_second_replica_decides_the_same(s in scenario()) {
        let with_memory = run(&s);
        let restarted = run_with(&s, UID, &s.owned, &s.registrations, None);
        let key = |plan: &Plan| (
            plan.create_jobs.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
            plan.create_secrets.clone(),
            plan.delete_jobs.clone(),
            plan.delete_secrets.clone(),
            plan.delete_registrations.clone(),
            plan.summary,
        );
        prop_assert_eq!(key(&with_memory), key(&restarted));
        prop_assert_eq!(run(&s), with_memory, "planning is deterministic");
    }

    #[test]
    fn a_poll_without_the_registrations_differs_only_in_their_cleanup(s in scenario()) {
        // What the listing rule lets go unlisted: no Jobs but finished ones without a Secret.
        let mut s = s;
        s.owned.retain(|j| j.state.is_finished() && !j.secret_exists);
        let own: Vec<OwnedJob> = pool_jobs(&s).cloned().collect();
        let idle = ListingInput {
            owned_jobs: &own,
            has_runner_secrets: false,
            registrations_changed: false,
            polls_without_listing: Some(0),
            warm_runners: &[],
        };
        prop_assert!(!lists_registrations(&idle));
        let listed = run(&s);
        let unlisted = run_with(&s, UID, &s.owned, &[], Some(s.previous.clone()));
        prop_assert_eq!(&listed.create_jobs, &unlisted.create_jobs);
        prop_assert_eq!(&listed.delete_jobs, &unlisted.delete_jobs);
        prop_assert_eq!(&listed.delete_secrets, &unlisted.delete_secrets);
        prop_assert_eq!(&listed.status, &unlisted.status);
        prop_assert_eq!(listed.summary, unlisted.summary);
        let requested = |plan: &Plan| -> Vec<String> {
            plan.create_secrets.iter().map(|r| r.job_name.clone()).collect()
        };
        prop_assert_eq!(requested(&listed), requested(&unlisted));
        // Left to the sweep: orphans, and stale registrations named like a new Job.
        prop_assert!(unlisted.delete_registrations.is_empty());
    }

    #[test]
    fn a_runner_that_may_be_running_a_task_is_never_deleted(s in scenario()) {
        let plan = run(&s);
        let jobs: BTreeMap<&str, &OwnedJob> = pool_jobs(&s).map(|j| (j.name.as_str(), j)).collect();
        let waiting = waiting_keys(&s);
        for deletion in &plan.delete_jobs {
            let job = jobs[deletion.name.as_str()];
            prop_assert!(!job.deleting);
            if deletion.reason == Reason::ForgejoJobNotWaiting {
                prop_assert!(!waiting.contains(&(job.forgejo_job_id, job.attempt)));
            }
            if job.state.is_finished() || job.runner_started_at.is_none() {
                continue;
            }
            prop_assert_eq!(s.path, RunnerPath::Ephemeral, "legacy runners that started are left alone");
            let own: Vec<_> = s.registrations.iter()
                .filter(|r| r.name == job.name)
                .filter(|r| job.runner_uuid.as_ref().is_none_or(|u| u == &r.uuid))
                .collect();
            prop_assert!(!own.is_empty(), "a consumed ephemeral runner is left to exit");
            prop_assert!(own.iter().all(|r| r.status != RegistrationStatus::Active), "an active runner was deleted");
        }
        for deletion in &plan.delete_registrations {
            let reg = s.registrations.iter().find(|r| r.id == deletion.id).unwrap();
            let live_owner = jobs.get(reg.name.as_str())
                .filter(|j| j.is_live() && !deleted_names(&plan).contains(j.name.as_str()));
            if let Some(job) = live_owner {
                prop_assert_eq!(deletion.reason, Reason::RegistrationSuperseded);
                prop_assert!(job.runner_uuid.as_ref().is_some_and(|u| u != &reg.uuid));
            }
        }
    }
}

/// One round of a simulated run: what happens in Forgejo and the cluster after a reconcile.
#[derive(Debug, Clone)]
struct Round {
    new_jobs: Vec<usize>,
    seed: u64,
    cancel_one: bool,
    seconds: i64,
    restart: bool,
    settle: bool,
}

fn rounds() -> impl Strategy<Value = Vec<Round>> {
    let round = (
        prop::collection::vec(0..3usize, 0..4),
        any::<u64>(),
        any::<bool>(),
        0..150i64,
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.7),
    )
        .prop_map(
            |(new_jobs, seed, cancel_one, seconds, restart, settle)| Round {
                new_jobs,
                seed,
                cancel_one,
                seconds,
                restart,
                settle,
            },
        );
    prop::collection::vec(round, 1..12)
}

/// A cheap deterministic coin for simulated events.
fn coin(seed: u64, salt: i64) -> bool {
    (seed ^ (salt as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .count_ones()
        .is_multiple_of(2)
}

struct Simulation {
    max_runners: i32,
    path: RunnerPath,
    forgejo: BTreeMap<i64, ForgejoJob>,
    next_id: i64,
    world: World,
    status: Option<Vec<ScheduledJob>>,
    now: i64,
    /// What the operator remembers between plans: when each Job's job was first seen not
    /// waiting.
    not_waiting_since: Vec<(String, k8s_openapi::apimachinery::pkg::apis::meta::v1::Time)>,
}

impl Simulation {
    fn reconcile(&mut self) -> Plan {
        let mut rd = pool(UID, "docker:docker://node:22,x:host", self.max_runners);
        rd.status = self
            .status
            .clone()
            .map(|scheduled_jobs| api::RunnerDeploymentStatus {
                scheduled_jobs,
                ..api::RunnerDeploymentStatus::default()
            });
        let jobs: Vec<ForgejoJob> = self.forgejo.values().cloned().collect();
        let owned = self.world.owned();
        let now = at(self.now);
        let input = PlanInput {
            pool: &rd,
            forgejo_jobs: Some(&jobs),
            owned_jobs: &owned,
            registrations: &self.world.registrations,
            runner_path: self.path,
            timeouts: Timeouts::default(),
            cache: None,
            warm: scheduler::WarmInput {
                registrations_listed_at: Some(&now),
                ..Default::default()
            },
            not_waiting_since: &self.not_waiting_since,
        };
        let plan = scheduler::plan(&input, now.clone()).unwrap();
        self.not_waiting_since
            .retain(|(name, _)| plan.not_waiting_jobs.contains(name));
        for name in &plan.not_waiting_jobs {
            if !self.not_waiting_since.iter().any(|(n, _)| n == name) {
                self.not_waiting_since.push((name.clone(), now.clone()));
            }
        }
        self.world.apply(&plan, &at(self.now));
        self.status = Some(plan.status.scheduled_jobs.clone());
        plan
    }

    fn live(&self) -> usize {
        self.world.jobs.values().filter(|j| j.is_live()).count()
    }

    /// Pods start; a started runner takes its own job (v15) or any waiting one (legacy);
    /// running jobs finish.
    fn events(&mut self, round: &Round) {
        let now = at(self.now);
        let names: Vec<String> = self.world.jobs.keys().cloned().collect();
        for name in names {
            let job = self.world.jobs[&name].clone();
            if !job.is_live() || !job.secret_exists {
                continue;
            }
            if job.runner_started_at.is_none() {
                if !coin(round.seed, job.forgejo_job_id) {
                    continue;
                }
                let taken = match self.path {
                    RunnerPath::Ephemeral => self
                        .forgejo
                        .get(&job.forgejo_job_id)
                        .filter(|f| f.is_waiting() && f.attempt_number() == job.attempt)
                        .map(|f| f.id),
                    RunnerPath::Legacy => {
                        self.forgejo.values().find(|f| f.is_waiting()).map(|f| f.id)
                    }
                };
                let entry = self.world.jobs.get_mut(&name).unwrap();
                entry.runner_started_at = Some(now.clone());
                if let Some(id) = taken {
                    let forgejo_job = self.forgejo.get_mut(&id).unwrap();
                    forgejo_job.status = "running".into();
                    forgejo_job.task_id = 1;
                    for r in self
                        .world
                        .registrations
                        .iter_mut()
                        .filter(|r| r.name == name)
                    {
                        r.status = RegistrationStatus::Active;
                    }
                }
            } else if coin(round.seed.rotate_left(7), job.forgejo_job_id) {
                // The runner's task (if any) ends and the runner exits.
                let active = self
                    .world
                    .registrations
                    .iter()
                    .any(|r| r.name == name && r.status == RegistrationStatus::Active);
                let finished_job = match self.path {
                    RunnerPath::Ephemeral if active => Some(job.forgejo_job_id),
                    RunnerPath::Ephemeral => None,
                    RunnerPath::Legacy => self
                        .forgejo
                        .values()
                        .find(|f| !f.is_waiting())
                        .map(|f| f.id),
                };
                if let Some(id) = finished_job {
                    self.forgejo.remove(&id);
                }
                self.world.registrations.retain(|r| r.name != name);
                let entry = self.world.jobs.get_mut(&name).unwrap();
                entry.state = JobState::Succeeded;
                entry.finished_at = Some(now.clone());
            }
        }
        if round.cancel_one
            && let Some(id) = self.forgejo.values().find(|f| f.is_waiting()).map(|f| f.id)
        {
            self.forgejo.remove(&id);
        }
        for runs_on in &round.new_jobs {
            self.next_id += 1;
            let labels: &[&str] = [&["docker"][..], &["x"], &["docker", "x"]][*runs_on];
            self.forgejo.insert(
                self.next_id,
                forgejo_job(self.next_id, 1, labels, "waiting"),
            );
        }
        if round.settle {
            self.world.settle();
        }
        self.now += round.seconds;
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn simulated_runs_stay_within_capacity_and_converge(
        max_runners in 1..5i32,
        legacy in any::<bool>(),
        rounds in rounds(),
    ) {
        let mut sim = Simulation {
            max_runners,
            path: if legacy { RunnerPath::Legacy } else { RunnerPath::Ephemeral },
            forgejo: BTreeMap::new(),
            next_id: 0,
            world: World::default(),
            status: None,
            now: 0,
            not_waiting_since: Vec::new(),
        };
        for round in &rounds {
            if round.restart {
                // A restarted operator has lost its status cache and what it remembered.
                sim.status = None;
                sim.not_waiting_since.clear();
            }
            sim.reconcile();
            prop_assert!(sim.live() <= max_runners as usize, "{} live Jobs > {max_runners}", sim.live());
            sim.events(round);
        }
        // Quiet time: no new jobs, deletions complete, grace periods run out.
        let quiet = Round { new_jobs: vec![], seed: 0, cancel_one: false, seconds: 300, restart: false, settle: true };
        for _ in 0..4 {
            sim.reconcile();
            prop_assert!(sim.live() <= max_runners as usize);
            sim.world.settle();
            sim.now += quiet.seconds;
        }
        let plan = sim.reconcile();
        let waiting: Vec<&ForgejoJob> = sim.forgejo.values().filter(|f| f.is_waiting()).collect();
        for job in waiting {
            let name = job_name(UID, job.id, job.attempt_number());
            let has_job = sim.world.jobs.get(&name).is_some_and(|j| j.is_live());
            prop_assert!(
                has_job || sim.live() == max_runners as usize,
                "Forgejo job {} waits without a Job below capacity; plan: {:#?}", job.id, plan
            );
        }
    }
}
