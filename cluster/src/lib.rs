//! The cluster layer: membership and the replicated registry (Raft, openraft 0.9, on the
//! node's RocksDB), placement decisions as pure functions, the node-to-node transport
//! (QUIC with mutual TLS, framed bincode with a version byte and a size cap).
//!
//! - `backup`: a node's replicated state as a checksummed file, one record at a time, and a
//!   new node seeded from one.
//! - `failure`: the leader's failure detector (which members are down), pure.
//! - `group_commit`: how a node gathers its actors' transactions into one Raft entry.
//! - `placement`: who runs a component (choose, failover, rebalance), pure.
//! - `raft`: the type config, the registry commands and their deterministic apply, the log
//!   store and state machine over `airssys-storage`, the Raft network over QUIC.
//! - `transport`: one QUIC endpoint per node, calls (bi streams) and ordered lanes (uni).
//! - `node`: [`ClusterNode`], what the node asks of the cluster (bootstrap, join, install,
//!   move, remove, status) with writes forwarded to the leader; split by job into
//!   membership, writes (and group commit), serving peers, status, and the node layer's
//!   messages.
//! - `peer`: the peer protocol (requests, answers, typed [`PeerError`]s), below both the
//!   node and the Raft network.
//! - `tls`, `wire`: certificates and frames.
//!
//! It knows nothing of wasmtime: component configs and actor messages are opaque bytes here.

pub mod backup;
pub mod failure;
pub mod group_commit;
pub mod node;
pub mod peer;
pub mod peer_identity;
pub mod placement;
pub mod raft;
pub mod tls;
pub mod transport;
pub mod wire;

pub use node::{
    AppInbox, ClusterConfig, ClusterError, ClusterNode, ClusterStatus, ComponentPlacement,
    MemberStatus, RaftFigures,
};
pub use peer::{PeerError, PeerRequest, PeerResponse};
pub use placement::{choose_node, failover_moves, rebalance_moves, NodeId, NodeLoad, Placement};
pub use raft::state_machine::{check_commit, is_log_key, Keyspace, KeyspaceRules, RemovalPlan};
pub use raft::types::{
    commit_fate, Command, CommitFate, ComponentEntry, ComponentSpec, EndedGeneration, NodeInfo,
    Outcome, Refusal, Registry, Upgrade, Versions, ENDED_KEPT,
};
pub use wire::{
    decode_frame, encode_frame, FrameDecoder, WireError, MAX_FRAME_BYTES, WIRE_VERSION,
};
