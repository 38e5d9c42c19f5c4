//! Cluster tier: the CRD's schema rules, defaults and ownership, proven by a real
//! kube-apiserver and kube-controller-manager. Run by `cargo xtask test`, which starts the
//! control plane, installs `deploy/` and sets FRC_TEST_KUBECONFIG.

use std::time::Duration;

use api::RunnerDeployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, Resource as _, ResourceExt as _};
use serde_json::{Value, json};

const NEEDS_CLUSTER: &str = "needs the local control plane: run `cargo xtask test`";

async fn admin_client() -> Client {
    let path = std::env::var("FRC_TEST_KUBECONFIG")
        .unwrap_or_else(|_| panic!("FRC_TEST_KUBECONFIG is not set: this test {NEEDS_CLUSTER}"));
    let kubeconfig = kube::config::Kubeconfig::read_from(&path)
        .unwrap_or_else(|e| panic!("reading kubeconfig {path}: {e}"));
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("loading kubeconfig {path}: {e}"));
    Client::try_from(config).expect("kube client")
}

/// A fresh namespace, deleted when the guard drops.
struct TempNamespace {
    name: String,
}

impl TempNamespace {
    async fn new(client: &Client, prefix: &str) -> Self {
        let name = format!("{prefix}-{:08x}", rand_suffix());
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
        Self { name }
    }
}

impl Drop for TempNamespace {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Best effort: the control plane is torn down after the tier anyway. A new client on
        // a new runtime: the test's runtime is blocked in this drop.
        std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Runtime::new() {
                runtime.block_on(async move {
                    let namespaces: Api<Namespace> = Api::all(admin_client().await);
                    let _ = namespaces.delete(&name, &DeleteParams::default()).await;
                });
            }
        })
        .join()
        .ok();
    }
}

fn rand_suffix() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    nanos ^ std::process::id().rotate_left(16)
}

fn valid_pool(name: &str) -> Value {
    json!({
        "apiVersion": "forgejo.runners.dev/v1alpha1",
        "kind": "RunnerDeployment",
        "metadata": {"name": name},
        "spec": {
            "forgejoServer": "https://code.example.com",
            "organization": "faro",
            "labels": "docker,ubuntu-22.04:docker://node:20-bullseye,x:host",
            "tokenSecretRef": {"name": "forgejo-token"}
        }
    })
}

async fn create(api: &Api<RunnerDeployment>, value: Value) -> Result<RunnerDeployment, String> {
    let rd: RunnerDeployment = serde_json::from_value(value).map_err(|e| e.to_string())?;
    api.create(&PostParams::default(), &rd)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn apiserver_applies_defaults_to_a_valid_pool() {
    let client = admin_client().await;
    let ns = TempNamespace::new(&client, "api-defaults").await;
    let api: Api<RunnerDeployment> = Api::namespaced(client.clone(), &ns.name);
    // Create from raw JSON without the optional fields, so the server fills the defaults.
    let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns.name,
        &kube::api::ApiResource::erase::<RunnerDeployment>(&()),
    );
    let object: kube::api::DynamicObject = serde_json::from_value(valid_pool("ok")).unwrap();
    raw.create(&PostParams::default(), &object).await.unwrap();
    let rd = api.get("ok").await.unwrap();
    assert_eq!(rd.spec.poll_interval, "10s");
    assert_eq!(rd.spec.max_runners, 10);
    assert_eq!(rd.spec.token_secret_ref.key, "token");
    assert_eq!(rd.spec.runner_image, api::DEFAULT_RUNNER_IMAGE);
    assert_eq!(rd.spec.ttl_seconds_after_finished, 300);

    // Warm runners: the defaults of the optional fields, and a schedule in a zone.
    let mut warm = valid_pool("warm");
    warm["spec"]["warmRunners"] = json!({"runners": [{"label": "docker", "count": 2}],
        "schedules": [{"days": ["Mon", "Fri"], "start": "07:00", "end": "24:00",
            "timeZone": "Europe/Berlin"}]});
    let object: kube::api::DynamicObject = serde_json::from_value(warm).unwrap();
    raw.create(&PostParams::default(), &object).await.unwrap();
    let rd = api.get("warm").await.unwrap();
    let warm = rd.spec.warm_runners.clone().expect("kept");
    assert_eq!(
        (warm.fetch_interval.as_str(), warm.activity_window.as_str()),
        ("1s", "30m")
    );
    rd.spec.validate().expect("the operator accepts it too");
}

#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn apiserver_refuses_each_bad_field_and_names_it() {
    let client = admin_client().await;
    let ns = TempNamespace::new(&client, "api-rules").await;
    let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns.name,
        &kube::api::ApiResource::erase::<RunnerDeployment>(&()),
    );
    type Change = fn(&mut Value);
    let cases: [(&str, Change, &[&str]); 21] = [
        (
            "bad-url",
            |v| v["spec"]["forgejoServer"] = "ftp://code.example.com".into(),
            &["spec.forgejoServer", "http"],
        ),
        (
            "no-host",
            |v| v["spec"]["forgejoServer"] = "https://".into(),
            &["spec.forgejoServer"],
        ),
        (
            "empty-labels",
            |v| v["spec"]["labels"] = "".into(),
            &["spec.labels"],
        ),
        (
            "bad-label",
            |v| v["spec"]["labels"] = "docker,ubuntu:lxc://debian".into(),
            &["spec.labels", "name[:scheme[:arg]]"],
        ),
        (
            "no-scope",
            |v| {
                v["spec"].as_object_mut().unwrap().remove("organization");
            },
            &["spec", "exactly one scope"],
        ),
        (
            "two-scopes",
            |v| v["spec"]["repository"] = "faro/app".into(),
            &["spec", "exactly one scope"],
        ),
        (
            "fast-poll",
            |v| v["spec"]["pollInterval"] = "500ms".into(),
            &["spec.pollInterval", "1s to 1h"],
        ),
        (
            "slow-poll",
            |v| v["spec"]["pollInterval"] = "2h".into(),
            &["spec.pollInterval", "1s to 1h"],
        ),
        (
            "no-runners",
            |v| v["spec"]["maxRunners"] = 0.into(),
            &["spec.maxRunners"],
        ),
        (
            "bad-repo",
            |v| {
                v["spec"].as_object_mut().unwrap().remove("organization");
                v["spec"]["repository"] = "faro".into();
            },
            &["spec.repository", "owner/name"],
        ),
        (
            "traversal-repo",
            |v| {
                v["spec"].as_object_mut().unwrap().remove("organization");
                v["spec"]["repository"] = "../admin".into();
            },
            &["spec.repository", "owner/name"],
        ),
        (
            "reserved-repo",
            |v| {
                v["spec"].as_object_mut().unwrap().remove("organization");
                v["spec"]["repository"] = "faro/app.git".into();
            },
            &["spec.repository", ".git"],
        ),
        (
            "traversal-org",
            |v| v["spec"]["organization"] = "../admin".into(),
            &["spec.organization", "Forgejo user or organization name"],
        ),
        (
            "bad-secret-name",
            |v| v["spec"]["tokenSecretRef"]["name"] = "../token".into(),
            &["spec.tokenSecretRef.name", "Secret name"],
        ),
        (
            "bad-secret-key",
            |v| v["spec"]["tokenSecretRef"]["key"] = "../token".into(),
            &["spec.tokenSecretRef.key", "Secret key"],
        ),
        (
            "external-cache-nowhere",
            |v| v["spec"]["cache"] = serde_json::json!({"mode": "External"}),
            &["spec.cache", "external.url"],
        ),
        (
            "bad-cache-mode",
            |v| v["spec"]["cache"] = serde_json::json!({"mode": "Shared"}),
            &["spec.cache.mode", "Managed"],
        ),
        (
            "bad-cache-url",
            |v| {
                v["spec"]["cache"] = serde_json::json!({"mode": "External", "external": {
                    "url": "cache:4000", "secretRef": {"name": "cache"}}})
            },
            &["spec.cache.external.url", "http"],
        ),
        (
            "bad-cache-secret",
            |v| {
                v["spec"]["cache"] = serde_json::json!({"mode": "External", "external": {
                    "url": "http://cache:4000/", "secretRef": {"name": "../cache"}}})
            },
            &["spec.cache.external.secretRef.name", "Secret name"],
        ),
        (
            "bad-warm-clock",
            |v| {
                v["spec"]["warmRunners"] = serde_json::json!({"runners": [{"label": "docker", "count": 2}],
                    "schedules": [{"days": ["Mon"], "start": "7:00", "end": "19:00"}]})
            },
            &["spec.warmRunners.schedules[0].start"],
        ),
        (
            "bad-warm-day",
            |v| {
                v["spec"]["warmRunners"] = serde_json::json!({"runners": [{"label": "docker", "count": 2}],
                    "schedules": [{"days": ["Monday"], "start": "07:00", "end": "19:00"}]})
            },
            &["spec.warmRunners.schedules[0].days[0]", "Mon"],
        ),
    ];
    for (name, change, expected) in cases {
        let mut value = valid_pool(name);
        change(&mut value);
        let object: kube::api::DynamicObject = serde_json::from_value(value).unwrap();
        let error = raw
            .create(&PostParams::default(), &object)
            .await
            .expect_err(&format!("{name}: the apiserver accepted a bad pool"))
            .to_string();
        for needle in expected {
            assert!(
                error.contains(needle),
                "{name}: error does not mention {needle:?}: {error}"
            );
        }
    }
}

#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn job_owned_by_a_pool_is_garbage_collected_with_it() {
    let client = admin_client().await;
    let ns = TempNamespace::new(&client, "api-gc").await;
    let pools: Api<RunnerDeployment> = Api::namespaced(client.clone(), &ns.name);
    let rd = create(&pools, valid_pool("owner")).await.unwrap();
    let owner = rd.controller_owner_ref(&()).unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let mut job: Job = serde_json::from_value(json!({
        "metadata": {"name": "owned"},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox"}]}}}
    }))
    .unwrap();
    job.metadata.owner_references = Some(vec![owner]);
    jobs.create(&PostParams::default(), &job).await.unwrap();

    pools
        .delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match jobs.get_opt("owned").await.unwrap() {
            None => break,
            Some(job) if tokio::time::Instant::now() > deadline => {
                panic!(
                    "Job {} still exists 60s after its owner was deleted",
                    job.name_any()
                )
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
