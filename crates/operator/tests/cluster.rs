//! Cluster tier: the operator binary, holding only its generated RBAC, against the real
//! control plane (`cargo xtask cluster`) and the Forgejo stand-in. Run by `cargo xtask test`.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use forgejo_stand_in::{Fault, StandInJob, Times};
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use scheduler::labels::{FORGEJO_JOB_ID, RUNNER_DEPLOYMENT_UID};
use serde_json::json;
use support::{Operator, World, kubectl, kubelet, wait_until};

const LONG: Duration = Duration::from_secs(60);

fn job_id(job: &Job) -> i64 {
    job.labels()
        .get(FORGEJO_JOB_ID)
        .and_then(|id| id.parse().ok())
        .expect("runner Job has a job-id label")
}

fn runner_args(job: &Job) -> String {
    let spec = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec");
    let runner = spec
        .containers
        .iter()
        .find(|c| c.name == scheduler::RUNNER_CONTAINER)
        .expect("runner container");
    let mut words = runner.command.clone().unwrap_or_default();
    words.extend(runner.args.clone().unwrap_or_default());
    words.join(" ")
}

#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn three_waiting_jobs_get_exactly_three_runner_jobs() {
    let world = World::new("three").await;
    let mut handles = Vec::new();
    for name in ["build", "test", "lint"] {
        let job = world
            .forgejo
            .add_job(StandInJob::new("faro/app", name, &["docker"]));
        handles.push((job.id, job.handle.clone().expect("v15 job has a handle")));
    }
    let rd = world.create_pool("pool", "faro", "docker", 10).await;
    let operator = Operator::start(&world.ns);

    let jobs = wait_until("3 runner Jobs", LONG, || async {
        let jobs = world.runner_jobs().await;
        (jobs.len() == 3).then_some(jobs)
    })
    .await;
    let uid = rd.uid().expect("uid");
    for job in &jobs {
        let id = job_id(job);
        let (_, handle) = handles
            .iter()
            .find(|(h_id, _)| *h_id == id)
            .expect("a Job for a listed job");
        assert_eq!(job.labels().get(RUNNER_DEPLOYMENT_UID), Some(&uid));
        let owner = &job.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("RunnerDeployment", "pool", Some(true))
        );
        let args = runner_args(job);
        for word in [
            "one-job",
            "--url",
            "--uuid",
            "--token-url file:",
            "--wait",
            "--label docker",
        ] {
            assert!(args.contains(word), "runner command lacks {word:?}: {args}");
        }
        assert!(
            args.contains(&format!("--handle {handle}")),
            "runner command lacks the handle: {args}"
        );
        assert!(
            !args.contains(&world.token),
            "the API token is in a pod command"
        );
        let secret = wait_until("the runner Secret", LONG, || async {
            world.secret(&job.name_any()).await
        })
        .await;
        let data = secret.data.unwrap_or_default();
        assert!(
            data.contains_key("uuid") && data.contains_key("token"),
            "runner Secret keys: {:?}",
            data.keys()
        );
        assert!(
            !data.values().any(|v| v.0 == world.token.as_bytes()),
            "the API token is in a runner Secret"
        );
    }
    let ids: BTreeSet<i64> = jobs.iter().map(job_id).collect();
    assert_eq!(ids.len(), 3);

    // Each Job has its own ephemeral runner registration, named after it.
    let names: BTreeSet<String> = jobs.iter().map(|j| j.name_any()).collect();
    wait_until("3 ephemeral registrations", LONG, || async {
        let runners: BTreeSet<String> = world
            .forgejo
            .runners()
            .into_iter()
            .filter(|r| r.ephemeral)
            .map(|r| r.name)
            .collect();
        (runners == names).then_some(())
    })
    .await;

    // The status lists them, and kubectl shows the columns.
    wait_until("status with 3 scheduled jobs", LONG, || async {
        let status = world.pools().get("pool").await.ok()?.status?;
        (status.scheduled_jobs.len() == 3 && status.active_jobs == Some(3)).then_some(())
    })
    .await;
    world
        .wait_for_condition("pool", "Ready", "True", "Polling")
        .await;
    let table = kubectl(&["get", "rd", "-n", &world.ns]);
    let row = table
        .lines()
        .find(|l| l.starts_with("pool "))
        .expect("a row for the pool");
    for cell in [
        world.forgejo.url().as_str(),
        "org/faro",
        "docker",
        " 3 ",
        "True",
    ] {
        assert!(
            row.contains(cell),
            "kubectl get rd row lacks {cell:?}: {table}"
        );
    }

    // More polls create nothing more.
    world.wait_for_polls(3).await;
    assert_eq!(world.runner_jobs().await.len(), 3);

    // The admin server answers, and the scheduling latency was measured.
    let (status, _) = operator.get("/readyz").expect("/readyz answers");
    assert_eq!(status, 200);
    let count = operator
        .metric("forgejo_runner_controller_job_scheduling_latency_seconds_count")
        .expect("latency metric present");
    assert!(count >= 3.0, "latency observed {count} times");
    assert!(
        operator
            .metric("forgejo_runner_controller_jobs_created_total")
            .unwrap_or(0.0)
            >= 3.0
    );
}

#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn operator_killed_after_creating_jobs_restarts_without_duplicates() {
    let world = World::new("restart").await;
    for n in 0..8 {
        world.forgejo.add_job(StandInJob::new(
            "faro/app",
            &format!("job-{n}"),
            &["docker"],
        ));
    }
    world.create_pool("pool", "faro", "docker", 20).await;
    let mut first = Operator::start(&world.ns);
    wait_until("a first runner Job", LONG, || async {
        (!world.runner_jobs().await.is_empty()).then_some(())
    })
    .await;
    first.kill();
    let before = world.runner_jobs().await.len();

    let _second = Operator::start(&world.ns);
    let jobs = wait_until("8 runner Jobs", LONG, || async {
        let jobs = world.runner_jobs().await;
        (jobs.len() >= 8).then_some(jobs)
    })
    .await;
    world.wait_for_polls(3).await;
    let jobs_after = world.runner_jobs().await;
    assert_eq!(
        jobs_after.len(),
        8,
        "killed after {before} Jobs; now {}",
        jobs_after.len()
    );
    let ids: BTreeSet<i64> = jobs.iter().map(job_id).collect();
    assert_eq!(ids.len(), 8, "one Job per Forgejo job");
    // Every Job ends with exactly its own runner registration; strays are removed.
    let names: BTreeSet<String> = jobs.iter().map(|j| j.name_any()).collect();
    wait_until("one registration per Job", LONG, || async {
        let runners: Vec<String> = world
            .forgejo
            .runners()
            .into_iter()
            .map(|r| r.name)
            .collect();
        let unique: BTreeSet<String> = runners.iter().cloned().collect();
        (runners.len() == 8 && unique == names).then_some(())
    })
    .await;
    for name in &names {
        assert!(
            world.secret(name).await.is_some(),
            "Job {name} has no runner Secret"
        );
    }
}

#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn two_replicas_elect_one_leader_and_make_no_duplicates() {
    let world = World::new("leader").await;
    for n in 0..4 {
        world.forgejo.add_job(StandInJob::new(
            "faro/app",
            &format!("job-{n}"),
            &["docker"],
        ));
    }
    world.create_pool("pool", "faro", "docker", 20).await;
    let lease = format!("--lease-name=test-{}", world.ns);
    let election = |id: &str| {
        let mut args = vec![
            "--leader-election=true".to_owned(),
            "--lease-namespace=forgejo-runner-system".to_owned(),
            "--lease-duration-seconds=3".to_owned(),
            lease.clone(),
            format!("--identity={id}"),
        ];
        args.extend(support::FAST_TIMEOUTS.iter().map(|s| (*s).to_owned()));
        args
    };
    let a_args = election("replica-a");
    let b_args = election("replica-b");
    let a_refs: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let b_refs: Vec<&str> = b_args.iter().map(String::as_str).collect();
    let mut a = Operator::start_with(&world.ns, &a_refs);
    let mut b = Operator::start_with(&world.ns, &b_refs);

    wait_until("4 runner Jobs", LONG, || async {
        (world.runner_jobs().await.len() == 4).then_some(())
    })
    .await;
    let leaders = wait_until("exactly one leader", LONG, || async {
        let a_leads = a.metric("forgejo_runner_controller_lease_is_leader")?;
        let b_leads = b.metric("forgejo_runner_controller_lease_is_leader")?;
        (a_leads + b_leads == 1.0).then_some((a_leads, b_leads))
    })
    .await;
    world.wait_for_polls(3).await;
    assert_eq!(
        world.runner_jobs().await.len(),
        4,
        "two replicas made duplicates"
    );

    // The leader goes away; the other takes over and schedules new jobs.
    let (leader, follower) = if leaders.0 == 1.0 {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    assert!(
        leader.terminate(Duration::from_secs(20)),
        "the leader did not exit cleanly on SIGTERM"
    );
    for n in 4..6 {
        world.forgejo.add_job(StandInJob::new(
            "faro/app",
            &format!("job-{n}"),
            &["docker"],
        ));
    }
    wait_until("the follower to lead", LONG, || async {
        (follower.metric("forgejo_runner_controller_lease_is_leader")? == 1.0).then_some(())
    })
    .await;
    wait_until("6 runner Jobs", LONG, || async {
        (world.runner_jobs().await.len() == 6).then_some(())
    })
    .await;
}

#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn job_that_stops_waiting_before_its_pod_starts_is_cleaned_up() {
    let world = World::new("cancel").await;
    let forgejo_job = world
        .forgejo
        .add_job(StandInJob::new("faro/app", "build", &["docker"]));
    world.create_pool("pool", "faro", "docker", 10).await;
    let _operator = Operator::start(&world.ns);
    let job = wait_until("a runner Job", LONG, || async {
        world.runner_jobs().await.into_iter().next()
    })
    .await;
    let name = job.name_any();
    wait_until("its Secret and registration", LONG, || async {
        let registered = world.forgejo.runners().iter().any(|r| r.name == name);
        (world.secret(&name).await.is_some() && registered).then_some(())
    })
    .await;

    let registration_id = world
        .forgejo
        .runners()
        .iter()
        .find(|r| r.name == name)
        .map(|r| r.id)
        .expect("the registration");

    // The workflow is cancelled before any pod took the job.
    assert!(world.forgejo.remove_job(forgejo_job.id));
    wait_until("the Job, Secret and registration to go", LONG, || async {
        let jobs = world.runner_jobs().await;
        let job_gone = jobs
            .iter()
            .all(|j| j.name_any() != name || j.metadata.deletion_timestamp.is_some());
        let secret_gone = world
            .secret(&name)
            .await
            .is_none_or(|s| s.metadata.deletion_timestamp.is_some());
        let registration_gone = !world.forgejo.runners().iter().any(|r| r.name == name);
        (job_gone && secret_gone && registration_gone).then_some(())
    })
    .await;
    let event = world.wait_for_event("pool", "ForgejoJobNotWaiting").await;
    assert!(
        event
            .note
            .unwrap_or_default()
            .contains(&forgejo_job.id.to_string())
    );
    // Deleted once: listings older than the deletion do not repeat it.
    world.wait_for_polls(3).await;
    let deletes = world
        .forgejo
        .requests()
        .iter()
        .filter(|r| {
            r.method == "DELETE"
                && r.path
                    .ends_with(&format!("/actions/runners/{registration_id}"))
        })
        .count();
    assert_eq!(deletes, 1, "the registration was deleted {deletes} times");
}

#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn max_runners_caps_active_jobs_at_four_of_ten() {
    let world = World::new("cap").await;
    let mut ids = Vec::new();
    for n in 0..10 {
        ids.push(
            world
                .forgejo
                .add_job(StandInJob::new(
                    "faro/app",
                    &format!("job-{n}"),
                    &["docker"],
                ))
                .id,
        );
    }
    world.create_pool("pool", "faro", "docker", 4).await;
    let _operator = Operator::start(&world.ns);
    let jobs = wait_until("4 runner Jobs", LONG, || async {
        let jobs = world.runner_jobs().await;
        (jobs.len() >= 4).then_some(jobs)
    })
    .await;
    world.wait_for_polls(3).await;
    assert_eq!(
        world.runner_jobs().await.len(),
        4,
        "more than maxRunners Jobs"
    );
    let mut oldest = ids.clone();
    oldest.sort();
    let scheduled: BTreeSet<i64> = jobs.iter().map(job_id).collect();
    assert_eq!(
        scheduled,
        oldest[..4].iter().copied().collect(),
        "oldest jobs first"
    );
    world
        .wait_for_condition("pool", "AtCapacity", "True", "MaxRunnersReached")
        .await;

    // Two runners finish their jobs: two more jobs get runners, never more than 4 live.
    for job in jobs.iter().take(2) {
        world.forgejo.remove_job(job_id(job));
        let pods =
            kubelet::wait_for_pods_of_job(&world.client, &world.ns, &job.name_any(), 1, LONG).await;
        kubelet::set_pod_succeeded(&world.client, &world.ns, &pods[0].name_any())
            .await
            .expect("pod succeeded");
    }
    wait_until("2 more runner Jobs", LONG, || async {
        let all = world.runner_jobs().await;
        let live = world.live_runner_jobs().await;
        assert!(
            live.len() <= 4,
            "{} live runner Jobs with maxRunners 4",
            live.len()
        );
        (all.len() >= 6 && live.len() == 4).then_some(())
    })
    .await;
}

#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn failures_set_conditions_and_events_and_recover_without_restart() {
    let world = World::with_forgejo("fail", |mut config| {
        config.owners = Some(vec!["faro".into(), "walled".into(), "garbled".into()]);
        config
    })
    .await;
    let url = world.forgejo.url();
    world
        .forgejo
        .add_job(StandInJob::new("faro/app", "healthy", &["ok"]));
    world
        .forgejo
        .inject_fault("/api/v1/orgs/walled/", Fault::Status(403), Times::Always);
    world
        .forgejo
        .inject_fault("/api/v1/orgs/garbled/", Fault::Malformed, Times::Always);
    world.put_secret("wrong-key", "other", &world.token).await;
    world
        .put_secret("bad-token", "token", "frc-test-bad-token-0000")
        .await;
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let pool = |name: &str, server: &str, org: &str, secret: &str| {
        json!({
            "metadata": {"name": name},
            "spec": {"forgejoServer": server, "organization": org, "labels": "ok",
                     "tokenSecretRef": {"name": secret}, "pollInterval": "1s"}
        })
    };
    let down = format!("http://127.0.0.1:{closed_port}");
    let cases = [
        (
            "no-secret",
            url.as_str(),
            "faro",
            "missing",
            "SecretFound",
            "SecretNotFound",
        ),
        (
            "wrong-key",
            url.as_str(),
            "faro",
            "wrong-key",
            "SecretFound",
            "SecretKeyMissing",
        ),
        (
            "bad-token",
            url.as_str(),
            "faro",
            "bad-token",
            "ForgejoReachable",
            "Unauthorized",
        ),
        (
            "forbidden",
            url.as_str(),
            "walled",
            "forgejo-token",
            "ForgejoReachable",
            "Forbidden",
        ),
        (
            "not-found",
            url.as_str(),
            "ghost",
            "forgejo-token",
            "ForgejoReachable",
            "NotFound",
        ),
        (
            "down",
            down.as_str(),
            "faro",
            "forgejo-token",
            "ForgejoReachable",
            "Unreachable",
        ),
        (
            "malformed",
            url.as_str(),
            "garbled",
            "forgejo-token",
            "ForgejoReachable",
            "InvalidResponse",
        ),
    ];
    world.create_pool("healthy", "faro", "ok", 10).await;
    for (name, server, org, secret, _, _) in &cases {
        world
            .create_pool_from(pool(name, server, org, secret))
            .await;
    }
    let operator = Operator::start(&world.ns);

    for (name, _, _, _, condition, reason) in &cases {
        world
            .wait_for_condition(name, condition, "False", reason)
            .await;
        world
            .wait_for_condition(name, "Ready", "False", reason)
            .await;
        let event = world.wait_for_event(name, reason).await;
        assert_eq!(event.type_.as_deref(), Some("Warning"), "{name}");
    }
    // Other pools are unaffected.
    wait_until("the healthy pool's runner Job", LONG, || async {
        (world.runner_jobs().await.len() == 1).then_some(())
    })
    .await;
    world
        .wait_for_condition("healthy", "Ready", "True", "Polling")
        .await;

    // Fix every cause; each pool recovers with the operator still running.
    world.put_secret("missing", "token", &world.token).await;
    world.put_secret("wrong-key", "token", &world.token).await;
    world.put_secret("bad-token", "token", &world.token).await;
    world.forgejo.clear_faults();
    let pools = world.pools();
    let patch = |spec: serde_json::Value| Patch::Merge(json!({"spec": spec}));
    pools
        .patch(
            "not-found",
            &PatchParams::default(),
            &patch(json!({"organization": "faro"})),
        )
        .await
        .unwrap();
    pools
        .patch(
            "down",
            &PatchParams::default(),
            &patch(json!({"forgejoServer": url})),
        )
        .await
        .unwrap();
    for (name, ..) in &cases {
        world
            .wait_for_condition(name, "Ready", "True", "Polling")
            .await;
    }

    // The token is in no log line, event, status or error.
    let mut everything = operator.logs();
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(world.client.clone(), &world.ns);
    for event in events.list(&ListParams::default()).await.unwrap() {
        everything.push_str(&serde_json::to_string(&event).unwrap());
    }
    for rd in pools.list(&ListParams::default()).await.unwrap() {
        everything.push_str(&serde_json::to_string(&rd.status).unwrap());
    }
    assert!(!everything.is_empty());
    for secret in [world.token.as_str(), "frc-test-bad-token-0000"] {
        assert!(
            !everything.contains(secret),
            "a token leaked into logs, events or status"
        );
    }
}

#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn deleting_a_pool_removes_its_jobs_and_registrations() {
    let world = World::new("delete").await;
    world
        .forgejo
        .add_job(StandInJob::new("faro/app", "a", &["docker"]));
    world
        .forgejo
        .add_job(StandInJob::new("faro/app", "b", &["docker"]));
    world.create_pool("pool", "faro", "docker", 10).await;
    let _operator = Operator::start(&world.ns);
    wait_until("2 registrations", LONG, || async {
        (world.forgejo.runners().len() == 2 && world.runner_jobs().await.len() == 2).then_some(())
    })
    .await;
    world
        .pools()
        .delete("pool", &DeleteParams::background())
        .await
        .unwrap();
    wait_until(
        "the pool, its Jobs and registrations to go",
        LONG,
        || async {
            let pool_gone = world.pools().get_opt("pool").await.unwrap().is_none();
            let _ = kubelet::finish_terminating_pods(&world.client, &world.ns).await;
            let jobs_gone = world.runner_jobs().await.is_empty();
            let registrations_gone = world.forgejo.runners().is_empty();
            (pool_gone && jobs_gone && registrations_gone).then_some(())
        },
    )
    .await;
}

#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn operator_service_account_can_do_exactly_what_rbac_grants() {
    let client = support::operator_client().await;
    let world = World::new("rbac").await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &world.ns);
    jobs.list(&ListParams::default())
        .await
        .expect("listing Jobs is granted");
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    match nodes.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403),
        other => panic!("listing nodes should be forbidden, got {other:?}"),
    }
    // The cache server's Deployments are watched; other workloads are not the operator's.
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), &world.ns);
    deployments
        .list(&ListParams::default())
        .await
        .expect("listing Deployments is granted (cache servers)");
    let stateful: Api<k8s_openapi::api::apps::v1::StatefulSet> =
        Api::namespaced(client.clone(), &world.ns);
    match stateful.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403),
        other => panic!("listing StatefulSets should be forbidden, got {other:?}"),
    }
    // ConfigMaps are written by name (the runner config), never listed.
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client, &world.ns);
    match config_maps.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403),
        other => panic!("listing ConfigMaps should be forbidden, got {other:?}"),
    }
}
