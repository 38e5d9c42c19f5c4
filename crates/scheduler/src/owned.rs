//! The scheduler's summary of a runner Job the pool owns, and how to make it from the
//! `batch/v1` Job, its pods and its Secret.
//!
//! The operator fills [`OwnedJob`] from its watch caches with [`OwnedJob::from_objects`];
//! keeping that summary here keeps it pure and tested with the decisions that read it.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::containers::RUNNER_CONTAINER;
use crate::labels;
use crate::naming::parse_job_name;
use crate::secret::UUID_KEY;

/// Where a runner Job is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Not finished: its pod is pending or running.
    Active,
    /// The runner exited 0 (which does not say whether the workflow passed).
    Succeeded,
    /// The pod failed, was evicted, or ran past `activeDeadlineSeconds`.
    Failed {
        /// The Job condition's reason, e.g. `DeadlineExceeded`, `BackoffLimitExceeded`.
        reason: String,
        /// The Job condition's message.
        message: String,
    },
}

impl JobState {
    /// Whether the Job ended, either way.
    pub fn is_finished(&self) -> bool {
        !matches!(self, Self::Active)
    }
}

/// Why a container of the Job's pod waits, or why the pod is not scheduled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodWaiting {
    /// The container waiting; `None` for the pod itself (e.g. `Unschedulable`).
    pub container: Option<String>,
    /// The reason, e.g. `ImagePullBackOff`, `CreateContainerConfigError`, `Unschedulable`.
    pub reason: String,
    /// Kubernetes' message, shown to users as is.
    pub message: String,
}

/// A runner Job of the pool, as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedJob {
    /// The Job name (also its Secret's and its runner registration's).
    pub name: String,
    /// The Forgejo job id it was made for.
    pub forgejo_job_id: i64,
    /// The Forgejo job attempt it was made for, 0 when unknown.
    pub attempt: i64,
    /// When the Job was created.
    pub created_at: Option<Time>,
    /// Whether it is finished, and how.
    pub state: JobState,
    /// When it finished.
    pub finished_at: Option<Time>,
    /// Whether it is being deleted (`metadata.deletionTimestamp` is set).
    pub deleting: bool,
    /// When the runner container first started; `None` while no pod got that far.
    pub runner_started_at: Option<Time>,
    /// Why its pod waits, when it does.
    pub pod_waiting: Vec<PodWaiting>,
    /// Whether Kubernetes made any pod for it yet (none: admission may refuse them).
    pub has_pod: bool,
    /// Kubernetes' words when it refused to make the Job's pod (its latest `FailedCreate`
    /// event); the operator reads them only for Jobs still without a pod past
    /// `pod_create_deadline`, and `from_objects` leaves them `None`.
    pub pod_create_refused: Option<String>,
    /// Whether its runner credential Secret exists.
    pub secret_exists: bool,
    /// The runner uuid in that Secret (Forgejo v15+ path), if known.
    pub runner_uuid: Option<String>,
}

impl OwnedJob {
    /// Summarises a runner Job from the Job, the pods of the namespace (only the Job's own
    /// are read) and its Secret; `None` if the Job is not a runner Job.
    pub fn from_objects(job: &Job, pods: &[Pod], secret: Option<&Secret>) -> Option<Self> {
        let name = job.metadata.name.clone()?;
        let job_labels = job.metadata.labels.as_ref();
        let label = |key: &str| job_labels.and_then(|l| l.get(key)).map(String::as_str);
        let parsed = parse_job_name(&name);
        let forgejo_job_id = label(labels::FORGEJO_JOB_ID)
            .and_then(|v| v.parse().ok())
            .or(parsed.as_ref().map(|p| p.forgejo_job_id))?;
        let attempt = label(labels::FORGEJO_JOB_ATTEMPT)
            .and_then(|v| v.parse().ok())
            .or(parsed.as_ref().map(|p| p.attempt))
            .unwrap_or(0);

        let (state, finished_at) = job_state(job);
        let own_pods: Vec<&Pod> = pods.iter().filter(|pod| belongs_to(pod, job)).collect();
        let runner_started_at = own_pods
            .iter()
            .filter_map(|pod| runner_started_at(pod))
            .min();
        let pod_waiting = own_pods
            .iter()
            .filter(|pod| !pod_is_over(pod))
            .flat_map(|pod| pod_waiting(pod))
            .collect();
        let runner_uuid = secret.and_then(secret_uuid);

        Some(Self {
            name,
            forgejo_job_id,
            attempt,
            created_at: job.metadata.creation_timestamp.clone(),
            state,
            finished_at,
            deleting: job.metadata.deletion_timestamp.is_some(),
            runner_started_at,
            pod_waiting,
            has_pod: !own_pods.is_empty() || job_counted_pods(job),
            pod_create_refused: None,
            secret_exists: secret.is_some(),
            runner_uuid,
        })
    }

    /// Whether the Job holds a runner slot: not finished and not being deleted.
    pub fn is_live(&self) -> bool {
        !self.state.is_finished() && !self.deleting
    }
}

/// Whether the Job's status counts a pod (the pod cache may not have it, or it is gone).
fn job_counted_pods(job: &Job) -> bool {
    job.status.as_ref().is_some_and(|s| {
        s.active.unwrap_or(0) + s.succeeded.unwrap_or(0) + s.failed.unwrap_or(0) > 0
            || s.ready.unwrap_or(0) > 0
    })
}

/// The Job's state from its conditions (and, failing those, its pod counters).
pub(crate) fn job_state(job: &Job) -> (JobState, Option<Time>) {
    let Some(status) = &job.status else {
        return (JobState::Active, None);
    };
    for condition in status.conditions.iter().flatten() {
        if condition.status != "True" {
            continue;
        }
        let at = condition.last_transition_time.clone();
        match condition.type_.as_str() {
            "Complete" | "SuccessCriteriaMet" => {
                return (JobState::Succeeded, status.completion_time.clone().or(at));
            }
            "Failed" | "FailureTarget" => {
                let state = JobState::Failed {
                    reason: condition.reason.clone().unwrap_or_default(),
                    message: condition.message.clone().unwrap_or_default(),
                };
                return (state, at);
            }
            _ => {}
        }
    }
    let active = status.active.unwrap_or(0);
    if active == 0 && status.succeeded.unwrap_or(0) > 0 {
        return (JobState::Succeeded, status.completion_time.clone());
    }
    if active == 0 && status.failed.unwrap_or(0) > 0 {
        let state = JobState::Failed {
            reason: "PodFailed".to_owned(),
            message: "the runner pod failed".to_owned(),
        };
        return (state, None);
    }
    (JobState::Active, None)
}

/// Whether `pod` is one of `job`'s: owned by its uid, else labelled with its name.
pub(crate) fn belongs_to(pod: &Pod, job: &Job) -> bool {
    if let Some(uid) = &job.metadata.uid {
        return pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|owner| &owner.uid == uid);
    }
    let job_name = job.metadata.name.as_deref();
    let pod_labels = pod.metadata.labels.as_ref();
    ["batch.kubernetes.io/job-name", "job-name"]
        .iter()
        .any(|key| pod_labels.and_then(|l| l.get(*key)).map(String::as_str) == job_name)
}

/// Whether the pod ended or is going away, so its waiting reasons no longer matter.
pub(crate) fn pod_is_over(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_some() || matches!(phase, Some("Succeeded" | "Failed"))
}

/// When the pod's runner container started, if it did.
pub(crate) fn runner_started_at(pod: &Pod) -> Option<Time> {
    let status = pod.status.as_ref()?;
    let runner = status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == RUNNER_CONTAINER)?;
    let state = runner.state.as_ref()?;
    if let Some(running) = &state.running {
        return running.started_at.clone();
    }
    state.terminated.as_ref()?.started_at.clone()
}

/// Every waiting reason of the pod's containers, and `Unschedulable` when it is.
pub(crate) fn pod_waiting(pod: &Pod) -> Vec<PodWaiting> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    let mut waiting: Vec<PodWaiting> = status
        .conditions
        .iter()
        .flatten()
        .filter(|c| c.type_ == "PodScheduled" && c.status == "False")
        .filter(|c| c.reason.as_deref() == Some("Unschedulable"))
        .map(|c| PodWaiting {
            container: None,
            reason: "Unschedulable".to_owned(),
            message: c.message.clone().unwrap_or_default(),
        })
        .collect();
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    waiting.extend(containers.filter_map(container_waiting));
    waiting
}

/// Why `container` waits, if it does and Kubernetes says why.
fn container_waiting(container: &ContainerStatus) -> Option<PodWaiting> {
    let waiting = container.state.as_ref()?.waiting.as_ref()?;
    Some(PodWaiting {
        container: Some(container.name.clone()),
        reason: waiting.reason.clone()?,
        message: waiting.message.clone().unwrap_or_default(),
    })
}

/// The runner uuid a credential Secret holds, if it holds one.
pub(crate) fn secret_uuid(secret: &Secret) -> Option<String> {
    if let Some(value) = secret.data.as_ref().and_then(|d| d.get(UUID_KEY)) {
        return String::from_utf8(value.0.clone()).ok();
    }
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(UUID_KEY))
        .cloned()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateWaiting, PodCondition, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(1_800_000_000 + seconds).unwrap())
    }

    fn job() -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some("forgejo-job-7-1-0123456789".into()),
                uid: Some("job-uid".into()),
                creation_timestamp: Some(at(0)),
                labels: Some(BTreeMap::from([
                    (labels::FORGEJO_JOB_ID.to_owned(), "7".to_owned()),
                    (labels::FORGEJO_JOB_ATTEMPT.to_owned(), "1".to_owned()),
                ])),
                ..ObjectMeta::default()
            },
            ..Job::default()
        }
    }

    fn pod_of(job_uid: &str, status: PodStatus) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                owner_references: Some(vec![OwnerReference {
                    uid: job_uid.into(),
                    ..OwnerReference::default()
                }]),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(status),
        }
    }

    fn waiting(name: &str, reason: &str) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.into()),
                    message: Some(format!("{reason} message")),
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        }
    }

    #[test]
    fn new_job_without_pods_is_active_and_waits_for_nothing() {
        let owned = OwnedJob::from_objects(&job(), &[], None).unwrap();
        assert_eq!(owned.forgejo_job_id, 7);
        assert_eq!(owned.attempt, 1);
        assert_eq!(owned.state, JobState::Active);
        assert_eq!(owned.created_at, Some(at(0)));
        assert!(owned.is_live() && !owned.secret_exists && owned.pod_waiting.is_empty());
    }

    #[test]
    fn ids_fall_back_to_the_name_when_labels_are_missing() {
        let mut job = job();
        job.metadata.labels = None;
        let owned = OwnedJob::from_objects(&job, &[], None).unwrap();
        assert_eq!((owned.forgejo_job_id, owned.attempt), (7, 1));
        job.metadata.name = Some("something-else".into());
        assert_eq!(OwnedJob::from_objects(&job, &[], None), None);
    }

    #[test]
    fn job_conditions_give_the_state_and_finish_time() {
        let mut job = job();
        job.status = Some(JobStatus {
            conditions: Some(vec![JobCondition {
                type_: "Failed".into(),
                status: "True".into(),
                reason: Some("DeadlineExceeded".into()),
                message: Some("Job was active longer than specified deadline".into()),
                last_transition_time: Some(at(90)),
                ..JobCondition::default()
            }]),
            ..JobStatus::default()
        });
        let owned = OwnedJob::from_objects(&job, &[], None).unwrap();
        assert_eq!(
            owned.state,
            JobState::Failed {
                reason: "DeadlineExceeded".into(),
                message: "Job was active longer than specified deadline".into()
            }
        );
        assert_eq!(owned.finished_at, Some(at(90)));
        assert!(!owned.is_live());

        job.status = Some(JobStatus {
            completion_time: Some(at(70)),
            conditions: Some(vec![JobCondition {
                type_: "Complete".into(),
                status: "True".into(),
                last_transition_time: Some(at(71)),
                ..JobCondition::default()
            }]),
            ..JobStatus::default()
        });
        let owned = OwnedJob::from_objects(&job, &[], None).unwrap();
        assert_eq!(owned.state, JobState::Succeeded);
        assert_eq!(owned.finished_at, Some(at(70)));
    }

    #[test]
    fn pod_waiting_reasons_and_unschedulable_are_collected() {
        let status = PodStatus {
            phase: Some("Pending".into()),
            conditions: Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                message: Some("0/3 nodes are available".into()),
                ..PodCondition::default()
            }]),
            init_container_statuses: Some(vec![waiting("install-runner", "ErrImagePull")]),
            container_statuses: Some(vec![waiting("runner", "PodInitializing")]),
            ..PodStatus::default()
        };
        let foreign = pod_of("other-job", status.clone());
        let owned =
            OwnedJob::from_objects(&job(), &[pod_of("job-uid", status), foreign], None).unwrap();
        let reasons: Vec<_> = owned
            .pod_waiting
            .iter()
            .map(|w| w.reason.as_str())
            .collect();
        assert_eq!(
            reasons,
            ["Unschedulable", "ErrImagePull", "PodInitializing"]
        );
        assert_eq!(owned.pod_waiting[0].message, "0/3 nodes are available");
        assert_eq!(owned.runner_started_at, None);
    }

    #[test]
    fn runner_start_is_read_from_the_runner_container() {
        let running = ContainerStatus {
            name: RUNNER_CONTAINER.into(),
            state: Some(ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(at(30)),
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        };
        let status = PodStatus {
            phase: Some("Running".into()),
            container_statuses: Some(vec![running]),
            ..PodStatus::default()
        };
        let owned = OwnedJob::from_objects(&job(), &[pod_of("job-uid", status)], None).unwrap();
        assert_eq!(owned.runner_started_at, Some(at(30)));
    }

    #[test]
    fn secret_gives_existence_and_runner_uuid() {
        let secret = Secret {
            data: Some(BTreeMap::from([(
                UUID_KEY.to_owned(),
                ByteString(b"0b5a3c1e-0000-4000-8000-000000000001".to_vec()),
            )])),
            ..Secret::default()
        };
        let owned = OwnedJob::from_objects(&job(), &[], Some(&secret)).unwrap();
        assert!(owned.secret_exists);
        assert_eq!(
            owned.runner_uuid.as_deref(),
            Some("0b5a3c1e-0000-4000-8000-000000000001")
        );
    }
}
