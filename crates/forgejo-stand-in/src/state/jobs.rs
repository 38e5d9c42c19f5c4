//! A job's life: added, taken by a runner, finished, re-run. Every status change goes
//! through [`State::change_status`], which tells the webhooks as Forgejo does, and which the
//! job's current task follows.

use serde_json::{Value, json};

use super::super::StandInJob;
use super::super::random::random_uuid;
use super::{JobRecord, State};

/// The payload `action` of a job's first waiting state in an attempt.
const NEW_JOB_ATTEMPT: &str = "new_job_attempt";

impl JobRecord {
    /// The job as the jobs listing shows it (`attempt` and `handle` from Forgejo 15).
    pub fn listing_json(&self, with_attempts: bool) -> Value {
        let mut value = json!({
            "id": self.id,
            "repo_id": self.repo_id,
            "owner_id": self.owner_id,
            "name": self.name,
            "needs": null_if_empty(&self.needs),
            "runs_on": null_if_empty(&self.runs_on),
            "task_id": self.task_id,
            "status": self.status,
        });
        if with_attempts && let Value::Object(map) = &mut value {
            map.insert("attempt".into(), json!(self.attempt));
            map.insert("handle".into(), json!(self.handle));
        }
        value
    }
}

/// Forgejo encodes an empty (nil) Go slice as `null`.
fn null_if_empty(items: &[String]) -> Value {
    if items.is_empty() {
        Value::Null
    } else {
        json!(items)
    }
}

impl State {
    /// Adds a job; ids and (on every version) a handle are assigned unless given.
    pub fn add_job(&mut self, job: StandInJob) -> JobRecord {
        let (owner, repo) = match job.repository.split_once('/') {
            Some((owner, repo)) => (owner.to_owned(), repo.to_owned()),
            None => (job.repository.clone(), String::new()),
        };
        let owner_id = self.owner_id(&owner);
        let repo_id = self.repo_id(&owner, &repo);
        let id = job.id.unwrap_or(self.next_job_id);
        self.next_job_id = self.next_job_id.max(id + 1);
        let run_id = self.next_run_id;
        self.next_run_id += 1;
        let record = JobRecord {
            id,
            owner_id,
            repo_id,
            run_id,
            name: job.name,
            needs: job.needs,
            runs_on: job.runs_on,
            task_id: 0,
            status: job.status,
            attempt: job.attempt,
            handle: job.handle.unwrap_or_else(random_uuid),
            runner_id: None,
            repository: job.repository,
            steps: job.steps,
            log_rows: Vec::new(),
        };
        self.jobs.insert(id, record.clone());
        self.change_status(id, &record.status, record.status == "waiting");
        record
    }

    /// Sets a job's status as a user or Forgejo would; false if unknown.
    pub fn set_job_status(&mut self, job_id: i64, status: &str) -> bool {
        self.change_status(job_id, status, false)
    }

    /// Marks a job taken by a runner: running, with a new task.
    pub fn take_job(&mut self, job_id: i64, runner_id: i64) -> bool {
        let task_id = self.next_task_id;
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return false;
        };
        self.next_task_id += 1;
        job.task_id = task_id;
        job.runner_id = Some(runner_id);
        self.start_task(job_id);
        if let Some(runner) = self.runners.get_mut(&runner_id) {
            runner.had_task = true;
            // A runner outside the runner service (a test's) reports on it until it ends.
            runner.reports_by_test = true;
        }
        self.change_status(job_id, "running", false)
    }

    /// Hands job `job_id` to runner `runner_id` as `FetchTask` does: the runner becomes
    /// `active` only once it reports on the task.
    pub fn assign_job(&mut self, job_id: i64, runner_id: i64) -> bool {
        let taken = self.take_job(job_id, runner_id);
        if let Some(runner) = self.runners.get_mut(&runner_id) {
            runner.reports_by_test = false;
        }
        taken
    }

    /// Ends a job's attempt; an ephemeral runner that ran it is deleted, as Forgejo does.
    pub fn finish_job(&mut self, job_id: i64, status: &str) -> bool {
        if !self.change_status(job_id, status, false) {
            return false;
        }
        let runner_id = self.jobs.get(&job_id).and_then(|job| job.runner_id);
        if let Some(runner_id) = runner_id {
            if self.runners.get(&runner_id).is_some_and(|r| r.ephemeral) {
                self.runners.remove(&runner_id);
            } else if let Some(runner) = self.runners.get_mut(&runner_id) {
                runner.last_active = None;
                runner.reports_by_test = false;
            }
        }
        true
    }

    /// Starts a new attempt of a job: waiting again, attempt + 1, a new handle.
    pub fn rerun_job(&mut self, job_id: i64) -> Option<JobRecord> {
        let job = self.jobs.get_mut(&job_id)?;
        job.attempt += 1;
        job.task_id = 0;
        job.runner_id = None;
        job.handle = random_uuid();
        job.log_rows.clear();
        self.change_status(job_id, "waiting", true);
        self.jobs.get(&job_id).cloned()
    }

    /// Sets a job's status; when it changed, or a new attempt begins, its hooks hear of it
    /// (`workflow_job_<status>`), as Forgejo's notifier tells them. False if unknown.
    fn change_status(&mut self, job_id: i64, status: &str, new_attempt: bool) -> bool {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return false;
        };
        let changed = job.status != status;
        job.status = status.to_owned();
        self.task_follows_job(job_id);
        let action = if new_attempt {
            NEW_JOB_ATTEMPT
        } else if matches!(status, "success" | "failure" | "cancelled" | "skipped") {
            "job_completed"
        } else {
            "job_status_changed"
        };
        if changed || new_attempt {
            self.job_event(job_id, action);
        }
        true
    }

    /// Hands the webhooks the `workflow_job` payload of a job as it stands now.
    fn job_event(&mut self, job_id: i64, action: &str) {
        let Some(job) = self.jobs.get(&job_id) else {
            return;
        };
        let (owner, repo) = job
            .repository
            .split_once('/')
            .unwrap_or((job.repository.as_str(), ""));
        let payload = json!({
            "action": action,
            "job": job.listing_json(self.major >= 15),
            "run": { "id": job.run_id, "title": job.name, "status": job.status },
            "repository": {
                "id": job.repo_id,
                "name": repo,
                "full_name": job.repository,
                "owner": { "id": job.owner_id, "login": owner },
            },
        });
        let event = format!("workflow_job_{}", job.status);
        let repository = job.repository.clone();
        self.webhooks
            .job_event(&event, action, job_id, &repository, &payload);
    }
}
