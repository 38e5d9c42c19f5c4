//! The server at unit level: signed requests straight into [`handle`].

use super::*;
use crate::signing::{HOST, MAC, REPO, RUN_ID, RUN_NUMBER, TIMESTAMP, sign, unix_now};

const SECRET: &str = "cache-unit-secret";

fn request(method: Method, path: &str, timestamp: i64) -> http::request::Builder {
    let mac = sign(&Secret::new(SECRET), "faro/app", "12", timestamp, "");
    Request::builder()
        .method(method)
        .uri(path)
        .header(REPO, "faro/app")
        .header(RUN_NUMBER, "12")
        .header(RUN_ID, "120")
        .header(TIMESTAMP, timestamp.to_string())
        .header(MAC, mac)
        .header(HOST, "http://10.0.0.5:41234")
}

async fn send(state: &State, builder: http::request::Builder, body: &[u8]) -> (StatusCode, Bytes) {
    let request = builder
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap();
    let response = handle(state, request).await;
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, bytes)
}

/// A state with an empty store in a directory that lives as long as it.
fn new_state(secret: &str) -> (State, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (State::new(Secret::new(secret), store), dir)
}

fn json_of(bytes: &Bytes) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

#[tokio::test]
async fn reserve_upload_commit_find_download_round_trip() {
    let (state, _dir) = new_state(SECRET);
    let now = unix_now();
    let lookup = format!("{BASE}/cache?keys=Deps-Linux,deps-&version=v1");
    let (status, _) = send(&state, request(Method::GET, &lookup, now), b"").await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let body = br#"{"key":"Deps-Linux","version":"v1","cacheSize":11}"#;
    let (status, answer) = send(
        &state,
        request(Method::POST, &format!("{BASE}/caches"), now),
        body,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer:?}");
    let id = json_of(&answer)["cacheId"].as_i64().unwrap();

    for (range, chunk) in [("bytes 0-5/*", &b"hello "[..]), ("bytes 6-10/*", b"cache")] {
        let (status, answer) = send(
            &state,
            request(Method::PATCH, &format!("{BASE}/caches/{id}"), now)
                .header(CONTENT_RANGE, range),
            chunk,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{answer:?}");
    }
    let (status, answer) = send(
        &state,
        request(Method::POST, &format!("{BASE}/caches/{id}"), now),
        b"",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer:?}");

    let (status, answer) = send(&state, request(Method::GET, &lookup, now), b"").await;
    assert_eq!(status, StatusCode::OK);
    let hit = json_of(&answer);
    assert_eq!(hit["result"], "hit");
    assert_eq!(hit["cacheKey"], "deps-linux");
    let location = format!("http://10.0.0.5:41234/120{BASE}/artifacts/{id}");
    assert_eq!(hit["archiveLocation"], location.as_str());

    let path = format!("{BASE}/artifacts/{id}");
    let (status, bytes) = send(&state, request(Method::GET, &path, now), b"").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&bytes[..], b"hello cache");

    let (status, answer) = send(
        &state,
        request(Method::POST, &format!("{BASE}/clean"), now),
        b"",
    )
    .await;
    assert_eq!((status, json_of(&answer)), (StatusCode::OK, json!({})));
}

#[tokio::test]
async fn a_future_timestamp_or_another_secret_is_a_validation_error() {
    let (state, _dir) = new_state(SECRET);
    let lookup = format!("{BASE}/cache?keys=k&version=v1");
    let future = unix_now() + 3600;
    let (status, answer) = send(&state, request(Method::GET, &lookup, future), b"").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(json_of(&answer), json!({"error": "validation error"}));

    let (other, _other_dir) = new_state("another-secret");
    let (status, answer) = send(&other, request(Method::GET, &lookup, unix_now()), b"").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(json_of(&answer), json!({"error": "validation error"}));

    // Unsigned requests are refused before the path is looked at.
    let unsigned = Request::get("/nowhere")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        handle(&state, unsigned).await.status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn bad_requests_are_answered_with_an_error_body() {
    let (state, _dir) = new_state(SECRET);
    let now = unix_now();
    let (status, _) = send(
        &state,
        request(Method::GET, &format!("{BASE}/cache?keys=k"), now),
        b"",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = send(
        &state,
        request(Method::PATCH, &format!("{BASE}/caches/1"), now)
            .header(CONTENT_RANGE, "bytes 0-0/*"),
        b"x",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(
        &state,
        request(Method::PATCH, &format!("{BASE}/caches/1"), now),
        b"x",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = send(&state, request(Method::GET, "/elsewhere", now), b"").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[test]
fn content_range_gives_the_start() {
    assert_eq!(range_start("bytes 0-99/*"), Some(0));
    assert_eq!(range_start("bytes 100-199/*"), Some(100));
    assert_eq!(range_start("bytes 9-1/*"), None);
    assert_eq!(range_start("items 0-1/*"), None);
}
