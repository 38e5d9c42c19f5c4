//! `cache-server`: the shared Actions cache a pool's runners' proxies forward to (docs/forgejo.md,
//! "Caches"). Entries are kept under `--dir` (`store`), which is made first: a directory
//! the server cannot write ends it at once, with the real server's error.

mod disk;
mod routes;
mod store;

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::config::Secret;
use crate::runner_log::{self, Level};
use crate::{EXIT_CONFIG, EXIT_OK};

pub use routes::State;

/// The server's settings: flags over the config file.
#[derive(Debug)]
pub struct Settings {
    /// Where entries are kept; the real server's default when none.
    pub dir: Option<PathBuf>,
    /// The host proxies reach it by (only printed: archive URLs use the proxy's host).
    pub host: String,
    /// The port; 0 takes a free one.
    pub port: u16,
    /// The HMAC key.
    pub secret: Secret,
}

/// Serves until SIGTERM or SIGINT; returns the exit code.
pub async fn run(settings: Settings) -> u8 {
    let dir = settings.dir.clone().unwrap_or_else(default_dir);
    let store = match store::Store::open(&dir) {
        Ok(store) => store,
        Err(e) => {
            // The real server's words (cobra's "Error: " and Go's path error): what the
            // pod's last termination message shows.
            eprintln!("Error: {e}");
            return EXIT_CONFIG;
        }
    };
    // The handlers go in before the address is printed: a test that stops the server as
    // soon as it reads the address must not kill it with the default action.
    let (mut terminate, mut interrupt) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(terminate), Ok(interrupt)) => (terminate, interrupt),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("Error: cache-server: cannot handle signals: {e}");
            return EXIT_CONFIG;
        }
    };
    let listener = match TcpListener::bind(("0.0.0.0", settings.port)).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!(
                "Error: cache-server: listening on 0.0.0.0:{}: {e}",
                settings.port
            );
            return EXIT_CONFIG;
        }
    };
    let port = match listener.local_addr() {
        Ok(addr) => addr.port(),
        Err(e) => {
            eprintln!("Error: cache-server: {e}");
            return EXIT_CONFIG;
        }
    };
    // It listens on every interface; the URL is the one the real server prints.
    runner_log::info(&format!(
        "cache server is listening on http://{}:{port}",
        settings.host
    ));
    let state = Arc::new(State::new(settings.secret, store));
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve_connection(state.clone(), stream));
                }
                Err(e) => log(Level::Error, &format!("accept: {e}")),
            },
        }
    }
    EXIT_OK
}

/// The real server's default directory: `$HOME/.cache/actcache`.
fn default_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map_or_else(|| PathBuf::from("/"), PathBuf::from)
        .join(".cache/actcache")
}

/// A line of the server's about requests, marked as the real server marks them.
fn log(level: Level, message: &str) {
    runner_log::log_with(level, message, &[("module", "cache_request")]);
}

async fn serve_connection(state: Arc<State>, stream: tokio::net::TcpStream) {
    let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
        let state = state.clone();
        async move {
            let method = request.method().clone();
            let path = request.uri().path().to_owned();
            let response = routes::handle(&state, request).await;
            // Method, path and status only: the query holds no secret, but the headers
            // hold the MAC, and none of them is printed.
            log(
                Level::Info,
                &format!("{method} {path} {}", response.status().as_u16()),
            );
            Ok::<_, Infallible>(response)
        }
    });
    if let Err(e) = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        log(Level::Error, &format!("connection: {e}"));
    }
}
