//! A kubelet stand-in for states a real node cannot produce on demand (a pod Running for as
//! long as a test wants, a pod Succeeded at the moment a test picks, `Unschedulable`).
//!
//! The local cluster has a real scheduler and kubelet (`cargo xtask cluster up`), but pods
//! with `schedulerName: kubelet-stand-in` are ignored by both: they stay Pending and
//! unscheduled until these helpers play the two parts through the API, the way the real
//! components do: the scheduler's `pods/binding` subresource sets `spec.nodeName`,
//! and the kubelet's `pods/status` subresource reports phases and container states. The
//! Job controller then counts Succeeded/Failed pods and marks the Job Complete/Failed.
//!
//! Deletion caveat: the apiserver deletes an unbound pod or a Succeeded/Failed pod at once,
//! but a bound pod that is still Pending/Running only gets a `deletionTimestamp` and waits
//! for its kubelet. Call [`finish_terminating_pods`] to play the kubelet's part there.
#![allow(dead_code)]

use std::time::Duration;

use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

/// The node that bound pods are reported on. No Node object exists; none is needed.
pub const STAND_IN_NODE: &str = "kubelet-stand-in";

/// The `schedulerName` of pods left to this stand-in: the real kube-scheduler ignores them,
/// so they never reach the real node.
pub const STAND_IN_SCHEDULER: &str = "kubelet-stand-in";

/// Label the Job controller puts on the pods of a Job.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

/// Pods of a Job, by the `batch.kubernetes.io/job-name` label, sorted by name.
pub async fn pods_of_job(client: &Client, ns: &str, job_name: &str) -> kube::Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut items = pods
        .list(&ListParams::default().labels(&format!("{JOB_NAME_LABEL}={job_name}")))
        .await?
        .items;
    items.sort_by_key(|pod| pod.name_any());
    Ok(items)
}

/// Waits until the Job has at least `count` pods (the Job controller creates them
/// asynchronously); returns them. Panics after `timeout`.
pub async fn wait_for_pods_of_job(
    client: &Client,
    ns: &str,
    job_name: &str,
    count: usize,
    timeout: Duration,
) -> Vec<Pod> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let pods = pods_of_job(client, ns, job_name)
            .await
            .expect("listing pods of job");
        if pods.len() >= count {
            return pods;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "job {ns}/{job_name} has {} pods after {timeout:?}, wanted {count}",
                pods.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Schedules the pod onto [`STAND_IN_NODE`] through `pods/binding`, as kube-scheduler
/// does. A no-op when the pod already has a node.
pub async fn bind_pod(client: &Client, ns: &str, pod_name: &str) -> kube::Result<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = pods.get(pod_name).await?;
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
            name: Some(pod_name.to_owned()),
            namespace: Some(ns.to_owned()),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(STAND_IN_NODE.into()),
            ..Default::default()
        },
    };
    let _: Value = pods
        .create_subresource("binding", pod_name, &PostParams::default(), &binding)
        .await?;
    pods.get(pod_name).await
}

/// Binds the pod and reports it Running with all containers running and ready.
pub async fn set_pod_running(client: &Client, ns: &str, pod_name: &str) -> kube::Result<Pod> {
    let pod = bind_pod(client, ns, pod_name).await?;
    let now = now();
    let statuses: Vec<Value> = container_names(&pod)
        .into_iter()
        .map(|(name, image)| {
            json!({
                "name": name, "image": image, "imageID": "", "containerID": container_id(&name),
                "ready": true, "started": true, "restartCount": 0,
                "state": { "running": { "startedAt": now } },
            })
        })
        .collect();
    patch_pod_status(
        client,
        ns,
        pod_name,
        json!({
            "phase": "Running",
            "startTime": now,
            "conditions": conditions(&now, true, true),
            "containerStatuses": statuses,
        }),
    )
    .await
}

/// Binds the pod and reports it Succeeded: every container terminated with exit code 0.
pub async fn set_pod_succeeded(client: &Client, ns: &str, pod_name: &str) -> kube::Result<Pod> {
    set_pod_terminated(client, ns, pod_name, "Succeeded", 0, "Completed").await
}

/// Binds the pod and reports it Failed: every container terminated with `exit_code`
/// (non-zero; the Job controller matches it against a podFailurePolicy, if any).
pub async fn set_pod_failed(
    client: &Client,
    ns: &str,
    pod_name: &str,
    exit_code: i32,
) -> kube::Result<Pod> {
    assert_ne!(exit_code, 0, "a failed pod needs a non-zero exit code");
    set_pod_terminated(client, ns, pod_name, "Failed", exit_code, "Error").await
}

/// Binds the pod and reports it Pending with every container waiting for `reason`
/// (e.g. `ImagePullBackOff`, `ErrImagePull`, `CreateContainerConfigError`).
pub async fn set_pod_waiting(
    client: &Client,
    ns: &str,
    pod_name: &str,
    reason: &str,
) -> kube::Result<Pod> {
    let pod = bind_pod(client, ns, pod_name).await?;
    let now = now();
    let statuses: Vec<Value> = container_names(&pod)
        .into_iter()
        .map(|(name, image)| {
            json!({
                "name": name, "image": image, "imageID": "",
                "ready": false, "started": false, "restartCount": 0,
                "state": { "waiting": { "reason": reason, "message": format!("{reason} (reported by the test kubelet)") } },
            })
        })
        .collect();
    patch_pod_status(
        client,
        ns,
        pod_name,
        json!({
            "phase": "Pending",
            "startTime": now,
            "conditions": conditions(&now, true, false),
            "containerStatuses": statuses,
        }),
    )
    .await
}

/// Completes deletions that wait for a kubelet: force-deletes (grace period 0) every pod
/// in `ns` that has a `deletionTimestamp`. Returns how many it deleted.
pub async fn finish_terminating_pods(client: &Client, ns: &str) -> kube::Result<usize> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut n = 0;
    for pod in pods.list(&ListParams::default()).await?.items {
        if pod.metadata.deletion_timestamp.is_some() {
            match pods
                .delete(&pod.name_any(), &DeleteParams::default().grace_period(0))
                .await
            {
                Ok(_) => n += 1,
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(n)
}

async fn set_pod_terminated(
    client: &Client,
    ns: &str,
    pod_name: &str,
    phase: &str,
    exit_code: i32,
    reason: &str,
) -> kube::Result<Pod> {
    let pod = bind_pod(client, ns, pod_name).await?;
    let now = now();
    let started = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0.to_string())
        .unwrap_or_else(|| now.clone());
    let statuses: Vec<Value> = container_names(&pod)
        .into_iter()
        .map(|(name, image)| {
            json!({
                "name": name, "image": image, "imageID": "", "containerID": container_id(&name),
                "ready": false, "started": false, "restartCount": 0,
                "state": { "terminated": {
                    "exitCode": exit_code, "reason": reason, "containerID": container_id(&name),
                    "startedAt": started, "finishedAt": now,
                } },
            })
        })
        .collect();
    patch_pod_status(
        client,
        ns,
        pod_name,
        json!({
            "phase": phase,
            "startTime": started,
            "conditions": conditions(&now, true, false),
            "containerStatuses": statuses,
        }),
    )
    .await
}

async fn patch_pod_status(
    client: &Client,
    ns: &str,
    pod_name: &str,
    status: Value,
) -> kube::Result<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    // A JSON merge patch replaces the conditions and containerStatuses lists whole.
    pods.patch_status(
        pod_name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
}

fn container_names(pod: &Pod) -> Vec<(String, String)> {
    pod.spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

fn conditions(now: &str, initialized: bool, ready: bool) -> Value {
    let c = |t: &str, ok: bool| json!({ "type": t, "status": if ok { "True" } else { "False" }, "lastTransitionTime": now });
    json!([
        c("PodScheduled", true),
        c("Initialized", initialized),
        c("ContainersReady", ready),
        c("Ready", ready),
    ])
}

fn container_id(name: &str) -> String {
    format!("containerd://kubelet-stand-in-{name}")
}

fn now() -> String {
    // RFC 3339 with second precision, as the API's metav1.Time serializes.
    Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .unwrap_or_else(|_| Timestamp::now())
        .to_string()
}
