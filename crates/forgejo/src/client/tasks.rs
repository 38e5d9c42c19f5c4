//! A repository's Actions tasks (`…/actions/tasks`): the results of jobs that have left the
//! jobs listing, read with as few pages as possible.
//!
//! Forgejo lists a repository's tasks newest first (`id DESC`, fixed), paged from 1, at most
//! 50 a page (`MAX_RESPONSE_ITEMS`), with `total_count` in the body. Forgejo 15+ honours
//! `status=`, so only finished tasks come back; 11–14 ignore it and list every task, and the
//! client keeps the finished ones itself, so every version gives the same answer.
//!
//! Two searches share the paging: for given task ids ([`Client::finished_tasks`], here) and
//! for the tasks created since a time ([`Client::finished_tasks_since`], `since.rs`).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::*;
use crate::types::{FINISHED_STATUSES, TasksPageWire};
use crate::{ActionTask, FinishedTasks};

mod since;

/// What a 403 on the task listing means.
const TASKS_FORBIDDEN: &str = "the token needs the read:repository scope and its user read access to the repository's Actions";

/// What a 404 on the task listing means.
const TASKS_NOT_FOUND: &str = "check the owner and repository name and that the token's user can see the repository (the token needs the read:repository scope), and that the server is Forgejo 11+";

impl Client {
    /// Pages one [`Client::finished_tasks`] or [`Client::finished_tasks_since`] call reads at
    /// most (50 tasks a page).
    pub const MAX_TASK_PAGES: u32 = 10;

    /// The finished tasks of `owner/repo` among `task_ids` (the `task_id`s of jobs that left
    /// the jobs listing), with each one's result in [`ActionTask::status`].
    ///
    /// Reads `GET /repos/{owner}/{repo}/actions/tasks` from the newest task down, page by
    /// page, until every id asked for is found, the listing reaches below the lowest one, or
    /// it ends: so tasks that finished recently cost one request. Once [`Client::version`]
    /// has seen Forgejo 15+, it asks only for finished tasks (`status=success&status=failure
    /// &status=cancelled&status=skipped`); before that, or on 11–14, unfinished tasks are read
    /// too and left out. Ids ≤ 0 are ignored; none asked for sends no request.
    ///
    /// It reads at most [`Client::MAX_TASK_PAGES`] pages: ids further down are returned in
    /// [`FinishedTasks::not_reached`], as are those below a page that repeats tasks already
    /// read (a server that ignores `page`). A 403 ([`Error::Forbidden`]) or 404
    /// ([`Error::NotFound`]) names the path, so the repository, and the token scope
    /// `read:repository`. Each page counts as one `list_tasks` request for the observer.
    pub async fn finished_tasks(
        &self,
        owner: &str,
        repo: &str,
        task_ids: &[i64],
    ) -> Result<FinishedTasks> {
        let mut search = IdSearch::new(task_ids);
        if search.is_done() {
            return Ok(search.finish(Stop::Done));
        }
        let stop = self.search_tasks(owner, repo, &mut search).await?;
        let found = search.finish(stop);
        if stop == Stop::Bound {
            tracing::warn!(
                owner,
                repo,
                pages = Self::MAX_TASK_PAGES,
                not_reached = found.not_reached.len(),
                "the task listing was read to its page bound without reaching every task asked for"
            );
        }
        Ok(found)
    }

    /// Reads `owner/repo`'s task listing into `search`, page by page from the newest task,
    /// until the search is done, the listing ends or repeats itself, or the page bound.
    async fn search_tasks(
        &self,
        owner: &str,
        repo: &str,
        search: &mut impl Search,
    ) -> Result<Stop> {
        let filter = self
            .known_version()
            .is_some_and(|v| v.filters_tasks_by_status());
        let operation = Operation::get("list_tasks", TASKS_FORBIDDEN).not_found(TASKS_NOT_FOUND);
        let segments = ["repos", owner, repo, "actions", "tasks"];
        let mut listing = Listing::default();
        for page in 1..=Self::MAX_TASK_PAGES {
            let call = self.call(operation, &segments, Some(tasks_query(page, filter)), None)?;
            let answer = self.send(&call).await?;
            let wire: TasksPageWire = self.decode(&call, &answer)?;
            let Some(stop) = listing.read(wire, search) else {
                continue;
            };
            if stop == Stop::Repeated {
                tracing::warn!(
                    endpoint = call.endpoint.name,
                    path = %call.endpoint.path,
                    page,
                    "Forgejo answered a task page with tasks already read (it ignores `page`, or many tasks finished meanwhile); using what was read"
                );
            }
            return Ok(stop);
        }
        Ok(Stop::Bound)
    }
}

/// `page=P&limit=50`, and the finished statuses when the server filters by them.
fn tasks_query(page: u32, filter: bool) -> String {
    let mut query = format!("page={page}&limit={PAGE_SIZE}");
    if filter {
        for status in FINISHED_STATUSES {
            query.push_str("&status=");
            query.push_str(status);
        }
    }
    query
}

/// Why the reading of the task pages stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The listing ended: an empty page, or `total_count` tasks received.
    Ended,
    /// The search has nothing left to look for.
    Done,
    /// A page held only tasks already read: more pages would not get further.
    Repeated,
    /// [`Client::MAX_TASK_PAGES`] pages were read.
    Bound,
}

/// What one search through the task pages looks for.
trait Search {
    /// Takes in the tasks of a page not read before, newest first; true once nothing is
    /// left to look for further down.
    fn take(&mut self, tasks: Vec<ActionTask>) -> bool;
}

/// The pages read so far: the tasks seen (a page may repeat some), and how many came.
#[derive(Default)]
struct Listing {
    seen: HashSet<i64>,
    /// Tasks received so far, repeats included (compared with `total_count`).
    received: i64,
}

impl Listing {
    /// Hands one page's new tasks to `search`; says why to stop, or `None` for the next page.
    fn read(&mut self, page: TasksPageWire, search: &mut impl Search) -> Option<Stop> {
        let count = page.workflow_runs.len();
        let new: Vec<ActionTask> = page
            .workflow_runs
            .into_iter()
            .filter(|task| self.seen.insert(task.id))
            .collect();
        let fresh = !new.is_empty();
        let done = search.take(new);
        self.received += i64::try_from(count).unwrap_or(i64::MAX);
        if count == 0 || page.total_count.is_some_and(|total| self.received >= total) {
            Some(Stop::Ended)
        } else if done {
            Some(Stop::Done)
        } else if !fresh {
            Some(Stop::Repeated)
        } else {
            None
        }
    }
}

/// A search for given task ids: what was found, and how far down it read.
struct IdSearch {
    wanted: BTreeSet<i64>,
    found: BTreeMap<i64, ActionTask>,
    /// The lowest task id read so far.
    lowest_read: Option<i64>,
}

impl Search for IdSearch {
    fn take(&mut self, tasks: Vec<ActionTask>) -> bool {
        for task in tasks {
            self.lowest_read = Some(self.lowest_read.map_or(task.id, |l| l.min(task.id)));
            if self.wanted.contains(&task.id) && task.is_finished() {
                self.found.insert(task.id, task);
            }
        }
        self.is_done()
    }
}

impl IdSearch {
    fn new(task_ids: &[i64]) -> Self {
        Self {
            wanted: task_ids.iter().copied().filter(|id| *id > 0).collect(),
            found: BTreeMap::new(),
            lowest_read: None,
        }
    }

    /// Whether nothing is left to look for: every id found, or the lowest one reached.
    fn is_done(&self) -> bool {
        let Some(lowest_wanted) = self.wanted.first() else {
            return true;
        };
        self.found.len() == self.wanted.len()
            || self.lowest_read.is_some_and(|read| read <= *lowest_wanted)
    }

    /// The tasks found, newest first, and the ids below what was read (none if it ended).
    fn finish(self, stop: Stop) -> FinishedTasks {
        let not_reached = if stop == Stop::Ended {
            Vec::new()
        } else {
            let below = |id: &i64| self.lowest_read.is_none_or(|read| *id < read);
            self.wanted
                .iter()
                .copied()
                .filter(|id| !self.found.contains_key(id) && below(id))
                .collect()
        };
        FinishedTasks {
            tasks: self.found.into_values().rev().collect(),
            not_reached,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn page(tasks: &[(i64, &str)], total: Option<i64>) -> TasksPageWire {
        TasksPageWire {
            workflow_runs: tasks
                .iter()
                .map(|(id, status)| ActionTask {
                    id: *id,
                    name: format!("job {id}"),
                    status: (*status).into(),
                    run_number: 0,
                    head_sha: String::new(),
                    created_at: None,
                    run_started_at: None,
                    updated_at: None,
                })
                .collect(),
            total_count: total,
        }
    }

    fn ids(found: &FinishedTasks) -> Vec<i64> {
        found.tasks.iter().map(|t| t.id).collect()
    }

    #[test]
    fn the_query_asks_for_finished_statuses_only_when_the_server_filters() {
        assert_eq!(tasks_query(2, false), "page=2&limit=50");
        assert_eq!(
            tasks_query(1, true),
            "page=1&limit=50&status=success&status=failure&status=cancelled&status=skipped"
        );
    }

    #[test]
    fn nothing_asked_for_needs_no_page() {
        assert!(IdSearch::new(&[]).is_done());
        assert!(IdSearch::new(&[0, -3]).is_done(), "ids ≤ 0 are no tasks");
        let none = IdSearch::new(&[0]).finish(Stop::Done);
        assert_eq!(none, FinishedTasks::default());
    }

    #[test]
    fn the_search_stops_once_it_reads_below_the_lowest_id() {
        let (mut listing, mut search) = (Listing::default(), IdSearch::new(&[7, 4, 9]));
        let first = page(&[(10, "success"), (9, "failure"), (8, "running")], Some(9));
        assert_eq!(listing.read(first, &mut search), None);
        let second = page(&[(7, "running"), (6, "success"), (3, "skipped")], Some(9));
        assert_eq!(
            listing.read(second, &mut search),
            Some(Stop::Done),
            "3 is below 4"
        );

        let found = search.finish(Stop::Done);
        assert_eq!(ids(&found), [9], "7 still runs, 4 is not listed");
        assert!(found.not_reached.is_empty());
    }

    #[test]
    fn the_search_stops_once_every_id_is_found() {
        let (mut listing, mut search) = (Listing::default(), IdSearch::new(&[9, 10]));
        let first = page(
            &[(10, "cancelled"), (9, "success"), (8, "success")],
            Some(100),
        );
        assert_eq!(listing.read(first, &mut search), Some(Stop::Done));
        assert_eq!(ids(&search.finish(Stop::Done)), [10, 9]);
    }

    #[test]
    fn the_end_of_the_listing_leaves_nothing_unreached() {
        let (mut listing, mut search) = (Listing::default(), IdSearch::new(&[2]));
        let only = page(&[(5, "success")], Some(1));
        assert_eq!(listing.read(only, &mut search), Some(Stop::Ended));
        assert_eq!(
            search.finish(Stop::Ended),
            FinishedTasks::default(),
            "total_count read"
        );
        let (mut listing, mut search) = (Listing::default(), IdSearch::new(&[2]));
        assert_eq!(
            listing.read(page(&[(5, "success")], None), &mut search),
            None
        );
        let empty = listing.read(page(&[], None), &mut search);
        assert_eq!(empty, Some(Stop::Ended), "an empty page");
    }

    #[test]
    fn a_repeated_page_stops_and_reports_what_lies_below() {
        let (mut listing, mut search) = (Listing::default(), IdSearch::new(&[9, 2, 1]));
        let first = || page(&[(10, "success"), (9, "success")], Some(10));
        assert_eq!(listing.read(first(), &mut search), None);
        assert_eq!(listing.read(first(), &mut search), Some(Stop::Repeated));

        let found = search.finish(Stop::Repeated);
        assert_eq!(ids(&found), [9]);
        assert_eq!(found.not_reached, [1, 2]);
    }
}
