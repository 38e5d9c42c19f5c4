//! The command line, and what each command does up to the task.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use runner_protocol::{
    DeclareRequest, DeclareResponse, FetchSingleTaskRequest, FetchSingleTaskResponse,
    FetchTaskRequest, FetchTaskResponse, RegisterRequest, RegisterResponse, Task,
};
use serde::{Deserialize, Serialize};

use crate::cache_proxy::{self, CacheProxy};
use crate::cache_server;
use crate::config::{Config, Secret};
use crate::connect::{CallError, Connection};
use crate::runner_log;
use crate::{EXIT_CONFIG, EXIT_NO_TASK, EXIT_OK};

/// The version the double reports, as the runner it follows.
pub const VERSION: &str = "v12.8.2";
/// The file `register` writes and `one-job` reads without `--url`.
const RUNNER_FILE: &str = ".runner";

/// forgejo-runner (test double).
#[derive(Debug, Parser)]
#[command(name = "forgejo-runner", version = VERSION)]
pub struct Cli {
    /// Config file (YAML; the double reads its `cache` section).
    #[arg(short = 'c', long = "config", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one task and exit.
    OneJob(OneJob),
    /// Register a runner with a registration token (legacy path) and write `.runner`.
    Register(Register),
    /// Serve a shared Actions cache to runners' cache proxies.
    CacheServer(CacheServer),
}

#[derive(Debug, Args)]
struct CacheServer {
    /// Where the entries are kept (overrides `cache.dir`).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The host runners reach the server by (overrides `cache.host`).
    #[arg(long)]
    host: Option<String>,
    /// The port; 0 takes a free one (overrides `cache.port`).
    #[arg(long)]
    port: Option<u16>,
    /// The secret shared with the runners' proxies (overrides `cache.secret`).
    #[arg(long, value_parser = parse_secret)]
    secret: Option<Secret>,
}

/// Clap's parser for `--secret`: the bytes as given, wrapped so `Debug` hides them.
fn parse_secret(text: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(text))
}

#[derive(Debug, Args)]
struct OneJob {
    /// Forgejo's URL.
    #[arg(long)]
    url: Option<String>,
    /// The runner's uuid.
    #[arg(long)]
    uuid: Option<String>,
    /// Where the runner token is: `file:<path>` only.
    #[arg(long = "token-url")]
    token_url: Option<String>,
    /// A label `name[:scheme[:arg]]` (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Fetch exactly this job attempt.
    #[arg(long)]
    handle: Option<String>,
    /// Poll until a task arrives.
    #[arg(long)]
    wait: bool,
    /// Time between fetches with `--wait`, e.g. `2s`.
    #[arg(long = "fetch-interval", default_value = "2s", value_parser = parse_duration)]
    fetch_interval: Duration,
}

#[derive(Debug, Args)]
struct Register {
    /// Do not ask questions.
    #[arg(long = "no-interactive")]
    no_interactive: bool,
    /// Forgejo's URL.
    #[arg(long)]
    instance: String,
    /// The registration token.
    #[arg(long)]
    token: String,
    /// The runner's name.
    #[arg(long)]
    name: String,
    /// Comma-separated labels.
    #[arg(long)]
    labels: String,
    /// Take one task only (Forgejo 15).
    #[arg(long)]
    ephemeral: bool,
}

/// The `.runner` file: the registration's connection settings.
#[derive(Debug, Serialize, Deserialize)]
struct RunnerFile {
    id: i64,
    uuid: String,
    name: String,
    token: String,
    address: String,
    labels: Vec<String>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((text, "s"), |at| text.split_at(at));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("invalid duration {text:?}: unit {unit:?}")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

/// Runs the command; returns the exit code.
pub async fn run(cli: Cli) -> u8 {
    if cli.config.is_none() {
        runner_log::info("No configuration file specified; using default settings.");
    }
    let config = match cli.config.as_deref().map(Config::load).transpose() {
        Ok(config) => config.unwrap_or_default(),
        Err(e) => {
            eprintln!("Error: {e}");
            return EXIT_CONFIG;
        }
    };
    match cli.command {
        Command::Register(register) => run_register(register).await,
        Command::OneJob(one_job) => run_one_job(one_job, &config).await,
        Command::CacheServer(server) => run_cache_server(server, config).await,
    }
}

async fn run_cache_server(flags: CacheServer, config: Config) -> u8 {
    let cache = config.cache;
    let Some(secret) = flags.secret.or(cache.secret) else {
        eprintln!(
            "Error: cache-server: no secret: give --secret, or cache.secret or cache.secret_url in the config file"
        );
        return EXIT_CONFIG;
    };
    let settings = cache_server::Settings {
        dir: flags.dir.or(cache.dir),
        host: flags
            .host
            .or(cache.host)
            .unwrap_or_else(|| "127.0.0.1".to_owned()),
        port: flags.port.or(cache.port).unwrap_or(0),
        secret,
    };
    cache_server::run(settings).await
}

async fn run_register(register: Register) -> u8 {
    if !register.no_interactive {
        eprintln!("Error: the double only registers with --no-interactive");
        return EXIT_CONFIG;
    }
    let labels: Vec<String> = register
        .labels
        .split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let connection = match Connection::new(&register.instance, "", "") {
        Ok(connection) => connection,
        Err(e) => {
            eprintln!("Error: {e}");
            return EXIT_CONFIG;
        }
    };
    let request = RegisterRequest {
        name: register.name.clone(),
        token: register.token,
        version: VERSION.into(),
        labels: labels.iter().map(|l| label_name(l).to_owned()).collect(),
        ephemeral: register.ephemeral,
    };
    let runner = match connection
        .call::<_, RegisterResponse>("Register", &request, false)
        .await
    {
        Ok(RegisterResponse {
            runner: Some(runner),
        }) => runner,
        Ok(_) => {
            eprintln!("Error: register: the answer has no runner");
            return EXIT_CONFIG;
        }
        Err(e) => {
            eprintln!("Error: register: {e}");
            return EXIT_CONFIG;
        }
    };
    let file = RunnerFile {
        id: runner.id,
        uuid: runner.uuid,
        name: runner.name,
        token: runner.token,
        address: register.instance,
        labels,
    };
    let written = serde_json::to_vec_pretty(&file)
        .map_err(|e| e.to_string())
        .and_then(|bytes| std::fs::write(RUNNER_FILE, bytes).map_err(|e| e.to_string()));
    if let Err(e) = written {
        eprintln!("Error: writing {RUNNER_FILE}: {e}");
        return EXIT_CONFIG;
    }
    println!("Runner registered successfully.");
    EXIT_OK
}

/// The name part of a label `name[:scheme[:arg]]`: what is declared to Forgejo.
fn label_name(label: &str) -> &str {
    label.split(':').next().unwrap_or(label)
}

/// The connection settings of `one-job`, from flags or from `.runner`.
fn connection_settings(one_job: &OneJob) -> Result<(String, String, String, Vec<String>), String> {
    let runner_file = Path::new(RUNNER_FILE);
    if runner_file.exists() {
        if one_job.url.is_some() {
            return Err(format!(
                "a {RUNNER_FILE} file exists in the working directory and --url is given: use one or the other"
            ));
        }
        let text = std::fs::read(runner_file).map_err(|e| format!("reading {RUNNER_FILE}: {e}"))?;
        let file: RunnerFile =
            serde_json::from_slice(&text).map_err(|e| format!("parsing {RUNNER_FILE}: {e}"))?;
        let labels = if one_job.labels.is_empty() {
            file.labels
        } else {
            one_job.labels.clone()
        };
        return Ok((file.address, file.uuid, file.token, labels));
    }
    let (Some(url), Some(uuid), Some(token_url)) =
        (&one_job.url, &one_job.uuid, &one_job.token_url)
    else {
        return Err(format!(
            "no {RUNNER_FILE} file: --url, --uuid and --token-url are required"
        ));
    };
    let Some(path) = token_url.strip_prefix("file:") else {
        return Err(format!(
            "--token-url {token_url:?}: only file: URLs are supported"
        ));
    };
    let token =
        std::fs::read_to_string(path).map_err(|e| format!("reading the token file {path}: {e}"))?;
    // The file is read verbatim: a newline ends up in the header, which HTTP refuses.
    if token.contains(['\n', '\r']) {
        return Err("net/http: invalid header field value for \"X-Runner-Token\"".to_owned());
    }
    Ok((url.clone(), uuid.clone(), token, one_job.labels.clone()))
}

async fn run_one_job(one_job: OneJob, config: &Config) -> u8 {
    runner_log::info("Starting job");
    let (url, uuid, token, labels) = match connection_settings(&one_job) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("Error: {e}");
            return EXIT_CONFIG;
        }
    };
    if labels.iter().any(|l| l.split(':').nth(1) == Some("docker")) {
        eprintln!("Error: a docker label needs a Docker daemon, and the double has none");
        return EXIT_CONFIG;
    }
    let connection = match Connection::new(&url, &uuid, &token) {
        Ok(connection) => connection,
        Err(e) => {
            eprintln!("Error: {e}");
            return EXIT_CONFIG;
        }
    };
    // As the real runner, the proxy is up before Declare (it is made with the runner);
    // without it the job runs with no cache, never fails for it.
    let proxy = match CacheProxy::start(&config.cache).await {
        Ok(proxy) => proxy,
        Err(e) => {
            runner_log::error(&e.to_string());
            None
        }
    };
    if let Err(e) = declare(&connection, &labels).await {
        eprintln!("Error: declare: {e}");
        return EXIT_CONFIG;
    }
    runner_log::info("single task poller launched");
    let Some(task) = fetch_until_done(&connection, &one_job).await else {
        println!("no task received");
        return EXIT_NO_TASK;
    };
    runner_log::info(&format!(
        "single task poller successfully fetched one task from {url}"
    ));
    runner_log::info(&format!(
        "task {} repo is {} {} {url}",
        task.id,
        crate::task::context_string(&task, "repository"),
        crate::task::default_actions_url(&task),
    ));
    let (env, run_id) = match proxy.as_ref().map(|proxy| proxy.add_run(&task)) {
        None => (Ok(Vec::new()), None),
        Some(Ok(run)) => (
            Ok(vec![(cache_proxy::ENV.to_owned(), run.url)]),
            Some(run.id),
        ),
        Some(Err(e)) => (Err(e), None),
    };
    crate::task::run(&connection, task, env).await;
    if let Some(proxy) = proxy {
        if let Some(id) = run_id {
            proxy.remove_run(&id);
        }
        proxy.stop();
    }
    runner_log::info("single task poller is shutting down");
    EXIT_OK
}

/// Declares the label names; Forgejo's answer is logged as the real runner logs it. An
/// `unimplemented` answer (an old Forgejo) is tolerated.
async fn declare(connection: &Connection, labels: &[String]) -> Result<(), CallError> {
    let declare = DeclareRequest {
        version: VERSION.into(),
        labels: labels.iter().map(|l| label_name(l).to_owned()).collect(),
    };
    match connection
        .call::<_, DeclareResponse>("Declare", &declare, false)
        .await
    {
        Ok(response) => {
            let runner = response.runner.unwrap_or_default();
            runner_log::info(&format!(
                "runner: {}, with version: {}, with labels: [{}], ephemeral: {}, declared successfully",
                runner.name,
                runner.version,
                runner.labels.join(" "),
                runner.ephemeral
            ));
            Ok(())
        }
        Err(CallError::Rpc { code, .. }) if code == "unimplemented" => {
            runner_log::warn(
                "Because the Forgejo instance is an old version, skipping declaring the labels and version.",
            );
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Fetches until a task comes, retrying every `--fetch-interval` with `--wait`; None when
/// there is none and no `--wait`.
async fn fetch_until_done(connection: &Connection, one_job: &OneJob) -> Option<Task> {
    loop {
        match fetch(connection, one_job.handle.as_deref()).await {
            Ok(Some(task)) => return Some(task),
            Ok(None) if one_job.wait => {}
            Ok(None) => return None,
            Err(e) if one_job.wait => {
                runner_log::error(&format!("failed to fetch a task, retrying: {e}"));
            }
            Err(e) => {
                eprintln!("Error: fetch: {e}");
                return None;
            }
        }
        tokio::time::sleep(one_job.fetch_interval).await;
    }
}

async fn fetch(connection: &Connection, handle: Option<&str>) -> Result<Option<Task>, CallError> {
    match handle {
        Some(handle) => {
            let request = FetchSingleTaskRequest {
                tasks_version: 0,
                handle: handle.to_owned(),
            };
            let response: FetchSingleTaskResponse =
                connection.call("FetchSingleTask", &request, true).await?;
            Ok(response.task)
        }
        None => {
            let request = FetchTaskRequest {
                tasks_version: 0,
                task_capacity: 1,
            };
            let response: FetchTaskResponse = connection.call("FetchTask", &request, true).await?;
            Ok(response.task)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_the_runner_flags() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn label_names_drop_the_scheme() {
        assert_eq!(label_name("linux:host"), "linux");
        assert_eq!(label_name("ubuntu:docker://node:20"), "ubuntu");
        assert_eq!(label_name("plain"), "plain");
    }
}
