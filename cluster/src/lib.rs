//! Cluster identity and placement.
//!
//! Today a node runs alone, so this crate holds what every later piece builds on: the
//! types that name an actor's owner (node id + generation, the fencing token every
//! commit carries) and the placement decision as a pure function over plain data.
//! Raft (openraft) and the QUIC transport land here next; nothing in this crate does IO.

pub mod placement;

pub use placement::{choose_node, NodeId, NodeLoad, Placement};
