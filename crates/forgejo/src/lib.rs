//! Forgejo Actions REST client for the runner controller. Its tests run against the
//! Forgejo stand-in of the `forgejo-stand-in` crate.
//!
//! Start with [`Client`]: it lists the jobs that wait for a runner in a [`Scope`], registers
//! and deletes ephemeral runners (Forgejo 15+), fetches legacy registration tokens,
//! lists, creates and deletes the scope's webhooks ([`Hook`], [`NewHook`]), learns the
//! results of jobs that left the listing from a repository's tasks ([`Client::finished_tasks`]),
//! and names the repository of a job's `repo_id` ([`Client::repository_by_id`]).
//! Every failure is an [`Error`] whose variant says what a caller can do about it, and
//! whose [`Error::reason`] is a PascalCase label for conditions and metrics.
//!
//! ```text
//!   operator ──► Client ──► retry loop ──► hyper (pooled, rustls) ──► Forgejo /api/v1/…
//!                  │           │ 5xx/429/timeout/connect: backoff + jitter, bounded
//!                  │           └ per-attempt timeout, body-size cap, RequestOutcome hook
//!                  └ typed answers: ActionRunJob, ActionTask, Runner, RegisteredRunner, Hook,
//!                    RepositoryName, ServerVersion
//! ```
//!
//! [`it_runs_on`] is Forgejo's own label rule, so one unfiltered poll (Forgejo 14+) can be
//! shared by many runner pools.
//!
//! # Forgejo versions
//!
//! | Forgejo | what works | what it lacks |
//! |---|---|---|
//! | < 11 | `version`, `registration_token`, `repository_by_id` (every release) | job listing (`NotFound`): not usable for scheduling |
//! | 11–13 | + `list_jobs` with a label filter, `finished_tasks` | unfiltered listing (`labels: None` matches nothing), runner API, `attempt`/`handle`, task status filter |
//! | 14 | + `list_jobs(scope, None)`: every pending job, for one poll per scope | runner API (`register_runner`, `list_runners`, `delete_runner` answer `NotFound`), `attempt`/`handle`, task status filter (unfinished tasks are read and dropped) |
//! | 15 | everything: ephemeral runners through the API, `attempt`/`handle`, `admin/actions/runners/…`, only finished tasks read | — |
//!
//! Later releases add job fields (`run_id`, `html_url` are read when present; others are ignored).
//!
//! This crate owns the wire format and the HTTP behaviour only: it never decides what to
//! schedule, and it never logs or reports the API token (see [`Token`]).

mod client;
mod error;
mod labels;
mod token;
mod transport;
mod types;

pub use client::{Client, ClientOptions, Observer, RequestOutcome};
pub use error::{Endpoint, Error, Result};
pub use labels::it_runs_on;
pub use token::Token;
pub use types::{
    ActionRunJob, ActionTask, FinishedTasks, Hook, NewHook, RecentTasks, RegisterRunner,
    RegisteredRunner, RepositoryName, Runner, Scope, ServerVersion,
};
