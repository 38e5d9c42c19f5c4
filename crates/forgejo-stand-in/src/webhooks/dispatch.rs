//! Sends the prepared deliveries, one at a time and off the state lock, and records each
//! answer. One attempt each, as Forgejo makes it: no retry, [`DELIVER_TIMEOUT`] for the
//! whole exchange. Plain `http://` only: hook targets are test servers.

use std::error::Error;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::{DELIVER_TIMEOUT, Log, Outgoing, lock_log};

/// Why a delivery got no answer.
#[derive(Debug, thiserror::Error)]
enum DeliverError {
    #[error("no answer within {DELIVER_TIMEOUT:?}")]
    Timeout,
    #[error("cannot build the request: {0}")]
    Request(#[from] http::Error),
    #[error("{}", chain(.0))]
    Send(#[from] hyper_util::client::legacy::Error),
    #[error("reading the answer: {0}")]
    Answer(hyper::Error),
}

/// An error and its sources, so "client error (Connect)" says what failed to connect.
fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The task that sends what the hooks queue; it ends with the stand-in.
#[derive(Debug)]
pub(crate) struct Dispatcher {
    queue: mpsc::UnboundedReceiver<Outgoing>,
    log: Log,
}

impl Dispatcher {
    /// A dispatcher taking deliveries from `queue` and recording answers in `log`.
    pub(super) fn new(queue: mpsc::UnboundedReceiver<Outgoing>, log: Log) -> Self {
        Self { queue, log }
    }

    /// Starts sending; must run inside a Tokio runtime.
    pub(crate) fn spawn(self) -> AbortHandle {
        tokio::spawn(self.run()).abort_handle()
    }

    async fn run(mut self) {
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        while let Some(outgoing) = self.queue.recv().await {
            if let Some(delay) = outgoing.delay {
                tokio::time::sleep(delay).await;
            }
            for &attempt in &outgoing.attempts {
                let outcome = tokio::time::timeout(DELIVER_TIMEOUT, post(&client, &outgoing))
                    .await
                    .unwrap_or(Err(DeliverError::Timeout));
                let mut log = lock_log(&self.log);
                if let Some(record) = log.get_mut(attempt) {
                    match outcome {
                        Ok(status) => record.status = Some(status),
                        Err(error) => record.error = Some(error.to_string()),
                    }
                }
            }
        }
    }
}

/// One POST of `outgoing`; the answer's status once its body is read.
async fn post(
    client: &Client<HttpConnector, Full<Bytes>>,
    outgoing: &Outgoing,
) -> Result<u16, DeliverError> {
    let mut request = Request::post(&outgoing.url);
    for (name, value) in &outgoing.headers {
        request = request.header(*name, value);
    }
    let request = request.body(Full::new(outgoing.body.clone()))?;
    let response = client.request(request).await?;
    let status = response.status().as_u16();
    // The delivery ends when the receiver has answered completely, as in Forgejo; the
    // answer itself is not kept.
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        frame.map_err(DeliverError::Answer)?;
    }
    Ok(status)
}
