//! N waiting jobs at once: how long until N Jobs exist, against N sequential creates.

use std::time::{Duration, Instant};

use forgejo_stand_in::{StandIn, StandInConfig, StandInJob};
use kube::Client;

use super::TOKEN;
use super::setup::{
    OperatorBinary, apply_pool, fresh_namespace, listings, measure_one_create, pool_value,
    start_operator, wait_for_jobs,
};

/// N jobs appear at once: how long until N Jobs exist, against N sequential apiserver creates.
pub(super) async fn bench_burst(
    client: &Client,
    operator: &OperatorBinary,
    n: usize,
) -> anyhow::Result<()> {
    let ns = "bench-burst";
    fresh_namespace(client, ns).await?;
    let one_create = measure_one_create(client, ns).await?;

    let forgejo = StandIn::start(StandInConfig::with_token("15.0.3+gitea-1.22.0", TOKEN));
    apply_pool(
        client,
        ns,
        pool_value("burst", &forgejo.url(), "docker", n, "1s"),
    )
    .await?;
    let _operator = start_operator(operator, ns)?;
    // Let the operator settle on an empty pool, then add every job at once.
    while listings(&forgejo) == 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = listings(&forgejo);
    for i in 0..n {
        forgejo.add_job(StandInJob::new(
            "bench/app",
            &format!("job-{i}"),
            &["docker"],
        ));
    }
    // The next listing answers with all of them: time from that answer (seen within ~2 ms).
    let watcher = {
        let forgejo = forgejo.clone();
        tokio::spawn(async move {
            while listings(&forgejo) == before {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Instant::now()
        })
    };
    let appeared = Instant::now();
    wait_for_jobs(client, ns, n, Duration::from_secs(120)).await?;
    let done = Instant::now();
    let polled = watcher.await?;
    println!(
        "burst: {n} waiting jobs -> {n} Jobs {:.0} ms after the poll that listed them ({:.0} ms after they appeared; poll interval 1 s)",
        done.duration_since(polled).as_secs_f64() * 1e3,
        done.duration_since(appeared).as_secs_f64() * 1e3
    );
    println!(
        "burst: one apiserver Job create {:.1} ms (mean of 20); target N x create + 100 ms = {:.0} ms after the poll answer",
        one_create.as_secs_f64() * 1e3,
        (one_create * n as u32).as_secs_f64() * 1e3 + 100.0
    );
    Ok(())
}
