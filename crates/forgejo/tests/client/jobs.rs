//! Listing jobs: paths per scope, the label filter, Forgejo's quirks per version.

use forgejo::{Error, Scope, it_runs_on};
use forgejo_stand_in::{Fault, StandInConfig, StandInJob, Times};

use crate::{TOKEN, V11, V13, V14, V15, options, paths, start, start_with, v};

fn org(name: &str) -> Scope {
    Scope::Organization(name.into())
}

fn repo(owner: &str, name: &str) -> Scope {
    Scope::Repository {
        owner: owner.into(),
        repo: name.into(),
    }
}

fn ids(jobs: &[forgejo::ActionRunJob]) -> Vec<i64> {
    jobs.iter().map(|j| j.id).collect()
}

#[tokio::test]
async fn each_scope_lists_jobs_from_its_own_path() {
    let (forgejo, client) = start(V15);
    forgejo.add_job(StandInJob::new("acme/app", "build", &["docker"]).with_id(1));
    forgejo.add_job(StandInJob::new("acme/lib", "test", &["docker"]).with_id(2));
    forgejo.add_job(StandInJob::new("other/tool", "lint", &["docker"]).with_id(3));
    forgejo.add_job(StandInJob::new("runner-admin/dotfiles", "check", &["docker"]).with_id(4));
    let docker = v(&["docker"]);

    let jobs = client
        .list_jobs(&repo("acme", "app"), Some(&docker))
        .await
        .unwrap();
    assert_eq!(ids(&jobs), [1]);
    let jobs = client.list_jobs(&org("acme"), Some(&docker)).await.unwrap();
    assert_eq!(ids(&jobs), [2, 1], "newest first");
    let jobs = client.list_jobs(&Scope::User, Some(&docker)).await.unwrap();
    assert_eq!(ids(&jobs), [4]);
    let jobs = client
        .list_jobs(&Scope::Instance, Some(&docker))
        .await
        .unwrap();
    assert_eq!(ids(&jobs), [4, 3, 2, 1]);
    // Once the client knows it talks to Forgejo 15, the instance uses the non-deprecated path.
    client.version().await.unwrap();
    let jobs = client
        .list_jobs(&Scope::Instance, Some(&docker))
        .await
        .unwrap();
    assert_eq!(jobs.len(), 4);

    assert_eq!(
        paths(&forgejo),
        [
            "/api/v1/repos/acme/app/actions/runners/jobs",
            "/api/v1/orgs/acme/actions/runners/jobs",
            "/api/v1/user/actions/runners/jobs",
            "/api/v1/admin/runners/jobs",
            "/api/v1/version",
            "/api/v1/admin/actions/runners/jobs",
        ]
    );
    assert!(forgejo.requests().iter().all(|r| r.token_matched));
}

#[tokio::test]
async fn the_request_log_tells_which_token_each_client_sent() {
    let config = StandInConfig {
        tokens: vec!["another-token".into(), TOKEN.into()],
        ..StandInConfig::default()
    };
    let (forgejo, client) = start_with(config, options());

    client.list_jobs(&org("acme"), None).await.unwrap();

    let requests = forgejo.requests();
    assert!(!requests.is_empty());
    assert!(
        requests.iter().all(|r| r.token_index == Some(1)),
        "{requests:?}"
    );
}

#[tokio::test]
async fn label_filter_is_sent_comma_separated_and_percent_encoded() {
    let (forgejo, client) = start(V15);
    let job = forgejo.add_job(StandInJob::new(
        "acme/app",
        "build",
        &["ubuntu 22.04", "ü&x=y"],
    ));
    let labels = v(&["docker", "ubuntu 22.04", "ü&x=y"]);

    let jobs = client.list_jobs(&org("acme"), Some(&labels)).await.unwrap();

    assert_eq!(ids(&jobs), [job.id]);
    let query = forgejo.requests()[0].query.clone().unwrap();
    assert_eq!(query, "labels=docker,ubuntu+22.04,%C3%BC%26x%3Dy");
}

#[tokio::test]
async fn no_label_filter_sends_no_labels_parameter_and_lists_everything_on_v14() {
    let (forgejo, client) = start(V14);
    forgejo.add_job(StandInJob::new("acme/app", "a", &["docker"]).with_id(1));
    forgejo.add_job(StandInJob::new("acme/app", "b", &["gpu", "docker"]).with_id(2));
    forgejo.add_job(StandInJob::new("acme/app", "c", &[]).with_id(3));

    let jobs = client.list_jobs(&org("acme"), None).await.unwrap();

    assert_eq!(ids(&jobs), [3, 2, 1]);
    assert_eq!(forgejo.requests()[0].query, None);
}

#[tokio::test]
async fn empty_label_filter_lists_only_jobs_without_labels_on_v14() {
    let (forgejo, client) = start(V14);
    forgejo.add_job(StandInJob::new("acme/app", "a", &["docker"]).with_id(1));
    forgejo.add_job(StandInJob::new("acme/app", "c", &[]).with_id(3));

    let jobs = client.list_jobs(&org("acme"), Some(&[])).await.unwrap();

    assert_eq!(ids(&jobs), [3]);
    assert_eq!(forgejo.requests()[0].query.as_deref(), Some("labels="));
}

#[tokio::test]
async fn label_filter_is_mandatory_before_v14() {
    for version in [V11, V13] {
        let (forgejo, client) = start(version);
        forgejo.add_job(StandInJob::new("acme/app", "a", &["docker"]).with_id(1));
        forgejo.add_job(StandInJob::new("acme/app", "c", &[]).with_id(2));

        let unfiltered = client.list_jobs(&org("acme"), None).await.unwrap();
        let filtered = client
            .list_jobs(&org("acme"), Some(&v(&["docker"])))
            .await
            .unwrap();

        assert!(
            unfiltered.is_empty(),
            "{version}: omitted labels match nothing"
        );
        assert_eq!(ids(&filtered), [1], "{version}");
    }
}

#[tokio::test]
async fn no_matching_job_reads_null_and_empty_array_as_an_empty_list() {
    let (forgejo, client) = start(V15);
    forgejo.add_job(StandInJob::new("acme/app", "a", &["gpu"]));

    let from_null = client
        .list_jobs(&org("acme"), Some(&v(&["docker"])))
        .await
        .unwrap();
    forgejo.inject_fault(
        "/api/v1/orgs/acme/",
        Fault::Body(200, "[]".into()),
        Times::Once,
    );
    let from_array = client
        .list_jobs(&org("acme"), Some(&v(&["docker"])))
        .await
        .unwrap();

    assert!(from_null.is_empty());
    assert!(from_array.is_empty());
}

#[tokio::test]
async fn waiting_and_running_jobs_are_both_listed_and_finished_ones_are_not() {
    let (forgejo, client) = start(V15);
    let waiting = forgejo.add_job(StandInJob::new("acme/app", "a", &["docker"]));
    let running = forgejo.add_job(StandInJob::new("acme/app", "b", &["docker"]));
    let done = forgejo.add_job(StandInJob::new("acme/app", "c", &["docker"]));
    forgejo.add_job(StandInJob::new("acme/app", "d", &["docker"]).with_status("blocked"));
    assert!(forgejo.take_job(running.id, 99));
    assert!(forgejo.set_job_status(done.id, "success"));

    let jobs = client
        .list_jobs(&org("acme"), Some(&v(&["docker"])))
        .await
        .unwrap();

    assert_eq!(ids(&jobs), [running.id, waiting.id]);
    let still_waiting: Vec<i64> = jobs
        .iter()
        .filter(|j| j.is_waiting())
        .map(|j| j.id)
        .collect();
    assert_eq!(still_waiting, [waiting.id]);
    assert!(jobs[0].task_id > 0, "a running job has a task");
    assert_eq!(jobs[1].task_id, 0);
}

#[tokio::test]
async fn labels_must_be_a_superset_of_runs_on() {
    let (forgejo, client) = start(V15);
    let job = forgejo.add_job(StandInJob::new("acme/app", "a", &["a", "b"]));
    let list = |labels: &'static [&'static str]| {
        let client = client.clone();
        async move {
            ids(&client
                .list_jobs(&org("acme"), Some(&v(labels)))
                .await
                .unwrap())
        }
    };

    assert_eq!(list(&["a"]).await, Vec::<i64>::new());
    assert_eq!(list(&["a", "b"]).await, [job.id]);
    assert_eq!(list(&["a", "b", "c"]).await, [job.id]);
}

#[tokio::test]
async fn v15_jobs_carry_attempt_and_handle() {
    let (forgejo, client) = start(V15);
    let fresh = forgejo.add_job(StandInJob::new("acme/app", "a", &["docker"]).with_id(1));
    forgejo.add_job(
        StandInJob::new("acme/app", "old", &["docker"])
            .with_id(2)
            .with_handle(""),
    );
    let rerun = forgejo.rerun_job(1).unwrap();

    let jobs = client
        .list_jobs(&org("acme"), Some(&v(&["docker"])))
        .await
        .unwrap();

    assert_eq!(jobs[1].id, 1);
    assert_eq!(jobs[1].attempt, Some(2));
    assert_eq!(jobs[1].handle, rerun.handle);
    assert_ne!(rerun.handle, fresh.handle, "a new attempt has a new handle");
    assert_eq!(jobs[0].attempt, Some(1));
    assert_eq!(
        jobs[0].handle, None,
        "an empty handle (job from before the upgrade) reads as None"
    );
}

#[tokio::test]
async fn v14_jobs_have_no_attempt_or_handle() {
    let (forgejo, client) = start(V14);
    forgejo.add_job(StandInJob::new("acme/app", "a", &["docker"]).with_needs(&["lint"]));

    let jobs = client
        .list_jobs(&org("acme"), Some(&v(&["docker"])))
        .await
        .unwrap();

    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].attempt, None);
    assert_eq!(jobs[0].handle, None);
    assert_eq!(jobs[0].needs, ["lint"]);
    assert_eq!(jobs[0].runs_on, ["docker"]);
    assert_eq!(jobs[0].name, "a");
    assert!(jobs[0].repo_id > 0 && jobs[0].owner_id > 0);
}

#[tokio::test]
async fn job_listing_is_missing_before_v11() {
    let (_forgejo, client) = start("10.0.3+gitea-1.22.0");

    let err = client
        .list_jobs(&org("acme"), Some(&v(&["docker"])))
        .await
        .unwrap_err();

    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("Forgejo 11+"), "{err}");
}

#[tokio::test]
async fn one_unfiltered_poll_serves_many_pools_like_filtered_polls() {
    let (forgejo, client) = start(V15);
    for (name, runs_on) in [
        ("a", &["docker"][..]),
        ("b", &["docker", "gpu"]),
        ("c", &["ubuntu"]),
        ("d", &[]),
        ("e", &["gpu"]),
    ] {
        forgejo.add_job(StandInJob::new("acme/app", name, runs_on));
    }
    let all = client.list_jobs(&org("acme"), None).await.unwrap();

    for pool in [
        v(&["docker"]),
        v(&["docker", "gpu"]),
        v(&["ubuntu", "x"]),
        v(&["nothing"]),
    ] {
        let local: Vec<i64> = all
            .iter()
            .filter(|j| it_runs_on(&j.runs_on, &pool))
            .map(|j| j.id)
            .collect();
        let remote = ids(&client.list_jobs(&org("acme"), Some(&pool)).await.unwrap());
        assert_eq!(local, remote, "pool {pool:?}");
    }
}
