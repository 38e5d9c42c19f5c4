//! The namespaced install (`deploy/components/namespaced`): the operator's rights end at the
//! runner namespaces it lists, and they are enough to schedule there. Its own test binary,
//! because it swaps the cluster-wide binding that other tests use (and puts it back).

mod support;

use std::time::Duration;

use forgejo_stand_in::StandInJob;
use support::{Operator, World, kubectl, wait_until};

const RUNNER_NAMESPACE: &str = "forgejo-runners";
const AS_OPERATOR: &str =
    "--as=system:serviceaccount:forgejo-runner-system:forgejo-runner-controller";

/// `deploy/` plus the component, as a user's overlay next to the test overlay would build it.
fn build_namespaced_install() -> String {
    let overlay = std::path::PathBuf::from(support::overlay());
    let dir = overlay
        .parent()
        .expect("the test overlay has a parent")
        .join("namespaced-overlay");
    std::fs::create_dir_all(&dir).expect("overlay dir");
    std::fs::write(
        dir.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../overlay\ncomponents:\n  - ../../../deploy/components/namespaced\n",
    )
    .expect("write overlay");
    kubectl(&["kustomize", &dir.to_string_lossy()])
}

/// Puts the cluster-wide install's binding back, whatever happened in the test.
struct RestoreClusterWide;

impl Drop for RestoreClusterWide {
    fn drop(&mut self) {
        kubectl(&["apply", "--server-side", "-k", &support::overlay()]);
    }
}

fn can_i(verb: &str, resource: &str, namespace: &str) -> String {
    let output = std::process::Command::new(std::env::var("FRC_TEST_KUBECTL").expect("kubectl"))
        .arg(format!(
            "--kubeconfig={}",
            std::env::var("FRC_TEST_KUBECONFIG").expect("kubeconfig")
        ))
        .args([
            "auth",
            "can-i",
            verb,
            resource,
            "-n",
            namespace,
            AS_OPERATOR,
        ])
        .output()
        .expect("running kubectl auth can-i");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn the_namespaced_install_grants_secrets_in_runner_namespaces_only_and_schedules_there() {
    let built = build_namespaced_install();
    let documents: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&built)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("YAML document"))
        .collect();
    let kinds: Vec<(String, String)> = documents
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap_or_default().to_owned(),
                d["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    assert!(
        !kinds.iter().any(|(kind, _)| kind == "ClusterRoleBinding"),
        "the namespaced install still binds cluster-wide: {kinds:?}"
    );
    assert!(
        built.contains("--namespace=forgejo-runners"),
        "the operator is not told which namespace it serves"
    );
    let binding = documents
        .iter()
        .find(|d| d["kind"] == "RoleBinding" && d["metadata"]["namespace"] == RUNNER_NAMESPACE)
        .expect("a RoleBinding in the runner namespace");

    let world = World::in_namespace(RUNNER_NAMESPACE, |config| config).await;
    let _restore = RestoreClusterWide;
    kubectl(&["delete", "clusterrolebinding", "forgejo-runner-controller"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rolebinding.yaml");
    std::fs::write(&path, serde_yaml::to_string(binding).expect("YAML")).expect("write");
    kubectl(&["apply", "--server-side", "-f", &path.to_string_lossy()]);

    assert_eq!(can_i("list", "secrets", "kube-system"), "no");
    assert_eq!(can_i("get", "secrets", "default"), "no");
    assert_eq!(can_i("list", "secrets", RUNNER_NAMESPACE), "yes");
    assert_eq!(can_i("create", "jobs", RUNNER_NAMESPACE), "yes");

    // The rights suffice: the operator, as that ServiceAccount, schedules a waiting job.
    world
        .forgejo
        .add_job(StandInJob::new("faro/app", "build", &["docker"]));
    world.create_pool("pool", "faro", "docker", 2).await;
    let mut operator = Operator::start(RUNNER_NAMESPACE);
    wait_until(
        "a runner Job in the runner namespace",
        Duration::from_secs(60),
        || async { (world.runner_jobs().await.len() == 1).then_some(()) },
    )
    .await;
    let logs = operator.logs();
    operator.kill();
    assert!(
        !logs.contains("Forbidden"),
        "the operator was refused something:\n{logs}"
    );
}
