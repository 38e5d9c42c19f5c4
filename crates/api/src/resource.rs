//! The `RunnerDeployment` resource: spec, status, schema rules and typed accessors.

use std::borrow::Cow;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::cache::{CacheError, CacheMode, CacheSpec};
use crate::duration::{DurationError, parse_duration};
use crate::labels::{LABELS_PATTERN, LabelError, RunnerLabel, parse_labels};
use crate::names::{
    OWNER_NAME_PATTERN, OWNER_NAME_RULE, REPOSITORY_PATTERN, REPOSITORY_RULE,
    RESERVED_REPO_SUFFIX_PATTERN, SECRET_KEY_PATTERN, SECRET_KEY_RULE, SECRET_NAME_PATTERN,
    SECRET_NAME_RULE, is_owner_name, is_secret_key, is_secret_name, split_repository,
};
use crate::rules::{URL_MESSAGE, URL_RULE, is_http_url, matches_rule};
use crate::warm::{WarmRunnersError, WarmRunnersSpec, WarmRunnersStatus};

/// The API group of our resources.
pub const GROUP: &str = "forgejo.runners.dev";
/// The forgejo-runner image the pods use unless `spec.runnerImage` says otherwise.
pub const DEFAULT_RUNNER_IMAGE: &str = "data.forgejo.org/forgejo/runner:12.8.2";
/// The Secret key read when `spec.tokenSecretRef.key` is not given.
pub const DEFAULT_TOKEN_KEY: &str = "token";

/// A pool of one-shot Forgejo runners: one Kubernetes Job per Forgejo job waiting on `labels`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "forgejo.runners.dev",
    version = "v1alpha1",
    kind = "RunnerDeployment",
    namespaced,
    derive = "PartialEq",
    shortname = "rd",
    doc = "A pool of one-shot Forgejo Actions runners, one Kubernetes Job per waiting job.",
    status = "RunnerDeploymentStatus",
    printcolumn = r#"{"name": "Server", "type": "string", "jsonPath": ".spec.forgejoServer"}"#,
    printcolumn = r#"{"name": "Scope", "type": "string", "jsonPath": ".status.scope"}"#,
    printcolumn = r#"{"name": "Labels", "type": "string", "jsonPath": ".spec.labels"}"#,
    printcolumn = r#"{"name": "Waiting", "type": "integer", "jsonPath": ".status.waitingJobs"}"#,
    printcolumn = r#"{"name": "Oldest Wait", "type": "date", "jsonPath": ".status.oldestWaitingSince"}"#,
    printcolumn = r#"{"name": "Active", "type": "integer", "jsonPath": ".status.activeJobs"}"#,
    printcolumn = r#"{"name": "Warm Idle", "type": "integer", "jsonPath": ".status.warmRunners.idle"}"#,
    printcolumn = r#"{"name": "Warm Busy", "type": "integer", "jsonPath": ".status.warmRunners.busy"}"#,
    printcolumn = r#"{"name": "Last Poll", "type": "date", "jsonPath": ".status.lastPollTime"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new(SCOPE_RULE).message(SCOPE_MESSAGE))]
#[serde(rename_all = "camelCase")]
pub struct RunnerDeploymentSpec {
    /// Base URL of the Forgejo server, e.g. `https://code.example.com`.
    #[x_kube(validation = Rule::new(URL_RULE).message(URL_MESSAGE))]
    #[schemars(length(min = 1, max = 2048))]
    pub forgejo_server: String,

    /// Scope: serve the jobs of this organization (the token's user must own it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(matches_rule(OWNER_NAME_PATTERN)).message(owner_message().as_str()))]
    #[schemars(length(min = 1, max = 256))]
    pub organization: Option<String>,

    /// Scope: serve the jobs of this repository, written `owner/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(matches_rule(REPOSITORY_PATTERN)).message(REPOSITORY_MESSAGE))]
    #[x_kube(validation = Rule::new(format!("!{}", matches_rule(RESERVED_REPO_SUFFIX_PATTERN))).message(RESERVED_REPO_MESSAGE))]
    #[schemars(length(min = 3, max = 512))]
    pub repository: Option<String>,

    /// Scope: serve the jobs of this user's repositories (the token's own user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(matches_rule(OWNER_NAME_PATTERN)).message(owner_message().as_str()))]
    #[schemars(length(min = 1, max = 256))]
    pub user: Option<String>,

    /// Scope: serve every job of the instance (needs an admin token); only `true` is a scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<bool>,

    /// Comma-separated runner labels `name[:scheme[:arg]]`, e.g. `docker` or
    /// `ubuntu-22.04:docker://node:20-bullseye`; schemes: docker, host, kubernetes.
    #[x_kube(validation = Rule::new(labels_rule()).message(LABELS_MESSAGE))]
    #[schemars(length(min = 1, max = 1024))]
    pub labels: String,

    /// The Secret (in this namespace) holding the Forgejo API token.
    pub token_secret_ref: TokenSecretRef,

    /// How often to ask Forgejo for waiting jobs, as a duration from 1s to 1h.
    #[serde(default = "default_poll_interval")]
    #[x_kube(validation = Rule::new(POLL_INTERVAL_RULE).message("must be a duration from 1s to 1h, e.g. 30s or 2m"))]
    #[schemars(length(min = 1, max = 32))]
    pub poll_interval: String,

    /// The most runner Jobs of this pool active at once.
    #[serde(default = "default_max_runners")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_runners: i32,

    /// The forgejo-runner image (v12.8 or later).
    #[serde(default = "default_runner_image")]
    #[schemars(length(min = 1, max = 512))]
    pub runner_image: String,

    /// Seconds a finished Job (and its pod) is kept before Kubernetes deletes it.
    #[serde(default = "default_ttl_seconds_after_finished")]
    #[schemars(range(min = 0, max = 604800))]
    pub ttl_seconds_after_finished: i32,

    /// Seconds a runner Job may live in all, waiting for its task included.
    #[serde(default = "default_active_deadline_seconds")]
    #[schemars(range(min = 60, max = 604800))]
    pub active_deadline_seconds: i64,

    /// A pod template merged into the runner pod: resources, node selector, tolerations,
    /// extra containers and volumes. The runner container is injected into it. Unless the
    /// operator runs with `--allow-privileged-runners`, the template may not ask for host
    /// privileges: privileged containers, `allowPrivilegeEscalation: true`, capabilities
    /// beyond Kubernetes' baseline set, `hostPID`, `hostNetwork`, `hostIPC`, `hostPath`
    /// volumes, host ports, Windows host processes, or a ServiceAccount other than `default`
    /// without `automountServiceAccountToken: false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_template: Option<JobTemplate>,

    /// A shared Actions cache for the pool's runners, so `actions/cache` entries outlive
    /// the one-shot pods: see docs/caching.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSpec>,

    /// Idle runners kept ready per label while the pool is in use, so that a job starts
    /// within about a fetch interval: see docs/operations.md#warm-runners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_runners: Option<WarmRunnersSpec>,

    /// `workflow_job` webhooks wake this pool at once: see docs/operations.md#webhooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<crate::WebhookSpec>,
}

const SCOPE_RULE: &str = "[has(self.organization), has(self.repository), has(self.user), \
     has(self.instance) && self.instance].exists_one(x, x)";
const SCOPE_MESSAGE: &str =
    "set exactly one scope: organization, repository, user or instance: true";
const REPOSITORY_MESSAGE: &str = "must be owner/name: the owner a Forgejo user or \
     organization name (ASCII letters, digits, '-', '_' and '.', starting and ending with a \
     letter or digit, without two of '-_.' in a row), the name ASCII letters, digits, '-', \
     '_', '.' and '+', not '.', '..' or '-'";
const RESERVED_REPO_MESSAGE: &str =
    "the repository name must not end in .git, .wiki, .rss or .atom (Forgejo reserves them)";
const POLL_INTERVAL_RULE: &str = r"self.matches('^([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('1s') && duration(self) <= duration('1h')";
const LABELS_MESSAGE: &str = "must be comma-separated runner labels name[:scheme[:arg]] \
     with scheme docker, host or kubernetes, e.g. docker or ubuntu-22.04:docker://node:20-bullseye";

fn labels_rule() -> String {
    matches_rule(LABELS_PATTERN)
}

fn owner_message() -> String {
    format!("must be a Forgejo user or organization name: {OWNER_NAME_RULE}")
}

fn default_poll_interval() -> String {
    // Chosen from measurements: docs/operations.md, "The default poll interval".
    "10s".to_owned()
}
fn default_max_runners() -> i32 {
    10
}
fn default_runner_image() -> String {
    DEFAULT_RUNNER_IMAGE.to_owned()
}
fn default_ttl_seconds_after_finished() -> i32 {
    300
}
fn default_active_deadline_seconds() -> i64 {
    3 * 3600
}
fn default_token_key() -> String {
    DEFAULT_TOKEN_KEY.to_owned()
}

/// Where the Forgejo API token is: a key of a Secret in the RunnerDeployment's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenSecretRef {
    /// Name of the Secret.
    #[x_kube(validation = Rule::new(matches_rule(SECRET_NAME_PATTERN)).message(format!("must be a Secret name, {SECRET_NAME_RULE}").as_str()))]
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret whose value is the token.
    #[serde(default = "default_token_key")]
    #[x_kube(validation = Rule::new(matches_rule(SECRET_KEY_PATTERN)).message(format!("must be a Secret key: {SECRET_KEY_RULE}").as_str()))]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A user pod template, kept as JSON so that a wrong field becomes a condition on this pool,
/// not a watch error for every pool. See [`JobTemplate::pod_template`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(transparent)]
pub struct JobTemplate(pub serde_json::Value);

impl JobTemplate {
    /// The template as a typed `PodTemplateSpec`.
    pub fn pod_template(
        &self,
    ) -> Result<k8s_openapi::api::core::v1::PodTemplateSpec, serde_json::Error> {
        serde_json::from_value(self.0.clone())
    }
}

impl JsonSchema for JobTemplate {
    fn schema_name() -> Cow<'static, str> {
        "JobTemplate".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // A full PodTemplateSpec schema is ~320 KB; the apiserver checks the pod when the Job
        // is created instead, and the controller reports that as a condition.
        json_schema!({
            "type": "object",
            "description": "A PodTemplateSpec merged into the runner pod (metadata and spec).",
            "x-kubernetes-preserve-unknown-fields": true
        })
    }
}

/// What the controller last saw and did for a RunnerDeployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunnerDeploymentStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When Forgejo last answered a poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_poll_time: Option<Time>,
    /// The runner Jobs not yet finished, oldest first.
    #[serde(default)]
    pub scheduled_jobs: Vec<ScheduledJob>,
    /// Number of runner Jobs active now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_jobs: Option<i32>,
    /// Forgejo jobs of the pool waiting for a runner at the last poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_jobs: Option<i32>,
    /// When the longest-waiting of them was first seen waiting (absent when none waits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_waiting_since: Option<Time>,
    /// The scope served, e.g. `org/faro`, `repo/faro/app`, `user/ana`, `instance`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The Forgejo version last seen, and so which runner path is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forgejo_version: Option<String>,
    /// The pool's warm runners (with `spec.warmRunners`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_runners: Option<WarmRunnersStatus>,
    /// Ready, SecretFound, ForgejoReachable and AtCapacity.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// A Forgejo job and the Kubernetes Job created for it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledJob {
    /// The Forgejo job id.
    pub forgejo_job_id: i64,
    /// The Forgejo job attempt (Forgejo v15+), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i64>,
    /// The name of the Kubernetes Job running it.
    pub kubernetes_job_name: String,
    /// When the Kubernetes Job was created.
    pub scheduled_at: Time,
}

/// Which jobs a pool serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// An organization's jobs.
    Organization(String),
    /// One repository's jobs.
    Repository {
        /// The owner (user or organization).
        owner: String,
        /// The repository name.
        repo: String,
    },
    /// The token user's jobs.
    User(String),
    /// Every job of the instance.
    Instance,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Organization(org) => write!(f, "org/{org}"),
            Scope::Repository { owner, repo } => write!(f, "repo/{owner}/{repo}"),
            Scope::User(user) => write!(f, "user/{user}"),
            Scope::Instance => f.write_str("instance"),
        }
    }
}

/// The operator flag that allows privileged runner pod templates.
pub const ALLOW_PRIVILEGED_FLAG: &str = "--allow-privileged-runners";

/// Why a spec cannot be served. The schema refuses all but
/// [`SpecError::PrivilegedTemplate`] too; [`RunnerDeploymentSpec::validate`] guards objects
/// written before a schema change or with validation off.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Zero or several scopes are set.
    #[error("{SCOPE_MESSAGE}")]
    Scope,
    /// `spec.organization` is not a Forgejo organization name.
    #[error("spec.organization: {0:?} is not a Forgejo organization name: {OWNER_NAME_RULE}")]
    Organization(String),
    /// `spec.user` is not a Forgejo user name.
    #[error("spec.user: {0:?} is not a Forgejo user name: {OWNER_NAME_RULE}")]
    User(String),
    /// `spec.repository` is not `owner/name` of two Forgejo names.
    #[error("spec.repository: {0:?} is not owner/name: {REPOSITORY_RULE}")]
    Repository(String),
    /// `spec.tokenSecretRef.name` is not a Secret name.
    #[error("spec.tokenSecretRef.name: {0:?} is not a Secret name: {SECRET_NAME_RULE}")]
    TokenSecretName(String),
    /// `spec.tokenSecretRef.key` is not a Secret key.
    #[error("spec.tokenSecretRef.key: {0:?} is not a Secret key: {SECRET_KEY_RULE}")]
    TokenSecretKey(String),
    /// `spec.forgejoServer` is not an http(s) URL.
    #[error("spec.forgejoServer {0:?} must be an http:// or https:// URL")]
    Server(String),
    /// `spec.labels` does not parse.
    #[error(transparent)]
    Labels(#[from] LabelError),
    /// `spec.pollInterval` does not parse or is out of range.
    #[error("spec.pollInterval: {0}")]
    PollInterval(String),
    /// `spec.maxRunners` is below 1.
    #[error("spec.maxRunners must be at least 1, got {0}")]
    MaxRunners(i32),
    /// `spec.cache` is not usable.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// `spec.warmRunners` is not usable.
    #[error(transparent)]
    WarmRunners(#[from] WarmRunnersError),
    /// `spec.jobTemplate` is not a PodTemplateSpec.
    #[error("spec.jobTemplate is not a valid pod template: {0}")]
    JobTemplate(String),
    /// `spec.jobTemplate` asks for a host privilege the operator does not allow (see
    /// [`PodPrivileges`]); reason `PrivilegedTemplate`.
    #[error(
        "{field}: {problem}; runner pod templates may not ask for host privileges unless the \
         operator is started with {ALLOW_PRIVILEGED_FLAG}"
    )]
    PrivilegedTemplate {
        /// The refused field, e.g.
        /// `spec.jobTemplate.spec.containers[0].securityContext.privileged`.
        field: String,
        /// What it would give the pod.
        problem: String,
    },
}

impl SpecError {
    /// A PascalCase word for conditions, events and metrics: `PrivilegedTemplate` for
    /// [`SpecError::PrivilegedTemplate`], `InvalidSpec` for every other error.
    pub fn reason(&self) -> &'static str {
        match self {
            SpecError::PrivilegedTemplate { .. } => "PrivilegedTemplate",
            _ => "InvalidSpec",
        }
    }
}

/// Bounds of `spec.pollInterval`.
pub const POLL_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(3600));

impl RunnerDeploymentSpec {
    /// The one scope this pool serves; its names follow Forgejo's rules (see
    /// [`crate::names`]), so they are safe in a request path.
    pub fn scope(&self) -> Result<Scope, SpecError> {
        let instance = self.instance == Some(true);
        let set = [
            self.organization.is_some(),
            self.repository.is_some(),
            self.user.is_some(),
            instance,
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            return Err(SpecError::Scope);
        }
        if let Some(org) = &self.organization {
            if !is_owner_name(org) {
                return Err(SpecError::Organization(org.clone()));
            }
            return Ok(Scope::Organization(org.clone()));
        }
        if let Some(full) = &self.repository {
            return match split_repository(full) {
                Some((owner, repo)) => Ok(Scope::Repository {
                    owner: owner.to_owned(),
                    repo: repo.to_owned(),
                }),
                None => Err(SpecError::Repository(full.clone())),
            };
        }
        if let Some(user) = &self.user {
            if !is_owner_name(user) {
                return Err(SpecError::User(user.clone()));
            }
            return Ok(Scope::User(user.clone()));
        }
        Ok(Scope::Instance)
    }

    /// The parsed runner labels.
    pub fn runner_labels(&self) -> Result<Vec<RunnerLabel>, LabelError> {
        parse_labels(&self.labels)
    }

    /// The poll interval, within [`POLL_INTERVAL_RANGE`].
    pub fn poll_interval(&self) -> Result<Duration, SpecError> {
        let interval = parse_duration(&self.poll_interval)
            .map_err(|e: DurationError| SpecError::PollInterval(e.to_string()))?;
        let (min, max) = POLL_INTERVAL_RANGE;
        if interval < min || interval > max {
            return Err(SpecError::PollInterval(format!(
                "{:?} is outside 1s..1h",
                self.poll_interval
            )));
        }
        Ok(interval)
    }

    /// The cache mode in effect: `spec.cache.mode`, else `Managed` with the default runner
    /// image and `Disabled` with any other.
    pub fn cache_mode(&self) -> CacheMode {
        match self.cache.as_ref().and_then(|c| c.mode) {
            Some(mode) => mode,
            // Only the default image is known to ship `forgejo-runner cache-server`.
            None if self.runner_image == DEFAULT_RUNNER_IMAGE => CacheMode::Managed,
            None => CacheMode::Disabled,
        }
    }

    /// Checks every field the schema checks, for objects that got past it.
    pub fn validate(&self) -> Result<(), SpecError> {
        let server = self.forgejo_server.as_str();
        if !is_http_url(server) {
            return Err(SpecError::Server(server.to_owned()));
        }
        if let Some(cache) = &self.cache {
            cache.validate()?;
        }
        self.scope()?;
        let secret = &self.token_secret_ref;
        if !is_secret_name(&secret.name) {
            return Err(SpecError::TokenSecretName(secret.name.clone()));
        }
        if !is_secret_key(&secret.key) {
            return Err(SpecError::TokenSecretKey(secret.key.clone()));
        }
        let labels = self.runner_labels()?;
        if let Some(warm) = &self.warm_runners {
            let names: Vec<&str> = labels.iter().map(|l| l.name.as_str()).collect();
            warm.validate(&names)?;
        }
        self.poll_interval()?;
        if self.max_runners < 1 {
            return Err(SpecError::MaxRunners(self.max_runners));
        }
        if let Some(template) = &self.job_template {
            template
                .pod_template()
                .map_err(|e| SpecError::JobTemplate(e.to_string()))?;
        }
        Ok(())
    }
}
