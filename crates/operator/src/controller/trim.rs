//! What the watch caches keep of each object: the fields a reconcile reads
//! ([`scheduler::OwnedJob::from_objects`], the owner and label mappings), and nothing else.
//!
//! A runner Job's pod template and a pod's spec are most of their size, and the reconciler
//! never reads them; a runner Secret's credentials are needed only by the runner itself.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The metadata a reconcile reads: identity, labels, owners and the two timestamps.
fn trim_metadata(metadata: &mut ObjectMeta) {
    let kept = ObjectMeta {
        name: metadata.name.take(),
        namespace: metadata.namespace.take(),
        uid: metadata.uid.take(),
        resource_version: metadata.resource_version.take(),
        labels: metadata.labels.take(),
        owner_references: metadata.owner_references.take(),
        creation_timestamp: metadata.creation_timestamp.take(),
        deletion_timestamp: metadata.deletion_timestamp.take(),
        ..ObjectMeta::default()
    };
    *metadata = kept;
}

/// A runner Job: its metadata and status (the pod template is dropped).
pub fn job(job: &mut Job) {
    trim_metadata(&mut job.metadata);
    job.spec = None;
}

/// A runner pod: its metadata, phase, scheduling condition and container states.
pub fn pod(pod: &mut Pod) {
    trim_metadata(&mut pod.metadata);
    pod.spec = None;
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
        let (mut trimmed_job, mut trimmed_pod, mut trimmed_secret) =
            (full_job.clone(), full_pod.clone(), full_secret.clone());
        job(&mut trimmed_job);
        pod(&mut trimmed_pod);
        secret(&mut trimmed_secret);

        let full = OwnedJob::from_objects(&full_job, &[full_pod], Some(&full_secret));
        let trimmed =
            OwnedJob::from_objects(&trimmed_job, &[trimmed_pod.clone()], Some(&trimmed_secret));
        assert!(full.as_ref().is_some_and(|j| !j.pod_waiting.is_empty()));
        assert_eq!(trimmed, full);

        assert_eq!(trimmed_job.spec, None);
        assert_eq!(trimmed_job.metadata.annotations, None);
        assert_eq!(trimmed_pod.spec, None);
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
