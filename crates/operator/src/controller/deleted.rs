//! Runner registrations this replica deleted, so that a listing older than the deletion does
//! not make it delete them again (a shared poll answers for up to a whole interval).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a deletion is remembered; listings are never older than this.
const REMEMBER_FOR: Duration = Duration::from_secs(3600);

/// Deleted registrations by (server, id), with when.
#[derive(Debug, Default)]
pub struct DeletedRegistrations {
    deleted: Mutex<HashMap<(String, i64), Instant>>,
}

impl DeletedRegistrations {
    /// Remembers that registration `id` of `server` was deleted now.
    pub fn remember(&self, server: &str, id: i64) {
        let now = Instant::now();
        let mut deleted = self.deleted.lock().unwrap_or_else(|p| p.into_inner());
        deleted.retain(|_, at| now.duration_since(*at) < REMEMBER_FOR);
        deleted.insert((server.to_owned(), id), now);
    }

    /// Whether a listing made at `listed_at` still shows registration `id` only because it
    /// predates its deletion.
    pub fn deleted_after(&self, server: &str, id: i64, listed_at: Instant) -> bool {
        self.deleted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(server.to_owned(), id))
            .is_some_and(|at| *at >= listed_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_older_than_the_deletion_is_ignored_a_newer_one_is_not() {
        let deleted = DeletedRegistrations::default();
        let old_listing = Instant::now();
        deleted.remember("https://forgejo.example", 7);
        assert!(deleted.deleted_after("https://forgejo.example", 7, old_listing));
        assert!(!deleted.deleted_after("https://forgejo.example", 8, old_listing));
        assert!(!deleted.deleted_after("https://other.example", 7, old_listing));
        let new_listing = Instant::now() + Duration::from_millis(1);
        assert!(!deleted.deleted_after("https://forgejo.example", 7, new_listing));
    }
}
