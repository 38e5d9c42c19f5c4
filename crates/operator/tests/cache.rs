//! Cluster tier: a pool's shared Actions cache (`spec.cache`) against a real apiserver:
//! the managed server's objects created, owned, mounted by runner pods, removed by
//! `mode: Disabled` and collected with the pool; `External` uses the given server and
//! Secret and runs none. (That a runner pod reaches the server is the node tier's.)

mod support;

use std::time::Duration;

use forgejo_stand_in::StandInJob;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt as _};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use support::{Operator, World, wait_until};

const LONG: Duration = Duration::from_secs(60);

fn pool_json(world: &World, name: &str, cache: Value) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {
            "forgejoServer": world.forgejo.url(),
            "organization": "faro",
            "labels": "linux:host",
            "tokenSecretRef": {"name": "forgejo-token", "key": "token"},
            "pollInterval": "1s",
            "maxRunners": 10,
            "cache": cache,
        }
    })
}

async fn get<K>(world: &World, name: &str) -> Option<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(world.client.clone(), &world.ns);
    api.get_opt(name).await.ok().flatten()
}

/// Waits for `name` of kind `K`, and checks that the pool with `uid` controls it.
async fn owned<K>(world: &World, name: &str, uid: &str) -> K
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let object: K = wait_until(&format!("{} {name}", K::kind(&())), LONG, || {
        get::<K>(world, name)
    })
    .await;
    let owner = object
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .unwrap_or_else(|| panic!("{} {name} has no controller", K::kind(&())));
    assert_eq!(owner.kind, "RunnerDeployment");
    assert_eq!(
        owner.uid,
        uid,
        "{} {name} is owned by its pool",
        K::kind(&())
    );
    object
}

async fn gone<K>(world: &World, name: &str)
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    wait_until(&format!("{} {name} to go", K::kind(&())), LONG, || async {
        get::<K>(world, name).await.is_none().then_some(())
    })
    .await;
}

/// The runner Job made for the Forgejo job `id`.
async fn runner_job_for(world: &World, id: i64) -> Job {
    let id = id.to_string();
    wait_until(&format!("the runner Job of job {id}"), LONG, || async {
        world
            .runner_jobs()
            .await
            .into_iter()
            .find(|job| job.labels().get(scheduler::labels::FORGEJO_JOB_ID) == Some(&id))
    })
    .await
}

/// The pod spec of a runner Job, as JSON.
fn pod_spec(job: &Job) -> Value {
    serde_json::to_value(job).expect("job")["spec"]["template"]["spec"].clone()
}

fn volume(spec: &Value, name: &str) -> Option<Value> {
    spec["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == name)
        .cloned()
}

fn runner_args(spec: &Value) -> Vec<String> {
    spec["containers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "runner"))
        .and_then(|c| c["args"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn a_managed_cache_is_created_owned_mounted_and_removed_when_disabled() {
    let world = World::new("cache").await;
    let first = world
        .forgejo
        .add_job(StandInJob::new("faro/app", "build", &["linux"]));
    // A class nothing provides: the claim stays Pending, so the server cannot be scheduled.
    let cache =
        json!({"mode": "Managed", "storage": {"storageClassName": "frc-none", "size": "2Gi"}});
    let rd = world
        .create_pool_from(pool_json(&world, "pool", cache))
        .await;
    let uid = rd.uid().expect("uid");
    let operator = Operator::start(&world.ns);

    let deployment: Deployment = owned(&world, "pool-cache", &uid).await;
    let service: Service = owned(&world, "pool-cache", &uid).await;
    let claim: PersistentVolumeClaim = owned(&world, "pool-cache", &uid).await;
    let secret: Secret = owned(&world, "pool-cache", &uid).await;
    let config: ConfigMap = owned(&world, "pool-cache-config", &uid).await;

    let deployment = serde_json::to_value(&deployment).expect("json");
    let server = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(server["args"][2], "cache-server");
    assert_eq!(server["image"], api::DEFAULT_RUNNER_IMAGE);
    let claim = serde_json::to_value(&claim).expect("json");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "2Gi");
    assert_eq!(claim["spec"]["storageClassName"], "frc-none");
    let hmac = secret
        .data
        .as_ref()
        .and_then(|d| d.get("secret"))
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        .expect("the HMAC secret");
    assert_eq!(hmac.len(), 64, "32 random bytes, hex");
    let ip = service
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a cluster IP");
    let runner_yaml = config
        .data
        .as_ref()
        .and_then(|d| d.get("runner.yaml"))
        .cloned()
        .expect("runner.yaml");
    assert!(
        runner_yaml.contains(&format!("external_server: \"http://{ip}:4000/\"")),
        "{runner_yaml}"
    );
    assert!(!runner_yaml.contains(&hmac), "the config holds no secret");

    // The runner pod reads the config with -c, and the secret from a file.
    let spec = pod_spec(&runner_job_for(&world, first.id).await);
    assert_eq!(
        runner_args(&spec)[..3],
        ["-c", "/etc/forgejo-runner/config.yaml", "one-job"]
    );
    assert_eq!(
        volume(&spec, "runner-config").expect("config volume")["configMap"]["name"],
        "pool-cache-config"
    );
    assert_eq!(
        volume(&spec, "cache-secret").expect("secret volume")["secret"]["secretName"],
        "pool-cache"
    );

    // The server cannot be scheduled: a condition and an event say why.
    world
        .wait_for_condition("pool", "CacheReady", "False", "ServerFailing")
        .await;
    let event = world.wait_for_event("pool", "CacheServerFailing").await;
    let note = event.note.clone().unwrap_or_default();
    assert!(note.contains("pool-cache"), "{note}");

    // Nothing a user reads holds the secret.
    let status = serde_json::to_string(&world.pools().get("pool").await.expect("pool").status)
        .expect("json");
    assert!(!status.contains(&hmac));
    let events = serde_json::to_string(&world.events_of("pool").await).expect("json");
    assert!(!events.contains(&hmac));
    assert!(
        !operator.logs().contains(&hmac),
        "the operator logged the cache secret"
    );

    // Disabled removes the server and its config; new runner pods use no shared cache.
    let patch = json!({"spec": {"cache": {"mode": "Disabled"}}});
    world
        .pools()
        .patch("pool", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("disabling the cache");
    gone::<Deployment>(&world, "pool-cache").await;
    gone::<Service>(&world, "pool-cache").await;
    gone::<Secret>(&world, "pool-cache").await;
    gone::<ConfigMap>(&world, "pool-cache-config").await;
    // A claim goes once no pod uses it (its protection finalizer).
    gone::<PersistentVolumeClaim>(&world, "pool-cache").await;
    world
        .wait_for_condition("pool", "CacheReady", "False", "Disabled")
        .await;
    world.wait_for_event("pool", "CacheServerRemoved").await;
    let second = world
        .forgejo
        .add_job(StandInJob::new("faro/app", "test", &["linux"]));
    let spec = pod_spec(&runner_job_for(&world, second.id).await);
    assert_eq!(runner_args(&spec)[0], "one-job");
    assert!(volume(&spec, "runner-config").is_none());
    assert!(volume(&spec, "cache-secret").is_none());
    drop(operator);
}

#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn an_external_cache_uses_the_given_server_and_secret_and_runs_none() {
    let world = World::new("cache-ext").await;
    let cache = json!({"mode": "External", "external": {
        "url": "http://cache.example.test:4000/",
        "secretRef": {"name": "shared-cache", "key": "hmac"}
    }});
    let rd = world
        .create_pool_from(pool_json(&world, "ext", cache))
        .await;
    let uid = rd.uid().expect("uid");
    let first = world
        .forgejo
        .add_job(StandInJob::new("faro/app", "build", &["linux"]));
    let _operator = Operator::start(&world.ns);

    // Without its Secret the cache is not used: the runner still gets its Job.
    world
        .wait_for_condition("ext", "CacheReady", "False", "SecretNotFound")
        .await;
    world.wait_for_event("ext", "CacheSecretNotFound").await;
    let spec = pod_spec(&runner_job_for(&world, first.id).await);
    assert!(volume(&spec, "cache-secret").is_none());

    world
        .put_secret("shared-cache", "hmac", "an-external-secret")
        .await;
    world
        .wait_for_condition("ext", "CacheReady", "True", "External")
        .await;
    let config: ConfigMap = owned(&world, "ext-cache-config", &uid).await;
    let data = config.data.unwrap_or_default();
    assert!(
        data["runner.yaml"].contains("external_server: \"http://cache.example.test:4000/\""),
        "{data:?}"
    );
    assert!(!data.contains_key("server.yaml"));
    let second = world
        .forgejo
        .add_job(StandInJob::new("faro/app", "test", &["linux"]));
    let spec = pod_spec(&runner_job_for(&world, second.id).await);
    assert_eq!(
        volume(&spec, "cache-secret").expect("secret volume")["secret"],
        json!({"secretName": "shared-cache", "items": [{"key": "hmac", "path": "secret"}], "defaultMode": 0o440, "optional": false})
    );
    // No server of its own.
    assert!(get::<Deployment>(&world, "ext-cache").await.is_none());
    assert!(get::<Service>(&world, "ext-cache").await.is_none());
    assert!(
        get::<PersistentVolumeClaim>(&world, "ext-cache")
            .await
            .is_none()
    );
}

#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn a_pools_cache_objects_go_with_the_pool() {
    let world = World::new("cache-gc").await;
    let cache = json!({"mode": "Managed", "storage": {"storageClassName": "frc-none"}});
    let rd = world.create_pool_from(pool_json(&world, "gc", cache)).await;
    let uid = rd.uid().expect("uid");
    let _operator = Operator::start(&world.ns);
    let _: Deployment = owned(&world, "gc-cache", &uid).await;
    let _: ConfigMap = owned(&world, "gc-cache-config", &uid).await;

    world
        .pools()
        .delete("gc", &Default::default())
        .await
        .expect("deleting the pool");
    gone::<Deployment>(&world, "gc-cache").await;
    gone::<Service>(&world, "gc-cache").await;
    gone::<Secret>(&world, "gc-cache").await;
    gone::<ConfigMap>(&world, "gc-cache-config").await;
    gone::<PersistentVolumeClaim>(&world, "gc-cache").await;
}
