//! The controller's decisions, as pure functions: data in, a [`Plan`] out.
//!
//! Start at [`plan`]: given a RunnerDeployment, the Forgejo jobs listed for it, the Jobs it
//! owns ([`OwnedJob`], summarised with [`OwnedJob::from_objects`]), the runner
//! registrations and the time, it says which runner Jobs to create (complete `batch/v1`
//! objects, see [`runner_job`]), which Jobs, Secrets and registrations to delete, which
//! Secrets to create, and the next status.
//!
//! This crate does no I/O and reads no clock: the time is an argument, so every decision
//! is reproducible and tested here, exhaustively (see `tests/`). It knows `api` and
//! k8s-openapi types, never the Kubernetes client, an async runtime or the `forgejo` crate.
//!
//! ```
//! use api::{RunnerDeployment, RunnerDeploymentSpec, TokenSecretRef};
//! use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
//! use k8s_openapi::jiff::Timestamp;
//! use scheduler::{ForgejoJob, PlanInput, Reason, RunnerPath, Timeouts, plan};
//!
//! let mut pool = RunnerDeployment::new("faro", RunnerDeploymentSpec {
//!     forgejo_server: "https://code.example.com".into(),
//!     organization: Some("faro".into()),
//!     repository: None,
//!     user: None,
//!     instance: None,
//!     labels: "docker".into(),
//!     token_secret_ref: TokenSecretRef { name: "forgejo".into(), key: "token".into() },
//!     poll_interval: "30s".into(),
//!     max_runners: 2,
//!     runner_image: api::DEFAULT_RUNNER_IMAGE.into(),
//!     ttl_seconds_after_finished: 300,
//!     active_deadline_seconds: 3600,
//!     job_template: None,
//!     cache: None,
//!     warm_runners: None,
//!     webhook: None,
//! });
//! pool.metadata.namespace = Some("ci".into());
//! pool.metadata.uid = Some("5f0c8a2e-0d1b-4c3a-9e8f-7a6b5c4d3e2f".into());
//!
//! let waiting = ForgejoJob {
//!     id: 12,
//!     attempt: Some(1),
//!     handle: Some("h-12-1".into()),
//!     runs_on: vec!["docker".into()],
//!     status: "waiting".into(),
//!     ..ForgejoJob::default()
//! };
//! let input = PlanInput {
//!     pool: &pool,
//!     forgejo_jobs: Some(&[waiting]),
//!     owned_jobs: &[],
//!     registrations: &[],
//!     runner_path: RunnerPath::Ephemeral,
//!     timeouts: Timeouts::default(),
//!     cache: None,
//!     warm: Default::default(),
//!     not_waiting_since: &[],
//! };
//! let now = Time(Timestamp::from_second(1_800_000_000).unwrap());
//! let plan = plan(&input, now).unwrap();
//! assert_eq!(plan.create_jobs.len(), 1);
//! assert_eq!(plan.create_jobs[0].reason, Reason::JobWaiting);
//! assert_eq!(plan.create_secrets[0].job_name, plan.create_jobs[0].name);
//! ```
//!
//! Modules, in the order [`plan`] runs its decisions: `view` (the input narrowed to one
//! pool), `cleanup` (which Jobs, Secrets and registrations go, and when to look again),
//! `capacity` (which waiting jobs get a Job within `maxRunners`), `credentials` (which Jobs
//! need a credential Secret), `finished` (which Jobs ended since the last status), `report`
//! (the next status). Before it, [`lists_registrations`] (`listing`) decides whether the
//! poll lists the scope's runner registrations at all. What they build on: `input` and
//! `items` (the plan's input and output), `pod` and `template` (the Job and its pod, merged with the user's
//! `jobTemplate`), `cache` and `cache_server` (the shared cache's objects and what runner
//! pods mount of it), `cache_decision` (the shared cache's writes and `CacheReady`, from what
//! the operator observed), `secret` (the credential Secret), `owned` (a Job summarised),
//! `status` (conditions, bounded `scheduledJobs`), and the leaves `pool` (the
//! RunnerDeployment read once), [`naming`] (Job names, the base of duplicate prevention),
//! [`labels`] (label keys and selectors), `containers`, `volumes` and `text`. No two modules
//! import each other, directly or through others: `cargo xtask test` checks it
//! (`xtask/src/module_graph/`).

mod cache;
mod cache_decision;
mod cache_server;
mod capacity;
mod cleanup;
mod containers;
mod credentials;
mod finished;
mod input;
mod items;
pub mod labels;
mod lifecycle;
mod listing;
pub mod naming;
mod owned;
mod plan;
mod pod;
mod pool;
mod reason;
mod report;
mod secret;
mod status;
mod template;
mod text;
mod view;
mod volumes;
mod warm;
mod warm_runner;

pub use cache::{
    CACHE_DATA_DIR, CACHE_PORT, CACHE_SECRET_DIR, CACHE_SECRET_FILE, CACHE_SECRET_VOLUME,
    CONFIG_DIR, CONFIG_FILE, CONFIG_VOLUME, CacheNames, DIND_BRIDGE_CIDR, DIND_BRIDGE_IP,
    DOCKER_RUNNER_CONFIG_KEY, MANAGED_SECRET_KEY, RUNNER_CONFIG_KEY, SERVER_CONFIG_KEY,
    cache_config_map, cache_labels, cache_secret, managed_server_url, runner_config, server_config,
};
pub use cache_decision::{
    CACHE_REAPPLY_AFTER, CacheApply, CacheEvent, CacheObservation, CacheReport, CacheSteps,
    LastApplied, cache_event, cache_steps, diagnose as diagnose_cache_server, server_available,
};
pub use cache_server::{
    CACHE_SECRET_UID_ANNOTATION, CACHE_SERVER_CONTAINER, cache_claim, cache_deployment,
    cache_service,
};
pub use input::{
    ForgejoJob, PlanInput, RUNNING, RegistrationStatus, RunnerPath, RunnerRegistration, Timeouts,
    WAITING, WarmInput, runs_on_labels,
};
pub use items::{
    Deletion, FinishedJob, JobCreation, Plan, PlanSummary, RegistrationDeletion, SecretRequest,
    WarmRetirement,
};
pub use lifecycle::{JobAttempt, JobEvent, JobLifecycle, JobOrigin};
pub use listing::{
    ListingInput, REGISTRATION_SWEEP_POLLS, RegistrationListing, changes_registrations,
    lists_registrations, registration_listing,
};
pub use naming::{NameError, RunnerJobName};
pub use owned::{JobState, OwnedJob, PodWaiting};
pub use plan::plan;
pub use pod::{
    COPIED_RUNNER_BINARY, COPIED_RUNNER_DIR, CREDENTIALS_DIR, CREDENTIALS_MODE, CREDENTIALS_VOLUME,
    DATA_DIR, DATA_VOLUME, DIND_CONTAINER, DIND_IMAGE, DOCKER_CERTS_DIR, DOCKER_CERTS_VOLUME,
    DOCKER_DATA_VOLUME, Fetch, INSTALL_RUNNER_CONTAINER, LEGACY_SCRIPT, PodError, PodMode,
    REGISTRATION_TOKEN_FILE, RUNNER_BIN_VOLUME, RUNNER_BINARY, RUNNER_CONTAINER, RUNNER_UID,
    TOKEN_FILE, UUID_ENV, declared_labels, pick_label, runner_command, runner_job, warm_runner_job,
};
pub use pool::{
    PlanError, Pool, RUNNER_DEPLOYMENT_API_VERSION, RUNNER_DEPLOYMENT_KIND, RunnerCache, WarmPool,
};
pub use reason::Reason;
pub use secret::{
    REGISTRATION_TOKEN_KEY, RunnerCredentials, SecretError, TOKEN_KEY, UUID_KEY, runner_secret,
};
pub use status::{MAX_SCHEDULED_JOBS, bound_scheduled_jobs, condition, reasons, set_condition};
pub use warm::{WarmState, warm_grace};
pub use warm_runner::WarmRunner;
