//! Fault tier: the operator binary against the real control plane and the Forgejo stand-in,
//! under faults of Forgejo, of the apiserver and of itself. Every scenario ends by checking
//! one Job per waiting job, no job lost, no runner registration left behind, the token in no
//! log, event or status, and how long recovery took. `cargo xtask test` runs these;
//! `cargo xtask chaos` runs them with longer outages and more rounds (`FRC_CHAOS=full`).

mod support;

use std::time::{Duration, Instant};

use forgejo_stand_in::{Fault, StandInJob, Times};
use support::partition::Partition;
use support::{Operator, World, wait_until};

const LONG: Duration = Duration::from_secs(60);
const LEADER_METRIC: &str = "forgejo_runner_controller_lease_is_leader";

fn election_args(world: &World, identity: &str, duration_secs: u64) -> Vec<String> {
    let mut args = vec![
        "--leader-election=true".to_owned(),
        "--lease-namespace=forgejo-runner-system".to_owned(),
        format!("--lease-duration-seconds={duration_secs}"),
        format!("--lease-name=faults-{}", world.ns),
        format!("--identity={identity}"),
    ];
    args.extend(support::FAST_TIMEOUTS.iter().map(|s| (*s).to_owned()));
    args
}

#[tokio::test]
#[ignore = "fault tier: run by cargo xtask test"]
async fn a_leader_cut_off_from_the_apiserver_stops_before_another_replica_takes_over() {
    const DURATION: u64 = 6;
    let world = World::new("partition").await;
    let partition = Partition::start(std::path::Path::new(&support::operator_kubeconfig())).await;
    let a_args = election_args(&world, "cut-off", DURATION);
    let a_refs: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let kubeconfig = partition.kubeconfig().to_string_lossy().into_owned();
    let mut a = Operator::start_with_kubeconfig(&kubeconfig, &world.ns, &a_refs);
    wait_until("the first replica to lead", LONG, || async {
        (a.metric(LEADER_METRIC)? == 1.0).then_some(())
    })
    .await;

    partition.cut();
    let cut_at = Instant::now();
    let b_args = election_args(&world, "connected", DURATION);
    let b_refs: Vec<&str> = b_args.iter().map(String::as_str).collect();
    let mut b = Operator::start_with(&world.ns, &b_refs);

    let mut a_stopped = None;
    let mut b_started = None;
    while (a_stopped.is_none() || b_started.is_none()) && cut_at.elapsed() < LONG {
        if a_stopped.is_none() && a.metric(LEADER_METRIC) == Some(0.0) {
            a_stopped = Some(cut_at.elapsed());
        }
        if b_started.is_none() && b.metric(LEADER_METRIC) == Some(1.0) {
            b_started = Some(cut_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = a.logs();
    a.kill();
    b.kill();
    let a_stopped = a_stopped.unwrap_or_else(|| {
        panic!("the cut-off leader still says it leads after {LONG:?}; its log:\n{logs}")
    });
    let b_started = b_started.expect("the connected replica never took the Lease");
    println!("cut-off leader stopped after {a_stopped:?}; the other took over after {b_started:?}");
    assert!(
        a_stopped < b_started,
        "both led at once: the cut-off leader stopped at {a_stopped:?}, the other started at {b_started:?}"
    );
    assert!(
        a_stopped <= Duration::from_secs(DURATION),
        "the cut-off leader kept leading {a_stopped:?}, past its {DURATION} s Lease"
    );
}

/// How long a Forgejo outage lasts: a CI-sized one, or the full set's (`FRC_CHAOS=full`).
fn outage_lengths() -> Vec<Duration> {
    if std::env::var("FRC_CHAOS").as_deref() == Ok("full") {
        vec![
            Duration::from_secs(30),
            Duration::from_secs(90),
            Duration::from_secs(180),
        ]
    } else {
        vec![Duration::from_secs(40)]
    }
}

/// The end of every scenario: one Job per waiting job, no registration left, no token leak.
async fn check_invariants(world: &World, operator: &Operator, waiting: usize) {
    world.assert_one_job_each(waiting).await;
    let registered = world.forgejo.runners().len();
    assert!(
        registered <= waiting,
        "{registered} runner registrations for {waiting} jobs: some are orphans"
    );
    let logs = operator.logs();
    assert!(
        !logs.contains(&world.token),
        "the API token is in the operator's log"
    );
    for event in world.events_of("pool").await {
        let note = event.note.unwrap_or_default();
        assert!(
            !note.contains(&world.token),
            "the API token is in an event: {note}"
        );
    }
    let status = serde_json::to_string(&world.pools().get("pool").await.expect("pool").status)
        .expect("status JSON");
    assert!(
        !status.contains(&world.token),
        "the API token is in the status"
    );
}

#[tokio::test]
#[ignore = "fault tier: run by cargo xtask test"]
async fn after_a_forgejo_outage_of_any_length_a_new_job_is_scheduled_within_one_interval() {
    const INTERVAL: Duration = Duration::from_secs(10);
    for outage in outage_lengths() {
        let world = World::new("outage").await;
        world
            .forgejo
            .add_job(StandInJob::new("faro/app", "before", &["docker"]));
        world
            .create_pool_from(serde_json::json!({
                "metadata": {"name": "pool"},
                "spec": {
                    "forgejoServer": world.forgejo.url(),
                    "organization": "faro",
                    "labels": "docker",
                    "tokenSecretRef": {"name": "forgejo-token", "key": "token"},
                    "pollInterval": "10s",
                    "maxRunners": 10,
                }
            }))
            .await;
        let operator = Operator::start(&world.ns);
        wait_until("the first runner Job", LONG, || async {
            (world.runner_jobs().await.len() == 1).then_some(())
        })
        .await;

        world
            .forgejo
            .inject_fault("/api/v1/", Fault::Status(503), Times::Always);
        world
            .forgejo
            .add_job(StandInJob::new("faro/app", "during", &["docker"]));
        tokio::time::sleep(outage).await;
        world.forgejo.clear_faults();
        let ended = Instant::now();
        wait_until(
            "the job added during the outage to get its runner Job",
            LONG + outage,
            || async { (world.runner_jobs().await.len() == 2).then_some(()) },
        )
        .await;
        let recovery = ended.elapsed();
        println!("outage {outage:?} at a {INTERVAL:?} interval: recovered in {recovery:?}");
        assert!(
            recovery <= INTERVAL + Duration::from_secs(5),
            "after a {outage:?} outage the pool took {recovery:?} to schedule again"
        );
        world
            .wait_for_condition("pool", "Ready", "True", "Polling")
            .await;
        check_invariants(&world, &operator, 2).await;
    }
}

#[tokio::test]
#[ignore = "fault tier: run by cargo xtask test"]
async fn a_retry_after_is_honoured_between_reconciles() {
    let world = World::new("retry-after").await;
    world.create_pool("pool", "faro", "docker", 10).await;
    let operator = Operator::start(&world.ns);
    world.wait_for_polls(2).await;
    // Every listing is refused with "come back in 5 s" until cleared.
    world.forgejo.inject_fault(
        "/api/v1/orgs/faro/actions/runners/jobs",
        Fault::StatusWithRetryAfter(429, 5),
        Times::Always,
    );
    world.forgejo.clear_requests();
    tokio::time::sleep(Duration::from_secs(12)).await;
    let listings: Vec<_> = world
        .forgejo
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/actions/runners/jobs"))
        .collect();
    world.forgejo.clear_faults();
    // 12 s at "5 s apart" is at most 3 listings (the client's own retry inside one call
    // waits the 5 s too); the old code asked about every second.
    assert!(
        listings.len() <= 3,
        "{} listings in 12 s despite Retry-After: 5",
        listings.len()
    );
    world
        .wait_for_condition("pool", "Ready", "True", "Polling")
        .await;
    check_invariants(&world, &operator, 0).await;
}

#[tokio::test]
#[ignore = "fault tier: run by cargo xtask test"]
async fn failed_runner_registrations_make_the_pool_not_ready_and_are_retried() {
    let world = World::new("no-credentials").await;
    world.forgejo.inject_fault(
        "POST /api/v1/orgs/faro/actions/runners",
        Fault::Status(500),
        Times::Always,
    );
    world
        .forgejo
        .add_job(StandInJob::new("faro/app", "build", &["docker"]));
    world.create_pool("pool", "faro", "docker", 10).await;
    let operator = Operator::start(&world.ns);
    world
        .wait_for_condition("pool", "Ready", "False", "RunnerCredentialsFailed")
        .await;
    let jobs = world.runner_jobs().await;
    assert_eq!(
        jobs.len(),
        1,
        "the runner Job stays while its credentials are retried"
    );
    let name = jobs[0].metadata.name.clone().expect("job name");
    assert!(world.secret(&name).await.is_none());

    world.forgejo.clear_faults();
    world
        .wait_for_condition("pool", "Ready", "True", "Polling")
        .await;
    wait_until("the runner Secret", LONG, || async {
        world.secret(&name).await
    })
    .await;
    check_invariants(&world, &operator, 1).await;
}

#[tokio::test]
#[ignore = "fault tier: run by cargo xtask test"]
async fn kill_9_in_a_loop_loses_and_duplicates_nothing() {
    let rounds = if std::env::var("FRC_CHAOS").as_deref() == Ok("full") {
        20
    } else {
        5
    };
    let world = World::new("kill-loop").await;
    world.create_pool("pool", "faro", "docker", 100).await;
    let mut added = 0;
    let mut operator = Operator::start(&world.ns);
    for round in 0..rounds {
        for n in 0..3 {
            world.forgejo.add_job(StandInJob::new(
                "faro/app",
                &format!("r{round}-{n}"),
                &["docker"],
            ));
            added += 1;
        }
        // Killed at a different point of its work each round.
        tokio::time::sleep(Duration::from_millis(300 + 150 * round)).await;
        operator.kill();
        operator = Operator::start(&world.ns);
    }
    wait_until(&format!("{added} runner Jobs"), LONG, || async {
        (world.runner_jobs().await.len() >= added).then_some(())
    })
    .await;
    world.wait_for_polls(3).await;
    check_invariants(&world, &operator, added).await;
}

fn pool_spec(server: &str) -> serde_json::Value {
    serde_json::json!({
        "forgejoServer": server,
        "organization": "faro",
        "labels": "docker",
        "tokenSecretRef": {"name": "forgejo-token", "key": "token"},
        "pollInterval": "1s",
        "maxRunners": 10,
    })
}

#[tokio::test]
#[ignore = "fault tier: run by cargo xtask test"]
async fn a_privileged_job_template_is_refused_by_name_and_nothing_scheduled_is_lost() {
    let world = World::new("privileged").await;
    world
        .forgejo
        .add_job(StandInJob::new("faro/app", "build", &["docker"]));
    world.create_pool("pool", "faro", "docker", 10).await;
    let operator = Operator::start(&world.ns);
    wait_until("the runner Job", LONG, || async {
        (world.runner_jobs().await.len() == 1).then_some(())
    })
    .await;

    // The same pool asks for the node's network: refused, with the field named.
    let patch = serde_json::json!({"spec": {"jobTemplate": {"spec": {"hostNetwork": true}}}});
    world
        .pools()
        .patch(
            "pool",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .expect("patch the pool");
    world
        .wait_for_condition("pool", "Ready", "False", "PrivilegedTemplate")
        .await;
    let event = world.wait_for_event("pool", "PrivilegedTemplate").await;
    let note = event.note.unwrap_or_default();
    assert!(
        note.contains("spec.jobTemplate.spec.hostNetwork")
            && note.contains("--allow-privileged-runners"),
        "the event does not name the field and the way out: {note}"
    );
    world
        .forgejo
        .add_job(StandInJob::new("faro/app", "after", &["docker"]));
    // A refused spec is not polled: count the reconciles that refused it instead.
    let refusals = || {
        operator
            .metric(
                "forgejo_runner_controller_reconcile_errors_total{reason=\"PrivilegedTemplate\"}",
            )
            .unwrap_or(0.0)
    };
    let seen = refusals();
    wait_until("two more refusing reconciles", LONG, || async {
        (refusals() >= seen + 2.0).then_some(())
    })
    .await;
    assert_eq!(
        world.runner_jobs().await.len(),
        1,
        "the Job already scheduled stays, and nothing new is scheduled from a refused template"
    );
    check_invariants(&world, &operator, 1).await;
}

#[tokio::test]
#[ignore = "fault tier: run by cargo xtask test"]
async fn a_metadata_address_is_refused_and_forgejos_answers_never_reach_status_or_events() {
    let world = World::new("addresses").await;
    world
        .create_pool_from(serde_json::json!({
            "metadata": {"name": "metadata"},
            "spec": pool_spec("http://169.254.169.254"),
        }))
        .await;
    const PAGE: &str = "<html>maintenance: internal-host-7f3a.corp says hello</html>";
    world.forgejo.inject_fault(
        "/api/v1/orgs/faro/actions/runners/jobs",
        Fault::Body(500, PAGE.to_owned()),
        Times::Always,
    );
    let url = world.forgejo.url();
    world
        .create_pool_from(serde_json::json!({
            "metadata": {"name": "pool"},
            "spec": pool_spec(&url),
        }))
        .await;
    let operator = Operator::start(&world.ns);
    world
        .wait_for_condition("metadata", "ForgejoReachable", "False", "ForbiddenAddress")
        .await;
    world
        .wait_for_condition("pool", "ForgejoReachable", "False", "ServerError")
        .await;
    let status = serde_json::to_string(&world.pools().get("pool").await.expect("pool").status)
        .expect("status JSON");
    assert!(
        !status.contains("internal-host-7f3a"),
        "Forgejo's page is in the status: {status}"
    );
    for event in world.events_of("pool").await {
        let note = event.note.unwrap_or_default();
        assert!(
            !note.contains("internal-host-7f3a"),
            "Forgejo's page is in an event: {note}"
        );
    }
    world.forgejo.clear_faults();
    world
        .wait_for_condition("pool", "Ready", "True", "Polling")
        .await;
    check_invariants(&world, &operator, 0).await;
}

#[tokio::test]
#[ignore = "fault tier: run by cargo xtask test"]
async fn every_kind_of_bad_forgejo_answer_is_survived_and_recovered_from_within_one_interval() {
    const INTERVAL: Duration = Duration::from_secs(10);
    let full = std::env::var("FRC_CHAOS").as_deref() == Ok("full");
    let mut faults = vec![("malformed", Fault::Malformed), ("reset", Fault::Reset)];
    if full {
        faults.extend([
            ("slow (15 s)", Fault::Delay(Duration::from_secs(15))),
            ("truncated", Fault::Truncated),
            ("huge (50 MB)", Fault::Huge(50 * 1024 * 1024)),
            (
                "HTML page",
                Fault::Body(200, "<html>maintenance</html>".to_owned()),
            ),
        ]);
    }
    let world = World::new("bad-answers").await;
    let url = world.forgejo.url();
    world
        .create_pool_from(serde_json::json!({
            "metadata": {"name": "pool"},
            "spec": {
                "forgejoServer": url,
                "organization": "faro",
                "labels": "docker",
                "tokenSecretRef": {"name": "forgejo-token", "key": "token"},
                "pollInterval": "10s",
                "maxRunners": 100,
            }
        }))
        .await;
    let operator = Operator::start(&world.ns);
    world.wait_for_polls(1).await;
    let mut waiting = 0;
    for (name, fault) in faults {
        world.forgejo.inject_fault("/api/v1/", fault, Times::Always);
        world.forgejo.add_job(StandInJob::new(
            "faro/app",
            &format!("during {name}"),
            &["docker"],
        ));
        waiting += 1;
        tokio::time::sleep(Duration::from_secs(12)).await;
        world.forgejo.clear_faults();
        let ended = Instant::now();
        wait_until(
            &format!("the job added during {name} answers"),
            LONG,
            || async { (world.runner_jobs().await.len() == waiting).then_some(()) },
        )
        .await;
        let recovery = ended.elapsed();
        println!("{name} answers for 12 s at a {INTERVAL:?} interval: recovered in {recovery:?}");
        assert!(
            recovery <= INTERVAL + Duration::from_secs(5),
            "after {name} answers the pool took {recovery:?} to schedule again"
        );
    }
    check_invariants(&world, &operator, waiting).await;
}
