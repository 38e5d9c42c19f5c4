//! The one gated writer. Every write of a reconcile (runner Jobs, runner Secrets and cache
//! objects in the cluster, the pool's status and events, runner registrations in Forgejo)
//! goes through [`Writer::write`], which asks the leadership gate right before the request is
//! sent, after it got a request slot: a replica that loses the Lease mid-reconcile sends no
//! further write, however long the earlier ones took. Reads go through [`Writer::read`],
//! which only bounds how many requests are in flight.
//!
//! Not through it: the finalizer patches that kube's `finalizer` helper makes (a reconcile
//! starts only while this replica leads) and the Lease itself (`leader.rs`).

use std::future::Future;

use tokio::sync::{Semaphore, watch};

/// A write that was not sent: this replica does not hold the Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not written: this replica does not hold the Lease")]
pub struct NotLeader;

/// The gate and the request bound every request of a reconcile passes.
pub struct Writer {
    /// Whether this replica leads, as the Lease task says.
    leader: watch::Receiver<bool>,
    /// Bounds the requests in flight (see [`super::MAX_CONCURRENT_REQUESTS`]).
    requests: Semaphore,
}

impl Writer {
    /// A writer that writes while `leader` says true, with at most `max_requests` in flight.
    pub fn new(leader: watch::Receiver<bool>, max_requests: usize) -> Self {
        Self {
            leader,
            requests: Semaphore::new(max_requests),
        }
    }

    /// Whether this replica may write now.
    pub fn may_write(&self) -> bool {
        *self.leader.borrow()
    }

    /// Sends the write `request` if this replica leads when its turn comes.
    pub async fn write<T>(&self, request: impl Future<Output = T>) -> Result<T, NotLeader> {
        // The semaphore is never closed, so a permit always comes.
        let _permit = self.requests.acquire().await.ok();
        if !self.may_write() {
            return Err(NotLeader);
        }
        Ok(request.await)
    }

    /// Sends the read `request` within the bound on requests in flight.
    pub async fn read<T>(&self, request: impl Future<Output = T>) -> T {
        let _permit = self.requests.acquire().await.ok();
        request.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_after_the_lease_is_lost_is_not_sent() {
        let (leader, receiver) = watch::channel(true);
        let writer = Writer::new(receiver, 2);
        assert_eq!(writer.write(async { 1 }).await, Ok(1));
        leader.send_replace(false);
        let mut sent = false;
        let result = writer.write(async { sent = true }).await;
        assert_eq!(result, Err(NotLeader));
        assert!(!sent, "the request future was polled");
        assert_eq!(writer.read(async { 2 }).await, 2, "reads go on");
    }

    #[tokio::test]
    async fn a_write_waiting_for_a_slot_asks_the_gate_when_it_gets_one() {
        let (leader, receiver) = watch::channel(true);
        let writer = std::sync::Arc::new(Writer::new(receiver, 1));
        let held = writer.requests.acquire().await.ok();
        let waiting = tokio::spawn({
            let writer = writer.clone();
            async move { writer.write(async {}).await }
        });
        tokio::task::yield_now().await;
        leader.send_replace(false);
        drop(held);
        assert_eq!(waiting.await.ok(), Some(Err(NotLeader)));
    }
}
