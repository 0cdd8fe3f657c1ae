//! The owner lease: a node answers from what it holds without a commit (a handler that
//! only read) only while a leader, confirmed by a quorum, answered it recently and it has
//! applied everything that leader had committed then.
//!
//! Why it is enough. The node asks at `asked` (its own clock) for the leader's read index
//! and holds the lease until `asked + failure_timeout / 2` once it has applied up to that
//! index. A move of its components committed before the leader answered is in that index,
//! so the node has applied it (and stopped) before it serves. A later move needs the
//! leader to have heard nothing from the node for `failure_timeout` after the node's
//! question reached it, so it is committed after `asked + failure_timeout`: by then the
//! lease ran out, and a partitioned old owner has stopped answering before a new owner can
//! start. A deposed leader cannot answer (its read index needs a quorum); a new leader
//! judges no member before it has led for half the failure timeout. Only the node's own
//! monotonic clock is read, never another node's. A move the node lives through (an
//! operator's, or a rebalance) stops it as it applies the move.
//!
//! Renewed every quarter of the failure timeout, so a healthy node never lets it lapse.

use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long a confirmation asked for at `asked` lets this node serve reads.
pub fn lease_end(asked: Instant, failure_timeout: Duration) -> Instant {
    asked + failure_timeout / 2
}

/// How often the lease is renewed.
pub fn renew_every(failure_timeout: Duration) -> Duration {
    (failure_timeout / 4).max(Duration::from_millis(10))
}

/// Until when this node may answer reads (`None`: not yet).
pub struct Lease {
    until: watch::Sender<Option<Instant>>,
}

impl Default for Lease {
    fn default() -> Self {
        Lease {
            until: watch::channel(None).0,
        }
    }
}

impl Lease {
    /// Whether the lease holds now.
    pub fn holds(&self) -> bool {
        self.holds_at(Instant::now())
    }

    fn holds_at(&self, now: Instant) -> bool {
        self.until.borrow().is_some_and(|until| now < until)
    }

    /// Moves the end of the lease to `until`, never back.
    pub fn extend(&self, until: Instant) {
        self.until.send_if_modified(|current| match current {
            Some(c) if *c >= until => false,
            _ => {
                *current = Some(until);
                true
            }
        });
    }

    /// Waits up to `limit` for the lease to hold.
    pub async fn wait(&self, limit: Duration) -> bool {
        let mut changes = self.until.subscribe();
        let wait = async {
            loop {
                if self.holds() {
                    return true;
                }
                if changes.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(limit, wait).await.unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_ends_well_before_a_failover_could_start() {
        let asked = Instant::now();
        let timeout = Duration::from_millis(600);
        // A failover of this node's components needs the leader to have heard nothing for
        // the whole timeout after the question: the lease is over by then, with margin.
        assert!(lease_end(asked, timeout) + timeout / 4 <= asked + timeout);
        assert!(
            renew_every(timeout) * 2 <= timeout / 2,
            "renewed twice per lease"
        );
    }

    #[test]
    fn a_lease_holds_until_its_end_and_only_moves_forward() {
        let lease = Lease::default();
        let now = Instant::now();
        assert!(
            !lease.holds_at(now),
            "no lease before the first confirmation"
        );
        lease.extend(now + Duration::from_millis(100));
        assert!(lease.holds_at(now + Duration::from_millis(99)));
        assert!(!lease.holds_at(now + Duration::from_millis(100)));
        lease.extend(now + Duration::from_millis(50));
        assert!(
            lease.holds_at(now + Duration::from_millis(99)),
            "an older confirmation does not shorten it"
        );
    }

    #[tokio::test]
    async fn waiting_ends_when_the_lease_is_extended_or_the_limit_passes() {
        let lease = std::sync::Arc::new(Lease::default());
        assert!(!lease.wait(Duration::from_millis(20)).await);
        let later = lease.clone();
        let extend = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            later.extend(Instant::now() + Duration::from_secs(5));
        });
        assert!(lease.wait(Duration::from_secs(5)).await);
        extend.await.unwrap();
    }
}
