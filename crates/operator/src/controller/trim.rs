//! What the watch caches keep of each object: the fields a reconcile reads
//! ([`scheduler::OwnedJob::from_objects`], the owner and label mappings), and nothing else.
//!
//! A runner Job's pod template and a pod's spec are most of their size, and the reconciler
//! never reads them; a runner Secret's credentials are needed only by the runner itself.
//! Jobs and pods are cached as [`RunnerJob`] and [`RunnerPod`], which have no spec at all:
//! a `batch/v1` Job value is 2.6 KiB before any of its strings, and one without its spec
//! still is, as the spec is stored inline.

use std::borrow::Cow;

use k8s_openapi::api::batch::v1::{Job, JobStatus};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

/// A runner Job as the cache keeps it: metadata and status (the API's other fields are
/// not read from the wire).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RunnerJob {
    /// The Job's metadata, trimmed.
    pub metadata: ObjectMeta,
    /// The Job's status.
    #[serde(default)]
    pub status: Option<JobStatus>,
}

/// A runner pod as the cache keeps it: metadata and the status fields a reconcile reads.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RunnerPod {
    /// The pod's metadata, trimmed.
    pub metadata: ObjectMeta,
    /// The pod's status, trimmed.
    #[serde(default)]
    pub status: Option<PodStatus>,
}

/// Implements `kube::Resource` for a slim type of a built-in kind.
macro_rules! slim_resource {
    ($type:ty, $group:literal, $version:literal, $kind:literal, $plural:literal) => {
        impl kube::Resource for $type {
            type DynamicType = ();
            type Scope = k8s_openapi::NamespaceResourceScope;

            fn kind(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($kind)
            }
            fn group(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($group)
            }
            fn version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($version)
            }
            fn plural(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($plural)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

slim_resource!(RunnerJob, "batch", "v1", "Job", "jobs");
slim_resource!(RunnerPod, "", "v1", "Pod", "pods");

impl RunnerJob {
    /// The cached Job as a `batch/v1` Job (without spec), for the scheduler.
    pub fn to_job(&self) -> Job {
        Job {
            metadata: self.metadata.clone(),
            spec: None,
            status: self.status.clone(),
        }
    }
}

impl From<Job> for RunnerJob {
    fn from(job: Job) -> Self {
        let mut slim = Self {
            metadata: job.metadata,
            status: job.status,
        };
        self::job(&mut slim);
        slim
    }
}

impl RunnerPod {
    /// The cached pod as a `v1` Pod (without spec), for the scheduler.
    pub fn to_pod(&self) -> Pod {
        Pod {
            metadata: self.metadata.clone(),
            spec: None,
            status: self.status.clone(),
        }
    }
}

/// The labels a reconcile reads: the pool a Job, pod or Secret belongs to, the Forgejo job
/// a Job runs, and the Job a pod belongs to.
const KEPT_LABELS: [&str; 6] = [
    scheduler::labels::RUNNER_DEPLOYMENT_UID,
    scheduler::labels::WARM,
    scheduler::labels::FORGEJO_JOB_ID,
    scheduler::labels::FORGEJO_JOB_ATTEMPT,
    "batch.kubernetes.io/job-name",
    "job-name",
];

/// The one annotation a reconcile reads: the label a warm runner serves.
const KEPT_ANNOTATION: &str = scheduler::labels::WARM_LABEL;

/// The metadata a reconcile reads: identity, labels, owners and the two timestamps.
fn trim_metadata(metadata: &mut ObjectMeta) {
    let labels = metadata.labels.take().map(|mut labels| {
        labels.retain(|key, _| KEPT_LABELS.contains(&key.as_str()));
        labels
    });
    let annotations = metadata
        .annotations
        .take()
        .map(|mut annotations| {
            annotations.retain(|key, _| key == KEPT_ANNOTATION);
            annotations
        })
        .filter(|annotations| !annotations.is_empty());
    let kept = ObjectMeta {
        name: metadata.name.take(),
        namespace: metadata.namespace.take(),
        uid: metadata.uid.take(),
        resource_version: metadata.resource_version.take(),
        labels,
        annotations,
        owner_references: metadata.owner_references.take(),
        creation_timestamp: metadata.creation_timestamp.take(),
        deletion_timestamp: metadata.deletion_timestamp.take(),
        ..ObjectMeta::default()
    };
    *metadata = kept;
}

/// A runner Job: its metadata and status.
pub fn job(job: &mut RunnerJob) {
    trim_metadata(&mut job.metadata);
}

/// A runner pod: its metadata, phase, scheduling condition and container states.
pub fn pod(pod: &mut RunnerPod) {
    trim_metadata(&mut pod.metadata);
    pod.status = pod.status.take().map(|status| PodStatus {
        phase: status.phase,
        conditions: status.conditions.map(|conditions| {
            conditions
                .into_iter()
                .filter(|c| c.type_ == "PodScheduled")
                .collect()
        }),
        container_statuses: status.container_statuses.map(container_states),
        init_container_statuses: status.init_container_statuses.map(container_states),
        ..PodStatus::default()
    });
}

/// Each container's name and state (whether and why it waits, when it started).
fn container_states(statuses: Vec<ContainerStatus>) -> Vec<ContainerStatus> {
    statuses
        .into_iter()
        .map(|status| ContainerStatus {
            name: status.name,
            state: status.state,
            ..ContainerStatus::default()
        })
        .collect()
}

/// A cache server Deployment keeps its metadata, and its status for `CacheReady`.
pub fn deployment(deployment: &mut k8s_openapi::api::apps::v1::Deployment) {
    trim_metadata(&mut deployment.metadata);
    deployment.spec = None;
}

/// A runner Secret: its metadata and the runner uuid, without the credentials.
pub fn secret(secret: &mut Secret) {
    trim_metadata(&mut secret.metadata);
    secret.string_data = None;
    if let Some(data) = &mut secret.data {
        data.retain(|key, _| key == scheduler::UUID_KEY);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateWaiting, PodCondition, PodSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
    use k8s_openapi::jiff::Timestamp;
    use scheduler::OwnedJob;

    use super::*;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(1_800_000_000 + seconds).unwrap())
    }

    fn metadata(name: &str, owner_uid: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ci".into()),
            uid: Some(format!("{name}-uid")),
            labels: Some(BTreeMap::from([
                (scheduler::labels::FORGEJO_JOB_ID.to_owned(), "7".to_owned()),
                (
                    "batch.kubernetes.io/job-name".to_owned(),
                    "forgejo-job-7-1-abc".to_owned(),
                ),
                ("app.kubernetes.io/name".to_owned(), "x".to_owned()),
            ])),
            annotations: Some(BTreeMap::from([("a".to_owned(), "x".repeat(4096))])),
            owner_references: Some(vec![OwnerReference {
                uid: owner_uid.into(),
                ..OwnerReference::default()
            }]),
            creation_timestamp: Some(at(0)),
            ..ObjectMeta::default()
        }
    }

    fn waiting_pod() -> Pod {
        Pod {
            metadata: metadata("forgejo-job-7-1-abc-x", "forgejo-job-7-1-abc-uid"),
            spec: Some(PodSpec::default()),
            status: Some(PodStatus {
                phase: Some("Pending".into()),
                host_ip: Some("10.0.0.1".into()),
                conditions: Some(vec![
                    PodCondition {
                        type_: "Initialized".into(),
                        status: "True".into(),
                        ..PodCondition::default()
                    },
                    PodCondition {
                        type_: "PodScheduled".into(),
                        status: "True".into(),
                        ..PodCondition::default()
                    },
                ]),
                container_statuses: Some(vec![ContainerStatus {
                    name: "runner".into(),
                    image: "registry.example/runner:typo".into(),
                    state: Some(ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some("ImagePullBackOff".into()),
                            message: Some("Back-off pulling image".into()),
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    fn wire<T: serde::Serialize>(value: &T) -> serde_json::Value {
        serde_json::to_value(value).unwrap()
    }

    #[test]
    fn a_trimmed_job_pod_and_secret_summarise_as_the_full_ones() {
        let full_job = Job {
            metadata: metadata("forgejo-job-7-1-abc", "pool-uid"),
            spec: Some(Default::default()),
            ..Job::default()
        };
        let full_pod = waiting_pod();
        let full_secret = Secret {
            metadata: metadata("forgejo-job-7-1-abc", "forgejo-job-7-1-abc-uid"),
            data: Some(BTreeMap::from([
                (
                    scheduler::UUID_KEY.to_owned(),
                    ByteString(b"uuid-1".to_vec()),
                ),
                (
                    "token".to_owned(),
                    ByteString(b"runner-credential".to_vec()),
                ),
            ])),
            ..Secret::default()
        };
        // As the watch reads them: the wire's JSON into the slim types, then trimmed.
        let mut trimmed_job: RunnerJob = serde_json::from_value(wire(&full_job)).unwrap();
        let mut trimmed_pod: RunnerPod = serde_json::from_value(wire(&full_pod)).unwrap();
        let mut trimmed_secret = full_secret.clone();
        job(&mut trimmed_job);
        pod(&mut trimmed_pod);
        secret(&mut trimmed_secret);

        let full = OwnedJob::from_objects(&full_job, &[full_pod], Some(&full_secret));
        let trimmed = OwnedJob::from_objects(
            &trimmed_job.to_job(),
            &[trimmed_pod.to_pod()],
            Some(&trimmed_secret),
        );
        assert!(full.as_ref().is_some_and(|j| !j.pod_waiting.is_empty()));
        assert_eq!(trimmed, full);

        assert_eq!(trimmed_job.metadata.annotations, None);
        let labels = trimmed_job.metadata.labels.clone().unwrap_or_default();
        assert!(!labels.contains_key("app.kubernetes.io/name"), "{labels:?}");
        let status = trimmed_pod.status.unwrap_or_default();
        assert_eq!(status.host_ip, None);
        assert_eq!(status.conditions.map(|c| c.len()), Some(1));
        let keys: Vec<String> = trimmed_secret
            .data
            .unwrap_or_default()
            .into_keys()
            .collect();
        assert_eq!(keys, [scheduler::UUID_KEY]);
    }
}
