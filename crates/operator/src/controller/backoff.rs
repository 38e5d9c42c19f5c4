//! How soon a failing pool is tried again, and the count of its failures in a row.

use std::time::Duration;

use kube::runtime::reflector::ObjectRef;

use api::RunnerDeployment;

use super::Context;
use crate::error::RetryClass;

/// Counts one more failure of the pool in a row; returns the count.
pub fn count_failure(ctx: &Context, rd: &RunnerDeployment) -> u32 {
    let mut failures = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
    let count = failures.entry(ObjectRef::from_obj(rd)).or_insert(0);
    *count = count.saturating_add(1);
    *count
}

/// The delay before retry number `failures` (1-based) of a pool polling every `interval`.
///
/// An outage is retried from 1 s, doubling, but never later than one interval, so that a
/// pool is back within one interval of Forgejo's return however long the outage was. What
/// needs a person backs off to ten intervals (at most 5 minutes). A `Retry-After` is kept.
pub fn backoff(failures: u32, interval: Duration, class: RetryClass) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    match class {
        RetryClass::Transient => {
            let cap = interval.max(Duration::from_secs(1));
            let delay = Duration::from_secs(1)
                .saturating_mul(1 << exponent)
                .min(cap);
            // Jitter only downwards, so the cap holds, and pools failing together spread out.
            delay.mul_f64(rand::random_range(0.8..=1.0))
        }
        RetryClass::After(asked) => asked
            .max(Duration::from_millis(100))
            .mul_f64(rand::random_range(1.0..1.1)),
        RetryClass::NeedsAPerson => {
            let base = interval.max(Duration::from_secs(5));
            let cap = (interval * 10).clamp(Duration::from_secs(10), Duration::from_secs(300));
            let delay = base.saturating_mul(1 << exponent).min(cap);
            delay.mul_f64(rand::random_range(0.8..1.2))
        }
    }
}

/// Clears a pool's failure count after a success.
pub fn reset_backoff(ctx: &Context, rd: &RunnerDeployment) {
    ctx.failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&ObjectRef::from_obj(rd));
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(30);

    #[test]
    fn an_outage_is_retried_within_one_interval_however_long_it_lasts() {
        // A 180 s outage at a 30 s interval used to reach 300 s between tries.
        for failures in 1..=40 {
            let delay = backoff(failures, INTERVAL, RetryClass::Transient);
            assert!(delay <= INTERVAL, "try {failures}: {delay:?}");
        }
        assert!(backoff(1, INTERVAL, RetryClass::Transient) <= Duration::from_secs(1));
    }

    #[test]
    fn a_retry_after_is_never_cut_short() {
        let asked = Duration::from_secs(5);
        for failures in 1..=5 {
            let delay = backoff(failures, INTERVAL, RetryClass::After(asked));
            assert!(delay >= asked && delay < asked * 2, "{delay:?}");
        }
    }

    #[test]
    fn what_needs_a_person_backs_off_to_ten_intervals_at_most() {
        assert!(backoff(1, INTERVAL, RetryClass::NeedsAPerson) >= INTERVAL.mul_f64(0.8));
        for failures in 1..=20 {
            let delay = backoff(failures, INTERVAL, RetryClass::NeedsAPerson);
            assert!(delay <= Duration::from_secs(360), "{delay:?}");
        }
    }

    #[tokio::test]
    async fn a_maintenance_page_is_an_outage_not_a_misconfiguration() {
        use forgejo_stand_in::{Fault, StandIn, StandInConfig, Times};
        let forgejo = StandIn::start(StandInConfig::with_token("15.0.3", "good"));
        forgejo.inject_fault(
            "/api/v1/orgs/faro/actions/runners/jobs",
            Fault::Body(200, "<html>down for maintenance</html>".into()),
            Times::Always,
        );
        let client = forgejo::Client::new(
            &forgejo.url(),
            forgejo::Token::new("good"),
            forgejo::ClientOptions::default(),
        )
        .unwrap();
        let page = client
            .list_jobs(&forgejo::Scope::Organization("faro".into()), None)
            .await
            .unwrap_err();
        assert_eq!(page.reason(), "InvalidResponse");
        assert_eq!(
            crate::error::Error::from(page).retry_class(),
            RetryClass::Transient
        );
    }
}
