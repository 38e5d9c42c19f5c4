//! What the scheduler is told: plain data the operator gathers from Forgejo and Kubernetes.
//!
//! These types are the scheduler's own: it does not depend on the `forgejo` crate, so the
//! operator converts the client's answers into them. Nothing here holds a secret.

use std::time::Duration;

use api::RunnerDeployment;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::owned::OwnedJob;
use crate::pool::RunnerCache;
use crate::warm_runner::WarmRunner;

/// The `status` of a Forgejo job that waits for a runner.
pub const WAITING: &str = "waiting";
/// The `status` of a Forgejo job a runner took.
pub const RUNNING: &str = "running";

/// One Forgejo job as `GET …/actions/runners/jobs` lists it (waiting or running).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ForgejoJob {
    /// The job id.
    pub id: i64,
    /// The attempt (Forgejo v15+); `None` or 0 when unknown.
    pub attempt: Option<i64>,
    /// The attempt's opaque handle (Forgejo v15+); `None` or empty for older jobs.
    pub handle: Option<String>,
    /// The repository id.
    pub repo_id: i64,
    /// The repository owner's id.
    pub owner_id: i64,
    /// The job's human-readable name.
    pub name: String,
    /// The labels the job runs on (bare names).
    pub runs_on: Vec<String>,
    /// `waiting`, `running`, …
    pub status: String,
    /// The task running it, 0 until a runner takes it.
    pub task_id: i64,
}

impl ForgejoJob {
    /// Whether the job waits for a runner.
    pub fn is_waiting(&self) -> bool {
        self.status == WAITING
    }

    /// The attempt, 0 when unknown.
    pub fn attempt_number(&self) -> i64 {
        self.attempt.unwrap_or(0)
    }

    /// The handle, if Forgejo gave a non-empty one.
    pub fn handle(&self) -> Option<&str> {
        self.handle.as_deref().filter(|h| !h.is_empty())
    }
}

/// Forgejo's label rule, from `api` (the one place it lives for the operator's side).
pub use api::runs_on_labels;

/// What Forgejo says of a runner registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegistrationStatus {
    /// Not heard from for a while, or never.
    Offline,
    /// Polling for tasks.
    Idle,
    /// Running a task.
    Active,
}

impl RegistrationStatus {
    /// Reads Forgejo's `status` field (`offline`, `idle`, `active`); anything else is offline.
    pub fn from_api(status: &str) -> Self {
        match status {
            "active" => Self::Active,
            "idle" => Self::Idle,
            _ => Self::Offline,
        }
    }
}

/// One runner registration of the scope, as `GET …/actions/runners` lists it (v15+).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerRegistration {
    /// The registration id, for `DELETE …/actions/runners/{id}`.
    pub id: i64,
    /// The runner uuid.
    pub uuid: String,
    /// The runner name; ours are named after their Job.
    pub name: String,
    /// Whether it is offline, idle or running a task.
    pub status: RegistrationStatus,
}

/// How runner pods get credentials, from what the Forgejo server supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunnerPath {
    /// Forgejo v15+: the operator registers one ephemeral runner per Job through the API and
    /// the pod runs exactly the job attempt it was made for (`--handle`).
    Ephemeral,
    /// Forgejo v11–v14: the pod registers itself with the registration token and runs one
    /// job of its labels, not necessarily the one it was made for.
    Legacy,
}

/// How long the scheduler lets things be before it cleans them up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How long a Job whose Forgejo job no longer waits may keep a runner that runs nothing.
    pub not_waiting_grace: Duration,
    /// How long a pod may fail to pull an image or to build a container's config.
    pub image_pull_deadline: Duration,
    /// How long a pod may stay unschedulable (a cluster autoscaler may be adding a node).
    pub unschedulable_deadline: Duration,
    /// How long a Job may stay without any pod (admission such as Pod Security refuses it).
    pub pod_create_deadline: Duration,
    /// How long a finished Job whose Forgejo job still waits is kept before it is deleted
    /// so that a new one can be made (the pod ended without running the job).
    pub retry_after: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            not_waiting_grace: Duration::from_secs(60),
            image_pull_deadline: Duration::from_secs(5 * 60),
            unschedulable_deadline: Duration::from_secs(10 * 60),
            pod_create_deadline: Duration::from_secs(60),
            retry_after: Duration::from_secs(60),
        }
    }
}

/// Everything [`plan`](crate::plan) decides from.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// The pool: spec, metadata (uid, name, namespace, generation) and last status.
    pub pool: &'a RunnerDeployment,
    /// The jobs Forgejo listed for the pool's scope, waiting and running; `None` when the
    /// poll failed (then nothing is created and no Job is cleaned up for not waiting).
    pub forgejo_jobs: Option<&'a [ForgejoJob]>,
    /// The Kubernetes Jobs the pool owns.
    pub owned_jobs: &'a [OwnedJob],
    /// The runner registrations of the scope (Forgejo v15+; empty on the legacy path, when
    /// they could not be listed, or when the poll did not list them: see
    /// [`lists_registrations`](crate::lists_registrations)).
    pub registrations: &'a [RunnerRegistration],
    /// How runner pods get credentials.
    pub runner_path: RunnerPath,
    /// Grace periods and deadlines.
    pub timeouts: Timeouts,
    /// The shared cache runner pods mount (`None`: none).
    pub cache: Option<&'a RunnerCache>,
    /// The pool's warm runners and what their decisions read.
    pub warm: WarmInput<'a>,
    /// When each live Job's Forgejo job was first seen not waiting, by Job name, as
    /// [`Plan::not_waiting_jobs`](crate::Plan::not_waiting_jobs) told; a Job not in it is
    /// seen so now.
    pub not_waiting_since: &'a [(String, Time)],
}

/// What a plan is told about warm runners.
#[derive(Debug, Clone, Copy, Default)]
pub struct WarmInput<'a> {
    /// The pool's warm runner Jobs.
    pub runners: &'a [WarmRunner],
    /// When the registrations in [`PlanInput::registrations`] were listed; `None` when this
    /// poll did not list them (or on the legacy path).
    pub registrations_listed_at: Option<&'a Time>,
    /// When each waiting job attempt (id, attempt with 0 for unknown) was first seen; a
    /// job not in it is seen now.
    pub waiting_since: &'a [((i64, i64), Time)],
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn runs_on_needs_every_label() {
        assert!(runs_on_labels(&strings(&["a"]), ["a", "b"]));
        assert!(runs_on_labels(&strings(&["a", "b"]), ["a", "b"]));
        assert!(!runs_on_labels(&strings(&["a", "c"]), ["a", "b"]));
        assert!(!runs_on_labels(&[], ["a"]));
    }

    #[test]
    fn registration_status_reads_forgejo_words() {
        for (word, status) in [
            ("active", RegistrationStatus::Active),
            ("idle", RegistrationStatus::Idle),
            ("offline", RegistrationStatus::Offline),
            ("?", RegistrationStatus::Offline),
        ] {
            assert_eq!(RegistrationStatus::from_api(word), status, "{word}");
        }
    }

    #[test]
    fn empty_handle_is_no_handle() {
        let job = ForgejoJob {
            handle: Some(String::new()),
            ..ForgejoJob::default()
        };
        assert_eq!(job.handle(), None);
    }
}
