//! Running a task: its workflow's `run:` steps with `sh`, output sent as log rows, state
//! reported at once and then every second, the end reported until the server takes it.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use runner_protocol::{
    Kind, LogRow, StepState, Task, TaskResult, TaskState, Timestamp, UpdateLogRequest,
    UpdateLogResponse, UpdateTaskRequest, UpdateTaskResponse,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::connect::Connection;
use crate::runner_log;

/// How often state and logs are reported while a step runs.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// How often the final report is tried.
const FINAL_TRIES: u32 = 10;

/// What the task has done so far; shared with the output readers.
#[derive(Default)]
struct Progress {
    rows: Vec<LogRow>,
    acked: usize,
    steps: Vec<StepState>,
}

fn now() -> Timestamp {
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    }
}

fn lock(progress: &Mutex<Progress>) -> std::sync::MutexGuard<'_, Progress> {
    progress.lock().unwrap_or_else(|p| p.into_inner())
}

/// Adds a log row for Forgejo. Only there: the runner's own output has none of it.
fn log(progress: &Mutex<Progress>, line: String) {
    lock(progress).rows.push(LogRow {
        time: Some(now()),
        content: line,
    });
}

/// A string of the task's context, empty when absent (Go's `GetStringValue`).
pub fn context_string(task: &Task, name: &str) -> String {
    match task
        .context
        .as_ref()
        .and_then(|c| c.fields.get(name))
        .and_then(|v| v.kind.as_ref())
    {
        Some(Kind::StringValue(text)) => text.clone(),
        _ => String::new(),
    }
}

/// The context's default actions URL: Forgejo's key, else Gitea's.
pub fn default_actions_url(task: &Task) -> String {
    let forgejo = context_string(task, "forgejo_default_actions_url");
    if forgejo.is_empty() {
        context_string(task, "gitea_default_actions_url")
    } else {
        forgejo
    }
}

/// The `run:` lines of the task's one job.
fn steps_of(task: &Task) -> Result<Vec<String>, String> {
    let workflow: serde_yaml::Value = serde_yaml::from_slice(&task.workflow_payload)
        .map_err(|e| format!("the workflow is not YAML: {e}"))?;
    let jobs = workflow
        .get("jobs")
        .and_then(serde_yaml::Value::as_mapping)
        .ok_or("the workflow has no jobs")?;
    let job = jobs.values().next().ok_or("the workflow has no job")?;
    let steps = job
        .get("steps")
        .and_then(serde_yaml::Value::as_sequence)
        .ok_or("the job has no steps")?;
    steps
        .iter()
        .map(|step| {
            step.get("run")
                .and_then(serde_yaml::Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| "the double runs `run:` steps only".to_owned())
        })
        .collect()
}

/// Runs the task to its end and reports it; never fails (a failed job is a result).
/// `env` is what each step gets on top of the runner's environment (`ACTIONS_CACHE_URL`),
/// or why the task cannot run, which fails it.
pub async fn run(connection: &Connection, task: Task, env: Result<Vec<(String, String)>, String>) {
    let started = now();
    let progress = Arc::new(Mutex::new(Progress::default()));
    let mut result = TaskResult::Success;
    let mut cancelled = false;
    match env.and_then(|env| steps_of(&task).map(|lines| (env, lines))) {
        Err(e) => {
            log(&progress, format!("::error::{e}"));
            result = TaskResult::Failure;
        }
        Ok((env, lines)) => {
            let workdir = std::env::var_os("HOME")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(std::env::temp_dir)
                .join(format!("task-{}", task.id));
            if let Err(e) = std::fs::create_dir_all(&workdir) {
                log(
                    &progress,
                    format!("::error::cannot create {}: {e}", workdir.display()),
                );
                result = TaskResult::Failure;
            }
            for (index, line) in lines.iter().enumerate() {
                if result != TaskResult::Success || cancelled {
                    lock(&progress).steps.push(StepState {
                        id: index as i64,
                        result: TaskResult::Skipped as i32,
                        ..StepState::default()
                    });
                    continue;
                }
                let step = Step {
                    index,
                    line,
                    workdir: &workdir,
                    env: &env,
                };
                let (step_result, was_cancelled) =
                    run_step(connection, &task, &progress, &step, &started).await;
                cancelled = was_cancelled;
                if was_cancelled {
                    result = TaskResult::Cancelled;
                } else if step_result != TaskResult::Success {
                    result = TaskResult::Failure;
                }
            }
        }
    }
    finish(connection, &task, &progress, result, started).await;
}

/// One `run:` step and where it runs.
struct Step<'a> {
    index: usize,
    line: &'a str,
    workdir: &'a std::path::Path,
    env: &'a [(String, String)],
}

/// Runs one step; returns its result and whether the server cancelled the task meanwhile.
async fn run_step(
    connection: &Connection,
    task: &Task,
    progress: &Arc<Mutex<Progress>>,
    step: &Step<'_>,
    started: &Timestamp,
) -> (TaskResult, bool) {
    let index = step.index;
    let log_index = lock(progress).rows.len() as i64;
    let step_started = now();
    log(progress, format!("--- step {}: {}", index + 1, step.line));
    let child = Command::new("sh")
        .args(["-c", step.line])
        .current_dir(step.workdir)
        .envs(step.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a cancel stops what the step started too.
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            log(progress, format!("::error::cannot run sh: {e}"));
            return (TaskResult::Failure, false);
        }
    };
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(read_lines(
            BufReader::new(out),
            progress.clone(),
        )));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(read_lines(
            BufReader::new(err),
            progress.clone(),
        )));
    }
    // State at once, then every second while the step runs; the server may cancel.
    let mut cancelled = report(connection, task, progress, TaskResult::Unspecified, started).await;
    let status = loop {
        if cancelled {
            if let Some(pid) = child.id() {
                // The shell's own `kill` signals the whole group: a job image need not
                // have a kill binary, but it has the `sh` its steps run in.
                let _ = Command::new("sh")
                    .args(["-c", &format!("kill -KILL -{pid}")])
                    .stdin(Stdio::null())
                    .status()
                    .await;
            }
            let _ = child.kill().await;
            break None;
        }
        tokio::select! {
            status = child.wait() => break status.ok(),
            () = tokio::time::sleep(REPORT_INTERVAL) => {
                cancelled = report(connection, task, progress, TaskResult::Unspecified, started).await;
            }
        }
    };
    for reader in readers {
        if cancelled {
            // A killed step's output ends with it; never wait on a pipe a straggler holds.
            reader.abort();
        }
        let _ = reader.await;
    }
    let result = match status {
        Some(status) if status.success() => TaskResult::Success,
        Some(status) => {
            log(progress, format!("step {} failed: {status}", index + 1));
            TaskResult::Failure
        }
        None => {
            log(progress, "the job was cancelled".to_owned());
            TaskResult::Cancelled
        }
    };
    let mut guard = lock(progress);
    let log_length = guard.rows.len() as i64 - log_index;
    guard.steps.push(StepState {
        id: index as i64,
        result: result as i32,
        started_at: Some(step_started),
        stopped_at: Some(now()),
        log_index,
        log_length,
    });
    (result, cancelled)
}

async fn read_lines<R: tokio::io::AsyncRead + Unpin>(
    reader: BufReader<R>,
    progress: Arc<Mutex<Progress>>,
) {
    let mut lines = reader.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        log(&progress, line);
    }
}

/// Sends new log rows and the state; returns whether the server says the task is over
/// (CANCELLED or FAILURE: the runner then cancels the job).
async fn report(
    connection: &Connection,
    task: &Task,
    progress: &Mutex<Progress>,
    result: TaskResult,
    started: &Timestamp,
) -> bool {
    send_logs(connection, task, progress, false).await;
    let state = state(task, progress, result, started);
    match connection
        .call::<_, UpdateTaskResponse>(
            "UpdateTask",
            &UpdateTaskRequest {
                state: Some(state),
                outputs: Default::default(),
            },
            false,
        )
        .await
    {
        Ok(response) => response.state.is_some_and(|s| {
            s.result == TaskResult::Cancelled as i32 || s.result == TaskResult::Failure as i32
        }),
        Err(e) => {
            runner_log::error(&format!("failed to update the task state: {e}"));
            false
        }
    }
}

fn state(
    task: &Task,
    progress: &Mutex<Progress>,
    result: TaskResult,
    started: &Timestamp,
) -> TaskState {
    let done = result != TaskResult::Unspecified;
    TaskState {
        id: task.id,
        result: result as i32,
        started_at: Some(*started),
        stopped_at: done.then(now),
        steps: lock(progress).steps.clone(),
    }
}

/// Sends the rows not yet acknowledged; returns whether the server acknowledged all.
async fn send_logs(
    connection: &Connection,
    task: &Task,
    progress: &Mutex<Progress>,
    no_more: bool,
) -> bool {
    let (index, rows) = {
        let guard = lock(progress);
        (guard.acked, guard.rows[guard.acked..].to_vec())
    };
    if rows.is_empty() && !no_more {
        return true;
    }
    let sent = rows.len();
    let request = UpdateLogRequest {
        task_id: task.id,
        index: index as i64,
        rows,
        no_more,
    };
    match connection
        .call::<_, UpdateLogResponse>("UpdateLog", &request, false)
        .await
    {
        Ok(response) => {
            let acked = usize::try_from(response.ack_index).unwrap_or(0);
            let mut guard = lock(progress);
            guard.acked = acked.min(guard.rows.len());
            acked >= index + sent
        }
        Err(e) => {
            runner_log::error(&format!("failed to send the log rows: {e}"));
            false
        }
    }
}

/// The end: the last rows with `no_more`, then the final state, each tried up to 10 times.
async fn finish(
    connection: &Connection,
    task: &Task,
    progress: &Mutex<Progress>,
    result: TaskResult,
    started: Timestamp,
) {
    log(progress, format!("job result: {result:?}"));
    for attempt in 1..=FINAL_TRIES {
        if send_logs(connection, task, progress, true).await {
            break;
        }
        if attempt < FINAL_TRIES {
            tokio::time::sleep(REPORT_INTERVAL).await;
        }
    }
    let request = UpdateTaskRequest {
        state: Some(state(task, progress, result, &started)),
        outputs: Default::default(),
    };
    for attempt in 1..=FINAL_TRIES {
        match connection
            .call::<_, UpdateTaskResponse>("UpdateTask", &request, false)
            .await
        {
            Ok(_) => return,
            Err(e) => {
                runner_log::error(&format!("failed to report the result (try {attempt}): {e}"))
            }
        }
        if attempt < FINAL_TRIES {
            tokio::time::sleep(REPORT_INTERVAL).await;
        }
    }
}
