//! Leader election on a `coordination.k8s.io` Lease: only the holder schedules. Replicas
//! that do not hold it keep their caches warm and take over when the Lease expires.

use anyhow::Context as _;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metrics::LeaseMetrics;

/// Where and as whom to hold the Lease.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity.
    pub identity: String,
    /// Seconds the Lease is valid without renewal.
    pub duration_seconds: u64,
}

/// This replica's leadership: a watch of "am I the leader" and how to let go.
pub struct Leadership {
    receiver: watch::Receiver<bool>,
    task: Option<JoinHandle<Result<LeaseManager, kube_lease_manager::LeaseManagerError>>>,
    forward: Option<JoinHandle<()>>,
    /// Without election, the sender of a value that never changes, kept for the receiver.
    _fixed: Option<watch::Sender<bool>>,
}

impl Leadership {
    /// A receiver of the current leadership.
    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.receiver.clone()
    }

    /// Releases the Lease (if held) so another replica takes over at once.
    pub async fn release(mut self) {
        if let Some(forward) = self.forward.take() {
            forward.abort();
        }
        drop(self.receiver);
        if let Some(task) = self.task.take() {
            // Dropping every receiver makes the manager release the Lease and return.
            match tokio::time::timeout(std::time::Duration::from_secs(5), task).await {
                Ok(Ok(Ok(_))) => tracing::info!("leader lease released"),
                Ok(Ok(Err(error))) => tracing::warn!(%error, "releasing the leader lease failed"),
                Ok(Err(error)) => tracing::warn!(%error, "leader election task failed"),
                Err(_) => tracing::warn!("releasing the leader lease timed out"),
            }
        }
    }
}

/// Starts competing for the Lease; resolves once the first state is known.
pub async fn elect(
    client: kube::Client,
    config: LeaseConfig,
    metrics: LeaseMetrics,
) -> anyhow::Result<Leadership> {
    let duration = config.duration_seconds.max(2);
    // Renew a third of the duration before expiry.
    let grace = (duration / 3).max(1);
    let manager = LeaseManagerBuilder::new(client, &config.name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_duration(duration)
        .with_grace(grace)
        .build()
        .await
        .with_context(|| {
            format!(
                "setting up leader election on Lease {}/{} (pass --leader-election=false to run a single replica without it)",
                config.namespace, config.name
            )
        })?;
    let (mut manager_rx, task) = manager.watch().await;
    let (tx, receiver) = watch::channel(*manager_rx.borrow_and_update());
    let identity = config.identity.clone();
    // Forward the manager's state to our own channel, recording metrics on the way; losing
    // the lease reaches the controller through the same channel, at once.
    let forward = tokio::spawn(async move {
        let mut last = *manager_rx.borrow();
        record(&metrics, last, &identity, true);
        while manager_rx.changed().await.is_ok() {
            let leading = *manager_rx.borrow_and_update();
            if leading != last {
                record(&metrics, leading, &identity, false);
                last = leading;
            }
            if tx.send(leading).is_err() {
                break;
            }
        }
        // The manager stopped: never act as leader after that.
        let _ = tx.send(false);
        metrics.is_leader.set(0);
    });
    Ok(Leadership {
        receiver,
        task: Some(task),
        forward: Some(forward),
        _fixed: None,
    })
}

/// Leadership without election: this replica always schedules.
pub fn always_leader(metrics: &LeaseMetrics) -> Leadership {
    metrics.is_leader.set(1);
    let (fixed, receiver) = watch::channel(true);
    Leadership {
        receiver,
        task: None,
        forward: None,
        _fixed: Some(fixed),
    }
}

fn record(metrics: &LeaseMetrics, leading: bool, identity: &str, initial: bool) {
    metrics.is_leader.set(i64::from(leading));
    if !initial {
        metrics.transitions.inc();
    }
    if leading {
        tracing::info!(identity, "this replica is the leader: scheduling");
    } else if !initial {
        tracing::warn!(
            identity,
            "this replica lost the leader lease: scheduling stopped"
        );
    } else {
        tracing::info!(identity, "another replica is the leader: standing by");
    }
}
