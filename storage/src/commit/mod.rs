//! Atomic commits: the plain data of one commit ([`batch`]), the decisions over it that read
//! nothing ([`fence`]: may it apply; [`usage`]: how it changes a component's usage), applying a
//! group of batches as one RocksDB `WriteBatch` ([`apply`]), and the committer thread behind
//! [`Storage::commit_async`](crate::Storage::commit_async) ([`committer`]).
//!
//! Group commit: the committer thread blocks for one batch, then takes every batch already
//! waiting (up to [`MAX_GROUP_BATCHES`] / [`MAX_GROUP_BYTES`]), checks each one's fence, merges
//! the valid ones into ONE `WriteBatch` and does ONE (synced) write, then answers each caller.
//! While that write's fsync runs, the next group queues up, so many commits share one sync.

mod apply;
mod batch;
mod committer;
mod fence;
mod usage;

pub(crate) use apply::apply_group;
pub use batch::{CommitBatch, ComponentWrites, Fence, Placement};
pub(crate) use committer::{spawn_committer, Job};
pub use committer::{MAX_GROUP_BATCHES, MAX_GROUP_BYTES};
pub use fence::check_fence;
