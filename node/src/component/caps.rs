//! The caps of component storage, stated once: a handler's transaction applies them to each
//! key and value it writes ([`super::ComponentShared::txn_limits`]). The caps every layer
//! applies (payloads, binaries) are in [`crate::caps`].

/// Longest key a component may write.
pub const MAX_KEY_BYTES: usize = 1_024;
/// Largest value a component may write.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
