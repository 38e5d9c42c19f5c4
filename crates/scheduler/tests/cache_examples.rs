//! The exact objects of a pool's shared cache, and what a runner pod mounts to use it.

mod support;

use scheduler::{
    CacheNames, Pool, RunnerCache, RunnerPath, cache_claim, cache_config_map, cache_deployment,
    cache_secret, cache_service, runner_job,
};
use serde_json::{Value, json};
use support::*;

fn test_pool(labels: &str) -> Pool {
    Pool::from_resource(&pool(UID, labels, 5)).unwrap()
}

fn with_cache(mut pool: Pool) -> Pool {
    pool.cache = Some(RunnerCache {
        config_map: "faro-cache-config".into(),
        secret_name: "faro-cache".into(),
        secret_key: "secret".into(),
    });
    pool
}

fn owner() -> Value {
    json!([{
        "apiVersion": "forgejo.runners.dev/v1alpha1",
        "kind": "RunnerDeployment",
        "name": "faro",
        "uid": UID,
        "controller": true,
        "blockOwnerDeletion": true
    }])
}

fn cache_labels(component: &str) -> Value {
    json!({
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/instance": "faro",
        "app.kubernetes.io/managed-by": "forgejo-runner-controller",
        "app.kubernetes.io/name": "forgejo-runner",
        "forgejo.runners.dev/runner-deployment": "faro",
        "forgejo.runners.dev/runner-deployment-uid": UID
    })
}

fn meta(name: &str, component: &str) -> Value {
    json!({
        "name": name,
        "namespace": "ci",
        "labels": cache_labels(component),
        "ownerReferences": owner()
    })
}

fn selector() -> Value {
    json!({
        "app.kubernetes.io/component": "cache-server",
        "app.kubernetes.io/managed-by": "forgejo-runner-controller",
        "forgejo.runners.dev/runner-deployment-uid": UID
    })
}

#[test]
fn the_cache_server_is_a_recreated_single_replica_on_its_claim() {
    let pool = test_pool("x:host");
    let names = CacheNames::for_pool(&pool);
    let deployment = serde_json::to_value(cache_deployment(&pool, &names, None)).unwrap();
    assert_eq!(deployment["metadata"], meta("faro-cache", "cache-server"));
    assert_eq!(
        deployment["spec"],
        json!({
            "replicas": 1,
            "selector": {"matchLabels": selector()},
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {"labels": cache_labels("cache-server")},
                "spec": {
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "securityContext": {
                        "fsGroup": 1000,
                        "seccompProfile": {"type": "RuntimeDefault"}
                    },
                    "containers": [{
                        "name": "cache-server",
                        "image": "data.forgejo.org/forgejo/runner:12.8.2",
                        "command": ["/bin/forgejo-runner"],
                        "args": ["-c", "/etc/forgejo-runner/config.yaml", "cache-server",
                                 "--dir", "/var/lib/forgejo-runner-cache", "--port", "4000"],
                        "ports": [{"name": "cache", "containerPort": 4000, "protocol": "TCP"}],
                        "readinessProbe": {"tcpSocket": {"port": "cache"}, "periodSeconds": 2},
                        "livenessProbe": {"tcpSocket": {"port": "cache"}, "periodSeconds": 10},
                        "resources": {
                            "requests": {"cpu": "50m", "memory": "64Mi"},
                            "limits": {"cpu": "1", "memory": "1Gi"}
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "capabilities": {"drop": ["ALL"]},
                            "readOnlyRootFilesystem": true,
                            "runAsGroup": 1000,
                            "runAsNonRoot": true,
                            "runAsUser": 1000
                        },
                        "terminationMessagePolicy": "FallbackToLogsOnError",
                        "volumeMounts": [
                            {"name": "runner-config", "mountPath": "/etc/forgejo-runner", "readOnly": true},
                            {"name": "cache-secret", "mountPath": "/var/run/forgejo-runner-cache", "readOnly": true},
                            {"name": "cache-data", "mountPath": "/var/lib/forgejo-runner-cache"},
                            {"name": "tmp", "mountPath": "/tmp"}
                        ]
                    }],
                    "volumes": [
                        {"name": "runner-config", "configMap": {
                            "name": "faro-cache-config",
                            "items": [{"key": "server.yaml", "path": "config.yaml"}],
                            "optional": false
                        }},
                        {"name": "cache-secret", "secret": {
                            "secretName": "faro-cache",
                            "items": [{"key": "secret", "path": "secret"}],
                            "defaultMode": 0o440,
                            "optional": false
                        }},
                        {"name": "cache-data", "persistentVolumeClaim": {"claimName": "faro-cache"}},
                        {"name": "tmp", "emptyDir": {}}
                    ]
                }
            }
        })
    );
}

#[test]
fn the_server_pod_takes_only_placement_and_pull_secrets_from_the_job_template() {
    let rd = with_template(
        pool(UID, "x:host", 5),
        json!({"spec": {
            "nodeSelector": {"pool": "ci"},
            "tolerations": [{"key": "ci", "operator": "Exists"}],
            "imagePullSecrets": [{"name": "registry"}],
            "priorityClassName": "ci",
            "containers": [{"name": "runner", "resources": {"requests": {"cpu": "4"}}}]
        }}),
    );
    let pool = Pool::from_resource(&rd).unwrap();
    let deployment = serde_json::to_value(cache_deployment(
        &pool,
        &CacheNames::for_pool(&pool),
        Some("s-1"),
    ))
    .unwrap();
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["annotations"],
        json!({"forgejo.runners.dev/cache-secret-uid": "s-1"})
    );
    let spec = &deployment["spec"]["template"]["spec"];
    assert_eq!(spec["nodeSelector"], json!({"pool": "ci"}));
    assert_eq!(
        spec["tolerations"],
        json!([{"key": "ci", "operator": "Exists"}])
    );
    assert_eq!(spec["imagePullSecrets"], json!([{"name": "registry"}]));
    assert!(spec.get("priorityClassName").is_none());
    assert_eq!(spec["containers"][0]["resources"]["requests"]["cpu"], "50m");
}

#[test]
fn the_service_claim_secret_and_config_are_owned_by_the_pool() {
    let pool = test_pool("x:host");
    let names = CacheNames::for_pool(&pool);
    let service = serde_json::to_value(cache_service(&pool, &names)).unwrap();
    assert_eq!(
        service,
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta("faro-cache", "cache-server"),
            "spec": {
                "type": "ClusterIP",
                "selector": selector(),
                "ports": [{"name": "cache", "port": 4000, "targetPort": "cache", "protocol": "TCP"}]
            }
        })
    );
    let size = k8s_openapi::apimachinery::pkg::api::resource::Quantity("20Gi".into());
    let claim = serde_json::to_value(cache_claim(&pool, &names, &size, Some("fast"))).unwrap();
    assert_eq!(
        claim,
        json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": meta("faro-cache", "cache-server"),
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "fast",
                "resources": {"requests": {"storage": "20Gi"}}
            }
        })
    );
    let secret = serde_json::to_value(cache_secret(&pool, &names, "0123abcd")).unwrap();
    assert_eq!(secret["metadata"], meta("faro-cache", "cache-server"));
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(secret["data"], json!({"secret": "MDEyM2FiY2Q="}));

    let config = serde_json::to_value(cache_config_map(
        &pool,
        &names,
        "http://10.96.0.12:4000/",
        true,
    ))
    .unwrap();
    assert_eq!(
        config["metadata"],
        meta("faro-cache-config", "cache-config")
    );
    let data = config["data"].as_object().unwrap();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["runner-docker.yaml", "runner.yaml", "server.yaml"]
    );
    assert!(data["runner.yaml"].as_str().unwrap().contains(
        "external_server: \"http://10.96.0.12:4000/\"\n  secret_url: \"file:/var/run/forgejo-runner-cache/secret\"\n"
    ));
    assert!(
        data["runner-docker.yaml"]
            .as_str()
            .unwrap()
            .ends_with("  host: \"172.17.0.1\"\n")
    );
    let external =
        serde_json::to_value(cache_config_map(&pool, &names, "http://c:1/", false)).unwrap();
    assert!(external["data"].get("server.yaml").is_none());
}

fn runner_pod(pool: &Pool, runs_on: &[&str], path: RunnerPath) -> Value {
    let job = runner_job(pool, &waiting(12, runs_on), path).unwrap();
    serde_json::to_value(job).unwrap()["spec"]["template"]["spec"].clone()
}

fn runner(pod: &Value) -> &Value {
    pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "runner")
        .unwrap()
}

fn volume<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name} in {pod}"))
}

#[test]
fn a_runner_with_a_cache_reads_its_config_with_c_and_its_secret_from_a_file() {
    let pod = runner_pod(
        &with_cache(test_pool("x:host")),
        &["x"],
        RunnerPath::Ephemeral,
    );
    let runner = runner(&pod);
    assert_eq!(
        runner["args"].as_array().unwrap()[..3],
        [
            json!("-c"),
            json!("/etc/forgejo-runner/config.yaml"),
            json!("one-job")
        ]
    );
    let mounts = runner["volumeMounts"].as_array().unwrap();
    assert!(mounts.contains(&json!(
        {"name": "runner-config", "mountPath": "/etc/forgejo-runner", "readOnly": true}
    )));
    assert!(mounts.contains(&json!(
        {"name": "cache-secret", "mountPath": "/var/run/forgejo-runner-cache", "readOnly": true}
    )));
    assert_eq!(
        volume(&pod, "runner-config")["configMap"],
        json!({"name": "faro-cache-config", "items": [{"key": "runner.yaml", "path": "config.yaml"}], "optional": false})
    );
    assert_eq!(
        volume(&pod, "cache-secret")["secret"],
        json!({"secretName": "faro-cache", "items": [{"key": "secret", "path": "secret"}], "defaultMode": 0o440, "optional": false})
    );
    // The secret is a file: not in args, not in env.
    let text = runner.to_string();
    assert!(
        !text.contains("secretKeyRef\":{\"key\":\"secret\""),
        "{text}"
    );
}

#[test]
fn a_docker_runner_with_a_cache_names_the_pinned_dind_bridge() {
    let pod = runner_pod(
        &with_cache(test_pool("d:docker://node:22")),
        &["d"],
        RunnerPath::Ephemeral,
    );
    assert_eq!(
        volume(&pod, "runner-config")["configMap"]["items"],
        json!([{"key": "runner-docker.yaml", "path": "config.yaml"}])
    );
    let dind = &pod["initContainers"][0];
    assert_eq!(dind["name"], "dind");
    assert_eq!(dind["args"], json!(["--bip=172.17.0.1/16"]));
}

#[test]
fn a_legacy_runner_with_a_cache_passes_the_config_to_its_script() {
    let pod = runner_pod(&with_cache(test_pool("x:host")), &["x"], RunnerPath::Legacy);
    let args = runner(&pod)["args"].as_array().unwrap().clone();
    assert_eq!(args.len(), 5);
    assert_eq!(args[4], "/etc/forgejo-runner/config.yaml");
}

#[test]
fn a_runner_without_a_cache_has_no_config() {
    let pod = runner_pod(
        &test_pool("d:docker://node:22"),
        &["d"],
        RunnerPath::Ephemeral,
    );
    assert_eq!(runner(&pod)["args"][0], "one-job");
    assert!(
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["name"] != "runner-config" && v["name"] != "cache-secret")
    );
    assert!(pod["initContainers"][0].get("args").is_none());
}
