//! Many pools on one server, organization and token: one job listing per interval.

use std::time::Duration;

use forgejo_stand_in::{StandIn, StandInConfig};
use kube::Client;

use super::TOKEN;
use super::setup::{
    OperatorBinary, apply_pool, fresh_namespace, listings, pool_value, start_operator,
};

/// Many pools on one server+scope+token: how many job listings per interval.
pub(super) async fn bench_shared_polls(
    client: &Client,
    operator: &OperatorBinary,
    pools: usize,
) -> anyhow::Result<()> {
    let ns = "bench-shared";
    fresh_namespace(client, ns).await?;
    let forgejo = StandIn::start(StandInConfig::with_token("15.0.3+gitea-1.22.0", TOKEN));
    for i in 0..pools {
        apply_pool(
            client,
            ns,
            pool_value(
                &format!("shared-{i}"),
                &forgejo.url(),
                &format!("label-{i}"),
                10,
                "2s",
            ),
        )
        .await?;
    }
    let _operator = start_operator(operator, ns)?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let before = listings(&forgejo);
    let window = Duration::from_secs(20);
    tokio::time::sleep(window).await;
    let during = listings(&forgejo) - before;
    let intervals = window.as_secs_f64() / 2.0;
    println!(
        "shared polls: {pools} pools, one server+org+token, interval 2 s: {during} job listings in {}s = {:.2} per interval (target 1)",
        window.as_secs(),
        during as f64 / intervals
    );
    Ok(())
}
