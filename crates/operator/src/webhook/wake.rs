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
/// How long a pool's last stamp is remembered (longer than any spacing).
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// A pool, by namespace and name.
type PoolKey = (String, String);

/// When each pool was last stamped, and whether a trailing stamp is on its way.
#[derive(Debug, Clone, Copy)]
struct LastWake {
    at: Instant,
    trailing: bool,
}

/// Stamps pools, coalesced: one stamp at once, then at most one per [`MIN_WAKE_SPACING`].
#[derive(Clone)]
pub struct Waker {
    client: kube::Client,
    last: Arc<Mutex<HashMap<PoolKey, LastWake>>>,
}

/// What [`Waker::wake`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The pool was stamped now.
    Stamped,
    /// A stamp was made less than a spacing ago: one more follows when it ends.
    Coalesced,
}

impl Waker {
    /// A waker that patches pools through `client`.
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            last: Arc::default(),
        }
    }

    /// Wakes pool `namespace`/`name`: stamps it now, or, within a spacing of the last
    /// stamp, makes sure one more stamp follows at the end of the spacing.
    pub async fn wake(&self, namespace: &str, name: &str) -> Result<Wake, kube::Error> {
        let key = (namespace.to_owned(), name.to_owned());
        let now = Instant::now();
        let trailing_at = {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            last.retain(|_, wake| now.duration_since(wake.at) < FORGET_AFTER);
            match last.get_mut(&key) {
                Some(wake) if now.duration_since(wake.at) < MIN_WAKE_SPACING => {
                    if wake.trailing {
                        return Ok(Wake::Coalesced);
                    }
                    wake.trailing = true;
                    Some(wake.at + MIN_WAKE_SPACING)
                }
                _ => {
                    last.insert(
                        key.clone(),
                        LastWake {
                            at: now,
                            trailing: false,
                        },
                    );
                    None
                }
            }
        };
        match trailing_at {
            None => {
                stamp(&self.client, namespace, name).await?;
                Ok(Wake::Stamped)
            }
            Some(at) => {
                let waker = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(at.into()).await;
                    waker.stamp_trailing(key).await;
                });
                Ok(Wake::Coalesced)
            }
        }
    }

    async fn stamp_trailing(&self, key: PoolKey) {
        {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            last.insert(
                key.clone(),
                LastWake {
                    at: Instant::now(),
                    trailing: false,
                },
            );
        }
        if let Err(error) = stamp(&self.client, &key.0, &key.1).await {
            tracing::warn!(namespace = %key.0, pool = %key.1, %error, "webhook: waking the pool failed; its next poll finds the job");
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
