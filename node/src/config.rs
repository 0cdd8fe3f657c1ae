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
    pub admin_tls: AdminTlsMode,
}

/// Default instance slots: room for 1,000+ components and their restarts.
pub const DEFAULT_INSTANCE_POOL: u32 = 2_048;

/// File under the data dir that holds the admin token.
pub const TOKEN_FILE: &str = "admin-token";
/// File name of the CA certificate (in the CA directory and next to each node certificate).
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key.
pub const CA_KEY_FILE: &str = "ca.key";
/// File name of a node certificate.
pub const NODE_CERT_FILE: &str = "node.pem";
/// File name of a node private key.
pub const NODE_KEY_FILE: &str = "node.key";
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
            admin_tls: AdminTlsMode::Auto,
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

/// Whether the admin API speaks HTTPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AdminTlsMode {
    /// HTTPS unless the admin address is a loopback one (where nothing crosses a network).
    #[default]
    Auto,
    /// Always HTTPS.
    On,
    /// Always plain HTTP (behind a proxy that terminates TLS, say).
    Off,
}

pub use crate::caps::{MAX_DEADLINE_MS, MAX_MAILBOX, MAX_MEMORY_MB};

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

    /// What is out of range in these limits, or `None`. The one statement of the rule: an
    /// install is refused with it, and an activation checks the limits a registry entry
    /// carries again (an entry comes from a peer; a deadline near `u64::MAX` would
    /// overflow the actor's clock).
    pub fn problem(&self) -> Option<String> {
        let max_mb = (crate::caps::POOL_MAX_MEMORY_BYTES >> 20) as u32;
        if self.memory_mb == 0 || self.memory_mb > max_mb {
            return Some(format!("memory_mb must be between 1 and {max_mb}"));
        }
        if self.deadline_ms == 0 || self.deadline_ms > MAX_DEADLINE_MS {
            return Some(format!(
                "deadline_ms must be between 1 and {MAX_DEADLINE_MS}"
            ));
        }
        if self.mailbox == 0 || self.mailbox > MAX_MAILBOX {
            return Some(format!("mailbox must be between 1 and {MAX_MAILBOX}"));
        }
        if self.quota_mb > crate::caps::MAX_QUOTA_MB {
            return Some(format!(
                "quota_mb must be at most {}",
                crate::caps::MAX_QUOTA_MB
            ));
        }
        if self.fuel == Some(0) {
            return Some("fuel must be at least 1".into());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_out_of_range_are_named() {
        assert_eq!(DEFAULT_LIMITS.problem(), None);
        let cases = [
            Limits {
                memory_mb: 0,
                ..DEFAULT_LIMITS
            },
            Limits {
                deadline_ms: u64::MAX,
                ..DEFAULT_LIMITS
            },
            Limits {
                mailbox: 0,
                ..DEFAULT_LIMITS
            },
            Limits {
                quota_mb: u64::MAX,
                ..DEFAULT_LIMITS
            },
            Limits {
                fuel: Some(0),
                ..DEFAULT_LIMITS
            },
        ];
        let named = ["memory_mb", "deadline_ms", "mailbox", "quota_mb", "fuel"];
        for (limits, field) in cases.iter().zip(named) {
            let problem = limits.problem().unwrap_or_default();
            assert!(problem.contains(field), "{limits:?}: {problem:?}");
        }
    }
}
