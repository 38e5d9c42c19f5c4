//! The writes behind a pool's shared cache: its managed server applied by server-side
//! apply (never forced: an object of the same name that is not the pool's is a conflict,
//! not ours to take), the HMAC Secret made once, and everything removed when the pool no
//! longer wants it.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Resource, ResourceExt as _};
use rand::RngCore as _;
use serde::Serialize;
use serde::de::DeserializeOwned;

use api::{CacheMode, RunnerDeployment};
use scheduler::{CacheNames, MANAGED_SECRET_KEY, Pool, RunnerCache};

use super::writer::NotLeader;
use super::{Context, FIELD_MANAGER};

/// Why the pool's cache could not be set up; each has a condition reason.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// An object with a cache object's name exists and is not this pool's.
    #[error(
        "{kind} {name:?} exists and is not this pool's cache: rename or delete it, or set spec.cache.mode"
    )]
    NameConflict {
        /// Its kind.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// The apiserver refused a write.
    #[error("cannot {action}: {source}")]
    Write {
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// `spec.cache.external.secretRef` names no Secret, or one without the key.
    #[error(
        "Secret {name:?} with key {key:?} (spec.cache.external.secretRef) not found: runners use no shared cache until it exists"
    )]
    ExternalSecretMissing {
        /// The Secret.
        name: String,
        /// Its key.
        key: String,
    },
    /// The Service got no cluster IP (a headless Service of the same name?).
    #[error("Service {0:?} has no cluster IP")]
    NoClusterIp(String),
    /// This replica lost the Lease: the rest is left to the next leader.
    #[error(transparent)]
    NotLeader(#[from] NotLeader),
}

impl CacheError {
    /// The `CacheReady` reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NameConflict { .. } => "NameConflict",
            Self::Write { .. } => "ApplyFailed",
            Self::ExternalSecretMissing { .. } => "SecretNotFound",
            Self::NoClusterIp(_) => "NoClusterIP",
            Self::NotLeader(_) => "NotLeader",
        }
    }
}

/// The writer of one pool's cache objects.
pub struct CacheWriter<'a> {
    ctx: &'a Context,
    pool: &'a Pool,
    names: CacheNames,
}

fn conflict_or<K: Resource<DynamicType = ()>>(
    name: &str,
    action: String,
    error: kube::Error,
) -> CacheError {
    match &error {
        kube::Error::Api(status) if status.code == 409 => CacheError::NameConflict {
            kind: leak_kind::<K>(),
            name: name.to_owned(),
        },
        _ => CacheError::Write {
            action,
            source: error,
        },
    }
}

/// The kind of `K`, for messages.
fn leak_kind<K: Resource<DynamicType = ()>>() -> &'static str {
    match K::kind(&()).as_ref() {
        "Deployment" => "Deployment",
        "Service" => "Service",
        "PersistentVolumeClaim" => "PersistentVolumeClaim",
        "ConfigMap" => "ConfigMap",
        "Secret" => "Secret",
        _ => "object",
    }
}

/// Whether `object` carries this pool's uid label.
fn is_pools<K: Resource>(object: &K, pool: &Pool) -> bool {
    scheduler::labels::pool_uid_of(object.meta().labels.as_ref()) == Some(pool.uid.as_str())
}

impl<'a> CacheWriter<'a> {
    /// A writer for `pool`'s cache objects.
    pub fn new(ctx: &'a Context, pool: &'a Pool) -> Self {
        Self {
            ctx,
            pool,
            names: CacheNames::for_pool(pool),
        }
    }

    /// The names of the objects.
    pub fn names(&self) -> &CacheNames {
        &self.names
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.ctx.client.clone(), &self.pool.namespace)
    }

    async fn apply<K>(&self, object: &K) -> Result<K, CacheError>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + Serialize
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let name = object.name_any();
        let api = self.api::<K>();
        let params = PatchParams::apply(FIELD_MANAGER);
        let patch = Patch::Apply(object);
        self.ctx
            .writer
            .write(api.patch(&name, &params, &patch))
            .await?
            .map_err(|e| conflict_or::<K>(&name, format!("apply {} {name}", K::kind(&())), e))
    }

    /// Makes the managed server: Secret, claim, Service, config, Deployment, in this order,
    /// so that nothing mounts what does not exist yet. Returns what runner pods mount, and
    /// the first error after the config was written (runners can use the cache meanwhile).
    pub async fn apply_managed(
        &self,
        rd: &RunnerDeployment,
    ) -> Result<(RunnerCache, Option<CacheError>), CacheError> {
        let secret_uid = self.ensure_secret().await?;
        let spec = rd.spec.cache.clone().unwrap_or_default();
        let class = spec
            .storage
            .as_ref()
            .and_then(|s| s.storage_class_name.as_deref());
        let pool = self.pool;
        let names = &self.names;
        self.apply(&scheduler::cache_claim(pool, names, &spec.size(), class))
            .await?;
        let service = self.apply(&scheduler::cache_service(pool, names)).await?;
        let ip = service
            .spec
            .and_then(|s| s.cluster_ip)
            .filter(|ip| !ip.is_empty() && ip != "None")
            .ok_or_else(|| CacheError::NoClusterIp(names.server().to_owned()))?;
        let url = scheduler::managed_server_url(&ip);
        self.apply(&scheduler::cache_config_map(pool, names, &url, true))
            .await?;
        let runner_cache = RunnerCache {
            config_map: names.config_map(),
            secret_name: names.server().to_owned(),
            secret_key: MANAGED_SECRET_KEY.to_owned(),
        };
        let late = self
            .apply(&scheduler::cache_deployment(
                pool,
                names,
                secret_uid.as_deref(),
            ))
            .await
            .err();
        Ok((runner_cache, late))
    }

    /// Creates the HMAC Secret if it does not exist; an existing one is kept as it is, so
    /// the secret changes only when someone deletes it. Returns its uid, when known.
    async fn ensure_secret(&self) -> Result<Option<String>, CacheError> {
        let api = self.api::<Secret>();
        let name = self.names.server();
        match self.ctx.writer.read(api.get_opt(name)).await {
            Ok(Some(existing)) if is_pools(&existing, self.pool) => return Ok(existing.uid()),
            Ok(Some(_)) => {
                return Err(CacheError::NameConflict {
                    kind: "Secret",
                    name: name.to_owned(),
                });
            }
            Ok(None) => {}
            Err(source) => {
                return Err(CacheError::Write {
                    action: format!("read Secret {name}"),
                    source,
                });
            }
        }
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let object = scheduler::cache_secret(self.pool, &self.names, &secret);
        let params = PostParams::default();
        match self.ctx.writer.write(api.create(&params, &object)).await? {
            Ok(created) => Ok(created.uid()),
            // Made by another reconcile a moment ago: look again next time.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
            Err(source) => Err(CacheError::Write {
                action: format!("create Secret {name}"),
                source,
            }),
        }
    }

    /// Writes the runner config for the external server at `url`, with the user's Secret
    /// checked first (a pod mounting a missing Secret would never start).
    pub async fn apply_external(
        &self,
        url: &str,
        secret: &api::SharedSecretRef,
    ) -> Result<RunnerCache, CacheError> {
        let missing = || CacheError::ExternalSecretMissing {
            name: secret.name.clone(),
            key: secret.key.clone(),
        };
        let api = self.api::<Secret>();
        let found = self
            .ctx
            .writer
            .read(api.get_opt(&secret.name))
            .await
            .map_err(|source| CacheError::Write {
                action: format!("read Secret {}", secret.name),
                source,
            })?;
        let has_key = found.is_some_and(|s| {
            s.data
                .is_some_and(|d| d.get(&secret.key).is_some_and(|v| !v.0.is_empty()))
        });
        if !has_key {
            return Err(missing());
        }
        self.apply(&scheduler::cache_config_map(
            self.pool,
            &self.names,
            url,
            false,
        ))
        .await?;
        Ok(RunnerCache {
            config_map: self.names.config_map(),
            secret_name: secret.name.clone(),
            secret_key: secret.key.clone(),
        })
    }

    /// Deletes the managed server's objects (and, unless `mode` still uses it, the config),
    /// each only if it is this pool's. Returns how many were deleted.
    pub async fn remove(&self, mode: CacheMode) -> Result<usize, CacheError> {
        let name = self.names.server();
        let mut removed = 0;
        removed += self.remove_one::<Deployment>(name).await?;
        removed += self.remove_one::<Service>(name).await?;
        removed += self.remove_one::<PersistentVolumeClaim>(name).await?;
        removed += self.remove_one::<Secret>(name).await?;
        if mode != CacheMode::External {
            removed += self
                .remove_one::<ConfigMap>(&self.names.config_map())
                .await?;
        }
        Ok(removed)
    }

    async fn remove_one<K>(&self, name: &str) -> Result<usize, CacheError>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let api = self.api::<K>();
        let kind = K::kind(&());
        let existing = self
            .ctx
            .writer
            .read(api.get_opt(name))
            .await
            .map_err(|source| CacheError::Write {
                action: format!("read {kind} {name}"),
                source,
            })?;
        // Ours and not already going (a claim stays while its pod stops).
        let ours = |o: &K| is_pools(o, self.pool) && o.meta().deletion_timestamp.is_none();
        let Some(existing) = existing.filter(ours) else {
            return Ok(0);
        };
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: existing.uid(),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match self.ctx.writer.write(api.delete(name, &params)).await? {
            Ok(_) => Ok(1),
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(0),
            Err(source) => Err(CacheError::Write {
                action: format!("delete {kind} {name}"),
                source,
            }),
        }
    }
}
