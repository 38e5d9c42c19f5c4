//! What one plan looks at: the pool's own Forgejo jobs, Jobs and registrations, keyed.

use std::collections::{BTreeMap, BTreeSet};

use crate::input::{ForgejoJob, PlanInput, RunnerRegistration};
use crate::naming::{parse_job_name, pool_hash};
use crate::owned::OwnedJob;
use crate::pool::Pool;

/// Where a Forgejo job attempt stands, as far as the last poll tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForgejoState {
    /// Listed as waiting.
    Waiting,
    /// Listed, not waiting: a runner took it.
    Taken,
    /// Not listed: done, cancelled, or not this pool's.
    Absent,
    /// The poll failed: nothing is known.
    Unknown,
}

impl ForgejoState {
    /// Whether the attempt is listed as waiting.
    pub(crate) fn is_waiting(self) -> bool {
        self == Self::Waiting
    }
}

/// A Forgejo job attempt: (id, attempt with 0 for unknown).
pub(crate) type JobKey = (i64, i64);

/// The input of a plan, narrowed to one pool and keyed for lookups.
pub(crate) struct PoolView<'a> {
    /// The pool's Forgejo jobs by attempt (`None` when the poll failed); a waiting listing
    /// wins over another of the same key.
    pub(crate) forgejo: Option<BTreeMap<JobKey, &'a ForgejoJob>>,
    /// The pool's Jobs by name (a Job of another pool, or not named by us, is not ours).
    pub(crate) owned: BTreeMap<&'a str, &'a OwnedJob>,
    /// The pool's runner registrations by name.
    pub(crate) registrations: BTreeMap<&'a str, Vec<&'a RunnerRegistration>>,
}

impl<'a> PoolView<'a> {
    /// Narrows `input` to `pool`.
    pub(crate) fn new(pool: &Pool, input: &PlanInput<'a>) -> Self {
        let ours = pool_hash(&pool.uid);
        let forgejo = input.forgejo_jobs.map(|jobs| {
            let mut map: BTreeMap<JobKey, &ForgejoJob> = BTreeMap::new();
            for job in jobs {
                if job.id <= 0 || job.attempt_number() < 0 || !pool.serves(&job.runs_on) {
                    continue;
                }
                let key = (job.id, job.attempt_number());
                if !map.get(&key).is_some_and(|known| known.is_waiting()) {
                    map.insert(key, job);
                }
            }
            map
        });
        let is_ours = |name: &str| parse_job_name(name).is_some_and(|p| p.pool_hash == ours);
        let mut owned: BTreeMap<&str, &OwnedJob> = BTreeMap::new();
        for job in input.owned_jobs.iter().filter(|j| is_ours(&j.name)) {
            owned.entry(job.name.as_str()).or_insert(job);
        }
        let mut registrations: BTreeMap<&str, Vec<&RunnerRegistration>> = BTreeMap::new();
        for registration in input.registrations.iter().filter(|r| is_ours(&r.name)) {
            registrations
                .entry(registration.name.as_str())
                .or_default()
                .push(registration);
        }
        Self {
            forgejo,
            owned,
            registrations,
        }
    }

    /// Where Forgejo stands on a job attempt.
    pub(crate) fn forgejo_state(&self, key: JobKey) -> ForgejoState {
        match &self.forgejo {
            None => ForgejoState::Unknown,
            Some(map) => match map.get(&key) {
                Some(job) if job.is_waiting() => ForgejoState::Waiting,
                Some(_) => ForgejoState::Taken,
                None => ForgejoState::Absent,
            },
        }
    }

    /// The waiting jobs, oldest first.
    pub(crate) fn waiting(&self) -> Vec<&'a ForgejoJob> {
        let mut waiting: Vec<&ForgejoJob> = self
            .forgejo
            .iter()
            .flat_map(|map| map.values())
            .filter(|job| job.is_waiting())
            .copied()
            .collect();
        waiting.sort_by_key(|job| (job.id, job.attempt_number()));
        waiting
    }
}

/// Whether a Job holds a runner slot once the plan's deletions are done.
pub(crate) fn holds_slot(job: &OwnedJob, deleted: &BTreeSet<&str>) -> bool {
    job.is_live() && !deleted.contains(job.name.as_str())
}
