//! The runner Jobs and Secrets this replica created that the watch caches may not show yet.
//!
//! A pool is reconciled again as soon as something it owns changes, often before the watch
//! delivers the Jobs the last reconcile created: without this overlay the next plan would
//! create them again (an `AlreadyExists` per Job) and count their slots as free.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt as _;

use super::trim::{self, RunnerJob};

/// How long a write is remembered at most: a watch that lags longer has failed, and its
/// relist brings the object.
const REMEMBER_FOR: Duration = Duration::from_secs(60);

/// Objects by (namespace, name), as created, with when.
type Written<K> = HashMap<(String, String), (Arc<K>, Instant)>;

/// Jobs and Secrets created lately, trimmed as the caches keep them.
#[derive(Default)]
pub struct RecentWrites {
    jobs: Mutex<Written<RunnerJob>>,
    secrets: Mutex<Written<Secret>>,
}

impl RecentWrites {
    /// Remembers a runner Job this replica created, as the caches keep it.
    pub fn job_created(&self, job: RunnerJob) {
        remember(&self.jobs, job);
    }

    /// Remembers a runner Secret this replica created.
    pub fn secret_created(&self, secret: &Secret) {
        let mut secret = secret.clone();
        trim::secret(&mut secret);
        remember(&self.secrets, secret);
    }

    /// The pool's Jobs created lately that `cached` (the names the cache has) lacks;
    /// forgets those the cache has, and Jobs and Secrets older than [`REMEMBER_FOR`]
    /// (once per reconcile, here, rather than at each Secret looked up).
    pub fn jobs_missing_from(
        &self,
        namespace: &str,
        pool_uid: &str,
        cached: &dyn Fn(&str) -> bool,
    ) -> Vec<Arc<RunnerJob>> {
        lock(&self.secrets).retain(|_, (_, at)| at.elapsed() < REMEMBER_FOR);
        let mut jobs = lock(&self.jobs);
        jobs.retain(|(ns, name), (_, at)| {
            at.elapsed() < REMEMBER_FOR && !(ns == namespace && cached(name))
        });
        jobs.iter()
            .filter(|((ns, _), (job, _))| {
                ns == namespace
                    && scheduler::labels::pool_uid_of(job.metadata.labels.as_ref())
                        == Some(pool_uid)
            })
            .map(|(_, (job, _))| Arc::clone(job))
            .collect()
    }

    /// Forgets a Job this replica deleted, so that it no longer holds a slot.
    pub fn job_deleted(&self, namespace: &str, name: &str) {
        lock(&self.jobs).remove(&(namespace.to_owned(), name.to_owned()));
    }

    /// A Secret created lately, unless older than [`REMEMBER_FOR`].
    pub fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        lock(&self.secrets)
            .get(&(namespace.to_owned(), name.to_owned()))
            .filter(|(_, at)| at.elapsed() < REMEMBER_FOR)
            .map(|(secret, _)| Arc::clone(secret))
    }
}

fn remember<K: kube::Resource>(written: &Mutex<Written<K>>, object: K) {
    let key = (object.namespace().unwrap_or_default(), object.name_any());
    lock(written).insert(key, (Arc::new(object), Instant::now()));
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn job(name: &str, pool_uid: &str) -> RunnerJob {
        RunnerJob {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ci".into()),
                labels: Some(BTreeMap::from([(
                    scheduler::labels::RUNNER_DEPLOYMENT_UID.to_owned(),
                    pool_uid.to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            status: None,
        }
    }

    #[test]
    fn a_created_job_shows_until_the_cache_has_it() {
        let recent = RecentWrites::default();
        recent.job_created(job("a", "pool-1"));
        recent.job_created(job("b", "pool-2"));
        let names = |jobs: Vec<Arc<RunnerJob>>| -> Vec<String> {
            jobs.iter().map(|j| j.name_any()).collect()
        };
        assert_eq!(
            names(recent.jobs_missing_from("ci", "pool-1", &|_| false)),
            ["a"]
        );
        assert!(
            recent
                .jobs_missing_from("other", "pool-1", &|_| false)
                .is_empty()
        );
        // Once the cache has it, it is forgotten for good.
        assert!(
            recent
                .jobs_missing_from("ci", "pool-1", &|n| n == "a")
                .is_empty()
        );
        assert!(
            recent
                .jobs_missing_from("ci", "pool-1", &|_| false)
                .is_empty()
        );
        assert_eq!(
            names(recent.jobs_missing_from("ci", "pool-2", &|_| false)),
            ["b"]
        );
    }
}
