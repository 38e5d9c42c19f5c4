//! The data this crate exchanges with Forgejo: scopes, server versions, jobs, runners,
//! webhooks (`hooks.rs`), tasks (`tasks.rs`) and repositories by id (`repository.rs`).
//!
//! Field names follow Forgejo's `modules/structs` (`ActionRunJob`, `ActionRunner`,
//! `RegisterRunnerOptions`, `RegisterRunnerResponse`, `Hook`, `ActionTask`, `Repository`).
//! Unknown fields are ignored, absent optional ones default, and `null` lists read as empty.
//! No I/O happens here.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::Token;

/// Where runners and jobs live: a repository, an organization, the token's own user, or the instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// A repository `owner/repo` (`/api/v1/repos/{owner}/{repo}/…`).
    Repository {
        /// The user or organization that owns the repository.
        owner: String,
        /// The repository name.
        repo: String,
    },
    /// An organization (`/api/v1/orgs/{org}/…`); the token's user must own it.
    Organization(String),
    /// The user the token belongs to (`/api/v1/user/…`).
    User,
    /// The whole instance (`/api/v1/admin/…`); needs a site administrator's token.
    Instance,
}

impl Scope {
    /// Parses `owner/repo` into a repository scope; `None` unless there are exactly two non-empty parts.
    pub fn repository(owner_repo: &str) -> Option<Scope> {
        let (owner, repo) = owner_repo.split_once('/')?;
        if owner.is_empty() || repo.is_empty() || repo.contains('/') {
            return None;
        }
        Some(Scope::Repository {
            owner: owner.to_owned(),
            repo: repo.to_owned(),
        })
    }

    /// The token scope a request needs here (`read:organization`, `write:repository`, …).
    pub fn token_scope(&self, write: bool) -> &'static str {
        match (self, write) {
            (Scope::Repository { .. }, false) => "read:repository",
            (Scope::Repository { .. }, true) => "write:repository",
            (Scope::Organization(_), false) => "read:organization",
            (Scope::Organization(_), true) => "write:organization",
            (Scope::User, false) => "read:user",
            (Scope::User, true) => "write:user",
            (Scope::Instance, false) => "read:admin",
            (Scope::Instance, true) => "write:admin",
        }
    }

    /// Path segments of this scope's runners collection under `/api/v1`.
    ///
    /// `modern_admin` picks `admin/actions/runners` (Forgejo 15+) over `admin/runners`.
    pub(crate) fn runners_segments(&self, modern_admin: bool) -> Vec<&str> {
        match self {
            Scope::Repository { owner, repo } => vec!["repos", owner, repo, "actions", "runners"],
            Scope::Organization(org) => vec!["orgs", org, "actions", "runners"],
            Scope::User => vec!["user", "actions", "runners"],
            Scope::Instance if modern_admin => vec!["admin", "actions", "runners"],
            Scope::Instance => vec!["admin", "runners"],
        }
    }

    /// What a 403 here usually means, for error messages.
    pub(crate) fn forbidden_hint(&self, write: bool) -> &'static str {
        match (self, write) {
            (Scope::Repository { .. }, false) => {
                "the token needs the read:repository scope and its user needs admin rights on the repository"
            }
            (Scope::Repository { .. }, true) => {
                "the token needs the write:repository scope and its user needs admin rights on the repository"
            }
            (Scope::Organization(_), false) => {
                "the token needs the read:organization scope and its user must be an owner of the organization"
            }
            (Scope::Organization(_), true) => {
                "the token needs the write:organization scope and its user must be an owner of the organization"
            }
            (Scope::User, false) => "the token needs the read:user scope",
            (Scope::User, true) => "the token needs the write:user scope",
            (Scope::Instance, false) => {
                "the token needs the read:admin scope and must belong to a site administrator"
            }
            (Scope::Instance, true) => {
                "the token needs the write:admin scope and must belong to a site administrator"
            }
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Repository { owner, repo } => write!(f, "repository {owner}/{repo}"),
            Scope::Organization(org) => write!(f, "organization {org}"),
            Scope::User => f.write_str("user"),
            Scope::Instance => f.write_str("instance"),
        }
    }
}

/// A Forgejo server version, parsed from `GET /api/v1/version` (e.g. `15.0.3+gitea-1.22.0`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerVersion {
    /// Major version (Forgejo 11, 14, 15, …).
    pub major: u64,
    /// Minor version.
    pub minor: u64,
    /// Patch version.
    pub patch: u64,
    /// The string the server reported.
    pub raw: String,
}

impl ServerVersion {
    /// Parses `[v]MAJOR[.MINOR[.PATCH]][-pre][+build]`; `None` if there is no leading number.
    pub fn parse(raw: &str) -> Option<ServerVersion> {
        let trimmed = raw.trim();
        let core = trimmed.strip_prefix('v').unwrap_or(trimmed);
        let core = core.split(['+', '-', ' ']).next().unwrap_or_default();
        let mut numbers = core.split('.');
        let major = numbers.next()?.parse().ok()?;
        let mut next = || -> Option<u64> {
            match numbers.next() {
                None => Some(0),
                Some(part) => part.parse().ok(),
            }
        };
        let minor = next()?;
        let patch = next()?;
        Some(ServerVersion {
            major,
            minor,
            patch,
            raw: trimmed.to_owned(),
        })
    }

    /// Whether this is at least `major.minor.patch`.
    pub fn at_least(&self, major: u64, minor: u64, patch: u64) -> bool {
        (self.major, self.minor, self.patch) >= (major, minor, patch)
    }

    /// Forgejo 11+: `GET …/actions/runners/jobs` lists jobs waiting for a runner.
    pub fn supports_job_listing(&self) -> bool {
        self.major >= 11
    }

    /// Forgejo 14+: `…/runners/jobs` without `labels` lists every pending job of the scope.
    pub fn supports_unfiltered_jobs(&self) -> bool {
        self.major >= 14
    }

    /// Forgejo 15+: runners are registered (`ephemeral`), listed and deleted through the API,
    /// and jobs carry `attempt` and `handle`.
    pub fn supports_ephemeral_runners(&self) -> bool {
        self.major >= 15
    }

    /// Forgejo 15+: `…/actions/tasks` honours `status=` (11–14 ignore it and list every task).
    pub fn filters_tasks_by_status(&self) -> bool {
        self.major >= 15
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// A job of a workflow run, as `…/actions/runners/jobs` lists it (waiting or running).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRunJob {
    /// The job's id (stable across attempts).
    pub id: i64,
    /// The repository the job belongs to.
    #[serde(default)]
    pub repo_id: i64,
    /// The user or organization that owns the repository.
    #[serde(default)]
    pub owner_id: i64,
    /// The job's name (from the workflow).
    #[serde(default)]
    pub name: String,
    /// Ids of the jobs this one needs (`null` reads as empty).
    #[serde(default, deserialize_with = "null_as_default")]
    pub needs: Vec<String>,
    /// The label names the job runs on (`runs-on:`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub runs_on: Vec<String>,
    /// The task running the job; 0 until a runner takes it.
    #[serde(default)]
    pub task_id: i64,
    /// `waiting`, `running`, … (Forgejo lists both waiting and running jobs).
    pub status: String,
    /// Forgejo 15+: how many times the job has been attempted, this one included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i64>,
    /// Forgejo 15+: opaque id of this attempt (`forgejo-runner one-job --handle`); `""` reads as `None`.
    #[serde(
        default,
        deserialize_with = "empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub handle: Option<String>,
    /// The workflow run the job belongs to (newer Forgejo releases only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<i64>,
    /// Web page of the job (newer Forgejo releases only).
    #[serde(
        default,
        deserialize_with = "empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub html_url: Option<String>,
}

impl ActionRunJob {
    /// Whether the job still waits for a runner (`status == "waiting"`).
    pub fn is_waiting(&self) -> bool {
        self.status == "waiting"
    }
}

/// What to register a runner as (`RegisterRunnerOptions`, Forgejo 15+).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRunner {
    /// The runner's name (required, need not be unique).
    pub name: String,
    /// Free text shown in Forgejo's runner list.
    #[serde(default)]
    pub description: String,
    /// An ephemeral runner takes one task, and Forgejo deletes it when that task ends.
    #[serde(default)]
    pub ephemeral: bool,
}

/// A runner just registered through the API: what a pod needs to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredRunner {
    /// The runner's id (for `delete_runner`).
    pub id: i64,
    /// The runner's UUID (`forgejo-runner one-job --uuid`).
    pub uuid: String,
    /// The runner's own secret (`--token-url file:…`); not the API token.
    pub token: Token,
}

/// The wire shape of `RegisterRunnerResponse`.
#[derive(Deserialize)]
pub(crate) struct RegisteredRunnerWire {
    pub id: i64,
    pub uuid: String,
    pub token: String,
}

/// The wire shape of `{"token": "…"}` (registration tokens).
#[derive(Deserialize)]
pub(crate) struct TokenWire {
    pub token: String,
}

/// The wire shape of `{"version": "…"}`.
#[derive(Deserialize)]
pub(crate) struct VersionWire {
    pub version: String,
}

/// A runner known to Forgejo (`ActionRunner`, Forgejo 15+).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runner {
    /// The runner's id.
    pub id: i64,
    /// The runner's UUID.
    #[serde(default)]
    pub uuid: String,
    /// The runner's name (not unique).
    #[serde(default)]
    pub name: String,
    /// `offline`, `idle` or `active`.
    #[serde(default)]
    pub status: String,
    /// Whether the runner is ephemeral (one task, then deleted by Forgejo).
    #[serde(default)]
    pub ephemeral: bool,
    /// The labels the runner declared (empty until it connects).
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: Vec<String>,
    /// The description given at registration.
    #[serde(default)]
    pub description: String,
    /// The owning user or organization; 0 for repository and instance runners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<i64>,
    /// The owning repository; 0 for user, organization and instance runners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_id: Option<i64>,
    /// The forgejo-runner version the runner reported (empty until it connects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Reads `null` as the type's default (Forgejo sends `null` for empty Go slices).
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Reads `null` and `""` as `None`.
fn empty_as_none<'de, D>(deserializer: D) -> Result<Option<String>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(Option::<String>::deserialize(deserializer)?.filter(|s| !s.is_empty()))
}

mod hooks;
pub use hooks::{Hook, NewHook};
mod tasks;
pub use tasks::{ActionTask, FinishedTasks, RecentTasks};
pub(crate) use tasks::{FINISHED_STATUSES, TasksPageWire};
mod repository;
pub use repository::RepositoryName;
pub(crate) use repository::RepositoryWire;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_from_forgejo_strings() {
        let v = ServerVersion::parse("15.0.3+gitea-1.22.0").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (15, 0, 3));
        assert_eq!(v.raw, "15.0.3+gitea-1.22.0");
        let dev = ServerVersion::parse("11.0.0-dev-617-1d1e0f0df1+gitea-1.22.0").unwrap();
        assert_eq!((dev.major, dev.minor, dev.patch), (11, 0, 0));
        let short = ServerVersion::parse("v14.1").unwrap();
        assert_eq!((short.major, short.minor, short.patch), (14, 1, 0));
        assert!(ServerVersion::parse("").is_none());
        assert!(ServerVersion::parse("forgejo").is_none());
        assert!(ServerVersion::parse("15.x.1").is_none());
    }

    #[test]
    fn version_features_follow_the_major_version() {
        let at = |raw: &str| ServerVersion::parse(raw).unwrap();
        assert!(!at("10.0.3").supports_job_listing());
        assert!(at("11.0.0").supports_job_listing());
        assert!(!at("13.0.2").supports_unfiltered_jobs());
        assert!(at("14.0.0").supports_unfiltered_jobs());
        assert!(!at("14.0.9").supports_ephemeral_runners());
        assert!(at("15.0.0").supports_ephemeral_runners());
        assert!(!at("14.0.9").filters_tasks_by_status());
        assert!(at("15.0.0").filters_tasks_by_status());
        assert!(at("15.0.3").at_least(15, 0, 3));
        assert!(!at("15.0.3").at_least(15, 1, 0));
    }

    #[test]
    fn repository_scope_parses_owner_and_repo() {
        assert_eq!(
            Scope::repository("acme/app"),
            Some(Scope::Repository {
                owner: "acme".into(),
                repo: "app".into()
            })
        );
        assert_eq!(Scope::repository("acme"), None);
        assert_eq!(Scope::repository("acme/"), None);
        assert_eq!(Scope::repository("a/b/c"), None);
    }

    #[test]
    fn job_reads_nulls_and_empty_handle() {
        let job: ActionRunJob = serde_json::from_str(
            r#"{"id":1,"status":"waiting","needs":null,"runs_on":null,"handle":"","extra":{"x":1}}"#,
        )
        .unwrap();
        assert!(job.needs.is_empty());
        assert!(job.runs_on.is_empty());
        assert_eq!(job.handle, None);
        assert_eq!(job.attempt, None);
        assert!(job.is_waiting());
    }
}
