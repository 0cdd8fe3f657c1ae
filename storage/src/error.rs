//! Error types: [`StorageError`] for storage operations and [`WriteError`] for a refused
//! [`Txn::set`](crate::Txn::set).

/// A storage operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The component name does not match `[a-z0-9][a-z0-9-]{0,62}`.
    #[error("invalid component name {0:?}: expected [a-z0-9][a-z0-9-]{{0,62}}")]
    InvalidName(String),
    /// No component of that name exists on this node.
    #[error("unknown component {0:?}")]
    UnknownComponent(String),
    /// A commit carried a placement generation that is not the current one; nothing was written.
    #[error(
        "stale generation for component {component:?}: current {current}, commit carried {got}"
    )]
    StaleGeneration {
        /// The fenced component.
        component: String,
        /// The generation currently recorded by [`Storage::set_generation`](crate::Storage::set_generation).
        current: u64,
        /// The generation the commit carried.
        got: u64,
    },
    /// A commit carried the current generation but another node's id; nothing was written.
    #[error("component {component:?} is placed on node {owner}, commit came from node {got}")]
    WrongNode {
        /// The fenced component.
        component: String,
        /// The node the current placement names.
        owner: u64,
        /// The node id the commit carried.
        got: u64,
    },
    /// A sys key starts with the prefix this crate reserves for its own metadata.
    #[error("sys key is in the storage crate's reserved range (starts with 0xFF 0xFF)")]
    ReservedKey,
    /// Stored metadata could not be decoded.
    #[error("corrupt storage metadata under {key}: {reason}")]
    CorruptMetadata {
        /// The metadata key, printed lossily.
        key: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The database is closed (a bulk re-open failed, or the committer thread is gone).
    #[error("storage is closed: {0}")]
    Closed(String),
    /// RocksDB reported an error.
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// An operating-system call failed (creating a directory, spawning the committer thread).
    #[error("io: {0}")]
    Io(String),
}

/// A transaction write was refused; the transaction is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The write would push the component's stored bytes (keys + values) over its quota.
    #[error("quota exceeded: the write would use {would_use} bytes of a {quota}-byte quota")]
    QuotaExceeded {
        /// The component's quota in bytes.
        quota: u64,
        /// Usage in bytes had the write been accepted.
        would_use: u64,
    },
    /// The key is longer than the component's key cap.
    #[error("key too large: {len} bytes, cap {max}")]
    KeyTooLarge {
        /// Key length in bytes.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The value is longer than the component's value cap.
    #[error("value too large: {len} bytes, cap {max}")]
    ValueTooLarge {
        /// Value length in bytes.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// Reading the old value (to account usage) failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}
