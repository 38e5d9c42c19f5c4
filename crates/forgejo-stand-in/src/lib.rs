//! A Forgejo stand-in: an in-process hyper server on loopback that serves exactly the
//! endpoints [`forgejo::Client`] uses, with Forgejo's JSON and quirks, for tests and the demo.
//!
//! A test tool, never shipped: Forgejo cannot be built on the project machine, so the
//! client's and the operator's tests, the runner double's tests and `cargo xtask demo` and
//! `bench` run against this instead. It serves the client's own types ([`forgejo::Scope`],
//! [`forgejo::ActionRunJob`], [`forgejo::Runner`]) and label rule ([`forgejo::it_runs_on`]),
//! so what it answers is what the client reads.
//!
//! It behaves as the configured version ([`StandInConfig::version`]): job listing and a
//! repository's task listing from 11, unfiltered job listing from 14, the runner API,
//! `attempt`/`handle`, `admin/actions/runners/…` and the tasks' `status=` filter from 15.
//! Tests add, change and remove jobs and runners, read the requests it received
//! ([`StandIn::requests`], never the token itself), and inject faults per path prefix
//! ([`StandIn::inject_fault`]).
//!
//! It also serves the runner service (`/api/actions/runner.v1.RunnerService/…`, Connect
//! over HTTP/1.1 with binary protobuf, see `runner_service.rs`), so a forgejo-runner or the
//! runner double can take its jobs and report logs and results. It does not model Forgejo's
//! permissions beyond "full", "read-only" and "unknown" tokens and a list of existing owners.
//!
//! Hooks created through its API (`…/orgs/{org}/hooks`, `…/repos/{owner}/{repo}/hooks`) get
//! Forgejo's `workflow_job_<status>` deliveries, signed, when a job waits or changes status
//! (`webhooks.rs`); tests read them ([`StandIn::deliveries`]) and disturb them
//! ([`StandIn::set_webhook_fault`], [`StandIn::redeliver_last`]).
//!
//! ```no_run
//! # async fn demo() {
//! use forgejo_stand_in::{StandIn, StandInConfig, StandInJob};
//! let forgejo = StandIn::start(StandInConfig::with_token("15.0.3+gitea-1.22.0", "secret"));
//! forgejo.add_job(StandInJob::new("acme/app", "build", &["docker"]));
//! let client = forgejo::Client::new(&forgejo.url(), forgejo::Token::new("secret"), Default::default()).unwrap();
//! # }
//! ```

mod body;
mod job;
mod random;
mod routes;
mod runner_service;
mod state;
mod webhooks;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::task::AbortHandle;

pub use self::job::StandInJob;
use self::routes::lock;
use self::state::State;
pub use self::state::{Fetch, RunnerCall};
use self::webhooks::Webhooks;
pub use self::webhooks::{Delivery, Webhook, WebhookFault};
use forgejo::{ActionRunJob, ActionTask, Runner, Scope};

/// How the stand-in behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandInConfig {
    /// The version it reports and behaves as, e.g. `15.0.3+gitea-1.22.0`, `14.0.2+gitea-1.22.0`, `11.0.1`.
    pub version: String,
    /// Tokens with every scope (their user is a site administrator who owns every organization).
    pub tokens: Vec<String>,
    /// Tokens with read scopes only: POST and DELETE answer 403.
    pub read_only_tokens: Vec<String>,
    /// The tokens' user name (the `user` scope).
    pub user: String,
    /// Organizations and users that exist (others answer 404); `None`: every name exists.
    pub owners: Option<Vec<String>>,
    /// Forgejo's `MAX_RESPONSE_ITEMS`: the most runners or tasks one page holds (default 50).
    pub max_page_size: usize,
    /// Where it listens (default `127.0.0.1:0`); an address pods reach for tests on a node.
    pub bind: SocketAddr,
}

impl Default for StandInConfig {
    fn default() -> Self {
        Self {
            version: "15.0.3+gitea-1.22.0".into(),
            tokens: Vec::new(),
            read_only_tokens: Vec::new(),
            user: "runner-admin".into(),
            owners: None,
            max_page_size: 50,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

impl StandInConfig {
    /// A config for `version` accepting one full-access `token`.
    pub fn with_token(version: &str, token: &str) -> Self {
        Self {
            version: version.into(),
            tokens: vec![token.into()],
            ..Self::default()
        }
    }
}

/// A request the stand-in received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path as sent (still percent-encoded).
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// Whether an `Authorization` header was present.
    pub had_authorization: bool,
    /// Whether it carried a known token (`token …` or `Bearer …`).
    pub token_matched: bool,
    /// Which known token it carried: its index in [`StandInConfig::tokens`], then in
    /// [`StandInConfig::read_only_tokens`] (counted after `tokens`); never the token itself.
    /// Tells apart the clients of one stand-in that each have their own token.
    pub token_index: Option<usize>,
    /// The request body, if any.
    pub body: Option<String>,
}

/// A fault to inject instead of (or before) the normal answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and a Forgejo-style JSON error.
    Status(u16),
    /// Answer with this status and `Retry-After: secs`.
    StatusWithRetryAfter(u16, u64),
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Send headers and half the body (with the full `Content-Length`), then drop the connection.
    Truncated,
    /// Answer 200 with a body that is not valid JSON.
    Malformed,
    /// Answer 200 with this many bytes, streamed without a length.
    Huge(usize),
    /// Drop the connection without answering.
    Reset,
    /// Answer with this status and this exact body (JSON content type), e.g. a recorded fixture.
    Body(u16, String),
    /// Answer normally, but ignore the `page` parameter (always the first page) and send no
    /// `X-Total-Count`: a server (or proxy) that does not page the runner list.
    IgnorePage,
}

/// How many times an injected fault fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Times {
    /// The next matching request only.
    Once,
    /// The next `n` matching requests.
    N(u32),
    /// Every matching request until [`StandIn::clear_faults`].
    Always,
}

/// A running stand-in; clones share it, and it stops accepting when the last clone is dropped.
#[derive(Clone)]
pub struct StandIn {
    inner: Arc<Inner>,
}

struct Inner {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    accept: AbortHandle,
    /// The task sending webhook deliveries.
    dispatcher: AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.accept.abort();
        self.dispatcher.abort();
    }
}

impl std::fmt::Debug for StandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandIn")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

impl StandIn {
    /// Starts a stand-in on `config.bind`; must run inside a Tokio runtime; panics if it cannot bind.
    pub fn start(config: StandInConfig) -> StandIn {
        let bind = config.bind;
        match Self::try_start(config) {
            Ok(stand_in) => stand_in,
            Err(e) => panic!("the Forgejo stand-in cannot listen on {bind}: {e}"),
        }
    }

    /// Starts a stand-in on `config.bind`; must run inside a Tokio runtime.
    pub fn try_start(config: StandInConfig) -> io::Result<StandIn> {
        let listener = std::net::TcpListener::bind(config.bind)?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let addr = listener.local_addr()?;
        let (webhooks, dispatcher) = Webhooks::new();
        let state = State::new(config, format!("http://{addr}"), webhooks);
        let state = Arc::new(Mutex::new(state));
        let accept_state = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let state = accept_state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| routes::handle(state.clone(), req));
                    // Errors here are dropped connections (injected or by the client).
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        })
        .abort_handle();
        Ok(StandIn {
            inner: Arc::new(Inner {
                state,
                addr,
                accept,
                dispatcher: dispatcher.spawn(),
            }),
        })
    }

    /// The base URL, e.g. `http://127.0.0.1:38211` (give it to [`forgejo::Client::new`]).
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The version it reports and behaves as.
    pub fn version(&self) -> String {
        lock(&self.inner.state).config.version.clone()
    }

    /// Switches to behaving as another version (an upgrade or downgrade), keeping its data.
    pub fn set_version(&self, version: &str) {
        lock(&self.inner.state).set_version(version.to_owned());
    }

    /// Adds a job; returns it with its ids, attempt and handle.
    pub fn add_job(&self, job: StandInJob) -> ActionRunJob {
        lock(&self.inner.state).add_job(job).to_api()
    }

    /// Sets a job's status (`waiting`, `running`, `success`, `cancelled`, …); false if unknown.
    pub fn set_job_status(&self, id: i64, status: &str) -> bool {
        lock(&self.inner.state).set_job_status(id, status)
    }

    /// Cancels a job as a user would: `cancelled`, no runner gets it any more, and the
    /// runner running it is told so by its next `UpdateTask`; false if unknown.
    pub fn cancel_job(&self, id: i64) -> bool {
        self.set_job_status(id, "cancelled")
    }

    /// The log rows runners sent for a job's current attempt.
    pub fn log_lines(&self, id: i64) -> Vec<String> {
        lock(&self.inner.state)
            .jobs
            .get(&id)
            .map(|job| job.log_rows.clone())
            .unwrap_or_default()
    }

    /// The runner-service fetches so far, oldest first.
    pub fn fetches(&self) -> Vec<Fetch> {
        lock(&self.inner.state).fetches.clone()
    }

    /// The `FetchSingleTask` calls for `handle` so far (who asked, what they got), oldest first.
    pub fn fetches_for(&self, handle: &str) -> Vec<Fetch> {
        lock(&self.inner.state)
            .fetches
            .iter()
            .filter(|f| f.handle.as_deref() == Some(handle))
            .cloned()
            .collect()
    }

    /// The runner-service calls it served (procedure and headers, never a token), oldest first.
    pub fn runner_calls(&self) -> Vec<RunnerCall> {
        lock(&self.inner.state).runner_calls.clone()
    }

    /// Removes a job; false if unknown.
    pub fn remove_job(&self, id: i64) -> bool {
        lock(&self.inner.state).jobs.remove(&id).is_some()
    }

    /// A runner takes a job: it becomes `running` with a task id, and the runner is listed
    /// `active` until the job ends, as one that reports on it; false if the job is unknown.
    pub fn take_job(&self, job_id: i64, runner_id: i64) -> bool {
        lock(&self.inner.state).take_job(job_id, runner_id)
    }

    /// A job's attempt ends with `status`, and so does its task if a runner took it; the
    /// ephemeral runner that ran it is deleted.
    pub fn finish_job(&self, job_id: i64, status: &str) -> bool {
        lock(&self.inner.state).finish_job(job_id, status)
    }

    /// Re-runs a job: `waiting` again, with the next attempt number and a new handle.
    pub fn rerun_job(&self, job_id: i64) -> Option<ActionRunJob> {
        lock(&self.inner.state)
            .rerun_job(job_id)
            .map(|job| job.to_api())
    }

    /// One job as it stands now (status `running` with a `task_id` once a runner took it,
    /// then `success`, `failure` or `cancelled`); `None` if unknown.
    pub fn job(&self, id: i64) -> Option<ActionRunJob> {
        lock(&self.inner.state)
            .jobs
            .get(&id)
            .map(|job| job.to_api())
    }

    /// Every task, of every repository, by id: one per job attempt a runner took, with its
    /// job's status until the attempt ends, then its result (removing a job leaves them).
    pub fn tasks(&self) -> Vec<ActionTask> {
        lock(&self.inner.state)
            .tasks
            .values()
            .map(|task| task.to_api())
            .collect()
    }

    /// Moves the times of every task so far (`created_at`, `run_started_at`, `updated_at`)
    /// `by` into the past, in whole seconds, as if they had run that long ago; tasks taken
    /// later get the present time, so tests can tell older tasks from newer ones.
    pub fn age_tasks(&self, by: Duration) {
        let seconds = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
        lock(&self.inner.state).age_tasks(seconds);
    }

    /// Every job it holds, whatever its status, by id.
    pub fn jobs(&self) -> Vec<ActionRunJob> {
        lock(&self.inner.state)
            .jobs
            .values()
            .map(|job| job.to_api())
            .collect()
    }

    /// Adds a runner to a scope (as if registered), e.g. a stale one left behind.
    pub fn add_runner(&self, scope: &Scope, name: &str, ephemeral: bool) -> Runner {
        lock(&self.inner.state)
            .add_runner(scope, name, "", ephemeral)
            .0
            .to_api()
    }

    /// Removes a runner; false if unknown.
    pub fn remove_runner(&self, id: i64) -> bool {
        lock(&self.inner.state).runners.remove(&id).is_some()
    }

    /// Every registered runner, of every scope, by id.
    pub fn runners(&self) -> Vec<Runner> {
        lock(&self.inner.state)
            .runners
            .values()
            .map(|r| r.to_api())
            .collect()
    }

    /// The requests received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.inner.state).requests.clone()
    }

    /// How many recorded requests match `which`, without copying them.
    pub fn count_requests(&self, which: impl Fn(&RecordedRequest) -> bool) -> usize {
        lock(&self.inner.state)
            .requests
            .iter()
            .filter(|r| which(r))
            .count()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        lock(&self.inner.state).requests.clear();
    }

    /// Injects `fault` for requests whose path starts with `path_prefix` (e.g. `/api/v1/orgs/acme/`).
    /// A prefix may start with a method and a space (`POST /api/v1/…`) to match that method only.
    ///
    /// Faults fire in the order injected; the first matching one is used.
    pub fn inject_fault(&self, path_prefix: &str, fault: Fault, times: Times) {
        lock(&self.inner.state).inject_fault(path_prefix.to_owned(), fault, times);
    }

    /// Removes every injected fault.
    pub fn clear_faults(&self) {
        lock(&self.inner.state).clear_faults();
    }

    /// Every webhook created through the API, of every scope, by id (never a secret).
    pub fn hooks(&self) -> Vec<Webhook> {
        lock(&self.inner.state).webhooks.hooks()
    }

    /// Every webhook delivery attempt so far, in the order of the job changes that caused them.
    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.inner.state).webhooks.deliveries()
    }

    /// Applies `fault` to the webhook deliveries from now on (`WebhookFault::None` ends it).
    pub fn set_webhook_fault(&self, fault: WebhookFault) {
        lock(&self.inner.state).webhooks.set_fault(fault);
    }

    /// Sends the last delivery (sent or dropped) again, byte for byte, with its delivery id,
    /// which it returns; `None` before the first delivery.
    pub fn redeliver_last(&self) -> Option<String> {
        lock(&self.inner.state).webhooks.redeliver_last()
    }
}
