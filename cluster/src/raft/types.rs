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
    /// The placement's fencing token: commits fenced with another one are refused. An
    /// install starts it at the Raft index of its own entry and every move adds one, so a
    /// generation is never given twice under one name, also across a removal and a
    /// reinstall (a generation is at most the index of the entry that set it, and a later
    /// install's index is larger).
    pub generation: u64,
    /// The generation the install gave: it names this incarnation of the component (a
    /// removal and a new install of the same name make a new one).
    pub incarnation: u64,
    /// Numbered commits applied so far in this incarnation (see `Fence::commit`).
    pub commits: u64,
    /// The last external durable message number applied to it (see `Fence::sequence`).
    pub external_seq: u64,
    /// The generations ended by the latest moves, oldest first (at most [`ENDED_KEPT`]): who
    /// ran each and its last applied commit number, so a commit whose outcome was unknown
    /// when its generation ended is known to be applied or not ([`commit_fate`]).
    pub ended: Vec<EndedGeneration>,
}

/// How many ended generations an entry remembers.
pub const ENDED_KEPT: usize = 8;

/// A generation that a move ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndedGeneration {
    pub generation: u64,
    pub owner: NodeId,
    /// The last commit number applied under it (0: none numbered in this incarnation).
    pub last_commit: u64,
}

impl ComponentEntry {
    /// A freshly installed component: its first generation is `index`, the Raft index of
    /// its install entry.
    pub fn installed(spec: ComponentSpec, owner: NodeId, index: u64) -> ComponentEntry {
        let generation = index.max(1);
        ComponentEntry {
            spec,
            owner,
            generation,
            incarnation: generation,
            commits: 0,
            external_seq: 0,
            ended: Vec::new(),
        }
    }

    /// Hands the component to `to` at the next generation, remembering how the current one
    /// ended.
    pub fn move_to(&mut self, to: NodeId) {
        self.ended.push(EndedGeneration {
            generation: self.generation,
            owner: self.owner,
            last_commit: self.commits,
        });
        if self.ended.len() > ENDED_KEPT {
            let extra = self.ended.len() - ENDED_KEPT;
            self.ended.drain(..extra);
        }
        self.owner = to;
        self.generation += 1;
    }
}

/// What became of commit `number` of a component, run on `node` at `generation`, as an
/// applied registry entry tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitFate {
    /// The placement still stands: the commit may yet apply (or has, if `number` is not
    /// past the entry's count).
    Open,
    /// Its generation ended after the commit had applied.
    Applied,
    /// Its generation ended, or the component was removed, before the commit applied: it
    /// never will.
    NotApplied,
    /// Its generation ended too long ago to tell, or its commit was not numbered.
    Unknown,
}

/// Decides [`CommitFate`] from the entry now registered under the component's name (`None`:
/// not installed). A plain function: the state machine answers a retried commit with it and
/// a committer whose retries failed asks it of its own applied view.
pub fn commit_fate(
    entry: Option<&ComponentEntry>,
    node: NodeId,
    generation: u64,
    number: u64,
) -> CommitFate {
    let Some(entry) = entry else {
        return CommitFate::NotApplied;
    };
    if entry.generation == generation && entry.owner == node {
        return CommitFate::Open;
    }
    if generation < entry.incarnation || generation > entry.generation {
        // An earlier incarnation (removed since) or a generation never given: whatever it
        // was, it cannot apply to this one.
        return CommitFate::NotApplied;
    }
    match entry.ended.iter().find(|e| e.generation == generation) {
        Some(e) if e.owner != node => CommitFate::NotApplied,
        Some(_) if number == 0 => CommitFate::Unknown,
        Some(e) if number <= e.last_commit => CommitFate::Applied,
        Some(_) => CommitFate::NotApplied,
        None => CommitFate::Unknown,
    }
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
    /// Starts a component again on the node that owns it (generation + 1): a fresh
    /// instance, a failure cleared; its store and the messages waiting for it stay. (After
    /// the earlier variants, so that the entries of earlier builds keep their encoding.)
    Restart {
        name: String,
    },
    /// Replaces a component's code in place (generation + 1, same owner, same store), with
    /// the writes its new code's migration made, all in this one entry. Also a rollback.
    /// (Last, for the same reason.)
    Upgrade(Box<Upgrade>),
}

/// A component's new code and what its migration wrote: applied together or not at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upgrade {
    /// The new version (same name). Its `installed_at_ms` is not taken: the entry keeps
    /// the install's.
    pub spec: ComponentSpec,
    /// Empty when the registry holds this digest already (a rollback, or a binary another
    /// component uses).
    pub binary: Vec<u8>,
    /// The digest the upgrade replaces: if another upgrade applied first, this one is
    /// refused rather than replacing code its migration never saw.
    pub from_sha256: String,
    /// When it was asked for (ms since the Unix epoch), set by the node that took it.
    pub at_ms: u64,
    /// The migration's writes, fenced with the placement it ran under and unnumbered
    /// (`commit` 0): it applies only if that placement still stands.
    pub migration: CommitBatch,
    /// An import: the "migration" replaces the component's data with an export's, and the
    /// code may stay the same (then only the limits and the generation change, and the code
    /// history is left as it is).
    pub import: bool,
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
    /// A component's code was replaced (upgrade or rollback); it runs on `owner` at
    /// `generation`. (Last, so earlier outcomes keep their encoding.)
    Upgraded {
        owner: NodeId,
        generation: u64,
    },
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
    /// The commit numbers durable messages for an incarnation of `peer` that has ended
    /// (removed, perhaps installed again) since its handler ran: nothing applied; run again,
    /// the handler numbers them for the current one (or finds no such component).
    #[error("commit of {component} refused: it numbered messages for incarnation {numbered_for} of {peer}, which is now {}", match .now { Some(n) => format!("incarnation {n}"), None => "removed".to_string() })]
    PeerChanged {
        component: String,
        peer: String,
        numbered_for: u64,
        now: Option<u64>,
    },
    /// An external durable message numbered from a stale count (an earlier send applied
    /// meanwhile): nothing applied; numbering it again from the applied count succeeds.
    #[error("message {got} to {component} is out of turn: the next is {next}; send it again")]
    OutOfTurn {
        component: String,
        got: u64,
        next: u64,
    },
    /// A command no node may apply (a malformed name, digest or binary): refused the same
    /// way on every node, so it cannot stop the state machine (see `command_check`).
    #[error("invalid command: {0}")]
    Invalid(String),
    /// An upgrade computed against code that another upgrade has replaced since.
    #[error("{component} no longer runs {expected}: it was upgraded to {now} meanwhile; nothing was applied")]
    VersionChanged {
        component: String,
        expected: String,
        now: String,
    },
    /// An upgrade to the code the component already runs.
    #[error("{component} already runs {sha256}; nothing to upgrade")]
    SameVersion { component: String, sha256: String },
    /// A rollback of a component that was never upgraded.
    #[error("{0} has no previous version to roll back to")]
    NoPreviousVersion(String),
}

/// A component's code history, kept apart from its [`ComponentEntry`] (whose stored
/// encoding earlier builds wrote): there is one only once it was upgraded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    /// When the current code started to run: the latest upgrade or rollback.
    pub upgraded_at_ms: u64,
    /// The code before it: what `rollback` returns to. Its binary is kept while it is here.
    pub previous: ComponentSpec,
    /// When that previous code had started to run (its install, or an earlier upgrade).
    pub previous_since_ms: u64,
}

/// The replicated registry: every component, its owner and generation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    pub components: BTreeMap<String, ComponentEntry>,
    /// The code history of every component that was ever upgraded.
    pub versions: BTreeMap<String, Versions>,
    /// What an install adds to its entry's index to make its generation
    /// ([`super::codec::SM_GENERATION_BASE_KEY`]).
    pub generation_base: u64,
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

    /// True when some component still uses this binary, or keeps it to roll back to.
    pub fn uses_binary(&self, sha256: &str) -> bool {
        self.components.values().any(|c| c.spec.sha256 == sha256)
            || self.versions.values().any(|v| v.previous.sha256 == sha256)
    }

    /// When the current code of `name` started to run (its install, or its latest
    /// upgrade).
    pub fn current_since_ms(&self, name: &str) -> Option<u64> {
        let entry = self.components.get(name)?;
        Some(
            self.versions
                .get(name)
                .map_or(entry.spec.installed_at_ms, |v| v.upgraded_at_ms),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> ComponentEntry {
        let spec = ComponentSpec {
            name: "a".into(),
            sha256: "s".into(),
            size_bytes: 1,
            config: Vec::new(),
            installed_at_ms: 0,
        };
        ComponentEntry::installed(spec, 1, 10)
    }

    #[test]
    fn the_fate_of_a_commit_follows_the_generation_it_ran_under() {
        let mut e = entry();
        e.commits = 3;
        assert_eq!(commit_fate(Some(&e), 1, 10, 4), CommitFate::Open);
        e.move_to(2);
        assert_eq!(e.generation, 11);
        assert_eq!(commit_fate(Some(&e), 1, 10, 3), CommitFate::Applied);
        assert_eq!(commit_fate(Some(&e), 1, 10, 4), CommitFate::NotApplied);
        assert_eq!(
            commit_fate(Some(&e), 2, 10, 3),
            CommitFate::NotApplied,
            "not its owner"
        );
        assert_eq!(
            commit_fate(Some(&e), 1, 10, 0),
            CommitFate::Unknown,
            "unnumbered"
        );
        assert_eq!(commit_fate(Some(&e), 2, 11, 4), CommitFate::Open);
        assert_eq!(
            commit_fate(Some(&e), 1, 9, 1),
            CommitFate::NotApplied,
            "an earlier incarnation"
        );
        assert_eq!(
            commit_fate(Some(&e), 1, 12, 1),
            CommitFate::NotApplied,
            "never given"
        );
        assert_eq!(
            commit_fate(None, 1, 10, 1),
            CommitFate::NotApplied,
            "removed"
        );
    }

    #[test]
    fn only_the_latest_ended_generations_are_kept() {
        let mut e = entry();
        for _ in 0..ENDED_KEPT + 3 {
            e.move_to(1);
        }
        assert_eq!(e.ended.len(), ENDED_KEPT);
        assert_eq!(e.ended[0].generation, 13);
        assert_eq!(commit_fate(Some(&e), 1, 10, 0), CommitFate::Unknown);
    }
}
