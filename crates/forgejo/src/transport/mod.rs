//! One HTTP exchange with Forgejo: the pooled hyper + rustls client, sending a request with
//! the token header, reading the answer under a size cap and a timeout, and mapping the
//! status or failure to an [`Error`]. Retries live in `client/`, not here.
//!
//! Host names are resolved by [`GuardedResolver`], which drops link-local and cloud metadata
//! addresses (unless allowed), so the token is never sent to one, whatever DNS says.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RETRY_AFTER, USER_AGENT,
};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::error::{BoxError, Endpoint, Error, sanitize};

/// The pooled HTTP client (shared by every clone of a `Client`).
pub(crate) type Http = HyperClient<HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>;

/// The `User-Agent` this crate sends.
const USER_AGENT_VALUE: &str = concat!("forgejo-runner-controller/", env!("CARGO_PKG_VERSION"));

/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Builds the pooled client: HTTP/1.1 and HTTP/2 (ALPN), webpki roots plus `extra_roots_pem`;
/// it connects to link-local and metadata addresses only if `allow_link_local`.
pub(crate) fn build_http(
    connect_timeout: Duration,
    extra_roots_pem: Option<&[u8]>,
    allow_link_local: bool,
) -> Result<Http, Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_roots_pem {
        add_pem_roots(&mut roots, pem)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| setup_tls_error(e.into()))?
        .with_root_certificates(roots)
        .with_no_client_auth();

    let mut http = HttpConnector::new_with_resolver(GuardedResolver {
        inner: GaiResolver::new(),
        allow_link_local,
    });
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);

    Ok(HyperClient::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(https))
}

/// Adds every certificate of a PEM bundle; an empty or unreadable bundle is an error.
fn add_pem_roots(roots: &mut rustls::RootCertStore, pem: &[u8]) -> Result<(), Error> {
    let mut added = 0usize;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| {
            setup_tls_error(format!("the extra CA bundle is not valid PEM: {e}").into())
        })?;
        roots.add(cert).map_err(|e| {
            setup_tls_error(
                format!("the extra CA bundle holds an unusable certificate: {e}").into(),
            )
        })?;
        added += 1;
    }
    if added == 0 {
        return Err(setup_tls_error(
            "the extra CA bundle holds no PEM certificate".into(),
        ));
    }
    Ok(())
}

fn setup_tls_error(source: BoxError) -> Error {
    Error::Tls {
        endpoint: Endpoint {
            name: "client_setup",
            method: "-",
            path: "(client setup)".into(),
        },
        source,
    }
}

/// The auth header value for a token; marked sensitive so `Debug` of headers hides it.
pub(crate) fn auth_header(token: &str) -> Result<HeaderValue, Error> {
    if token.is_empty() {
        return Err(Error::InvalidToken);
    }
    let mut value =
        HeaderValue::from_str(&format!("token {token}")).map_err(|_| Error::InvalidToken)?;
    value.set_sensitive(true);
    Ok(value)
}

/// A request to send (built once, sent once per attempt).
pub(crate) struct Call {
    /// Method, path and operation name, for errors and metrics.
    pub endpoint: Endpoint,
    /// The full URL (with query).
    pub url: String,
    /// A JSON body, for POST.
    pub body: Option<Bytes>,
    /// Whether sending it twice is harmless (everything but POST).
    pub idempotent: bool,
    /// What a 403 means here.
    pub forbidden_hint: &'static str,
    /// What a 404 means here.
    pub not_found_hint: &'static str,
}

/// A successful (2xx) answer with its whole body.
pub(crate) struct Answer {
    /// The status (2xx).
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body, at most `max_body_bytes`.
    pub body: Bytes,
}

/// A failed attempt, with what the retry loop needs to know about it.
pub(crate) struct Failure {
    /// The error to report.
    pub error: Error,
    /// False only when the request provably never reached the server (connect failed).
    pub may_have_arrived: bool,
    /// A server-requested delay (`Retry-After` on 429/503).
    pub retry_after: Option<Duration>,
}

impl Failure {
    fn arrived(error: Error) -> Box<Self> {
        Box::new(Self {
            error,
            may_have_arrived: true,
            retry_after: None,
        })
    }
}

/// What one attempt needs besides the call.
pub(crate) struct Attempt<'a> {
    pub http: &'a Http,
    pub auth: &'a HeaderValue,
    pub secret: &'a str,
    pub timeout: Duration,
    pub max_body_bytes: usize,
}

impl Attempt<'_> {
    /// Sends the call once and maps the outcome; returns the status seen, if any, for metrics.
    pub(crate) async fn run(&self, call: &Call) -> (Option<u16>, Result<Answer, Box<Failure>>) {
        match tokio::time::timeout(self.timeout, self.exchange(call)).await {
            Ok(Ok((status, headers, body))) => {
                let code = status.as_u16();
                (Some(code), self.map_status(call, status, headers, body))
            }
            Ok(Err(failure)) => (failure.error.status(), Err(failure)),
            Err(_) => (
                None,
                Err(Failure::arrived(Error::Timeout {
                    endpoint: call.endpoint.clone(),
                    after: self.timeout,
                })),
            ),
        }
    }

    async fn exchange(&self, call: &Call) -> Result<(StatusCode, HeaderMap, Bytes), Box<Failure>> {
        let request = self.request(call)?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| send_failure(&call.endpoint, e))?;
        let (parts, body) = response.into_parts();
        let body = read_capped(&call.endpoint, &parts.headers, body, self.max_body_bytes).await?;
        Ok((parts.status, parts.headers, body))
    }

    fn request(&self, call: &Call) -> Result<Request<Full<Bytes>>, Box<Failure>> {
        let method = match call.endpoint.method {
            "POST" => Method::POST,
            "DELETE" => Method::DELETE,
            _ => Method::GET,
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(call.url.as_str())
            .header(AUTHORIZATION, self.auth.clone())
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, USER_AGENT_VALUE);
        if call.body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        builder
            .body(Full::new(call.body.clone().unwrap_or_default()))
            .map_err(|e| {
                Failure::arrived(Error::InvalidUrl {
                    url: call.endpoint.path.clone(),
                    reason: format!("cannot build a request for it: {e}"),
                })
            })
    }

    fn map_status(
        &self,
        call: &Call,
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Answer, Box<Failure>> {
        if status.is_success() {
            return Ok(Answer {
                status,
                headers,
                body,
            });
        }
        let endpoint = call.endpoint.clone();
        let answer = describe_body(&headers, &body);
        let retry_after = parse_retry_after(&headers, SystemTime::now());
        let error = match status.as_u16() {
            401 => Error::Unauthorized { endpoint, answer },
            403 => Error::Forbidden {
                endpoint,
                hint: call.forbidden_hint,
                answer,
            },
            404 => Error::NotFound {
                endpoint,
                hint: call.not_found_hint,
                answer,
            },
            429 => Error::RateLimited {
                endpoint,
                retry_after,
            },
            code @ 500..=599 => Error::Server {
                endpoint,
                status: code,
                answer,
            },
            code => Error::UnexpectedStatus {
                endpoint,
                status: code,
                answer,
                location: redirect_location(&headers, self.secret),
            },
        };
        let retry_after = match status.as_u16() {
            429 | 503 => retry_after,
            _ => None,
        };
        Err(Box::new(Failure {
            error,
            may_have_arrived: true,
            retry_after,
        }))
    }
}

/// Reads the body, refusing (without reading further) once it exceeds `max`.
async fn read_capped(
    endpoint: &Endpoint,
    headers: &HeaderMap,
    mut body: hyper::body::Incoming,
    max: usize,
) -> Result<Bytes, Box<Failure>> {
    let too_large = || {
        Failure::arrived(Error::BodyTooLarge {
            endpoint: endpoint.clone(),
            limit: max,
        })
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(too_large());
    }
    let mut buf = BytesMut::with_capacity(declared.map_or(0, |len| len as usize));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            Failure::arrived(Error::Connection {
                endpoint: endpoint.clone(),
                source: format!("the answer was cut off: {}", chain(&e)).into(),
            })
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Maps a failure to send (connect, TLS, reset before an answer).
fn send_failure(endpoint: &Endpoint, error: hyper_util::client::legacy::Error) -> Box<Failure> {
    let endpoint = endpoint.clone();
    let may_have_arrived = !error.is_connect();
    let text = chain(&error);
    let error = if let Some(refused) = find::<ForbiddenAddress>(&error) {
        Error::ForbiddenAddress {
            host: refused.host.clone(),
            address: refused.address,
        }
    } else if is_tls(&error) {
        Error::Tls {
            endpoint,
            source: text.into(),
        }
    } else {
        Error::Connection {
            endpoint,
            source: text.into(),
        }
    };
    Box::new(Failure {
        error,
        may_have_arrived,
        retry_after: None,
    })
}

/// Whether a rustls error is anywhere in the chain.
fn is_tls(error: &(dyn std::error::Error + 'static)) -> bool {
    find::<rustls::Error>(error).is_some()
}

/// The first `E` in the chain (io::Error hides its inner error from `source`).
fn find<'a, E: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(found) = find::<E>(inner)
        {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// `outer: inner: innermost`, with io::Error's wrapped error included.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(error);
    while let Some(e) = current {
        let text = e.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

mod resolver;
use resolver::ForbiddenAddress;
pub(crate) use resolver::{GuardedResolver, is_link_local_or_metadata};
mod answer;
use answer::redirect_location;
pub(crate) use answer::{MAX_RETRY_AFTER, describe_body, describe_json_error, parse_retry_after};

#[cfg(test)]
mod tests;
