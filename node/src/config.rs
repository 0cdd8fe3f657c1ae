//! Node configuration: where data lives, where the admin API listens, default limits.

use crate::api::{Limits, LimitsRequest};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything `airssys node start` needs. `Default` is a working single node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub admin_addr: SocketAddr,
    pub node_id: u64,
    /// Bearer token for the admin API. `None`: the node makes one and writes it to
    /// `<data_dir>/admin-token` (mode 0600), where a local CLI finds it.
    pub token: Option<String>,
    pub default_limits: Limits,
    /// Instance slots of the pooling allocator: how many component instances the node
    /// can hold at once (each reserves address space for its largest memory).
    pub instance_pool: u32,
    /// Whether the admin API speaks HTTPS (with the node's certificate).
    pub admin_tls: crate::admin::tls::AdminTlsMode,
}

/// Default instance slots: room for 1,000+ components and their restarts.
pub const DEFAULT_INSTANCE_POOL: u32 = 2_048;

/// File under the data dir that holds the admin token.
pub const TOKEN_FILE: &str = "admin-token";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "airssys-data";
/// Default admin address.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:7070";

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 7070)),
            node_id: 1,
            token: None,
            default_limits: DEFAULT_LIMITS,
            instance_pool: DEFAULT_INSTANCE_POOL,
            admin_tls: crate::admin::tls::AdminTlsMode::Auto,
        }
    }
}

/// Limits a component gets when its install names none.
pub const DEFAULT_LIMITS: Limits = Limits {
    memory_mb: 64,
    deadline_ms: 2_000,
    mailbox: 1_024,
    quota_mb: 64,
    fuel: None,
};

/// Upper bounds an install may ask for; beyond them the install is refused.
pub const MAX_MEMORY_MB: u32 = 4_096;
pub const MAX_DEADLINE_MS: u64 = 600_000;
pub const MAX_MAILBOX: u32 = 1_000_000;

impl Limits {
    /// The limits an install asked for, defaults filled in.
    pub fn resolve(req: &LimitsRequest, defaults: &Limits) -> Limits {
        Limits {
            memory_mb: req.memory_mb.unwrap_or(defaults.memory_mb),
            deadline_ms: req.deadline_ms.unwrap_or(defaults.deadline_ms),
            mailbox: req.mailbox.unwrap_or(defaults.mailbox),
            quota_mb: req.quota_mb.unwrap_or(defaults.quota_mb),
            fuel: req.fuel.or(defaults.fuel),
        }
    }
}
