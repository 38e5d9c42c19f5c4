//! `cargo xtask bench`: measures the design targets (docs/architecture.md, "Targets") and
//! prints the figures (recorded in docs/benchmarks.md). Separate from the tests: nothing here
//! asserts a time.
//!
//! Stages (`--only` picks some):
//! - `plan`: `scheduler::plan` on large inputs (pure, no cluster);
//! - on the local control plane, with the Forgejo stand-in and the operator binary:
//!   `burst` (N waiting jobs → N Jobs), `shared` (Forgejo listings per interval with many
//!   pools on one server+scope+token), `memory` (100 pools, 1,000 live Jobs: creation time,
//!   RSS, idle CPU), `scale` (the same with 10,000) and `start` (a burst on the real node:
//!   poll answer → runner pod Running, p50 and p95, and where the time goes), and
//!   `first-step` (on the real node: job waiting → its first log row, single jobs and a
//!   burst, cold and with 2 and 20 warm runners), and `webhook` (job waiting → its Job,
//!   single jobs and a burst of 50, woken by Forgejo's webhooks at pollInterval 5m and
//!   polled at 30s, with each pool's Forgejo requests while idle).
//! - `--vs-keda` instead of the stages: our operator and KEDA's `forgejo-runner` scaler side
//!   by side in one run (`vs_keda/`), one table written into docs/benchmarks.md.
//!
//! `FRC_BENCH_WRAP` prefixes the operator's command line, e.g. `heaptrack -o /tmp/operator`
//! to profile its heap (the figures are then the profiler's, not the operator's).

mod burst;
mod first_step;
mod fleet;
mod plan;
mod setup;
mod shared;
mod start;
mod vs_keda;
mod webhook;

use std::path::Path;

use crate::cluster;
use crate::demo::build_operator;

const TOKEN: &str = "bench-token-not-a-secret";

/// One part of the bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    /// `scheduler::plan` on 1,000 waiting jobs.
    Plan,
    /// N waiting jobs at once → N Jobs.
    Burst,
    /// Forgejo listings per interval with many pools sharing a server, scope and token.
    Shared,
    /// Memory, CPU and creation time with 100 pools and 1,000 live Jobs.
    Memory,
    /// The same with 10,000 waiting jobs and live Jobs.
    Scale,
    /// A burst on the real node: poll answer → runner pod Running.
    Start,
    /// On the real node: job waiting → first log row, cold and with warm runners.
    FirstStep,
    /// Job waiting → its Job, woken by webhooks (pollInterval 5m) and polled (30s).
    Webhook,
}

/// What to measure, and how big.
pub struct BenchArgs {
    /// The stages to run, in this order.
    pub stages: Vec<Stage>,
    /// Waiting jobs in the latency run.
    pub burst: usize,
    /// Pools sharing one server+scope+token in the request-count run.
    pub shared_pools: usize,
    /// Pools in the memory and scale runs.
    pub pools: usize,
    /// Live Jobs per pool in the memory run.
    pub jobs_per_pool: usize,
    /// Waiting jobs, then live Jobs, in the scale run (spread over the pools).
    pub scale_jobs: usize,
    /// Waiting jobs in the start-latency run on the real node.
    pub start_burst: usize,
    /// Measure a release build of the operator (as deployed) instead of a debug build.
    pub release: bool,
    /// Cargo features of the operator build (`system`: without jemalloc, glibc's malloc).
    pub features: String,
    /// Instead of the stages: our operator and KEDA side by side (issue 16).
    pub vs_keda: bool,
}

/// Runs the chosen stages and prints their figures.
pub fn run(root: &Path, args: &BenchArgs) -> anyhow::Result<()> {
    if args.vs_keda {
        return run_vs_keda(root, args);
    }
    if args.stages.contains(&Stage::Plan) {
        plan::bench_plan();
    }
    if args.stages.iter().all(|s| *s == Stage::Plan) {
        return Ok(());
    }
    println!("==> bench: starting the local control plane");
    let info = cluster::up(root)?;
    let result = (|| {
        let operator_kubeconfig = cluster::install_operator_identity(root, &info.admin_kubeconfig)?;
        let operator = setup::OperatorBinary {
            path: build_operator(root, args.release, &args.features)?,
            kubeconfig: operator_kubeconfig,
            build: if args.release { "release" } else { "debug" },
        };
        let runtime = tokio::runtime::Runtime::new()?;
        runtime.block_on(async {
            let client = setup::admin_client(&info.admin_kubeconfig).await?;
            for stage in &args.stages {
                match stage {
                    Stage::Plan => {}
                    Stage::Burst => burst::bench_burst(&client, &operator, args.burst).await?,
                    Stage::Shared => {
                        shared::bench_shared_polls(&client, &operator, args.shared_pools).await?;
                    }
                    Stage::Memory => {
                        let size = fleet::Fleet::new("memory", args.pools, args.jobs_per_pool);
                        fleet::bench_fleet(&client, &operator, &size).await?;
                    }
                    Stage::Start => {
                        start::bench_start(root, &client, &operator, args.start_burst).await?;
                    }
                    Stage::FirstStep => {
                        first_step::bench_first_step(root, &client, &operator).await?;
                    }
                    Stage::Webhook => webhook::bench_webhook(&client, &operator).await?,
                    Stage::Scale => {
                        let per_pool = args.scale_jobs.div_ceil(args.pools.max(1));
                        let size = fleet::Fleet::new("scale", args.pools, per_pool);
                        fleet::bench_fleet(&client, &operator, &size).await?;
                    }
                }
            }
            anyhow::Ok(())
        })
    })();
    println!("==> bench: stopping the local control plane");
    let stopped = cluster::down(root);
    result?;
    stopped
}

/// `--vs-keda`: builds (once) the KEDA operator, brings the local control plane up, runs the
/// comparison and brings the control plane down.
fn run_vs_keda(root: &Path, args: &BenchArgs) -> anyhow::Result<()> {
    let began = std::time::Instant::now();
    let keda = cluster::ensure_keda(root)?;
    // Built before the control plane comes up, to keep the cluster session short.
    let operator_path = build_operator(root, args.release, &args.features)?;
    println!(
        "==> bench --vs-keda [{:.0} s]: starting the local control plane",
        began.elapsed().as_secs_f64()
    );
    let info = cluster::up(root)?;
    let result = (|| {
        let operator_kubeconfig = cluster::install_operator_identity(root, &info.admin_kubeconfig)?;
        let operator = setup::OperatorBinary {
            path: operator_path,
            kubeconfig: operator_kubeconfig,
            build: if args.release { "release" } else { "debug" },
        };
        let runtime = tokio::runtime::Runtime::new()?;
        runtime.block_on(async {
            let client = setup::admin_client(&info.admin_kubeconfig).await?;
            vs_keda::bench_vs_keda(root, &client, &operator, &keda, &info.admin_kubeconfig).await
        })
    })();
    println!(
        "==> bench --vs-keda [{:.0} s]: stopping the local control plane",
        began.elapsed().as_secs_f64()
    );
    let stopped = cluster::down(root);
    println!(
        "==> bench --vs-keda [{:.0} s]: done",
        began.elapsed().as_secs_f64()
    );
    result?;
    stopped
}
