use super::*;

fn job(id: i64, status: &str, task_id: i64) -> ForgejoJob {
    ForgejoJob {
        id,
        attempt: Some(1),
        repo_id: 7,
        runs_on: vec!["linux".into(), "x64".into()],
        status: status.into(),
        task_id,
        name: format!("build-{id}"),
        ..ForgejoJob::default()
    }
}

fn observe(lifecycle: &mut JobLifecycle, jobs: &[ForgejoJob], at: Instant) -> Vec<JobEvent> {
    let listed: Vec<&ForgejoJob> = jobs.iter().collect();
    lifecycle.observe(&listed, at)
}

fn origin() -> JobOrigin {
    JobOrigin {
        repo_id: 7,
        runs_on: "linux,x64".into(),
    }
}

#[test]
fn a_job_seen_waiting_then_running_then_gone_is_taken_once_and_leaves_with_its_task() {
    let mut lifecycle = JobLifecycle::default();
    let t0 = Instant::now();
    let s = Duration::from_secs;
    assert!(observe(&mut lifecycle, &[job(1, "waiting", 0)], t0).is_empty());
    assert!(observe(&mut lifecycle, &[job(1, "waiting", 0)], t0 + s(10)).is_empty());
    assert_eq!(lifecycle.oldest_wait(t0 + s(15)), Some(s(15)));
    let taken = observe(&mut lifecycle, &[job(1, "running", 42)], t0 + s(20));
    assert_eq!(
        taken,
        vec![JobEvent::Taken {
            job: (1, 1),
            origin: origin(),
            waited: Some(s(20)),
        }]
    );
    assert_eq!(lifecycle.oldest_wait(t0 + s(25)), None);
    assert!(observe(&mut lifecycle, &[job(1, "running", 42)], t0 + s(30)).is_empty());
    let left = observe(&mut lifecycle, &[], t0 + s(40));
    assert_eq!(
        left,
        vec![JobEvent::Left {
            job: (1, 1),
            origin: origin(),
            task_id: 42,
            name: "build-1".into(),
            first_seen: t0,
            waiting_since: None,
        }]
    );
    assert!(lifecycle.is_empty());
}

#[test]
fn a_job_first_seen_running_is_taken_without_a_wait() {
    let mut lifecycle = JobLifecycle::default();
    let events = observe(&mut lifecycle, &[job(1, "running", 5)], Instant::now());
    assert_eq!(
        events,
        vec![JobEvent::Taken {
            job: (1, 1),
            origin: origin(),
            waited: None,
        }]
    );
}

#[test]
fn a_job_that_left_while_waiting_has_no_task() {
    let mut lifecycle = JobLifecycle::default();
    let t0 = Instant::now();
    observe(&mut lifecycle, &[job(1, "waiting", 0)], t0);
    let events = observe(&mut lifecycle, &[], t0 + Duration::from_secs(5));
    assert_eq!(
        events,
        vec![JobEvent::Left {
            job: (1, 1),
            origin: origin(),
            task_id: 0,
            name: "build-1".into(),
            first_seen: t0,
            waiting_since: Some(t0),
        }]
    );
}

#[test]
fn a_new_attempt_of_a_job_is_followed_on_its_own() {
    let mut lifecycle = JobLifecycle::default();
    let t0 = Instant::now();
    observe(&mut lifecycle, &[job(1, "running", 5)], t0);
    let mut second = job(1, "waiting", 0);
    second.attempt = Some(2);
    let events = observe(&mut lifecycle, &[second], t0 + Duration::from_secs(1));
    assert_eq!(
        events,
        vec![JobEvent::Left {
            job: (1, 1),
            origin: origin(),
            task_id: 5,
            name: "build-1".into(),
            first_seen: t0,
            waiting_since: None,
        }]
    );
    assert_eq!(lifecycle.len(), 1);
    assert_eq!(
        lifecycle.oldest_wait(t0 + Duration::from_secs(3)),
        Some(Duration::from_secs(2))
    );
}

#[test]
fn oldest_wait_is_the_longest_of_the_waiting_jobs() {
    let mut lifecycle = JobLifecycle::default();
    let t0 = Instant::now();
    observe(&mut lifecycle, &[job(1, "waiting", 0)], t0);
    observe(
        &mut lifecycle,
        &[job(1, "waiting", 0), job(2, "waiting", 0)],
        t0 + Duration::from_secs(4),
    );
    assert_eq!(
        lifecycle.oldest_wait(t0 + Duration::from_secs(6)),
        Some(Duration::from_secs(6))
    );
}
