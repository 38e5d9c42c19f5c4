//! When each runner Job's Forgejo job was first seen not waiting: the scheduler counts the
//! grace before it deletes such a Job from then, not from the runner's start, so that a
//! runner that took its task a moment before a registrations listing is never taken for idle.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Per pool uid, per Job name: when its Forgejo job was first seen not waiting.
#[derive(Debug, Default)]
pub struct NotWaitingSince {
    pools: Mutex<HashMap<String, BTreeMap<String, Time>>>,
}

impl NotWaitingSince {
    /// What the pool's next plan reads, as (Job name, first seen).
    pub fn of_pool(&self, pool_uid: &str) -> Vec<(String, Time)> {
        let pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools
            .get(pool_uid)
            .map(|jobs| jobs.iter().map(|(n, t)| (n.clone(), t.clone())).collect())
            .unwrap_or_default()
    }

    /// Remembers that the plan made at `now` saw `jobs` not waiting; forgets the pool's other
    /// Jobs (a Job seen waiting again, or gone, starts over).
    pub fn remember(&self, pool_uid: &str, jobs: &[String], now: &Time) {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        if jobs.is_empty() {
            pools.remove(pool_uid);
            return;
        }
        let pool = pools.entry(pool_uid.to_owned()).or_default();
        pool.retain(|name, _| jobs.contains(name));
        for name in jobs {
            pool.entry(name.clone()).or_insert_with(|| now.clone());
        }
    }

    /// Forgets a deleted pool.
    pub fn forget_pool(&self, pool_uid: &str) {
        self.pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(pool_uid);
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).unwrap())
    }

    #[test]
    fn the_first_sighting_is_kept_and_a_job_no_longer_seen_starts_over() {
        let seen = NotWaitingSince::default();
        seen.remember("p", &["a".into()], &at(10));
        seen.remember("p", &["a".into(), "b".into()], &at(20));
        assert_eq!(
            seen.of_pool("p"),
            [("a".into(), at(10)), ("b".into(), at(20))]
        );
        seen.remember("p", &["b".into()], &at(30));
        seen.remember("p", &["a".into(), "b".into()], &at(40));
        assert_eq!(
            seen.of_pool("p"),
            [("a".into(), at(40)), ("b".into(), at(20))]
        );
        assert!(seen.of_pool("other").is_empty());
        seen.forget_pool("p");
        assert!(seen.of_pool("p").is_empty());
    }
}
