//! `one-job`'s `actions/cache` proxy, as forgejo-runner v12's `act/cacheproxy` (docs/forgejo.md,
//! "Caches"): with `cache.external_server` and a secret it listens on all interfaces
//! (`cache.proxy_port`, a free port when 0 or absent), the task's steps get
//! `ACTIONS_CACHE_URL=http://{host}:{port}/{runId}/`, and each request a step sends under
//! its run id is forwarded to the server with the run's signing headers. The proxy never
//! sends a request of its own.

mod forward;
mod run;
mod stream;

use std::collections::HashMap;
use std::net::UdpSocket;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use runner_protocol::Task;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::config::{CacheConfig, Secret};
use crate::runner_log::{self, Level};
use crate::signing;

use run::RunData;
use stream::SharedStream;

/// The variable the steps find the proxy by.
pub const ENV: &str = "ACTIONS_CACHE_URL";

/// Why the proxy does not run; the cache is then off and the job runs without it, as with
/// the real runner (its messages).
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// `cache.external_server` without `cache.secret` or `cache.secret_url`.
    #[error(
        "A cache secret must be specified to use an external cache server, cache will be disabled"
    )]
    NoSecret,
    /// The external server is not a plain `http://` URL (its value is not shown: a URL
    /// may carry credentials).
    #[error(
        "cannot init cache proxy, cache will be disabled: cache.external_server: the double forwards to http:// URLs only"
    )]
    Target,
    /// The port could not be bound.
    #[error("cannot init cache proxy, cache will be disabled: listening on :{port}: {source}")]
    Bind { port: u16, source: std::io::Error },
}

/// The body of what the proxy answers and forwards: a step's or the server's, streamed.
type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// What the connections share.
struct Shared {
    /// `http://host:port` of the external server (its path is not used, as upstream).
    target: String,
    /// What steps and the server know the proxy by: `http://{host}:{port}` or the override.
    external_url: String,
    /// The runs steps may use, by run id.
    runs: Mutex<HashMap<String, RunData>>,
    client: Client<HttpConnector, ProxyBody>,
}

impl Shared {
    fn run(&self, id: &str) -> Option<RunData> {
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }
}

/// A running proxy; dropping it (or [`CacheProxy::stop`]) closes the port.
pub struct CacheProxy {
    shared: Arc<Shared>,
    secret: Secret,
    /// Only the unit tests ask: the runner prints no line about its proxy.
    #[cfg(test)]
    port: u16,
    server: JoinHandle<()>,
}

/// A run registered with the proxy.
#[derive(Debug)]
pub struct Registration {
    /// The random id the run's URL carries.
    pub id: String,
    /// The run's `ACTIONS_CACHE_URL`.
    pub url: String,
}

impl CacheProxy {
    /// Starts the proxy the `cache` section asks for: None when the cache is off or there
    /// is no external server (the double runs no built-in cache server).
    pub async fn start(cache: &CacheConfig) -> Result<Option<Self>, ProxyError> {
        if !cache.enabled() {
            return Ok(None);
        }
        let Some(server) = cache.external_server() else {
            return Ok(None);
        };
        let secret = match &cache.secret {
            Some(secret) if !secret.bytes().is_empty() => secret.clone(),
            _ => return Err(ProxyError::NoSecret),
        };
        let target = target_of(server).ok_or(ProxyError::Target)?;
        let port = cache.proxy_port.unwrap_or(0);
        let listener = TcpListener::bind(("0.0.0.0", port))
            .await
            .map_err(|source| ProxyError::Bind { port, source })?;
        let port = listener
            .local_addr()
            .map_err(|source| ProxyError::Bind { port, source })?
            .port();
        let external_url = match cache
            .actions_cache_url_override
            .as_deref()
            .filter(|u| !u.is_empty())
        {
            Some(url) => url.to_owned(),
            None => {
                let host = cache
                    .host
                    .clone()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(outbound_ip);
                format!("http://{}", join_host_port(&host, port))
            }
        };
        let shared = Arc::new(Shared {
            target,
            external_url,
            runs: Mutex::new(HashMap::new()),
            client: Client::builder(TokioExecutor::new()).build_http(),
        });
        let server = tokio::spawn(serve(listener, shared.clone()));
        Ok(Some(Self {
            shared,
            secret,
            #[cfg(test)]
            port,
            server,
        }))
    }

    /// The port it listens on (all interfaces).
    #[cfg(test)]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://{host}:{port}`: the base of run URLs and the `Forgejo-Cache-Host` header.
    #[cfg(test)]
    pub fn external_url(&self) -> &str {
        &self.shared.external_url
    }

    /// Registers `task`'s run, signed now; the error is the real runner's, which fails
    /// the task.
    pub fn add_run(&self, task: &Task) -> Result<Registration, String> {
        let data = RunData::of_task(task, &self.secret, signing::unix_now())?;
        let mut runs = self.shared.runs.lock().unwrap_or_else(|p| p.into_inner());
        // As upstream: 4 random bytes in hex, retried on a collision.
        for _ in 0..3 {
            let id: String = rand::random::<[u8; 4]>()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if !runs.contains_key(&id) {
                runs.insert(id.clone(), data);
                let url = format!("{}/{id}/", self.shared.external_url);
                return Ok(Registration { id, url });
            }
        }
        Err("Repeated collisions in generating run id".to_owned())
    }

    /// Forgets a run: its URL is refused from now on.
    pub fn remove_run(&self, id: &str) {
        self.shared
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Closes the port and every open connection.
    pub fn stop(self) {
        self.server.abort();
    }
}

impl Drop for CacheProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// `http://host:port` of a plain http URL, its path dropped: the real proxy replaces the
/// target's path with `/_apis/artifactcache/...`.
fn target_of(server: &str) -> Option<String> {
    let url = url::Url::parse(server).ok()?;
    if url.scheme() != "http" {
        return None;
    }
    let host = url.host_str()?;
    let port = url.port_or_known_default()?;
    Some(format!("http://{host}:{port}"))
}

/// `host:port`, the host bracketed when it is an IPv6 address (Go's `net.JoinHostPort`).
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The address this machine reaches others from, as the real runner finds it: the local
/// end of a UDP socket "connected" to a public address (no packet is sent). 127.0.0.1 when
/// there is no route (the real runner then disables the cache; a test host may have none).
fn outbound_ip() -> String {
    let local = UdpSocket::bind(("0.0.0.0", 0))
        .and_then(|socket| {
            socket.connect(("8.8.8.8", 80))?;
            socket.local_addr()
        })
        .map(|addr| addr.ip());
    match local {
        Ok(ip) if !ip.is_loopback() && !ip.is_unspecified() => ip.to_string(),
        _ => "127.0.0.1".to_owned(),
    }
}

/// A line of the proxy's own (the double's: what the real proxy logs is not known here),
/// marked as its module.
fn log(level: Level, message: &str) {
    runner_log::log_with(level, message, &[("module", "cache_proxy")]);
}

/// Accepts connections until aborted; aborting drops the set, which ends them all.
async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(connection(shared.clone(), stream));
                }
                Err(e) => {
                    log(Level::Error, &format!("accept: {e}"));
                    // Out of descriptors, say: wait rather than spin.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn connection(shared: Arc<Shared>, stream: tokio::net::TcpStream) {
    let stream = SharedStream::new(stream);
    let client = stream.clone();
    let service = service_fn(move |request| {
        let shared = shared.clone();
        let client = client.clone();
        async move {
            Ok::<_, std::convert::Infallible>(forward::handle(&shared, &client, request).await)
        }
    });
    // Half-closed clients are answered (Go's server answers them), so that the handler,
    // not hyper, decides what they get; header names are written as Go writes them.
    if let Err(e) = http1::Builder::new()
        .half_close(true)
        .title_case_headers(true)
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        log(Level::Error, &format!("connection: {e}"));
    }
}

#[cfg(test)]
mod tests;
