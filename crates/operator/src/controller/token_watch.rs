//! Reconciles pools when their token Secret changes, watching each named Secret on its own
//! (a field selector on its name), so the operator never watches Secrets it does not use.
//! The same watch keeps each Secret's data, so a reconcile reads its token without a GET.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt as _;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use api::RunnerDeployment;

/// How often the set of referenced Secrets is compared with the watches running.
const RESYNC: Duration = Duration::from_secs(1);

/// A token Secret's data as its watch last saw it; `None` when it does not exist.
type SecretData = Option<BTreeMap<String, ByteString>>;

/// The token Secrets the pools reference, by (namespace, name), once their watch listed them.
#[derive(Clone, Default)]
pub struct TokenSecrets(Arc<Mutex<HashMap<(String, String), SecretData>>>);

impl TokenSecrets {
    /// The Secret's data: `Some(None)` when the watch saw no such Secret, `None` before the
    /// watch listed it (the caller then reads the Secret itself).
    pub fn get(&self, namespace: &str, name: &str) -> Option<SecretData> {
        let key = (namespace.to_owned(), name.to_owned());
        self.lock().get(&key).cloned()
    }

    fn set(&self, key: &(String, String), data: SecretData) {
        self.lock().insert(key.clone(), data);
    }

    fn forget(&self, key: &(String, String)) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), SecretData>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The pools to reconcile because their token Secret appeared, changed or went away; the
/// watches fill `tokens`.
pub fn token_secret_changes(
    client: kube::Client,
    pools: Store<RunnerDeployment>,
    tokens: TokenSecrets,
) -> impl futures::Stream<Item = ObjectRef<RunnerDeployment>> + Send + 'static {
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(keep_watches(client, pools, tokens, sender));
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|pool| (pool, receiver))
    })
}

/// One watch per (namespace, name) that some pool references; stops when nobody listens.
async fn keep_watches(
    client: kube::Client,
    pools: Store<RunnerDeployment>,
    tokens: TokenSecrets,
    sender: mpsc::UnboundedSender<ObjectRef<RunnerDeployment>>,
) {
    let mut watches: HashMap<(String, String), JoinHandle<()>> = HashMap::new();
    while !sender.is_closed() {
        let wanted: HashSet<(String, String)> = pools
            .state()
            .iter()
            .filter_map(|rd| Some((rd.namespace()?, rd.spec.token_secret_ref.name.clone())))
            .collect();
        watches.retain(|key, task| {
            let keep = wanted.contains(key);
            if !keep {
                task.abort();
                tokens.forget(key);
            }
            keep
        });
        for key in wanted {
            if let std::collections::hash_map::Entry::Vacant(slot) = watches.entry(key) {
                let task = tokio::spawn(watch_one(
                    client.clone(),
                    slot.key().clone(),
                    pools.clone(),
                    tokens.clone(),
                    sender.clone(),
                ));
                slot.insert(task);
            }
        }
        tokio::time::sleep(RESYNC).await;
    }
    for task in watches.into_values() {
        task.abort();
    }
}

async fn watch_one(
    client: kube::Client,
    key: (String, String),
    pools: Store<RunnerDeployment>,
    tokens: TokenSecrets,
    sender: mpsc::UnboundedSender<ObjectRef<RunnerDeployment>>,
) {
    let (namespace, name) = &key;
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api, config).default_backoff().boxed();
    // What a (re)list found so far: the Secret, or nothing when the list ends empty.
    let mut listed: SecretData = None;
    while let Some(event) = events.next().await {
        let data = match event {
            Err(error) => {
                tracing::debug!(%error, secret = %name, "token Secret watch failed; retrying");
                continue;
            }
            Ok(watcher::Event::Init) => {
                listed = None;
                continue;
            }
            Ok(watcher::Event::InitApply(secret)) => {
                listed = Some(secret.data.unwrap_or_default());
                continue;
            }
            Ok(watcher::Event::InitDone) => listed.take(),
            Ok(watcher::Event::Apply(secret)) => Some(secret.data.unwrap_or_default()),
            Ok(watcher::Event::Delete(_)) => None,
        };
        let changed = tokens.get(namespace, name).as_ref() != Some(&data);
        tokens.set(&key, data);
        if !changed {
            continue;
        }
        for pool in pools_using_secret(&pools, Some(namespace), name) {
            if sender.send(pool).is_err() {
                return;
            }
        }
    }
}

/// The pools whose `tokenSecretRef` names this Secret.
pub fn pools_using_secret(
    pools: &Store<RunnerDeployment>,
    namespace: Option<&str>,
    name: &str,
) -> Vec<ObjectRef<RunnerDeployment>> {
    pools
        .state()
        .iter()
        .filter(|rd| {
            rd.namespace().as_deref() == namespace && rd.spec.token_secret_ref.name == name
        })
        .map(|rd| ObjectRef::from_obj(rd.as_ref()))
        .collect()
}
