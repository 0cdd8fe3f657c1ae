//! How a node makes a transaction durable. A [`Committer`] takes a fenced [`CommitBatch`] and
//! answers once it is durable and readable on this node. The node's one committer is the
//! cluster's ([`crate::cluster::commit::RaftCommitter`]): it appends the batch to the Raft
//! log, every node applies it, and the fence is checked against the replicated registry.
//! Tests wrap it to refuse or delay commits; there is no second, local product.

use airssys_storage::CommitBatch;
use std::future::Future;
use std::pin::Pin;

/// A commit in progress.
pub type CommitFuture = Pin<Box<dyn Future<Output = Result<(), CommitError>> + Send>>;

/// Why a commit did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    /// The component moved (or was removed) since the transaction began: nothing was applied
    /// and its actor must stop, its new owner runs it.
    #[error("fenced: {0}")]
    Fenced(String),
    /// Nothing was applied (storage or cluster failure); the transaction may be run again.
    #[error("{0}")]
    Failed(String),
}

/// Where commits go.
pub trait Committer: Send + Sync + 'static {
    /// A handler's transaction. The component's commits are made one after another, and each
    /// is applied exactly once, even when the path to the log failed mid-way and it was sent
    /// again.
    fn commit_handler(&self, batch: CommitBatch) -> CommitFuture;

    /// Any other fenced commit (an external durable send): applied at most once; an error
    /// leaves its outcome to the caller to find out.
    fn commit(&self, batch: CommitBatch) -> CommitFuture;

    /// The incarnation of component `name` as the registry applied here says (`None`: not
    /// installed, or this committer keeps no registry). A handler numbers its durable
    /// messages to `name` for that incarnation, and a replicated log refuses the commit if
    /// it has ended meanwhile.
    fn incarnation_of(&self, name: &str) -> Option<u64>;

    /// Whether this node may now answer from what it holds without a commit (a handler
    /// that only read): the cluster's owner lease ([`airssys_cluster::node::lease`]), so
    /// that an old owner cut off from the cluster stops answering before a new owner
    /// starts. A committer of one process's own (a test double) always may.
    fn reads_confirmed(&self) -> bool {
        true
    }

    /// Waits up to `limit` until [`Committer::reads_confirmed`] holds; false if it does
    /// not by then.
    fn confirm_reads(&self, _limit: std::time::Duration) -> ConfirmFuture {
        Box::pin(std::future::ready(true))
    }
}

/// A wait for the owner lease.
pub type ConfirmFuture = Pin<Box<dyn Future<Output = bool> + Send>>;
