//! How a [`Client`] sends one call: building its URL, the retry loop with its budgets and
//! `Retry-After`, metrics per attempt, and decoding the answer.

use super::*;
use crate::error::NOT_FOUND_HINT;

/// What a call does: its metrics name, its method, whether it may be repeated, and the hints
/// a 403 and a 404 get.
#[derive(Debug, Clone, Copy)]
pub(super) struct Operation {
    name: &'static str,
    method: &'static str,
    idempotent: bool,
    forbidden_hint: &'static str,
    not_found_hint: &'static str,
}

impl Operation {
    /// A GET (repeatable).
    pub(super) fn get(name: &'static str, forbidden_hint: &'static str) -> Self {
        Self {
            name,
            method: "GET",
            idempotent: true,
            forbidden_hint,
            not_found_hint: NOT_FOUND_HINT,
        }
    }
    /// A POST (repeated only when it cannot have arrived).
    pub(super) fn post(name: &'static str, forbidden_hint: &'static str) -> Self {
        Self {
            name,
            method: "POST",
            idempotent: false,
            forbidden_hint,
            not_found_hint: NOT_FOUND_HINT,
        }
    }
    /// A DELETE (repeatable: deleting twice is deleting once).
    pub(super) fn delete(name: &'static str, forbidden_hint: &'static str) -> Self {
        Self {
            name,
            method: "DELETE",
            idempotent: true,
            forbidden_hint,
            not_found_hint: NOT_FOUND_HINT,
        }
    }
}

impl Operation {
    /// The same operation with its own hint for a 404 (instead of the general one).
    pub(super) fn not_found(self, not_found_hint: &'static str) -> Self {
        Self {
            not_found_hint,
            ..self
        }
    }
}

impl Client {
    /// Whether `admin/actions/runners/…` (15+) should be used for the instance's jobs and token.
    pub(super) fn modern_admin_paths(&self) -> bool {
        self.known_version()
            .is_some_and(|v| v.supports_ephemeral_runners())
    }

    pub(super) fn call(
        &self,
        operation: Operation,
        segments: &[&str],
        query: Option<String>,
        body: Option<Bytes>,
    ) -> Result<Call> {
        let Operation {
            name,
            method,
            idempotent,
            forbidden_hint,
            not_found_hint,
        } = operation;
        let mut url = self.inner.base.clone();
        {
            let mut path = url.path_segments_mut().map_err(|()| Error::InvalidUrl {
                url: self.inner.server.clone(),
                reason: "it cannot be a base URL".into(),
            })?;
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        url.set_query(query.as_deref());
        Ok(Call {
            endpoint: Endpoint {
                name,
                method,
                path: url.path().to_owned(),
            },
            url: url.into(),
            body,
            idempotent,
            forbidden_hint,
            not_found_hint,
        })
    }

    /// Sends `call`, retrying what may succeed later, within the attempt and time budgets.
    pub(super) async fn send(&self, call: &Call) -> Result<Answer> {
        let options = &self.inner.options;
        let attempt = Attempt {
            http: &self.inner.http,
            auth: &self.inner.auth,
            secret: self.inner.token.expose(),
            timeout: options.request_timeout,
            max_body_bytes: options.max_body_bytes,
        };
        if let Some(retry_in) = self.retry_not_before() {
            tracing::debug!(
                endpoint = call.endpoint.name,
                path = %call.endpoint.path,
                retry_in_ms = retry_in.as_millis() as u64,
                "Forgejo asked for a pause (Retry-After); request not sent"
            );
            return Err(Error::Deferred {
                endpoint: call.endpoint.clone(),
                retry_in,
            });
        }
        let max_attempts = options.max_attempts.max(1);
        let started = Instant::now();
        let mut number = 1;
        loop {
            let began = Instant::now();
            let (status, result) = attempt.run(call).await;
            let took = began.elapsed();
            self.observe(call, &result, status, number, took);
            let failure = match result {
                Ok(answer) => return Ok(answer),
                Err(failure) => failure,
            };
            if let Some(delay) = failure.retry_after {
                self.hold_off(delay);
            }
            if !should_retry(call, &failure) || number >= max_attempts {
                return Err(failure.error);
            }
            // Another call may have been asked for a longer pause meanwhile.
            let delay = failure
                .retry_after
                .unwrap_or_else(|| backoff(options.retry_base_delay, number))
                .max(self.retry_not_before().unwrap_or_default());
            if started.elapsed() + delay > options.max_retry_time {
                return Err(failure.error);
            }
            tracing::warn!(
                endpoint = call.endpoint.name,
                path = %call.endpoint.path,
                reason = failure.error.reason(),
                attempt = number,
                delay_ms = delay.as_millis() as u64,
                "Forgejo request failed, retrying"
            );
            tokio::time::sleep(delay).await;
            number += 1;
        }
    }

    /// Logs a success and reports every attempt to the observer (the metrics).
    pub(super) fn observe(
        &self,
        call: &Call,
        result: &std::result::Result<Answer, Box<Failure>>,
        status: Option<u16>,
        attempt: u32,
        duration: Duration,
    ) {
        if let Ok(answer) = result {
            tracing::debug!(
                endpoint = call.endpoint.name,
                path = %call.endpoint.path,
                status = answer.status.as_u16(),
                attempt,
                took_ms = duration.as_millis() as u64,
                "Forgejo request succeeded"
            );
        }
        if let Some(observer) = &self.inner.options.observer {
            observer(RequestOutcome {
                endpoint: call.endpoint.name,
                outcome: match result {
                    Ok(_) => "ok",
                    Err(failure) => failure.error.reason(),
                },
                status,
                attempt,
                duration,
            });
        }
    }

    pub(super) fn decode<T: DeserializeOwned>(&self, call: &Call, answer: &Answer) -> Result<T> {
        serde_json::from_slice(&answer.body)
            .map_err(|e| self.invalid(call, answer, transport::describe_json_error(&e)))
    }

    pub(super) fn invalid(&self, call: &Call, answer: &Answer, detail: String) -> Error {
        Error::InvalidResponse {
            endpoint: call.endpoint.clone(),
            status: answer.status.as_u16(),
            detail,
            answer: transport::describe_body(&answer.headers, &answer.body),
        }
    }
}

/// Whether a failed attempt may be tried again (ignoring the budgets).
fn should_retry(call: &Call, failure: &Failure) -> bool {
    if !failure.error.is_retryable() {
        return false;
    }
    // A POST that may have reached Forgejo could have registered a runner already.
    call.idempotent
        || !failure.may_have_arrived
        || matches!(failure.error, Error::RateLimited { .. })
}

/// Exponential backoff with equal jitter: half the step, plus up to half again at random.
pub(super) fn backoff(base: Duration, attempt: u32) -> Duration {
    let step = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    let half = step / 2;
    let jitter_ms = rand::rng().random_range(0..=half.as_millis() as u64);
    half + Duration::from_millis(jitter_ms)
}
