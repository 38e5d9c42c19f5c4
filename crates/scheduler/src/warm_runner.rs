//! A warm runner as the scheduler sees it: its Job, pods and Secret summarised.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::labels;
use crate::naming::parse_warm_name;
use crate::owned::{
    JobState, belongs_to, job_state, pod_is_over, pod_waiting, runner_started_at, secret_uuid,
};

/// A warm runner Job of the pool, as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmRunner {
    /// The Job name (also its Secret's and its registration's).
    pub name: String,
    /// The serial in its name.
    pub serial: u32,
    /// The label it serves.
    pub label: String,
    /// When the Job was created.
    pub created_at: Option<Time>,
    /// Whether it is finished, and how.
    pub state: JobState,
    /// Whether it is being deleted.
    pub deleting: bool,
    /// When its runner container started; `None` while no pod got that far.
    pub runner_started_at: Option<Time>,
    /// Whether its pod waits for something (an image, a node), for reports.
    pub pod_waiting: bool,
    /// When its credential Secret was created; `None` while it has none.
    pub secret_created_at: Option<Time>,
    /// The runner uuid in that Secret, if known.
    pub runner_uuid: Option<String>,
}

impl WarmRunner {
    /// Summarises a warm runner from its Job, the pods of the namespace (only the Job's own
    /// are read) and its Secret; `None` if the Job is not a warm runner's.
    pub fn from_objects(job: &Job, pods: &[Pod], secret: Option<&Secret>) -> Option<Self> {
        let name = job.metadata.name.clone()?;
        let serial = parse_warm_name(&name)?.serial;
        let label = job
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(labels::WARM_LABEL))?
            .clone();
        let (state, _) = job_state(job);
        let own: Vec<&Pod> = pods.iter().filter(|pod| belongs_to(pod, job)).collect();
        Some(Self {
            name,
            serial,
            label,
            created_at: job.metadata.creation_timestamp.clone(),
            state,
            deleting: job.metadata.deletion_timestamp.is_some(),
            runner_started_at: own.iter().filter_map(|pod| runner_started_at(pod)).min(),
            pod_waiting: own
                .iter()
                .filter(|pod| !pod_is_over(pod))
                .any(|pod| !pod_waiting(pod).is_empty()),
            secret_created_at: secret.map(|s| {
                s.metadata
                    .creation_timestamp
                    .clone()
                    .unwrap_or(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH))
            }),
            runner_uuid: secret.and_then(secret_uuid),
        })
    }

    /// Whether the Job holds a runner slot: not finished and not being deleted.
    pub fn is_live(&self) -> bool {
        !self.state.is_finished() && !self.deleting
    }
}
