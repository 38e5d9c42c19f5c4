//! Per pool: how many polls went by since it last listed its runner registrations, and
//! whether this replica changed any of them since: what `scheduler::lists_registrations`
//! decides from.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// What one pool's listings were, by pool uid.
#[derive(Debug, Default)]
pub struct RegistrationSweeps {
    pools: Mutex<HashMap<String, PoolListings>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct PoolListings {
    /// Jobs listings seen since the registrations were last listed; `None`: never listed.
    polls_without: Option<u32>,
    /// The jobs listing counted last: a pool reconciled twice within one listing's life
    /// (a change of one of its Jobs, a shared listing) made one poll, not two.
    counted: Option<Instant>,
    /// When this replica last created or deleted one of the pool's registrations, until a
    /// listing made after it is seen.
    changed_at: Option<Instant>,
}

/// What a pool's next poll decides from: polls since the last listing (`None`: never
/// listed), and whether its registrations changed since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepState {
    /// Polls since the registrations were last listed; `None` when never.
    pub polls_without_listing: Option<u32>,
    /// Whether this replica changed a registration of the pool since that listing.
    pub registrations_changed: bool,
}

impl RegistrationSweeps {
    /// The pool's state before its next poll.
    pub fn state(&self, pool_uid: &str) -> SweepState {
        let listings = self.lock().get(pool_uid).copied().unwrap_or_default();
        SweepState {
            polls_without_listing: listings.polls_without,
            registrations_changed: listings.changed_at.is_some(),
        }
    }

    /// Notes a poll of the pool that got the jobs listing made at `jobs_at` and, if it
    /// listed them, the registrations listing made at `registrations_at`.
    pub fn polled(&self, pool_uid: &str, jobs_at: Instant, registrations_at: Option<Instant>) {
        let mut pools = self.lock();
        let listings = pools.entry(pool_uid.to_owned()).or_default();
        match registrations_at {
            Some(listed_at) => {
                listings.polls_without = Some(0);
                // A shared listing older than the change does not show it yet.
                if listings.changed_at.is_some_and(|at| at <= listed_at) {
                    listings.changed_at = None;
                }
            }
            None if listings.counted != Some(jobs_at) => {
                listings.polls_without = listings.polls_without.map(|n| n.saturating_add(1));
            }
            None => {}
        }
        listings.counted = Some(jobs_at);
    }

    /// Notes that this replica created or deleted (or tried to) a registration of the pool
    /// at `at`.
    pub fn changed(&self, pool_uid: &str, at: Instant) {
        self.lock()
            .entry(pool_uid.to_owned())
            .or_default()
            .changed_at = Some(at);
    }

    /// Forgets a deleted pool.
    pub fn forget(&self, pool_uid: &str) {
        self.lock().remove(pool_uid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PoolListings>> {
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn state(polls: Option<u32>, changed: bool) -> SweepState {
        SweepState {
            polls_without_listing: polls,
            registrations_changed: changed,
        }
    }

    #[test]
    fn a_pool_never_polled_never_listed() {
        let sweeps = RegistrationSweeps::default();
        assert_eq!(sweeps.state("pool"), state(None, false));
    }

    #[test]
    fn each_new_jobs_listing_without_registrations_counts_once() {
        let sweeps = RegistrationSweeps::default();
        let start = Instant::now();
        sweeps.polled("pool", start, Some(start));
        for n in 1..=3u64 {
            let listing = start + Duration::from_secs(n);
            sweeps.polled("pool", listing, None);
            // A second reconcile within the same listing is the same poll.
            sweeps.polled("pool", listing, None);
        }
        assert_eq!(sweeps.state("pool"), state(Some(3), false));
        assert_eq!(sweeps.state("other"), state(None, false));
        sweeps.polled("pool", start + Duration::from_secs(4), Some(start));
        assert_eq!(sweeps.state("pool"), state(Some(0), false));
    }

    #[test]
    fn a_change_holds_until_a_listing_made_after_it() {
        let sweeps = RegistrationSweeps::default();
        let before = Instant::now();
        let change = before + Duration::from_millis(1);
        sweeps.changed("pool", change);
        assert_eq!(sweeps.state("pool"), state(None, true));
        sweeps.polled("pool", before, Some(before));
        assert_eq!(
            sweeps.state("pool"),
            state(Some(0), true),
            "an older listing"
        );
        let after = change + Duration::from_millis(1);
        sweeps.polled("pool", after, Some(after));
        assert_eq!(sweeps.state("pool"), state(Some(0), false));
        sweeps.changed("pool", after);
        sweeps.forget("pool");
        assert_eq!(sweeps.state("pool"), state(None, false));
    }
}
