//! `GET …/repos/{owner}/{repo}/actions/tasks` (Forgejo 11+): a repository's tasks, newest
//! first (`id DESC`, fixed), paged, as `{"workflow_runs": [...], "total_count": N}`. From
//! Forgejo 15, repeated `status=` parameters keep only those statuses, and an unknown one is
//! a 400; 11–14 ignore `status`.

use super::endpoints::page_and_limit;
use super::*;

/// The task statuses Forgejo knows, the only ones `status=` accepts (15+).
const STATUSES: [&str; 8] = [
    "unknown",
    "waiting",
    "running",
    "success",
    "failure",
    "cancelled",
    "skipped",
    "blocked",
];

/// The repository whose tasks a path names (nothing remains after `…/tasks`).
pub(super) fn parse_tasks_path(segments: &[String]) -> Option<(Scope, &[String])> {
    let strs: Vec<&str> = segments.iter().map(String::as_str).collect();
    match strs.as_slice() {
        ["repos", owner, repo, "actions", "tasks"] => Some((
            Scope::Repository {
                owner: (*owner).to_owned(),
                repo: (*repo).to_owned(),
            },
            &segments[5..],
        )),
        _ => None,
    }
}

/// Serves a tasks request whose token and owner were checked.
pub(super) fn serve(
    state: &mut State,
    method: &Method,
    scope: &Scope,
    query: Option<&str>,
) -> Reply {
    // The facts recorded start at 11; older versions are taken to lack it, like job listing.
    if state.major < 11 {
        return not_found(state);
    }
    if method != Method::GET {
        return method_not_allowed(state);
    }
    let Scope::Repository { owner, repo } = scope else {
        return not_found(state);
    };
    let statuses = match status_filter(state, query) {
        Ok(statuses) => statuses,
        Err(unknown) => {
            let message = format!("invalid status {unknown:?}");
            return api_error(state, StatusCode::BAD_REQUEST, &message);
        }
    };
    let (page, limit) = page_and_limit(state, query);
    let repo_id = state.repo_id(owner, repo);
    let tasks = state.repository_tasks(repo_id, statuses.as_deref());
    let total = tasks.len();
    let runs: Vec<Value> = tasks
        .into_iter()
        .skip((page - 1) * limit)
        .take(limit)
        .map(|task| task.listing_json(&state.base_url))
        .collect();
    Reply::json(
        StatusCode::OK,
        json!({ "workflow_runs": runs, "total_count": total }),
    )
}

/// The `status=` values to keep (15+; `None` before, or when none is given), or the first
/// unknown one.
fn status_filter(state: &State, query: Option<&str>) -> Result<Option<Vec<String>>, String> {
    if state.major < 15 {
        return Ok(None);
    }
    let mut statuses = Vec::new();
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if key != "status" {
            continue;
        }
        if !STATUSES.contains(&value.as_ref()) {
            return Err(value.into_owned());
        }
        statuses.push(value.into_owned());
    }
    Ok(Some(statuses).filter(|s| !s.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::super::super::webhooks::Webhooks;
    use super::super::super::{StandInConfig, StandInJob};
    use super::*;

    const PATH: &str = "/api/v1/repos/acme/app/actions/tasks";

    /// A state behaving as `version`, with pages of at most `max_page_size`.
    fn state(version: &str, max_page_size: usize) -> State {
        let config = StandInConfig {
            max_page_size,
            ..StandInConfig::with_token(version, "t")
        };
        let (webhooks, _dispatcher) = Webhooks::new();
        State::new(config, "http://forgejo.test".into(), webhooks)
    }

    /// Adds a job to `repository`, lets a runner take it and, unless `running`, end it so.
    fn task(state: &mut State, repository: &str, status: &str) -> i64 {
        let job = state.add_job(StandInJob::new(repository, "build", &["docker"]));
        assert!(state.take_job(job.id, 1));
        if status != "running" {
            assert!(state.finish_job(job.id, status));
        }
        state.jobs[&job.id].task_id
    }

    fn get(state: &mut State, query: &str) -> (StatusCode, Value) {
        let reply = route(
            state,
            &Method::GET,
            PATH,
            Some(query),
            Access::ReadOnly,
            b"",
        );
        (reply.status, reply.json.unwrap_or_default())
    }

    /// The ids of a listing's `workflow_runs`, and its `total_count`.
    fn ids(listing: &Value) -> (Vec<i64>, i64) {
        let runs = listing["workflow_runs"].as_array().unwrap();
        let ids = runs.iter().map(|t| t["id"].as_i64().unwrap()).collect();
        (ids, listing["total_count"].as_i64().unwrap())
    }

    #[test]
    fn tasks_are_listed_per_repository_newest_first_and_paged() {
        let mut state = state("15.0.3+gitea-1.22.0", 3);
        let mut app = Vec::new();
        for status in ["success", "failure", "running", "cancelled", "skipped"] {
            app.push(task(&mut state, "acme/app", status));
            task(&mut state, "acme/lib", "success");
        }
        app.reverse();

        assert_eq!(
            ids(&get(&mut state, "page=1&limit=2").1),
            (app[..2].to_vec(), 5)
        );
        assert_eq!(
            ids(&get(&mut state, "page=3&limit=2").1),
            (app[4..].to_vec(), 5)
        );
        assert_eq!(ids(&get(&mut state, "page=4&limit=2").1), (vec![], 5));
        assert_eq!(
            ids(&get(&mut state, "limit=50").1),
            (app[..3].to_vec(), 5),
            "page 1 unless given; limit capped at MAX_RESPONSE_ITEMS"
        );
        let (status, first) = get(&mut state, "page=0");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ids(&first).0.len(), 3);
        let other = route(
            &mut state,
            &Method::GET,
            "/api/v1/repos/acme/none/actions/tasks",
            None,
            Access::ReadOnly,
            b"",
        );
        assert_eq!(other.json.unwrap()["workflow_runs"], json!([]));
    }

    #[test]
    fn a_task_reads_as_forgejos_action_task() {
        let mut state = state("15.0.3+gitea-1.22.0", 50);
        let id = task(&mut state, "acme/app", "failure");

        let (_, listing) = get(&mut state, "");
        let run = &listing["workflow_runs"][0];
        assert_eq!(run["id"], id);
        assert_eq!(
            (run["name"].as_str(), run["status"].as_str()),
            (Some("build"), Some("failure"))
        );
        for key in [
            "head_branch",
            "head_sha",
            "event",
            "display_title",
            "workflow_id",
            "url",
        ] {
            assert!(run[key].is_string(), "{key}");
        }
        assert!(run["run_number"].as_i64().unwrap() > 0);
        let started = run["run_started_at"].as_str().unwrap();
        assert!(
            started.ends_with('Z') && !started.contains('.'),
            "whole seconds: {started}"
        );
        assert!(run["updated_at"].as_str().unwrap() >= started);
        assert_eq!(
            run["created_at"].as_str(),
            Some(started),
            "created when a runner took it, and started then"
        );
        let parsed: forgejo::ActionTask = serde_json::from_value(run.clone()).unwrap();
        assert_eq!(parsed, state.tasks[&id].to_api());
    }

    #[test]
    fn aged_tasks_read_as_older_than_those_taken_after() {
        let mut state = state("15.0.3+gitea-1.22.0", 50);
        let old = task(&mut state, "acme/app", "success");
        state.age_tasks(3_600);
        let new = task(&mut state, "acme/app", "success");

        let (_, listing) = get(&mut state, "");
        let time = |i: usize, key: &str| {
            let text = listing["workflow_runs"][i][key].as_str().unwrap();
            text.parse::<jiff::Timestamp>().unwrap().as_second()
        };
        assert_eq!(ids(&listing).0, [new, old]);
        for key in ["created_at", "run_started_at", "updated_at"] {
            let age = time(0, key) - time(1, key);
            assert!((3_600..3_602).contains(&age), "{key}: {age}");
        }
    }

    #[test]
    fn v15_keeps_the_statuses_asked_for_and_refuses_unknown_ones() {
        let mut state = state("15.0.3+gitea-1.22.0", 50);
        let ok = task(&mut state, "acme/app", "success");
        task(&mut state, "acme/app", "running");
        let failed = task(&mut state, "acme/app", "failure");

        let (_, finished) = get(&mut state, "status=success&status=failure&limit=1");
        assert_eq!(
            ids(&finished),
            (vec![failed], 2),
            "the total counts the filtered tasks"
        );
        let (_, second) = get(&mut state, "status=success&status=failure&limit=1&page=2");
        assert_eq!(ids(&second), (vec![ok], 2));
        let (status, error) = get(&mut state, "status=success&status=done");
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(error["message"].as_str().unwrap().contains("done"));
    }

    #[test]
    fn before_v15_status_is_ignored_and_before_v11_there_is_no_listing() {
        for version in ["11.0.4+gitea-1.22.0", "14.0.1+gitea-1.22.0"] {
            let mut state = state(version, 50);
            task(&mut state, "acme/app", "success");
            task(&mut state, "acme/app", "running");
            let (status, listing) = get(&mut state, "status=success&status=done");
            assert_eq!(status, StatusCode::OK, "{version}");
            assert_eq!(ids(&listing).1, 2, "{version}");
        }
        let mut old = state("10.0.3+gitea-1.22.0", 50);
        assert_eq!(get(&mut old, "").0, StatusCode::NOT_FOUND);
        let mut state = state("15.0.3+gitea-1.22.0", 50);
        let post = route(&mut state, &Method::POST, PATH, None, Access::Full, b"");
        assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn a_task_follows_its_job_until_the_attempt_ends() {
        let mut state = state("15.0.3+gitea-1.22.0", 50);
        let job = state.add_job(StandInJob::new("acme/app", "build", &["docker"]));
        let waiting = state.add_job(StandInJob::new("acme/app", "lint", &["docker"]));
        assert!(state.set_job_status(waiting.id, "cancelled"));
        assert!(
            state.tasks.is_empty(),
            "a job cancelled while waiting never gets a task"
        );

        assert!(state.take_job(job.id, 1));
        let first = state.jobs[&job.id].task_id;
        assert_eq!(state.tasks[&first].status, "running");
        assert!(state.set_job_status(job.id, "cancelled"));
        assert_eq!(
            state.tasks[&first].status, "cancelled",
            "cancelled while running"
        );

        state.rerun_job(job.id);
        assert!(state.take_job(job.id, 1));
        let second = state.jobs[&job.id].task_id;
        assert!(state.finish_job(job.id, "success"));
        assert_ne!(first, second, "a new attempt, a new task");
        assert_eq!(
            state.tasks[&first].status, "cancelled",
            "the old result stays"
        );
        assert_eq!(state.tasks[&second].status, "success");
        assert_eq!(state.tasks[&second].name, "build");
    }
}
