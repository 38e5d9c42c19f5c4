//! The kubelet's part for the few runner pods whose job runs (the running step): bind the
//! pod to a node that does not exist (`pods/binding`, as a scheduler does), then report its
//! runner container running, later terminated (`pods/status`, as a kubelet does). The same
//! as the cluster tier's kubelet stand-in (`crates/operator/tests/support/kubelet.rs`).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::jiff::{Timestamp, Unit};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};

/// The node the pods are bound to; no Node object exists, none is needed.
const NODE: &str = "kubelet-stand-in";

/// The pod the job controller made for Job `job` of `ns`, waiting at most `timeout`.
pub(super) async fn pod_of(
    client: &Client,
    ns: &str,
    job: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = format!("batch.kubernetes.io/job-name={job}");
    let started = Instant::now();
    loop {
        let listed = pods
            .list_metadata(&ListParams::default().labels(&selector))
            .await?;
        if let Some(pod) = listed.items.first() {
            return Ok(pod.name_any());
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "Job {ns}/{job} has no pod after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Binds the pod and reports its containers running since now.
pub(super) async fn set_running(client: &Client, ns: &str, pod: &str) -> anyhow::Result<()> {
    let spec = bind(client, ns, pod).await?;
    let now = now();
    let statuses: Vec<Value> = containers(&spec)
        .into_iter()
        .map(|(name, image)| {
            json!({"name": name, "image": image, "imageID": "",
                   "containerID": format!("containerd://vs-keda-{name}"),
                   "ready": true, "started": true, "restartCount": 0,
                   "state": {"running": {"startedAt": now}}})
        })
        .collect();
    patch_status(
        client,
        ns,
        pod,
        json!({"phase": "Running", "startTime": now, "conditions": conditions(&now, true),
               "containerStatuses": statuses}),
    )
    .await
}

/// Reports the pod Succeeded: every container exited 0.
pub(super) async fn set_succeeded(client: &Client, ns: &str, pod: &str) -> anyhow::Result<()> {
    let spec = bind(client, ns, pod).await?;
    let now = now();
    let started = spec
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0.to_string())
        .unwrap_or_else(|| now.clone());
    let statuses: Vec<Value> = containers(&spec)
        .into_iter()
        .map(|(name, image)| {
            let id = format!("containerd://vs-keda-{name}");
            json!({"name": name, "image": image, "imageID": "", "containerID": id,
                   "ready": false, "started": false, "restartCount": 0,
                   "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                             "containerID": id, "startedAt": started, "finishedAt": now}}})
        })
        .collect();
    patch_status(
        client,
        ns,
        pod,
        json!({"phase": "Succeeded", "startTime": started, "conditions": conditions(&now, false),
               "containerStatuses": statuses}),
    )
    .await
}

/// Binds the pod to [`NODE`] unless it has a node; returns it.
async fn bind(client: &Client, ns: &str, name: &str) -> anyhow::Result<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = pods.get(name).await?;
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
    {
        return Ok(pod);
    }
    let binding = Binding {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(ns.to_owned()),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(NODE.into()),
            ..Default::default()
        },
    };
    let _: Value = pods
        .create_subresource("binding", name, &PostParams::default(), &binding)
        .await?;
    Ok(pods.get(name).await?)
}

async fn patch_status(client: &Client, ns: &str, pod: &str, status: Value) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.patch_status(
        pod,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await?;
    Ok(())
}

fn containers(pod: &Pod) -> Vec<(String, String)> {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
        .collect()
}

fn conditions(now: &str, ready: bool) -> Value {
    let condition = |kind: &str, ok: bool| json!({"type": kind, "status": if ok { "True" } else { "False" }, "lastTransitionTime": now});
    json!([
        condition("PodScheduled", true),
        condition("Initialized", true),
        condition("ContainersReady", ready),
        condition("Ready", ready),
    ])
}

/// Now, to the second, as `metav1.Time` serializes.
fn now() -> String {
    Timestamp::now()
        .round(Unit::Second)
        .unwrap_or_else(|_| Timestamp::now())
        .to_string()
}
