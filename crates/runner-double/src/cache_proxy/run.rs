//! What the proxy signs for a task: its repository and run from the task context, the
//! time it started, and the write isolation key of a pull request run (forgejo-runner
//! `internal/app/run/runner.go`, `getWriteIsolationKey`).

use runner_protocol::{Kind, Struct, Task};

use crate::config::Secret;
use crate::signing;

/// One run registered with the proxy: the values of its signing headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunData {
    /// `Forgejo-Cache-Repo`: the context's `repository`.
    pub repo: String,
    /// `Forgejo-Cache-RunNumber`: the context's `run_id`, as the real runner passes it.
    pub run_number: String,
    /// `Forgejo-Cache-Timestamp`: unix seconds when the task started.
    pub timestamp: String,
    /// `Forgejo-Cache-MAC`: lowercase hex HMAC of the fields above and the key.
    pub mac: String,
    /// `Forgejo-Cache-WriteIsolationKey`, sent only when not empty.
    pub write_isolation_key: String,
}

impl RunData {
    /// The run data of `task`, signed with `secret` at `timestamp`; an error (the real
    /// runner's words) fails the task, as it does there.
    pub fn of_task(task: &Task, secret: &Secret, timestamp: i64) -> Result<Self, String> {
        let context = task.context.as_ref();
        let field = |name: &str| context.map(|c| string_field(c, name)).unwrap_or_default();
        let write_isolation_key = write_isolation_key(
            &field("event_name"),
            &field("ref"),
            context.and_then(|c| struct_field(c, "event")),
        )?;
        // The real runner signs the run id where the header says run number
        // (`CreateRunData(preset.Repository, preset.RunID, ...)`); the server only checks
        // the MAC over whatever the header holds.
        let repo = field("repository");
        let run_number = field("run_id");
        let mac = signing::sign(secret, &repo, &run_number, timestamp, &write_isolation_key);
        Ok(Self {
            repo,
            run_number,
            timestamp: timestamp.to_string(),
            mac,
            write_isolation_key,
        })
    }
}

/// A string field of a struct, empty when absent or not a string (Go's `GetStringValue`).
fn string_field(fields: &Struct, name: &str) -> String {
    match fields.fields.get(name).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(text)) => text.clone(),
        _ => String::new(),
    }
}

fn struct_field<'a>(fields: &'a Struct, name: &str) -> Option<&'a Struct> {
    match fields.fields.get(name)?.kind.as_ref()? {
        Kind::StructValue(inner) => Some(inner),
        _ => None,
    }
}

fn bool_field(fields: &Struct, name: &str) -> Option<bool> {
    match fields.fields.get(name)?.kind.as_ref()? {
        Kind::BoolValue(value) => Some(*value),
        _ => None,
    }
}

/// A pull request run writes the cache under its ref, so that its entries never reach
/// other runs; a merged pull request's `closed` run, and every other event, write shared
/// entries.
fn write_isolation_key(
    event_name: &str,
    git_ref: &str,
    event: Option<&Struct>,
) -> Result<String, String> {
    if event_name != "pull_request" {
        return Ok(String::new());
    }
    if let Some(event) = event
        && string_field(event, "action") == "closed"
    {
        let Some(pull_request) = struct_field(event, "pull_request") else {
            return Err(
                "getWriteIsolationKey: event.pull_request is not a map[string]any".to_owned(),
            );
        };
        let Some(merged) = bool_field(pull_request, "merged") else {
            return Err("getWriteIsolationKey: event.pull_request.merged is not a bool".to_owned());
        };
        if merged {
            return Ok(String::new());
        }
    }
    if !git_ref.starts_with("refs/pull/") {
        return Err(format!(
            "getWriteIsolationKey: expected ref to be refs/pull/..., but was {git_ref:?}"
        ));
    }
    Ok(git_ref.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use runner_protocol::{Value, string_value};

    fn fields(pairs: Vec<(&str, Value)>) -> Struct {
        Struct {
            fields: pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        }
    }

    fn structure(inner: Struct) -> Value {
        Value {
            kind: Some(Kind::StructValue(inner)),
        }
    }

    fn pull_request_event(action: &str, merged: bool) -> Value {
        structure(fields(vec![
            ("action", string_value(action)),
            (
                "pull_request",
                structure(fields(vec![(
                    "merged",
                    Value {
                        kind: Some(Kind::BoolValue(merged)),
                    },
                )])),
            ),
        ]))
    }

    fn task(event_name: &str, git_ref: &str, event: Value) -> Task {
        Task {
            context: Some(fields(vec![
                ("repository", string_value("faro/app")),
                ("run_id", string_value("42")),
                ("run_number", string_value("7")),
                ("event_name", string_value(event_name)),
                ("ref", string_value(git_ref)),
                ("event", event),
            ])),
            ..Task::default()
        }
    }

    #[test]
    fn a_push_signs_repo_and_run_id_without_isolation() {
        let secret = Secret::new("s");
        let data = RunData::of_task(
            &task("push", "refs/heads/main", structure(Struct::default())),
            &secret,
            1_700_000_000,
        )
        .unwrap();
        assert_eq!(data.repo, "faro/app");
        assert_eq!(data.run_number, "42");
        assert_eq!(data.timestamp, "1700000000");
        assert_eq!(data.write_isolation_key, "");
        assert_eq!(
            data.mac,
            signing::sign(&secret, "faro/app", "42", 1_700_000_000, "")
        );
    }

    #[test]
    fn a_pull_request_is_isolated_unless_merged() {
        let secret = Secret::new("s");
        let open = task(
            "pull_request",
            "refs/pull/3/head",
            pull_request_event("opened", false),
        );
        let data = RunData::of_task(&open, &secret, 1).unwrap();
        assert_eq!(data.write_isolation_key, "refs/pull/3/head");
        assert_eq!(
            data.mac,
            signing::sign(&secret, "faro/app", "42", 1, "refs/pull/3/head")
        );
        let merged = task(
            "pull_request",
            "refs/pull/3/head",
            pull_request_event("closed", true),
        );
        assert_eq!(
            RunData::of_task(&merged, &secret, 1)
                .unwrap()
                .write_isolation_key,
            ""
        );
        let unmerged = task(
            "pull_request",
            "refs/pull/3/head",
            pull_request_event("closed", false),
        );
        assert_eq!(
            RunData::of_task(&unmerged, &secret, 1)
                .unwrap()
                .write_isolation_key,
            "refs/pull/3/head"
        );
        let odd = task(
            "pull_request",
            "refs/heads/main",
            pull_request_event("opened", false),
        );
        assert!(RunData::of_task(&odd, &secret, 1).is_err());
    }

    #[test]
    fn missing_context_fields_are_empty() {
        let data = RunData::of_task(&Task::default(), &Secret::new("s"), 5).unwrap();
        assert_eq!((data.repo.as_str(), data.run_number.as_str()), ("", ""));
    }
}
