//! The stand-in's runner service (Connect unary, binary protobuf) spoken to directly, each
//! behaviour pinned to the docs/forgejo.md fact ("Runner protocol") it follows; the tasks it
//! makes in `runner_service/tasks.rs`.

mod runner_service {
    pub mod tasks;
}

use bytes::Bytes;
use forgejo::{Client, RegisterRunner, Scope, Token};
use forgejo_stand_in::{StandIn, StandInConfig, StandInJob};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use runner_protocol::{
    ConnectError, DeclareRequest, DeclareResponse, FetchSingleTaskRequest, FetchSingleTaskResponse,
    FetchTaskRequest, FetchTaskResponse, LogRow, Message, PING_PATH, PingRequest, PingResponse,
    RUNNER_SERVICE, RegisterRequest, RegisterResponse, Task, TaskResult, TaskState,
    UpdateLogRequest, UpdateLogResponse, UpdateTaskRequest, UpdateTaskResponse,
};

/// The API token every test uses.
const TOKEN: &str = "f0rgej0-api-t0ken-5ecret-0123456789abcdef";

const V14: &str = "14.0.1+gitea-1.22.0";
const V15: &str = "15.0.3+gitea-1.22.0";

/// A stand-in behaving as `version`, and a client for it.
fn start(version: &str) -> (StandIn, Client) {
    start_with(StandInConfig::with_token(version, TOKEN))
}

/// A stand-in with `config`, and a client for its REST API (to register runners).
fn start_with(config: StandInConfig) -> (StandIn, Client) {
    let forgejo = StandIn::start(config);
    let client = Client::new(&forgejo.url(), Token::new(TOKEN), Default::default()).unwrap();
    (forgejo, client)
}

/// A runner's credentials.
#[derive(Clone)]
struct Creds {
    uuid: String,
    token: String,
}

/// One raw Connect call: status, content type, body.
async fn call_raw(
    forgejo: &StandIn,
    path: &str,
    creds: Option<&Creds>,
    body: Vec<u8>,
) -> (u16, String, Bytes) {
    let mut request = http::Request::post(format!("{}{path}", forgejo.url()))
        .header("content-type", "application/proto")
        .header("connect-protocol-version", "1");
    if let Some(creds) = creds {
        request = request
            .header("x-runner-uuid", &creds.uuid)
            .header("x-runner-token", &creds.token);
    }
    let request = request.body(Full::new(Bytes::from(body))).unwrap();
    let client = HttpClient::builder(TokioExecutor::new()).build_http();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, content_type, body)
}

/// A successful `RunnerService/<method>` call, decoded.
async fn call<Resp: Message + Default>(
    forgejo: &StandIn,
    method: &str,
    creds: &Creds,
    request: &impl Message,
) -> Resp {
    let (status, content_type, body) = call_raw(
        forgejo,
        &format!("{RUNNER_SERVICE}{method}"),
        Some(creds),
        request.encode_to_vec(),
    )
    .await;
    assert_eq!(status, 200, "{method}: {}", String::from_utf8_lossy(&body));
    assert_eq!(content_type, "application/proto");
    Resp::decode(body).unwrap()
}

/// A failing call's status and Connect error.
async fn call_err(
    forgejo: &StandIn,
    path: &str,
    creds: Option<&Creds>,
    body: Vec<u8>,
) -> (u16, ConnectError) {
    let (status, content_type, body) = call_raw(forgejo, path, creds, body).await;
    assert_eq!(content_type, "application/json");
    (status, serde_json::from_slice(&body).unwrap())
}

/// Registers a runner through the REST API, as the operator does.
async fn register(client: &Client, org: &str, name: &str, ephemeral: bool) -> Creds {
    let runner = client
        .register_runner(
            &Scope::Organization(org.into()),
            &RegisterRunner {
                name: name.into(),
                description: String::new(),
                ephemeral,
            },
        )
        .await
        .unwrap();
    Creds {
        uuid: runner.uuid,
        token: runner.token.expose().to_owned(),
    }
}

async fn declare(forgejo: &StandIn, creds: &Creds, labels: &[&str]) {
    let _: DeclareResponse = call(
        forgejo,
        "Declare",
        creds,
        &DeclareRequest {
            version: "v12.8.2".into(),
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        },
    )
    .await;
}

async fn fetch_single(forgejo: &StandIn, creds: &Creds, handle: &str) -> Option<Task> {
    let response: FetchSingleTaskResponse = call(
        forgejo,
        "FetchSingleTask",
        creds,
        &FetchSingleTaskRequest {
            tasks_version: 0,
            handle: handle.into(),
        },
    )
    .await;
    response.task
}

async fn update_task(forgejo: &StandIn, creds: &Creds, task: i64, result: TaskResult) -> i32 {
    let response: UpdateTaskResponse = call(
        forgejo,
        "UpdateTask",
        creds,
        &UpdateTaskRequest {
            state: Some(TaskState {
                id: task,
                result: result as i32,
                ..TaskState::default()
            }),
            outputs: Default::default(),
        },
    )
    .await;
    response.state.unwrap().result
}

/// Fact: errors are Connect JSON bodies with the matching HTTP status; every call carries
/// `x-runner-uuid` and `x-runner-token`.
#[tokio::test]
async fn a_wrong_or_missing_runner_token_is_401_unauthenticated_json() {
    let (forgejo, client) = start(V15);
    let creds = register(&client, "acme", "r1", true).await;
    let declare_path = format!("{RUNNER_SERVICE}Declare");
    let body = DeclareRequest::default().encode_to_vec();

    let wrong = Creds {
        token: "0".repeat(40),
        ..creds.clone()
    };
    let (status, error) = call_err(&forgejo, &declare_path, Some(&wrong), body.clone()).await;
    assert_eq!((status, error.code.as_str()), (401, "unauthenticated"));

    let (status, error) = call_err(&forgejo, &declare_path, None, body).await;
    assert_eq!((status, error.code.as_str()), (401, "unauthenticated"));
    assert!(!error.message.contains(&creds.token), "the token is echoed");
}

/// Fact: Connect unary procedures live under `/api/actions/<service>/<Method>`; an unknown one
/// is a Connect error too.
#[tokio::test]
async fn an_unknown_method_is_404_unimplemented_and_a_bad_body_400_invalid_argument() {
    let (forgejo, client) = start(V15);
    let creds = register(&client, "acme", "r1", true).await;

    let (status, error) = call_err(
        &forgejo,
        &format!("{RUNNER_SERVICE}FetchEverything"),
        Some(&creds),
        Vec::new(),
    )
    .await;
    assert_eq!((status, error.code.as_str()), (404, "unimplemented"));

    // Field 1 as a length-delimited record that runs past the end: not protobuf.
    let (status, error) = call_err(
        &forgejo,
        &format!("{RUNNER_SERVICE}Declare"),
        Some(&creds),
        vec![0x0a, 0x7f, b'x'],
    )
    .await;
    assert_eq!((status, error.code.as_str()), (400, "invalid_argument"));
}

/// Fact: `FetchSingleTask{handle}` hands exactly that job attempt, to a runner of its scope
/// whose declared label names hold every `runs_on` entry, once; the job then lists as
/// `running` with a task id.
#[tokio::test]
async fn a_handle_goes_once_to_a_runner_of_its_scope_whose_labels_match() {
    let (forgejo, client) = start(V15);
    let job = forgejo.add_job(StandInJob::new("acme/app", "build", &["linux", "big"]));
    let handle = job.handle.clone().unwrap();

    let small = register(&client, "acme", "small", true).await;
    declare(&forgejo, &small, &["linux"]).await;
    assert!(fetch_single(&forgejo, &small, &handle).await.is_none());

    let elsewhere = register(&client, "other", "elsewhere", true).await;
    declare(&forgejo, &elsewhere, &["linux", "big"]).await;
    assert!(fetch_single(&forgejo, &elsewhere, &handle).await.is_none());

    let right = register(&client, "acme", "right", true).await;
    declare(&forgejo, &right, &["linux", "big", "extra"]).await;
    assert!(
        fetch_single(&forgejo, &right, "not-the-handle")
            .await
            .is_none()
    );
    let task = fetch_single(&forgejo, &right, &handle).await.unwrap();
    assert!(task.id > 0);
    let workflow = String::from_utf8(task.workflow_payload.clone()).unwrap();
    assert!(workflow.contains("echo \"hello from build\""), "{workflow}");
    let context = task.context.unwrap().fields;
    for key in [
        "forgejo_default_actions_url",
        "gitea_default_actions_url",
        "server_url",
        "repository",
        "run_id",
        "job",
        "token",
    ] {
        assert!(context.contains_key(key), "context lacks {key}");
    }

    assert!(fetch_single(&forgejo, &right, &handle).await.is_none());
    let listed = forgejo.job(job.id).unwrap();
    assert_eq!(
        (listed.status.as_str(), listed.task_id),
        ("running", task.id)
    );
    let fetches = forgejo.fetches();
    let handed: Vec<_> = fetches.iter().filter(|f| f.job_id.is_some()).collect();
    assert_eq!(handed.len(), 1);
    assert_eq!(
        (handed[0].runner_name.as_str(), handed[0].job_id),
        ("right", Some(job.id))
    );
    assert_eq!(fetches.len(), 5);
}

/// Facts: the server answers `UpdateLogResponse{ack_index}` = index + rows and echoes output
/// keys in `sent_outputs`; a final `UpdateTask` ends the job, and Forgejo deletes the
/// ephemeral runner.
#[tokio::test]
async fn logs_are_acked_outputs_echoed_and_the_final_update_ends_the_job() {
    let (forgejo, client) = start(V15);
    let job = forgejo.add_job(StandInJob::new("acme/app", "build", &["linux"]));
    let keep = register(&client, "acme", "keep", false).await;
    let creds = register(&client, "acme", "once", true).await;
    declare(&forgejo, &creds, &["linux"]).await;
    let response: FetchTaskResponse = call(
        &forgejo,
        "FetchTask",
        &creds,
        &FetchTaskRequest {
            tasks_version: 0,
            task_capacity: 1,
        },
    )
    .await;
    let task = response.task.unwrap();

    let rows = |lines: &[&str]| -> Vec<LogRow> {
        lines
            .iter()
            .map(|l| LogRow {
                time: None,
                content: (*l).to_owned(),
            })
            .collect()
    };
    let log = |index: i64, lines: Vec<LogRow>, no_more: bool| UpdateLogRequest {
        task_id: task.id,
        index,
        rows: lines,
        no_more,
    };
    let ack: UpdateLogResponse = call(
        &forgejo,
        "UpdateLog",
        &creds,
        &log(0, rows(&["a", "b"]), false),
    )
    .await;
    assert_eq!(ack.ack_index, 2);
    // A retry resends a row already stored: it is stored once.
    let ack: UpdateLogResponse = call(
        &forgejo,
        "UpdateLog",
        &creds,
        &log(1, rows(&["b", "c"]), false),
    )
    .await;
    assert_eq!(ack.ack_index, 3);
    let ack: UpdateLogResponse =
        call(&forgejo, "UpdateLog", &creds, &log(3, Vec::new(), true)).await;
    assert_eq!(ack.ack_index, 3);
    assert_eq!(forgejo.log_lines(job.id), ["a", "b", "c"]);

    let response: UpdateTaskResponse = call(
        &forgejo,
        "UpdateTask",
        &creds,
        &UpdateTaskRequest {
            state: Some(TaskState {
                id: task.id,
                ..TaskState::default()
            }),
            outputs: [("out".to_owned(), "1".to_owned())].into(),
        },
    )
    .await;
    assert_eq!(response.sent_outputs, ["out"]);
    assert_eq!(forgejo.job(job.id).unwrap().status, "running");

    update_task(&forgejo, &creds, task.id, TaskResult::Failure).await;
    assert_eq!(forgejo.job(job.id).unwrap().status, "failure");
    let left: Vec<_> = forgejo.runners().into_iter().map(|r| r.uuid).collect();
    assert_eq!(left, [keep.uuid], "the ephemeral runner is left");
}

/// Fact: if `UpdateTask` answers result CANCELLED, the runner cancels the job.
#[tokio::test]
async fn a_cancelled_job_is_not_handed_out_and_its_running_task_is_told_so() {
    let (forgejo, client) = start(V15);
    let waiting = forgejo.add_job(StandInJob::new("acme/app", "waiting", &["linux"]));
    let running = forgejo.add_job(StandInJob::new("acme/app", "running", &["linux"]));
    let creds = register(&client, "acme", "r", true).await;
    declare(&forgejo, &creds, &["linux"]).await;

    assert!(forgejo.cancel_job(waiting.id));
    assert_eq!(forgejo.job(waiting.id).unwrap().status, "cancelled");
    let handle = waiting.handle.unwrap();
    assert!(fetch_single(&forgejo, &creds, &handle).await.is_none());

    let task = fetch_single(&forgejo, &creds, &running.handle.unwrap())
        .await
        .unwrap();
    assert_eq!(
        update_task(&forgejo, &creds, task.id, TaskResult::Unspecified).await,
        TaskResult::Unspecified as i32
    );
    assert!(forgejo.cancel_job(running.id));
    assert_eq!(
        update_task(&forgejo, &creds, task.id, TaskResult::Unspecified).await,
        TaskResult::Cancelled as i32
    );
    // The runner's final report (whatever it says) ends the attempt as cancelled.
    update_task(&forgejo, &creds, task.id, TaskResult::Cancelled).await;
    assert_eq!(forgejo.job(running.id).unwrap().status, "cancelled");
    assert!(forgejo.runners().is_empty());
}

/// Fact (legacy path): `register` with a registration token makes a runner that then
/// declares and fetches; `Ping` answers. No token shows up in the recorded requests.
#[tokio::test]
async fn register_with_a_registration_token_makes_a_runner_that_fetches() {
    let (forgejo, client) = start(V14);
    let job = forgejo.add_job(StandInJob::new("acme/app", "build", &["linux"]));
    let registration = client
        .registration_token(&Scope::Organization("acme".into()))
        .await
        .unwrap();

    let (status, error) = call_err(
        &forgejo,
        &format!("{RUNNER_SERVICE}Register"),
        None,
        RegisterRequest {
            name: "legacy".into(),
            token: "wrong".into(),
            ..RegisterRequest::default()
        }
        .encode_to_vec(),
    )
    .await;
    assert_eq!((status, error.code.as_str()), (401, "unauthenticated"));

    let request = RegisterRequest {
        name: "legacy".into(),
        token: registration.expose().to_owned(),
        version: "v12.8.2".into(),
        labels: vec!["linux".into()],
        ephemeral: false,
    };
    let (status, _, body) = call_raw(
        &forgejo,
        &format!("{RUNNER_SERVICE}Register"),
        None,
        request.encode_to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    let runner = RegisterResponse::decode(body).unwrap().runner.unwrap();
    let creds = Creds {
        uuid: runner.uuid.clone(),
        token: runner.token.clone(),
    };
    assert_eq!(runner.labels, ["linux"]);

    let response: FetchTaskResponse =
        call(&forgejo, "FetchTask", &creds, &FetchTaskRequest::default()).await;
    assert_eq!(
        response.task.map(|t| t.id),
        Some(forgejo.job(job.id).unwrap().task_id)
    );

    let (status, _, body) = call_raw(
        &forgejo,
        PING_PATH,
        None,
        PingRequest { data: "x".into() }.encode_to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(PingResponse::decode(body).unwrap().data, "Hello, x!");

    let recorded = format!("{:?}", forgejo.requests());
    assert!(recorded.contains("/api/actions/runner.v1.RunnerService/FetchTask"));
    for secret in [registration.expose(), runner.token.as_str()] {
        assert!(!recorded.contains(secret), "a token was recorded");
    }
}

/// Runner pods reach the stand-in at the address it binds (e.g. the pod network's gateway),
/// so its URL must name that address, not loopback's usual one.
#[tokio::test]
async fn the_url_names_the_bind_address_and_runners_reach_the_service_there() {
    let config = StandInConfig {
        bind: ([127, 0, 0, 2], 0).into(),
        ..StandInConfig::with_token(V15, TOKEN)
    };
    let (forgejo, client) = start_with(config);
    assert!(
        forgejo.url().starts_with("http://127.0.0.2:"),
        "{}",
        forgejo.url()
    );
    assert_eq!(forgejo.addr().ip().to_string(), "127.0.0.2");
    let creds = register(&client, "acme", "r", true).await;
    declare(&forgejo, &creds, &["linux"]).await;
    let calls = forgejo.runner_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].procedure, "Declare");
    assert_eq!(calls[0].runner_uuid.as_deref(), Some(creds.uuid.as_str()));
    assert!(calls[0].had_token);
    assert!(
        !format!("{calls:?}").contains(&creds.token),
        "a token was recorded"
    );
}

async fn fetch_any(forgejo: &StandIn, creds: &Creds) -> Option<Task> {
    let response: FetchTaskResponse = call(
        forgejo,
        "FetchTask",
        creds,
        &FetchTaskRequest {
            tasks_version: 0,
            task_capacity: 1,
        },
    )
    .await;
    response.task
}

/// The registration's status as the REST listing gives it.
async fn listed_status(client: &Client, name: &str) -> String {
    let runners = client
        .list_runners(&Scope::Organization("acme".into()))
        .await
        .unwrap();
    runners
        .into_iter()
        .find(|r| r.name == name)
        .map(|r| r.status)
        .unwrap_or_else(|| "gone".into())
}

/// Facts: `FetchTask` without a handle hands any waiting job whose labels the runner has,
/// oldest first, each to one runner; an ephemeral runner gets one task in its life; a
/// runner is `active` only from its first report on the task (`UpdateLog`/`UpdateTask`),
/// `idle` while it only polls, and an ephemeral one is deleted when its task ends.
#[tokio::test]
async fn fetch_task_hands_any_matching_job_once_and_active_means_reporting() {
    let (forgejo, client) = start(V15);
    let first = forgejo.add_job(StandInJob::new("acme/app", "one", &["docker"]));
    let second = forgejo.add_job(StandInJob::new("acme/app", "two", &["docker"]));
    let warm_a = register(&client, "acme", "warm-a", true).await;
    let warm_b = register(&client, "acme", "warm-b", true).await;
    declare(&forgejo, &warm_a, &["docker"]).await;
    declare(&forgejo, &warm_b, &["docker"]).await;
    assert_eq!(listed_status(&client, "warm-a").await, "idle");

    let task_a = fetch_any(&forgejo, &warm_a)
        .await
        .expect("a job for warm-a");
    let task_b = fetch_any(&forgejo, &warm_b)
        .await
        .expect("a job for warm-b");
    let ids: Vec<i64> = forgejo.fetches().iter().filter_map(|f| f.job_id).collect();
    assert_eq!(ids, [first.id, second.id], "oldest first, one runner each");
    assert_ne!(task_a.id, task_b.id);
    assert_eq!(
        listed_status(&client, "warm-a").await,
        "idle",
        "fetching a task does not make a runner active"
    );
    assert!(
        fetch_any(&forgejo, &warm_a).await.is_none(),
        "an ephemeral runner gets one task"
    );

    update_task(&forgejo, &warm_a, task_a.id, TaskResult::Unspecified).await;
    assert_eq!(listed_status(&client, "warm-a").await, "active");
    update_task(&forgejo, &warm_a, task_a.id, TaskResult::Success).await;
    assert_eq!(listed_status(&client, "warm-a").await, "gone");
}
