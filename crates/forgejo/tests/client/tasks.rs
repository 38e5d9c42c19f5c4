//! Learning finished jobs' results from a repository's tasks (`…/actions/tasks`), by task id
//! and by the time they were created: across pages, the same on Forgejo 14 (no status
//! filter) as on 15, absent ids, tasks before the time, the errors that name the repository
//! and the token scope, and the page bound.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use forgejo::{ActionTask, Client, ClientOptions, Error, FinishedTasks};
use forgejo_stand_in::{Fault, StandIn, StandInConfig, StandInJob, Times};
use jiff::Timestamp;

use crate::{TOKEN, V14, V15, options, start, start_with};

const TASKS: &str = "/api/v1/repos/acme/app/actions/tasks";

/// The status filter the client sends to Forgejo 15+.
const FINISHED_FILTER: &str = "status=success&status=failure&status=cancelled&status=skipped";

/// One job per status in `repository`, each taken by a runner and, unless `running`, ended
/// so; returns their task ids, oldest first.
fn seed(forgejo: &StandIn, repository: &str, statuses: &[&str]) -> Vec<i64> {
    statuses
        .iter()
        .enumerate()
        .map(|(i, status)| {
            let job = forgejo.add_job(StandInJob::new(
                repository,
                &format!("job {i}"),
                &["docker"],
            ));
            assert!(forgejo.take_job(job.id, 99));
            if *status != "running" {
                assert!(forgejo.finish_job(job.id, status));
            }
            forgejo.job(job.id).unwrap().task_id
        })
        .collect()
}

/// `n` statuses cycling through the results, with every fifth task still running.
fn mixed(n: usize) -> Vec<&'static str> {
    let cycle = ["success", "failure", "cancelled", "skipped", "running"];
    (0..n).map(|i| cycle[i % cycle.len()]).collect()
}

/// (id, name, status) of each task found, for comparing answers across stand-ins.
fn results(tasks: &[ActionTask]) -> Vec<(i64, String, String)> {
    tasks
        .iter()
        .map(|t| (t.id, t.name.clone(), t.status.clone()))
        .collect()
}

/// The queries of the requests to the task listing.
fn task_queries(forgejo: &StandIn) -> Vec<String> {
    forgejo
        .requests()
        .into_iter()
        .filter(|r| r.path == TASKS)
        .map(|r| r.query.unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn results_of_finished_tasks_come_from_two_pages() {
    let endpoints = Arc::new(Mutex::new(Vec::new()));
    let seen = endpoints.clone();
    let observed = ClientOptions {
        observer: Some(Arc::new(move |outcome| {
            seen.lock().unwrap().push(outcome.endpoint);
        })),
        ..options()
    };
    let (forgejo, client) = start_with(StandInConfig::with_token(V15, TOKEN), observed);
    client.version().await.unwrap();
    // 56 finished tasks: the 50 newest on the first page.
    let statuses = mixed(70);
    let ids = seed(&forgejo, "acme/app", &statuses);
    // Two on the second page (the oldest), two on the first, one still running.
    let asked = [ids[0], ids[1], ids[68], ids[67], ids[4]];

    let found = client.finished_tasks("acme", "app", &asked).await.unwrap();

    let expected: Vec<(i64, String, String)> = [68, 67, 1, 0]
        .into_iter()
        .map(|i| (ids[i], format!("job {i}"), statuses[i].to_owned()))
        .collect();
    assert_eq!(
        results(&found.tasks),
        expected,
        "newest first, the running one left out"
    );
    assert!(found.not_reached.is_empty());
    assert!(
        found.tasks.iter().all(|t| t.created_at.is_some()
            && t.run_started_at.is_some()
            && t.updated_at.is_some())
    );
    assert_eq!(
        task_queries(&forgejo),
        [
            format!("page=1&limit=50&{FINISHED_FILTER}"),
            format!("page=2&limit=50&{FINISHED_FILTER}"),
        ]
    );
    assert_eq!(
        *endpoints.lock().unwrap(),
        ["version", "list_tasks", "list_tasks"]
    );
}

#[tokio::test]
async fn recent_results_cost_one_request() {
    let (forgejo, client) = start(V15);
    client.version().await.unwrap();
    let ids = seed(&forgejo, "acme/app", &mixed(120));

    let found = client
        .finished_tasks("acme", "app", &[ids[118], ids[100]])
        .await
        .unwrap();

    assert_eq!(found.tasks.len(), 2);
    assert_eq!(
        task_queries(&forgejo).len(),
        1,
        "both are on the first page"
    );
}

/// Runs the same mixed history on `version` and asks for some of its tasks.
async fn answer_on(version: &str, ask_version_first: bool) -> (FinishedTasks, Vec<String>) {
    let (forgejo, client) = start(version);
    if ask_version_first {
        client.version().await.unwrap();
    }
    let ids = seed(&forgejo, "acme/app", &mixed(70));
    seed(&forgejo, "acme/lib", &mixed(5));
    let asked: Vec<i64> = [0, 3, 4, 9, 12, 40, 65, 69]
        .iter()
        .map(|i| ids[*i])
        .collect();
    let found = client.finished_tasks("acme", "app", &asked).await.unwrap();
    (found, task_queries(&forgejo))
}

#[tokio::test]
async fn v14_ignores_the_status_filter_and_gives_the_same_answer_as_v15() {
    let (v15, v15_queries) = answer_on(V15, true).await;
    let (v14, v14_queries) = answer_on(V14, true).await;
    let (unknown, unknown_queries) = answer_on(V15, false).await;

    assert_eq!(
        results(&v15.tasks).len(),
        5,
        "the running ones (4, 9, 69) are left out"
    );
    assert_eq!(results(&v14.tasks), results(&v15.tasks));
    assert_eq!(results(&unknown.tasks), results(&v15.tasks));
    assert!(v15_queries.iter().all(|q| q.ends_with(FINISHED_FILTER)));
    assert!(v14_queries.iter().all(|q| !q.contains("status")));
    assert!(
        unknown_queries.iter().all(|q| !q.contains("status")),
        "without a version seen, no filter is sent"
    );
    assert_eq!(v15_queries.len(), 2);
    assert_eq!(v14_queries.len(), 2);
}

#[tokio::test]
async fn a_task_id_that_is_not_there_is_simply_absent() {
    let (forgejo, client) = start(V15);
    client.version().await.unwrap();
    let elsewhere = seed(&forgejo, "acme/lib", &["success"]);
    let ids = seed(&forgejo, "acme/app", &["success", "running", "failure"]);

    let asked = [elsewhere[0], ids[0], ids[1], ids[2], 10_000, 0, -1];
    let found = client.finished_tasks("acme", "app", &asked).await.unwrap();

    let found_ids: Vec<i64> = found.tasks.iter().map(|t| t.id).collect();
    assert_eq!(found_ids, [ids[2], ids[0]]);
    assert!(
        found.not_reached.is_empty(),
        "the listing was read to its end"
    );
    assert_eq!(task_queries(&forgejo).len(), 1);

    let none = client.finished_tasks("acme", "app", &[0]).await.unwrap();
    assert_eq!(none, FinishedTasks::default());
    assert_eq!(
        task_queries(&forgejo).len(),
        1,
        "nothing asked, nothing sent"
    );
}

#[tokio::test]
async fn an_unknown_repository_or_a_missing_scope_names_the_repository_and_read_repository() {
    let config = StandInConfig {
        owners: Some(vec!["acme".into()]),
        read_only_tokens: vec![TOKEN.into()],
        ..StandInConfig::with_token(V15, "another-token")
    };
    let (forgejo, client) = start_with(config, options());
    let ids = seed(&forgejo, "acme/app", &["success"]);
    let read = client.finished_tasks("acme", "app", &ids).await.unwrap();
    assert_eq!(read.tasks.len(), 1, "a read-only token may read tasks");

    forgejo.clear_requests();
    let missing = client
        .finished_tasks("acne", "app", &ids)
        .await
        .unwrap_err();
    forgejo.inject_fault(TASKS, Fault::Status(403), Times::Once);
    let denied = client
        .finished_tasks("acme", "app", &ids)
        .await
        .unwrap_err();

    assert!(matches!(missing, Error::NotFound { .. }), "{missing:?}");
    assert!(matches!(denied, Error::Forbidden { .. }), "{denied:?}");
    for (err, path) in [
        (&missing, "/api/v1/repos/acne/app/actions/tasks"),
        (&denied, TASKS),
    ] {
        let text = err.to_string();
        assert!(text.contains(path), "{text}");
        assert!(text.contains("read:repository"), "{text}");
        assert!(!text.contains(TOKEN), "{text}");
    }
    assert!(denied.to_string().contains("Actions"), "{denied}");
    assert_eq!(forgejo.requests().len(), 2, "neither is retried");
}

#[tokio::test]
async fn the_page_bound_stops_the_search_and_reports_what_was_not_reached() {
    let config = StandInConfig {
        max_page_size: 2,
        ..StandInConfig::with_token(V15, TOKEN)
    };
    let (forgejo, client) = start_with(config, options());
    client.version().await.unwrap();
    let ids = seed(&forgejo, "acme/app", &["success"; 30]);

    let found = client
        .finished_tasks("acme", "app", &[ids[0], ids[9], ids[29]])
        .await
        .unwrap();

    let pages = Client::MAX_TASK_PAGES as usize;
    assert_eq!(task_queries(&forgejo).len(), pages);
    let found_ids: Vec<i64> = found.tasks.iter().map(|t| t.id).collect();
    assert_eq!(found_ids, [ids[29]]);
    assert_eq!(
        found.not_reached,
        [ids[0], ids[9]],
        "{pages} pages of 2 read down to task {}",
        ids[30 - 2 * pages]
    );
}

#[tokio::test]
async fn a_server_that_ignores_page_stops_at_the_first_repeat() {
    let config = StandInConfig {
        max_page_size: 2,
        ..StandInConfig::with_token(V15, TOKEN)
    };
    let (forgejo, client) = start_with(config, options());
    let ids = seed(&forgejo, "acme/app", &["failure"; 6]);
    forgejo.inject_fault(TASKS, Fault::IgnorePage, Times::Always);

    let found = client
        .finished_tasks("acme", "app", &[ids[0], ids[5]])
        .await
        .unwrap();

    assert_eq!(found.tasks.len(), 1);
    assert_eq!(found.not_reached, [ids[0]]);
    assert_eq!(task_queries(&forgejo).len(), 2);
}

/// Tasks older than the time asked for are put this far back.
const HOUR: Duration = Duration::from_secs(3_600);

/// Seeds `old` in `acme/app` an hour back, then `new` now; returns the time taken between
/// them (as the operator notes when it first sees a job waiting) and the new task ids,
/// oldest first.
fn history(forgejo: &StandIn, old: &[&str], new: &[&str]) -> (Timestamp, Vec<i64>) {
    seed(forgejo, "acme/app", old);
    forgejo.age_tasks(HOUR);
    let since = Timestamp::now();
    (since, seed(forgejo, "acme/app", new))
}

/// (id, name, status) of the finished ones among `ids` seeded with `statuses`, newest first.
fn finished(ids: &[i64], statuses: &[&str]) -> Vec<(i64, String, String)> {
    let mut all: Vec<(i64, String, String)> = ids
        .iter()
        .zip(statuses)
        .enumerate()
        .filter(|(_, (_, status))| **status != "running")
        .map(|(i, (id, status))| (*id, format!("job {i}"), (*status).to_owned()))
        .collect();
    all.reverse();
    all
}

#[tokio::test]
async fn finished_tasks_since_a_time_come_from_two_pages() {
    let endpoints = Arc::new(Mutex::new(Vec::new()));
    let seen = endpoints.clone();
    let observed = ClientOptions {
        observer: Some(Arc::new(move |outcome| {
            seen.lock().unwrap().push(outcome.endpoint);
        })),
        ..options()
    };
    let (forgejo, client) = start_with(StandInConfig::with_token(V15, TOKEN), observed);
    client.version().await.unwrap();
    // 56 finished since the time: 50 on the first page, 6 on the second, then older ones.
    let statuses = mixed(70);
    let (since, ids) = history(&forgejo, &mixed(40), &statuses);
    seed(&forgejo, "acme/lib", &mixed(5));

    let found = client
        .finished_tasks_since("acme", "app", since)
        .await
        .unwrap();

    assert_eq!(results(&found.tasks), finished(&ids, &statuses));
    assert_eq!(found.not_reached, None);
    assert!(found.covers(since));
    assert!(
        found
            .tasks
            .iter()
            .all(|t| t.created_at.unwrap() >= found.since)
    );
    assert_eq!(found.since.as_second(), since.as_second());
    assert_eq!(
        task_queries(&forgejo),
        [
            format!("page=1&limit=50&{FINISHED_FILTER}"),
            format!("page=2&limit=50&{FINISHED_FILTER}"),
        ]
    );
    assert_eq!(
        *endpoints.lock().unwrap(),
        ["version", "list_tasks", "list_tasks"]
    );
}

#[tokio::test]
async fn older_tasks_are_left_out_and_the_first_page_reaching_before_the_time_is_the_last() {
    let (forgejo, client) = start(V15);
    client.version().await.unwrap();
    // Four pages of tasks; the first holds exactly those since the time.
    let (since, ids) = history(&forgejo, &["success"; 150], &["failure"; 50]);

    let found = client
        .finished_tasks_since("acme", "app", since)
        .await
        .unwrap();

    assert_eq!(results(&found.tasks), finished(&ids, &["failure"; 50]));
    assert_eq!(found.not_reached, None);
    assert_eq!(
        task_queries(&forgejo).len(),
        2,
        "page 2 reaches an hour back"
    );

    forgejo.clear_requests();
    let (later, new) = history(&forgejo, &[], &["skipped", "running"]);
    let found = client
        .finished_tasks_since("acme", "app", later)
        .await
        .unwrap();
    let found_ids: Vec<i64> = found.tasks.iter().map(|t| t.id).collect();
    assert_eq!(found_ids, [new[0]], "the running one is left out");
    assert_eq!(task_queries(&forgejo).len(), 1);
    let none = client
        .finished_tasks_since("acme", "app", Timestamp::now() + HOUR)
        .await
        .unwrap();
    assert!(none.tasks.is_empty() && none.not_reached.is_none());
}

/// Runs the same history on `version` and asks for the tasks since the time between.
async fn since_on(
    version: &str,
    ask_version_first: bool,
) -> (Vec<(i64, String, String)>, Vec<String>) {
    let (forgejo, client) = start(version);
    if ask_version_first {
        client.version().await.unwrap();
    }
    let (since, _) = history(&forgejo, &mixed(60), &mixed(70));
    seed(&forgejo, "acme/lib", &mixed(5));
    let found = client
        .finished_tasks_since("acme", "app", since)
        .await
        .unwrap();
    assert_eq!(found.not_reached, None, "{version}");
    (results(&found.tasks), task_queries(&forgejo))
}

#[tokio::test]
async fn tasks_since_a_time_are_the_same_on_v14_as_on_v15() {
    let (v15, v15_queries) = since_on(V15, true).await;
    let (v14, v14_queries) = since_on(V14, true).await;
    let (unknown, unknown_queries) = since_on(V15, false).await;

    assert_eq!(v15.len(), 56, "the running ones are left out");
    assert_eq!(v14, v15);
    assert_eq!(unknown, v15);
    assert!(v15_queries.iter().all(|q| q.ends_with(FINISHED_FILTER)));
    assert!(v14_queries.iter().all(|q| !q.contains("status")));
    assert!(unknown_queries.iter().all(|q| !q.contains("status")));
    assert_eq!((v15_queries.len(), v14_queries.len()), (2, 2));
}

#[tokio::test]
async fn the_page_bound_stops_tasks_since_a_time_and_says_how_far_they_go() {
    let config = StandInConfig {
        max_page_size: 2,
        owners: Some(vec!["acme".into()]),
        ..StandInConfig::with_token(V15, TOKEN)
    };
    let (forgejo, client) = start_with(config, options());
    client.version().await.unwrap();
    let (since, ids) = history(&forgejo, &["success"; 3], &["success"; 30]);

    let found = client
        .finished_tasks_since("acme", "app", since)
        .await
        .unwrap();

    let pages = Client::MAX_TASK_PAGES as usize;
    assert_eq!(task_queries(&forgejo).len(), pages);
    let found_ids: Vec<i64> = found.tasks.iter().map(|t| t.id).collect();
    let newest: Vec<i64> = ids.iter().rev().take(2 * pages).copied().collect();
    assert_eq!(found_ids, newest);
    let oldest_read = found.tasks.last().and_then(|t| t.created_at);
    assert_eq!(found.not_reached, oldest_read);
    assert!(!found.covers(since), "tasks since then may be missing");

    let missing = client
        .finished_tasks_since("acne", "app", since)
        .await
        .unwrap_err();
    forgejo.inject_fault(TASKS, Fault::Status(403), Times::Once);
    let denied = client
        .finished_tasks_since("acme", "app", since)
        .await
        .unwrap_err();
    assert!(matches!(missing, Error::NotFound { .. }), "{missing:?}");
    assert!(matches!(denied, Error::Forbidden { .. }), "{denied:?}");
    for (err, path) in [
        (missing, "/api/v1/repos/acne/app/actions/tasks"),
        (denied, TASKS),
    ] {
        let text = err.to_string();
        assert!(
            text.contains(path) && text.contains("read:repository"),
            "{text}"
        );
    }
}
