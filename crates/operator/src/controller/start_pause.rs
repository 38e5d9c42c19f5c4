//! Pauses a pool's new runner Jobs while its pods cannot start (an image that cannot be
//! pulled, a container config that cannot be built): without it, every deadline deleted the
//! Job and made a new one, with a new runner registration, for ever.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use scheduler::{Deletion, Reason};

/// The longest pause; a spec change ends a pause at once.
const MAX_PAUSE: Duration = Duration::from_secs(3600);

/// Why and until when a pool's new runner Jobs are paused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    /// Until when no new runner Job is created.
    pub until: Instant,
    /// Start failures in a row.
    pub failures: u32,
    /// The reason of the last failure (`ImagePullFailed` or `ContainerConfigError`).
    pub reason: Reason,
    /// The last failure's message (it names the image or the missing config).
    pub message: String,
}

#[derive(Debug)]
struct Entry {
    generation: Option<i64>,
    pause: Pause,
    /// The Jobs already counted: a deletion planned again before the watch shows it is one.
    counted: HashSet<String>,
    /// When the first of these failures was seen (wall clock, to compare with pod times).
    since: Timestamp,
}

/// Per pool (by uid): its current pause, if any.
#[derive(Debug, Default)]
pub struct StartPause {
    pools: Mutex<HashMap<String, Entry>>,
}

impl StartPause {
    /// Updates the pool's pause from the Job deletions a plan makes and returns it while it
    /// lasts. `started_runner` says whether a runner of the pool started since
    /// [`paused_since`](Self::paused_since): the image works again.
    pub fn observe(
        &self,
        pool_uid: &str,
        generation: Option<i64>,
        deletions: &[Deletion],
        started_runner: bool,
        deadline: Duration,
        now: Instant,
    ) -> Option<Pause> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        // A new spec (a fixed image) or a runner that started ends the pause.
        if pools
            .get(pool_uid)
            .is_some_and(|e| e.generation != generation || started_runner)
        {
            pools.remove(pool_uid);
        }
        let counted = |name: &str| {
            pools
                .get(pool_uid)
                .is_some_and(|e| e.counted.contains(name))
        };
        let failed = deletions.iter().find(|d| {
            matches!(
                d.reason,
                Reason::ImagePullFailed | Reason::ContainerConfigError | Reason::PodNotCreated
            ) && !counted(&d.name)
        });
        if let Some(failure) = failed {
            let (mut names, since) = pools.remove(pool_uid).map_or_else(
                || (HashSet::new(), Timestamp::now()),
                |e| (e.counted, e.since),
            );
            names.insert(failure.name.clone());
            let failures = u32::try_from(names.len()).unwrap_or(u32::MAX);
            let pause = deadline
                .saturating_mul(1 << failures.saturating_sub(1).min(16))
                .min(MAX_PAUSE);
            pools.insert(
                pool_uid.to_owned(),
                Entry {
                    generation,
                    pause: Pause {
                        until: now + pause,
                        failures,
                        reason: failure.reason,
                        message: failure.message.clone(),
                    },
                    counted: names,
                    since,
                },
            );
        }
        pools
            .get(pool_uid)
            .map(|e| e.pause.clone())
            .filter(|pause| pause.until > now)
    }

    /// Since when the pool's runner pods have been failing to start, if they are.
    pub fn paused_since(&self, pool_uid: &str) -> Option<Timestamp> {
        self.pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(pool_uid)
            .map(|e| e.since)
    }

    /// Forgets a deleted pool.
    pub fn forget(&self, pool_uid: &str) {
        self.pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(pool_uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_secs(300);

    /// One pool's view of the tracker, so each test line is one observation.
    struct Pool(StartPause);

    impl Pool {
        fn observe(
            &self,
            generation: i64,
            deletions: &[Deletion],
            started_runner: bool,
            now: Instant,
        ) -> Option<Pause> {
            self.0.observe(
                "uid",
                Some(generation),
                deletions,
                started_runner,
                DEADLINE,
                now,
            )
        }
    }

    fn plan_deleting(reason: Option<Reason>) -> Vec<Deletion> {
        plan_deleting_job("forgejo-job-1", reason)
    }

    fn plan_deleting_job(name: &str, reason: Option<Reason>) -> Vec<Deletion> {
        reason
            .map(|reason| Deletion {
                name: name.into(),
                forgejo_job_id: 1,
                attempt: 1,
                reason,
                message: "Back-off pulling image \"registry.example/runner:typo\"".into(),
            })
            .into_iter()
            .collect()
    }

    #[test]
    fn an_image_that_cannot_be_pulled_pauses_new_jobs_doubling_each_time() {
        let pool = Pool(StartPause::default());
        let failed = plan_deleting(Some(Reason::ImagePullFailed));
        let t0 = Instant::now();
        let first = pool.observe(1, &failed, false, t0).expect("paused");
        assert_eq!(first.until, t0 + DEADLINE);
        assert!(first.message.contains("registry.example/runner:typo"));
        let t1 = first.until;
        // The same Job's deletion planned again (the cache lags the delete) is not a new failure.
        assert_eq!(pool.observe(1, &failed, false, t0), Some(first));
        let another = plan_deleting_job("forgejo-job-2", Some(Reason::ImagePullFailed));
        let second = pool.observe(1, &another, false, t1).expect("paused");
        assert_eq!((second.failures, second.until), (2, t1 + DEADLINE * 2));
        // Between failures the pause holds, and ends by itself.
        let nothing = plan_deleting(None);
        assert!(pool.observe(1, &nothing, false, t1).is_some());
        assert!(pool.observe(1, &nothing, false, second.until).is_none());
    }

    #[test]
    fn a_spec_change_or_a_started_runner_ends_the_pause() {
        let pool = Pool(StartPause::default());
        let t0 = Instant::now();
        let failed = plan_deleting(Some(Reason::ContainerConfigError));
        let nothing = plan_deleting(None);
        assert!(pool.observe(1, &failed, false, t0).is_some());
        assert!(pool.observe(2, &nothing, false, t0).is_none());
        assert!(pool.observe(2, &failed, false, t0).is_some());
        assert!(pool.observe(2, &nothing, true, t0).is_none());
    }

    #[test]
    fn other_deletions_do_not_pause() {
        let pool = Pool(StartPause::default());
        for reason in [Reason::ForgejoJobNotWaiting, Reason::Unschedulable] {
            let deleting = plan_deleting(Some(reason));
            assert!(pool.observe(1, &deleting, false, Instant::now()).is_none());
        }
    }
}
