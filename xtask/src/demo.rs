//! `cargo xtask demo`: the whole system on this machine, in one command.
//!
//! Builds the images, starts the local cluster (control plane and a real node), installs the
//! operator in-cluster from its image (`kubectl apply --server-side -k` of a local overlay of
//! `deploy/`), starts a Forgejo stand-in seeded with waiting jobs where pods reach it, and
//! applies an example RunnerDeployment. Runner pods run the runner double (the runner test
//! image; `FRC_E2E_RUNNER` puts a real forgejo-runner there instead) against the stand-in's
//! runner service. It prints jobs seen → Jobs created → pods Running → each step's output as
//! the stand-in receives it → results, then `kubectl logs` of one pod (the runner's own
//! lines, as forgejo-runner prints them: the steps' output is only in Forgejo). Ctrl-C stops
//! everything it started.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use forgejo_stand_in::{StandIn, StandInConfig, StandInJob};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt as _};
use serde_json::json;

use crate::{cluster, image, node};

const NAMESPACE: &str = "demo";
const TOKEN: &str = "demo-token-not-a-secret";
/// (job name, label, step): two host-mode jobs and one in the label image (kubernetes mode).
const SEEDED: [(&str, &str, &str); 3] = [
    (
        "build",
        "linux",
        "echo building on $(uname -n) as uid $(id -u)",
    ),
    ("test", "linux", "echo 3 tests passed"),
    (
        "in-image",
        "k8s",
        "echo running in the label image: $(cat /etc/frc-label-image)",
    ),
];

/// Runs the demo until Ctrl-C (or, with `exit_when_done`, until every seeded job ran).
pub fn run(root: &Path, exit_when_done: bool) -> anyhow::Result<()> {
    println!("==> demo: building the images (operator, runner double, label image, pause)");
    let images = image::build_all(root, None)?;
    println!(
        "==> demo: starting the local cluster (the first run builds etcd and Kubernetes from Go modules once: 28 min on a fresh 2-core machine)"
    );
    let info = cluster::up(root)?;
    let result = (|| {
        for built in images.all() {
            cluster::import_image(root, &built.tar)?;
        }
        let overlay = cluster::write_local_overlay(root, &images.operator.reference, NAMESPACE)?;
        cluster::install_identity_from(root, &info.admin_kubeconfig, &overlay)?;
        println!(
            "==> demo: operator installed in-cluster from {} (kubectl apply --server-side -k {})",
            images.operator.reference,
            overlay.display()
        );
        let kubectl = cluster::ensure_binaries(root)?.kubectl();
        let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
        runtime.block_on(demo(
            &info.admin_kubeconfig,
            &kubectl,
            &images,
            exit_when_done,
        ))
    })();
    println!("==> demo: stopping the local cluster");
    let stopped = cluster::down(root);
    result?;
    stopped
}

pub(crate) fn build_operator(
    root: &Path,
    release: bool,
    features: &str,
) -> anyhow::Result<PathBuf> {
    let mut args = vec!["build", "--quiet", "-p", "operator"];
    if release {
        args.push("--release");
    }
    // `system` measures glibc's malloc: the operator without its default jemalloc.
    match features {
        "" => {}
        "system" => args.push("--no-default-features"),
        features => args.extend(["--features", features]),
    }
    let status = Command::new("cargo")
        .args(&args)
        .current_dir(root)
        .status()
        .context("running cargo build -p operator")?;
    anyhow::ensure!(status.success(), "cargo build -p operator failed");
    let metadata = Command::new("cargo")
        .args(["metadata", "--format-version=1", "--no-deps"])
        .current_dir(root)
        .output()
        .context("running cargo metadata")?;
    let metadata: serde_json::Value = serde_json::from_slice(&metadata.stdout)?;
    let target = metadata["target_directory"]
        .as_str()
        .context("cargo metadata has no target_directory")?;
    let profile = if release { "release" } else { "debug" };
    Ok(PathBuf::from(target).join(profile).join("operator"))
}

async fn demo(
    admin_kubeconfig: &Path,
    kubectl: &Path,
    images: &image::TestImages,
    exit_when_done: bool,
) -> anyhow::Result<()> {
    let kubeconfig = kube::config::Kubeconfig::read_from(admin_kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let client = Client::try_from(config)?;

    // Pods reach this machine at the node's address, not at loopback.
    let forgejo = StandIn::start(StandInConfig {
        bind: SocketAddr::new(node::NODE_IP.into(), 0),
        ..StandInConfig::with_token("15.0.3+gitea-1.22.0", TOKEN)
    });
    println!(
        "==> demo: Forgejo stand-in (Forgejo 15 API and runner service) at {}",
        forgejo.url()
    );
    let mut seeded = BTreeMap::new();
    for (name, label, step) in SEEDED {
        let job = forgejo.add_job(StandInJob::new("demo/app", name, &[label]).with_steps(&[step]));
        println!(
            "    job seen: #{} {:?} waits for a runner with label {label:?}",
            job.id, job.name
        );
        seeded.insert(job.id, name);
    }

    apply(&client, admin_objects(&forgejo.url(), images)).await?;
    println!(
        "==> demo: RunnerDeployment demo/runners applied (labels linux:host and k8s:kubernetes://{}, maxRunners 3, pollInterval 2s)",
        images.label.reference
    );

    let kubectl_path = kubectl;
    let kubectl = format!(
        "{} --kubeconfig {}",
        kubectl.display(),
        admin_kubeconfig.display()
    );
    let mut logs = Command::new(kubectl_path);
    logs.arg(format!("--kubeconfig={}", admin_kubeconfig.display()));
    let finished = tokio::select! {
        result = follow(&client, &forgejo, &seeded, &kubectl, logs) => { result?; true }
        _ = tokio::signal::ctrl_c() => false,
    };
    if finished {
        println!("==> demo: every seeded job ran");
        if !exit_when_done {
            println!(
                "==> demo: look around in another terminal, then press Ctrl-C to stop everything:"
            );
            println!("    {kubectl} -n demo get rd");
            println!("    {kubectl} -n demo describe rd runners");
            println!("    {kubectl} -n demo get jobs,pods");
            println!(
                "    {kubectl} -n forgejo-runner-system logs deploy/forgejo-runner-controller"
            );
            tokio::signal::ctrl_c().await?;
        }
    }
    Ok(())
}

/// The namespace, the token Secret and the example pool.
fn admin_objects(server: &str, images: &image::TestImages) -> Vec<serde_json::Value> {
    let labels = format!("linux:host,k8s:kubernetes://{}", images.label.reference);
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "forgejo-token", "namespace": NAMESPACE},
               "stringData": {"token": TOKEN}}),
        json!({"apiVersion": "forgejo.runners.dev/v1alpha1", "kind": "RunnerDeployment",
               "metadata": {"name": "runners", "namespace": NAMESPACE},
               "spec": {"forgejoServer": server, "organization": "demo", "labels": labels,
                        "tokenSecretRef": {"name": "forgejo-token"},
                        "runnerImage": images.runner.reference,
                        "pollInterval": "2s", "maxRunners": 3}}),
    ]
}

async fn apply(client: &Client, objects: Vec<serde_json::Value>) -> anyhow::Result<()> {
    let params = PatchParams::apply("xtask-demo").force();
    for object in objects {
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match object["kind"].as_str() {
            Some("Namespace") => {
                Api::<Namespace>::all(client.clone())
                    .patch(&name, &params, &Patch::Apply(&object))
                    .await?;
            }
            Some("Secret") => {
                Api::<Secret>::namespaced(client.clone(), NAMESPACE)
                    .patch(&name, &params, &Patch::Apply(&object))
                    .await?;
            }
            _ => {
                Api::<api::RunnerDeployment>::namespaced(client.clone(), NAMESPACE)
                    .patch(&name, &params, &Patch::Apply(&object))
                    .await?;
            }
        }
    }
    Ok(())
}

/// Prints what happens, as it happens, until every seeded job has a result: Jobs created,
/// pod phases from the real kubelet, each log line the stand-in receives, results; then the
/// `kubectl logs` of one runner pod.
async fn follow(
    client: &Client,
    forgejo: &StandIn,
    seeded: &BTreeMap<i64, &str>,
    kubectl: &str,
    mut logs: Command,
) -> anyhow::Result<()> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let selector = scheduler::labels::owned_jobs_selector();
    let mut announced = BTreeSet::new();
    let mut phases: BTreeMap<String, String> = BTreeMap::new();
    let mut printed_rows: BTreeMap<i64, usize> = BTreeMap::new();
    let mut done = BTreeSet::new();
    let mut job_names: BTreeMap<i64, String> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    let pods_finished = |phases: &BTreeMap<String, String>| {
        phases.len() >= seeded.len() && phases.values().all(|p| p == "Succeeded" || p == "Failed")
    };
    while done.len() < seeded.len() || !pods_finished(&phases) {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the seeded jobs did not all finish within 5 minutes; see {kubectl} -n demo get pods"
        );
        for job in jobs
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
        {
            let name = job.name_any();
            let Some(id) = job
                .labels()
                .get(scheduler::labels::FORGEJO_JOB_ID)
                .and_then(|id| id.parse::<i64>().ok())
            else {
                continue;
            };
            if announced.insert(name.clone()) {
                println!("    Job created: {name} for Forgejo job #{id}");
                job_names.insert(id, name);
            }
        }
        for pod in pods
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
        {
            let phase = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default();
            if phases.get(&pod.name_any()) != Some(&phase) {
                println!(
                    "    pod {} {phase} on {}",
                    pod.name_any(),
                    pod.spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .unwrap_or_else(|| "(not scheduled yet)".into())
                );
                phases.insert(pod.name_any(), phase);
            }
        }
        for job in forgejo.jobs() {
            let Some(name) = seeded.get(&job.id) else {
                continue;
            };
            let rows = forgejo.log_lines(job.id);
            let printed = printed_rows.entry(job.id).or_default();
            for row in rows.iter().skip(*printed) {
                println!("    [{name}] {row}");
            }
            *printed = rows.len();
            if ["success", "failure", "cancelled"].contains(&job.status.as_str())
                && done.insert(job.id)
            {
                println!(
                    "    job finished: Forgejo job #{} {name}: {}",
                    job.id, job.status
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if let Some(name) = job_names.values().next() {
        println!("==> demo: {kubectl} -n demo logs job/{name}");
        let out = logs
            .args(["-n", NAMESPACE, "logs", &format!("job/{name}")])
            .stdin(Stdio::null())
            .output()
            .context("running kubectl logs")?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    println!(
        "    runner registrations left in Forgejo: {}",
        forgejo.runners().len()
    );
    Ok(())
}
