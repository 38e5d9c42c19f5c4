//! The runner protocol's messages (`runner.v1`, `ping.v1`), written by hand from the field
//! table in docs/forgejo.md ("Runner protocol"), for the stand-in and the runner double.
//!
//! A test tool: the Forgejo stand-in (`forgejo-stand-in`) serves these messages and the
//! runner double (`crates/runner-double`) sends them. The operator never speaks this
//! protocol (it uses Forgejo's REST API), so nothing shipped depends on this crate.
//!
//! Field numbers are what matters on the wire. Those docs/forgejo.md marks "observed" were
//! seen from forgejo-runner v12.8.2. `RegisterRequest` (name 1, token 2, version 5, labels 6,
//! ephemeral 7), `RegisterResponse` (runner 1) and `ping.v1` (data 1 both ways) were read
//! from the code generated from the upstream `runner/v1/messages.proto` and
//! `ping/v1/messages.proto` (a published Go copy; 2026-11); that copy agrees with the
//! observed numbers on every other field here. Fields we never send (deprecated
//! `agent_labels`, `capabilities`, `Task.machine`) are left out: protobuf skips unknown fields.
//!
//! Best guesses, kept here in one place because no source here shows their numbers:
//! the Forgejo-only additions `FetchTaskRequest.task_capacity` (2),
//! `FetchTaskResponse.additional_tasks` (3), and the fields of `FetchSingleTaskRequest`
//! and `FetchSingleTaskResponse` (docs/forgejo.md's numbers; the runner source only shows
//! that `handle` is an optional string and `tasks_version` is sent as 0).

use std::collections::HashMap;

pub use prost::Message;
pub use prost_types::{Struct, Timestamp, Value, value::Kind};

/// The Connect path prefix of the runner service.
pub const RUNNER_SERVICE: &str = "/api/actions/runner.v1.RunnerService/";
/// The Connect path of `ping.v1.PingService/Ping`.
pub const PING_PATH: &str = "/api/actions/ping.v1.PingService/Ping";

/// A job's result (`runner.v1.Result`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum TaskResult {
    /// Not finished.
    Unspecified = 0,
    /// Every step passed.
    Success = 1,
    /// A step failed.
    Failure = 2,
    /// Cancelled.
    Cancelled = 3,
    /// Skipped.
    Skipped = 4,
}

/// A runner as the server knows it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Runner {
    /// Its id.
    #[prost(int64, tag = "1")]
    pub id: i64,
    /// Its uuid.
    #[prost(string, tag = "2")]
    pub uuid: String,
    /// Its token (only in `RegisterResponse`).
    #[prost(string, tag = "3")]
    pub token: String,
    /// Its name.
    #[prost(string, tag = "4")]
    pub name: String,
    /// Its status.
    #[prost(int32, tag = "5")]
    pub status: i32,
    /// The runner's version.
    #[prost(string, tag = "8")]
    pub version: String,
    /// Its label names.
    #[prost(string, repeated, tag = "9")]
    pub labels: Vec<String>,
    /// Whether it takes one task only.
    #[prost(bool, tag = "10")]
    pub ephemeral: bool,
}

/// `Register` (legacy path: a registration token makes a runner).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RegisterRequest {
    /// The runner's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The registration token.
    #[prost(string, tag = "2")]
    pub token: String,
    /// The runner's version.
    #[prost(string, tag = "5")]
    pub version: String,
    /// Its label names.
    #[prost(string, repeated, tag = "6")]
    pub labels: Vec<String>,
    /// Whether it takes one task only.
    #[prost(bool, tag = "7")]
    pub ephemeral: bool,
}

/// The answer to `Register`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RegisterResponse {
    /// The new runner, with its uuid and token.
    #[prost(message, optional, tag = "1")]
    pub runner: Option<Runner>,
}

/// `Declare`: the runner's version and label names, before it fetches.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeclareRequest {
    /// The runner's version.
    #[prost(string, tag = "1")]
    pub version: String,
    /// Its label names.
    #[prost(string, repeated, tag = "2")]
    pub labels: Vec<String>,
}

/// The answer to `Declare`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeclareResponse {
    /// The runner as stored.
    #[prost(message, optional, tag = "1")]
    pub runner: Option<Runner>,
}

/// `FetchTask`: any task this runner may run.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FetchTaskRequest {
    /// The last tasks version the runner saw.
    #[prost(int64, tag = "1")]
    pub tasks_version: i64,
    /// How many tasks it takes at once (Forgejo addition; number is a guess).
    #[prost(int64, tag = "2")]
    pub task_capacity: i64,
}

/// The answer to `FetchTask`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FetchTaskResponse {
    /// The task, if any.
    #[prost(message, optional, tag = "1")]
    pub task: Option<Task>,
    /// The current tasks version.
    #[prost(int64, tag = "2")]
    pub tasks_version: i64,
    /// More tasks up to the capacity (Forgejo addition; number is a guess).
    #[prost(message, repeated, tag = "3")]
    pub additional_tasks: Vec<Task>,
}

/// `FetchSingleTask`: exactly the job attempt of `handle` (Forgejo 15, runner 12.8).
#[derive(Clone, PartialEq, prost::Message)]
pub struct FetchSingleTaskRequest {
    /// The last tasks version the runner saw.
    #[prost(int64, tag = "1")]
    pub tasks_version: i64,
    /// The job attempt's handle.
    #[prost(string, tag = "2")]
    pub handle: String,
}

/// The answer to `FetchSingleTask`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FetchSingleTaskResponse {
    /// The task, if it is this runner's to take.
    #[prost(message, optional, tag = "1")]
    pub task: Option<Task>,
    /// The current tasks version.
    #[prost(int64, tag = "2")]
    pub tasks_version: i64,
}

/// A task: one job of a workflow run.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Task {
    /// The task id.
    #[prost(int64, tag = "1")]
    pub id: i64,
    /// A one-job workflow, YAML.
    #[prost(bytes = "vec", tag = "2")]
    pub workflow_payload: Vec<u8>,
    /// The `github`/`forgejo` context.
    #[prost(message, optional, tag = "3")]
    pub context: Option<Struct>,
    /// Secrets by name.
    #[prost(map = "string, string", tag = "4")]
    pub secrets: HashMap<String, String>,
    /// Results of the jobs it needs.
    #[prost(map = "string, message", tag = "6")]
    pub needs: HashMap<String, TaskNeed>,
    /// Variables by name.
    #[prost(map = "string, string", tag = "7")]
    pub vars: HashMap<String, String>,
}

/// A needed job's outputs and result.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskNeed {
    /// Its outputs.
    #[prost(map = "string, string", tag = "1")]
    pub outputs: HashMap<String, String>,
    /// Its result.
    #[prost(enumeration = "TaskResult", tag = "2")]
    pub result: i32,
}

/// `UpdateTask`: the task's state and outputs.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateTaskRequest {
    /// The state.
    #[prost(message, optional, tag = "1")]
    pub state: Option<TaskState>,
    /// Outputs set so far.
    #[prost(map = "string, string", tag = "2")]
    pub outputs: HashMap<String, String>,
}

/// The answer to `UpdateTask`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateTaskResponse {
    /// The state as the server has it (a CANCELLED result asks the runner to stop).
    #[prost(message, optional, tag = "1")]
    pub state: Option<TaskState>,
    /// Output keys the server stored.
    #[prost(string, repeated, tag = "2")]
    pub sent_outputs: Vec<String>,
}

/// A task's state.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskState {
    /// The task id.
    #[prost(int64, tag = "1")]
    pub id: i64,
    /// Its result; UNSPECIFIED while it runs.
    #[prost(enumeration = "TaskResult", tag = "2")]
    pub result: i32,
    /// When it started.
    #[prost(message, optional, tag = "3")]
    pub started_at: Option<Timestamp>,
    /// When it stopped.
    #[prost(message, optional, tag = "4")]
    pub stopped_at: Option<Timestamp>,
    /// Its steps.
    #[prost(message, repeated, tag = "5")]
    pub steps: Vec<StepState>,
}

/// A step's state.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StepState {
    /// The step's index.
    #[prost(int64, tag = "1")]
    pub id: i64,
    /// Its result.
    #[prost(enumeration = "TaskResult", tag = "2")]
    pub result: i32,
    /// When it started.
    #[prost(message, optional, tag = "3")]
    pub started_at: Option<Timestamp>,
    /// When it stopped.
    #[prost(message, optional, tag = "4")]
    pub stopped_at: Option<Timestamp>,
    /// Its first log row.
    #[prost(int64, tag = "5")]
    pub log_index: i64,
    /// Its number of log rows.
    #[prost(int64, tag = "6")]
    pub log_length: i64,
}

/// `UpdateLog`: rows from `index` on.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateLogRequest {
    /// The task id.
    #[prost(int64, tag = "1")]
    pub task_id: i64,
    /// The index of the first row.
    #[prost(int64, tag = "2")]
    pub index: i64,
    /// The rows.
    #[prost(message, repeated, tag = "3")]
    pub rows: Vec<LogRow>,
    /// The last call for this task.
    #[prost(bool, tag = "4")]
    pub no_more: bool,
}

/// The answer to `UpdateLog`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateLogResponse {
    /// Rows stored so far: the next index the runner should send.
    #[prost(int64, tag = "1")]
    pub ack_index: i64,
}

/// One log line.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LogRow {
    /// When it was written.
    #[prost(message, optional, tag = "1")]
    pub time: Option<Timestamp>,
    /// The line.
    #[prost(string, tag = "2")]
    pub content: String,
}

/// `ping.v1.PingService/Ping`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PingRequest {
    /// Anything.
    #[prost(string, tag = "1")]
    pub data: String,
}

/// The answer to `Ping`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PingResponse {
    /// `Hello, <data>!`.
    #[prost(string, tag = "1")]
    pub data: String,
}

/// A Connect error body, `{"code": "...", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConnectError {
    /// `unauthenticated`, `not_found`, `unimplemented`, `invalid_argument`, `internal`, …
    pub code: String,
    /// What went wrong.
    #[serde(default)]
    pub message: String,
}

/// A string [`Value`] for a task context.
pub fn string_value(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_single_task_request_uses_fields_1_and_2() {
        let bytes = FetchSingleTaskRequest {
            tasks_version: 1,
            handle: "h".into(),
        }
        .encode_to_vec();
        // field 1 varint (0x08) = 1, field 2 length-delimited (0x12) "h".
        assert_eq!(bytes, [0x08, 0x01, 0x12, 0x01, b'h']);
    }

    #[test]
    fn update_log_round_trips() {
        let request = UpdateLogRequest {
            task_id: 7,
            index: 3,
            rows: vec![LogRow {
                time: None,
                content: "hello".into(),
            }],
            no_more: true,
        };
        let decoded = UpdateLogRequest::decode(request.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, request);
    }
}
