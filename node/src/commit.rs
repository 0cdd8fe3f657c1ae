//! How a node makes a transaction durable. A [`Committer`] takes a fenced [`CommitBatch`] and
//! answers once it is durable and readable on this node: [`LocalCommitter`] writes the node's
//! own RocksDB (a single node; the fence is checked against the placement stored there), the
//! cluster's committer appends it to the Raft log (applied on every node; the fence is
//! checked against the replicated registry).

use airssys_storage::{CommitBatch, Storage, StorageError};
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

    /// True when every node applies these commits: a durable message's outbox entry then
    /// disappears everywhere with its receiver's commit, and no acknowledgement is sent.
    fn replicated(&self) -> bool;

    /// The incarnation of component `name` as the registry applied here says (`None`: not
    /// installed, or this committer keeps no registry). A handler numbers its durable
    /// messages to `name` for that incarnation, and a replicated log refuses the commit if
    /// it has ended meanwhile.
    fn incarnation_of(&self, name: &str) -> Option<u64>;
}

/// Commits to the node's own storage.
pub struct LocalCommitter {
    pub storage: Storage,
}

fn local_error(e: StorageError) -> CommitError {
    match e {
        StorageError::StaleGeneration { .. } | StorageError::WrongNode { .. } => {
            CommitError::Fenced(e.to_string())
        }
        other => CommitError::Failed(format!("commit failed: {other}")),
    }
}

impl Committer for LocalCommitter {
    fn commit_handler(&self, batch: CommitBatch) -> CommitFuture {
        self.commit(batch)
    }

    fn commit(&self, batch: CommitBatch) -> CommitFuture {
        let done = self.storage.commit_async(batch);
        Box::pin(async move { done.await.map_err(local_error) })
    }

    fn replicated(&self) -> bool {
        false
    }

    /// A single node keeps no registry of incarnations: its storage ignores the peers.
    fn incarnation_of(&self, _name: &str) -> Option<u64> {
        None
    }
}
