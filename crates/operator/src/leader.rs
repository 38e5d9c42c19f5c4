//! Leader election on a `coordination.k8s.io` Lease: only the holder schedules. Replicas
//! that do not hold it keep their caches warm and take over when the Lease expires.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
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
    let manager = LeaseManagerBuilder::new(client.clone(), &config.name)
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
    let (manager_rx, task) = manager.watch().await;
    let leases: Api<Lease> = Api::namespaced(client, &config.namespace);
    let guard = LeaseGuard {
        leases,
        name: config.name.clone(),
        identity: config.identity.clone(),
        duration: Duration::from_secs(duration),
    };
    let (tx, receiver) = watch::channel(false);
    // Forward the manager's state to our own channel, recording metrics on the way, but only
    // while the Lease is surely still ours: the manager keeps saying "leader" while it cannot
    // reach the apiserver, long after another replica may have taken over.
    let forward = tokio::spawn(guard.run(manager_rx, tx, metrics));
    Ok(Leadership {
        receiver,
        task: Some(task),
        forward: Some(forward),
        _fixed: None,
    })
}

/// Checks, while the manager says we lead, that the Lease is still being renewed.
struct LeaseGuard {
    leases: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl LeaseGuard {
    async fn run(
        self,
        mut manager_rx: watch::Receiver<bool>,
        tx: watch::Sender<bool>,
        metrics: LeaseMetrics,
    ) {
        let period = (self.duration / 10).max(Duration::from_millis(200));
        let mut validity = LeaseValidity::new(self.duration);
        let mut manager_leads = *manager_rx.borrow_and_update();
        if manager_leads {
            validity.acquired(Instant::now());
        }
        let mut last = manager_leads && validity.holds(Instant::now());
        record(&metrics, last, &self.identity, true);
        let _ = tx.send(last);
        loop {
            // While leading, wake exactly when the Lease may run out, not at the next tick.
            let runs_out = validity.until.filter(|_| last);
            tokio::select! {
                changed = manager_rx.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let leads = *manager_rx.borrow_and_update();
                    if leads && !manager_leads {
                        validity.acquired(Instant::now());
                    }
                    manager_leads = leads;
                }
                () = sleep_until_or_never(runs_out) => {}
                () = tokio::time::sleep(period) => {
                    if manager_leads {
                        self.read_lease(&mut validity, period).await;
                    }
                }
            }
            let leading = manager_leads && validity.holds(Instant::now());
            if leading != last {
                record(&metrics, leading, &self.identity, false);
                last = leading;
                if tx.send(leading).is_err() {
                    break;
                }
            }
        }
        // The manager stopped: never act as leader after that.
        let _ = tx.send(false);
        metrics.is_leader.set(0);
    }
}

impl LeaseGuard {
    /// Reads the Lease, waiting no longer than `period` nor past the moment it may run out.
    async fn read_lease(&self, validity: &mut LeaseValidity, period: Duration) {
        let started = Instant::now();
        let left = validity
            .until
            .map_or(period, |until| until.saturating_duration_since(started))
            .clamp(Duration::from_millis(50), period);
        match tokio::time::timeout(left, self.leases.get_opt(&self.name)).await {
            Ok(Ok(Some(lease))) => {
                let spec = lease.spec.unwrap_or_default();
                let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
                let renewed = spec.renew_time.map(|t| t.0.to_string());
                validity.observed(started, ours, renewed);
            }
            Ok(Ok(None)) => validity.observed(started, false, None),
            // Unanswered: the validity runs out by itself.
            Ok(Err(error)) => tracing::debug!(%error, "reading the leader Lease failed"),
            Err(_) => tracing::debug!("reading the leader Lease timed out"),
        }
    }
}

async fn sleep_until_or_never(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// Until when, on this process's clock, the Lease is surely ours.
///
/// A renewal is seen by reading the Lease: when its `renewTime` differs from the previous
/// read, it was renewed after that previous read started, so the Lease lasts at least until
/// that start plus its duration. Every other replica measures from the renewal itself, so
/// this replica always stops before another may start.
#[derive(Debug)]
struct LeaseValidity {
    duration: Duration,
    until: Option<Instant>,
    last_renewal: Option<String>,
    previous_read: Option<Instant>,
}

impl LeaseValidity {
    fn new(duration: Duration) -> Self {
        Self {
            duration,
            until: None,
            last_renewal: None,
            previous_read: None,
        }
    }

    /// The manager took the Lease a moment ago.
    fn acquired(&mut self, now: Instant) {
        // The write that took it finished before it told us; leave a tenth for that delay.
        self.until = Some(now + self.duration - self.duration / 10);
        self.last_renewal = None;
        self.previous_read = None;
    }

    /// A read that started at `started` found the Lease held by us (`ours`) with `renewal`.
    fn observed(&mut self, started: Instant, ours: bool, renewal: Option<String>) {
        if !ours {
            self.until = None;
            return;
        }
        if let Some(previous) = self.previous_read
            && self.last_renewal.is_some()
            && renewal != self.last_renewal
        {
            let until = previous + self.duration;
            self.until = Some(self.until.map_or(until, |u| u.max(until)));
        }
        self.last_renewal = renewal;
        self.previous_read = Some(started);
    }

    /// Whether the Lease is surely still ours at `now`.
    fn holds(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const DURATION: Duration = Duration::from_secs(15);

    fn at(start: Instant, secs: f64) -> Instant {
        start + Duration::from_secs_f64(secs)
    }

    #[test]
    fn a_leader_that_cannot_read_its_lease_stops_before_the_lease_can_expire() {
        let t0 = Instant::now();
        let mut validity = LeaseValidity::new(DURATION);
        validity.acquired(t0);
        assert!(validity.holds(at(t0, 1.0)));
        // Cut off from the apiserver from the start: no read answers.
        assert!(
            !validity.holds(at(t0, 14.0)),
            "still leading 1 s before the Lease may expire"
        );
    }

    #[test]
    fn renewals_seen_every_read_keep_it_leading_without_a_gap() {
        // Renewed every 10 s (duration minus a third), read every 1.5 s.
        let t0 = Instant::now();
        let mut validity = LeaseValidity::new(DURATION);
        validity.acquired(t0);
        let mut renewal = 0;
        for read in 1..=60 {
            let started = read as f64 * 1.5;
            if started >= f64::from(renewal + 1) * 10.0 {
                renewal += 1;
            }
            validity.observed(at(t0, started), true, Some(format!("renewal {renewal}")));
            assert!(validity.holds(at(t0, started + 1.4)), "gap at {started} s");
        }
    }

    #[test]
    fn renewals_that_stop_end_leadership_within_the_duration_of_the_last_one() {
        let t0 = Instant::now();
        let mut validity = LeaseValidity::new(DURATION);
        validity.acquired(t0);
        validity.observed(at(t0, 1.0), true, Some("r0".into()));
        validity.observed(at(t0, 9.0), true, Some("r0".into()));
        validity.observed(at(t0, 10.5), true, Some("r1".into()));
        // The renewal at 10 s was the last; reads keep answering with it.
        validity.observed(at(t0, 12.0), true, Some("r1".into()));
        validity.observed(at(t0, 20.0), true, Some("r1".into()));
        assert!(!validity.holds(at(t0, 10.0 + 15.0)));
        assert!(validity.holds(at(t0, 20.0)));
    }

    #[test]
    fn another_holder_ends_leadership_at_once() {
        let t0 = Instant::now();
        let mut validity = LeaseValidity::new(DURATION);
        validity.acquired(t0);
        validity.observed(at(t0, 1.0), false, Some("theirs".into()));
        assert!(!validity.holds(at(t0, 1.0)));
    }
}
