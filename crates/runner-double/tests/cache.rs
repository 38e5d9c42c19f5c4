//! The double's shared-cache roles against each other and the Forgejo stand-in (FORGEJO.md,
//! "Caches"): a `cache-server` process, and `one-job` with a `-c` config naming it, whose
//! signed lookup's outcome reaches the task's log as its first row.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use forgejo::stand_in::{StandIn, StandInConfig, StandInJob};
use forgejo::{Client, ClientOptions, RegisterRunner, Scope, Token};

const TOKEN: &str = "double-cache-test-token";
const DOUBLE: &str = env!("CARGO_BIN_EXE_forgejo-runner");
const SECRET: &str = "pool-cache-secret-0123456789";

/// A stand-in with an ephemeral runner registered as the operator does, and a home
/// directory holding its token file and the config files.
struct Setup {
    forgejo: StandIn,
    uuid: String,
    home: tempfile::TempDir,
}

impl Setup {
    async fn new() -> Self {
        let forgejo = StandIn::start(StandInConfig::with_token("15.0.3+gitea-1.22.0", TOKEN));
        let home = tempfile::tempdir().unwrap();
        let client =
            Client::new(&forgejo.url(), Token::new(TOKEN), ClientOptions::default()).unwrap();
        let runner = client
            .register_runner(
                &Scope::Organization("faro".into()),
                &RegisterRunner {
                    name: format!("cache-runner-{}", std::process::id()),
                    description: String::new(),
                    ephemeral: true,
                },
            )
            .await
            .unwrap();
        std::fs::write(home.path().join("token"), runner.token.expose()).unwrap();
        Self {
            forgejo,
            uuid: runner.uuid,
            home,
        }
    }

    /// Writes `name` in the home directory; returns its path.
    fn file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.home.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    /// The runner pod's config: the operator's keys, the secret in a file.
    fn runner_config(&self, server: &str, secret: &str) -> PathBuf {
        let secret = self.file("runner-secret", secret);
        self.file(
            "runner.yaml",
            &format!(
                "cache:\n  enabled: true\n  external_server: \"{server}\"\n  secret_url: \"file:{}\"\n",
                secret.display()
            ),
        )
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

    /// `one-job -c config` for the job with `handle`.
    async fn one_job(&self, config: &Path, handle: &str) -> Output {
        let token_url = format!("file:{}", self.home.path().join("token").display());
        let url = self.forgejo.url();
        let config = config.display().to_string();
        let mut command = self.command(&[
            "-c",
            &config,
            "one-job",
            "--url",
            &url,
            "--uuid",
            &self.uuid,
            "--token-url",
            &token_url,
            "--label",
            "linux:host",
            "--handle",
            handle,
        ]);
        tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap()
    }

    /// A job whose one step echoes `step ran`; returns its id and handle.
    fn job(&self) -> (i64, String) {
        let job = self.forgejo.add_job(
            StandInJob::new("faro/app", "build", &["linux"]).with_steps(&["echo step ran"]),
        );
        (job.id, job.handle.unwrap())
    }
}

/// A running `cache-server` and what it has printed so far.
struct CacheServer {
    child: Child,
    port: u16,
    stdout: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl CacheServer {
    /// Starts `cache-server --port 0` with the config the operator writes; reads the port
    /// from the line it prints.
    fn start(setup: &Setup, secret: &str) -> Self {
        let secret = setup.file("server-secret", secret);
        let dir = setup.home.path().join("cache-dir");
        let config = setup.file(
            "server.yaml",
            &format!(
                "cache:\n  enabled: true\n  dir: \"{}\"\n  port: 4000\n  secret_url: \"file:{}\"\n",
                dir.display(),
                secret.display()
            ),
        );
        let config = config.display().to_string();
        let mut child = setup
            .command(&["-c", &config, "cache-server", "--port", "0"])
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut stdout = String::new();
        let port = loop {
            let line = lines
                .next()
                .expect("cache-server ended before listening")
                .unwrap();
            stdout.push_str(&line);
            stdout.push('\n');
            if let Some(port) = line.strip_prefix("cache-server listening on 0.0.0.0:") {
                break port.parse().unwrap();
            }
        };
        assert!(dir.is_dir(), "--dir was not created");
        let stdout = Arc::new(Mutex::new(stdout));
        let sink = stdout.clone();
        let reader = std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut sink = sink.lock().unwrap();
                sink.push_str(&line);
                sink.push('\n');
            }
        });
        Self {
            child,
            port,
            stdout,
            reader: Some(reader),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Stops it with SIGTERM; returns its exit code and all it printed.
    fn stop(mut self) -> (Option<i32>, String) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        let status = self.child.wait().unwrap();
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        let mut stderr = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            std::io::Read::read_to_string(&mut err, &mut stderr).unwrap();
        }
        let stdout = self.stdout.lock().unwrap().clone();
        (status.code(), format!("{stdout}{stderr}"))
    }
}

impl Drop for CacheServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Fact: the proxy signs with HMAC-SHA256 of the shared secret; the server answers a miss
/// with 204. The outcome is the task's first log row, before the steps' rows, and on stderr.
#[tokio::test]
async fn the_right_secret_is_accepted_and_logged_before_the_steps() {
    let setup = Setup::new().await;
    let server = CacheServer::start(&setup, SECRET);
    let config = setup.runner_config(&server.url(), SECRET);
    let (job, handle) = setup.job();
    let out = setup.one_job(&config, &handle).await;
    assert!(out.status.success(), "{}", text(&out));
    let row = format!("cache: {} accepted the signed request (204)", server.url());
    let rows = setup.forgejo.log_lines(job);
    assert_eq!(rows.first(), Some(&row), "{rows:?}");
    assert!(rows.iter().any(|r| r == "step ran"), "{rows:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&row));
    assert_eq!(setup.forgejo.job(job).unwrap().status, "success");
    let (code, printed) = server.stop();
    assert_eq!(code, Some(0), "{printed}");
    assert!(
        printed.contains("cache-server: GET /_apis/artifactcache/cache 204"),
        "{printed}"
    );
    for output in [text(&out), printed] {
        assert!(!output.contains(SECRET), "the secret was printed: {output}");
    }
}

/// Fact: a MAC that does not verify → 403 `validation error`; as with actions/cache, which
/// only warns, the job still runs and succeeds.
#[tokio::test]
async fn a_wrong_secret_is_refused_and_the_job_still_succeeds() {
    let setup = Setup::new().await;
    let server = CacheServer::start(&setup, SECRET);
    let config = setup.runner_config(&server.url(), "not-the-pool-secret");
    let (job, handle) = setup.job();
    let out = setup.one_job(&config, &handle).await;
    assert!(out.status.success(), "{}", text(&out));
    let row = format!("cache: {} refused the signed request (403)", server.url());
    let rows = setup.forgejo.log_lines(job);
    assert_eq!(rows.first(), Some(&row), "{rows:?}");
    assert_eq!(setup.forgejo.job(job).unwrap().status, "success");
    let (code, printed) = server.stop();
    assert_eq!(code, Some(0), "{printed}");
    assert!(
        printed.contains("cache-server: GET /_apis/artifactcache/cache 403"),
        "{printed}"
    );
    assert!(!printed.contains(SECRET) && !text(&out).contains("not-the-pool-secret"));
}

/// A server nobody listens on fails the lookup, not the job; a config without
/// `external_server` makes no request and no row (the behaviour before `-c`).
#[tokio::test]
async fn an_unreachable_server_fails_the_lookup_only_and_no_server_means_no_row() {
    let setup = Setup::new().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}/", closed.local_addr().unwrap().port());
    drop(closed);
    let config = setup.runner_config(&url, SECRET);
    let (job, handle) = setup.job();
    let out = setup.one_job(&config, &handle).await;
    assert!(out.status.success(), "{}", text(&out));
    let rows = setup.forgejo.log_lines(job);
    let prefix = format!("cache: {url} failed: ");
    assert!(
        rows.first().is_some_and(|r| r.starts_with(&prefix)),
        "{rows:?}"
    );
    assert_eq!(setup.forgejo.job(job).unwrap().status, "success");

    // The runner was ephemeral: the second job needs a runner of its own.
    let setup = Setup::new().await;
    let plain = setup.file(
        "plain.yaml",
        "cache:\n  enabled: true\nrunner:\n  capacity: 1\n",
    );
    let (job, handle) = setup.job();
    let out = setup.one_job(&plain, &handle).await;
    assert!(out.status.success(), "{}", text(&out));
    let rows = setup.forgejo.log_lines(job);
    assert!(!rows.iter().any(|r| r.starts_with("cache:")), "{rows:?}");
    assert_eq!(
        rows.first().map(String::as_str),
        Some("--- step 1: echo step ran")
    );
}

/// Facts: `cache-server` without a secret is a configuration error (exit 1); no error it
/// prints carries a secret it was given.
#[tokio::test]
async fn cache_server_errors_exit_1_and_never_print_the_secret() {
    let setup = Setup::new().await;
    let none = setup.file("none.yaml", "cache:\n  enabled: true\n  port: 0\n");
    let none = none.display().to_string();
    let out = setup
        .command(&["-c", &none, "cache-server"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no secret"), "{}", text(&out));

    // A config that does not parse, with the secret inline next to the bad key.
    let bad = setup.file(
        "bad.yaml",
        &format!("cache:\n  secret: \"{SECRET}\"\n  port: not-a-port\n"),
    );
    let bad = bad.display().to_string();
    let out = setup
        .command(&["-c", &bad, "cache-server"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(&bad), "{}", text(&out));
    assert!(!text(&out).contains(SECRET), "{}", text(&out));

    // A secret on the command line and a --dir that cannot be created.
    let blocker = setup.file("blocker", "");
    let dir = blocker.join("cache").display().to_string();
    let out = setup
        .command(&[
            "cache-server",
            "--secret",
            SECRET,
            "--dir",
            &dir,
            "--port",
            "0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!text(&out).contains(SECRET), "{}", text(&out));

    let missing = setup.home.path().join("absent.yaml").display().to_string();
    let out = setup
        .command(&["-c", &missing, "cache-server"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(&missing), "{}", text(&out));
}
