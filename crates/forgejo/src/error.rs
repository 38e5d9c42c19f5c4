//! The client's errors: one variant per thing a caller can act on, with messages that say
//! what failed and what to do, and that never contain the token.
//!
//! No error holds a byte of an answer's body (Forgejo's `message`, a proxy's page): callers
//! put errors into status conditions and events, where server text does not belong. Errors
//! describe the answer instead (status, kind, size: "an HTML page of 5123 bytes"), and a
//! JSON error keeps only its position. The one server-provided text kept is a redirect's
//! target (scheme, host and path), cut short, stripped of control characters and scrubbed of
//! the token.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// A boxed error cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which call failed: the operation name plus method and path (never the query or the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The operation, e.g. `list_jobs` (also the metrics label).
    pub name: &'static str,
    /// The HTTP method.
    pub method: &'static str,
    /// The URL path, e.g. `/api/v1/orgs/acme/actions/runners/jobs`.
    pub path: String,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

/// Everything that can go wrong talking to Forgejo.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 401: the token is missing, wrong, expired or revoked.
    #[error(
        "Forgejo rejected the token for {endpoint} (401 Unauthorized, {answer}): the token is wrong, expired or revoked; create a new access token and update the Secret"
    )]
    Unauthorized {
        /// The failed call.
        endpoint: Endpoint,
        /// What the answer's body was (kind and size, never its text).
        answer: String,
    },

    /// 403: the token lacks the scope, or its user the rights, this call needs.
    #[error("Forgejo denied {endpoint} (403 Forbidden, {answer}): {hint}")]
    Forbidden {
        /// The failed call.
        endpoint: Endpoint,
        /// Which scope and rights the call needs.
        hint: &'static str,
        /// What the answer's body was (kind and size, never its text).
        answer: String,
    },

    /// 404: the owner, repository or runner does not exist, or Forgejo is too old for the endpoint.
    #[error("Forgejo has no {endpoint} (404 Not Found, {answer}): {hint}")]
    NotFound {
        /// The failed call.
        endpoint: Endpoint,
        /// What to check: names, visibility to the token's user, the server's version.
        hint: &'static str,
        /// What the answer's body was (kind and size, never its text).
        answer: String,
    },

    /// 429: too many requests; `retry_after` is the server's `Retry-After`, if it sent one.
    #[error(
        "Forgejo rate-limited {endpoint} (429 Too Many Requests){}: poll less often (raise the poll interval) or let pools share a poll",
        retry_note(.retry_after)
    )]
    RateLimited {
        /// The failed call.
        endpoint: Endpoint,
        /// How long the server asked us to wait.
        retry_after: Option<Duration>,
    },

    /// Not sent: the server asked (`Retry-After` on an earlier answer) for a pause that is not over.
    #[error(
        "{endpoint} was not sent: Forgejo asked for a pause (Retry-After) that ends in {}s; the next attempt should wait for it; if this repeats, poll less often (raise the poll interval)",
        secs(.retry_in)
    )]
    Deferred {
        /// The call that was not made.
        endpoint: Endpoint,
        /// How much of the pause is left.
        retry_in: Duration,
    },

    /// 5xx: Forgejo (or a proxy in front of it) failed.
    #[error(
        "Forgejo failed {endpoint} with status {status} ({answer}): a server-side problem that was retried; if it persists, check Forgejo's logs and any proxy in front of it"
    )]
    Server {
        /// The failed call.
        endpoint: Endpoint,
        /// The HTTP status (500–599).
        status: u16,
        /// What the answer's body was (kind and size, never its text).
        answer: String,
    },

    /// No complete answer within the per-request timeout.
    #[error(
        "{endpoint} got no complete answer within {after:?}: Forgejo or the network is slow or unreachable; check connectivity, or raise the request timeout"
    )]
    Timeout {
        /// The failed call.
        endpoint: Endpoint,
        /// The per-request timeout that expired.
        after: Duration,
    },

    /// The connection could not be made, or broke before the answer was complete.
    #[error(
        "could not talk to Forgejo for {endpoint}: {source}; check the server URL, DNS, network policies and that Forgejo is up"
    )]
    Connection {
        /// The failed call.
        endpoint: Endpoint,
        /// The underlying I/O or protocol error.
        #[source]
        source: BoxError,
    },

    /// The TLS handshake failed (unknown CA, wrong host name, not a TLS server), or the CA bundle is unusable.
    #[error(
        "TLS failed for {endpoint}: {source}; if Forgejo uses a private CA, supply its certificate as the extra CA bundle, and check that the URL's host matches the certificate"
    )]
    Tls {
        /// The failed call (`client setup` for a bad CA bundle).
        endpoint: Endpoint,
        /// The TLS error.
        #[source]
        source: BoxError,
    },

    /// The answer was not what this endpoint returns (not JSON, wrong shape).
    #[error(
        "Forgejo's answer to {endpoint} (status {status}, {answer}) is unusable: {detail}; check that the URL points at Forgejo itself (not a proxy or login page) and that its version is supported"
    )]
    InvalidResponse {
        /// The failed call.
        endpoint: Endpoint,
        /// The HTTP status of the answer.
        status: u16,
        /// What was wrong with it (never quoting the body; a JSON error's position).
        detail: String,
        /// What the answer's body was (kind and size, never its text).
        answer: String,
    },

    /// The answer exceeded the body-size cap.
    #[error(
        "Forgejo's answer to {endpoint} is larger than the {limit}-byte cap: check the server (or a proxy in front of it), or raise max_body_bytes"
    )]
    BodyTooLarge {
        /// The failed call.
        endpoint: Endpoint,
        /// The cap, in bytes.
        limit: usize,
    },

    /// The server URL given to [`crate::Client::new`] is unusable.
    #[error(
        "invalid Forgejo server URL {url:?}: {reason}; use http(s)://host[:port][/path], e.g. https://code.example.com"
    )]
    InvalidUrl {
        /// The URL, with any credentials removed.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The server's address is link-local or a cloud metadata service, which are refused
    /// unless [`crate::ClientOptions::allow_link_local`] is set.
    #[error(
        "forgejoServer {host} resolves to {address}, a link-local/cloud metadata address; the operator refuses these unless started with --allow-link-local-forgejo: point forgejoServer at Forgejo itself"
    )]
    ForbiddenAddress {
        /// The server URL's host.
        host: String,
        /// The refused address.
        address: IpAddr,
    },

    /// The token cannot be sent in an HTTP header (control characters, empty).
    #[error(
        "the Forgejo token is empty or contains characters that cannot be sent in an HTTP header: check the Secret's value"
    )]
    InvalidToken,

    /// A webhook to create was refused before sending: no events, no secret, or not an http(s) URL.
    #[error(
        "the webhook was not created: {reason}; the request was not sent, fix the hook's settings"
    )]
    InvalidHook {
        /// What is wrong (never the URL, which may hold credentials, nor the secret).
        reason: &'static str,
    },

    /// Any other status (e.g. 400, 405, 422, or a redirect): the request itself was refused.
    #[error(
        "Forgejo answered {endpoint} with unexpected status {status} ({answer}){}: check the server URL (redirects are not followed) and the request",
        redirect_note(.location)
    )]
    UnexpectedStatus {
        /// The failed call.
        endpoint: Endpoint,
        /// The HTTP status.
        status: u16,
        /// What the answer's body was (kind and size, never its text).
        answer: String,
        /// A redirect's target (scheme, host and path only; scrubbed), if it sent one.
        location: Option<String>,
    },
}

impl Error {
    /// A PascalCase label for conditions, events and metrics (bounded set).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Unauthorized { .. } => "Unauthorized",
            Error::Forbidden { .. } => "Forbidden",
            Error::NotFound { .. } => "NotFound",
            Error::RateLimited { .. } | Error::Deferred { .. } => "RateLimited",
            Error::Server { .. } => "ServerError",
            Error::Timeout { .. } => "Timeout",
            Error::Connection { .. } => "ConnectionFailed",
            Error::Tls { .. } => "TlsFailed",
            Error::InvalidResponse { .. } => "InvalidResponse",
            Error::BodyTooLarge { .. } => "BodyTooLarge",
            Error::InvalidUrl { .. } => "InvalidUrl",
            Error::InvalidToken => "InvalidToken",
            Error::InvalidHook { .. } => "InvalidHook",
            Error::ForbiddenAddress { .. } => "ForbiddenAddress",
            Error::UnexpectedStatus { .. } => "UnexpectedStatus",
        }
    }

    /// Whether trying again later can help (5xx, 429, timeouts, connection errors).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::RateLimited { .. }
                | Error::Deferred { .. }
                | Error::Server { .. }
                | Error::Timeout { .. }
                | Error::Connection { .. }
        )
    }

    /// The call that failed, if the error came from one.
    pub fn endpoint(&self) -> Option<&Endpoint> {
        match self {
            Error::Unauthorized { endpoint, .. }
            | Error::Forbidden { endpoint, .. }
            | Error::NotFound { endpoint, .. }
            | Error::RateLimited { endpoint, .. }
            | Error::Deferred { endpoint, .. }
            | Error::Server { endpoint, .. }
            | Error::Timeout { endpoint, .. }
            | Error::Connection { endpoint, .. }
            | Error::Tls { endpoint, .. }
            | Error::InvalidResponse { endpoint, .. }
            | Error::BodyTooLarge { endpoint, .. }
            | Error::UnexpectedStatus { endpoint, .. } => Some(endpoint),
            Error::InvalidUrl { .. }
            | Error::InvalidToken
            | Error::InvalidHook { .. }
            | Error::ForbiddenAddress { .. } => None,
        }
    }

    /// The HTTP status Forgejo answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Unauthorized { .. } => Some(401),
            Error::Forbidden { .. } => Some(403),
            Error::NotFound { .. } => Some(404),
            Error::RateLimited { .. } => Some(429),
            Error::Server { status, .. }
            | Error::InvalidResponse { status, .. }
            | Error::UnexpectedStatus { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// How long to wait before trying again, as the server asked: a 429's `Retry-After`, or
    /// what is left of an earlier pause ([`Error::Deferred`]).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } => *retry_after,
            Error::Deferred { retry_in, .. } => Some(*retry_in),
            _ => None,
        }
    }
}

/// `; it redirects to "…"` or nothing.
fn redirect_note(location: &Option<String>) -> String {
    match location {
        Some(l) if !l.is_empty() => format!("; it redirects to {l:?}"),
        _ => String::new(),
    }
}

/// `; retry after 3s` or nothing.
fn retry_note(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!("; it asked to retry after {}s", d.as_secs_f64()),
        None => String::new(),
    }
}

/// Seconds with one decimal, e.g. `4.2`.
fn secs(d: &Duration) -> String {
    format!("{:.1}", d.as_secs_f64())
}

/// What a 404 usually means, for calls that give no hint of their own.
pub(crate) const NOT_FOUND_HINT: &str = "check the owner/organization/repository name and that the token's user can see it, and that the server is new enough (job listing needs Forgejo 11+, runner registration, listing and deletion need 15+)";

/// How much server-provided text an error keeps.
pub(crate) const SERVER_TEXT_LIMIT: usize = 200;

/// Makes server-provided text safe to keep in an error: scrubbed of `secret`, no control
/// characters, at most [`SERVER_TEXT_LIMIT`] characters.
pub(crate) fn sanitize(text: &str, secret: &str) -> String {
    let scrubbed = if secret.is_empty() {
        text.to_owned()
    } else {
        text.replace(secret, "***")
    };
    let mut out: String = scrubbed
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(SERVER_TEXT_LIMIT)
        .collect();
    if scrubbed.chars().count() > SERVER_TEXT_LIMIT {
        out.push('…');
    }
    // A secret cut at the limit could leave a prefix of itself; a long-enough prefix is dropped.
    if !secret.is_empty() && secret.len() >= 8 {
        let probe = &secret[..secret.len().min(8)];
        if let Some(at) = out.find(probe) {
            out.truncate(at);
            out.push('…');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep() -> Endpoint {
        Endpoint {
            name: "list_jobs",
            method: "GET",
            path: "/api/v1/orgs/acme/actions/runners/jobs".into(),
        }
    }

    #[test]
    fn sanitize_scrubs_the_secret_and_control_characters() {
        let s = sanitize("bad token: token s3cretvalue\n\u{1b}[31m", "s3cretvalue");
        assert!(!s.contains("s3cretvalue"));
        assert!(!s.contains('\n'));
        assert!(!s.contains('\u{1b}'));
    }

    #[test]
    fn sanitize_drops_a_secret_cut_at_the_limit() {
        let secret = "0123456789abcdef0123456789abcdef";
        let text = format!("{}{}", "x".repeat(SERVER_TEXT_LIMIT - 10), secret);
        let s = sanitize(&text, secret);
        assert!(!s.contains("0123456789"), "{s}");
    }

    #[test]
    fn reasons_are_pascal_case_and_retry_classes_are_right() {
        let errors = [
            Error::Unauthorized {
                endpoint: ep(),
                answer: "an empty body".into(),
            },
            Error::Server {
                endpoint: ep(),
                status: 503,
                answer: "an HTML page of 120 bytes".into(),
            },
            Error::InvalidToken,
        ];
        for e in &errors {
            let r = e.reason();
            assert!(r.chars().next().unwrap().is_ascii_uppercase(), "{r}");
            assert!(r.chars().all(|c| c.is_ascii_alphanumeric()), "{r}");
        }
        assert!(!errors[0].is_retryable());
        assert!(errors[1].is_retryable());
        assert_eq!(errors[1].status(), Some(503));
        assert!(
            errors[1]
                .to_string()
                .contains("status 503 (an HTML page of 120 bytes)")
        );
        assert!(errors[0].to_string().contains("GET /api/v1/orgs/acme"));
    }
}
