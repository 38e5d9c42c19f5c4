//! The managed cache server of a pool: a one-replica Deployment of the pool's runner image
//! running `forgejo-runner cache-server` on a PersistentVolumeClaim, and its Service.
//!
//! The server pod takes from the pool's `jobTemplate` only where it may run and how its
//! image is pulled (node selector, tolerations, affinity, image pull secrets): the rest of
//! the template is about runner pods.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, Service, ServicePort, ServiceSpec, TCPSocketAction, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::cache::{
    CACHE_DATA_DIR, CACHE_PORT, CACHE_SECRET_DIR, CACHE_SECRET_VOLUME, CONFIG_DIR, CONFIG_FILE,
    CONFIG_VOLUME, CacheNames, MANAGED_SECRET_KEY, SERVER_CONFIG_KEY, cache_meta, config_volume,
    secret_volume,
};
use crate::labels;
use crate::pod::{RUNNER_BINARY, pod_security_context, runner_security_context};
use crate::pool::Pool;

/// The cache server's container.
pub const CACHE_SERVER_CONTAINER: &str = "cache-server";
/// Volume: the cache entries (the claim).
const CACHE_DATA_VOLUME: &str = "cache-data";
/// Volume: scratch space, as the root filesystem is read-only.
const TMP_VOLUME: &str = "tmp";

/// The labels that select the server's pods.
fn selector_labels(pool: &Pool) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            labels::MANAGED_BY.to_owned(),
            labels::MANAGED_BY_VALUE.to_owned(),
        ),
        (
            labels::APP_COMPONENT.to_owned(),
            labels::COMPONENT_CACHE_SERVER.to_owned(),
        ),
        (labels::RUNNER_DEPLOYMENT_UID.to_owned(), pool.uid.clone()),
    ])
}

/// The claim of `size` (a Quantity string) in `storage_class` (the default class if none).
pub fn cache_claim(
    pool: &Pool,
    names: &CacheNames,
    size: &Quantity,
    storage_class: Option<&str>,
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: cache_meta(pool, names.server(), labels::COMPONENT_CACHE_SERVER),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: storage_class.map(str::to_owned),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), size.clone())])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

/// The ClusterIP Service in front of the server.
pub fn cache_service(pool: &Pool, names: &CacheNames) -> Service {
    Service {
        metadata: cache_meta(pool, names.server(), labels::COMPONENT_CACHE_SERVER),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(selector_labels(pool)),
            ports: Some(vec![ServicePort {
                name: Some("cache".to_owned()),
                port: CACHE_PORT,
                target_port: Some(IntOrString::String("cache".to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The pod template annotation naming the HMAC Secret's uid: a Secret made anew (with a new
/// secret) restarts the server, which reads the secret once.
pub const CACHE_SECRET_UID_ANNOTATION: &str = "forgejo.runners.dev/cache-secret-uid";

/// The server's Deployment: one replica, replaced (not rolled) as the claim is
/// ReadWriteOnce; `secret_uid` is the HMAC Secret's uid, when known.
pub fn cache_deployment(pool: &Pool, names: &CacheNames, secret_uid: Option<&str>) -> Deployment {
    let mut pod_labels = crate::cache::cache_labels(pool, labels::COMPONENT_CACHE_SERVER);
    pod_labels.extend(selector_labels(pool));
    Deployment {
        metadata: cache_meta(pool, names.server(), labels::COMPONENT_CACHE_SERVER),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(selector_labels(pool)),
                match_expressions: None,
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".to_owned()),
                rolling_update: None,
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: secret_uid.map(|uid| {
                        BTreeMap::from([(CACHE_SECRET_UID_ANNOTATION.to_owned(), uid.to_owned())])
                    }),
                    ..ObjectMeta::default()
                }),
                spec: Some(server_pod(pool, names)),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

fn server_pod(pool: &Pool, names: &CacheNames) -> PodSpec {
    let user = pool.template.as_ref().and_then(|t| t.spec.as_ref());
    PodSpec {
        containers: vec![server_container(pool)],
        volumes: Some(vec![
            config_volume(&names.config_map(), SERVER_CONFIG_KEY),
            secret_volume(names.server(), MANAGED_SECRET_KEY),
            Volume {
                name: CACHE_DATA_VOLUME.to_owned(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: names.server().to_owned(),
                    read_only: None,
                }),
                ..Volume::default()
            },
            Volume {
                name: TMP_VOLUME.to_owned(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            },
        ]),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(pod_security_context()),
        node_selector: user.and_then(|s| s.node_selector.clone()),
        tolerations: user.and_then(|s| s.tolerations.clone()),
        affinity: user.and_then(|s| s.affinity.clone()),
        image_pull_secrets: user.and_then(|s| s.image_pull_secrets.clone()),
        ..PodSpec::default()
    }
}

/// `forgejo-runner cache-server`, non-root on a read-only root filesystem.
fn server_container(pool: &Pool) -> Container {
    let tcp_probe = |period: i32| Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String("cache".to_owned()),
            host: None,
        }),
        period_seconds: Some(period),
        ..Probe::default()
    };
    Container {
        name: CACHE_SERVER_CONTAINER.to_owned(),
        image: Some(pool.runner_image.clone()),
        command: Some(vec![RUNNER_BINARY.to_owned()]),
        args: Some(
            [
                "-c",
                CONFIG_FILE,
                "cache-server",
                "--dir",
                CACHE_DATA_DIR,
                "--port",
                &CACHE_PORT.to_string(),
            ]
            .map(str::to_owned)
            .to_vec(),
        ),
        ports: Some(vec![ContainerPort {
            name: Some("cache".to_owned()),
            container_port: CACHE_PORT,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(tcp_probe(2)),
        liveness_probe: Some(tcp_probe(10)),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity("50m".to_owned())),
                ("memory".to_owned(), Quantity("64Mi".to_owned())),
            ])),
            limits: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity("1".to_owned())),
                ("memory".to_owned(), Quantity("1Gi".to_owned())),
            ])),
            claims: None,
        }),
        security_context: Some(runner_security_context(true)),
        // forgejo-runner writes no termination-log file: with this, a server that exits
        // with an error (`mkdir …/cache: permission denied` on a volume it cannot write)
        // leaves the tail of its log as `lastState.terminated.message`, which `CacheReady`
        // quotes. The server logs no secret.
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        volume_mounts: Some(vec![
            mount(CONFIG_VOLUME, CONFIG_DIR),
            mount(CACHE_SECRET_VOLUME, CACHE_SECRET_DIR),
            VolumeMount {
                read_only: None,
                ..mount(CACHE_DATA_VOLUME, CACHE_DATA_DIR)
            },
            VolumeMount {
                read_only: None,
                ..mount(TMP_VOLUME, "/tmp")
            },
        ]),
        ..Container::default()
    }
}

/// A read-only mount of `volume` at `path`.
fn mount(volume: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: volume.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}
