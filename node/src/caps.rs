//! The size caps every layer applies, stated once: the admin API's body limits, the client's
//! checks before it uploads, the host calls and the actor's reply all read them here.

/// Largest payload of one message, request or reply (through the admin API or between
/// components).
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// Largest component binary an install accepts (a Python component is about 18 MB).
pub const MAX_BINARY_BYTES: usize = 64 << 20;
