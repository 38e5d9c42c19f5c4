//! [`Client`]: the Forgejo operations the controller needs, the URL of each per scope, and
//! the retry loop (exponential backoff with jitter, bounded in attempts and total time,
//! `Retry-After` honoured, never for 4xx, POST only when the request cannot have arrived).
//!
//! # `Retry-After` across calls
//!
//! A `Retry-After` (on 429 or 503, capped at 10 minutes) is remembered per server: every
//! clone of the client and every [`Client::with_token`] client of it share one "not before"
//! instant. Within the call that got it, the retry loop waits it out if it fits the call's
//! retry budget. Any later call made before that instant fails fast, without touching the
//! network, with [`Error::Deferred`] (reason `RateLimited`, retryable) carrying the time
//! left; it never waits, so a reconcile never hangs on a server's pause. Callers schedule
//! their next attempt with [`Client::retry_not_before`] (or [`Error::retry_after`]).

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderValue;
use rand::Rng;
use serde::de::DeserializeOwned;
use url::Url;

use crate::error::{Endpoint, Error, Result};
use crate::transport::{self, Answer, Attempt, Call, Failure, Http};
use crate::types::{RegisteredRunnerWire, TokenWire, VersionWire};
use crate::{ActionRunJob, RegisterRunner, RegisteredRunner, Runner, Scope, ServerVersion, Token};

/// A callback told about every HTTP attempt, for metrics.
pub type Observer = Arc<dyn Fn(RequestOutcome) + Send + Sync>;

/// The outcome of one HTTP attempt, as given to an [`Observer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestOutcome {
    /// The operation: `version`, `list_jobs`, `register_runner`, `list_runners`, `get_runner`,
    /// `delete_runner`, `registration_token`, `list_hooks`, `create_hook`, `delete_hook`,
    /// `list_tasks` (one per page of [`Client::finished_tasks`]), `get_repository`.
    pub endpoint: &'static str,
    /// `ok`, or the error's [`Error::reason`].
    pub outcome: &'static str,
    /// The HTTP status, if Forgejo answered.
    pub status: Option<u16>,
    /// 1 for the first try, 2 for the first retry, …
    pub attempt: u32,
    /// How long the attempt took.
    pub duration: Duration,
}

/// How the client talks to one server.
#[derive(Clone)]
pub struct ClientOptions {
    /// Limit for one attempt: connect, send and read the whole answer.
    pub request_timeout: Duration,
    /// Attempts per operation, the first included (at least 1).
    pub max_attempts: u32,
    /// No retry starts once this much time has passed since the first attempt.
    pub max_retry_time: Duration,
    /// Largest answer body accepted, in bytes.
    pub max_body_bytes: usize,
    /// PEM certificates trusted besides the webpki roots (a self-hosted server's CA).
    pub extra_root_certs_pem: Option<Vec<u8>>,
    /// First backoff delay; it doubles per retry (capped at 10 s), with jitter.
    pub retry_base_delay: Duration,
    /// Called after every HTTP attempt.
    pub observer: Option<Observer>,
    /// Connect to link-local (169.254.0.0/16, fe80::/10) and cloud metadata addresses too;
    /// off by default, so a server URL cannot aim the token at a metadata service.
    pub allow_link_local: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            max_attempts: 4,
            max_retry_time: Duration::from_secs(30),
            max_body_bytes: 8 * 1024 * 1024,
            extra_root_certs_pem: None,
            retry_base_delay: Duration::from_millis(200),
            observer: None,
            allow_link_local: false,
        }
    }
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("request_timeout", &self.request_timeout)
            .field("max_attempts", &self.max_attempts)
            .field("max_retry_time", &self.max_retry_time)
            .field("max_body_bytes", &self.max_body_bytes)
            .field(
                "extra_root_certs_pem",
                &self.extra_root_certs_pem.as_ref().map(|pem| pem.len()),
            )
            .field("retry_base_delay", &self.retry_base_delay)
            .field("observer", &self.observer.as_ref().map(|_| "Fn"))
            .field("allow_link_local", &self.allow_link_local)
            .finish()
    }
}

/// Longest backoff between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Items asked for per page (Forgejo's default `MAX_RESPONSE_ITEMS`).
const PAGE_SIZE: usize = 50;
/// Pages followed at most in one listing (a guard against a server that never ends).
const MAX_PAGES: u32 = 1000;

/// A Forgejo API client for one server and token; clones share the connection pool.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    base: Url,
    server: String,
    token: Token,
    auth: HeaderValue,
    http: Http,
    options: ClientOptions,
    known_version: Arc<RwLock<Option<ServerVersion>>>,
    /// No request to this server before this instant (its `Retry-After`); shared per server.
    not_before: Arc<Mutex<Option<Instant>>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.inner.server)
            .field("token", &self.inner.token)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `server` (`http(s)://host[:port][/path]`); fails on a bad URL, token or CA
    /// bundle, or a link-local/metadata IP address (see [`ClientOptions::allow_link_local`]).
    pub fn new(server: &str, token: Token, options: ClientOptions) -> Result<Client> {
        let base = parse_server(server)?;
        if !options.allow_link_local {
            refuse_link_local(&base)?;
        }
        let auth = transport::auth_header(token.expose())?;
        let http = transport::build_http(
            options.request_timeout,
            options.extra_root_certs_pem.as_deref(),
            options.allow_link_local,
        )?;
        let server = base.as_str().trim_end_matches('/').to_owned();
        Ok(Client {
            inner: Arc::new(Inner {
                base,
                server,
                token,
                auth,
                http,
                options,
                known_version: Arc::default(),
                not_before: Arc::default(),
            }),
        })
    }

    /// A client for the same server and connection pool, with another token.
    pub fn with_token(&self, token: Token) -> Result<Client> {
        let auth = transport::auth_header(token.expose())?;
        let inner = &self.inner;
        Ok(Client {
            inner: Arc::new(Inner {
                base: inner.base.clone(),
                server: inner.server.clone(),
                token,
                auth,
                http: inner.http.clone(),
                options: inner.options.clone(),
                known_version: inner.known_version.clone(),
                not_before: inner.not_before.clone(),
            }),
        })
    }

    /// The server's base URL, normalized (no trailing `/`).
    pub fn server(&self) -> &str {
        &self.inner.server
    }

    /// The version the last successful [`Client::version`] call saw.
    pub fn known_version(&self) -> Option<ServerVersion> {
        self.inner.known_version.read().ok().and_then(|v| v.clone())
    }

    /// How long the server still asked (`Retry-After`) not to be called; `None` if it did not,
    /// or the pause is over. Calls before then fail with [`Error::Deferred`].
    pub fn retry_not_before(&self) -> Option<Duration> {
        let not_before = (*self
            .inner
            .not_before
            .lock()
            .unwrap_or_else(|p| p.into_inner()))?;
        not_before
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
    }

    /// Remembers a server-requested pause (the later end wins, if one is already set).
    fn hold_off(&self, delay: Duration) {
        let until = Instant::now() + delay.min(transport::MAX_RETRY_AFTER);
        let mut not_before = self
            .inner
            .not_before
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if not_before.is_none_or(|current| current < until) {
            *not_before = Some(until);
        }
    }

    /// `GET /api/v1/version`, parsed; also remembered (see [`Client::known_version`]).
    pub async fn version(&self) -> Result<ServerVersion> {
        let call = self.call(
            Operation::get("version", "check the token's scopes"),
            &["version"],
            None,
            None,
        )?;
        let answer = self.send(&call).await?;
        let wire: VersionWire = self.decode(&call, &answer)?;
        let version = ServerVersion::parse(&wire.version).ok_or_else(|| {
            self.invalid(
                &call,
                &answer,
                format!(
                    "the version ({} characters) is not MAJOR.MINOR.PATCH",
                    wire.version.chars().count()
                ),
            )
        })?;
        if let Ok(mut known) = self.inner.known_version.write() {
            *known = Some(version.clone());
        }
        Ok(version)
    }

    /// Jobs of `scope` that are waiting **or running** (filter with [`ActionRunJob::is_waiting`]).
    ///
    /// `labels: None` sends no `labels` parameter: every pending job on Forgejo 14+, but
    /// nothing on 11–13, where the filter is mandatory. `Some(&[])` sends `labels=` (14+: only
    /// jobs without labels). Forgejo returns jobs whose `runs_on` ⊆ `labels`, newest first,
    /// unpaged. Label names cannot contain `,` (Forgejo splits on it).
    ///
    /// For [`Scope::Instance`] this uses `admin/runners/jobs`, or `admin/actions/runners/jobs`
    /// once [`Client::version`] has seen Forgejo 15+.
    pub async fn list_jobs(
        &self,
        scope: &Scope,
        labels: Option<&[String]>,
    ) -> Result<Vec<ActionRunJob>> {
        let query = labels.map(|labels| {
            let encoded: Vec<String> = labels
                .iter()
                .map(|l| url::form_urlencoded::byte_serialize(l.as_bytes()).collect())
                .collect();
            format!("labels={}", encoded.join(","))
        });
        let mut segments = scope.runners_segments(self.modern_admin_paths());
        segments.push("jobs");
        let call = self.call(
            Operation::get("list_jobs", scope.forbidden_hint(false)),
            &segments,
            query,
            None,
        )?;
        let answer = self.send(&call).await?;
        let jobs: Option<Vec<ActionRunJob>> = self.decode(&call, &answer)?;
        Ok(jobs.unwrap_or_default())
    }

    /// `POST …/actions/runners` (Forgejo 15+): registers a runner and returns its id, UUID and token.
    ///
    /// Retried only when the request cannot have reached Forgejo (connect failure) or on 429,
    /// so a retry never leaves a second registration behind.
    pub async fn register_runner(
        &self,
        scope: &Scope,
        req: &RegisterRunner,
    ) -> Result<RegisteredRunner> {
        let body = serde_json::json!({
            "name": req.name,
            "description": req.description,
            "ephemeral": req.ephemeral,
        })
        .to_string();
        let call = self.call(
            Operation::post("register_runner", scope.forbidden_hint(true)),
            &scope.runners_segments(true),
            None,
            Some(Bytes::from(body)),
        )?;
        let answer = self.send(&call).await?;
        let wire: RegisteredRunnerWire = self.decode(&call, &answer)?;
        if wire.uuid.is_empty() || wire.token.is_empty() {
            return Err(self.invalid(
                &call,
                &answer,
                "the registration has no uuid or no token".into(),
            ));
        }
        Ok(RegisteredRunner {
            id: wire.id,
            uuid: wire.uuid,
            token: Token::new(wire.token),
        })
    }

    /// `GET …/actions/runners` (Forgejo 15+), following every page.
    ///
    /// Lists the runners registered in exactly this scope (for the instance: global runners).
    ///
    /// The list ends at an empty page, once `X-Total-Count` runners are in, at a page shorter
    /// than the first (the server's page size), or at a page that adds no runner not seen
    /// already: a server (or proxy) that ignores `page` answers the same page again, and what
    /// was read so far is returned instead of asking for page after page.
    pub async fn list_runners(&self, scope: &Scope) -> Result<Vec<Runner>> {
        self.list_pages(
            Operation::get("list_runners", scope.forbidden_hint(false)),
            &scope.runners_segments(true),
            "runner",
            |runner: &Runner| runner.id,
        )
        .await
    }

    /// `GET …/actions/runners/{id}` (Forgejo 15+): the runner as Forgejo sees it now;
    /// `None` when it is gone (404).
    pub async fn get_runner(&self, scope: &Scope, id: i64) -> Result<Option<Runner>> {
        let id = id.to_string();
        let mut segments = scope.runners_segments(true);
        segments.push(&id);
        let call = self.call(
            Operation::get("get_runner", scope.forbidden_hint(false)),
            &segments,
            None,
            None,
        )?;
        match self.send(&call).await {
            Ok(answer) => self.decode(&call, &answer),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// `DELETE …/actions/runners/{id}` (Forgejo 15+); a runner that is already gone (404) is fine.
    ///
    /// Before Forgejo 15 the endpoint does not exist, and its 404 also reads as success:
    /// check [`ServerVersion::supports_ephemeral_runners`] first.
    pub async fn delete_runner(&self, scope: &Scope, id: i64) -> Result<()> {
        let id = id.to_string();
        let mut segments = scope.runners_segments(true);
        segments.push(&id);
        let call = self.call(
            Operation::delete("delete_runner", scope.forbidden_hint(true)),
            &segments,
            None,
            None,
        )?;
        match self.send(&call).await {
            Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `GET …/actions/runners/registration-token`: the scope's (legacy, reusable) registration token.
    pub async fn registration_token(&self, scope: &Scope) -> Result<Token> {
        let mut segments = scope.runners_segments(self.modern_admin_paths());
        segments.push("registration-token");
        let call = self.call(
            Operation::get("registration_token", scope.forbidden_hint(false)),
            &segments,
            None,
            None,
        )?;
        let answer = self.send(&call).await?;
        let wire: TokenWire = self.decode(&call, &answer)?;
        let token = Token::new(wire.token);
        if token.is_empty() {
            return Err(self.invalid(&call, &answer, "the registration token is empty".into()));
        }
        Ok(token)
    }
}

mod hooks;
mod pages;
mod repositories;
mod send;
mod tasks;
use send::Operation;
mod server_url;
use server_url::{parse_server, refuse_link_local};

#[cfg(test)]
mod tests;
