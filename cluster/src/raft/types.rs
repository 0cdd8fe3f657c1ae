//! What the Raft group agrees on: the type configuration, the commands of the
//! replicated registry, their outcomes, and the registry itself.

use crate::placement::NodeId;
use airssys_storage::CommitBatch;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Cursor;

/// How to reach a member: its QUIC peer address and its admin API address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// `host:port` of the node's QUIC endpoint (the host is also the TLS name).
    pub peer_addr: String,
    /// `host:port` of the node's admin API.
    pub admin_addr: String,
}

impl std::fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "peer {} admin {}", self.peer_addr, self.admin_addr)
    }
}

openraft::declare_raft_types!(
    /// The airssys Raft group: registry commands in, outcomes out.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = u64,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

/// What the cluster knows of an installed component. `config` is opaque to the
/// cluster (the node keeps the component's limits there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentSpec {
    pub name: String,
    pub sha256: String,
    pub size_bytes: u64,
    pub config: Vec<u8>,
    pub installed_at_ms: u64,
}

/// A component in the registry and where it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentEntry {
    pub spec: ComponentSpec,
    /// The node that runs the component's actor.
    pub owner: NodeId,
    /// Bumped on every move; commits fenced with an older one are refused.
    pub generation: u64,
    /// Numbered commits applied so far (see `Fence::commit`).
    #[serde(default)]
    pub commits: u64,
}

/// A change to the replicated registry. Decisions (which node) are taken by the
/// leader before proposing, so applying a command is deterministic everywhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Registers a component on `owner`. `binary` is empty when the registry already
    /// holds this sha256.
    Install {
        spec: ComponentSpec,
        owner: NodeId,
        binary: Vec<u8>,
    },
    Remove {
        name: String,
    },
    /// Hands a component to another node (generation + 1).
    Move {
        name: String,
        to: NodeId,
    },
    /// A handler's transaction (its component's writes, outbox, marks, reply), fenced with
    /// the placement it ran under; applied on every node, or refused everywhere. Nodes now
    /// propose [`Command::Commits`]; this stays so that logs and snapshots written by earlier
    /// builds still apply.
    Commit(CommitBatch),
    /// Many components' handler transactions gathered by one node into one entry (group
    /// commit across actors): each is checked and applied on its own, in order, exactly as
    /// if it were an entry of its own; each gets its own outcome.
    Commits(Vec<CommitBatch>),
}

/// What applying a command did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Installed {
        owner: NodeId,
        generation: u64,
    },
    Removed,
    Moved {
        owner: NodeId,
        generation: u64,
    },
    /// A commit was applied (`duplicate`: it had been already, by an earlier try).
    Committed {
        duplicate: bool,
    },
    /// Nothing changed; the reason is for the operator.
    Refused(Refusal),
    /// A membership or blank entry.
    #[default]
    Nothing,
    /// The outcomes of a [`Command::Commits`], one per transaction, in order.
    Many(Vec<Outcome>),
}

/// Why the state machine refused a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    #[error("a component named {0} is already installed; remove it first")]
    AlreadyExists(String),
    #[error("no component named {0}")]
    NotFound(String),
    #[error("node {0} is not a member of the cluster")]
    UnknownNode(NodeId),
    #[error("binary {0} is not in the registry and the command carries none")]
    MissingBinary(String),
    /// The commit's fence does not match the registry: the component moved (or was removed)
    /// after the handler started. Its actor must stop.
    #[error("commit of {component} refused: it ran on node {node} at generation {generation}, but {now}")]
    Fenced {
        component: String,
        node: NodeId,
        generation: u64,
        now: String,
    },
    /// A commit without a fence, or one that writes another component's store.
    #[error("malformed commit: {0}")]
    MalformedCommit(String),
}

/// The replicated registry: every component, its owner and generation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    pub components: BTreeMap<String, ComponentEntry>,
}

impl Registry {
    /// Components each node owns, for the placement decision.
    pub fn owned_counts(&self) -> BTreeMap<NodeId, u64> {
        let mut counts = BTreeMap::new();
        for entry in self.components.values() {
            *counts.entry(entry.owner).or_insert(0) += 1;
        }
        counts
    }

    /// True when some component still uses this binary.
    pub fn uses_binary(&self, sha256: &str) -> bool {
        self.components.values().any(|c| c.spec.sha256 == sha256)
    }
}
