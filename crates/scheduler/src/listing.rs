//! Whether a poll lists the scope's runner registrations (Forgejo 15+), besides its jobs.
//!
//! Listing them costs a second request per poll, and a plan needs them only while the pool
//! has something they decide: a runner Job not finished (is its runner busy? was its
//! registration replaced?), a runner Secret (its Job finished or went: its registration
//! goes too), or registrations this replica created or deleted for it since it last listed
//! them (did the deletion take? is the new one there?). A finished Job whose Secret is gone
//! needs nothing: the plan that deleted its Secret saw its registrations.
//!
//! An idle pool has none of these and lists only its jobs, except for the sweep: after
//! [`REGISTRATION_SWEEP_POLLS`] polls without a listing, a poll lists them again, so that a
//! registration named like the pool's with no Job (its Job deleted by hand, a replica gone
//! between registering a runner and creating its Secret) is still found and deleted. A
//! replica that has not listed a pool's registrations yet (it just started) lists them.

use crate::input::RunnerPath;
use crate::items::Plan;
use crate::owned::OwnedJob;
use crate::warm_runner::WarmRunner;

/// How many polls an idle pool makes without listing its runner registrations; the next
/// one lists them (the sweep). An idle pool thus makes one request per interval for this
/// many intervals, then one poll of two.
pub const REGISTRATION_SWEEP_POLLS: u32 = 10;

/// What a pool knows, before it polls, about its need for the registrations.
#[derive(Debug, Clone, Copy)]
pub struct ListingInput<'a> {
    /// The pool's runner Jobs (from the caches, with those this replica just created).
    pub owned_jobs: &'a [OwnedJob],
    /// Whether the pool has a runner Secret (from the cache).
    pub has_runner_secrets: bool,
    /// Whether this replica created or deleted (or tried to) a registration of the pool
    /// since the pool last listed them.
    pub registrations_changed: bool,
    /// The pool's polls since it last listed them; `None` when this replica never did.
    pub polls_without_listing: Option<u32>,
    /// The pool's warm runners: while one is live, every poll lists the registrations (they
    /// say which warm runners are idle and which may be retired).
    pub warm_runners: &'a [WarmRunner],
}

/// How recent a listing of the registrations the pool's next poll needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationListing {
    /// None: the poll lists only the jobs.
    Skip,
    /// One made within the pool's interval: the pool has something they decide.
    Current,
    /// One made within [`REGISTRATION_SWEEP_POLLS`] intervals: only the sweep wants it, so
    /// pools sharing a scope share one sweep listing instead of one each.
    Sweep,
}

/// How recent a listing of the scope's runner registrations the pool's next poll needs.
pub fn registration_listing(input: &ListingInput<'_>) -> RegistrationListing {
    let job_needs_them = |job: &OwnedJob| !job.state.is_finished() || job.secret_exists;
    if input.owned_jobs.iter().any(job_needs_them)
        || input.warm_runners.iter().any(WarmRunner::is_live)
        || input.has_runner_secrets
        || input.registrations_changed
    {
        RegistrationListing::Current
    } else if input
        .polls_without_listing
        .is_none_or(|polls| polls >= REGISTRATION_SWEEP_POLLS)
    {
        RegistrationListing::Sweep
    } else {
        RegistrationListing::Skip
    }
}

/// Whether the pool's next poll lists the scope's runner registrations.
pub fn lists_registrations(input: &ListingInput<'_>) -> bool {
    registration_listing(input) != RegistrationListing::Skip
}

/// Whether carrying out `plan` creates or deletes runner registrations: then the pool's
/// next poll lists them, to see that it took.
pub fn changes_registrations(plan: &Plan) -> bool {
    !plan.delete_registrations.is_empty()
        || plan
            .retire_warm_runners
            .iter()
            .any(|r| !r.registrations.is_empty())
        || plan
            .create_secrets
            .iter()
            .any(|request| request.path == RunnerPath::Ephemeral)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::owned::JobState;

    fn idle() -> ListingInput<'static> {
        ListingInput {
            owned_jobs: &[],
            has_runner_secrets: false,
            registrations_changed: false,
            polls_without_listing: Some(0),
            warm_runners: &[],
        }
    }

    fn job(state: JobState, secret_exists: bool) -> OwnedJob {
        OwnedJob {
            name: "forgejo-job-7-1-0123456789".into(),
            forgejo_job_id: 7,
            attempt: 1,
            created_at: Some(Time(Timestamp::UNIX_EPOCH)),
            state,
            finished_at: None,
            deleting: false,
            runner_started_at: None,
            pod_waiting: Vec::new(),
            has_pod: true,
            pod_create_refused: None,
            secret_exists,
            runner_uuid: None,
        }
    }

    #[test]
    fn an_idle_pool_lists_no_registrations_until_the_sweep() {
        for polls in 0..REGISTRATION_SWEEP_POLLS {
            let input = ListingInput {
                polls_without_listing: Some(polls),
                ..idle()
            };
            assert!(!lists_registrations(&input), "after {polls} polls without");
        }
    }

    #[test]
    fn the_sweep_lists_them_after_the_set_number_of_polls_without() {
        for polls in [
            REGISTRATION_SWEEP_POLLS,
            REGISTRATION_SWEEP_POLLS + 1,
            u32::MAX,
        ] {
            let input = ListingInput {
                polls_without_listing: Some(polls),
                ..idle()
            };
            assert!(lists_registrations(&input), "after {polls} polls without");
        }
    }

    #[test]
    fn only_the_sweep_accepts_an_older_listing() {
        let sweep = ListingInput {
            polls_without_listing: Some(REGISTRATION_SWEEP_POLLS),
            ..idle()
        };
        assert_eq!(registration_listing(&sweep), RegistrationListing::Sweep);
        let changed = ListingInput {
            registrations_changed: true,
            ..sweep
        };
        assert_eq!(registration_listing(&changed), RegistrationListing::Current);
        assert_eq!(registration_listing(&idle()), RegistrationListing::Skip);
    }

    #[test]
    fn a_pool_this_replica_never_listed_lists_them() {
        let input = ListingInput {
            polls_without_listing: None,
            ..idle()
        };
        assert!(lists_registrations(&input));
    }

    #[test]
    fn a_runner_job_not_finished_needs_them() {
        for secret in [true, false] {
            let jobs = [job(JobState::Active, secret)];
            let input = ListingInput {
                owned_jobs: &jobs,
                ..idle()
            };
            assert!(lists_registrations(&input), "secret: {secret}");
        }
    }

    #[test]
    fn a_finished_job_needs_them_while_its_secret_exists() {
        let with_secret = [job(JobState::Succeeded, true)];
        let input = ListingInput {
            owned_jobs: &with_secret,
            ..idle()
        };
        assert!(lists_registrations(&input));
        let without = [job(JobState::Succeeded, false)];
        let input = ListingInput {
            owned_jobs: &without,
            ..idle()
        };
        assert!(!lists_registrations(&input), "its plan saw them already");
    }

    #[test]
    fn a_live_warm_runner_needs_them_every_poll() {
        let warm = [crate::warm_runner::WarmRunner {
            name: "forgejo-warm-0-0123456789".into(),
            serial: 0,
            label: "docker".into(),
            created_at: None,
            state: JobState::Active,
            deleting: false,
            runner_started_at: None,
            pod_waiting: false,
            secret_created_at: None,
            runner_uuid: None,
        }];
        let input = ListingInput {
            warm_runners: &warm,
            ..idle()
        };
        assert!(lists_registrations(&input));
    }

    #[test]
    fn a_runner_secret_needs_them() {
        let input = ListingInput {
            has_runner_secrets: true,
            ..idle()
        };
        assert!(lists_registrations(&input));
    }

    #[test]
    fn a_registration_created_or_deleted_since_the_last_listing_needs_them() {
        // E.g. a runner registered for a Job the caches do not show yet.
        let input = ListingInput {
            registrations_changed: true,
            ..idle()
        };
        assert!(lists_registrations(&input));
    }
}
