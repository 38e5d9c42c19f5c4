//! What became of a pool's jobs between two listings: which a runner took (and how long
//! they waited since first seen waiting) and which left the listing (finished, cancelled
//! or deleted). The listing shows waiting and running jobs only and has no timestamps, so
//! each moment is the listing that first showed it: at most one poll late.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::input::ForgejoJob;

/// A job attempt: its id and attempt (0 when Forgejo gives none).
pub type JobAttempt = (i64, i64);

/// What the metrics say of a job: its repository and the labels it runs on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobOrigin {
    /// The repository id.
    pub repo_id: i64,
    /// The job's `runs-on` labels, joined with `,`.
    pub runs_on: String,
}

/// A job attempt followed from one listing to the next.
#[derive(Debug, Clone)]
struct TrackedJob {
    origin: JobOrigin,
    /// The job's name, which Forgejo's task listing repeats.
    name: String,
    /// When a listing first showed it.
    first_seen: Instant,
    /// When a listing first showed it waiting; `None` when first seen running.
    first_waiting: Option<Instant>,
    /// When a listing first showed it running.
    taken: Option<Instant>,
    /// The task running it, once a listing showed one.
    task_id: i64,
}

/// A change a listing showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEvent {
    /// A runner took the job: `waited` is from the listing that first showed it waiting
    /// to the one that first showed it running (`None`: never seen waiting).
    Taken {
        /// The job attempt.
        job: JobAttempt,
        /// Its repository and labels.
        origin: JobOrigin,
        /// How long it waited, as the listings saw it.
        waited: Option<Duration>,
    },
    /// The job left the listing: it finished, was cancelled or deleted.
    Left {
        /// The job attempt.
        job: JobAttempt,
        /// Its repository and labels.
        origin: JobOrigin,
        /// The task that ran it, 0 when no listing showed one (cancelled while waiting,
        /// or taken and finished between two listings).
        task_id: i64,
        /// The job's name.
        name: String,
        /// When a listing first showed it: a task that ran it was created after.
        first_seen: Instant,
        /// When a listing first showed it waiting, if none showed it taken: its wait is
        /// still to be measured (to its task's creation).
        waiting_since: Option<Instant>,
    },
}

/// The jobs of one pool, as the listings showed them so far.
#[derive(Debug, Clone, Default)]
pub struct JobLifecycle {
    jobs: HashMap<JobAttempt, TrackedJob>,
}

impl JobLifecycle {
    /// Takes in a listing made at `at` of the jobs the pool runs (waiting and running);
    /// returns what changed since the last one.
    pub fn observe(&mut self, listed: &[&ForgejoJob], at: Instant) -> Vec<JobEvent> {
        let mut events = Vec::new();
        let mut seen: HashSet<JobAttempt> = HashSet::with_capacity(listed.len());
        for job in listed {
            let key = (job.id, job.attempt_number());
            seen.insert(key);
            let waiting = job.is_waiting();
            let tracked = self.jobs.entry(key).or_insert_with(|| TrackedJob {
                origin: JobOrigin {
                    repo_id: job.repo_id,
                    runs_on: job.runs_on.join(","),
                },
                name: job.name.clone(),
                first_seen: at,
                first_waiting: waiting.then_some(at),
                taken: None,
                task_id: 0,
            });
            if !waiting && tracked.taken.is_none() {
                tracked.taken = Some(at);
                tracked.task_id = job.task_id;
                events.push(JobEvent::Taken {
                    job: key,
                    origin: tracked.origin.clone(),
                    waited: tracked.first_waiting.map(|first| at.duration_since(first)),
                });
            }
        }
        self.jobs.retain(|key, tracked| {
            if seen.contains(key) {
                return true;
            }
            events.push(JobEvent::Left {
                job: *key,
                origin: tracked.origin.clone(),
                task_id: tracked.task_id,
                name: std::mem::take(&mut tracked.name),
                first_seen: tracked.first_seen,
                waiting_since: tracked.first_waiting.filter(|_| tracked.taken.is_none()),
            });
            false
        });
        events
    }

    /// When the longest-waiting job was first seen waiting.
    pub fn oldest_waiting(&self) -> Option<Instant> {
        self.jobs
            .values()
            .filter(|job| job.taken.is_none())
            .filter_map(|job| job.first_waiting)
            .min()
    }

    /// How long the longest-waiting job has waited at `now`, as the listings saw it.
    pub fn oldest_wait(&self, now: Instant) -> Option<Duration> {
        self.oldest_waiting()
            .map(|first| now.saturating_duration_since(first))
    }

    /// How many jobs it follows.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Whether it follows no job.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }
}

#[cfg(test)]
mod tests;
