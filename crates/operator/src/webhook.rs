//! The webhook receiver: Forgejo's `workflow_job` deliveries wake the pool they concern, so
//! a job is seen at once instead of at the next poll. A delivery is a hint, never an
//! instruction: it makes the pool poll, and the poll decides what to create. So a forged or
//! replayed delivery can at most cause one poll, and a lost one costs one poll interval.
//!
//! `POST /webhooks/{namespace}/{name}` for pool `name` in `namespace`, signed with the
//! secret of its `spec.webhook.secretRef`. Off unless `--webhook-addr` is given.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::metrics::WebhookMetrics;

mod delivery;
mod pools;
mod signature;
mod wake;

pub use delivery::{DeliveredJob, WORKFLOW_JOB_PREFIX, WorkflowJobDelivery};
pub use pools::{HookSecrets, PoolDirectory, SecretError};
pub use signature::{SIGNATURE_HEADERS, is_valid as is_valid_signature, sign};
pub use wake::{AnsweredWakes, MIN_WAKE_SPACING, WAKE_ANNOTATION, Wake, Waker, wake_stamp};

/// The largest delivery body read; larger ones get 413 (Forgejo's payloads are a few KiB).
pub const MAX_BODY: usize = 1024 * 1024;
/// How long a sender may take to send its headers, and then its body: a slow or endless
/// sender is cut off.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests handled at once; more wait for a turn within [`READ_TIMEOUT`]. With
/// [`MAX_BODY`], this bounds the memory bodies can take.
pub const MAX_CONCURRENT: usize = 32;
/// Connections open at once; more are closed as they come.
pub const MAX_CONNECTIONS: usize = 512;
/// The path prefix of a pool's hook URL.
pub const PATH_PREFIX: &str = "/webhooks/";

/// What a delivery came to: the `outcome` label of the deliveries counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A waiting job on the pool's labels: the pool was stamped to poll now.
    Woke,
    /// As `Woke`, within a second of the last stamp: one more stamp follows it.
    Coalesced,
    /// A signed delivery of a job the pool would not run now (not waiting, other labels).
    NoMatch,
    /// A signed delivery of an event the receiver does not use.
    IgnoredEvent,
    /// No signature header.
    MissingSignature,
    /// A signature that is not the body's HMAC with the pool's secret.
    BadSignature,
    /// A body over [`MAX_BODY`].
    TooLarge,
    /// The sender was too slow.
    Timeout,
    /// A method other than POST.
    MethodNotAllowed,
    /// No such pool, or a pool without `spec.webhook`.
    UnknownPool,
    /// A signed body that is not a `workflow_job` payload.
    Malformed,
    /// The pool's hook secret could not be read.
    SecretUnavailable,
    /// Stamping the pool failed (the apiserver did not take the patch); counted by the
    /// stamp, after its delivery was answered.
    WakeFailed,
}

impl Outcome {
    /// The snake_case name, for the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Woke => "woke",
            Self::Coalesced => "coalesced",
            Self::NoMatch => "no_match",
            Self::IgnoredEvent => "ignored_event",
            Self::MissingSignature => "missing_signature",
            Self::BadSignature => "bad_signature",
            Self::TooLarge => "too_large",
            Self::Timeout => "timeout",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UnknownPool => "unknown_pool",
            Self::Malformed => "malformed",
            Self::SecretUnavailable => "secret_unavailable",
            Self::WakeFailed => "wake_failed",
        }
    }

    /// The HTTP status answered.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Woke | Self::Coalesced => StatusCode::ACCEPTED,
            Self::NoMatch | Self::IgnoredEvent => StatusCode::NO_CONTENT,
            Self::MissingSignature | Self::BadSignature => StatusCode::UNAUTHORIZED,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Timeout => StatusCode::REQUEST_TIMEOUT,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnknownPool => StatusCode::NOT_FOUND,
            Self::Malformed => StatusCode::BAD_REQUEST,
            Self::SecretUnavailable | Self::WakeFailed => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// What the receiver reads and acts through.
#[derive(Clone)]
pub struct Receiver {
    /// The pools the controllers watch.
    pub pools: PoolDirectory,
    /// The hooks' secrets.
    pub secrets: HookSecrets,
    /// Stamps pools to poll.
    pub waker: Waker,
    /// Deliveries by outcome.
    pub metrics: WebhookMetrics,
}

/// Binds the receiver; the returned future serves until dropped.
pub async fn bind(
    addr: SocketAddr,
    receiver: Receiver,
) -> std::io::Result<(SocketAddr, impl Future<Output = ()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let requests = Arc::new(Semaphore::new(MAX_CONCURRENT));
    let serve = async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::warn!(%error, "webhook receiver: accept failed");
                    continue;
                }
            };
            let Ok(connection) = connections.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let receiver = receiver.clone();
            let requests = requests.clone();
            tokio::spawn(async move {
                let service =
                    service_fn(move |req| {
                        let receiver = receiver.clone();
                        let requests = requests.clone();
                        async move {
                            let outcome =
                                match tokio::time::timeout(READ_TIMEOUT, requests.acquire_owned())
                                    .await
                                {
                                    Ok(Ok(_turn)) => receiver.handle(req).await,
                                    _ => Outcome::Timeout,
                                };
                            receiver.metrics.count(outcome.as_str());
                            Ok::<_, Infallible>(answer(outcome))
                        }
                    });
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(READ_TIMEOUT);
                let served = tokio::time::timeout(
                    4 * READ_TIMEOUT,
                    builder.serve_connection(TokioIo::new(stream), service),
                )
                .await;
                if let Ok(Err(error)) = served {
                    tracing::debug!(%error, "webhook receiver: connection ended with an error");
                }
                drop(connection);
            });
        }
    };
    Ok((local, serve))
}

impl Receiver {
    /// Handles one delivery: method, pool, body, signature, event, payload, in that order;
    /// nothing of the body is read before its signature is checked.
    async fn handle(&self, req: Request<Incoming>) -> Outcome {
        if req.method() != Method::POST {
            return Outcome::MethodNotAllowed;
        }
        let Some((namespace, name)) = pool_of_path(req.uri().path())
            .map(|(namespace, name)| (namespace.to_owned(), name.to_owned()))
        else {
            return Outcome::UnknownPool;
        };
        let (namespace, name) = (namespace.as_str(), name.as_str());
        let Some(pool) = self.pools.find(namespace, name) else {
            return Outcome::UnknownPool;
        };
        let Some(hook) = pool.spec.webhook.as_ref() else {
            return Outcome::UnknownPool;
        };
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let signature = SIGNATURE_HEADERS.iter().find_map(|h| header(h));
        let event = header("x-forgejo-event").or_else(|| header("x-gitea-event"));
        if req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            .is_some_and(|length| length > MAX_BODY)
        {
            return Outcome::TooLarge;
        }
        let body = match tokio::time::timeout(
            READ_TIMEOUT,
            Limited::new(req.into_body(), MAX_BODY).collect(),
        )
        .await
        {
            Err(_) => return Outcome::Timeout,
            Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
                return Outcome::TooLarge;
            }
            Ok(Err(_)) => return Outcome::Timeout,
            Ok(Ok(collected)) => collected.to_bytes(),
        };
        let Some(signature) = signature else {
            return Outcome::MissingSignature;
        };
        let secret = match self.secrets.get(namespace, &hook.secret_ref).await {
            Ok(secret) => secret,
            Err(error) => {
                tracing::warn!(%namespace, pool = %name, %error, "webhook: the hook secret cannot be read; the delivery is refused");
                return Outcome::SecretUnavailable;
            }
        };
        if !signature::is_valid(&secret, &body, &signature) {
            return Outcome::BadSignature;
        }
        if !event.is_some_and(|e| e.starts_with(WORKFLOW_JOB_PREFIX)) {
            return Outcome::IgnoredEvent;
        }
        let Ok(delivery) = serde_json::from_slice::<WorkflowJobDelivery>(&body) else {
            return Outcome::Malformed;
        };
        if !delivery.wakes(&pool) {
            return Outcome::NoMatch;
        }
        match self.waker.wake(namespace, name) {
            Wake::Stamped => {
                tracing::debug!(%namespace, pool = %name, job = delivery.job.id, "webhook: pool woken");
                Outcome::Woke
            }
            Wake::Coalesced => Outcome::Coalesced,
        }
    }
}

/// The (namespace, name) of a hook path `/webhooks/{namespace}/{name}`.
pub fn pool_of_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix(PATH_PREFIX)?;
    let (namespace, name) = rest.split_once('/')?;
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    (valid(namespace) && valid(name)).then_some((namespace, name))
}

fn answer(outcome: Outcome) -> Response<Full<Bytes>> {
    let body = if outcome.status() == StatusCode::NO_CONTENT {
        Bytes::new()
    } else {
        Bytes::from(format!("{}\n", outcome.as_str()))
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = outcome.status();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hook_path_names_a_pool() {
        assert_eq!(pool_of_path("/webhooks/ci/docker"), Some(("ci", "docker")));
        assert_eq!(pool_of_path("/webhooks/ci/"), None);
        assert_eq!(pool_of_path("/webhooks/ci"), None);
        assert_eq!(pool_of_path("/webhooks/ci/a/b"), None);
        assert_eq!(pool_of_path("/webhooks/CI/a"), None);
        assert_eq!(pool_of_path("/other/ci/a"), None);
    }
}
