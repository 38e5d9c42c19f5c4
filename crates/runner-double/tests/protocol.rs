//! The double against the Forgejo stand-in, each behaviour pinned to the docs/forgejo.md fact
//! ("forgejo-runner one-job" and "Runner protocol") it follows.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use forgejo::{Client, ClientOptions, RegisterRunner, Scope, Token};
use forgejo_stand_in::{Fault, StandIn, StandInConfig, StandInJob, Times};

const TOKEN: &str = "double-test-token";
const DOUBLE: &str = env!("CARGO_BIN_EXE_forgejo-runner");

/// A stand-in, a runner registered through the REST API as the operator does, and a home
/// directory holding its token file.
struct Setup {
    forgejo: StandIn,
    uuid: String,
    name: String,
    token: String,
    home: tempfile::TempDir,
}

impl Setup {
    async fn new(version: &str) -> Self {
        let forgejo = StandIn::start(StandInConfig::with_token(version, TOKEN));
        let home = tempfile::tempdir().unwrap();
        if version.starts_with("15") {
            let client =
                Client::new(&forgejo.url(), Token::new(TOKEN), ClientOptions::default()).unwrap();
            let name = format!("runner-{}", std::process::id());
            let runner = client
                .register_runner(
                    &Scope::Organization("faro".into()),
                    &RegisterRunner {
                        name: name.clone(),
                        description: String::new(),
                        ephemeral: true,
                    },
                )
                .await
                .unwrap();
            std::fs::write(home.path().join("token"), runner.token.expose()).unwrap();
            return Self {
                forgejo,
                uuid: runner.uuid,
                name,
                token: runner.token.expose().to_owned(),
                home,
            };
        }
        Self {
            forgejo,
            uuid: String::new(),
            name: String::new(),
            token: String::new(),
            home,
        }
    }

    fn token_url(&self) -> String {
        format!("file:{}", self.home.path().join("token").display())
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(DOUBLE);
        command
            .args(args)
            .current_dir(self.home.path())
            .env("HOME", self.home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    fn one_job(&self, extra: &[&str]) -> Command {
        let url = self.forgejo.url();
        let token_url = self.token_url();
        let mut args = vec![
            "one-job",
            "--url",
            &url,
            "--uuid",
            &self.uuid,
            "--token-url",
            &token_url,
            "--label",
            "linux:host",
            "--fetch-interval",
            "200ms",
        ];
        args.extend_from_slice(extra);
        self.command(&args)
    }
}

async fn output(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The messages of the runner's log lines (logrus: `time="…" level=… msg="…"`), in order;
/// panics on a line of another shape, as the runner prints nothing else there.
fn messages(printed: &str) -> Vec<String> {
    printed
        .lines()
        .map(|line| message(line).unwrap_or_else(|| panic!("not a runner log line: {line:?}")))
        .collect()
}

/// The message of one logrus line, unquoted.
fn message(line: &str) -> Option<String> {
    let rest = line
        .strip_prefix("time=\"")?
        .split_once("\" level=")?
        .1
        .split_once(" msg=")?
        .1;
    let Some(quoted) = rest.strip_prefix('"') else {
        return rest.split(' ').next().map(str::to_owned);
    };
    let mut text = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => text.push(chars.next()?),
            '"' => return Some(text),
            c => text.push(c),
        }
    }
    None
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn status_of(forgejo: &StandIn, id: i64) -> String {
    forgejo.job(id).map(|j| j.status).unwrap_or_default()
}

/// Fact: `--handle` fetches exactly that job attempt; exit 0 when a task ran; the server
/// acks `index + rows`; the final UpdateTask ends the job and Forgejo deletes the ephemeral
/// runner. Step output goes to Forgejo only, as log rows: the runner prints nothing on
/// stdout and only its own log lines on stderr, what `kubectl logs` of a runner pod shows
/// (docs/testing.md, "What the real runner prints").
#[tokio::test]
async fn handle_is_fetched_once_by_its_runner_and_its_output_reaches_only_the_log() {
    let setup = Setup::new("15.0.3+gitea-1.22.0").await;
    let other = setup
        .forgejo
        .add_job(StandInJob::new("faro/app", "other", &["linux"]));
    let job = setup.forgejo.add_job(
        StandInJob::new("faro/app", "build", &["linux"])
            .with_steps(&["echo step-output-one", "echo step-output-two >&2"]),
    );
    let handle = job.handle.clone().unwrap();
    let out = output(setup.one_job(&["--handle", &handle, "--wait"])).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(status_of(&setup.forgejo, job.id), "success");
    assert_eq!(
        status_of(&setup.forgejo, other.id),
        "waiting",
        "took another job"
    );
    let fetches: Vec<_> = setup
        .forgejo
        .fetches()
        .into_iter()
        .filter(|f| f.task_id.is_some())
        .collect();
    assert_eq!(fetches.len(), 1);
    assert_eq!(fetches[0].handle.as_deref(), Some(handle.as_str()));
    assert_eq!(fetches[0].runner_name, setup.name);
    let rows = setup.forgejo.log_lines(job.id);
    assert!(
        rows.iter().any(|r| r == "step-output-one") && rows.iter().any(|r| r == "step-output-two"),
        "{rows:?}"
    );
    assert!(out.stdout.is_empty(), "{}", text(&out));
    assert!(
        !text(&out).contains("step-output"),
        "step output printed:\n{}",
        text(&out)
    );
    let url = setup.forgejo.url();
    let task = fetches[0].task_id.unwrap();
    assert_eq!(
        messages(&String::from_utf8_lossy(&out.stderr)),
        [
            "No configuration file specified; using default settings.".to_owned(),
            "Starting job".to_owned(),
            format!(
                "runner: {}, with version: , with labels: [linux], ephemeral: true, declared successfully",
                setup.name
            ),
            "single task poller launched".to_owned(),
            format!("single task poller successfully fetched one task from {url}"),
            format!("task {task} repo is faro/app https://data.forgejo.org {url}"),
            "single task poller is shutting down".to_owned(),
        ]
    );
    assert!(
        setup.forgejo.runners().is_empty(),
        "the ephemeral runner is left"
    );
    assert_eq!(setup.forgejo.fetches_for(&handle).len(), 1);
    assert!(
        !text(&out).contains(&setup.token),
        "the runner token was printed"
    );
}

/// Facts: every call carries `x-runner-uuid`, `x-runner-token` and `user-agent:
/// forgejo-runner/v12.8.2` over Connect (`content-type: application/proto`,
/// `connect-protocol-version: 1`); the order is Declare → FetchSingleTask (with
/// `x-runner-request-key` and `connect-timeout-ms: 29999`) → UpdateLog/UpdateTask, ending
/// with `UpdateLog{no_more}` then the final UpdateTask; `one-job` never calls Register or Ping.
#[tokio::test]
async fn calls_come_in_the_real_runners_order_with_its_headers() {
    let setup = Setup::new("15.0.3+gitea-1.22.0").await;
    let job = setup
        .forgejo
        .add_job(StandInJob::new("faro/app", "build", &["linux"]));
    let out = output(setup.one_job(&["--handle", job.handle.as_deref().unwrap()])).await;
    assert!(out.status.success(), "{}", text(&out));

    let calls = setup.forgejo.runner_calls();
    let procedures: Vec<&str> = calls.iter().map(|c| c.procedure.as_str()).collect();
    assert_eq!(
        procedures[..2],
        ["Declare", "FetchSingleTask"],
        "{procedures:?}"
    );
    assert_eq!(
        procedures[procedures.len() - 2..],
        ["UpdateLog", "UpdateTask"],
        "{procedures:?}"
    );
    assert!(
        procedures[2..]
            .iter()
            .all(|p| *p == "UpdateLog" || *p == "UpdateTask"),
        "{procedures:?}"
    );
    for call in &calls {
        assert_eq!(call.runner_uuid.as_deref(), Some(setup.uuid.as_str()));
        assert!(call.had_token);
        assert_eq!(call.user_agent.as_deref(), Some("forgejo-runner/v12.8.2"));
        assert_eq!(call.content_type.as_deref(), Some("application/proto"));
        assert_eq!(call.connect_protocol_version.as_deref(), Some("1"));
        let fetch = call.procedure == "FetchSingleTask";
        assert_eq!(
            call.connect_timeout_ms.as_deref(),
            fetch.then_some("29999"),
            "{call:?}"
        );
        assert_eq!(call.request_key.is_some(), fetch, "{call:?}");
    }
}

/// Fact: without `--handle`, `FetchTask` takes any waiting job the runner's declared label
/// names satisfy (`ItRunsOn`: every `runs_on` entry among them), and no other.
#[tokio::test]
async fn fetch_task_takes_a_job_whose_runs_on_the_labels_cover() {
    let setup = Setup::new("15.0.3+gitea-1.22.0").await;
    let gpu = setup
        .forgejo
        .add_job(StandInJob::new("faro/app", "gpu", &["linux", "gpu"]));
    let plain = setup
        .forgejo
        .add_job(StandInJob::new("faro/app", "plain", &["linux"]).with_steps(&["echo plain"]));
    let out = output(setup.one_job(&[])).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(status_of(&setup.forgejo, plain.id), "success");
    assert_eq!(status_of(&setup.forgejo, gpu.id), "waiting");
    let fetches = setup.forgejo.fetches();
    assert_eq!(fetches.len(), 1);
    assert_eq!(
        (fetches[0].handle.as_deref(), fetches[0].job_id),
        (None, Some(plain.id))
    );
    assert!(
        setup
            .forgejo
            .runner_calls()
            .iter()
            .any(|c| c.procedure == "FetchTask")
    );
}

/// Fact: Declare answered `unimplemented` is tolerated; any other Declare error → exit 1.
#[tokio::test]
async fn declare_unimplemented_is_tolerated_and_other_errors_exit_1() {
    let setup = Setup::new("15.0.3+gitea-1.22.0").await;
    let declare = "/api/actions/runner.v1.RunnerService/Declare";
    let job = setup
        .forgejo
        .add_job(StandInJob::new("faro/app", "build", &["linux"]));
    let handle = job.handle.clone().unwrap();

    setup
        .forgejo
        .inject_fault(declare, Fault::Status(500), Times::Once);
    let out = output(setup.one_job(&["--handle", &handle])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        setup.forgejo.fetches().is_empty(),
        "fetched after a failed Declare"
    );

    setup.forgejo.inject_fault(
        declare,
        Fault::Body(
            404,
            r#"{"code":"unimplemented","message":"no Declare here"}"#.into(),
        ),
        Times::Once,
    );
    let out = output(setup.one_job(&["--handle", &handle])).await;
    let said = messages(&String::from_utf8_lossy(&out.stderr));
    assert!(
        said.iter().any(|m| m
            == "Because the Forgejo instance is an old version, skipping declaring the labels and version."),
        "{said:?}"
    );
    // It goes on to fetch. The stand-in then knows no labels for this runner (they come
    // from Declare), so the job is not its: "no task received", exit 2, not a Declare error.
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(setup.forgejo.fetches_for(&handle).len(), 1);
}

/// Fact: the final UpdateTask is retried (up to 10 times) until the server takes it.
#[tokio::test]
async fn the_final_update_is_retried_until_the_server_takes_it() {
    let setup = Setup::new("15.0.3+gitea-1.22.0").await;
    let job = setup
        .forgejo
        .add_job(StandInJob::new("faro/app", "build", &["linux"]));
    // The running report takes the first failure, the final report the other two.
    setup.forgejo.inject_fault(
        "/api/actions/runner.v1.RunnerService/UpdateTask",
        Fault::Status(503),
        Times::N(3),
    );
    let out = output(setup.one_job(&["--handle", job.handle.as_deref().unwrap()])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(status_of(&setup.forgejo, job.id), "success");
    let update_tasks = setup
        .forgejo
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/UpdateTask"))
        .count();
    assert!(update_tasks >= 4, "{update_tasks} UpdateTask calls");
}

/// Fact: exit 0 even when the job failed: it reports RESULT_FAILURE.
#[tokio::test]
async fn failing_step_reports_failure_and_exits_zero() {
    let setup = Setup::new("15.0.3+gitea-1.22.0").await;
    let job = setup.forgejo.add_job(
        StandInJob::new("faro/app", "fails", &["linux"]).with_steps(&[
            "echo before",
            "exit 3",
            "echo never",
        ]),
    );
    let out = output(setup.one_job(&["--handle", job.handle.as_deref().unwrap()])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(status_of(&setup.forgejo, job.id), "failure");
    let rows = setup.forgejo.log_lines(job.id);
    assert!(
        rows.iter().any(|r| r == "before") && !rows.iter().any(|r| r == "never"),
        "{rows:?}"
    );
}

/// Fact: without `--wait`, no task → exit 2 "no task received"; with `--wait` it retries
/// every `--fetch-interval`.
#[tokio::test]
async fn cancelled_job_gives_no_task_exit_2_or_keeps_polling_with_wait() {
    let setup = Setup::new("15.0.3+gitea-1.22.0").await;
    let job = setup
        .forgejo
        .add_job(StandInJob::new("faro/app", "build", &["linux"]));
    let handle = job.handle.clone().unwrap();
    assert!(setup.forgejo.cancel_job(job.id));
    let out = output(setup.one_job(&["--handle", &handle])).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no task received"));

    let mut child: Child = setup
        .one_job(&["--handle", &handle, "--wait"])
        .spawn()
        .unwrap();
    let forgejo = setup.forgejo.clone();
    wait_for("three more fetches", || forgejo.fetches().len() >= 4).await;
    assert!(child.try_wait().unwrap().is_none(), "--wait gave up");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(setup.forgejo.fetches().iter().all(|f| f.task_id.is_none()));
}

/// Fact: if UpdateTask answers CANCELLED, the runner cancels the job.
#[tokio::test]
async fn job_cancelled_while_running_is_stopped() {
    let setup = Setup::new("15.0.3+gitea-1.22.0").await;
    let job = setup.forgejo.add_job(
        StandInJob::new("faro/app", "slow", &["linux"]).with_steps(&["echo started", "sleep 60"]),
    );
    let child = setup
        .one_job(&["--handle", job.handle.as_deref().unwrap()])
        .spawn()
        .unwrap();
    let forgejo = setup.forgejo.clone();
    wait_for("the step to start", || {
        forgejo.log_lines(job.id).iter().any(|r| r == "started")
    })
    .await;
    let started = Instant::now();
    assert!(setup.forgejo.cancel_job(job.id));
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the sleep was not stopped"
    );
    assert_eq!(status_of(&setup.forgejo, job.id), "cancelled");
}

/// Facts: the token file is read verbatim (a trailing newline → "invalid header field value
/// for X-Runner-Token", exit 1); unknown flags exit 1; a `.runner` in the working directory
/// conflicts with `--url` (exit 1); `--token-url` takes only `file:` URLs.
#[tokio::test]
async fn what_the_real_runner_refuses_is_refused_with_exit_1() {
    let setup = Setup::new("15.0.3+gitea-1.22.0").await;
    let token_path = setup.home.path().join("token");
    let token = std::fs::read_to_string(&token_path).unwrap();
    std::fs::write(&token_path, format!("{token}\n")).unwrap();
    let out = output(setup.one_job(&[])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("invalid header field value for \"X-Runner-Token\""),
        "{}",
        text(&out)
    );
    std::fs::write(&token_path, &token).unwrap();

    let out = output(setup.one_job(&["--no-such-flag"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    let url = setup.forgejo.url();
    let out = output(setup.command(&[
        "one-job",
        "--url",
        &url,
        "--uuid",
        "u",
        "--token-url",
        "https://x/token",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    std::fs::write(setup.home.path().join(".runner"), "{}").unwrap();
    let out = output(setup.one_job(&[])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(".runner"), "{}", text(&out));
    assert!(
        setup.forgejo.fetches().is_empty(),
        "a refused runner fetched"
    );
}

/// Fact: legacy path (Forgejo 7–14): `register --no-interactive --instance --token --name
/// --labels` writes `.runner`, then `one-job` without connection flags takes any matching job.
#[tokio::test]
async fn legacy_register_then_one_job_runs_a_job() {
    let setup = Setup::new("14.0.2+gitea-1.22.0").await;
    let job = setup
        .forgejo
        .add_job(StandInJob::new("faro/app", "build", &["linux"]).with_steps(&["echo legacy"]));
    let client = Client::new(
        &setup.forgejo.url(),
        Token::new(TOKEN),
        ClientOptions::default(),
    )
    .unwrap();
    let registration = client
        .registration_token(&Scope::Organization("faro".into()))
        .await
        .unwrap();
    let url = setup.forgejo.url();
    let out = output(setup.command(&[
        "register",
        "--no-interactive",
        "--instance",
        &url,
        "--token",
        registration.expose(),
        "--name",
        "legacy-runner",
        "--labels",
        "linux:host",
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !text(&out).contains(registration.expose()),
        "the registration token was printed"
    );
    assert!(Path::new(&setup.home.path().join(".runner")).exists());
    let out = output(setup.command(&["one-job", "--wait", "--fetch-interval", "200ms"])).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(status_of(&setup.forgejo, job.id), "success");
    assert!(
        setup
            .forgejo
            .log_lines(job.id)
            .iter()
            .any(|r| r == "legacy")
    );
    // Registered without --ephemeral: it stays, as documented for the legacy path.
    assert_eq!(setup.forgejo.runners().len(), 1);
}

/// Fact: Connect errors are JSON bodies with the matching HTTP status.
#[tokio::test]
async fn wrong_runner_token_is_unauthenticated_and_exits_1() {
    let setup = Setup::new("15.0.3+gitea-1.22.0").await;
    std::fs::write(setup.home.path().join("token"), "not-the-token").unwrap();
    let out = output(setup.one_job(&[])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("unauthenticated (401)"),
        "{}",
        text(&out)
    );
}

/// Fact: a runner waiting with `--wait` and no handle takes a job added while it polls at
/// its next fetch, and reports its first log row at once (what warm runners rely on).
#[tokio::test]
async fn a_waiting_runner_takes_a_new_job_within_a_fetch_interval() {
    let setup = Setup::new("15.0.3+gitea-1.22.0").await;
    let child = setup.one_job(&["--wait"]).spawn().unwrap();
    let forgejo = &setup.forgejo;
    wait_for("the runner declares", || {
        forgejo
            .runner_calls()
            .iter()
            .any(|c| c.procedure == "Declare")
    })
    .await;
    let job =
        forgejo.add_job(StandInJob::new("faro/app", "warm", &["linux"]).with_steps(&["echo warm"]));
    let added = Instant::now();
    wait_for("its first log row", || {
        !forgejo.log_lines(job.id).is_empty()
    })
    .await;
    let took = added.elapsed();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // The fetch interval here is 200 ms: one interval and the report take well under 1 s.
    assert!(
        took < Duration::from_secs(1),
        "first log row after {took:?}"
    );
}
