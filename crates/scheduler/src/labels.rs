//! Label and annotation keys on what the controller creates, and the selectors it watches by.
//!
//! Every runner Job, its pod and its Secret carry `app.kubernetes.io/managed-by` and the
//! pool's uid, so the operator finds them with one selector and groups them by pool. Labels
//! hold what selectors need (ids); annotations hold what people read (job name, runs-on).

use std::collections::BTreeMap;

/// `app.kubernetes.io/name`.
pub const APP_NAME: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/instance`: the RunnerDeployment name (when it fits a label value).
pub const APP_INSTANCE: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/component`: [`COMPONENT_RUNNER`] or [`COMPONENT_CREDENTIALS`].
pub const APP_COMPONENT: &str = "app.kubernetes.io/component";
/// `app.kubernetes.io/managed-by`: always [`MANAGED_BY_VALUE`].
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// Value of [`APP_NAME`].
pub const APP_NAME_VALUE: &str = "forgejo-runner";
/// Value of [`MANAGED_BY`].
pub const MANAGED_BY_VALUE: &str = "forgejo-runner-controller";
/// Value of [`APP_COMPONENT`] on runner Jobs and their pods.
pub const COMPONENT_RUNNER: &str = "runner";
/// Value of [`APP_COMPONENT`] on runner credential Secrets.
pub const COMPONENT_CREDENTIALS: &str = "runner-credentials";
/// Value of [`APP_COMPONENT`] on a pool's cache server (Deployment, Service, claim, Secret).
pub const COMPONENT_CACHE_SERVER: &str = "cache-server";
/// Value of [`APP_COMPONENT`] on a pool's forgejo-runner config (the cache settings).
pub const COMPONENT_CACHE_CONFIG: &str = "cache-config";

/// The Forgejo job id.
pub const FORGEJO_JOB_ID: &str = "forgejo.runners.dev/job-id";
/// The Forgejo job attempt (0 when Forgejo does not tell, before v15).
pub const FORGEJO_JOB_ATTEMPT: &str = "forgejo.runners.dev/job-attempt";
/// The Forgejo repository id of the job.
pub const FORGEJO_REPO_ID: &str = "forgejo.runners.dev/repo-id";
/// The Forgejo owner (user or organization) id of the job's repository.
pub const FORGEJO_OWNER_ID: &str = "forgejo.runners.dev/owner-id";
/// The RunnerDeployment name (only when it is a valid label value, ≤ 63 characters).
pub const RUNNER_DEPLOYMENT: &str = "forgejo.runners.dev/runner-deployment";
/// The RunnerDeployment uid: groups Jobs by pool whatever the pool's name.
pub const RUNNER_DEPLOYMENT_UID: &str = "forgejo.runners.dev/runner-deployment-uid";

/// `"true"` on a warm runner's Job and pod: it was made for no job, and takes the next one
/// of its label.
pub const WARM: &str = "forgejo.runners.dev/warm";

/// Annotation: the label a warm runner serves.
pub const WARM_LABEL: &str = "forgejo.runners.dev/warm-label";
/// Annotation: the Forgejo job's human-readable name.
pub const FORGEJO_JOB_NAME: &str = "forgejo.runners.dev/job-name";
/// Annotation: the job's `runs-on` labels, comma-separated.
pub const FORGEJO_RUNS_ON: &str = "forgejo.runners.dev/runs-on";
/// Annotation: the Forgejo job attempt's handle (v15+), which the pod asks for.
pub const FORGEJO_HANDLE: &str = "forgejo.runners.dev/handle";
/// Annotation: the runner labels the pod declares, comma-separated.
pub const RUNNER_LABELS: &str = "forgejo.runners.dev/runner-labels";
/// Annotation: the container `kubectl logs` and `kubectl exec` pick by default.
pub const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

/// The labels of every object the controller makes for a pool (runner Jobs and pods, cache
/// objects): the app labels, `component`, and the pool's uid and, when it is a valid label
/// value, its name.
pub fn pool_object_labels(
    pool_uid: &str,
    pool_name: &str,
    component: &str,
) -> BTreeMap<String, String> {
    let mut map = BTreeMap::from([
        (APP_NAME.to_owned(), APP_NAME_VALUE.to_owned()),
        (APP_COMPONENT.to_owned(), component.to_owned()),
        (MANAGED_BY.to_owned(), MANAGED_BY_VALUE.to_owned()),
        (RUNNER_DEPLOYMENT_UID.to_owned(), pool_uid.to_owned()),
    ]);
    if crate::naming::is_label_value(pool_name) {
        map.insert(APP_INSTANCE.to_owned(), pool_name.to_owned());
        map.insert(RUNNER_DEPLOYMENT.to_owned(), pool_name.to_owned());
    }
    map
}

/// The selector of every runner Job the controller made, in any pool.
pub fn owned_jobs_selector() -> String {
    format!("{MANAGED_BY}={MANAGED_BY_VALUE},{APP_COMPONENT}={COMPONENT_RUNNER}")
}

/// The selector of every cache server Deployment the controller made, in any pool.
pub fn cache_servers_selector() -> String {
    format!("{MANAGED_BY}={MANAGED_BY_VALUE},{APP_COMPONENT}={COMPONENT_CACHE_SERVER}")
}

/// The selector of every runner credential Secret the controller made, in any pool.
pub fn runner_secrets_selector() -> String {
    format!("{MANAGED_BY}={MANAGED_BY_VALUE},{APP_COMPONENT}={COMPONENT_CREDENTIALS}")
}

/// The selector of the runner Jobs of one pool.
pub fn pool_jobs_selector(pool_uid: &str) -> String {
    format!(
        "{},{RUNNER_DEPLOYMENT_UID}={pool_uid}",
        owned_jobs_selector()
    )
}

/// The uid of the pool an object we made belongs to, from its labels.
pub fn pool_uid_of(labels: Option<&BTreeMap<String, String>>) -> Option<&str> {
    labels?.get(RUNNER_DEPLOYMENT_UID).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_name_the_managed_by_label() {
        assert_eq!(
            owned_jobs_selector(),
            "app.kubernetes.io/managed-by=forgejo-runner-controller,app.kubernetes.io/component=runner"
        );
        assert_eq!(
            pool_jobs_selector("u-1"),
            "app.kubernetes.io/managed-by=forgejo-runner-controller,app.kubernetes.io/component=runner,forgejo.runners.dev/runner-deployment-uid=u-1"
        );
        assert!(runner_secrets_selector().ends_with("component=runner-credentials"));
    }

    #[test]
    fn pool_uid_is_read_from_labels() {
        let labels = BTreeMap::from([(RUNNER_DEPLOYMENT_UID.to_owned(), "u-1".to_owned())]);
        assert_eq!(pool_uid_of(Some(&labels)), Some("u-1"));
        assert_eq!(pool_uid_of(None), None);
    }
}
