//! Actions tasks (`modules/structs/repo_actions.go`, `ActionTask`): one run of one job attempt
//! by a runner, as `GET /repos/{owner}/{repo}/actions/tasks` lists them, and what
//! [`crate::Client::finished_tasks`] and [`crate::Client::finished_tasks_since`] found.
//!
//! Forgejo's times are whole seconds in RFC 3339 (`2025-01-02T03:04:05+01:00`); they are read
//! as [`Timestamp`]s, and one that is absent, unreadable or zero reads as `None`, so an odd
//! time never hides a task's result.

use jiff::Timestamp;
use serde::Serializer;

use super::*;

/// A task as Forgejo lists it: the result of one attempt of a job, once it has finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionTask {
    /// The task's id: the `task_id` the jobs listing shows for the job it ran.
    pub id: i64,
    /// The job's name (from the workflow).
    #[serde(default)]
    pub name: String,
    /// `unknown`, `waiting`, `running`, `blocked`, or a result: `success`, `failure`,
    /// `cancelled`, `skipped`.
    pub status: String,
    /// The number of the workflow run, per repository.
    #[serde(default)]
    pub run_number: i64,
    /// The commit the run is for.
    #[serde(default)]
    pub head_sha: String,
    /// When the task was created: when a runner took the job's attempt. Forgejo sets it and
    /// `run_started_at` at once, and hands out task ids in the same order, so the listing is
    /// newest first by this time too.
    #[serde(default, deserialize_with = "lenient_time", serialize_with = "rfc3339")]
    pub created_at: Option<Timestamp>,
    /// When the task started (Forgejo's `run_started_at` is the task's start, despite its name).
    #[serde(default, deserialize_with = "lenient_time", serialize_with = "rfc3339")]
    pub run_started_at: Option<Timestamp>,
    /// When the task last changed: at or after its stop, and later again when Forgejo
    /// archives its logs, so near the stop only shortly after it. Forgejo gives no stop time.
    #[serde(default, deserialize_with = "lenient_time", serialize_with = "rfc3339")]
    pub updated_at: Option<Timestamp>,
}

/// The statuses of a task that has ended, as Forgejo 15+ filters them (`status=`).
pub(crate) const FINISHED_STATUSES: [&str; 4] = ["success", "failure", "cancelled", "skipped"];

impl ActionTask {
    /// Whether the task has ended: `success`, `failure`, `cancelled` or `skipped`.
    pub fn is_finished(&self) -> bool {
        FINISHED_STATUSES.contains(&self.status.as_str())
    }
}

/// What [`crate::Client::finished_tasks`] learned of the task ids it was given.
///
/// An id in neither list has no finished task in the repository's listing: the task still
/// runs, belongs to another repository, was deleted with its run, or never existed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FinishedTasks {
    /// The finished tasks among those asked for, newest (highest id) first.
    pub tasks: Vec<ActionTask>,
    /// Ids asked for that lie further down the listing than the pages read (the page bound, or
    /// a server that ignores `page`): nothing is known of them. Lowest first.
    pub not_reached: Vec<i64>,
}

/// What [`crate::Client::finished_tasks_since`] read: a repository's finished tasks created at
/// or after a time, and how far down that is all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentTasks {
    /// The time asked for, to the whole second (Forgejo keeps no finer times).
    pub since: Timestamp,
    /// The finished tasks created at or after `since`, newest (highest id) first.
    pub tasks: Vec<ActionTask>,
    /// `None` when `tasks` holds every finished task created at or after `since`: the listing
    /// was read down to an older task, or to its end. Otherwise the page bound (or a server
    /// that ignores `page`) stopped the reading at tasks created at this time: those created
    /// later are all in `tasks`, those created then or earlier may be missing.
    pub not_reached: Option<Timestamp>,
}

impl RecentTasks {
    /// Whether `tasks` holds every finished task created at or after `time` (to the second):
    /// `time` is not before `since`, and the reading got further down than it.
    pub fn covers(&self, time: Timestamp) -> bool {
        let second = time.as_second();
        second >= self.since.as_second()
            && self
                .not_reached
                .is_none_or(|reached| second > reached.as_second())
    }
}

/// The wire shape of one page: `{"workflow_runs": [...], "total_count": N}` (the key really
/// is `workflow_runs`, and the total is in the body, not in a header).
#[derive(Deserialize)]
pub(crate) struct TasksPageWire {
    #[serde(default, deserialize_with = "null_as_default")]
    pub workflow_runs: Vec<ActionTask>,
    #[serde(default)]
    pub total_count: Option<i64>,
}

/// Reads an RFC 3339 time; absent, `null`, unreadable, or at or before the Unix epoch (Go's
/// zero time, or a zero timestamp) reads as `None`.
fn lenient_time<'de, D>(deserializer: D) -> Result<Option<Timestamp>, D::Error>
where
    D: Deserializer<'de>,
{
    let text = Option::<String>::deserialize(deserializer)?;
    Ok(text
        .and_then(|text| text.parse::<Timestamp>().ok())
        .filter(|time| time.as_second() > 0))
}

/// Writes a time as Forgejo does (RFC 3339), `None` as `null`.
fn rfc3339<S>(time: &Option<Timestamp>, serializer: S) -> Result<S::Ok, S::Error>
where
    S: Serializer,
{
    match time {
        Some(time) => serializer.serialize_str(&time.to_string()),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_reads_forgejos_shape() {
        let json = serde_json::json!({
            "id": 9133,
            "name": "test (ubuntu)",
            "head_branch": "main",
            "head_sha": "5f1c0e2a",
            "run_number": 42,
            "event": "push",
            "display_title": "Fix the build",
            "status": "failure",
            "workflow_id": "ci.yml",
            "url": "https://code.example.com/acme/app/actions/runs/42",
            "created_at": "2025-01-02T03:04:05+01:00",
            "updated_at": "2025-01-02T03:09:10+01:00",
            "run_started_at": "2025-01-02T03:04:06+01:00",
        });
        let task: ActionTask = serde_json::from_value(json).unwrap();
        assert_eq!(task.id, 9133);
        assert_eq!(
            (task.name.as_str(), task.status.as_str()),
            ("test (ubuntu)", "failure")
        );
        assert_eq!((task.run_number, task.head_sha.as_str()), (42, "5f1c0e2a"));
        assert!(task.is_finished());
        let started = task.run_started_at.unwrap();
        assert_eq!(started.to_string(), "2025-01-02T02:04:06Z");
        assert_eq!(task.created_at.unwrap().to_string(), "2025-01-02T02:04:05Z");
        assert_eq!(
            task.updated_at.unwrap().as_second() - started.as_second(),
            304
        );
        let back: ActionTask =
            serde_json::from_value(serde_json::to_value(&task).unwrap()).unwrap();
        assert_eq!(back, task);
    }

    #[test]
    fn odd_or_missing_times_and_fields_read_as_none_or_default() {
        let task: ActionTask = serde_json::from_str(
            r#"{"id":1,"status":"running","created_at":null,"run_started_at":"1970-01-01T00:00:00Z","updated_at":"yesterday"}"#,
        )
        .unwrap();
        assert_eq!(
            (task.created_at, task.run_started_at, task.updated_at),
            (None, None, None)
        );
        assert_eq!((task.name.as_str(), task.run_number), ("", 0));
        assert!(!task.is_finished());
        let zero: ActionTask = serde_json::from_str(
            r#"{"id":2,"status":"success","updated_at":"0001-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(zero.updated_at, None);
        assert!(
            serde_json::from_str::<ActionTask>(r#"{"id":3}"#).is_err(),
            "no status"
        );
    }

    #[test]
    fn only_results_are_finished() {
        let task = |status: &str| ActionTask {
            id: 1,
            name: String::new(),
            status: status.into(),
            run_number: 0,
            head_sha: String::new(),
            created_at: None,
            run_started_at: None,
            updated_at: None,
        };
        for status in ["success", "failure", "cancelled", "skipped"] {
            assert!(task(status).is_finished(), "{status}");
        }
        for status in ["unknown", "waiting", "running", "blocked", ""] {
            assert!(!task(status).is_finished(), "{status}");
        }
    }

    #[test]
    fn a_page_reads_null_runs_and_a_missing_total() {
        let page: TasksPageWire =
            serde_json::from_str(r#"{"workflow_runs":null,"total_count":0}"#).unwrap();
        assert!(page.workflow_runs.is_empty());
        assert_eq!(page.total_count, Some(0));
        let page: TasksPageWire = serde_json::from_str(r#"{"workflow_runs":[]}"#).unwrap();
        assert_eq!(page.total_count, None);
    }
}
