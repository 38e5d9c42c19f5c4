//! The webhook receiver against a real apiserver and the stand-in: a signed
//! `workflow_job_waiting` delivery makes a pool that polls every 5 minutes create the job's
//! runner Job within a second; what is not signed, too large or not a waiting job of the
//! pool stamps nothing and creates nothing; a delivery to the follower wakes the leader; a
//! dropped delivery is found by the next poll; hostile input leaves the operator scheduling.

mod support;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use forgejo_stand_in::{StandInJob, WebhookFault};
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
    status_line(&mut stream)
}

/// The status of the answer on `stream`, read up to the end of its status line: a server
/// may keep the connection open after it.
fn status_line(stream: &mut TcpStream) -> u16 {
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n") && answer.len() < 256 {
        match stream.read(&mut byte) {
            Ok(1) => answer.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&answer)
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
    hooked_pool_polling(world, name, "5m").await;
}

/// A pool on `linux` that polls every `interval` and takes webhooks signed with [`SECRET`].
async fn hooked_pool_polling(world: &World, name: &str, interval: &str) {
    world.put_secret("hook", "secret", SECRET).await;
    world
        .create_pool_from(json!({
            "metadata": {"name": name},
            "spec": {
                "forgejoServer": world.forgejo.url(),
                "organization": "faro",
                "labels": "linux:host",
                "tokenSecretRef": {"name": "forgejo-token", "key": "token"},
                "pollInterval": interval,
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

/// Creates an organization hook on the stand-in, through its API as Forgejo's, that sends
/// `workflow_job_waiting` to `url` signed with [`SECRET`].
async fn create_org_hook(world: &World, url: &str) {
    let client = forgejo::Client::new(
        &world.forgejo.url(),
        forgejo::Token::new(world.token.clone()),
        forgejo::ClientOptions::default(),
    )
    .expect("a Forgejo client");
    let hook = forgejo::NewHook {
        url: url.to_owned(),
        secret: SECRET.to_owned(),
        events: vec!["workflow_job_waiting".to_owned()],
    };
    client
        .create_hook(&forgejo::Scope::Organization("faro".into()), &hook)
        .await
        .expect("creating the hook");
}

#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn forgejos_own_delivery_wakes_the_pool_and_a_dropped_one_waits_for_the_next_poll() {
    let world = World::new("hook-e2e").await;
    hooked_pool_polling(&world, "pool", "4s").await;
    let hook_addr = free_addr();
    let _operator = Operator::start_with(
        &world.ns,
        &[
            "--leader-election=false",
            &format!("--webhook-addr={hook_addr}"),
        ],
    );
    world
        .wait_for_condition("pool", "Ready", "True", "Polling")
        .await;
    create_org_hook(
        &world,
        &format!("http://{hook_addr}/webhooks/{}/pool", world.ns),
    )
    .await;

    // Delivered: the Job comes well within the 4 s interval.
    let delivered = world
        .forgejo
        .add_job(StandInJob::new("faro/app", "build", &["linux"]));
    let added = Instant::now();
    wait_until("the delivered job's runner Job", LONG, || async {
        (world.runner_jobs().await.len() == 1).then_some(())
    })
    .await;
    let took = added.elapsed();
    println!(
        "waiting in the stand-in -> runner Job, delivered: {} ms",
        took.as_millis()
    );
    let sent = world.forgejo.deliveries();
    assert!(
        sent.iter()
            .any(|d| d.job_id == delivered.id && d.status == Some(202)),
        "{sent:?}"
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");

    // Dropped: nothing wakes the pool; its next poll finds the job.
    world.forgejo.set_webhook_fault(WebhookFault::Drop);
    let polls = world.polls();
    let dropped = world
        .forgejo
        .add_job(StandInJob::new("faro/app", "test", &["linux"]));
    wait_until("the dropped job's runner Job", LONG, || async {
        (world.runner_jobs().await.len() == 2).then_some(())
    })
    .await;
    assert!(world.polls() > polls, "the Job came without a poll");
    let records = world.forgejo.deliveries();
    let of_dropped: Vec<_> = records.iter().filter(|d| d.job_id == dropped.id).collect();
    assert!(
        !of_dropped.is_empty() && of_dropped.iter().all(|d| d.status.is_none()),
        "{of_dropped:?}"
    );
    world.assert_one_job_each(2).await;
}

/// The resident memory of process `pid`, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Sends one random request: method, path, headers and body from `seed`; never waits long.
fn hostile_request(addr: SocketAddr, ns: &str, seed: u64) {
    let pick = |salt: u64, n: u64| {
        (seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(salt * 1442695040888963407)
            >> 33)
            % n
    };
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(15)));
    let method = ["POST", "GET", "PUT", "DELETE", "POST", "POST"][pick(1, 6) as usize];
    let path = match pick(2, 4) {
        0 => format!("/webhooks/{ns}/pool"),
        1 => format!("/webhooks/{ns}/nope"),
        2 => "/webhooks/../../etc/passwd".to_owned(),
        _ => format!("/{}", "x".repeat(pick(3, 3000) as usize)),
    };
    let body: Vec<u8> = (0..pick(4, 65_536)).map(|i| (i ^ seed) as u8).collect();
    let claimed = if pick(5, 5) == 0 {
        2 * 1024 * 1024
    } else {
        body.len()
    };
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {claimed}\r\n");
    if pick(6, 2) == 0 {
        head.push_str(&format!(
            "X-Forgejo-Signature: {:064x}\r\nX-Forgejo-Event: workflow_job_waiting\r\n",
            seed
        ));
    }
    if pick(7, 3) == 0 {
        head.push_str(&format!(
            "X-Junk: {}\r\n",
            "j".repeat(pick(8, 8000) as usize)
        ));
    }
    head.push_str("Connection: close\r\n\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
}

#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn hostile_input_neither_stops_scheduling_nor_grows_memory_nor_panics() {
    let world = World::new("hook-hostile").await;
    hooked_pool_polling(&world, "pool", "1s").await;
    let hook_addr = free_addr();
    let mut operator = Operator::start_with(
        &world.ns,
        &[
            "--leader-election=false",
            &format!("--webhook-addr={hook_addr}"),
        ],
    );
    world
        .wait_for_condition("pool", "Ready", "True", "Polling")
        .await;
    let before = rss_mib(operator.pid());

    // Slow senders: they promise a body and send a byte now and then.
    let slow: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                let Ok(mut stream) = TcpStream::connect(hook_addr) else {
                    return;
                };
                let _ = stream.write_all(
                    b"POST /webhooks/x/y HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n",
                );
                for _ in 0..15 {
                    if stream.write_all(b"{").is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
        })
        .collect();
    // A burst of 1,000 random requests from 8 senders, while jobs come.
    let ns = world.ns.clone();
    let burst: Vec<_> = (0..8u64)
        .map(|sender| {
            let ns = ns.clone();
            std::thread::spawn(move || {
                for i in 0..125u64 {
                    hostile_request(hook_addr, &ns, sender * 1000 + i);
                }
            })
        })
        .collect();
    let peak = std::sync::Mutex::new(before);
    let sample = || {
        let now = rss_mib(operator.pid());
        let mut peak = peak.lock().unwrap();
        *peak = peak.max(now);
    };
    for n in 0..3 {
        world
            .forgejo
            .add_job(StandInJob::new("faro/app", &format!("job-{n}"), &["linux"]));
    }
    wait_until("3 runner Jobs during the flood", LONG, || async {
        sample();
        (world.runner_jobs().await.len() == 3).then_some(())
    })
    .await;
    for sender in burst {
        let _ = sender.join();
        sample();
    }
    for sender in slow {
        let _ = sender.join();
    }
    let peak = *peak.lock().unwrap();
    println!("operator RSS: {before:.1} MiB before, {peak:.1} MiB peak during the flood");
    assert!(operator.is_running(), "the operator exited");
    assert!(
        !operator.logs().contains("panicked"),
        "the operator panicked"
    );
    assert_eq!(operator.get("/healthz").map(|(s, _)| s), Some(200));
    // 32 bodies of at most 1 MiB at once, plus the connections' buffers.
    assert!(
        peak < before + 64.0,
        "RSS grew from {before:.1} to {peak:.1} MiB"
    );
    let timeouts =
        operator.metric("forgejo_runner_controller_webhook_deliveries_total{outcome=\"timeout\"}");
    println!("timeouts counted: {timeouts:?}");
    world.assert_one_job_each(3).await;
}
