//! What the stand-in holds: owners and repositories (names ↔ ids), jobs, their tasks,
//! runners, registration tokens, webhooks, injected faults and the requests it received. No I/O here
//! (webhook deliveries are only queued).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::random::{random_hex, random_uuid};
use super::webhooks::Webhooks;
use super::{Fault, RecordedRequest, StandInConfig, Times};
use forgejo::{ActionRunJob, Runner, Scope, ServerVersion};

mod jobs;
mod repositories;
mod tasks;
pub(super) use repositories::RepositoryRecord;
pub(super) use tasks::TaskRecord;

/// A job as the stand-in stores it.
#[derive(Debug, Clone)]
pub(super) struct JobRecord {
    pub id: i64,
    pub owner_id: i64,
    pub repo_id: i64,
    pub run_id: i64,
    pub name: String,
    pub needs: Vec<String>,
    pub runs_on: Vec<String>,
    pub task_id: i64,
    pub status: String,
    pub attempt: i64,
    pub handle: String,
    /// The runner that took the current attempt.
    pub runner_id: Option<i64>,
    /// `owner/repo`.
    pub repository: String,
    /// The shell lines of its `run:` steps.
    pub steps: Vec<String>,
    /// Log rows received for the current attempt, in order.
    pub log_rows: Vec<String>,
}

impl JobRecord {
    /// The client's view of this job (with every field, whatever the version).
    pub fn to_api(&self) -> ActionRunJob {
        ActionRunJob {
            id: self.id,
            repo_id: self.repo_id,
            owner_id: self.owner_id,
            name: self.name.clone(),
            needs: self.needs.clone(),
            runs_on: self.runs_on.clone(),
            task_id: self.task_id,
            status: self.status.clone(),
            attempt: Some(self.attempt),
            handle: Some(self.handle.clone()).filter(|h| !h.is_empty()),
            run_id: Some(self.run_id),
            html_url: None,
        }
    }
}

/// A runner as the stand-in stores it.
#[derive(Debug, Clone)]
pub(super) struct RunnerRecord {
    pub id: i64,
    pub uuid: String,
    pub name: String,
    pub description: String,
    pub ephemeral: bool,
    pub owner_id: i64,
    pub repo_id: i64,
    /// The runner token (for the runner service's `x-runner-token`).
    pub token: String,
    /// Label names from `Declare` or `Register`; empty until it connects.
    pub labels: Vec<String>,
    /// When it last called the runner service (Forgejo's `LastOnline`).
    pub last_online: Option<Instant>,
    /// When it last reported on a task, `UpdateTask` or `UpdateLog` (Forgejo's `LastActive`).
    pub last_active: Option<Instant>,
    /// Whether it was ever handed a task (an ephemeral runner gets one only).
    pub had_task: bool,
    /// Whether a test handed it its task ([`State::take_job`]) and stands for a runner
    /// that reports on it every second: `active` until the task ends.
    pub reports_by_test: bool,
}

/// After this long without a call, Forgejo lists a runner as `offline` (`RunnerOfflineTime`).
pub const RUNNER_OFFLINE_AFTER: Duration = Duration::from_secs(60);
/// After this long without a report on a task, an online runner is `idle`, not `active`
/// (`RunnerIdleTime`).
pub const RUNNER_IDLE_AFTER: Duration = Duration::from_secs(10);

impl RunnerRecord {
    /// The client's view of this runner.
    pub fn to_api(&self) -> Runner {
        Runner {
            id: self.id,
            uuid: self.uuid.clone(),
            name: self.name.clone(),
            status: self.status().into(),
            ephemeral: self.ephemeral,
            labels: self.labels.clone(),
            description: self.description.clone(),
            owner_id: Some(self.owner_id),
            repo_id: Some(self.repo_id),
            version: Some(String::new()),
        }
    }

    /// Forgejo's `Status()`: `offline` when not heard from for a minute, else `active` when
    /// it reported on a task in the last 10 s, else `idle`. A runner is not `active` from
    /// fetching a task, only from its first report on it.
    pub fn status(&self) -> &'static str {
        let within =
            |at: Option<Instant>, limit: Duration| at.is_some_and(|at| at.elapsed() <= limit);
        if self.reports_by_test {
            "active"
        } else if !within(self.last_online, RUNNER_OFFLINE_AFTER) {
            "offline"
        } else if within(self.last_active, RUNNER_IDLE_AFTER) {
            "active"
        } else {
            "idle"
        }
    }

    /// Forgejo's `Editable(ownerID, repoID)`: whether the scope may delete this runner.
    pub fn editable_from(&self, owner_id: i64, repo_id: i64) -> bool {
        if owner_id == 0 && repo_id == 0 {
            return true;
        }
        (owner_id > 0 && self.owner_id == owner_id) || (repo_id > 0 && self.repo_id == repo_id)
    }
}

/// A runner-service fetch (`FetchTask` or `FetchSingleTask`) and what it handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// The fetching runner's uuid.
    pub runner_uuid: String,
    /// The fetching runner's name.
    pub runner_name: String,
    /// The handle asked for (`FetchSingleTask`), `None` for `FetchTask`.
    pub handle: Option<String>,
    /// The job handed out, if any.
    pub job_id: Option<i64>,
    /// The task handed out, if any.
    pub task_id: Option<i64>,
    /// When it was answered.
    pub at: std::time::Instant,
}

/// A runner-service call as received: the procedure and the headers forgejo-runner sends,
/// never the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerCall {
    /// The procedure, e.g. `Declare`, `FetchSingleTask`, `Ping`.
    pub procedure: String,
    /// `x-runner-uuid`, if sent.
    pub runner_uuid: Option<String>,
    /// Whether `x-runner-token` was sent.
    pub had_token: bool,
    /// `user-agent`, if sent.
    pub user_agent: Option<String>,
    /// `content-type`, if sent.
    pub content_type: Option<String>,
    /// `connect-protocol-version`, if sent.
    pub connect_protocol_version: Option<String>,
    /// `connect-timeout-ms`, if sent.
    pub connect_timeout_ms: Option<String>,
    /// `x-runner-request-key`, if sent.
    pub request_key: Option<String>,
}

/// An injected fault and how often it still fires.
#[derive(Debug, Clone)]
struct FaultRule {
    prefix: String,
    fault: Fault,
    remaining: Option<u32>,
}

/// Everything the stand-in knows; guarded by one mutex, never held across an await.
#[derive(Debug)]
pub(super) struct State {
    pub config: StandInConfig,
    pub major: u64,
    pub base_url: String,
    owner_ids: HashMap<String, i64>,
    repo_ids: HashMap<(String, String), i64>,
    next_owner_id: i64,
    next_repo_id: i64,
    next_job_id: i64,
    next_run_id: i64,
    next_task_id: i64,
    next_runner_id: i64,
    pub jobs: BTreeMap<i64, JobRecord>,
    /// Tasks by id: one per job attempt a runner took.
    pub tasks: BTreeMap<i64, TaskRecord>,
    pub runners: BTreeMap<i64, RunnerRecord>,
    registration_tokens: HashMap<String, String>,
    /// (owner_id, repo_id) of each registration token's scope.
    registration_scopes: HashMap<String, (i64, i64)>,
    faults: Vec<FaultRule>,
    pub requests: Vec<RecordedRequest>,
    /// Runner-service fetches, oldest first.
    pub fetches: Vec<Fetch>,
    /// Runner-service calls, oldest first.
    pub runner_calls: Vec<RunnerCall>,
    /// Webhooks and their deliveries.
    pub webhooks: Webhooks,
}

impl State {
    pub fn new(config: StandInConfig, base_url: String, webhooks: Webhooks) -> Self {
        let major = major_of(&config.version);
        Self {
            config,
            major,
            base_url,
            owner_ids: HashMap::new(),
            repo_ids: HashMap::new(),
            next_owner_id: 1,
            next_repo_id: 1,
            next_job_id: 1,
            next_run_id: 1,
            next_task_id: 1,
            next_runner_id: 1,
            jobs: BTreeMap::new(),
            tasks: BTreeMap::new(),
            runners: BTreeMap::new(),
            registration_tokens: HashMap::new(),
            registration_scopes: HashMap::new(),
            faults: Vec::new(),
            requests: Vec::new(),
            fetches: Vec::new(),
            runner_calls: Vec::new(),
            webhooks,
        }
    }

    /// Switches the Forgejo version the stand-in behaves as.
    pub fn set_version(&mut self, version: String) {
        self.major = major_of(&version);
        self.config.version = version;
    }

    /// Whether an organization or user of that name exists.
    pub fn owner_exists(&self, name: &str) -> bool {
        self.config
            .owners
            .as_ref()
            .is_none_or(|owners| owners.iter().any(|o| o == name))
    }

    /// The id of an owner, assigned on first sight.
    pub fn owner_id(&mut self, name: &str) -> i64 {
        if let Some(id) = self.owner_ids.get(name) {
            return *id;
        }
        let id = self.next_owner_id;
        self.next_owner_id += 1;
        self.owner_ids.insert(name.to_owned(), id);
        id
    }

    /// The id of a repository, assigned on first sight.
    pub fn repo_id(&mut self, owner: &str, repo: &str) -> i64 {
        self.owner_id(owner);
        let key = (owner.to_owned(), repo.to_owned());
        if let Some(id) = self.repo_ids.get(&key) {
            return *id;
        }
        let id = self.next_repo_id;
        self.next_repo_id += 1;
        self.repo_ids.insert(key, id);
        id
    }

    /// The (owner_id, repo_id) a scope stands for, as Forgejo passes them to its handlers.
    pub fn scope_ids(&mut self, scope: &Scope) -> (i64, i64) {
        match scope {
            Scope::Repository { owner, repo } => (0, self.repo_id(owner, repo)),
            Scope::Organization(org) => (self.owner_id(org), 0),
            Scope::User => {
                let user = self.config.user.clone();
                (self.owner_id(&user), 0)
            }
            Scope::Instance => (0, 0),
        }
    }

    /// Registers a runner in a scope.
    pub fn add_runner(
        &mut self,
        scope: &Scope,
        name: &str,
        description: &str,
        ephemeral: bool,
    ) -> (RunnerRecord, String) {
        let (owner_id, repo_id) = self.scope_ids(scope);
        self.add_runner_in(owner_id, repo_id, name, description, ephemeral)
    }

    /// Registers a runner for (owner_id, repo_id); returns it and its token.
    pub fn add_runner_in(
        &mut self,
        owner_id: i64,
        repo_id: i64,
        name: &str,
        description: &str,
        ephemeral: bool,
    ) -> (RunnerRecord, String) {
        let id = self.next_runner_id;
        self.next_runner_id += 1;
        let record = RunnerRecord {
            id,
            uuid: random_uuid(),
            name: name.to_owned(),
            description: description.to_owned(),
            ephemeral,
            owner_id,
            repo_id,
            token: random_hex(40),
            labels: Vec::new(),
            last_online: None,
            last_active: None,
            had_task: false,
            reports_by_test: false,
        };
        self.runners.insert(id, record.clone());
        let token = record.token.clone();
        (record, token)
    }

    /// The scope's legacy registration token (stable until the stand-in ends).
    pub fn registration_token(&mut self, scope: &Scope) -> String {
        let ids = self.scope_ids(scope);
        let token = self
            .registration_tokens
            .entry(scope.to_string())
            .or_insert_with(|| random_hex(43))
            .clone();
        self.registration_scopes.insert(token.clone(), ids);
        token
    }

    /// The (owner_id, repo_id) a registration token registers runners in.
    pub fn registration_scope(&self, token: &str) -> Option<(i64, i64)> {
        self.registration_scopes.get(token).copied()
    }

    pub fn inject_fault(&mut self, prefix: String, fault: Fault, times: Times) {
        let remaining = match times {
            Times::Once => Some(1),
            Times::N(n) => Some(n),
            Times::Always => None,
        };
        self.faults.push(FaultRule {
            prefix,
            fault,
            remaining,
        });
    }

    pub fn clear_faults(&mut self) {
        self.faults.clear();
    }

    /// The first fault whose prefix matches `path`, used up by one.
    pub fn take_fault(&mut self, method: &str, path: &str) -> Option<Fault> {
        let matches = |prefix: &str| match prefix.split_once(' ') {
            Some((rule_method, rule_path)) => method == rule_method && path.starts_with(rule_path),
            None => path.starts_with(prefix),
        };
        let index = self.faults.iter().position(|rule| matches(&rule.prefix))?;
        let rule = &mut self.faults[index];
        let fault = rule.fault.clone();
        if let Some(remaining) = &mut rule.remaining {
            *remaining = remaining.saturating_sub(1);
            if *remaining == 0 {
                self.faults.remove(index);
            }
        }
        Some(fault)
    }
}

fn major_of(version: &str) -> u64 {
    ServerVersion::parse(version).map_or(0, |v| v.major)
}
