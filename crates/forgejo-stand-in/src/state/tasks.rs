//! Actions tasks: one for each job attempt a runner took, whose status follows its job until
//! the attempt ends, with the times Forgejo lists (`run_started_at`, `updated_at`). A new
//! attempt gets a new task; the old one stays listed with its result.

use serde_json::{Value, json};

use super::State;
use forgejo::ActionTask;

/// A task as the stand-in stores it.
#[derive(Debug, Clone)]
pub(crate) struct TaskRecord {
    /// The task id (the job's `task_id` while this is its current attempt).
    pub id: i64,
    pub job_id: i64,
    pub repo_id: i64,
    /// `owner/repo`.
    pub repository: String,
    /// The job's name.
    pub name: String,
    /// The run's number (the stand-in's run id, as in the task's context).
    pub run_number: i64,
    /// The job's status while the task is its current one; its result once ended.
    pub status: String,
    /// When a runner took it, in Unix seconds (Forgejo keeps whole seconds): both its
    /// `created_at` and its `run_started_at`, as Forgejo sets both when it creates the task.
    pub started: i64,
    /// When it last changed (a status or a report), in Unix seconds.
    pub updated: i64,
}

/// The commit every stand-in run is for (as in the task's context).
const HEAD_SHA: &str = "0000000000000000000000000000000000000000";

impl TaskRecord {
    /// The client's view of this task.
    pub fn to_api(&self) -> ActionTask {
        ActionTask {
            id: self.id,
            name: self.name.clone(),
            status: self.status.clone(),
            run_number: self.run_number,
            head_sha: HEAD_SHA.into(),
            created_at: jiff::Timestamp::from_second(self.started).ok(),
            run_started_at: jiff::Timestamp::from_second(self.started).ok(),
            updated_at: jiff::Timestamp::from_second(self.updated).ok(),
        }
    }

    /// Forgejo's `ActionTask` JSON, every field of it.
    pub fn listing_json(&self, base_url: &str) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "head_branch": "main",
            "head_sha": HEAD_SHA,
            "run_number": self.run_number,
            "event": "push",
            "display_title": self.name,
            "status": self.status,
            "workflow_id": format!("{}.yml", self.name),
            "url": format!("{base_url}/{}/actions/runs/{}", self.repository, self.run_number),
            "created_at": rfc3339(self.started),
            "updated_at": rfc3339(self.updated),
            "run_started_at": rfc3339(self.started),
        })
    }
}

/// Unix seconds as RFC 3339, as Forgejo writes its times.
fn rfc3339(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Now, in whole seconds.
fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

impl State {
    /// Starts the task of the attempt a runner just took (the job's current `task_id`).
    pub(super) fn start_task(&mut self, job_id: i64) {
        let Some(job) = self.jobs.get(&job_id) else {
            return;
        };
        let at = now();
        let task = TaskRecord {
            id: job.task_id,
            job_id,
            repo_id: job.repo_id,
            repository: job.repository.clone(),
            name: job.name.clone(),
            run_number: job.run_id,
            status: job.status.clone(),
            started: at,
            updated: at,
        };
        self.tasks.insert(task.id, task);
    }

    /// Gives a job's current task, if it has one, the job's status.
    pub(super) fn task_follows_job(&mut self, job_id: i64) {
        let Some(job) = self.jobs.get(&job_id) else {
            return;
        };
        if let Some(task) = self.tasks.get_mut(&job.task_id)
            && task.job_id == job_id
            && task.status != job.status
        {
            task.status = job.status.clone();
            task.updated = now();
        }
    }

    /// Marks a task changed by a runner's report (`UpdateTask`, `UpdateLog`).
    pub fn touch_task(&mut self, task_id: i64) {
        if let Some(task) = self.tasks.get_mut(&task_id) {
            task.updated = now();
        }
    }

    /// Moves every task's times `seconds` into the past, as if it had run that long ago.
    pub fn age_tasks(&mut self, seconds: i64) {
        for task in self.tasks.values_mut() {
            task.started = task.started.saturating_sub(seconds);
            task.updated = task.updated.saturating_sub(seconds);
        }
    }

    /// The tasks of repository `repo_id`, newest first; with `statuses`, only those.
    pub fn repository_tasks(&self, repo_id: i64, statuses: Option<&[String]>) -> Vec<&TaskRecord> {
        self.tasks
            .values()
            .rev()
            .filter(|task| task.repo_id == repo_id)
            .filter(|task| statuses.is_none_or(|wanted| wanted.contains(&task.status)))
            .collect()
    }
}
