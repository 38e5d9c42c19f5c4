//! The shared Actions cache of a pool: the names of its objects, the forgejo-runner config
//! that points runners (and the managed server) at it, and what a runner pod mounts.
//!
//! forgejo-runner's `actions/cache` proxy runs inside the runner; with
//! `cache.external_server` it forwards to a shared `forgejo-runner cache-server`, signing
//! each request with the HMAC secret both read from `cache.secret_url` (docs/forgejo.md,
//! "Caches"). The secret is a file from a Secret volume: never an arg, env var or status.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, ConfigMapVolumeSource, KeyToPath, Secret, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::labels;
use crate::naming::{is_dns1123_label, pool_hash};
use crate::pool::Pool;
use crate::volumes::secret_file_volume;

/// The port the managed cache server listens on, and its Service's port.
pub const CACHE_PORT: i32 = 4000;
/// Where runner and cache-server pods mount their forgejo-runner config.
pub const CONFIG_DIR: &str = "/etc/forgejo-runner";
/// The forgejo-runner config file given with `-c`.
pub const CONFIG_FILE: &str = "/etc/forgejo-runner/config.yaml";
/// The file name of [`CONFIG_FILE`] in [`CONFIG_DIR`].
pub const CONFIG_FILE_NAME: &str = "config.yaml";
/// Where the cache's HMAC secret is mounted.
pub const CACHE_SECRET_DIR: &str = "/var/run/forgejo-runner-cache";
/// The HMAC secret file, named by `cache.secret_url`.
pub const CACHE_SECRET_FILE: &str = "/var/run/forgejo-runner-cache/secret";
/// The file name of [`CACHE_SECRET_FILE`] in [`CACHE_SECRET_DIR`].
pub const CACHE_SECRET_FILE_NAME: &str = "secret";
/// Where the managed server keeps its entries (its PersistentVolumeClaim).
pub const CACHE_DATA_DIR: &str = "/var/lib/forgejo-runner-cache";
/// Key of the managed HMAC Secret.
pub const MANAGED_SECRET_KEY: &str = "secret";
/// ConfigMap key: the config of host- and kubernetes-mode runners.
pub const RUNNER_CONFIG_KEY: &str = "runner.yaml";
/// ConfigMap key: the config of docker-mode runners (with `cache.host`).
pub const DOCKER_RUNNER_CONFIG_KEY: &str = "runner-docker.yaml";
/// ConfigMap key: the config of the managed cache server.
pub const SERVER_CONFIG_KEY: &str = "server.yaml";
/// The address of dind's bridge in docker-mode pods (pinned with `--bip`): step containers
/// reach the runner's cache proxy there.
pub const DIND_BRIDGE_IP: &str = "172.17.0.1";
/// dind's `--bip`, the bridge of [`DIND_BRIDGE_IP`].
pub const DIND_BRIDGE_CIDR: &str = "172.17.0.1/16";
/// Volume: the forgejo-runner config.
pub const CONFIG_VOLUME: &str = "runner-config";
/// Volume: the cache's HMAC secret.
pub const CACHE_SECRET_VOLUME: &str = "cache-secret";
/// Mode of the mounted secret file: readable by owner and `fsGroup`.
pub const CACHE_SECRET_MODE: i32 = 0o440;

/// Names of a pool's cache objects: `<pool>-cache` when it makes a Service name, else
/// `frc-cache-<pool hash>` (a pool name may be 253 characters, or hold dots).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheNames {
    base: String,
}

impl CacheNames {
    /// The names for `pool`.
    pub fn for_pool(pool: &Pool) -> Self {
        Self::new(&pool.name, &pool.uid)
    }

    /// The names for a pool named `name` with `uid`.
    pub fn new(name: &str, uid: &str) -> Self {
        let base = format!("{name}-cache");
        // A Service name is a DNS-1035 label: it starts with a letter.
        let fits = is_dns1123_label(&format!("{base}-config"))
            && base.starts_with(|c: char| c.is_ascii_lowercase());
        if fits {
            Self { base }
        } else {
            Self {
                base: format!("frc-cache-{}", pool_hash(uid)),
            }
        }
    }

    /// The cache server's Deployment, Service, PersistentVolumeClaim and HMAC Secret.
    pub fn server(&self) -> &str {
        &self.base
    }

    /// The ConfigMap of forgejo-runner configs.
    pub fn config_map(&self) -> String {
        format!("{}-config", self.base)
    }
}

/// The forgejo-runner config volume: `key` of the ConfigMap `config_map` as
/// [`CONFIG_FILE_NAME`].
pub(crate) fn config_volume(config_map: &str, key: &str) -> Volume {
    Volume {
        name: CONFIG_VOLUME.to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map.to_owned(),
            items: Some(vec![KeyToPath {
                key: key.to_owned(),
                path: CONFIG_FILE_NAME.to_owned(),
                mode: None,
            }]),
            default_mode: None,
            optional: Some(false),
        }),
        ..Volume::default()
    }
}

/// The HMAC secret volume: `key` of the Secret `secret` as [`CACHE_SECRET_FILE_NAME`].
pub(crate) fn secret_volume(secret: &str, key: &str) -> Volume {
    secret_file_volume(
        CACHE_SECRET_VOLUME,
        secret,
        key,
        CACHE_SECRET_FILE_NAME,
        CACHE_SECRET_MODE,
    )
}

/// The forgejo-runner config of a runner that uses the cache server at `server_url`;
/// `proxy_host` is the address step containers reach the runner's proxy at, when the
/// runner's own outbound address will not do (docker mode).
pub fn runner_config(server_url: &str, proxy_host: Option<&str>) -> String {
    let mut yaml = format!(
        "# Written by forgejo-runner-controller: the pool's shared Actions cache.\n\
         cache:\n  enabled: true\n  external_server: {}\n  secret_url: {}\n",
        quoted(server_url),
        quoted(&format!("file:{CACHE_SECRET_FILE}")),
    );
    if let Some(host) = proxy_host {
        yaml.push_str(&format!("  host: {}\n", quoted(host)));
    }
    yaml
}

/// The forgejo-runner config of the managed cache server.
pub fn server_config() -> String {
    format!(
        "# Written by forgejo-runner-controller: the pool's cache server.\n\
         cache:\n  enabled: true\n  dir: {}\n  port: {CACHE_PORT}\n  secret_url: {}\n",
        quoted(CACHE_DATA_DIR),
        quoted(&format!("file:{CACHE_SECRET_FILE}")),
    )
}

/// A YAML double-quoted scalar.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The URL of the managed server, by its Service's cluster IP: runner pods need no cluster
/// DNS, and the operator rewrites the config if the Service is ever recreated.
pub fn managed_server_url(cluster_ip: &str) -> String {
    if cluster_ip.contains(':') {
        format!("http://[{cluster_ip}]:{CACHE_PORT}/")
    } else {
        format!("http://{cluster_ip}:{CACHE_PORT}/")
    }
}

/// The labels of every cache object of `pool`.
pub fn cache_labels(pool: &Pool, component: &str) -> BTreeMap<String, String> {
    labels::pool_object_labels(&pool.uid, &pool.name, component)
}

/// Metadata of a cache object named `name`, owned by `pool`.
pub(crate) fn cache_meta(pool: &Pool, name: &str, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(pool.namespace.clone()),
        labels: Some(cache_labels(pool, component)),
        owner_references: Some(vec![pool.owner_reference()]),
        ..ObjectMeta::default()
    }
}

/// The ConfigMap of runner configs for the server at `server_url` (and, with `managed`,
/// the server's own config).
pub fn cache_config_map(
    pool: &Pool,
    names: &CacheNames,
    server_url: &str,
    managed: bool,
) -> ConfigMap {
    let mut data = BTreeMap::from([
        (
            RUNNER_CONFIG_KEY.to_owned(),
            runner_config(server_url, None),
        ),
        (
            DOCKER_RUNNER_CONFIG_KEY.to_owned(),
            runner_config(server_url, Some(DIND_BRIDGE_IP)),
        ),
    ]);
    if managed {
        data.insert(SERVER_CONFIG_KEY.to_owned(), server_config());
    }
    ConfigMap {
        metadata: cache_meta(pool, &names.config_map(), labels::COMPONENT_CACHE_CONFIG),
        data: Some(data),
        ..ConfigMap::default()
    }
}

/// The managed HMAC Secret holding `secret` (made once; the operator never rewrites it).
pub fn cache_secret(pool: &Pool, names: &CacheNames, secret: &str) -> Secret {
    Secret {
        metadata: cache_meta(pool, names.server(), labels::COMPONENT_CACHE_SERVER),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            MANAGED_SECRET_KEY.to_owned(),
            ByteString(secret.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_use_the_pool_name_when_it_makes_a_service_name() {
        assert_eq!(CacheNames::new("faro", "u-1").server(), "faro-cache");
        assert_eq!(
            CacheNames::new("faro", "u-1").config_map(),
            "faro-cache-config"
        );
        let dotted = CacheNames::new("faro.docker", "u-1");
        assert!(dotted.server().starts_with("frc-cache-"), "{dotted:?}");
        let digit = CacheNames::new("1faro", "u-1");
        assert!(digit.server().starts_with("frc-cache-"), "{digit:?}");
        let long = CacheNames::new(&"a".repeat(60), "u-1");
        assert!(is_dns1123_label(&long.config_map()), "{long:?}");
        assert_ne!(
            CacheNames::new("faro.a", "u-1"),
            CacheNames::new("faro.a", "u-2")
        );
    }

    #[test]
    fn the_runner_config_points_at_the_server_and_the_secret_file() {
        assert_eq!(
            runner_config("http://10.96.0.12:4000/", None),
            "# Written by forgejo-runner-controller: the pool's shared Actions cache.\n\
             cache:\n  enabled: true\n  external_server: \"http://10.96.0.12:4000/\"\n  \
             secret_url: \"file:/var/run/forgejo-runner-cache/secret\"\n"
        );
        assert!(
            runner_config("http://c:4000/", Some(DIND_BRIDGE_IP))
                .ends_with("  host: \"172.17.0.1\"\n")
        );
        assert_eq!(
            server_config(),
            "# Written by forgejo-runner-controller: the pool's cache server.\n\
             cache:\n  enabled: true\n  dir: \"/var/lib/forgejo-runner-cache\"\n  port: 4000\n  \
             secret_url: \"file:/var/run/forgejo-runner-cache/secret\"\n"
        );
    }

    #[test]
    fn quoting_keeps_yaml_scalars_intact() {
        assert_eq!(quoted(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quoted("a\nb"), r#""a\u000ab""#);
    }

    #[test]
    fn the_managed_url_uses_the_cluster_ip() {
        assert_eq!(managed_server_url("10.96.0.12"), "http://10.96.0.12:4000/");
        assert_eq!(managed_server_url("fd00::12"), "http://[fd00::12]:4000/");
    }
}
