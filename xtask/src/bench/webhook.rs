//! Job waiting in the stand-in → its runner Job, for a pool woken by Forgejo's
//! `workflow_job` webhooks (pollInterval 5m) and a pool that only polls (pollInterval 30s),
//! single jobs and a burst of 50, in one run; then each idle pool's Forgejo requests.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use forgejo_stand_in::{StandIn, StandInConfig, StandInJob};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;

use super::TOKEN;
use super::setup::{OperatorBinary, apply_pool, fresh_namespace, pool_value, start_operator_with};
use super::start::{Timeline, percentile, watch};

/// Single jobs per pool, one after the other.
const SINGLES: usize = 5;
/// Jobs of the burst.
const BURST: usize = 50;
/// The pause before each single job: longer than the receiver's spacing of wakes.
const SINGLE_SPACING: Duration = Duration::from_millis(1500);
/// How long one job may wait for its Job (a polled pool waits up to an interval).
const JOB_DEADLINE: Duration = Duration::from_secs(90);
/// How long each pool is watched idle for its Forgejo requests.
const IDLE_WINDOW: Duration = Duration::from_secs(300);
/// The polled pool's token: its requests are told apart from the woken pool's by it.
const POLLED_TOKEN: &str = "bench-token-2-not-a-secret";
/// The hook's secret.
const HOOK_SECRET: &str = "bench-hook-secret";

/// One pool of the stage.
struct Pool {
    name: &'static str,
    label: &'static str,
    interval: &'static str,
    /// The index of its token in the stand-in's tokens.
    token_index: usize,
}

const WOKEN: Pool = Pool {
    name: "wh-woken",
    label: "woken",
    interval: "5m",
    token_index: 0,
};
const POLLED: Pool = Pool {
    name: "wh-polled",
    label: "polled",
    interval: "30s",
    token_index: 1,
};

/// One pool's figures: single jobs, the burst, and requests per idle hour.
struct Row {
    pool: &'static Pool,
    singles: Vec<f64>,
    burst: Vec<f64>,
    per_hour: f64,
}

/// Runs the stage and prints its figures.
pub(super) async fn bench_webhook(
    client: &Client,
    operator: &OperatorBinary,
) -> anyhow::Result<()> {
    let ns = "bench-webhook";
    let forgejo = stand_in_and_secrets(client, ns).await?;
    let hook_addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let timeline = Timeline::default();
    let watches = watch(client, ns, &timeline);
    let _operator = start_operator_with(operator, ns, &[format!("--webhook-addr={hook_addr}")])?;
    for pool in [&WOKEN, &POLLED] {
        apply_pool(client, ns, pool_spec(pool, &forgejo)).await?;
    }
    create_hook(
        &forgejo,
        &format!("http://{hook_addr}/webhooks/{ns}/{}", WOKEN.name),
    )
    .await?;
    // Both pools have made their first poll before a job comes.
    wait_for(Duration::from_secs(30), || {
        [&WOKEN, &POLLED]
            .iter()
            .all(|p| listings_of(&forgejo, p) > 0)
    })
    .await?;
    let mut rows = Vec::new();
    for pool in [&WOKEN, &POLLED] {
        let (singles, burst) = measure(&forgejo, &timeline, pool).await?;
        rows.push(Row {
            pool,
            singles,
            burst,
            per_hour: 0.0,
        });
    }
    // Idle: every job has its Job; what each pool asks of Forgejo meanwhile.
    let before: Vec<usize> = rows.iter().map(|r| requests_of(&forgejo, r.pool)).collect();
    tokio::time::sleep(IDLE_WINDOW).await;
    for (row, before) in rows.iter_mut().zip(before) {
        let made = requests_of(&forgejo, row.pool) - before;
        row.per_hour = made as f64 * 3600.0 / IDLE_WINDOW.as_secs_f64();
    }
    for task in watches {
        task.abort();
    }
    report(&forgejo, &rows);
    Ok(())
}

/// The stand-in, with both pools' tokens, and the namespace with their Secrets.
async fn stand_in_and_secrets(client: &Client, ns: &str) -> anyhow::Result<StandIn> {
    fresh_namespace(client, ns).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    for (name, key, value) in [
        ("forgejo-token-2", "token", POLLED_TOKEN),
        ("hook", "secret", HOOK_SECRET),
    ] {
        let secret: Secret = serde_json::from_value(
            json!({"metadata": {"name": name}, "stringData": {key: value}}),
        )?;
        secrets.create(&PostParams::default(), &secret).await?;
    }
    let mut config = StandInConfig::with_token("15.0.3+gitea-1.22.0", TOKEN);
    config.tokens.push(POLLED_TOKEN.to_owned());
    Ok(StandIn::start(config))
}

/// The RunnerDeployment of `pool`: the woken one takes webhooks, the polled one has a token
/// of its own (so that their requests are told apart and no listing is shared).
fn pool_spec(pool: &Pool, forgejo: &StandIn) -> serde_json::Value {
    let mut value = pool_value(
        pool.name,
        &forgejo.url(),
        &format!("{}:host", pool.label),
        BURST * 2,
        pool.interval,
    );
    if pool.token_index == 1 {
        value["spec"]["tokenSecretRef"] = json!({"name": "forgejo-token-2"});
    } else {
        value["spec"]["webhook"] = json!({"secretRef": {"name": "hook"}});
    }
    value
}

/// Single jobs one after the other, then a burst: milliseconds from waiting to Job.
async fn measure(
    forgejo: &StandIn,
    timeline: &Timeline,
    pool: &Pool,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    println!(
        "==> webhook: {} (pollInterval {})",
        pool.name, pool.interval
    );
    let mut singles = Vec::new();
    for i in 0..SINGLES {
        // A single job is one that comes alone: after the receiver's spacing of wakes (a
        // job within a second of the last wake waits for the trailing one).
        tokio::time::sleep(SINGLE_SPACING).await;
        let added = Instant::now();
        let id = forgejo.add_job(job(pool, &format!("single-{i}"))).id;
        singles.push(job_seen(timeline, &[(id, added)]).await?[0]);
    }
    // A burst on a quiet pool, as the singles: one within a second of the last wake waits
    // for the trailing one (at most one extra poll per pool per second).
    tokio::time::sleep(SINGLE_SPACING).await;
    let added: Vec<(i64, Instant)> = (0..BURST)
        .map(|i| {
            (
                forgejo.add_job(job(pool, &format!("burst-{i}"))).id,
                Instant::now(),
            )
        })
        .collect();
    let burst = job_seen(timeline, &added).await?;
    Ok((singles, burst))
}

fn report(forgejo: &StandIn, rows: &[Row]) {
    let delivered = forgejo.deliveries();
    println!(
        "webhook: {} deliveries, {} answered 202, {} answered 204",
        delivered.len(),
        delivered.iter().filter(|d| d.status == Some(202)).count(),
        delivered.iter().filter(|d| d.status == Some(204)).count()
    );
    println!();
    println!(
        "| Pool | Single jobs ({SINGLES}): p50 / p95 | Burst of {BURST}: p50 / p95 | Forgejo requests per idle hour ({} s window) |",
        IDLE_WINDOW.as_secs()
    );
    println!("|---|---|---|---|");
    for row in rows {
        let how = if row.pool.token_index == 0 {
            "webhooks"
        } else {
            "polling only"
        };
        println!(
            "| {how}, pollInterval {} | {:.0} ms / {:.0} ms | {:.0} ms / {:.0} ms | {:.0} |",
            row.pool.interval,
            percentile(&row.singles, 0.5),
            percentile(&row.singles, 0.95),
            percentile(&row.burst, 0.5),
            percentile(&row.burst, 0.95),
            row.per_hour
        );
    }
}

fn job(pool: &Pool, name: &str) -> StandInJob {
    StandInJob::new("bench/app", name, &[pool.label])
}

/// The stand-in's job listings made with `pool`'s token.
fn listings_of(forgejo: &StandIn, pool: &Pool) -> usize {
    forgejo
        .requests()
        .iter()
        .filter(|r| r.token_index == Some(pool.token_index) && super::setup::is_listing(r))
        .count()
}

/// Every request the stand-in answered with `pool`'s token.
fn requests_of(forgejo: &StandIn, pool: &Pool) -> usize {
    forgejo
        .requests()
        .iter()
        .filter(|r| r.token_index == Some(pool.token_index))
        .count()
}

/// Creates an organization hook that sends `workflow_job_waiting` to `url`, through the
/// stand-in's API as Forgejo's.
async fn create_hook(forgejo: &StandIn, url: &str) -> anyhow::Result<()> {
    let client = forgejo::Client::new(
        &forgejo.url(),
        forgejo::Token::new(TOKEN),
        forgejo::ClientOptions::default(),
    )?;
    let hook = forgejo::NewHook {
        url: url.to_owned(),
        secret: HOOK_SECRET.to_owned(),
        events: vec!["workflow_job_waiting".to_owned()],
    };
    client
        .create_hook(&forgejo::Scope::Organization("bench".into()), &hook)
        .await?;
    Ok(())
}

/// For each (job, when it was added), the milliseconds until its Job was seen.
async fn job_seen(timeline: &Timeline, added: &[(i64, Instant)]) -> anyhow::Result<Vec<f64>> {
    let deadline = Instant::now() + JOB_DEADLINE;
    loop {
        let seen: Vec<Option<f64>> = {
            let map = timeline.lock().unwrap_or_else(|p| p.into_inner());
            added
                .iter()
                .map(|(id, at)| {
                    let job = map.get(&id.to_string())?.job?;
                    Some(job.saturating_duration_since(*at).as_secs_f64() * 1e3)
                })
                .collect()
        };
        if seen.iter().all(Option::is_some) {
            return Ok(seen.into_iter().flatten().collect());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "webhook: {} of {} jobs have a Job after {JOB_DEADLINE:?}",
            seen.iter().flatten().count(),
            added.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "webhook: pools not polled after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
