//! Connect unary calls to the runner service, with the headers forgejo-runner sends.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use runner_protocol::{ConnectError, Message, RUNNER_SERVICE};

/// The user agent of the runner the double follows.
const USER_AGENT: &str = concat!("forgejo-runner/", "v12.8.2");
/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// A call slower than this is logged: a runner that stops reporting looks idle to Forgejo
/// after 10 s, and a test that sees that needs to know where the time went.
const SLOW_CALL: Duration = Duration::from_secs(2);

/// Why a call failed.
#[derive(Debug)]
pub enum CallError {
    /// The server answered with a Connect error.
    Rpc {
        status: u16,
        code: String,
        message: String,
    },
    /// The request did not get an answer.
    Transport(String),
    /// The answer could not be decoded.
    Decode(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Rpc {
                status,
                code,
                message,
            } => write!(f, "{code} ({status}): {message}"),
            CallError::Transport(e) => write!(f, "transport: {e}"),
            CallError::Decode(e) => write!(f, "decoding the answer: {e}"),
        }
    }
}

/// A runner's connection to Forgejo.
pub struct Connection {
    base: String,
    uuid: String,
    token: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Connection {
    /// A connection to `url` as runner `uuid` with `token` (both empty for `Register`).
    pub fn new(url: &str, uuid: &str, token: &str) -> Result<Self, String> {
        if url.starts_with("https://") {
            return Err(format!(
                "{url}: the runner double speaks plain HTTP only (it talks to the stand-in)"
            ));
        }
        if !url.starts_with("http://") {
            return Err(format!("{url}: not an http:// URL"));
        }
        Ok(Self {
            base: url.trim_end_matches('/').to_owned(),
            uuid: uuid.to_owned(),
            token: token.to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// Calls `RunnerService/<method>`; `fetch` adds the fetch headers.
    pub async fn call<Req: Message, Resp: Message + Default>(
        &self,
        method: &str,
        request: &Req,
        fetch: bool,
    ) -> Result<Resp, CallError> {
        let mut builder = http::Request::post(format!("{}{RUNNER_SERVICE}{method}", self.base))
            .header("content-type", "application/proto")
            .header("connect-protocol-version", "1")
            .header("accept-encoding", "gzip")
            .header("user-agent", USER_AGENT);
        if !self.uuid.is_empty() {
            builder = builder
                .header("x-runner-uuid", &self.uuid)
                .header("x-runner-token", &self.token);
        }
        if fetch {
            builder = builder
                .header("x-runner-request-key", request_key())
                .header("connect-timeout-ms", "29999");
        }
        let request = builder
            .body(Full::new(Bytes::from(request.encode_to_vec())))
            .map_err(|e| CallError::Transport(e.to_string()))?;
        let sent = std::time::Instant::now();
        let response = tokio::time::timeout(CALL_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| CallError::Transport("timed out".into()))?
            .map_err(|e| CallError::Transport(e.to_string()))?;
        if sent.elapsed() > SLOW_CALL {
            crate::runner_log::warn(&format!(
                "{method}: the answer took {} ms",
                sent.elapsed().as_millis()
            ));
        }
        let status = response.status();
        let body = tokio::time::timeout(CALL_TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| CallError::Transport("timed out reading the answer".into()))?
            .map_err(|e| CallError::Transport(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            let error: ConnectError = serde_json::from_slice(&body).unwrap_or(ConnectError {
                code: "unknown".into(),
                message: String::from_utf8_lossy(&body).chars().take(200).collect(),
            });
            return Err(CallError::Rpc {
                status: status.as_u16(),
                code: error.code,
                message: error.message,
            });
        }
        Resp::decode(body).map_err(|e| CallError::Decode(e.to_string()))
    }
}

/// A fresh idempotency key for a fetch.
fn request_key() -> String {
    let n: u128 = rand::random();
    format!("{n:032x}")
}
