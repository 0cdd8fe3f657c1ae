//! Cluster identity, placement, the node-to-node wire format and its mutual TLS.
//!
//! Today a node runs alone, so this crate holds what every later piece builds on: the
//! types that name an actor's owner (node id + generation, the fencing token every
//! commit carries), the placement decisions (a new component, failover, rebalance) as pure
//! functions over plain data, and the frame codec of the transport (length prefix, version
//! byte, size cap, bincode body) with the connection's `Hello`, and the transport's mutual TLS
//! (`tls`: cluster CA, node certificates, quinn server/client configs with the ALPN). Raft
//! (openraft) and the QUIC connection handling land here next.

pub mod placement;
pub mod tls;
pub mod wire;

pub use placement::{choose_node, failover_moves, rebalance_moves, NodeId, NodeLoad, Placement};
pub use wire::{
    check_hello, decode_frame, encode_frame, FrameDecoder, Hello, HelloError, WireError,
    MAX_FRAME_BYTES, WIRE_VERSION,
};
