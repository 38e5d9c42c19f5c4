//! How the stand-in answers a request: record it, apply an injected fault, check the token,
//! then serve the endpoint the way the configured Forgejo version does, quirks included
//! (`null` for no jobs, waiting and running jobs both listed, superset label matching,
//! no job paging, `null` labels for runners that never connected); webhooks in `hooks.rs`,
//! a repository's tasks in `tasks.rs`, a repository by id in `repositories.rs`.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::body::StandInBody;
use super::state::State;
use super::{Fault, RecordedRequest};
use forgejo::{Scope, it_runs_on};

/// Where the runner service's Connect paths start.
const RUNNER_API: &str = "/api/actions/";

/// Largest request body the stand-in reads.
const MAX_REQUEST_BODY: usize = 1024 * 1024;

/// Returned by the service to make hyper drop the connection without an answer.
#[derive(Debug)]
pub(super) struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for DropConnection {}

/// What the request's `Authorization` header amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Missing,
    Invalid,
    ReadOnly,
    Full,
}

pub(super) fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Serves one request.
pub(super) async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<StandInBody>, DropConnection> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);
    let presented = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, value) = v.split_once(' ')?;
            (scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer"))
                .then(|| value.trim().to_owned())
        });

    let (fault, access) = {
        let mut state = lock(&state);
        let access = match (&presented, parts.headers.contains_key(AUTHORIZATION)) {
            (_, false) => Access::Missing,
            (Some(t), true) if state.config.tokens.contains(t) => Access::Full,
            (Some(t), true) if state.config.read_only_tokens.contains(t) => Access::ReadOnly,
            _ => Access::Invalid,
        };
        let config = &state.config;
        let token_index = presented.as_ref().and_then(|t| {
            config
                .tokens
                .iter()
                .chain(&config.read_only_tokens)
                .position(|known| known == t)
        });
        state.requests.push(RecordedRequest {
            method: parts.method.to_string(),
            path: path.clone(),
            query: query.clone(),
            had_authorization: access != Access::Missing,
            token_matched: matches!(access, Access::Full | Access::ReadOnly),
            token_index,
            // Runner-service bodies are protobuf and may hold a registration token.
            body: (!body.is_empty() && !path.starts_with(RUNNER_API))
                .then(|| hooks::recorded_body(&path, &body)),
        });
        (state.take_fault(parts.method.as_str(), &path), access)
    };

    let mut ignore_page = false;
    match fault {
        None => {}
        Some(Fault::IgnorePage) => ignore_page = true,
        Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::Reset) => return Err(DropConnection),
        Some(other) => return Ok(fault_response(other, &lock(&state).base_url)),
    }

    if path.starts_with(RUNNER_API) {
        let mut state = lock(&state);
        return Ok(super::runner_service::handle(
            &mut state,
            &parts.method,
            &parts.headers,
            &path,
            &body,
        ));
    }

    let query = if ignore_page {
        query.as_deref().map(without_page)
    } else {
        query
    };
    let mut reply = {
        let mut state = lock(&state);
        route(
            &mut state,
            &parts.method,
            &path,
            query.as_deref(),
            access,
            &body,
        )
    };
    if ignore_page {
        reply.total_count = None;
    }
    Ok(reply.into_response())
}

/// The query without its `page` parameter.
fn without_page(query: &str) -> String {
    query
        .split('&')
        .filter(|pair| pair.split('=').next() != Some("page"))
        .collect::<Vec<_>>()
        .join("&")
}

/// An answer before it becomes a hyper response.
struct Reply {
    status: StatusCode,
    json: Option<Value>,
    total_count: Option<usize>,
}

impl Reply {
    fn json(status: StatusCode, json: Value) -> Self {
        Self {
            status,
            json: Some(json),
            total_count: None,
        }
    }

    fn no_content() -> Self {
        Self {
            status: StatusCode::NO_CONTENT,
            json: None,
            total_count: None,
        }
    }

    fn into_response(self) -> Response<StandInBody> {
        let mut builder = Response::builder().status(self.status);
        if let Some(total) = self.total_count {
            builder = builder.header("x-total-count", total.to_string());
        }
        let body = match self.json {
            Some(json) => {
                builder = builder.header(CONTENT_TYPE, "application/json;charset=utf-8");
                StandInBody::full(json.to_string())
            }
            None => StandInBody::empty(),
        };
        builder
            .body(body)
            .unwrap_or_else(|_| Response::new(StandInBody::empty()))
    }
}

/// Forgejo's API error shape.
fn api_error(state: &State, status: StatusCode, message: &str) -> Reply {
    Reply::json(
        status,
        json!({ "message": message, "url": format!("{}/api/swagger", state.base_url) }),
    )
}

fn method_not_allowed(state: &State) -> Reply {
    api_error(state, StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

fn not_found(state: &State) -> Reply {
    Reply::json(
        StatusCode::NOT_FOUND,
        json!({ "errors": [], "message": "The target couldn't be found.", "url": format!("{}/api/swagger", state.base_url) }),
    )
}

/// Which collection of a scope a request path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Collection {
    /// `…/actions/runners…`, its jobs and registration token.
    Runners,
    /// `…/hooks…`.
    Hooks,
    /// `repos/{owner}/{repo}/actions/tasks`.
    Tasks,
}

/// The endpoint a request path names, with what remains after `…/runners`.
fn parse_scope(segments: &[String], major: u64) -> Option<(Scope, &[String])> {
    let strs: Vec<&str> = segments.iter().map(String::as_str).collect();
    match strs.as_slice() {
        ["repos", owner, repo, "actions", "runners", ..] => Some((
            Scope::Repository {
                owner: (*owner).to_owned(),
                repo: (*repo).to_owned(),
            },
            &segments[5..],
        )),
        ["orgs", org, "actions", "runners", ..] => {
            Some((Scope::Organization((*org).to_owned()), &segments[4..]))
        }
        ["user", "actions", "runners", ..] => Some((Scope::User, &segments[3..])),
        ["admin", "actions", "runners", ..] if major >= 15 => {
            Some((Scope::Instance, &segments[3..]))
        }
        ["admin", "runners", "jobs" | "registration-token"] => {
            Some((Scope::Instance, &segments[2..]))
        }
        _ => None,
    }
}

/// The scope and collection a request path names, with what remains after the collection.
fn parse_collection(segments: &[String], major: u64) -> Option<(Scope, &[String], Collection)> {
    let tagged = |collection| move |(scope, rest)| (scope, rest, collection);
    parse_scope(segments, major)
        .map(tagged(Collection::Runners))
        .or_else(|| hooks::parse_hooks_path(segments).map(tagged(Collection::Hooks)))
        .or_else(|| tasks::parse_tasks_path(segments).map(tagged(Collection::Tasks)))
}

fn route(
    state: &mut State,
    method: &Method,
    path: &str,
    query: Option<&str>,
    access: Access,
    body: &[u8],
) -> Reply {
    let Some(rest) = path.strip_prefix("/api/v1/") else {
        return not_found(state);
    };
    let segments: Vec<String> = rest.split('/').map(percent_decode).collect();

    if segments == ["version"] {
        if access == Access::Invalid {
            return api_error(
                state,
                StatusCode::UNAUTHORIZED,
                "invalid username, password or token",
            );
        }
        if method != Method::GET {
            return api_error(state, StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        }
        return Reply::json(StatusCode::OK, json!({ "version": state.config.version }));
    }

    match access {
        Access::Missing => return api_error(state, StatusCode::UNAUTHORIZED, "token is required"),
        Access::Invalid => {
            return api_error(
                state,
                StatusCode::UNAUTHORIZED,
                "invalid username, password or token",
            );
        }
        Access::ReadOnly | Access::Full => {}
    }

    if let Some(id) = repositories::parse_repository_path(&segments) {
        return repositories::serve(state, method, id, access);
    }
    let Some((scope, rest, collection)) = parse_collection(&segments, state.major) else {
        return not_found(state);
    };
    let owner_missing = match &scope {
        Scope::Repository { owner, .. } | Scope::Organization(owner) => !state.owner_exists(owner),
        Scope::User | Scope::Instance => false,
    };
    if owner_missing {
        return not_found(state);
    }

    let writes = matches!(*method, Method::POST | Method::DELETE);
    if writes && access == Access::ReadOnly {
        let message = format!(
            "token does not have at least one of required scope(s): [{}]",
            scope.token_scope(true)
        );
        return api_error(state, StatusCode::FORBIDDEN, &message);
    }

    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    match collection {
        Collection::Hooks => return hooks::serve(state, method, &scope, &rest, body),
        Collection::Tasks => return tasks::serve(state, method, &scope, query),
        Collection::Runners => {}
    }
    let v15 = state.major >= 15;
    match (method, rest.as_slice()) {
        (&Method::GET, ["jobs"]) if state.major >= 11 => list_jobs(state, &scope, query),
        (&Method::GET, ["registration-token"]) => {
            let token = state.registration_token(&scope);
            Reply::json(StatusCode::OK, json!({ "token": token }))
        }
        (&Method::GET, []) if v15 => list_runners(state, &scope, query),
        (&Method::POST, []) if v15 => register_runner(state, &scope, body),
        (&Method::GET, [id]) if v15 => match find_runner(state, &scope, id) {
            Some(runner) => Reply::json(StatusCode::OK, runner_json(&runner.to_api())),
            None => not_found(state),
        },
        (&Method::DELETE, [id]) if v15 => match find_runner(state, &scope, id) {
            Some(runner) => {
                state.runners.remove(&runner.id);
                Reply::no_content()
            }
            None => not_found(state),
        },
        (_, ["jobs"]) if state.major >= 11 => method_not_allowed(state),
        (_, ["registration-token"]) => method_not_allowed(state),
        (_, [] | [_]) if v15 => method_not_allowed(state),
        _ => not_found(state),
    }
}

/// The answer an injected fault produces (all but `Delay` and `Reset`).
fn fault_response(fault: Fault, base_url: &str) -> Response<StandInBody> {
    let error_body = |status: u16| {
        json!({
            "message": format!("injected fault: status {status}"),
            "url": format!("{base_url}/api/swagger"),
        })
        .to_string()
    };
    let json_response = |status: u16, body: StandInBody| {
        Response::builder()
            .status(status)
            .header(CONTENT_TYPE, "application/json;charset=utf-8")
            .body(body)
    };
    let response = match fault {
        Fault::Status(status) => json_response(status, StandInBody::full(error_body(status))),
        Fault::StatusWithRetryAfter(status, secs) => Response::builder()
            .status(status)
            .header(CONTENT_TYPE, "application/json;charset=utf-8")
            .header(RETRY_AFTER, secs.to_string())
            .body(StandInBody::full(error_body(status))),
        Fault::Body(status, body) => json_response(status, StandInBody::full(body)),
        Fault::Malformed => json_response(200, StandInBody::full(r#"[{"id": 1, "status": "wait"#)),
        Fault::Truncated => {
            let whole = r#"[{"id":1,"repo_id":1,"owner_id":1,"name":"build","needs":null,"runs_on":["docker"],"task_id":0,"status":"waiting"}]"#;
            Response::builder()
                .status(200)
                .header(CONTENT_TYPE, "application/json;charset=utf-8")
                .header(CONTENT_LENGTH, whole.len().to_string())
                .body(StandInBody::Truncated {
                    first: Some(Bytes::from_static(&whole.as_bytes()[..whole.len() / 2])),
                    pause: None,
                })
        }
        Fault::Huge(bytes) => json_response(200, StandInBody::Huge { remaining: bytes }),
        Fault::Delay(_) | Fault::Reset | Fault::IgnorePage => {
            Response::builder().status(500).body(StandInBody::empty())
        }
    };
    response.unwrap_or_else(|_| Response::new(StandInBody::empty()))
}

/// Decodes `%XX` escapes in a path segment (invalid escapes stay as they are).
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(hi * 16 + lo);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

mod endpoints;
mod hooks;
mod repositories;
mod tasks;
use endpoints::{find_runner, list_jobs, list_runners, register_runner, runner_json};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(percent_decode("my%20app"), "my app");
        assert_eq!(percent_decode("%C3%BC"), "ü");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
