//! The admin contract: what the admin HTTP API and the CLI exchange with a node.
//!
//! `AdminBackend` is implemented by the real host (`crate::host::Host`) and, in the
//! admin layer's own tests, by an in-memory fake. Every type here is plain data that
//! travels as JSON; error kinds carry the names users see (`not-found`, `timeout`, …).

use serde::{Deserialize, Serialize};
use std::future::Future;
use std::time::Duration;

/// Every failure a client can see, by the name it is reported under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// No component by that name.
    NotFound,
    /// A component by that name is already installed.
    AlreadyExists,
    /// The name does not match `[a-z0-9][a-z0-9-]{0,62}`.
    InvalidName,
    /// The binary is not a valid component for the airssys world.
    InvalidComponent,
    /// The target's mailbox is full.
    MailboxFull,
    /// No reply within the request's timeout.
    Timeout,
    /// The handler trapped, ran past its deadline or out of memory.
    Trapped,
    /// The handler returned an error.
    Rejected,
    /// A storage quota or size cap was exceeded.
    QuotaExceeded,
    /// A payload or install body is over its size cap.
    TooLarge,
    /// The component cannot run right now (marked failed, being removed).
    Unavailable,
    /// This node is not the leader and could not forward (cluster).
    NotLeader,
    /// The request itself is malformed (bad parameter, bad body).
    BadRequest,
    /// Missing or wrong bearer token.
    Unauthorized,
    /// A bug or an IO failure on the node; the message says which.
    Internal,
    /// The component is not in the state the call needs: an upgrade to the code it runs
    /// already, one that lost a race with another upgrade, a rollback with nothing to go
    /// back to.
    Conflict,
    /// An idempotency key came again with another payload.
    KeyReused,
}

impl ErrorKind {
    /// The kebab-case name, as it appears in JSON and CLI output.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not-found",
            ErrorKind::AlreadyExists => "already-exists",
            ErrorKind::InvalidName => "invalid-name",
            ErrorKind::InvalidComponent => "invalid-component",
            ErrorKind::MailboxFull => "mailbox-full",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Trapped => "trapped",
            ErrorKind::Rejected => "rejected",
            ErrorKind::QuotaExceeded => "quota-exceeded",
            ErrorKind::TooLarge => "too-large",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::NotLeader => "not-leader",
            ErrorKind::BadRequest => "bad-request",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Internal => "internal",
            ErrorKind::Conflict => "conflict",
            ErrorKind::KeyReused => "key-reused",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as the admin API reports it: `{"error": "timeout", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{error}: {message}")]
pub struct ApiError {
    pub error: ErrorKind,
    pub message: String,
}

impl ApiError {
    pub fn new(error: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            error,
            message: message.into(),
        }
    }
}

/// Per-component limits chosen at install. `None` means the node's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsRequest {
    pub memory_mb: Option<u32>,
    pub deadline_ms: Option<u64>,
    pub mailbox: Option<u32>,
    pub quota_mb: Option<u64>,
    /// Fuel per handler call; `None` means no fuel metering.
    pub fuel: Option<u64>,
}

/// The limits a component actually runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub memory_mb: u32,
    pub deadline_ms: u64,
    pub mailbox: u32,
    pub quota_mb: u64,
    pub fuel: Option<u64>,
}

/// How a message travels (see docs/ARCHITECTURE.md, "Exactly once, step by step").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    #[default]
    Durable,
    Fast,
}

impl Delivery {
    /// The name the API and the CLI use (`durable`, `fast`).
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Durable => "durable",
            Delivery::Fast => "fast",
        }
    }
}

/// Where a component's actor stands. The admin API's JSON shows it internally tagged
/// (`{"state": "running"}`); a binary format (the peer protocol's bincode, which cannot
/// read an internally tagged enum) gets the plain enum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub enum ComponentState {
    Starting,
    Running,
    /// Crashed and waiting to be restarted.
    Restarting {
        restarts: u32,
        last_error: String,
    },
    /// Crashed too often, or could not start; messages to it get `unavailable`. `error`
    /// is the kind of the failure that stopped it (a trap, a rejected `init`), when known.
    Failed {
        reason: String,
        error: Option<ErrorKind>,
    },
    Stopped,
    /// Owned here, waiting for its code to compile (in the background, a few binaries at
    /// a time) since `since_ms`; messages to it get `unavailable` until it runs. Appended
    /// last: the peer protocol's encoding of the others is unchanged.
    Compiling {
        since_ms: u64,
    },
}

/// [`ComponentState`] as JSON shows it.
#[derive(Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
enum TaggedState {
    Starting,
    Running,
    Restarting {
        restarts: u32,
        last_error: String,
    },
    Failed {
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorKind>,
    },
    Stopped,
    Compiling {
        since_ms: u64,
    },
}

impl From<TaggedState> for ComponentState {
    fn from(s: TaggedState) -> Self {
        match s {
            TaggedState::Starting => ComponentState::Starting,
            TaggedState::Running => ComponentState::Running,
            TaggedState::Restarting {
                restarts,
                last_error,
            } => ComponentState::Restarting {
                restarts,
                last_error,
            },
            TaggedState::Failed { reason, error } => ComponentState::Failed { reason, error },
            TaggedState::Stopped => ComponentState::Stopped,
            TaggedState::Compiling { since_ms } => ComponentState::Compiling { since_ms },
        }
    }
}

impl From<&ComponentState> for TaggedState {
    fn from(s: &ComponentState) -> Self {
        match s.clone() {
            ComponentState::Starting => TaggedState::Starting,
            ComponentState::Running => TaggedState::Running,
            ComponentState::Restarting {
                restarts,
                last_error,
            } => TaggedState::Restarting {
                restarts,
                last_error,
            },
            ComponentState::Failed { reason, error } => TaggedState::Failed { reason, error },
            ComponentState::Stopped => TaggedState::Stopped,
            ComponentState::Compiling { since_ms } => TaggedState::Compiling { since_ms },
        }
    }
}

impl Serialize for ComponentState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            TaggedState::from(self).serialize(serializer)
        } else {
            ComponentState::serialize(self, serializer)
        }
    }
}

impl<'de> Deserialize<'de> for ComponentState {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            TaggedState::deserialize(deserializer).map(ComponentState::from)
        } else {
            ComponentState::deserialize(deserializer)
        }
    }
}

/// One installed component, as `component list` and `describe` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentInfo {
    pub name: String,
    /// sha256 of the binary, hex.
    pub sha256: String,
    pub size_bytes: u64,
    pub limits: Limits,
    /// The node that runs the actor, and the placement generation (fencing token).
    pub node_id: u64,
    pub generation: u64,
    pub state: ComponentState,
    /// Messages waiting in the mailbox now.
    pub mailbox_depth: u64,
    /// Bytes of storage in use (keys + values).
    pub storage_bytes: u64,
    /// Crashes since the actor was (re)started on this node.
    pub restarts: u32,
    pub installed_at_ms: u64,
    /// Lines of its log (stdout, stderr, the `log` import) dropped past its allowance since
    /// it started on this node.
    #[serde(default)]
    pub log_lines_dropped: u64,
    /// When the current code started to run, if it replaced another (an upgrade or a
    /// rollback); `None`: it runs the code it was installed with.
    // Never skipped when empty: bincode (between nodes) has no field names to skip by.
    #[serde(default)]
    pub upgraded_at_ms: Option<u64>,
    /// The code that ran before the latest upgrade: what `rollback` returns to.
    #[serde(default)]
    pub previous: Option<PreviousVersion>,
}

/// A component's previous code, as the registry keeps it for a rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousVersion {
    pub sha256: String,
    pub size_bytes: u64,
    pub limits: Limits,
    /// When it had started to run (its install or an earlier upgrade).
    pub since_ms: u64,
}

/// An upgrade: the component's name, its new binary, and the limits to change (`None`
/// keeps the current one).
#[derive(Debug, Clone)]
pub struct UpgradeRequest {
    pub name: String,
    pub binary: Vec<u8>,
    pub limits: LimitsRequest,
}

/// An import: an export file (`airssys component export`) under `name`, new or (with
/// `replace`) written over the component of that name.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    pub name: String,
    pub file: Vec<u8>,
    pub replace: bool,
}

/// An install: name, binary and limits.
#[derive(Debug, Clone)]
pub struct InstallRequest {
    pub name: String,
    pub binary: Vec<u8>,
    pub limits: LimitsRequest,
}

/// `airssys cluster status`: on one node, just this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: u64,
    pub admin_addr: String,
    pub version: String,
    pub components: u64,
    pub uptime_ms: u64,
}

/// The chunks of a backup file as a node produces them ([`AdminBackend::backup`]).
pub type BackupStream = tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>;

/// What the admin HTTP layer needs from a node. Implemented by the real host and by
/// in-memory fakes in tests.
pub trait AdminBackend: Send + Sync + 'static {
    fn install(
        &self,
        req: InstallRequest,
    ) -> impl Future<Output = Result<ComponentInfo, ApiError>> + Send;
    fn list(&self) -> impl Future<Output = Result<Vec<ComponentInfo>, ApiError>> + Send;
    fn describe(&self, name: &str) -> impl Future<Output = Result<ComponentInfo, ApiError>> + Send;
    fn remove(&self, name: &str) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// Fire-and-forget from an external client. Ok once accepted (durable: committed).
    /// With an idempotency key (durable only), a send is accepted once per key: a repeat
    /// is answered accepted and queues nothing; the same key with another payload is
    /// `key-reused`.
    fn send(
        &self,
        name: &str,
        payload: Vec<u8>,
        delivery: Delivery,
        idempotency_key: Option<String>,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// A request from an external client; resolves with the reply or the error. With an
    /// idempotency key (`Idempotency-Key`), the first attempt's outcome is kept and is
    /// every retry's answer; the same key with another payload is `key-reused`.
    fn request(
        &self,
        name: &str,
        payload: Vec<u8>,
        timeout: Duration,
        delivery: Delivery,
        idempotency_key: Option<String>,
    ) -> impl Future<Output = Result<Vec<u8>, ApiError>> + Send;
    fn status(&self) -> impl Future<Output = Result<NodeStatus, ApiError>> + Send;
    /// Prometheus text exposition.
    fn metrics(&self) -> impl Future<Output = String> + Send;
    /// True when the node is ready to serve (for `/readyz`).
    fn ready(&self) -> impl Future<Output = bool> + Send;
    /// How many binaries this node is still compiling in the background (shown by
    /// `/readyz`: a ready node serves while it compiles; what waits for the code answers
    /// `unavailable`).
    fn compiling(&self) -> impl Future<Output = usize> + Send {
        async { 0 }
    }

    /// Members, leader, term and where each component runs.
    fn cluster_status(
        &self,
    ) -> impl Future<Output = Result<airssys_cluster::ClusterStatus, ApiError>> + Send {
        async { Err(no_cluster()) }
    }

    /// Hands a component to another node (its generation goes up by one).
    fn move_component(
        &self,
        _name: &str,
        _to: u64,
    ) -> impl Future<Output = Result<ComponentInfo, ApiError>> + Send {
        async { Err(no_cluster()) }
    }

    /// Starts a component again on its owner node (its generation goes up by one): a
    /// fresh instance, a failure cleared, its storage and waiting messages kept.
    fn restart(&self, _name: &str) -> impl Future<Output = Result<ComponentInfo, ApiError>> + Send {
        async { Err(no_cluster()) }
    }

    /// Replaces a component's code in place: same name, storage and messages, new binary,
    /// its `migrate` run in the switch's transaction (generation + 1).
    fn upgrade(
        &self,
        _req: UpgradeRequest,
    ) -> impl Future<Output = Result<ComponentInfo, ApiError>> + Send {
        async { Err(no_cluster()) }
    }

    /// A backup of the whole replicated state at one Raft index, as the chunks of its
    /// file (an error in the stream: the backup broke off; the file is incomplete).
    fn backup(&self) -> impl Future<Output = Result<BackupStream, ApiError>> + Send {
        async { Err(no_cluster()) }
    }

    /// One component's code and storage at one Raft index, as the chunks of its file.
    fn export(&self, _name: &str) -> impl Future<Output = Result<BackupStream, ApiError>> + Send {
        async { Err(no_cluster()) }
    }

    /// Takes an export under a name: installed anew, or written over the component of that
    /// name (`replace`) as one fenced transaction with its code.
    fn import(
        &self,
        _req: ImportRequest,
    ) -> impl Future<Output = Result<ComponentInfo, ApiError>> + Send {
        async { Err(no_cluster()) }
    }

    /// Goes back to the code before the latest upgrade (storage as it is now), as an
    /// upgrade to it.
    fn rollback(
        &self,
        _name: &str,
    ) -> impl Future<Output = Result<ComponentInfo, ApiError>> + Send {
        async { Err(no_cluster()) }
    }

    /// Moves a node's components away and takes it out of the cluster.
    fn remove_node(&self, _node: u64) -> impl Future<Output = Result<(), ApiError>> + Send {
        async { Err(no_cluster()) }
    }
}

fn no_cluster() -> ApiError {
    ApiError::new(
        ErrorKind::Unavailable,
        "this node runs without a cluster (in-process host)",
    )
}
