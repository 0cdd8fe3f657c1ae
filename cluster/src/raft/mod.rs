//! Raft (openraft 0.9) for the cluster's registry: types, the log and the state
//! machine on the node's RocksDB, and the network over QUIC.

// openraft's trait methods return its `StorageError` (224 bytes); our helpers return the
// same type so `?` works without conversions.
#![allow(clippy::result_large_err)]

pub mod codec;
pub mod command_check;
pub mod log_store;
pub mod network;
pub mod state_machine;
pub mod types;
