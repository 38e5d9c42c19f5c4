//! A gone job's result, from its repository's task listing: by its task id when a listing
//! showed one, else by its name among the tasks created since it was first seen waiting.
//!
//! Matching by name can only mix up jobs of one repository with the same name (two runs of
//! one workflow at once), which run on the same labels: the metrics, which count by
//! repository and labels, are the same either way.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};

use forgejo::ActionTask;
use scheduler::JobOrigin;

/// How much earlier than the operator's first sighting Forgejo's clock may date a task.
const CLOCK_SLACK: SignedDuration = SignedDuration::from_secs(60);
/// Tasks remembered as claimed, per repository: more than a repository finishes between
/// two polls.
const CLAIMED_PER_REPOSITORY: usize = 2_000;

/// A job that left the listing, whose result is asked.
#[derive(Debug, Clone)]
pub(super) struct AwaitingResult {
    pub(super) origin: JobOrigin,
    /// Its task, 0 when no listing showed one.
    pub(super) task_id: i64,
    /// Its name, to find its task when the id is not known.
    pub(super) name: String,
    /// When a listing first showed it, on the wall clock.
    pub(super) since: Timestamp,
    /// When a listing first showed it waiting, if its wait is not measured yet.
    pub(super) waiting_since: Option<Timestamp>,
    /// How many task listings did not have it yet.
    pub(super) tries: u32,
}

impl AwaitingResult {
    /// Where a task listing must reach back to for this job.
    pub(super) fn earliest_task(&self) -> Timestamp {
        self.since.checked_sub(CLOCK_SLACK).unwrap_or(self.since)
    }
}

/// The tasks already matched to a job, per (server, repository id), so that a task is
/// counted once.
#[derive(Debug, Default)]
pub(super) struct ClaimedTasks {
    claimed: Mutex<HashMap<(String, i64), VecDeque<i64>>>,
}

impl ClaimedTasks {
    /// Matches `jobs` of one repository with `tasks`: each job its task, or `None`.
    pub(super) fn match_tasks(
        &self,
        server: &str,
        repo_id: i64,
        jobs: Vec<AwaitingResult>,
        tasks: &[ActionTask],
    ) -> Vec<(AwaitingResult, Option<ActionTask>)> {
        let mut all = self.claimed.lock().unwrap_or_else(|p| p.into_inner());
        let claimed = all.entry((server.to_owned(), repo_id)).or_default();
        let mut taken: HashSet<i64> = claimed.iter().copied().collect();
        let mut matched = Vec::with_capacity(jobs.len());
        // Known ids first: a job matched by name must not take another job's task.
        let (by_id, by_name): (Vec<_>, Vec<_>) = jobs.into_iter().partition(|j| j.task_id > 0);
        for job in by_id {
            let task = tasks.iter().find(|t| t.id == job.task_id).cloned();
            if let Some(task) = &task {
                taken.insert(task.id);
                claimed.push_back(task.id);
            }
            matched.push((job, task));
        }
        for job in by_name {
            let earliest = job.earliest_task();
            // The oldest unclaimed task of that name created since: the listing is
            // newest first.
            let task = tasks
                .iter()
                .rev()
                .find(|t| {
                    t.name == job.name
                        && !taken.contains(&t.id)
                        && t.created_at.is_none_or(|created| created >= earliest)
                })
                .cloned();
            if let Some(task) = &task {
                taken.insert(task.id);
                claimed.push_back(task.id);
            }
            matched.push((job, task));
        }
        while claimed.len() > CLAIMED_PER_REPOSITORY {
            claimed.pop_front();
        }
        matched
    }
}

#[cfg(test)]
mod tests;
