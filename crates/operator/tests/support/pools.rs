//! Pools whose runner pods go to the real node, and waiting for their jobs' results.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::{World, runner_image, wait_until};

/// How long a node-tier job may take to reach its result.
const RESULT_TIMEOUT: Duration = Duration::from_secs(180);

/// A pool `name` on `labels` whose pods go to the real node, with the runner test image.
pub fn node_pool(world: &World, name: &str, labels: &str, max_runners: i32) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {
            "forgejoServer": world.forgejo.url(),
            "organization": "faro",
            "labels": labels,
            "tokenSecretRef": {"name": "forgejo-token", "key": "token"},
            "pollInterval": "1s",
            "maxRunners": max_runners,
            "runnerImage": runner_image(),
            // Small requests, as a user sizes a pool through jobTemplate: the node has two
            // cores, and tests run side by side.
            "jobTemplate": {"spec": {
                "schedulerName": "default-scheduler",
                "containers": [{"name": "runner", "resources": {
                    "requests": {"cpu": "50m", "memory": "64Mi"},
                    "limits": {"cpu": "1", "memory": "512Mi"},
                }}],
            }},
        }
    })
}

/// Waits until the stand-in has a final result for every job in `ids`; returns them.
pub async fn wait_for_results(world: &World, ids: &[i64]) -> BTreeMap<i64, String> {
    wait_until(
        &format!("results of jobs {ids:?}"),
        RESULT_TIMEOUT,
        || async {
            let results: BTreeMap<i64, String> = world
                .forgejo
                .jobs()
                .into_iter()
                .filter(|job| ids.contains(&job.id))
                .filter(|job| ["success", "failure", "cancelled"].contains(&job.status.as_str()))
                .map(|job| (job.id, job.status))
                .collect();
            (results.len() == ids.len()).then_some(results)
        },
    )
    .await
}
