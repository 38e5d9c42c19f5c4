//! One request through the proxy: the real proxy's routes (`/:runId/_apis/artifactcache/`
//! `cache`, `caches`, `caches/:id`, `artifacts/:id`, `clean`), then Go's reverse proxy:
//! method, query, body and the answer passed through, hop-by-hop headers dropped, the
//! run's signing headers set.

use std::time::Duration;

use bytes::Bytes;
use http::header::{
    ALLOW, CONNECTION, CONTENT_TYPE, HOST, HeaderMap, HeaderName, HeaderValue, LOCATION,
    X_CONTENT_TYPE_OPTIONS,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::{ProxyBody, RunData, Shared, SharedStream};
use crate::runner_log::Level;
use crate::signing;

/// Where the server's endpoints are, after the run id.
const BASE: &str = "_apis/artifactcache/";

/// How long a request waits for its client to show it shut its side before forwarding.
const HALF_CLOSE_WAIT: Duration = Duration::from_millis(20);

/// Headers that concern one connection only, never forwarded (Go's `hopHeaders`).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers a `Rewrite` reverse proxy drops from the step's request.
const FORWARDING: [&str; 4] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

/// What the route table says of a request.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Route<'a> {
    /// An endpoint: the run id and the path after `/_apis/artifactcache/`.
    Forward { run_id: &'a str, rest: &'a str },
    /// A known path, another method: the `Allow` value.
    Options(&'static str),
    /// An endpoint of this method but for a trailing slash: redirected without it.
    Redirect,
    /// No such path.
    NotFound,
}

/// The route of `method path`, as httprouter matches the real proxy's table.
pub(super) fn route<'a>(method: &Method, path: &'a str) -> Route<'a> {
    match table(method, path) {
        Route::NotFound
            if path
                .strip_suffix('/')
                .is_some_and(|trimmed| matches!(table(method, trimmed), Route::Forward { .. })) =>
        {
            Route::Redirect
        }
        found => found,
    }
}

fn table<'a>(method: &Method, path: &'a str) -> Route<'a> {
    let Some((run_id, rest)) = path.strip_prefix('/').and_then(|tail| tail.split_once('/')) else {
        return Route::NotFound;
    };
    let Some(rest) = rest.strip_prefix(BASE) else {
        return Route::NotFound;
    };
    if run_id.is_empty() {
        return Route::NotFound;
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let (allowed, allow): (&[Method], &'static str) = match segments.as_slice() {
        ["cache"] => (&[Method::GET], "GET, OPTIONS"),
        ["caches"] => (&[Method::POST], "OPTIONS, POST"),
        ["caches", id] if !id.is_empty() => {
            (&[Method::PATCH, Method::POST], "OPTIONS, PATCH, POST")
        }
        ["artifacts", id] if !id.is_empty() => (&[Method::GET], "GET, OPTIONS"),
        ["clean"] => (&[Method::POST], "OPTIONS, POST"),
        _ => return Route::NotFound,
    };
    if allowed.contains(method) {
        Route::Forward { run_id, rest }
    } else {
        Route::Options(allow)
    }
}

fn answer(
    status: StatusCode,
    body: &'static str,
    allow: Option<&'static str>,
) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    // In the order Go writes them: its header names sorted.
    if let Some(allow) = allow {
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
    }
    if !body.is_empty() {
        // Go's `http.Error`.
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
            .headers_mut()
            .insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    }
    response
}

/// httprouter's redirect to `path` without its trailing slash (Go's `http.Redirect`):
/// 301 for GET, 307 otherwise, the query kept, a small page for GET.
fn redirect(method: &Method, path: &str, query: Option<&str>) -> Response<ProxyBody> {
    let mut location = path.strip_suffix('/').unwrap_or(path).to_owned();
    if let Some(query) = query {
        location = format!("{location}?{query}");
    }
    let get = method == Method::GET;
    let status = if get {
        StatusCode::MOVED_PERMANENTLY
    } else {
        StatusCode::TEMPORARY_REDIRECT
    };
    let body = if get {
        let escaped = location
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&#34;")
            .replace('\'', "&#39;");
        format!("<a href=\"{escaped}\">Moved Permanently</a>.\n\n")
    } else {
        String::new()
    };
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, value);
    }
    if get || method == Method::HEAD {
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
    }
    response
}

/// Go's reverse proxy answers any failure to forward with an empty 502.
fn bad_gateway() -> Response<ProxyBody> {
    answer(StatusCode::BAD_GATEWAY, "", None)
}

/// Drops the hop-by-hop headers and those the `Connection` header names.
fn drop_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Puts the run's signing headers in `headers`; the error names one whose value is not a
/// header value.
fn sign(
    headers: &mut HeaderMap,
    run: &RunData,
    run_id: &str,
    external_url: &str,
) -> Result<(), &'static str> {
    let signed = [
        (signing::REPO, run.repo.as_str()),
        (signing::RUN_NUMBER, run.run_number.as_str()),
        (signing::RUN_ID, run_id),
        (signing::TIMESTAMP, run.timestamp.as_str()),
        (signing::MAC, run.mac.as_str()),
        (signing::HOST, external_url),
        (
            signing::WRITE_ISOLATION_KEY,
            run.write_isolation_key.as_str(),
        ),
    ];
    for (name, value) in signed {
        if name == signing::WRITE_ISOLATION_KEY && value.is_empty() {
            continue;
        }
        let value = HeaderValue::from_str(value).map_err(|_| name)?;
        headers.insert(name, value);
    }
    Ok(())
}

/// Answers one request of a step.
pub(super) async fn handle(
    shared: &Shared,
    client: &SharedStream,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let path = request.uri().path().to_owned();
    let (run_id, rest) = match route(request.method(), &path) {
        Route::Forward { run_id, rest } => (run_id, rest),
        Route::Options(allow) if request.method() == Method::OPTIONS => {
            return answer(StatusCode::OK, "", Some(allow));
        }
        Route::Options(allow) => {
            return answer(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method Not Allowed\n",
                Some(allow),
            );
        }
        Route::Redirect => return redirect(request.method(), &path, request.uri().query()),
        Route::NotFound => return answer(StatusCode::NOT_FOUND, "404 page not found\n", None),
    };
    let method = request.method().clone();
    let Some(run) = shared.run(run_id) else {
        // Upstream leaves such a request without a target, so forwarding it fails: 502.
        super::log(
            Level::Error,
            &format!("{method} {path}: no run has this id, not forwarded"),
        );
        return bad_gateway();
    };
    let (parts, body) = request.into_parts();
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let uri = format!("{}/{BASE}{rest}{query}", shared.target);
    let mut headers = parts.headers;
    drop_hop_by_hop(&mut headers);
    // The client names the server's host itself, from the URI.
    headers.remove(HOST);
    for name in FORWARDING {
        headers.remove(name);
    }
    if let Err(name) = sign(&mut headers, &run, run_id, &shared.external_url) {
        super::log(
            Level::Error,
            &format!("{method} /{BASE}{rest}: {name} is not a header value"),
        );
        return bad_gateway();
    }
    let mut outgoing = Request::new(body.boxed());
    *outgoing.method_mut() = method.clone();
    *outgoing.headers_mut() = headers;
    match uri.parse() {
        Ok(uri) => *outgoing.uri_mut() = uri,
        Err(e) => {
            super::log(Level::Error, &format!("{method} /{BASE}{rest}: {e}"));
            return bad_gateway();
        }
    }
    // Go's server cancels the request of a client that shuts its side (busybox `nc` does,
    // right after sending): the real proxy answers 502, and in practice forwards nothing,
    // as the end of input shows before its transport has connected. A moment's wait for it
    // gives the same here.
    let closed = |method: &Method| {
        super::log(
            Level::Error,
            &format!("{method} /{BASE}{rest}: the client closed its side: context canceled"),
        );
        bad_gateway()
    };
    if tokio::time::timeout(HALF_CLOSE_WAIT, client.client_done())
        .await
        .is_ok()
    {
        return closed(&method);
    }
    let response = tokio::select! {
        biased;
        () = client.client_done() => return closed(&method),
        response = shared.client.request(outgoing) => match response {
            Ok(response) => response,
            Err(e) => {
                super::log(Level::Error, &format!("{method} /{BASE}{rest}: {}", chain(&e)));
                return bad_gateway();
            }
        },
    };
    let (mut parts, body) = response.into_parts();
    drop_hop_by_hop(&mut parts.headers);
    // Method, endpoint and status only: the headers carry the MAC.
    super::log(
        Level::Info,
        &format!("{method} /{BASE}{rest} {}", parts.status.as_u16()),
    );
    Response::from_parts(parts, body.boxed())
}

/// An error with its causes: hyper's top error alone says only "client error (Connect)".
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
