//! `cargo xtask demo`: the whole system on this machine, in one command.
//!
//! Starts the local control plane, installs `deploy/`, starts a Forgejo stand-in seeded
//! with waiting jobs, runs the operator (as its ServiceAccount) and applies an example
//! RunnerDeployment, then prints jobs seen → Jobs created → runs finished. This machine runs
//! no kubelet, so the demo plays its part: it reports each runner pod Running, then
//! Succeeded, and tells the stand-in the job ran, as a real runner would. Ctrl-C stops
//! everything it started.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use forgejo::stand_in::{StandIn, StandInConfig, StandInJob};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt as _};
use serde_json::json;

use crate::cluster;

#[path = "../../crates/operator/tests/support/kubelet.rs"]
mod kubelet;

const NAMESPACE: &str = "demo";
const TOKEN: &str = "demo-token-not-a-secret";
const SEEDED: [(&str, &str); 3] = [("build", "docker"), ("test", "docker"), ("lint", "docker")];

/// Runs the demo until Ctrl-C (or, with `exit_when_done`, until every seeded job ran).
pub fn run(root: &Path, exit_when_done: bool) -> anyhow::Result<()> {
    println!(
        "==> demo: starting the local control plane (the first run builds it from Go modules: ~15 min once)"
    );
    let info = cluster::up(root)?;
    let result = (|| {
        let operator_kubeconfig = cluster::install_operator_identity(root, &info.admin_kubeconfig)?;
        println!("==> demo: building the operator");
        let operator_bin = build_operator(root, false)?;
        let kubectl = cluster::ensure_binaries(root)?.kubectl();
        let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
        runtime.block_on(demo(
            &info.admin_kubeconfig,
            &operator_kubeconfig,
            &operator_bin,
            &kubectl,
            exit_when_done,
        ))
    })();
    println!("==> demo: stopping the local control plane");
    let stopped = cluster::down(root);
    result?;
    stopped
}

pub(crate) fn build_operator(root: &Path, release: bool) -> anyhow::Result<PathBuf> {
    let mut args = vec!["build", "--quiet", "-p", "operator"];
    if release {
        args.push("--release");
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

/// Starts the operator binary as the operator's ServiceAccount, watching `namespace`, without
/// leader election, logging to `log_path`.
pub(crate) fn spawn_operator(
    binary: &Path,
    kubeconfig: &Path,
    namespace: &str,
    log_path: &Path,
    extra: &[&str],
) -> anyhow::Result<OperatorProcess> {
    let log = std::fs::File::create(log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let child = Command::new(binary)
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--namespace={namespace}"))
        .args(["--leader-election=false", "--admin-addr=127.0.0.1:0"])
        .args(extra)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting the operator")?;
    Ok(OperatorProcess(child))
}

/// Kills the operator when the demo ends, however it ends.
pub(crate) struct OperatorProcess(pub(crate) Child);

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn demo(
    admin_kubeconfig: &Path,
    operator_kubeconfig: &Path,
    operator_bin: &Path,
    kubectl: &Path,
    exit_when_done: bool,
) -> anyhow::Result<()> {
    let kubeconfig = kube::config::Kubeconfig::read_from(admin_kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let client = Client::try_from(config)?;

    let forgejo = StandIn::start(StandInConfig::with_token("15.0.3+gitea-1.22.0", TOKEN));
    println!(
        "==> demo: Forgejo stand-in (Forgejo 15 API) at {}",
        forgejo.url()
    );
    let mut seeded = BTreeSet::new();
    for (name, label) in SEEDED {
        let job = forgejo.add_job(StandInJob::new("demo/app", name, &[label]));
        println!(
            "    job seen: #{} {:?} waits for a runner with label {label:?}",
            job.id, job.name
        );
        seeded.insert(job.id);
    }

    apply(&client, admin_objects(&forgejo.url())).await?;
    let log_path = std::env::temp_dir().join("forgejo-runner-controller-demo.log");
    let _operator = spawn_operator(operator_bin, operator_kubeconfig, NAMESPACE, &log_path, &[])?;
    println!(
        "==> demo: operator running as its ServiceAccount; log: {}",
        log_path.display()
    );
    println!(
        "==> demo: RunnerDeployment demo/docker applied (labels docker, maxRunners 2, pollInterval 2s)"
    );

    let finished = tokio::select! {
        result = follow(&client, &forgejo, &seeded) => { result?; true }
        _ = tokio::signal::ctrl_c() => false,
    };
    if finished {
        println!("==> demo: every seeded job ran");
        if !exit_when_done {
            let kubectl = format!(
                "{} --kubeconfig {}",
                kubectl.display(),
                admin_kubeconfig.display()
            );
            println!(
                "==> demo: look around in another terminal, then press Ctrl-C to stop everything:"
            );
            println!("    {kubectl} -n demo get rd");
            println!("    {kubectl} -n demo describe rd docker");
            println!("    {kubectl} -n demo get jobs,pods,secrets");
            tokio::signal::ctrl_c().await?;
        }
    }
    Ok(())
}

/// The namespace, the token Secret and the example pool.
fn admin_objects(server: &str) -> Vec<serde_json::Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "forgejo-token", "namespace": NAMESPACE},
               "stringData": {"token": TOKEN}}),
        json!({"apiVersion": "forgejo.runners.dev/v1alpha1", "kind": "RunnerDeployment",
               "metadata": {"name": "docker", "namespace": NAMESPACE},
               "spec": {"forgejoServer": server, "organization": "demo", "labels": "docker",
                        "tokenSecretRef": {"name": "forgejo-token"},
                        "pollInterval": "2s", "maxRunners": 2}}),
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

/// Prints Jobs as they appear, plays the kubelet and the runner for each, until every
/// seeded job ran.
async fn follow(client: &Client, forgejo: &StandIn, seeded: &BTreeSet<i64>) -> anyhow::Result<()> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), NAMESPACE);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let selector = scheduler::labels::owned_jobs_selector();
    let mut announced = BTreeSet::new();
    let mut done = BTreeSet::new();
    while !seeded.is_subset(&done) {
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
            }
            if done.contains(&id) || secrets.get_opt(&name).await?.is_none() {
                continue;
            }
            let pods = kubelet::pods_of_job(client, NAMESPACE, &name).await?;
            let Some(pod) = pods.first() else { continue };
            let Some(runner) = forgejo.runners().into_iter().find(|r| r.name == name) else {
                continue;
            };
            kubelet::set_pod_running(client, NAMESPACE, &pod.name_any()).await?;
            forgejo.take_job(id, runner.id);
            println!(
                "    runner pod {} took Forgejo job #{id} (runner {})",
                pod.name_any(),
                runner.uuid
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
            kubelet::set_pod_succeeded(client, NAMESPACE, &pod.name_any()).await?;
            forgejo.finish_job(id, "success");
            println!(
                "    job finished: Forgejo job #{id} success; Job {name} complete (pod phases reported by the demo's kubelet stand-in)"
            );
            done.insert(id);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}
