//! RocksDB storage for one airssys node.
//!
//! Every component (named `[a-z0-9][a-z0-9-]{0,62}`) owns one column family holding its private
//! key-value data; one system column family (`sys`) holds the node crate's opaque records
//! (registry, binaries, outbox, de-duplication marks) plus this crate's per-component metadata
//! (storage usage, placement generation) under a reserved key prefix.
//!
//! * [`Storage`] opens the database (all column families in one call), creates and drops
//!   components, and serves reads.
//! * [`Txn`] is a handler's transaction overlay: reads see its own writes, writes are checked
//!   against [`TxnLimits`] (key/value caps, quota), and [`Txn::into_writes`] hands the result over.
//!   [`InFlightWrites`] holds the writes of a component's transactions still committing, so a
//!   pipelined actor's next transaction ([`Storage::begin_over`]) reads through them.
//! * [`CommitBatch`] is one atomic commit (component writes, sys writes, an optional placement
//!   [`Fence`]). [`Storage::commit`] writes one synchronously; [`Storage::commit_async`] hands it
//!   to a committer thread that merges every waiting batch into one synced RocksDB write.
//!
//! * [`StateImage`] is a consistent copy of every component and chosen sys records, for Raft
//!   snapshots ([`Storage::export_image`], [`Storage::import_image`]).
//! * [`Storage::export_each`] walks a whole database one [`Record`] at a time from one
//!   snapshot, and [`BulkLoad`] fills a fresh database from such a walk (backups).
//!
//! The crate knows nothing of Raft, WASM or networking.

mod commit;
mod error;
mod image;
mod in_flight;
mod meta;
mod names;
mod options;
mod store;
mod stream;
mod txn;

pub use commit::{
    check_fence, CommitBatch, ComponentWrites, Fence, Placement, MAX_GROUP_BATCHES, MAX_GROUP_BYTES,
};
pub use error::{StorageError, WriteError};
pub use image::{Pairs, StateImage};
pub use in_flight::InFlightWrites;
pub use names::{is_valid_name, name_problem, validate_name};
pub use options::StorageOptions;
pub use store::{CommitStats, Storage, BULK_CREATE_MIN};
pub use stream::{BulkLoad, Record};
pub use txn::{Txn, TxnLimits};
