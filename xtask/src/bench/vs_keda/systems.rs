//! The two systems side by side: their namespaces, tokens, pools or ScaledJobs, and
//! processes. Each serves its own organization of the one stand-in, with its own token.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use api::RunnerDeployment;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use serde_json::{Value, json};

use super::Settings;
use crate::bench::setup::OperatorProcess;
use crate::cluster::{KEDA_CRDS, Keda, OperatorRun, write_grpc_certs};

/// The scheduler name no scheduler serves: runner pods stay Pending unless the bench plays
/// the kubelet for them (the running step), as the cluster tier's kubelet stand-in does.
pub(super) const STAND_IN_SCHEDULER: &str = "kubelet-stand-in";

/// Namespace KEDA keeps its cluster-wide objects in (and would elect a leader in).
const KEDA_OBJECT_NAMESPACE: &str = "keda";

/// One of the two systems compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum System {
    /// This project's operator.
    Ours,
    /// The KEDA operator with its `forgejo-runner` scaler.
    Keda,
}

impl System {
    /// Both, in table order.
    pub(super) const BOTH: [System; 2] = [System::Ours, System::Keda];

    /// The Forgejo organization it serves.
    pub(super) fn org(self) -> &'static str {
        match self {
            System::Ours => "ours",
            System::Keda => "keda",
        }
    }

    /// The namespace of its pool(s) or ScaledJob(s) and runner Jobs.
    pub(super) fn namespace(self) -> &'static str {
        match self {
            System::Ours => "vs-ours",
            System::Keda => "vs-keda",
        }
    }

    /// Its Forgejo API token (test values; the stand-in knows both).
    pub(super) fn token(self) -> &'static str {
        match self {
            System::Ours => "vs-keda-bench-ours-token",
            System::Keda => "vs-keda-bench-keda-token",
        }
    }

    /// Index of its token in the stand-in's `tokens` (see [`RecordedRequest::token_index`]).
    ///
    /// [`RecordedRequest::token_index`]: forgejo_stand_in::RecordedRequest::token_index
    pub(super) fn token_index(self) -> usize {
        match self {
            System::Ours => 0,
            System::Keda => 1,
        }
    }

    /// Its index in `[T; 2]` figures.
    pub(super) fn index(self) -> usize {
        self.token_index()
    }

    /// The label selector of its runner Jobs.
    pub(super) fn jobs_selector(self) -> String {
        match self {
            System::Ours => scheduler::labels::owned_jobs_selector(),
            System::Keda => "app.kubernetes.io/managed-by=keda-operator".into(),
        }
    }
}

/// Creates both systems' namespaces (and KEDA's object namespace) with each one's token.
pub(super) async fn namespaces(client: &Client) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for name in [
        System::Ours.namespace(),
        System::Keda.namespace(),
        KEDA_OBJECT_NAMESPACE,
    ] {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        namespaces.create(&PostParams::default(), &ns).await?;
    }
    for system in System::BOTH {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "forgejo-token"}, "stringData": {"token": system.token()}
        }))?;
        Api::<Secret>::namespaced(client.clone(), system.namespace())
            .create(&PostParams::default(), &secret)
            .await?;
    }
    Ok(())
}

/// Our pool: `labels`, the poll interval and `maxRunners` of `settings`.
fn pool(name: &str, server: &str, labels: &str, settings: &Settings) -> Value {
    json!({
        "apiVersion": "forgejo.runners.dev/v1alpha1", "kind": "RunnerDeployment",
        "metadata": {"name": name},
        "spec": {"forgejoServer": server, "organization": System::Ours.org(), "labels": labels,
                 "tokenSecretRef": {"name": "forgejo-token", "key": "token"},
                 "pollInterval": format!("{}s", settings.poll.as_secs()),
                 "maxRunners": settings.max_runners,
                 "jobTemplate": {"spec": {"schedulerName": STAND_IN_SCHEDULER}},
                 // KEDA runs no cache server: neither does this pool, so both do the same.
                 "cache": {"mode": "Disabled"}}
    })
}

/// KEDA's equivalent: a ScaledJob with the `forgejo-runner` trigger, the same labels, poll
/// interval (`pollingInterval`) and maximum (`maxReplicaCount`), and the default scaling
/// strategy. Its pods would run `forgejo-runner one-job` with a pre-registered runner.
fn scaled_job(name: &str, server: &str, labels: &str, settings: &Settings) -> Value {
    json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
        "metadata": {"name": name},
        "spec": {
            "pollingInterval": settings.poll.as_secs(),
            "maxReplicaCount": settings.max_runners,
            "scalingStrategy": {"strategy": "default"},
            "jobTargetRef": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never",
                "schedulerName": STAND_IN_SCHEDULER,
                "containers": [{"name": scheduler::RUNNER_CONTAINER,
                                "image": "code.forgejo.org/forgejo/runner:12",
                                "command": ["forgejo-runner", "one-job"]}]
            }}},
            "triggers": [{"type": "forgejo-runner",
                          "metadata": {"address": server, "labels": labels,
                                       "org": System::Keda.org()},
                          "authenticationRef": {"name": "forgejo"}}]
        }
    })
}

fn keda_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("keda.sh", "v1alpha1", kind), plural)
}

fn scaled_jobs(client: &Client) -> Api<DynamicObject> {
    let resource = keda_resource("ScaledJob", "scaledjobs");
    Api::namespaced_with(client.clone(), System::Keda.namespace(), &resource)
}

/// Applies our pool `name` and KEDA's ScaledJob `name`, both on `labels`.
pub(super) async fn apply_pair(
    client: &Client,
    server: &str,
    name: &str,
    labels: &str,
    settings: &Settings,
) -> anyhow::Result<()> {
    let apply = PatchParams::apply("xtask-bench").force();
    Api::<RunnerDeployment>::namespaced(client.clone(), System::Ours.namespace())
        .patch(
            name,
            &apply,
            &Patch::Apply(pool(name, server, labels, settings)),
        )
        .await?;
    scaled_jobs(client)
        .patch(
            name,
            &apply,
            &Patch::Apply(scaled_job(name, server, labels, settings)),
        )
        .await?;
    Ok(())
}

/// KEDA's TriggerAuthentication: the token from the namespace's Secret.
pub(super) async fn apply_trigger_auth(client: &Client) -> anyhow::Result<()> {
    let resource = keda_resource("TriggerAuthentication", "triggerauthentications");
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), System::Keda.namespace(), &resource);
    let value = json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
        "metadata": {"name": "forgejo"},
        "spec": {"secretTargetRef": [{"parameter": "token", "name": "forgejo-token", "key": "token"}]}
    });
    api.patch(
        "forgejo",
        &PatchParams::apply("xtask-bench").force(),
        &Patch::Apply(value),
    )
    .await?;
    Ok(())
}

/// Deletes every pool and ScaledJob (each operator removes its finalizer) and waits, at most
/// `timeout`, until both lists are empty.
pub(super) async fn delete_all(client: &Client, timeout: Duration) -> anyhow::Result<()> {
    let pools: Api<RunnerDeployment> = Api::namespaced(client.clone(), System::Ours.namespace());
    let scaled = scaled_jobs(client);
    pools
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    scaled
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    let started = Instant::now();
    loop {
        let left = pools
            .list_metadata(&ListParams::default())
            .await?
            .items
            .len()
            + scaled
                .list_metadata(&ListParams::default())
                .await?
                .items
                .len();
        if left == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "{left} pools and ScaledJobs still there {timeout:?} after their deletion"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Applies KEDA's CRDs from its module and waits until the apiserver serves them.
pub(super) async fn install_keda_crds(client: &Client, keda: &Keda) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for file in KEDA_CRDS {
        let path = keda.crd_dir.join(file);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let value: Value =
            serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let name = value["metadata"]["name"]
            .as_str()
            .with_context(|| format!("{} names no CRD", path.display()))?
            .to_owned();
        crds.patch(
            &name,
            &PatchParams::apply("xtask-bench").force(),
            &Patch::Apply(value),
        )
        .await?;
        names.push(name);
    }
    let started = Instant::now();
    for name in names {
        loop {
            let established =
                crds.get(&name).await?.status.is_some_and(|status| {
                    status.conditions.into_iter().flatten().any(|condition| {
                        condition.type_ == "Established" && condition.status == "True"
                    })
                });
            if established {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "CRD {name} not established after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Where a system's operator logs.
pub(super) fn log_path(system: System) -> PathBuf {
    std::env::temp_dir().join(format!(
        "forgejo-runner-controller-{}.log",
        system.namespace()
    ))
}

/// Starts the KEDA operator out of the cluster (see `cluster/keda.rs`), watching only its
/// namespace, with the admin kubeconfig.
pub(super) fn start_keda(
    root: &Path,
    keda: &Keda,
    admin_kubeconfig: &Path,
) -> anyhow::Result<OperatorProcess> {
    let cert_dir = root.join("target").join("keda").join("certs");
    write_grpc_certs(&cert_dir)?;
    let probe_addr = free_loopback_port()?;
    let run = OperatorRun {
        kubeconfig: admin_kubeconfig,
        cert_dir: &cert_dir,
        watch_namespace: System::Keda.namespace(),
        object_namespace: KEDA_OBJECT_NAMESPACE,
        probe_addr,
    };
    let path = log_path(System::Keda);
    println!("    (KEDA {}: log in {})", keda.version, path.display());
    let log =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut command: Command = keda.command(&run);
    let child = command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting the KEDA operator")?;
    Ok(OperatorProcess(child))
}

/// A loopback address with a port free now (for KEDA's health probes).
fn free_loopback_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?)
}
