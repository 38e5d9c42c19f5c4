//! `one-job`'s one cache request: with `cache.external_server`, the double sends the
//! external server one `actions/cache` lookup signed as the real runner's proxy forwards
//! it, so a test sees whether the runner pod and the pool's cache server share a secret
//! and a route. The outcome becomes one log row of the task; it never fails the job.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use forgejo::runner_proto::{Kind, Task};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::{CacheConfig, Secret};
use crate::signing;

/// The key the lookup asks for.
pub const LOOKUP_KEY: &str = "forgejo-runner-double";
/// How long the lookup may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Context values used when the task's context lacks one (the stand-in sends all three).
const FALLBACKS: [(&str, &str); 3] = [
    ("repository", "forgejo-runner-double/unknown"),
    ("run_number", "0"),
    ("run_id", "0"),
];

/// How the lookup went.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer: the signature verified.
    Accepted(u16),
    /// A 4xx answer: the server refused the signature (or the request).
    Refused(u16),
    /// Anything else: another status, a timeout, no connection, no secret.
    Failed(String),
}

/// The log row for `server` (the configured value, as given).
pub struct Row<'a> {
    /// `cache.external_server`.
    pub server: &'a str,
    /// What happened.
    pub outcome: Outcome,
}

impl fmt::Display for Row<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let server = self.server;
        match &self.outcome {
            Outcome::Accepted(status) => {
                write!(f, "cache: {server} accepted the signed request ({status})")
            }
            Outcome::Refused(status) => {
                write!(f, "cache: {server} refused the signed request ({status})")
            }
            Outcome::Failed(why) => write!(f, "cache: {server} failed: {why}"),
        }
    }
}

/// The lookup's log row, or None when the config asks for no external server.
pub async fn lookup(cache: &CacheConfig, task: &Task) -> Option<String> {
    if !cache.enabled() {
        return None;
    }
    let server = cache.external_server()?;
    let outcome = match &cache.secret {
        None => Outcome::Failed("no secret (cache.secret or cache.secret_url)".to_owned()),
        Some(secret) => {
            let host = cache.host.as_deref().unwrap_or("127.0.0.1");
            send(server, secret, host, task).await
        }
    };
    Some(Row { server, outcome }.to_string())
}

/// A context field as text (numbers without a fraction print as integers).
fn context_field(task: &Task, name: &str) -> Option<String> {
    let value = task.context.as_ref()?.fields.get(name)?;
    match value.kind.as_ref()? {
        Kind::StringValue(text) if !text.is_empty() => Some(text.clone()),
        Kind::NumberValue(number) => Some(number.to_string()),
        _ => None,
    }
}

fn context_or_fallback(task: &Task, name: &str) -> String {
    context_field(task, name).unwrap_or_else(|| {
        let fallback = FALLBACKS
            .iter()
            .find(|(field, _)| *field == name)
            .map_or("", |(_, value)| value);
        eprintln!("runner: the task context has no {name}; the cache request uses {fallback:?}");
        fallback.to_owned()
    })
}

async fn send(server: &str, secret: &Secret, host: &str, task: &Task) -> Outcome {
    if !server.starts_with("http://") {
        return Outcome::Failed("the double speaks plain http:// only".to_owned());
    }
    let repo = context_or_fallback(task, "repository");
    let run_number = context_or_fallback(task, "run_number");
    let run_id = context_or_fallback(task, "run_id");
    let timestamp = signing::unix_now();
    let mac = signing::sign(secret, &repo, &run_number, timestamp, "");
    let url = format!(
        "{}/_apis/artifactcache/cache?keys={LOOKUP_KEY}&version=1",
        server.trim_end_matches('/')
    );
    let request = http::Request::get(url)
        .header(signing::REPO, repo)
        .header(signing::RUN_NUMBER, run_number)
        .header(signing::RUN_ID, run_id)
        .header(signing::TIMESTAMP, timestamp.to_string())
        .header(signing::MAC, mac)
        .header(signing::HOST, format!("http://{host}:0"))
        .body(Full::new(Bytes::new()));
    let request = match request {
        Ok(request) => request,
        Err(e) => return Outcome::Failed(format!("building the request: {e}")),
    };
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let response = match tokio::time::timeout(TIMEOUT, client.request(request)).await {
        Err(_) => return Outcome::Failed(format!("timed out after {}s", TIMEOUT.as_secs())),
        Ok(Err(e)) => return Outcome::Failed(chain(&e)),
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    if status.is_success() {
        Outcome::Accepted(status.as_u16())
    } else if status.is_client_error() {
        Outcome::Refused(status.as_u16())
    } else {
        Outcome::Failed(status.to_string())
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use forgejo::runner_proto::{Struct, string_value};

    #[test]
    fn rows_have_the_forms_tests_match() {
        let server = "http://10.96.0.12:4000/";
        let row = |outcome| Row { server, outcome }.to_string();
        assert_eq!(
            row(Outcome::Accepted(204)),
            "cache: http://10.96.0.12:4000/ accepted the signed request (204)"
        );
        assert_eq!(
            row(Outcome::Refused(403)),
            "cache: http://10.96.0.12:4000/ refused the signed request (403)"
        );
        assert_eq!(
            row(Outcome::Failed("timed out after 5s".into())),
            "cache: http://10.96.0.12:4000/ failed: timed out after 5s"
        );
    }

    #[test]
    fn context_fields_are_read_as_text_with_fallbacks() {
        let task = Task {
            context: Some(Struct {
                fields: [
                    ("repository".to_owned(), string_value("faro/app")),
                    (
                        "run_number".to_owned(),
                        forgejo::runner_proto::Value {
                            kind: Some(Kind::NumberValue(42.0)),
                        },
                    ),
                ]
                .into_iter()
                .collect(),
            }),
            ..Task::default()
        };
        assert_eq!(context_or_fallback(&task, "repository"), "faro/app");
        assert_eq!(context_or_fallback(&task, "run_number"), "42");
        assert_eq!(context_or_fallback(&task, "run_id"), "0");
    }

    #[tokio::test]
    async fn no_external_server_or_a_disabled_cache_makes_no_row() {
        let task = Task::default();
        let mut cache = CacheConfig::default();
        assert_eq!(lookup(&cache, &task).await, None);
        cache.external_server = Some("http://127.0.0.1:1/".into());
        cache.enabled = Some(false);
        assert_eq!(lookup(&cache, &task).await, None);
        cache.enabled = None;
        assert_eq!(
            lookup(&cache, &task).await.as_deref(),
            Some("cache: http://127.0.0.1:1/ failed: no secret (cache.secret or cache.secret_url)")
        );
    }
}
