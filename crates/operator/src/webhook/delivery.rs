//! What a `workflow_job` delivery says, read only after its signature is checked, and
//! whether it concerns a pool. Only the fields the decision needs are read.

use serde::Deserialize;

use api::RunnerDeployment;

/// The event-type prefix of the deliveries the receiver acts on.
pub const WORKFLOW_JOB_PREFIX: &str = "workflow_job_";

/// The part of a `workflow_job` payload the receiver reads.
#[derive(Debug, Deserialize)]
pub struct WorkflowJobDelivery {
    /// The job: the same object the jobs listing returns.
    pub job: DeliveredJob,
}

/// The fields of a delivered job the receiver reads.
#[derive(Debug, Deserialize)]
pub struct DeliveredJob {
    /// The job's id.
    pub id: i64,
    /// `waiting`, `running`, `success`, …
    pub status: String,
    /// The labels the job asks for.
    #[serde(default)]
    pub runs_on: Vec<String>,
}

impl WorkflowJobDelivery {
    /// Whether the delivered job waits for a runner that `pool` could give it: then the pool
    /// polls at once. The poll decides; the delivery only says when to look.
    pub fn wakes(&self, pool: &RunnerDeployment) -> bool {
        if self.job.status != "waiting" {
            return false;
        }
        let Ok(labels) = api::parse_labels(&pool.spec.labels) else {
            return false;
        };
        api::runs_on_labels(&self.job.runs_on, labels.iter().map(|l| l.name.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(labels: &str) -> RunnerDeployment {
        let mut rd: RunnerDeployment = serde_json::from_value(serde_json::json!({
            "apiVersion": "forgejo.runners.dev/v1alpha1",
            "kind": "RunnerDeployment",
            "metadata": {"name": "p", "namespace": "ci"},
            "spec": {
                "forgejoServer": "https://code.example.com",
                "organization": "faro",
                "labels": "x",
                "tokenSecretRef": {"name": "t"},
            }
        }))
        .unwrap();
        rd.spec.labels = labels.into();
        rd
    }

    fn delivery(status: &str, runs_on: &[&str]) -> WorkflowJobDelivery {
        serde_json::from_value(serde_json::json!({
            "action": "new_job_attempt",
            "job": {"id": 7, "status": status, "runs_on": runs_on, "name": "build"},
            "run": {"id": 3},
        }))
        .unwrap()
    }

    #[test]
    fn only_a_waiting_job_on_the_pools_labels_wakes_it() {
        let rd = pool("docker:docker://node:22,linux:host");
        assert!(delivery("waiting", &["docker"]).wakes(&rd));
        assert!(delivery("waiting", &["docker", "linux"]).wakes(&rd));
        assert!(!delivery("waiting", &["docker", "gpu"]).wakes(&rd));
        assert!(!delivery("waiting", &[]).wakes(&rd));
        assert!(!delivery("running", &["docker"]).wakes(&rd));
        assert!(!delivery("success", &["linux"]).wakes(&rd));
    }

    #[test]
    fn a_payload_without_a_job_is_refused() {
        let parsed: Result<WorkflowJobDelivery, _> =
            serde_json::from_slice(br#"{"action":"x","run":{}}"#);
        assert!(parsed.is_err());
    }
}
