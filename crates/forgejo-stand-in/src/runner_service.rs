//! The runner service, as Forgejo serves it to forgejo-runner: Connect unary RPC over
//! HTTP/1.1, binary protobuf (`content-type: application/proto`), errors as Connect JSON.
//! Runners authenticate with `x-runner-uuid`/`x-runner-token` (from `POST …/runners` or
//! `Register`). Facts: docs/forgejo.md, "Runner protocol".

use std::collections::BTreeMap;

use http::{HeaderMap, Method, Response, StatusCode};
use serde_json::json;

use super::body::StandInBody;
use super::state::{Fetch, JobRecord, RunnerCall, State};
use forgejo::it_runs_on;
use runner_protocol::{
    ConnectError, DeclareRequest, DeclareResponse, FetchSingleTaskRequest, FetchSingleTaskResponse,
    FetchTaskRequest, FetchTaskResponse, Message, PING_PATH, PingRequest, PingResponse,
    RUNNER_SERVICE, RegisterRequest, RegisterResponse, Runner, Struct, Task, TaskResult, TaskState,
    UpdateLogRequest, UpdateLogResponse, UpdateTaskRequest, UpdateTaskResponse, string_value,
};

/// The version the stand-in's tasks version counter starts at.
const TASKS_VERSION: i64 = 1;

/// A Connect error: HTTP status, code, message.
struct RpcError(StatusCode, &'static str, String);

type RpcResult = Result<Vec<u8>, RpcError>;

fn unauthenticated(message: &str) -> RpcError {
    RpcError(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        message.to_owned(),
    )
}

fn decode<M: Message + Default>(body: &[u8]) -> Result<M, RpcError> {
    M::decode(body).map_err(|e| {
        RpcError(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            format!("cannot decode the request: {e}"),
        )
    })
}

/// Serves one runner-service request.
pub(super) fn handle(
    state: &mut State,
    method: &Method,
    headers: &HeaderMap,
    path: &str,
    body: &[u8],
) -> Response<StandInBody> {
    state.runner_calls.push(record(path, headers));
    let result = if method != Method::POST {
        Err(RpcError(
            StatusCode::METHOD_NOT_ALLOWED,
            "unimplemented",
            "Connect unary calls are POSTs".into(),
        ))
    } else if path == PING_PATH {
        decode::<PingRequest>(body).map(|ping| {
            PingResponse {
                data: format!("Hello, {}!", ping.data),
            }
            .encode_to_vec()
        })
    } else if let Some(procedure) = path.strip_prefix(RUNNER_SERVICE) {
        call(state, procedure, headers, body)
    } else {
        Err(not_found_procedure(path))
    };
    match result {
        Ok(bytes) => respond(StatusCode::OK, "application/proto", bytes),
        Err(RpcError(status, code, message)) => {
            let error = ConnectError {
                code: code.to_owned(),
                message,
            };
            let bytes = serde_json::to_vec(&error).unwrap_or_default();
            respond(status, "application/json", bytes)
        }
    }
}

/// What a test may see of a call: the procedure and the headers, never the token.
fn record(path: &str, headers: &HeaderMap) -> RunnerCall {
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    RunnerCall {
        procedure: path.rsplit('/').next().unwrap_or(path).to_owned(),
        runner_uuid: header("x-runner-uuid"),
        had_token: headers.contains_key("x-runner-token"),
        user_agent: header("user-agent"),
        content_type: header("content-type"),
        connect_protocol_version: header("connect-protocol-version"),
        connect_timeout_ms: header("connect-timeout-ms"),
        request_key: header("x-runner-request-key"),
    }
}

fn not_found_procedure(path: &str) -> RpcError {
    RpcError(
        StatusCode::NOT_FOUND,
        "unimplemented",
        format!("{path} is not implemented"),
    )
}

fn respond(status: StatusCode, content_type: &str, bytes: Vec<u8>) -> Response<StandInBody> {
    let mut response = Response::new(StandInBody::full(bytes));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    response
}

fn call(state: &mut State, procedure: &str, headers: &HeaderMap, body: &[u8]) -> RpcResult {
    if procedure == "Register" {
        return register(state, decode(body)?);
    }
    if !matches!(
        procedure,
        "Declare" | "FetchTask" | "FetchSingleTask" | "UpdateTask" | "UpdateLog"
    ) {
        return Err(not_found_procedure(procedure));
    }
    let runner_id = authenticate(state, headers)?;
    if let Some(runner) = state.runners.get_mut(&runner_id) {
        let now = std::time::Instant::now();
        runner.last_online = Some(now);
        if matches!(procedure, "UpdateTask" | "UpdateLog") {
            runner.last_active = Some(now);
        }
    }
    match procedure {
        "Declare" => declare(state, runner_id, decode(body)?),
        "FetchTask" => {
            let _: FetchTaskRequest = decode(body)?;
            let task = fetch(state, runner_id, None);
            Ok(FetchTaskResponse {
                task,
                tasks_version: TASKS_VERSION,
                additional_tasks: Vec::new(),
            }
            .encode_to_vec())
        }
        "FetchSingleTask" => {
            let request: FetchSingleTaskRequest = decode(body)?;
            let task = fetch(state, runner_id, Some(request.handle));
            Ok(FetchSingleTaskResponse {
                task,
                tasks_version: TASKS_VERSION,
            }
            .encode_to_vec())
        }
        "UpdateTask" => update_task(state, runner_id, decode(body)?),
        _ => update_log(state, runner_id, decode(body)?),
    }
}

/// The runner id of `x-runner-uuid` if `x-runner-token` is its token.
fn authenticate(state: &State, headers: &HeaderMap) -> Result<i64, RpcError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(uuid), Some(token)) = (header("x-runner-uuid"), header("x-runner-token")) else {
        return Err(unauthenticated("missing x-runner-uuid or x-runner-token"));
    };
    state
        .runners
        .values()
        .find(|r| r.uuid == uuid && r.token == token)
        .map(|r| r.id)
        .ok_or_else(|| unauthenticated("unregistered runner"))
}

fn runner_message(state: &State, runner_id: i64, with_token: bool) -> Option<Runner> {
    let runner = state.runners.get(&runner_id)?;
    Some(Runner {
        id: runner.id,
        uuid: runner.uuid.clone(),
        token: if with_token {
            runner.token.clone()
        } else {
            String::new()
        },
        name: runner.name.clone(),
        status: 0,
        version: String::new(),
        labels: runner.labels.clone(),
        ephemeral: runner.ephemeral,
    })
}

fn register(state: &mut State, request: RegisterRequest) -> RpcResult {
    let Some((owner_id, repo_id)) = state.registration_scope(&request.token) else {
        return Err(RpcError(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "runner registration token not found".into(),
        ));
    };
    if request.ephemeral && state.major < 15 {
        return Err(RpcError(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "ephemeral runners need Forgejo 15".into(),
        ));
    }
    let (record, _) = state.add_runner_in(owner_id, repo_id, &request.name, "", request.ephemeral);
    if let Some(runner) = state.runners.get_mut(&record.id) {
        runner.labels = request.labels;
    }
    Ok(RegisterResponse {
        runner: runner_message(state, record.id, true),
    }
    .encode_to_vec())
}

fn declare(state: &mut State, runner_id: i64, request: DeclareRequest) -> RpcResult {
    if let Some(runner) = state.runners.get_mut(&runner_id) {
        runner.labels = request.labels;
    }
    Ok(DeclareResponse {
        runner: runner_message(state, runner_id, false),
    }
    .encode_to_vec())
}

/// Hands the runner a waiting job it may run (the one of `handle`, if given), once.
fn fetch(state: &mut State, runner_id: i64, handle: Option<String>) -> Option<Task> {
    let runner = state.runners.get(&runner_id)?.clone();
    // Forgejo hands an ephemeral runner one task in its life (`PickTask`).
    if runner.ephemeral && runner.had_task {
        state.fetches.push(Fetch {
            runner_uuid: runner.uuid,
            runner_name: runner.name,
            handle,
            job_id: None,
            task_id: None,
            at: std::time::Instant::now(),
        });
        return None;
    }
    // Forgejo hands a job to runners of its repository, its owner, or the instance, and
    // only when every `runs-on` label is among the runner's (`ItRunsOn`).
    let in_scope = |job: &JobRecord| match (runner.owner_id, runner.repo_id) {
        (0, 0) => true,
        (_, 0) => runner.owner_id == job.owner_id,
        (_, repo_id) => repo_id == job.repo_id,
    };
    let eligible = |job: &JobRecord| {
        job.status == "waiting"
            && in_scope(job)
            && it_runs_on(&job.runs_on, &runner.labels)
            && handle
                .as_deref()
                .is_none_or(|h| !h.is_empty() && h == job.handle)
    };
    let job_id = state.jobs.values().find(|job| eligible(job)).map(|j| j.id);
    let taken = job_id.filter(|id| state.assign_job(*id, runner_id));
    if let Some(job) = taken.and_then(|id| state.jobs.get_mut(&id)) {
        job.log_rows.clear();
    }
    let task = taken
        .and_then(|id| state.jobs.get(&id))
        .map(|job| task_for(job, &state.base_url));
    state.fetches.push(Fetch {
        runner_uuid: runner.uuid,
        runner_name: runner.name,
        handle,
        job_id: taken,
        task_id: task.as_ref().map(|t| t.id),
        at: std::time::Instant::now(),
    });
    task
}

/// The one-job workflow and context a runner needs for `job`.
fn task_for(job: &JobRecord, base_url: &str) -> Task {
    let steps: Vec<serde_json::Value> = job
        .steps
        .iter()
        .enumerate()
        .map(|(i, line)| json!({"name": format!("step {}", i + 1), "run": line}))
        .collect();
    let workflow = json!({
        "name": job.name,
        "on": "push",
        "jobs": {
            job.name.clone(): {
                "name": job.name,
                "runs-on": job.runs_on,
                "steps": steps,
            }
        }
    });
    let payload = serde_yaml::to_string(&workflow).unwrap_or_default();
    let owner = job
        .repository
        .split_once('/')
        .map_or(job.repository.as_str(), |(owner, _)| owner);
    let context: BTreeMap<String, String> = [
        // Without a default actions URL the runner fails the job at once.
        ("forgejo_default_actions_url", "https://data.forgejo.org"),
        ("gitea_default_actions_url", "https://data.forgejo.org"),
        ("server_url", base_url),
        ("api_url", &format!("{base_url}/api/v1")),
        ("repository", &job.repository),
        ("repository_owner", owner),
        ("run_id", &job.run_id.to_string()),
        ("run_number", &job.run_id.to_string()),
        ("run_attempt", &job.attempt.to_string()),
        ("job", &job.name),
        ("workflow", &job.name),
        ("event_name", "push"),
        ("ref", "refs/heads/main"),
        ("ref_name", "main"),
        ("sha", "0000000000000000000000000000000000000000"),
        ("actor", "stand-in"),
        ("token", "stand-in-task-token"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    Task {
        id: job.task_id,
        workflow_payload: payload.into_bytes(),
        context: Some(Struct {
            fields: context
                .into_iter()
                .map(|(k, v)| (k, string_value(&v)))
                .collect(),
        }),
        ..Task::default()
    }
}

/// The job whose current task is `task_id`, if `runner_id` runs it.
fn job_of_task(
    state: &mut State,
    runner_id: i64,
    task_id: i64,
) -> Result<&mut JobRecord, RpcError> {
    state
        .jobs
        .values_mut()
        .find(|job| job.task_id == task_id && task_id != 0 && job.runner_id == Some(runner_id))
        .ok_or_else(|| {
            RpcError(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("task {task_id} not found"),
            )
        })
}

fn update_log(state: &mut State, runner_id: i64, request: UpdateLogRequest) -> RpcResult {
    let job = job_of_task(state, runner_id, request.task_id)?;
    let stored = job.log_rows.len() as i64;
    if request.index > stored {
        return Err(RpcError(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            format!("index {} beyond the {stored} rows stored", request.index),
        ));
    }
    // A retried call resends rows already stored: keep only the new ones.
    let skip = usize::try_from(stored - request.index).unwrap_or(0);
    job.log_rows
        .extend(request.rows.into_iter().skip(skip).map(|row| row.content));
    let ack_index = job.log_rows.len() as i64;
    // A report changes the task, so its `updated_at` (Forgejo updates the row).
    state.touch_task(request.task_id);
    Ok(UpdateLogResponse { ack_index }.encode_to_vec())
}

fn update_task(state: &mut State, runner_id: i64, request: UpdateTaskRequest) -> RpcResult {
    let Some(reported) = request.state else {
        return Err(RpcError(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "state is required".into(),
        ));
    };
    let job = job_of_task(state, runner_id, reported.id)?;
    let job_id = job.id;
    let cancelled = job.status == "cancelled";
    state.touch_task(reported.id);
    let result = if cancelled {
        TaskResult::Cancelled
    } else {
        TaskResult::try_from(reported.result).unwrap_or(TaskResult::Unspecified)
    };
    let status = match result {
        TaskResult::Unspecified => None,
        TaskResult::Success => Some("success"),
        TaskResult::Failure => Some("failure"),
        TaskResult::Cancelled => Some("cancelled"),
        TaskResult::Skipped => Some("skipped"),
    };
    // A reported end finishes the attempt; Forgejo then deletes an ephemeral runner.
    if reported.result != TaskResult::Unspecified as i32
        && let Some(status) = status
    {
        state.finish_job(job_id, status);
    }
    Ok(UpdateTaskResponse {
        state: Some(TaskState {
            id: reported.id,
            result: result as i32,
            ..TaskState::default()
        }),
        sent_outputs: request.outputs.into_keys().collect(),
    }
    .encode_to_vec())
}
