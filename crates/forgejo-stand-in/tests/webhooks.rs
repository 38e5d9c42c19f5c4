//! The stand-in's webhooks: the hooks API as Forgejo answers it, and the `workflow_job`
//! deliveries a job's changes cause, received by a small server on loopback.
//!
//! One test binary (modules below) keeps link time down.

mod webhooks {
    pub mod api;
    pub mod deliveries;
    pub mod receiver;
}

use std::time::Duration;

use bytes::Bytes;
use forgejo_stand_in::{Delivery, StandIn, StandInConfig};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use ring::hmac;
use serde_json::{Value, json};

/// The API token with every scope.
const TOKEN: &str = "f0rgej0-api-t0ken-5ecret-0123456789abcdef";
/// A token with read scopes only.
const READ_ONLY: &str = "read-0nly-t0ken-0123456789abcdef";
/// The secret hooks are created with; it must never come back.
const SECRET: &str = "hook-s3cret-never-echoed-4f1c";

/// A stand-in with one full and one read-only token.
fn start() -> StandIn {
    let mut config = StandInConfig::with_token("15.0.3+gitea-1.22.0", TOKEN);
    config.read_only_tokens = vec![READ_ONLY.into()];
    StandIn::start(config)
}

/// One API call with `token`: status and body (JSON, or `Null` when empty).
async fn api(
    forgejo: &StandIn,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let request = http::Request::builder()
        .method(method)
        .uri(format!("{}/api/v1{path}", forgejo.url()))
        .header("authorization", format!("token {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .unwrap();
    let client = HttpClient::builder(TokioExecutor::new()).build_http();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, json)
}

/// The body of a hook delivering `events` to `url`, signed with [`SECRET`].
fn hook_body(url: &str, events: &[&str]) -> Value {
    json!({
        "type": "forgejo",
        "active": true,
        "events": events,
        "config": { "url": url, "content_type": "json", "secret": SECRET },
    })
}

/// Creates a hook at `path` (`/orgs/acme/hooks`, …); its id.
async fn create_hook(forgejo: &StandIn, path: &str, url: &str, events: &[&str]) -> i64 {
    let (status, hook) = api(forgejo, "POST", path, TOKEN, Some(hook_body(url, events))).await;
    assert_eq!(status, 201, "{hook}");
    hook["id"].as_i64().unwrap()
}

/// Lowercase hex HMAC-SHA256, computed here independently of the stand-in.
fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hmac::sign(&key, body)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `text` is a lowercase version-4 UUID.
fn is_uuid_v4(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && text
            .chars()
            .all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c))
        && parts[2].starts_with('4')
        && parts[3].starts_with(['8', '9', 'a', 'b'])
}

/// Waits until every delivery attempt has an answer or an error; the attempts.
async fn settled(forgejo: &StandIn, count: usize) -> Vec<Delivery> {
    for _ in 0..500 {
        let deliveries = forgejo.deliveries();
        if deliveries.len() >= count
            && deliveries
                .iter()
                .all(|d| d.status.is_some() || d.error.is_some())
        {
            return deliveries;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("deliveries never settled: {:?}", forgejo.deliveries());
}
