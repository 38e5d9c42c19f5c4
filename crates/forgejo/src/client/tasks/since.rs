//! A repository's finished tasks created since a time: the results of jobs whose task id was
//! never seen, because they started and finished between two polls of the jobs listing, so
//! only their name, their repository and when they were first seen waiting are known.
//!
//! Forgejo creates a task when a runner takes the job and hands out task ids in that order, so
//! the listing (`id DESC`) is newest first by creation time too: once a page reaches a task
//! created before the time, every later page is older still.

use jiff::Timestamp;

use super::*;
use crate::RecentTasks;

impl Client {
    /// The finished tasks of `owner/repo` created at or after `since`, newest first, with each
    /// one's result in [`ActionTask::status`]: to find, by name, the result of a job whose
    /// task id was never seen.
    ///
    /// Reads `GET /repos/{owner}/{repo}/actions/tasks` from the newest task down, page by
    /// page, until a page reaches a task created before `since` or the listing ends, with the
    /// same status filter as [`Client::finished_tasks`] (Forgejo 15+; 11–14 list every task
    /// and the unfinished ones are left out), so every version gives the same answer. A
    /// task's time is its `created_at` (when a runner took the job), or its `run_started_at`
    /// if that is missing; a task with neither is left out. Forgejo's times are its own
    /// clock's, in whole seconds, and `since` is compared to the second: a caller matching
    /// jobs it saw waiting passes a time earlier by how far its clock may be ahead of
    /// Forgejo's.
    ///
    /// It reads at most [`Client::MAX_TASK_PAGES`] pages. When that bound (or a server that
    /// ignores `page`) stops it before `since`, [`RecentTasks::not_reached`] holds the time
    /// of the oldest task read: tasks created later are all there, older ones may be missing;
    /// [`RecentTasks::covers`] says whether a given time is covered. A 403
    /// ([`Error::Forbidden`]) or 404 ([`Error::NotFound`]) names the path, so the repository,
    /// and the token scope `read:repository`; each page counts as one `list_tasks` request.
    pub async fn finished_tasks_since(
        &self,
        owner: &str,
        repo: &str,
        since: Timestamp,
    ) -> Result<RecentTasks> {
        let mut search = SinceSearch::new(since);
        let stop = self.search_tasks(owner, repo, &mut search).await?;
        let found = search.finish(stop);
        if let (Stop::Bound, Some(not_reached)) = (stop, found.not_reached) {
            tracing::warn!(
                owner,
                repo,
                pages = Self::MAX_TASK_PAGES,
                since = %found.since,
                %not_reached,
                "the task listing was read to its page bound without reaching the time asked for"
            );
        }
        Ok(found)
    }
}

/// A search for the finished tasks created at or after a time.
struct SinceSearch {
    /// The time asked for, in whole seconds.
    since: Timestamp,
    tasks: Vec<ActionTask>,
    /// The time of the oldest task read so far.
    oldest_read: Option<Timestamp>,
    /// Whether a task created before `since` was read: later pages are older still.
    reached: bool,
}

impl Search for SinceSearch {
    fn take(&mut self, tasks: Vec<ActionTask>) -> bool {
        for task in tasks {
            let Some(created) = task.created_at.or(task.run_started_at) else {
                // Nothing says when it ran: leaving it out keeps an old task of the same name
                // from passing for a recent one.
                continue;
            };
            self.oldest_read = Some(self.oldest_read.map_or(created, |o| o.min(created)));
            if created.as_second() < self.since.as_second() {
                self.reached = true;
            } else if task.is_finished() {
                self.tasks.push(task);
            }
        }
        self.reached
    }
}

impl SinceSearch {
    fn new(since: Timestamp) -> Self {
        Self {
            // Forgejo's times are whole seconds: a task taken at 10.9 s reads as 10 s, which
            // a `since` of 10.7 s would leave out, so `since` drops its fraction too.
            since: Timestamp::from_second(since.as_second()).unwrap_or(since),
            tasks: Vec::new(),
            oldest_read: None,
            reached: false,
        }
    }

    /// The tasks found, newest first, and how far down they are complete.
    fn finish(mut self, stop: Stop) -> RecentTasks {
        let not_reached = match stop {
            Stop::Ended | Stop::Done => None,
            // No task read had a time: nothing later than any time is known to be complete.
            Stop::Repeated | Stop::Bound => Some(self.oldest_read.unwrap_or(Timestamp::MAX)),
        };
        self.tasks.sort_by_key(|task| std::cmp::Reverse(task.id));
        RecentTasks {
            since: self.since,
            tasks: self.tasks,
            not_reached,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::page;
    use super::*;

    /// Unix seconds as a time.
    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    /// A page of (id, status, created second) newest first; a second ≤ 0 gives no time.
    fn timed(tasks: &[(i64, &str, i64)], total: Option<i64>) -> TasksPageWire {
        let plain: Vec<(i64, &str)> = tasks.iter().map(|(id, s, _)| (*id, *s)).collect();
        let mut wire = page(&plain, total);
        for (task, (_, _, second)) in wire.workflow_runs.iter_mut().zip(tasks) {
            task.created_at = Timestamp::from_second(*second).ok().filter(|_| *second > 0);
        }
        wire
    }

    fn ids(found: &RecentTasks) -> Vec<i64> {
        found.tasks.iter().map(|t| t.id).collect()
    }

    #[test]
    fn finished_tasks_since_the_time_are_kept_until_a_page_reaches_before_it() {
        let since = at(1_000).checked_add(jiff::SignedDuration::from_millis(700));
        let mut search = SinceSearch::new(since.unwrap());
        let mut listing = Listing::default();
        let first = timed(
            &[
                (9, "success", 1_050),
                (8, "running", 1_040),
                (7, "failure", 1_030),
            ],
            Some(9),
        );
        assert_eq!(listing.read(first, &mut search), None);
        let second = timed(
            &[
                (6, "cancelled", 1_000),
                (5, "success", 999),
                (4, "success", 990),
            ],
            Some(9),
        );
        assert_eq!(listing.read(second, &mut search), Some(Stop::Done));

        let found = search.finish(Stop::Done);
        assert_eq!(
            ids(&found),
            [9, 7, 6],
            "the second of `since` counts; 8 runs"
        );
        assert_eq!((found.since, found.not_reached), (at(1_000), None));
        assert!(found.covers(at(1_000)) && found.covers(at(2_000)));
        assert!(!found.covers(at(999)), "before the time asked for");
    }

    #[test]
    fn run_started_at_stands_in_for_a_missing_created_at_and_untimed_tasks_are_left_out() {
        let mut search = SinceSearch::new(at(100));
        let mut wire = timed(&[(3, "success", 0), (2, "success", 0)], Some(2));
        wire.workflow_runs[1].run_started_at = Some(at(150));
        assert_eq!(
            Listing::default().read(wire, &mut search),
            Some(Stop::Ended)
        );
        let found = search.finish(Stop::Ended);
        assert_eq!(ids(&found), [2]);
        assert!(found.covers(at(100)), "the listing ended");
    }

    #[test]
    fn a_stop_before_the_time_says_how_far_down_the_tasks_are_complete() {
        let mut search = SinceSearch::new(at(100));
        let mut listing = Listing::default();
        let first = || timed(&[(9, "success", 300), (8, "skipped", 200)], Some(50));
        assert_eq!(listing.read(first(), &mut search), None);
        assert_eq!(listing.read(first(), &mut search), Some(Stop::Repeated));

        let found = search.finish(Stop::Repeated);
        assert_eq!(ids(&found), [9, 8]);
        assert_eq!(found.not_reached, Some(at(200)));
        assert!(found.covers(at(201)));
        assert!(
            !found.covers(at(200)),
            "more tasks of that second may follow"
        );
        assert!(!found.covers(at(100)));

        let untimed = SinceSearch::new(at(100)).finish(Stop::Bound);
        assert_eq!(untimed.not_reached, Some(Timestamp::MAX));
        assert!(
            !untimed.covers(at(5_000_000_000)),
            "nothing read had a time"
        );
    }
}
