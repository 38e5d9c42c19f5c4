//! Builders for pools, Forgejo jobs and owned Jobs, and a tiny world that applies plans.

#![allow(dead_code)]

use std::collections::BTreeMap;

use api::{JobTemplate, RunnerDeployment, RunnerDeploymentSpec, TokenSecretRef};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use scheduler::{
    ForgejoJob, JobState, OwnedJob, Plan, PlanInput, RegistrationStatus, RunnerPath,
    RunnerRegistration, Timeouts,
};

/// The uid of the default test pool.
pub const UID: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
/// The name of the Secret with the Forgejo API token (must never reach a pod).
pub const API_TOKEN_SECRET: &str = "forgejo-api-token";
/// The key of the API token in that Secret.
pub const API_TOKEN_KEY: &str = "api-token-key";

/// A fixed instant plus `seconds`.
pub fn at(seconds: i64) -> Time {
    Time(Timestamp::from_second(1_800_000_000 + seconds).unwrap())
}

/// A RunnerDeployment `faro` in namespace `ci` with these labels and cap.
pub fn pool(uid: &str, labels: &str, max_runners: i32) -> RunnerDeployment {
    let mut rd = RunnerDeployment::new(
        "faro",
        RunnerDeploymentSpec {
            forgejo_server: "https://code.example.com/".into(),
            organization: Some("faro".into()),
            repository: None,
            user: None,
            instance: None,
            labels: labels.into(),
            token_secret_ref: TokenSecretRef {
                name: API_TOKEN_SECRET.into(),
                key: API_TOKEN_KEY.into(),
            },
            poll_interval: "30s".into(),
            max_runners,
            runner_image: "data.forgejo.org/forgejo/runner:12.8.2".into(),
            ttl_seconds_after_finished: 300,
            active_deadline_seconds: 10_800,
            job_template: None,
            cache: None,
            warm_runners: None,
            webhook: None,
        },
    );
    rd.metadata.namespace = Some("ci".into());
    rd.metadata.uid = Some(uid.into());
    rd.metadata.generation = Some(3);
    rd
}

/// The pool with a user job template.
pub fn with_template(mut rd: RunnerDeployment, template: serde_json::Value) -> RunnerDeployment {
    rd.spec.job_template = Some(JobTemplate(template));
    rd
}

/// A Forgejo job.
pub fn forgejo_job(id: i64, attempt: i64, runs_on: &[&str], status: &str) -> ForgejoJob {
    ForgejoJob {
        id,
        attempt: Some(attempt),
        handle: Some(format!("handle-{id}-{attempt}")),
        repo_id: 42,
        owner_id: 7,
        name: format!("build #{id}"),
        runs_on: runs_on.iter().map(|s| (*s).to_owned()).collect(),
        status: status.into(),
        task_id: if status == "waiting" { 0 } else { 1000 + id },
    }
}

/// A waiting Forgejo job.
pub fn waiting(id: i64, runs_on: &[&str]) -> ForgejoJob {
    forgejo_job(id, 1, runs_on, "waiting")
}

/// A live owned Job with its Secret, created at `created`.
pub fn live_job(name: &str, id: i64, attempt: i64, created: i64) -> OwnedJob {
    OwnedJob {
        name: name.into(),
        forgejo_job_id: id,
        attempt,
        created_at: Some(at(created)),
        state: JobState::Active,
        finished_at: None,
        deleting: false,
        runner_started_at: None,
        pod_waiting: Vec::new(),
        has_pod: true,
        pod_create_refused: None,
        secret_exists: true,
        runner_uuid: Some(format!("uuid-{name}")),
    }
}

/// Plans with default timeouts on the v15 path, with the registrations listed now and every
/// Job's Forgejo job seen not waiting since the Job was created (as the operator remembers
/// from earlier polls).
pub fn plan_for(
    rd: &RunnerDeployment,
    jobs: &[ForgejoJob],
    owned: &[OwnedJob],
    registrations: &[RunnerRegistration],
    now: Time,
) -> Plan {
    let not_waiting_since = seen_since_created(owned);
    let input = PlanInput {
        pool: rd,
        forgejo_jobs: Some(jobs),
        owned_jobs: owned,
        registrations,
        runner_path: RunnerPath::Ephemeral,
        timeouts: Timeouts::default(),
        cache: None,
        warm: scheduler::WarmInput {
            registrations_listed_at: Some(&now),
            ..Default::default()
        },
        not_waiting_since: &not_waiting_since,
    };
    scheduler::plan(&input, now.clone()).unwrap()
}

/// Each Job's Forgejo job seen not waiting since the Job was created: the earliest the
/// operator can have seen it so.
pub fn seen_since_created(owned: &[OwnedJob]) -> Vec<(String, Time)> {
    owned
        .iter()
        .filter_map(|job| Some((job.name.clone(), job.created_at.clone()?)))
        .collect()
}

/// What the cluster and Forgejo hold for one pool, as the operator would see it.
#[derive(Debug, Clone, Default)]
pub struct World {
    /// Jobs by name.
    pub jobs: BTreeMap<String, OwnedJob>,
    /// Registrations.
    pub registrations: Vec<RunnerRegistration>,
    /// The next registration id.
    pub next_registration: i64,
}

impl World {
    /// Applies a plan as the operator would, at `now`: deleted Jobs stay, being deleted.
    pub fn apply(&mut self, plan: &Plan, now: &Time) {
        let doomed: Vec<i64> = plan
            .delete_registrations
            .iter()
            .map(|r| r.id)
            .chain(
                plan.create_secrets
                    .iter()
                    .flat_map(|s| s.stale_registrations.iter().map(|r| r.id)),
            )
            .collect();
        self.registrations.retain(|r| !doomed.contains(&r.id));
        for deletion in &plan.delete_jobs {
            if let Some(job) = self.jobs.get_mut(&deletion.name) {
                job.deleting = true;
            }
        }
        for deletion in &plan.delete_secrets {
            if let Some(job) = self.jobs.get_mut(&deletion.name) {
                job.secret_exists = false;
                job.runner_uuid = None;
            }
        }
        for created in &plan.create_jobs {
            self.jobs.entry(created.name.clone()).or_insert(OwnedJob {
                name: created.name.clone(),
                forgejo_job_id: created.forgejo_job_id,
                attempt: created.attempt,
                created_at: Some(now.clone()),
                state: JobState::Active,
                finished_at: None,
                deleting: false,
                runner_started_at: None,
                pod_waiting: Vec::new(),
                has_pod: true,
                pod_create_refused: None,
                secret_exists: false,
                runner_uuid: None,
            });
        }
        for request in &plan.create_secrets {
            let Some(job) = self.jobs.get_mut(&request.job_name) else {
                continue;
            };
            if job.secret_exists {
                continue;
            }
            self.next_registration += 1;
            let uuid = format!("uuid-{}-{}", request.job_name, self.next_registration);
            self.registrations.push(RunnerRegistration {
                id: 10_000 + self.next_registration,
                uuid: uuid.clone(),
                name: request.job_name.clone(),
                status: RegistrationStatus::Offline,
            });
            job.secret_exists = true;
            job.runner_uuid = Some(uuid);
        }
    }

    /// Finishes deletions: Jobs being deleted disappear.
    pub fn settle(&mut self) {
        self.jobs.retain(|_, job| !job.deleting);
    }

    /// The owned Jobs, as a list.
    pub fn owned(&self) -> Vec<OwnedJob> {
        self.jobs.values().cloned().collect()
    }
}
