//! The caps every layer applies, stated once: the admin API's body limits, the client's
//! checks before it uploads, the host calls and the actor's reply, the largest limits an
//! install may ask for. A leaf: it imports nothing from the crate but the API's error type.

use crate::api::{ApiError, ErrorKind};
use std::time::Duration;

/// Largest payload of one message, request or reply (through the admin API or between
/// components).
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// Largest component binary an install accepts (a Python component is about 18 MB).
pub const MAX_BINARY_BYTES: usize = 64 << 20;

/// Most data (keys and values) one import carries: it is written as one transaction, one
/// Raft entry.
pub const MAX_IMPORT_DATA_BYTES: usize = 32 << 20;
/// Largest export file an import accepts: a binary, the data, and the file's own framing.
pub const MAX_IMPORT_FILE_BYTES: usize = MAX_BINARY_BYTES + MAX_IMPORT_DATA_BYTES + (4 << 20);

/// Upper bounds an install may ask for; beyond them the install is refused.
pub const MAX_MEMORY_MB: u32 = 4_096;
pub const MAX_DEADLINE_MS: u64 = 600_000;
pub const MAX_MAILBOX: u32 = 1_000_000;
/// Largest storage quota an install may ask for (1 TiB).
pub const MAX_QUOTA_MB: u64 = 1 << 20;

/// Largest memory any component may be given (the pooling allocator reserves this
/// much address space per slot).
pub const POOL_MAX_MEMORY_BYTES: usize = 1 << 30;

/// Request timeout when `timeout_ms` is not given.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 5_000;
/// Longest request timeout a client may ask for.
pub const MAX_REQUEST_TIMEOUT_MS: u64 = 600_000;
/// Extra time the admin layer gives a request beyond its own timeout before it answers
/// `timeout` itself, so a backend that never resolves cannot hang the caller.
pub const REQUEST_GRACE: Duration = Duration::from_secs(2);

/// Refuses a body over `cap` bytes; `what` names it in the message ("payload", …).
pub fn check_size(len: usize, cap: usize, what: &str) -> Result<(), ApiError> {
    if len > cap {
        Err(too_large(cap, what))
    } else {
        Ok(())
    }
}

/// The `too-large` error for a body over `cap` bytes.
pub fn too_large(cap: usize, what: &str) -> ApiError {
    ApiError::new(
        ErrorKind::TooLarge,
        format!("{what} is larger than the {} limit", human_cap(cap)),
    )
}

fn human_cap(cap: usize) -> String {
    const MIB: usize = 1024 * 1024;
    if cap >= MIB && cap % MIB == 0 {
        format!("{} MiB", cap / MIB)
    } else {
        format!("{cap} bytes")
    }
}
