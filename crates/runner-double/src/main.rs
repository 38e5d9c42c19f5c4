//! A forgejo-runner double for the end-to-end tier: the command line our runner pods use
//! (`one-job` with connection flags, `register` for the legacy path), the same calls,
//! headers, retries and exit codes as forgejo-runner v12.8.2 (docs/forgejo.md, "Runner
//! protocol"), and `run:` steps executed with `sh`. As the real runner, it prints only its
//! own log lines (logrus's format, on stderr); step output goes to Forgejo as log rows.
//! Test-only: never shipped in an image a user runs. `FRC_E2E_RUNNER` swaps it for the
//! real runner in the same tier.
//!
//! The shared Actions cache (docs/forgejo.md, "Caches"): the global `-c FILE` config's `cache`
//! section; `cache-server` serves the real server's `/_apis/artifactcache` endpoints and
//! checks each request's HMAC; and `one-job` with `cache.external_server` and a secret runs
//! the real runner's cache proxy for the task: its steps get
//! `ACTIONS_CACHE_URL=http://{host}:{port}/{runId}/`, and what they send there reaches the
//! server signed for their run. The runner itself sends the server nothing.

mod cache_proxy;
mod cache_server;
mod cli;
mod config;
mod connect;
mod runner_log;
mod signing;
mod task;

use std::process::ExitCode;

use clap::Parser as _;

/// Exit code when a task ran (whatever its result) or registration worked.
const EXIT_OK: u8 = 0;
/// Exit code for configuration errors and a failed Declare.
const EXIT_CONFIG: u8 = 1;
/// Exit code when no task was received (and `--wait` was not given).
const EXIT_NO_TASK: u8 = 2;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with 0; every parse error is a configuration
            // error (exit 1), as cobra reports an unknown flag.
            let code = if e.use_stderr() { EXIT_CONFIG } else { EXIT_OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("Error: cannot start: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let code = runtime.block_on(cli::run(cli));
    ExitCode::from(code)
}
