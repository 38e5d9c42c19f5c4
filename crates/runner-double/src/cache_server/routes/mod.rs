//! The endpoints under `/_apis/artifactcache`, as the real server answers the runner's
//! cache proxy; every request's signature is checked first.

use std::sync::Mutex;

use bytes::Bytes;
use http::header::{CONTENT_RANGE, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Body;
use serde::Deserialize;
use serde_json::{Value, json};

use super::store::{Scope, Store, StoreError};
use crate::config::Secret;
use crate::signing::{self, Signed};

/// Where the endpoints are.
pub const BASE: &str = "/_apis/artifactcache";
/// The largest request body taken: actions/cache uploads in chunks of 32 MiB.
const MAX_BODY: usize = 64 << 20;

/// What the handlers share.
pub struct State {
    /// The HMAC key every request must be signed with.
    pub secret: Secret,
    /// The entries.
    pub store: Mutex<Store>,
}

impl State {
    /// A server state with the entries of `store`.
    pub fn new(secret: Secret, store: Store) -> Self {
        Self {
            secret,
            store: Mutex::new(store),
        }
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `POST /caches`'s body.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Reserve {
    key: String,
    version: String,
    #[serde(default)]
    cache_size: Option<i64>,
}

fn answer(status: StatusCode, body: Bytes, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json_answer(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    answer(
        status,
        Bytes::from(value.to_string()),
        "application/json; charset=utf-8",
    )
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_answer(status, &json!({ "error": message }))
}

fn ok() -> Response<Full<Bytes>> {
    json_answer(StatusCode::OK, &json!({}))
}

fn refused(e: &StoreError) -> Response<Full<Bytes>> {
    error(e.status(), &e.to_string())
}

/// Answers one request.
pub async fn handle<B>(state: &State, request: Request<B>) -> Response<Full<Bytes>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = request.into_parts();
    let Some(signed) = signing::verify(&parts.headers, &state.secret, signing::unix_now()) else {
        return error(StatusCode::FORBIDDEN, "validation error");
    };
    let scope = Scope {
        repo: &signed.repo,
        write_isolation_key: &signed.write_isolation_key,
    };
    let Some(rest) = parts.uri.path().strip_prefix(BASE) else {
        return error(StatusCode::NOT_FOUND, "not found");
    };
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let id = |text: &str| text.parse::<i64>().ok();
    match (&parts.method, segments.as_slice()) {
        (&Method::GET, ["cache"]) => find(state, &signed, parts.uri.query().unwrap_or("")),
        (&Method::POST, ["caches"]) => match read(body).await {
            Ok(bytes) => reserve(state, scope, &bytes),
            Err(response) => response,
        },
        (&Method::PATCH, ["caches", text]) => {
            let Some(id) = id(text) else {
                return error(StatusCode::BAD_REQUEST, "invalid cache id");
            };
            let Some(start) = parts
                .headers
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(range_start)
            else {
                return error(StatusCode::BAD_REQUEST, "invalid Content-Range");
            };
            match read(body).await {
                Ok(bytes) => match state.store().upload(scope, id, start, &bytes) {
                    Ok(()) => ok(),
                    Err(e) => refused(&e),
                },
                Err(response) => response,
            }
        }
        (&Method::POST, ["caches", text]) => match id(text) {
            Some(id) => match state.store().commit(scope, id) {
                Ok(()) => ok(),
                Err(e) => refused(&e),
            },
            None => error(StatusCode::BAD_REQUEST, "invalid cache id"),
        },
        (&Method::GET, ["artifacts", text]) => match id(text) {
            Some(id) => match state.store().archive(scope, id) {
                Ok(bytes) => answer(StatusCode::OK, bytes, "application/octet-stream"),
                Err(e) => refused(&e),
            },
            None => error(StatusCode::BAD_REQUEST, "invalid cache id"),
        },
        (&Method::POST, ["clean"]) => ok(),
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

/// `GET /cache?keys=k1,k2&version=v`: 204 on a miss, the archive's URL on a hit.
fn find(state: &State, signed: &Signed, query: &str) -> Response<Full<Bytes>> {
    let mut keys = Vec::new();
    let mut version = None;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "keys" => keys.extend(
                value
                    .split(',')
                    .map(|k| k.trim().to_lowercase())
                    .filter(|k| !k.is_empty()),
            ),
            "version" => version = Some(value.into_owned()),
            _ => {}
        }
    }
    let Some(version) = version.filter(|v| !v.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "missing version");
    };
    if keys.is_empty() {
        return error(StatusCode::BAD_REQUEST, "missing keys");
    }
    let scope = Scope {
        repo: &signed.repo,
        write_isolation_key: &signed.write_isolation_key,
    };
    match state.store().find(scope, &keys, &version) {
        None => answer(StatusCode::NO_CONTENT, Bytes::new(), "text/plain"),
        Some((id, key)) => json_answer(
            StatusCode::OK,
            &json!({
                "result": "hit",
                "archiveLocation": format!(
                    "{}/{}{BASE}/artifacts/{id}",
                    signed.host.trim_end_matches('/'),
                    signed.run_id
                ),
                "cacheKey": key,
            }),
        ),
    }
}

/// `POST /caches`: a new entry's id.
fn reserve(state: &State, scope: Scope<'_>, body: &[u8]) -> Response<Full<Bytes>> {
    let request: Reserve = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid body: {e}")),
    };
    let size = request.cache_size.and_then(|s| u64::try_from(s).ok());
    let key = request.key.to_lowercase();
    match state.store().reserve(scope, &key, &request.version, size) {
        Ok(id) => json_answer(StatusCode::OK, &json!({ "cacheId": id })),
        Err(e) => refused(&e),
    }
}

/// The start of `bytes start-end/*`.
fn range_start(text: &str) -> Option<u64> {
    let range = text.strip_prefix("bytes ")?.split('/').next()?;
    let (start, end) = range.split_once('-')?;
    let (start, end) = (
        start.trim().parse::<u64>().ok()?,
        end.trim().parse::<u64>().ok()?,
    );
    (start <= end).then_some(start)
}

/// The request body, at most [`MAX_BODY`] bytes.
async fn read<B>(body: B) -> Result<Bytes, Response<Full<Bytes>>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is too large",
        )),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            &format!("reading the body: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests;
