//! Group commit across actors: the handler transactions waiting on one node go to the
//! leader together, as one Raft entry ([`crate::Command::Commits`]), while the previous
//! group is still in flight. One entry, one QUIC call and one apply per group instead of
//! per transaction: with many busy actors the cost of the log is shared, and a lone actor
//! still commits at once (a group of one leaves as soon as a slot is free).
//!
//! This module holds the decision (how much goes in the next group) as a plain function;
//! [`crate::ClusterNode`] runs the queue.

use crate::raft::types::Outcome;
use airssys_storage::CommitBatch;
use tokio::sync::oneshot;

/// Groups on their way to the leader at once from one node. Two: one travelling while the
/// next is gathered and sent behind it, so a node never waits a whole round trip idle.
pub const GROUPS_IN_FLIGHT: usize = 2;

/// How big one group may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupLimits {
    pub max_commits: usize,
    /// Approximate encoded size; a single larger transaction still goes, alone.
    pub max_bytes: usize,
}

/// Well under the frame cap, so that openraft's batches of entries split cleanly.
pub const LIMITS: GroupLimits = GroupLimits {
    max_commits: 512,
    max_bytes: 4 << 20,
};

/// How many of the waiting transactions (their sizes, oldest first) form the next group:
/// the oldest always, then each next one while both limits hold. Order is kept: a group is
/// a prefix of the queue.
pub fn group_len(sizes: &[usize], limits: GroupLimits) -> usize {
    let mut bytes = 0usize;
    for (i, &size) in sizes.iter().enumerate() {
        if i > 0 && (i >= limits.max_commits || bytes.saturating_add(size) > limits.max_bytes) {
            return i;
        }
        bytes = bytes.saturating_add(size);
    }
    sizes.len()
}

/// One transaction waiting in the queue, and where its outcome goes (an error string when
/// the outcome is unknown: the group's way to the leader failed).
pub(crate) struct Queued {
    pub batch: CommitBatch,
    pub answer: oneshot::Sender<Result<Outcome, crate::peer::PeerError>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: GroupLimits = GroupLimits {
        max_commits: 3,
        max_bytes: 100,
    };

    #[test]
    fn nothing_waiting_makes_no_group() {
        assert_eq!(group_len(&[], L), 0);
    }

    #[test]
    fn everything_waiting_goes_when_it_fits() {
        assert_eq!(group_len(&[10, 20], L), 2);
    }

    #[test]
    fn the_count_limit_cuts_the_group() {
        assert_eq!(group_len(&[1, 1, 1, 1, 1], L), 3);
    }

    #[test]
    fn the_byte_limit_cuts_the_group_before_the_one_that_overflows() {
        assert_eq!(group_len(&[60, 30, 20], L), 2);
        assert_eq!(
            group_len(&[60, 40, 1], L),
            2,
            "exactly the limit still fits"
        );
    }

    #[test]
    fn an_oversized_transaction_goes_alone_and_first() {
        assert_eq!(group_len(&[500, 1], L), 1);
        assert_eq!(group_len(&[1, 500], L), 1);
    }
}
