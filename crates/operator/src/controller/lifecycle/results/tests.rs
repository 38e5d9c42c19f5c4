use super::*;

fn task(id: i64, name: &str, created: &str) -> ActionTask {
    let json = serde_json::json!({
        "id": id, "name": name, "status": "success",
        "created_at": created, "run_started_at": created, "updated_at": created,
    });
    serde_json::from_value(json).unwrap_or_else(|e| panic!("a task: {e}"))
}

fn job(task_id: i64, name: &str, since: &str) -> AwaitingResult {
    AwaitingResult {
        origin: JobOrigin {
            repo_id: 7,
            runs_on: "linux".into(),
        },
        task_id,
        name: name.into(),
        since: since.parse().unwrap_or_else(|e| panic!("a time: {e}")),
        waiting_since: None,
        tries: 0,
    }
}

fn matched_ids(matched: &[(AwaitingResult, Option<ActionTask>)]) -> Vec<(String, Option<i64>)> {
    matched
        .iter()
        .map(|(job, task)| (job.name.clone(), task.as_ref().map(|t| t.id)))
        .collect()
}

#[test]
fn a_known_task_id_wins_and_names_take_the_oldest_task_created_since_their_sighting() {
    let claimed = ClaimedTasks::default();
    // Newest first, as Forgejo lists them.
    let tasks = [
        task(14, "build", "2026-12-07T10:05:00Z"),
        task(13, "build", "2026-12-07T10:04:00Z"),
        task(12, "test", "2026-12-07T10:03:00Z"),
        task(11, "build", "2026-12-07T09:00:00Z"),
    ];
    let jobs = vec![
        job(0, "build", "2026-12-07T10:03:30Z"),
        job(13, "build", "2026-12-07T10:03:50Z"),
        job(0, "test", "2026-12-07T10:02:30Z"),
    ];
    let matched = claimed.match_tasks("https://f", 7, jobs, &tasks);
    assert_eq!(
        matched_ids(&matched),
        vec![
            ("build".into(), Some(13)),
            ("build".into(), Some(14)),
            ("test".into(), Some(12)),
        ]
    );
}

#[test]
fn a_claimed_task_is_not_counted_again_and_an_old_one_is_not_taken() {
    let claimed = ClaimedTasks::default();
    let tasks = [
        task(21, "build", "2026-12-07T10:05:00Z"),
        task(20, "build", "2026-12-07T08:00:00Z"),
    ];
    let first = claimed.match_tasks(
        "https://f",
        7,
        vec![job(0, "build", "2026-12-07T10:00:00Z")],
        &tasks,
    );
    assert_eq!(matched_ids(&first), vec![("build".into(), Some(21))]);
    // A second job of that name: task 21 is taken, task 20 is older than its sighting.
    let second = claimed.match_tasks(
        "https://f",
        7,
        vec![job(0, "build", "2026-12-07T10:01:00Z")],
        &tasks,
    );
    assert_eq!(matched_ids(&second), vec![("build".into(), None)]);
    // Another repository's claims are its own.
    let other = claimed.match_tasks(
        "https://f",
        8,
        vec![job(0, "build", "2026-12-07T10:01:00Z")],
        &tasks,
    );
    assert_eq!(matched_ids(&other), vec![("build".into(), Some(21))]);
}

#[test]
fn a_task_dated_a_little_before_the_sighting_still_matches() {
    let claimed = ClaimedTasks::default();
    let tasks = [task(30, "lint", "2026-12-07T09:59:30Z")];
    let matched = claimed.match_tasks(
        "https://f",
        7,
        vec![job(0, "lint", "2026-12-07T10:00:00Z")],
        &tasks,
    );
    assert_eq!(matched_ids(&matched), vec![("lint".into(), Some(30))]);
}
