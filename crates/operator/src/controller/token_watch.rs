//! Reconciles pools when their token Secret changes, watching each named Secret on its own
//! (a field selector on its name), so the operator never watches Secrets it does not use.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt as _;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use api::RunnerDeployment;

/// How often the set of referenced Secrets is compared with the watches running.
const RESYNC: Duration = Duration::from_secs(1);

/// The pools to reconcile because their token Secret appeared, changed or went away.
pub fn token_secret_changes(
    client: kube::Client,
    pools: Store<RunnerDeployment>,
) -> impl futures::Stream<Item = ObjectRef<RunnerDeployment>> + Send + 'static {
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(keep_watches(client, pools, sender));
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|pool| (pool, receiver))
    })
}

/// One watch per (namespace, name) that some pool references; stops when nobody listens.
async fn keep_watches(
    client: kube::Client,
    pools: Store<RunnerDeployment>,
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
            }
            keep
        });
        for key in wanted {
            if let std::collections::hash_map::Entry::Vacant(slot) = watches.entry(key) {
                let task = tokio::spawn(watch_one(
                    client.clone(),
                    slot.key().clone(),
                    pools.clone(),
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
    (namespace, name): (String, String),
    pools: Store<RunnerDeployment>,
    sender: mpsc::UnboundedSender<ObjectRef<RunnerDeployment>>,
) {
    let api: Api<PartialObjectMeta<Secret>> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut changes = watcher(api, config)
        .default_backoff()
        .touched_objects()
        .boxed();
    while let Some(change) = changes.next().await {
        if let Err(error) = change {
            tracing::debug!(%error, secret = %name, "token Secret watch failed; retrying");
            continue;
        }
        for pool in pools_using_secret(&pools, Some(&namespace), &name) {
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
