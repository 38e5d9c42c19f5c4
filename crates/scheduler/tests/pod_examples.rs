//! The exact runner Job for each pod mode, the legacy path and a merged user template.

mod support;

use scheduler::{ForgejoJob, Pool, RunnerPath, runner_job};
use serde_json::{Value, json};
use support::*;

/// The Job name of Forgejo job 12, attempt 1, in the test pool. Pinned: changing the naming
/// function would orphan every Job of a running installation on upgrade.
const NAME: &str = "forgejo-job-12-1-7b4b84d3c2";

fn job_json(labels: &str, runs_on: &[&str], path: RunnerPath) -> Value {
    job_json_for(&pool(UID, labels, 5), &waiting(12, runs_on), path)
}

fn job_json_for(rd: &api::RunnerDeployment, job: &ForgejoJob, path: RunnerPath) -> Value {
    let pool = Pool::from_resource(rd).unwrap();
    serde_json::to_value(runner_job(&pool, job, path).unwrap()).unwrap()
}

fn pod_spec(job: &Value) -> &Value {
    &job["spec"]["template"]["spec"]
}

fn our_labels() -> Value {
    json!({
        "app.kubernetes.io/component": "runner",
        "app.kubernetes.io/instance": "faro",
        "app.kubernetes.io/managed-by": "forgejo-runner-controller",
        "app.kubernetes.io/name": "forgejo-runner",
        "forgejo.runners.dev/job-attempt": "1",
        "forgejo.runners.dev/job-id": "12",
        "forgejo.runners.dev/owner-id": "7",
        "forgejo.runners.dev/repo-id": "42",
        "forgejo.runners.dev/runner-deployment": "faro",
        "forgejo.runners.dev/runner-deployment-uid": UID
    })
}

#[test]
fn job_metadata_names_the_forgejo_job_and_is_owned_by_the_pool() {
    let job = job_json("x:host", &["x"], RunnerPath::Ephemeral);
    assert_eq!(job["apiVersion"], "batch/v1");
    assert_eq!(job["kind"], "Job");
    assert_eq!(
        job["metadata"],
        json!({
            "name": NAME,
            "namespace": "ci",
            "labels": our_labels(),
            "annotations": {
                "forgejo.runners.dev/handle": "handle-12-1",
                "forgejo.runners.dev/job-name": "build #12",
                "forgejo.runners.dev/runner-labels": "x:host",
                "forgejo.runners.dev/runs-on": "x"
            },
            "ownerReferences": [{
                "apiVersion": "forgejo.runners.dev/v1alpha1",
                "kind": "RunnerDeployment",
                "name": "faro",
                "uid": UID,
                "controller": true,
                "blockOwnerDeletion": true
            }]
        })
    );
    assert_eq!(
        job["spec"]["backoffLimit"], 0,
        "a failed runner pod is not retried by the Job controller"
    );
    assert_eq!(job["spec"]["ttlSecondsAfterFinished"], 300);
    assert_eq!(job["spec"]["activeDeadlineSeconds"], 10800);
    assert_eq!(
        job["spec"]["template"]["metadata"],
        json!({
            "labels": our_labels(),
            "annotations": {
                "forgejo.runners.dev/handle": "handle-12-1",
                "forgejo.runners.dev/job-name": "build #12",
                "forgejo.runners.dev/runner-labels": "x:host",
                "forgejo.runners.dev/runs-on": "x",
                "kubectl.kubernetes.io/default-container": "runner"
            }
        })
    );
}

#[test]
fn owner_reference_api_version_matches_the_crd() {
    let rd = pool(UID, "x:host", 1);
    let value = serde_json::to_value(&rd).unwrap();
    assert_eq!(
        value["apiVersion"],
        scheduler::RUNNER_DEPLOYMENT_API_VERSION
    );
    assert_eq!(value["kind"], scheduler::RUNNER_DEPLOYMENT_KIND);
}

#[test]
fn host_mode_pod_runs_one_job_in_the_runner_image() {
    let job = job_json("x:host", &["x"], RunnerPath::Ephemeral);
    assert_eq!(
        *pod_spec(&job),
        json!({
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "restartPolicy": "Never",
            "securityContext": {"fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "runner",
                "image": "data.forgejo.org/forgejo/runner:12.8.2",
                "command": ["/bin/forgejo-runner"],
                "args": [
                    "one-job",
                    "--url", "https://code.example.com",
                    "--uuid", "$(FORGEJO_RUNNER_UUID)",
                    "--token-url", "file:/var/run/forgejo-runner/token",
                    "--label", "x:host",
                    "--handle", "handle-12-1",
                    "--wait"
                ],
                "env": [
                    {"name": "HOME", "value": "/data"},
                    {"name": "FORGEJO_RUNNER_UUID",
                     "valueFrom": {"secretKeyRef": {"name": NAME, "key": "uuid", "optional": false}}}
                ],
                "workingDir": "/data",
                "resources": {
                    "requests": {"cpu": "250m", "memory": "256Mi"},
                    "limits": {"cpu": "2", "memory": "4Gi"}
                },
                "securityContext": {
                    "runAsNonRoot": true,
                    "runAsUser": 1000,
                    "runAsGroup": 1000,
                    "allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"]}
                },
                "volumeMounts": [
                    {"name": "runner-data", "mountPath": "/data"},
                    {"name": "runner-credentials", "mountPath": "/var/run/forgejo-runner", "readOnly": true}
                ]
            }],
            "volumes": [
                {"name": "runner-data", "emptyDir": {}},
                {"name": "runner-credentials", "secret": {
                    "secretName": NAME,
                    "items": [{"key": "token", "path": "token"}],
                    "defaultMode": 0o440,
                    "optional": false
                }}
            ]
        })
    );
}

#[test]
fn docker_mode_pod_has_a_privileged_dind_native_sidecar() {
    let job = job_json(
        "docker:docker://node:22",
        &["docker"],
        RunnerPath::Ephemeral,
    );
    assert_eq!(
        *pod_spec(&job),
        json!({
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "restartPolicy": "Never",
            "securityContext": {"fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "initContainers": [{
                "name": "dind",
                "image": "docker.io/library/docker:28-dind",
                "restartPolicy": "Always",
                "env": [{"name": "DOCKER_TLS_CERTDIR", "value": "/certs"}],
                "securityContext": {"privileged": true},
                "startupProbe": {"tcpSocket": {"port": 2376}, "periodSeconds": 1, "failureThreshold": 120},
                "resources": {
                    "requests": {"cpu": "250m", "memory": "256Mi"},
                    "limits": {"cpu": "2", "memory": "4Gi"}
                },
                "volumeMounts": [
                    {"name": "docker-certs", "mountPath": "/certs"},
                    {"name": "docker-data", "mountPath": "/var/lib/docker"}
                ]
            }],
            "containers": [{
                "name": "runner",
                "image": "data.forgejo.org/forgejo/runner:12.8.2",
                "command": ["/bin/forgejo-runner"],
                "args": [
                    "one-job",
                    "--url", "https://code.example.com",
                    "--uuid", "$(FORGEJO_RUNNER_UUID)",
                    "--token-url", "file:/var/run/forgejo-runner/token",
                    "--label", "docker:docker://node:22",
                    "--handle", "handle-12-1",
                    "--wait"
                ],
                "env": [
                    {"name": "HOME", "value": "/data"},
                    {"name": "FORGEJO_RUNNER_UUID",
                     "valueFrom": {"secretKeyRef": {"name": NAME, "key": "uuid", "optional": false}}},
                    {"name": "DOCKER_HOST", "value": "tcp://localhost:2376"},
                    {"name": "DOCKER_TLS_VERIFY", "value": "1"},
                    {"name": "DOCKER_CERT_PATH", "value": "/certs/client"}
                ],
                "workingDir": "/data",
                "resources": {
                    "requests": {"cpu": "100m", "memory": "128Mi"},
                    "limits": {"cpu": "1", "memory": "1Gi"}
                },
                "securityContext": {
                    "runAsNonRoot": true,
                    "runAsUser": 1000,
                    "runAsGroup": 1000,
                    "allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"]}
                },
                "volumeMounts": [
                    {"name": "runner-data", "mountPath": "/data"},
                    {"name": "runner-credentials", "mountPath": "/var/run/forgejo-runner", "readOnly": true},
                    {"name": "docker-certs", "mountPath": "/certs", "readOnly": true}
                ]
            }],
            "volumes": [
                {"name": "runner-data", "emptyDir": {}},
                {"name": "runner-credentials", "secret": {
                    "secretName": NAME,
                    "items": [{"key": "token", "path": "token"}],
                    "defaultMode": 0o440,
                    "optional": false
                }},
                {"name": "docker-certs", "emptyDir": {}},
                {"name": "docker-data", "emptyDir": {}}
            ]
        })
    );
}

#[test]
fn kubernetes_mode_pod_runs_the_label_image_with_a_copied_runner() {
    let job = job_json(
        "node:kubernetes://node:22-bookworm",
        &["node"],
        RunnerPath::Ephemeral,
    );
    assert_eq!(
        *pod_spec(&job),
        json!({
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "restartPolicy": "Never",
            "securityContext": {"fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "initContainers": [{
                "name": "install-runner",
                "image": "data.forgejo.org/forgejo/runner:12.8.2",
                "command": ["cp", "/bin/forgejo-runner", "/opt/forgejo-runner/forgejo-runner"],
                "resources": {
                    "requests": {"cpu": "10m", "memory": "32Mi"},
                    "limits": {"cpu": "500m", "memory": "128Mi"}
                },
                "securityContext": {
                    "runAsNonRoot": true,
                    "runAsUser": 1000,
                    "runAsGroup": 1000,
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]}
                },
                "volumeMounts": [{"name": "runner-bin", "mountPath": "/opt/forgejo-runner"}]
            }],
            "containers": [{
                "name": "runner",
                "image": "node:22-bookworm",
                "command": ["/opt/forgejo-runner/forgejo-runner"],
                "args": [
                    "one-job",
                    "--url", "https://code.example.com",
                    "--uuid", "$(FORGEJO_RUNNER_UUID)",
                    "--token-url", "file:/var/run/forgejo-runner/token",
                    "--label", "node:host",
                    "--handle", "handle-12-1",
                    "--wait"
                ],
                "env": [
                    {"name": "HOME", "value": "/data"},
                    {"name": "FORGEJO_RUNNER_UUID",
                     "valueFrom": {"secretKeyRef": {"name": NAME, "key": "uuid", "optional": false}}}
                ],
                "workingDir": "/data",
                "resources": {
                    "requests": {"cpu": "250m", "memory": "256Mi"},
                    "limits": {"cpu": "2", "memory": "4Gi"}
                },
                "volumeMounts": [
                    {"name": "runner-data", "mountPath": "/data"},
                    {"name": "runner-credentials", "mountPath": "/var/run/forgejo-runner", "readOnly": true},
                    {"name": "runner-bin", "mountPath": "/opt/forgejo-runner", "readOnly": true}
                ]
            }],
            "volumes": [
                {"name": "runner-data", "emptyDir": {}},
                {"name": "runner-credentials", "secret": {
                    "secretName": NAME,
                    "items": [{"key": "token", "path": "token"}],
                    "defaultMode": 0o440,
                    "optional": false
                }},
                {"name": "runner-bin", "emptyDir": {}}
            ]
        })
    );
}

#[test]
fn legacy_pod_registers_with_the_registration_token_file_then_runs_one_job() {
    let mut forgejo_job = waiting(12, &["x", "docker"]);
    forgejo_job.attempt = None;
    forgejo_job.handle = None;
    let job = job_json_for(
        &pool(UID, "docker:docker://node:22,x:host", 5),
        &forgejo_job,
        RunnerPath::Legacy,
    );
    let name = "forgejo-job-12-0-7b4b84d3c2";
    assert_eq!(job["metadata"]["name"], name);
    let spec = pod_spec(&job);
    assert_eq!(
        spec["containers"][0],
        json!({
            "name": "runner",
            "image": "data.forgejo.org/forgejo/runner:12.8.2",
            "command": ["/bin/sh", "-c", scheduler::LEGACY_SCRIPT, "forgejo-runner-legacy"],
            "args": [
                "/bin/forgejo-runner",
                "https://code.example.com",
                name,
                "x:host,docker:host"
            ],
            "env": [{"name": "HOME", "value": "/data"}],
            "workingDir": "/data",
            "resources": {
                "requests": {"cpu": "250m", "memory": "256Mi"},
                "limits": {"cpu": "2", "memory": "4Gi"}
            },
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 1000,
                "runAsGroup": 1000,
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"]}
            },
            "volumeMounts": [
                {"name": "runner-data", "mountPath": "/data"},
                {"name": "runner-credentials", "mountPath": "/var/run/forgejo-runner", "readOnly": true}
            ]
        })
    );
    assert_eq!(
        spec["volumes"][1],
        json!({"name": "runner-credentials", "secret": {
            "secretName": name,
            "items": [{"key": "registration-token", "path": "registration-token"}],
            "defaultMode": 0o440,
            "optional": false
        }})
    );
    assert_eq!(
        scheduler::LEGACY_SCRIPT,
        "set -eu\n\
         IFS= read -r token < /var/run/forgejo-runner/registration-token || [ -n \"$token\" ]\n\
         \"$1\" register --no-interactive --instance \"$2\" --token \"$token\" --name \"$3\" --labels \"$4\"\n\
         if [ -n \"${5:-}\" ]; then exec \"$1\" -c \"$5\" one-job --wait; fi\n\
         exec \"$1\" one-job --wait\n"
    );
    assert!(
        job["metadata"]["annotations"]
            .get("forgejo.runners.dev/handle")
            .is_none()
    );
}

/// A user `jobTemplate` touching metadata, scheduling, an init container, the runner
/// container and volumes.
fn kubernetes_template() -> Value {
    json!({
        "metadata": {
            "labels": {"team": "faro", "app.kubernetes.io/managed-by": "someone-else"},
            "annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}
        },
        "spec": {
            "nodeSelector": {"node.kubernetes.io/instance-type": "c6i.2xlarge"},
            "tolerations": [{"key": "ci", "operator": "Exists", "effect": "NoSchedule"}],
            "priorityClassName": "ci",
            "restartPolicy": "Always",
            "initContainers": [{
                "name": "cache-proxy",
                "image": "registry.example.com/cache-proxy:1",
                "restartPolicy": "Always",
                "ports": [{"containerPort": 3128}]
            }],
            "containers": [{
                "name": "runner",
                "image": "ignored:latest",
                "command": ["ignored"],
                "resources": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "8Gi"}},
                "env": [{"name": "HTTP_PROXY", "value": "http://localhost:3128"}],
                "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]
            }],
            "volumes": [{"name": "cache", "emptyDir": {"sizeLimit": "10Gi"}}]
        }
    })
}

/// The pod spec [`kubernetes_template`] merges into, for a kubernetes-mode runner.
fn merged_kubernetes_pod_spec() -> Value {
    json!({
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "nodeSelector": {"node.kubernetes.io/instance-type": "c6i.2xlarge"},
        "tolerations": [{"key": "ci", "operator": "Exists", "effect": "NoSchedule"}],
        "priorityClassName": "ci",
        "restartPolicy": "Never",
        "securityContext": {"fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
        "initContainers": [
            {
                "name": "cache-proxy",
                "image": "registry.example.com/cache-proxy:1",
                "restartPolicy": "Always",
                "ports": [{"containerPort": 3128}]
            },
            {
                "name": "install-runner",
                "image": "data.forgejo.org/forgejo/runner:12.8.2",
                "command": ["cp", "/bin/forgejo-runner", "/opt/forgejo-runner/forgejo-runner"],
                "resources": {
                    "requests": {"cpu": "10m", "memory": "32Mi"},
                    "limits": {"cpu": "500m", "memory": "128Mi"}
                },
                "securityContext": {
                    "runAsNonRoot": true,
                    "runAsUser": 1000,
                    "runAsGroup": 1000,
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]}
                },
                "volumeMounts": [{"name": "runner-bin", "mountPath": "/opt/forgejo-runner"}]
            }
        ],
        "containers": [{
            "name": "runner",
            "image": "node:22-bookworm",
            "command": ["/opt/forgejo-runner/forgejo-runner"],
            "args": [
                "one-job",
                "--url", "https://code.example.com",
                "--uuid", "$(FORGEJO_RUNNER_UUID)",
                "--token-url", "file:/var/run/forgejo-runner/token",
                "--label", "node:host",
                "--handle", "handle-12-1",
                "--wait"
            ],
            "env": [
                {"name": "HOME", "value": "/data"},
                {"name": "FORGEJO_RUNNER_UUID",
                 "valueFrom": {"secretKeyRef": {"name": NAME, "key": "uuid", "optional": false}}},
                {"name": "HTTP_PROXY", "value": "http://localhost:3128"}
            ],
            "workingDir": "/data",
            "resources": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "8Gi"}},
            "volumeMounts": [
                {"name": "cache", "mountPath": "/cache"},
                {"name": "runner-data", "mountPath": "/data"},
                {"name": "runner-credentials", "mountPath": "/var/run/forgejo-runner", "readOnly": true},
                {"name": "runner-bin", "mountPath": "/opt/forgejo-runner", "readOnly": true}
            ]
        }],
        "volumes": [
            {"name": "cache", "emptyDir": {"sizeLimit": "10Gi"}},
            {"name": "runner-data", "emptyDir": {}},
            {"name": "runner-credentials", "secret": {
                "secretName": NAME,
                "items": [{"key": "token", "path": "token"}],
                "defaultMode": 0o440,
                "optional": false
            }},
            {"name": "runner-bin", "emptyDir": {}}
        ]
    })
}

#[test]
fn user_template_is_merged_into_the_kubernetes_pod() {
    let rd = with_template(
        pool(UID, "node:kubernetes://node:22-bookworm", 5),
        kubernetes_template(),
    );
    let job = job_json_for(&rd, &waiting(12, &["node"]), RunnerPath::Ephemeral);
    let mut labels = our_labels();
    labels["team"] = json!("faro");
    assert_eq!(job["spec"]["template"]["metadata"]["labels"], labels);
    assert_eq!(
        job["spec"]["template"]["metadata"]["annotations"]["cluster-autoscaler.kubernetes.io/safe-to-evict"],
        "false"
    );
    assert_eq!(*pod_spec(&job), merged_kubernetes_pod_spec());
}

#[test]
fn template_without_a_runner_container_gets_one_injected_first() {
    let rd = with_template(
        pool(UID, "docker:docker://node:22", 5),
        json!({"spec": {
            "serviceAccountName": "ci",
            "automountServiceAccountToken": true,
            "containers": [{"name": "metrics", "image": "registry.example.com/metrics:1"}],
            "initContainers": [{"name": "dind", "image": "mirror.example.com/docker:28-dind"}]
        }}),
    );
    let job = job_json_for(&rd, &waiting(12, &["docker"]), RunnerPath::Ephemeral);
    let spec = pod_spec(&job);
    let names: Vec<&str> = spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["runner", "metrics"]);
    assert_eq!(
        spec["containers"][0]["image"],
        "data.forgejo.org/forgejo/runner:12.8.2"
    );
    assert_eq!(spec["serviceAccountName"], "ci");
    assert_eq!(
        spec["automountServiceAccountToken"], true,
        "the user's choice stays"
    );
    let dind = &spec["initContainers"][0];
    assert_eq!(
        dind["image"], "mirror.example.com/docker:28-dind",
        "a dind mirror is allowed"
    );
    assert_eq!(dind["securityContext"]["privileged"], true);
    assert_eq!(dind["restartPolicy"], "Always");
    assert_eq!(spec["initContainers"].as_array().unwrap().len(), 1);
}

/// Every Secret name the object refers to, wherever it does.
fn secret_references(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match key.as_str() {
                    "secretName" => found.push(inner.as_str().unwrap_or_default().to_owned()),
                    "secretKeyRef" | "secretRef" => {
                        found.push(inner["name"].as_str().unwrap_or_default().to_owned())
                    }
                    _ => {}
                }
                secret_references(inner, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| secret_references(i, found)),
        _ => {}
    }
}

#[test]
fn no_field_of_any_runner_job_carries_the_api_token() {
    let template = json!({"spec": {"containers": [{"name": "runner", "resources": {}}]}});
    for labels in [
        "x:host",
        "docker:docker://node:22",
        "node:kubernetes://node:22-bookworm",
    ] {
        let runs_on = [labels.split(':').next().unwrap()];
        for path in [RunnerPath::Ephemeral, RunnerPath::Legacy] {
            for rd in [
                pool(UID, labels, 5),
                with_template(pool(UID, labels, 5), template.clone()),
            ] {
                let job = job_json_for(&rd, &waiting(12, &runs_on), path);
                let text = job.to_string();
                assert!(
                    !text.contains(API_TOKEN_SECRET),
                    "{labels} {path:?}: {text}"
                );
                assert!(!text.contains(API_TOKEN_KEY), "{labels} {path:?}: {text}");
                let mut references = Vec::new();
                secret_references(&job, &mut references);
                assert!(!references.is_empty());
                assert!(
                    references.iter().all(|r| r == NAME),
                    "{labels} {path:?}: only the Job's own Secret may be referenced: {references:?}"
                );
            }
        }
    }
}
