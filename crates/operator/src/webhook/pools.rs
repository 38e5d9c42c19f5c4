//! What the receiver looks up: the pools the controllers watch (their caches, not the
//! apiserver, so a flood of deliveries costs the cluster nothing) and the hooks' secrets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};

use api::{RunnerDeployment, SharedSecretRef};

/// How long a hook's secret is read from memory before the apiserver is asked again: a
/// changed secret takes effect within this long.
const SECRET_TTL: Duration = Duration::from_secs(10);

/// The pool caches of every controller of the process.
#[derive(Clone, Default)]
pub struct PoolDirectory {
    stores: Arc<Mutex<Vec<Store<RunnerDeployment>>>>,
}

impl PoolDirectory {
    /// Adds the pool cache of one controller.
    pub fn add(&self, store: Store<RunnerDeployment>) {
        self.stores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(store);
    }

    /// The pool `namespace`/`name`, if a controller watches it.
    pub fn find(&self, namespace: &str, name: &str) -> Option<Arc<RunnerDeployment>> {
        let key = ObjectRef::new(name).within(namespace);
        self.stores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find_map(|store| store.get(&key))
    }
}

/// Why a hook's secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The Secret or its key does not exist.
    #[error("Secret {name} has no key {key} in namespace {namespace}")]
    Missing {
        /// The namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// The key.
        key: String,
    },
    /// The apiserver did not answer.
    #[error("reading Secret {name} in namespace {namespace}: {source}")]
    Kube {
        /// The namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// What the client said.
        #[source]
        source: kube::Error,
    },
}

/// A secret's value with when it was read; `None`: the key was missing.
type CachedSecret = (Instant, Option<Arc<Vec<u8>>>);
/// A secret key: (namespace, Secret name, key).
type SecretKey = (String, String, String);

/// The hooks' secrets, read through the apiserver and kept for [`SECRET_TTL`].
#[derive(Clone)]
pub struct HookSecrets {
    client: kube::Client,
    cache: Arc<Mutex<HashMap<SecretKey, CachedSecret>>>,
}

impl HookSecrets {
    /// Reads secrets through `client`.
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            cache: Arc::default(),
        }
    }

    /// The value of `secret_ref` in `namespace`.
    pub async fn get(
        &self,
        namespace: &str,
        secret_ref: &SharedSecretRef,
    ) -> Result<Arc<Vec<u8>>, SecretError> {
        let key = (
            namespace.to_owned(),
            secret_ref.name.clone(),
            secret_ref.key.clone(),
        );
        let missing = || SecretError::Missing {
            namespace: namespace.to_owned(),
            name: secret_ref.name.clone(),
            key: secret_ref.key.clone(),
        };
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .filter(|(at, _)| at.elapsed() < SECRET_TTL)
            .map(|(_, value)| value.clone());
        if let Some(value) = cached {
            return value.ok_or_else(missing);
        }
        let secret = Api::<Secret>::namespaced(self.client.clone(), namespace)
            .get_opt(&secret_ref.name)
            .await
            .map_err(|source| SecretError::Kube {
                namespace: namespace.to_owned(),
                name: secret_ref.name.clone(),
                source,
            })?;
        let value = secret
            .and_then(|s| s.data?.remove(&secret_ref.key))
            .map(|bytes| Arc::new(bytes.0));
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|_, (at, _)| at.elapsed() < SECRET_TTL);
        cache.insert(key, (Instant::now(), value.clone()));
        value.ok_or_else(missing)
    }
}
