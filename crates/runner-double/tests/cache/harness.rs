//! What the cache tests share: a stand-in with a runner, the double's `one-job` with the
//! runner image's tools, and a `cache-server` process.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use forgejo::{Client, ClientOptions, RegisterRunner, Scope, Token};
use forgejo_stand_in::{StandIn, StandInConfig, StandInJob};

const TOKEN: &str = "double-cache-test-token";
/// The double, as cargo built it.
pub const DOUBLE: &str = env!("CARGO_BIN_EXE_forgejo-runner");
/// The pool's secret, shared by the server and the runners.
pub const SECRET: &str = "pool-cache-secret-0123456789";
/// Debian busybox-static: the runner test image's `sh` tools (README, "packages").
const BUSYBOX: &str = "/bin/busybox";
/// The applets the cache steps call, as the runner image links them.
const APPLETS: [&str; 5] = ["wget", "nc", "sed", "head", "grep"];

/// A stand-in with an ephemeral runner registered as the operator does, and a home
/// directory holding its token file and the config files.
pub struct Setup {
    /// The stand-in.
    pub forgejo: StandIn,
    uuid: String,
    /// Token, configs and the tools directory.
    pub home: tempfile::TempDir,
}

impl Setup {
    /// A stand-in and one ephemeral runner of `faro`.
    pub async fn new() -> Self {
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
    pub fn file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.home.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    /// The runner pod's config: the operator's keys, the secret in a file, and `host` when
    /// given (else the proxy finds the machine's address, as in a pod).
    pub fn runner_config(&self, server: &str, secret: &str, host: Option<&str>) -> PathBuf {
        let secret = self.file("runner-secret", secret);
        let host = host.map_or(String::new(), |h| format!("  host: \"{h}\"\n"));
        self.file(
            "runner.yaml",
            &format!(
                "cache:\n  enabled: true\n  external_server: \"{server}\"\n  secret_url: \"file:{}\"\n{host}",
                secret.display()
            ),
        )
    }

    /// The double with `args`, in the home directory.
    pub fn command(&self, args: &[&str]) -> Command {
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

    /// `one-job [-c config]` for the job with `handle`; its steps find busybox's `wget`,
    /// `nc`, `sed`, `head` and `grep` first on the PATH, as in the runner test image.
    pub async fn one_job(&self, config: Option<&Path>, handle: &str) -> Output {
        let token_url = format!("file:{}", self.home.path().join("token").display());
        let url = self.forgejo.url();
        let mut args = Vec::new();
        if let Some(config) = config {
            args.extend(["-c".to_owned(), config.display().to_string()]);
        }
        args.extend(
            [
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
            ]
            .map(str::to_owned),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut command = self.command(&args);
        let path = std::env::var("PATH").unwrap_or_default();
        command
            .env("PATH", format!("{}:{path}", self.tools().display()))
            .env_remove("ACTIONS_CACHE_URL");
        tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap()
    }

    /// A directory of busybox applet links.
    fn tools(&self) -> PathBuf {
        let tools = self.home.path().join("tools");
        if !tools.is_dir() {
            assert!(
                Path::new(BUSYBOX).is_file(),
                "the cache tests need {BUSYBOX}: install the Debian package busybox-static"
            );
            std::fs::create_dir(&tools).unwrap();
            for applet in APPLETS {
                std::os::unix::fs::symlink(BUSYBOX, tools.join(applet)).unwrap();
            }
        }
        tools
    }

    /// A job of `faro/app` running `steps`; returns its id and handle.
    pub fn job(&self, steps: &[&str]) -> (i64, String) {
        let job = self
            .forgejo
            .add_job(StandInJob::new("faro/app", "build", &["linux"]).with_steps(steps));
        (job.id, job.handle.unwrap())
    }
}

/// A running `cache-server` and what it has printed so far.
pub struct CacheServer {
    child: Child,
    port: u16,
    /// Where it keeps its entries.
    pub dir: PathBuf,
    stderr: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl CacheServer {
    /// Starts `cache-server --port 0` with the config the operator writes; reads the port
    /// from the line the real server prints ("cache server is listening on URL").
    pub fn start(setup: &Setup, secret: &str) -> Self {
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
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut stderr = String::new();
        let port = loop {
            let line = lines
                .next()
                .expect("cache-server ended before listening")
                .unwrap();
            stderr.push_str(&line);
            stderr.push('\n');
            let listening = message(&line).and_then(|m| {
                m.strip_prefix("cache server is listening on http://")
                    .map(str::to_owned)
            });
            if let Some(host_port) = listening {
                let (_, port) = host_port.rsplit_once(':').expect(&line);
                break port.parse().unwrap();
            }
        };
        assert!(dir.join("cache").is_dir(), "--dir/cache was not made");
        let stderr = Arc::new(Mutex::new(stderr));
        let sink = stderr.clone();
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
            dir,
            stderr,
            reader: Some(reader),
        }
    }

    /// Its URL, as the runner config names it.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Stops it with SIGTERM; returns its exit code and all it printed.
    pub fn stop(mut self) -> (Option<i32>, String) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        let status = self.child.wait().unwrap();
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        let mut stdout = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            std::io::Read::read_to_string(&mut out, &mut stdout).unwrap();
        }
        let stderr = self.stderr.lock().unwrap().clone();
        (status.code(), format!("{stdout}{stderr}"))
    }
}

impl Drop for CacheServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The message of a runner log line (logrus: `time="…" level=… msg="…" field=…`), or
/// None for a line of another shape.
pub fn message(line: &str) -> Option<String> {
    let rest = line
        .strip_prefix("time=\"")?
        .split_once("\" level=")?
        .1
        .split_once(" msg=")?
        .1;
    let Some(quoted) = rest.strip_prefix('"') else {
        return rest.split(' ').next().map(str::to_owned);
    };
    // The closing quote is the first one not escaped.
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

/// The messages of the lines of `printed` that carry `module=NAME`, in order.
pub fn module_messages(printed: &str, module: &str) -> Vec<String> {
    let field = format!(" module={module}");
    printed
        .lines()
        .filter(|l| l.ends_with(&field))
        .filter_map(message)
        .collect()
}

/// All a process printed.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
