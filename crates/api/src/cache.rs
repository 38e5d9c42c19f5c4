//! `spec.cache`: where a pool's one-shot runners keep the `actions/cache` store, so that it
//! outlives the pod that wrote it.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::names::{
    SECRET_KEY_PATTERN, SECRET_KEY_RULE, SECRET_NAME_PATTERN, SECRET_NAME_RULE, is_secret_key,
    is_secret_name,
};
use crate::rules::{URL_MESSAGE, URL_RULE, is_http_url, matches_rule};

/// The Secret key read when `spec.cache.external.secretRef.key` is not given.
pub const DEFAULT_CACHE_SECRET_KEY: &str = "secret";
/// The volume size of a managed cache server unless `spec.cache.storage.size` says otherwise.
pub const DEFAULT_CACHE_SIZE: &str = "10Gi";

const EXTERNAL_RULE: &str = "!has(self.mode) || self.mode != 'External' || has(self.external)";
const EXTERNAL_MESSAGE: &str =
    "mode External needs external.url and external.secretRef: the server and its shared secret";

/// Where the runners of a pool keep their `actions/cache` entries.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(EXTERNAL_RULE).message(EXTERNAL_MESSAGE))]
pub struct CacheSpec {
    /// `Managed`: the operator runs a cache server for this pool (`forgejo-runner
    /// cache-server` on a PersistentVolumeClaim). `External`: the runners use the server at
    /// `external.url`. `Disabled`: each runner keeps its own cache, lost with its pod.
    /// Default: `Managed` when `runnerImage` is the default image, else `Disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<CacheMode>,
    /// The cache server of mode `External`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalCache>,
    /// The volume of mode `Managed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<CacheStorage>,
}

/// How a pool's cache is provided: `Managed` (a cache server per pool, run by the operator
/// on a PersistentVolumeClaim), `External` (the server at `external.url`) or `Disabled`
/// (each runner keeps its own cache, lost with its pod). Default: `Managed` when
/// `runnerImage` is the default image, else `Disabled`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum CacheMode {
    /// A cache server per pool, run and owned by the operator.
    Managed,
    /// A cache server run elsewhere (`external.url`).
    External,
    /// No shared cache.
    Disabled,
}

impl CacheMode {
    /// The mode's name as written in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Managed => "Managed",
            Self::External => "External",
            Self::Disabled => "Disabled",
        }
    }
}

/// A cache server the operator does not run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalCache {
    /// Base URL of a `forgejo-runner cache-server`, e.g. `http://cache.ci.svc:4000/`.
    #[x_kube(validation = Rule::new(URL_RULE).message(URL_MESSAGE))]
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// The Secret (in this namespace) holding the HMAC secret shared with that server.
    pub secret_ref: SharedSecretRef,
}

/// A key of a Secret in the RunnerDeployment's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SharedSecretRef {
    /// Name of the Secret.
    #[x_kube(validation = Rule::new(matches_rule(SECRET_NAME_PATTERN)).message(format!("must be a Secret name, {SECRET_NAME_RULE}").as_str()))]
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret whose value is the shared secret.
    #[serde(default = "default_secret_key")]
    #[x_kube(validation = Rule::new(matches_rule(SECRET_KEY_PATTERN)).message(format!("must be a Secret key: {SECRET_KEY_RULE}").as_str()))]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// The PersistentVolumeClaim of a managed cache server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheStorage {
    /// Requested size, e.g. `20Gi` (default 10Gi). It can grow if the storage class allows
    /// volume expansion; it cannot shrink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Quantity>,
    /// The StorageClass of the claim; the cluster's default class when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
}

fn default_secret_key() -> String {
    DEFAULT_CACHE_SECRET_KEY.to_owned()
}

/// Why `spec.cache` cannot be used. The schema refuses these too.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// `spec.cache.mode` is External without `spec.cache.external`.
    #[error("spec.cache.external: mode External needs external.url and external.secretRef")]
    External,
    /// `spec.cache.external.url` is not an http(s) URL.
    #[error("spec.cache.external.url {0:?} must be an http:// or https:// URL")]
    Url(String),
    /// `spec.cache.external.secretRef.name` is not a Secret name.
    #[error("spec.cache.external.secretRef.name: {0:?} is not a Secret name: {SECRET_NAME_RULE}")]
    SecretName(String),
    /// `spec.cache.external.secretRef.key` is not a Secret key.
    #[error("spec.cache.external.secretRef.key: {0:?} is not a Secret key: {SECRET_KEY_RULE}")]
    SecretKey(String),
}

impl CacheSpec {
    /// The requested volume size.
    pub fn size(&self) -> Quantity {
        self.storage
            .as_ref()
            .and_then(|s| s.size.clone())
            .unwrap_or_else(|| Quantity(DEFAULT_CACHE_SIZE.to_owned()))
    }

    /// Checks what the schema checks, for objects that got past it.
    pub fn validate(&self) -> Result<(), CacheError> {
        let external = match (self.mode, &self.external) {
            (Some(CacheMode::External), None) => return Err(CacheError::External),
            (_, Some(external)) => external,
            (_, None) => return Ok(()),
        };
        if !is_http_url(&external.url) {
            return Err(CacheError::Url(external.url.clone()));
        }
        let secret = &external.secret_ref;
        if !is_secret_name(&secret.name) {
            return Err(CacheError::SecretName(secret.name.clone()));
        }
        if !is_secret_key(&secret.key) {
            return Err(CacheError::SecretKey(secret.key.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn external(url: &str) -> CacheSpec {
        CacheSpec {
            mode: Some(CacheMode::External),
            external: Some(ExternalCache {
                url: url.to_owned(),
                secret_ref: SharedSecretRef {
                    name: "cache-secret".to_owned(),
                    key: DEFAULT_CACHE_SECRET_KEY.to_owned(),
                },
            }),
            storage: None,
        }
    }

    #[test]
    fn external_mode_needs_a_server_and_a_secret() {
        let missing = CacheSpec {
            mode: Some(CacheMode::External),
            ..CacheSpec::default()
        };
        assert_eq!(missing.validate(), Err(CacheError::External));
        assert_eq!(external("http://cache.ci.svc:4000/").validate(), Ok(()));
        assert_eq!(
            external("cache.ci.svc:4000").validate(),
            Err(CacheError::Url("cache.ci.svc:4000".to_owned()))
        );
        let mut bad_secret = external("http://cache:4000");
        if let Some(e) = bad_secret.external.as_mut() {
            e.secret_ref.name = "Not_A_Name".to_owned();
        }
        assert!(matches!(
            bad_secret.validate(),
            Err(CacheError::SecretName(_))
        ));
    }

    #[test]
    fn the_size_defaults_to_ten_gibibytes() {
        assert_eq!(CacheSpec::default().size().0, "10Gi");
    }
}
