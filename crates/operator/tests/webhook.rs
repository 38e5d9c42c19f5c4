//! The webhook receiver against a real apiserver and the stand-in: a signed
//! `workflow_job_waiting` delivery makes a pool that polls every 5 minutes create the job's
//! runner Job within a second; what is not signed, too large or not a waiting job of the
//! pool stamps nothing and creates nothing; a delivery to the follower wakes the leader.

mod support;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use forgejo_stand_in::StandInJob;
use kube::ResourceExt as _;
use serde_json::json;
use support::{Operator, World, free_addr, wait_until};

const SECRET: &str = "hook-s3cret";
const LONG: Duration = Duration::from_secs(60);

/// POSTs `body` to `path` of `addr` with `headers`; the status answered.
fn post(addr: SocketAddr, path: &str, headers: &[(&str, String)], body: &[u8]) -> u16 {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("write");
    // A refused body may be answered before it is all sent.
    let _ = stream.write_all(body);
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A `workflow_job` delivery of job `id` with `status`, as Forgejo sends it.
fn delivery(id: i64, status: &str, runs_on: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "action": "new_job_attempt",
        "job": {"id": id, "status": status, "runs_on": runs_on, "name": "build",
                "repo_id": 1, "owner_id": 1, "attempt": 1, "task_id": 0},
        "run": {"id": id, "title": "build", "status": status},
    }))
    .expect("json")
}

/// The headers of a delivery of `event` signed with `secret`.
fn signed(event: &str, secret: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("X-Forgejo-Event", event.to_owned()),
        ("X-Forgejo-Event-Type", event.to_owned()),
        (
            "X-Forgejo-Delivery",
            "0b3f2a8e-4d1c-4c43-9a6e-2f1d5c7b9e01".to_owned(),
        ),
        (
            "X-Forgejo-Signature",
            operator::webhook::sign(secret.as_bytes(), body),
        ),
    ]
}

/// A pool on `linux` that polls every 5 minutes and takes webhooks signed with [`SECRET`].
async fn hooked_pool(world: &World, name: &str) {
    world.put_secret("hook", "secret", SECRET).await;
    world
        .create_pool_from(json!({
            "metadata": {"name": name},
            "spec": {
                "forgejoServer": world.forgejo.url(),
                "organization": "faro",
                "labels": "linux:host",
                "tokenSecretRef": {"name": "forgejo-token", "key": "token"},
                "pollInterval": "5m",
                "maxRunners": 10,
                "webhook": {"secretRef": {"name": "hook"}},
            }
        }))
        .await;
}

async fn wake_stamp(world: &World, pool: &str) -> Option<String> {
    let rd = world.pools().get(pool).await.expect("the pool");
    rd.annotations()
        .get(operator::webhook::WAKE_ANNOTATION)
        .cloned()
}

#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn a_signed_delivery_makes_a_pool_polling_every_5m_create_the_job_within_a_second() {
    let world = World::new("hook").await;
    hooked_pool(&world, "pool").await;
    let hook_addr = free_addr();
    let operator = Operator::start_with(
        &world.ns,
        &[
            "--leader-election=false",
            &format!("--webhook-addr={hook_addr}"),
        ],
    );
    world
        .wait_for_condition("pool", "Ready", "True", "Polling")
        .await;
    let path = format!("/webhooks/{}/pool", world.ns);

    let job = world
        .forgejo
        .add_job(StandInJob::new("faro/app", "build", &["linux"]));
    let body = delivery(job.id, "waiting", &["linux"]);
    let sent = Instant::now();
    assert_eq!(
        post(
            hook_addr,
            &path,
            &signed("workflow_job_waiting", SECRET, &body),
            &body
        ),
        202
    );
    wait_until("the job's runner Job", LONG, || async {
        (world.runner_jobs().await.len() == 1).then_some(())
    })
    .await;
    let took = sent.elapsed();
    println!("delivery -> runner Job: {} ms", took.as_millis());
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let stamp = wake_stamp(&world, "pool").await.expect("a wake stamp");

    // Refused before anything is read: nothing stamped.
    let wrong = signed("workflow_job_waiting", "not-the-secret", &body);
    assert_eq!(post(hook_addr, &path, &wrong, &body), 401);
    let unsigned: Vec<_> = wrong
        .into_iter()
        .filter(|(h, _)| !h.ends_with("Signature"))
        .collect();
    assert_eq!(post(hook_addr, &path, &unsigned, &body), 401);
    let huge = vec![b' '; operator::webhook::MAX_BODY + 1];
    assert_eq!(
        post(
            hook_addr,
            &path,
            &signed("workflow_job_waiting", SECRET, &huge),
            &huge
        ),
        413
    );
    assert_eq!(
        post(
            hook_addr,
            &format!("/webhooks/{}/other", world.ns),
            &signed("workflow_job_waiting", SECRET, &body),
            &body
        ),
        404
    );
    let push = signed("push", SECRET, &body);
    assert_eq!(post(hook_addr, &path, &push, &body), 204);
    let running = delivery(job.id, "running", &["linux"]);
    assert_eq!(
        post(
            hook_addr,
            &path,
            &signed("workflow_job_running", SECRET, &running),
            &running
        ),
        204
    );
    let gpu = delivery(job.id, "waiting", &["gpu"]);
    assert_eq!(
        post(
            hook_addr,
            &path,
            &signed("workflow_job_waiting", SECRET, &gpu),
            &gpu
        ),
        204
    );
    assert_eq!(
        wake_stamp(&world, "pool").await.as_deref(),
        Some(stamp.as_str()),
        "a refused delivery stamped the pool"
    );
    for outcome in [
        "bad_signature",
        "missing_signature",
        "too_large",
        "unknown_pool",
        "ignored_event",
        "no_match",
    ] {
        let value = operator.metric(&format!(
            "forgejo_runner_controller_webhook_deliveries_total{{outcome=\"{outcome}\"}}"
        ));
        assert!(value.is_some_and(|v| v >= 1.0), "{outcome}: {value:?}");
    }

    // A replayed delivery, and a signed one naming a job Forgejo does not list: each at most
    // a poll, which creates nothing.
    let polls = world.polls();
    let ghost = delivery(987_654, "waiting", &["linux"]);
    let _ = post(
        hook_addr,
        &path,
        &signed("workflow_job_waiting", SECRET, &body),
        &body,
    );
    let _ = post(
        hook_addr,
        &path,
        &signed("workflow_job_waiting", SECRET, &ghost),
        &ghost,
    );
    wait_until("the woken poll", LONG, || async {
        (world.polls() > polls).then_some(())
    })
    .await;
    world.assert_one_job_each(1).await;
}

#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn a_delivery_to_the_follower_of_two_replicas_wakes_the_leader() {
    let world = World::new("hook-ha").await;
    hooked_pool(&world, "pool").await;
    let lease = format!("--lease-name=test-{}", world.ns);
    let start = |id: &str, addr: SocketAddr| {
        let args = [
            "--leader-election=true".to_owned(),
            "--lease-namespace=forgejo-runner-system".to_owned(),
            "--lease-duration-seconds=3".to_owned(),
            lease.clone(),
            format!("--identity={id}"),
            format!("--webhook-addr={addr}"),
        ];
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Operator::start_with(&world.ns, &refs)
    };
    let (a_hook, b_hook) = (free_addr(), free_addr());
    let a = start("replica-a", a_hook);
    let b = start("replica-b", b_hook);
    let leader_metric = "forgejo_runner_controller_lease_is_leader";
    let follower_hook = wait_until("exactly one leader", LONG, || async {
        let (a_leads, b_leads) = (a.metric(leader_metric)?, b.metric(leader_metric)?);
        match (a_leads, b_leads) {
            (1.0, 0.0) => Some(b_hook),
            (0.0, 1.0) => Some(a_hook),
            _ => None,
        }
    })
    .await;
    world
        .wait_for_condition("pool", "Ready", "True", "Polling")
        .await;

    let job = world
        .forgejo
        .add_job(StandInJob::new("faro/app", "build", &["linux"]));
    let body = delivery(job.id, "waiting", &["linux"]);
    let path = format!("/webhooks/{}/pool", world.ns);
    let sent = Instant::now();
    assert_eq!(
        post(
            follower_hook,
            &path,
            &signed("workflow_job_waiting", SECRET, &body),
            &body
        ),
        202
    );
    wait_until("the job's runner Job", LONG, || async {
        (world.runner_jobs().await.len() == 1).then_some(())
    })
    .await;
    let took = sent.elapsed();
    println!(
        "delivery to the follower -> runner Job: {} ms",
        took.as_millis()
    );
    assert!(took < Duration::from_secs(1), "took {took:?}");
    world.assert_one_job_each(1).await;
}
