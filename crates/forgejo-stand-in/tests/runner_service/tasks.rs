//! A repository's tasks as the runner service makes them: a fetch starts one with the task
//! id it hands out, the final `UpdateTask` gives it its result, and the task listing
//! (`…/actions/tasks`, read here through the client) shows it.

use forgejo_stand_in::StandInJob;
use runner_protocol::TaskResult;

use crate::{V15, declare, fetch_any, register, start, update_task};

/// Facts (docs/forgejo.md, "Learning a job's result"): a task exists for each job a runner
/// took, its id the one `FetchTask` handed out; its status follows the job, then the result
/// reported; a job cancelled while waiting never gets one, one cancelled while running ends
/// `cancelled`.
#[tokio::test]
async fn fetched_tasks_end_with_the_reported_results_and_are_listed() {
    let (forgejo, client) = start(V15);
    client.version().await.unwrap();
    let jobs: Vec<_> = ["pass", "fail", "stop", "never"]
        .into_iter()
        .map(|name| forgejo.add_job(StandInJob::new("acme/app", name, &["linux"])))
        .collect();
    assert!(forgejo.cancel_job(jobs[3].id));
    let creds = register(&client, "acme", "r", false).await;
    declare(&forgejo, &creds, &["linux"]).await;
    let mut tasks = Vec::new();
    for _ in 0..3 {
        tasks.push(fetch_any(&forgejo, &creds).await.unwrap().id);
    }
    assert!(fetch_any(&forgejo, &creds).await.is_none());
    let handed: Vec<i64> = forgejo.fetches().iter().filter_map(|f| f.task_id).collect();
    assert_eq!(handed, tasks);

    update_task(&forgejo, &creds, tasks[0], TaskResult::Success).await;
    update_task(&forgejo, &creds, tasks[1], TaskResult::Unspecified).await;
    let early = client.finished_tasks("acme", "app", &tasks).await.unwrap();
    assert_eq!(early.tasks.len(), 1, "only the first has ended");
    update_task(&forgejo, &creds, tasks[1], TaskResult::Failure).await;
    assert!(forgejo.cancel_job(jobs[2].id));
    update_task(&forgejo, &creds, tasks[2], TaskResult::Cancelled).await;

    let found = client.finished_tasks("acme", "app", &tasks).await.unwrap();

    let results: Vec<(i64, &str, &str)> = found
        .tasks
        .iter()
        .map(|t| (t.id, t.name.as_str(), t.status.as_str()))
        .collect();
    assert_eq!(
        results,
        [
            (tasks[2], "stop", "cancelled"),
            (tasks[1], "fail", "failure"),
            (tasks[0], "pass", "success"),
        ]
    );
    for task in &found.tasks {
        let started = task.run_started_at.expect("started when fetched");
        assert!(task.updated_at.expect("updated") >= started);
    }
    assert_eq!(
        forgejo.tasks().len(),
        3,
        "the job cancelled while waiting has none"
    );
    assert_eq!(
        forgejo.job(jobs[1].id).unwrap().task_id,
        tasks[1],
        "the jobs listing's task_id"
    );
}
