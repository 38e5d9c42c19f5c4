//! Developer tasks: `cargo xtask gen-crds [--check] | test | test-cluster | chaos | cluster
//! up|down|env | bench | keda | image | demo`. Every task that builds images or the local
//! cluster runs the preflight first (`preflight.rs`), before any build.

mod bench;
mod build_cache;
mod cluster;
mod crd_reference;
mod demo;
mod gen_crds;
mod image;
mod module_graph;
mod node;
mod pid;
mod preflight;
mod previous_release;
mod test;
mod timings;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// Developer tasks of the Forgejo runner controller.
#[derive(Parser)]
#[command(name = "cargo xtask", about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Write deploy/crds, deploy/rbac and docs/crd-reference.md from the Rust types.
    GenCrds {
        /// Write nothing; fail and name each file that differs from what the code generates.
        #[arg(long)]
        check: bool,
    },
    /// Run every test tier: fmt, clippy, drift check, module graph, unit tests, then the
    /// cluster tier.
    Test,
    /// Run only the cluster tier (starts and stops the control plane); extra arguments go to
    /// the test binaries, e.g. `cargo xtask test-cluster three_waiting`.
    TestCluster {
        /// Test name filters and libtest flags.
        args: Vec<String>,
    },
    /// Run the fault tier's full set on the local cluster (longer outages, more kill rounds);
    /// `cargo xtask test` runs its CI-sized subset. Figures: docs/reliability.md.
    Chaos,
    /// Manage the local cluster (control plane, kube-scheduler, containerd and a kubelet).
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Measure the design targets on the local control plane; prints figures (docs/benchmarks.md).
    Bench {
        /// The stages to run, comma-separated (default: all, in this order).
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "plan,burst,shared,memory,scale,start,first-step,webhook"
        )]
        only: Vec<bench::Stage>,
        /// Waiting jobs that appear at once, for the latency run.
        #[arg(long, default_value_t = 50)]
        burst: usize,
        /// Pools sharing one server+scope+token, for the request-count run.
        #[arg(long, default_value_t = 10)]
        shared_pools: usize,
        /// Pools in the memory run.
        #[arg(long, default_value_t = 100)]
        pools: usize,
        /// Live Jobs per pool in the memory run.
        #[arg(long, default_value_t = 10)]
        jobs_per_pool: usize,
        /// Waiting jobs, then live Jobs, in the scale run (spread over the pools).
        #[arg(long, default_value_t = 10_000)]
        scale_jobs: usize,
        /// Waiting jobs in the start-latency run on the real node.
        #[arg(long, default_value_t = 50)]
        start_burst: usize,
        /// Measure a release build of the operator (as deployed).
        #[arg(long)]
        release: bool,
        /// Cargo features of the operator build; `system` builds it without jemalloc.
        #[arg(long, default_value = "")]
        features: String,
        /// Instead of the stages: our operator and KEDA's forgejo-runner scaler side by side
        /// on the same cluster and Forgejo stand-in; writes the table into docs/benchmarks.md.
        #[arg(long, conflicts_with = "only")]
        vs_keda: bool,
    },
    /// Build (once, cached) the KEDA operator to compare with (`bench --vs-keda`); print it, its CRD
    /// directory and how to run it out of the cluster against the local one.
    Keda,
    /// Build the container images (operator, runner test, label, pause) as docker-archives
    /// under target/images/, without Docker.
    Image {
        /// The binary for the runner test image's /bin/forgejo-runner (default: $FRC_E2E_RUNNER,
        /// else the runner double built statically).
        #[arg(long)]
        runner: Option<PathBuf>,
    },
    /// Bring up the local demo: cluster with a real node, Forgejo stand-in, the operator
    /// in-cluster, an example pool whose runner pods run their jobs.
    Demo {
        /// Stop once every seeded job ran, instead of waiting for Ctrl-C.
        #[arg(long)]
        exit_when_done: bool,
    },
}

impl Task {
    /// Whether the task builds images or runs the local cluster, so the preflight comes first.
    fn needs_machine(&self) -> bool {
        match self {
            Task::GenCrds { .. } | Task::Keda => false,
            Task::Cluster { action } => matches!(action, ClusterAction::Up),
            Task::Test
            | Task::TestCluster { .. }
            | Task::Chaos
            | Task::Bench { .. }
            | Task::Image { .. }
            | Task::Demo { .. } => true,
        }
    }
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Build (once, cached) and start the control plane on loopback.
    Up,
    /// Stop the processes `up` started and remove their data.
    Down,
    /// Print the path of the admin kubeconfig.
    Env,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root()?;
    if cli.task.needs_machine() {
        preflight::ensure()?;
    }
    match cli.task {
        Task::GenCrds { check } => gen_crds::run(&root, check),
        Task::Test => test::run(&root),
        Task::Bench {
            only,
            burst,
            shared_pools,
            pools,
            jobs_per_pool,
            scale_jobs,
            start_burst,
            release,
            features,
            vs_keda,
        } => bench::run(
            &root,
            &bench::BenchArgs {
                stages: only,
                burst,
                shared_pools,
                pools,
                jobs_per_pool,
                scale_jobs,
                start_burst,
                release,
                features,
                vs_keda,
            },
        ),
        Task::TestCluster { args } => test::cluster_tier(&root, &args),
        Task::Chaos => test::chaos(&root),
        Task::Cluster { action } => match action {
            ClusterAction::Up => {
                let info = cluster::up(&root)?;
                println!(
                    "control plane {} ready at {}; kubeconfig: {}",
                    info.version,
                    info.server,
                    info.admin_kubeconfig.display()
                );
                Ok(())
            }
            ClusterAction::Down => cluster::down(&root),
            ClusterAction::Env => {
                println!("{}", cluster::env(&root)?.display());
                Ok(())
            }
        },
        Task::Demo { exit_when_done } => demo::run(&root, exit_when_done),
        Task::Keda => cluster::print_keda(&root),
        Task::Image { runner } => image::run(&root, runner.as_deref()),
    }
}

/// The workspace root: the parent of this crate's manifest directory.
fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .context("xtask's manifest directory has no parent")
}
