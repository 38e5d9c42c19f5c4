//! Waking a pool: the receiver stamps the RunnerDeployment with [`WAKE_ANNOTATION`], and the
//! leader's watch of pools turns a new stamp into a poll that takes no shared listing older
//! than the stamp. Any replica may receive a delivery; only the leader acts on it, and a
//! stamp lost while leadership moves costs one poll interval, as without webhooks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use api::RunnerDeployment;

/// The annotation a delivery stamps on a pool it wakes: the time of the stamp (RFC 3339).
pub const WAKE_ANNOTATION: &str = "forgejo.runners.dev/wake";
/// At most one stamp per pool per this long; deliveries within it share one trailing stamp.
pub const MIN_WAKE_SPACING: Duration = Duration::from_secs(1);
/// How long a quiet pool's first delivery waits for the rest of its burst before the stamp:
/// the jobs of a matrix become waiting together, and one poll that sees them all beats a
/// poll for the first and a trailing one, a spacing later, for the others.
pub const WAKE_GATHER: Duration = Duration::from_millis(100);
/// How long a pool's last stamp is remembered (longer than any spacing).
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// A pool, by namespace and name.
type PoolKey = (String, String);

/// Stamps pools, coalesced: a quiet pool's first delivery stamps it after
/// [`WAKE_GATHER`], then at most one stamp follows per [`MIN_WAKE_SPACING`].
#[derive(Clone)]
pub struct Waker {
    client: kube::Client,
    /// Counts a stamp that failed after its delivery was answered (`wake_failed`).
    metrics: crate::metrics::WebhookMetrics,
    /// When each pool was last stamped, or will be (a stamp on its way is in the future).
    stamped_at: Arc<Mutex<HashMap<PoolKey, Instant>>>,
}

/// What [`Waker::wake`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// A stamp for this delivery is on its way: the pool was quiet.
    Stamped,
    /// A stamp on its way, or one made less than a spacing ago, covers it: in the second
    /// case one more stamp follows when the spacing ends.
    Coalesced,
}

/// What a delivery needs, decided under the lock.
enum Next {
    /// Stamp after the gather: the pool was quiet.
    Gather,
    /// A stamp on its way covers it.
    Covered,
    /// Stamp at this instant, the end of the last stamp's spacing.
    Trailing(Instant),
}

impl Waker {
    /// A waker that patches pools through `client` and counts failed stamps in `metrics`.
    pub fn new(client: kube::Client, metrics: crate::metrics::WebhookMetrics) -> Self {
        Self {
            client,
            metrics,
            stamped_at: Arc::default(),
        }
    }

    /// Wakes pool `namespace`/`name`: a quiet pool is stamped after [`WAKE_GATHER`];
    /// within a spacing of the last stamp, one more stamp follows at the end of the spacing.
    /// Never waits for the stamp: a sender that delivers one event after the other (as a
    /// hook queue does) gets its answer at once, so the rest of a burst arrives within the
    /// gather.
    pub fn wake(&self, namespace: &str, name: &str) -> Wake {
        let key = (namespace.to_owned(), name.to_owned());
        let now = Instant::now();
        let next = {
            let mut stamped_at = self.stamped_at.lock().unwrap_or_else(|p| p.into_inner());
            stamped_at.retain(|_, at| now.saturating_duration_since(*at) < FORGET_AFTER);
            next_stamp(&mut stamped_at, key.clone(), now)
        };
        let (at, wake) = match next {
            Next::Gather => (now + WAKE_GATHER, Wake::Stamped),
            Next::Covered => return Wake::Coalesced,
            Next::Trailing(at) => (at, Wake::Coalesced),
        };
        let (client, metrics) = (self.client.clone(), self.metrics.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            if let Err(error) = stamp(&client, &key.0, &key.1).await {
                metrics.count(crate::webhook::Outcome::WakeFailed.as_str());
                tracing::warn!(namespace = %key.0, pool = %key.1, %error, "webhook: waking the pool failed; its next poll finds the job");
            }
        });
        wake
    }
}

/// Decides the stamp for a delivery to pool `key` at `now`, and records it.
fn next_stamp(stamped_at: &mut HashMap<PoolKey, Instant>, key: PoolKey, now: Instant) -> Next {
    match stamped_at.get(&key).copied() {
        Some(at) if now < at => Next::Covered,
        Some(at) if now < at + MIN_WAKE_SPACING => {
            let trailing = at + MIN_WAKE_SPACING;
            stamped_at.insert(key, trailing);
            Next::Trailing(trailing)
        }
        _ => {
            stamped_at.insert(key, now + WAKE_GATHER);
            Next::Gather
        }
    }
}

/// Patches the wake annotation of a pool with the time now.
async fn stamp(client: &kube::Client, namespace: &str, name: &str) -> Result<(), kube::Error> {
    let patch = json!({"metadata": {"annotations": {
        WAKE_ANNOTATION: jiff::Timestamp::now().to_string(),
    }}});
    Api::<RunnerDeployment>::namespaced(client.clone(), namespace)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// The wake stamp of a pool, if any: what the pool watch's predicate and the poll compare.
pub fn wake_stamp(rd: &RunnerDeployment) -> Option<&str> {
    rd.metadata
        .annotations
        .as_ref()?
        .get(WAKE_ANNOTATION)
        .map(String::as_str)
}

/// Which wake stamp each pool's last poll answered, by pool uid.
#[derive(Debug, Default)]
pub struct AnsweredWakes {
    answered: Mutex<HashMap<String, String>>,
}

impl AnsweredWakes {
    /// Whether `rd` carries a stamp its polls have not answered yet; marks it answered, as
    /// the poll about to be made answers it.
    pub fn take_new(&self, rd: &RunnerDeployment) -> bool {
        let (Some(stamp), Some(uid)) = (wake_stamp(rd), rd.metadata.uid.as_deref()) else {
            return false;
        };
        let mut answered = self.answered.lock().unwrap_or_else(|p| p.into_inner());
        if answered.get(uid).is_some_and(|s| s == stamp) {
            return false;
        }
        answered.insert(uid.to_owned(), stamp.to_owned());
        true
    }

    /// Forgets a deleted pool.
    pub fn forget_pool(&self, pool_uid: &str) {
        self.answered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(pool_uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> PoolKey {
        ("ci".to_owned(), "pool".to_owned())
    }

    #[test]
    fn a_burst_shares_the_gathered_stamp_and_one_trailing_stamp() {
        let mut stamped_at = HashMap::new();
        let t0 = Instant::now();
        assert!(matches!(
            next_stamp(&mut stamped_at, pool(), t0),
            Next::Gather
        ));
        // The rest of the burst, inside the gather: the stamp on its way covers them.
        for ms in [1, 50, 99] {
            let at = t0 + Duration::from_millis(ms);
            assert!(matches!(
                next_stamp(&mut stamped_at, pool(), at),
                Next::Covered
            ));
        }
        // After the stamp, within its spacing: one trailing stamp at the spacing's end.
        let late = t0 + WAKE_GATHER + Duration::from_millis(10);
        let Next::Trailing(trailing) = next_stamp(&mut stamped_at, pool(), late) else {
            panic!("a delivery after the stamp needs a trailing one");
        };
        assert_eq!(trailing, t0 + WAKE_GATHER + MIN_WAKE_SPACING);
        assert!(matches!(
            next_stamp(&mut stamped_at, pool(), late + Duration::from_millis(500)),
            Next::Covered
        ));
    }

    #[test]
    fn stamps_of_one_pool_are_a_spacing_apart_and_other_pools_are_apart() {
        let mut stamped_at = HashMap::new();
        let t0 = Instant::now();
        let mut stamps = Vec::new();
        // A delivery every 100 ms for 5 s.
        for i in 0..50 {
            let now = t0 + Duration::from_millis(i * 100);
            match next_stamp(&mut stamped_at, pool(), now) {
                Next::Gather => stamps.push(now + WAKE_GATHER),
                Next::Trailing(at) => stamps.push(at),
                Next::Covered => {}
            }
        }
        for pair in stamps.windows(2) {
            assert!(pair[1] - pair[0] >= MIN_WAKE_SPACING, "{pair:?}");
        }
        assert!(stamps.len() >= 4, "{} stamps in 5 s", stamps.len());
        let other = ("ci".to_owned(), "other".to_owned());
        assert!(matches!(
            next_stamp(&mut stamped_at, other, t0 + Duration::from_millis(150)),
            Next::Gather
        ));
    }

    #[test]
    fn a_pool_quiet_for_a_spacing_is_stamped_after_the_gather_again() {
        let mut stamped_at = HashMap::new();
        let t0 = Instant::now();
        next_stamp(&mut stamped_at, pool(), t0);
        let later = t0 + WAKE_GATHER + MIN_WAKE_SPACING;
        assert!(matches!(
            next_stamp(&mut stamped_at, pool(), later),
            Next::Gather
        ));
    }
}
