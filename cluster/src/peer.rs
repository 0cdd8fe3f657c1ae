//! The peer protocol: what one node asks another over a QUIC call, what it answers, and
//! why a call failed ([`PeerError`], typed, so a caller decides by variant and never by
//! the text of a message). The Raft network and the node's services both speak it; it
//! imports nothing from either.

use crate::placement::NodeId;
use crate::raft::types::{Command, ComponentSpec, NodeInfo, Outcome, TypeConfig};
use airssys_storage::CommitBatch;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{SnapshotMeta, Vote};
use serde::{Deserialize, Serialize};

/// Bytes of one [`PeerRequest::SnapshotChunk`].
pub const SNAPSHOT_CHUNK_BYTES: usize = 8 << 20;

/// Requests between nodes (one QUIC call each).
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    /// A whole snapshot; `data` is empty when it was sent before in [`PeerRequest::SnapshotChunk`]s.
    Snapshot {
        vote: Vote<NodeId>,
        meta: SnapshotMeta<NodeId, NodeInfo>,
        data: Vec<u8>,
    },
    /// A piece of the snapshot `id`, at `offset` (0 starts it afresh).
    SnapshotChunk {
        id: String,
        offset: u64,
        bytes: Vec<u8>,
    },
    /// Handler transactions gathered on one node, for the leader to append as one entry.
    Commits(Vec<CommitBatch>),
    Join {
        node_id: NodeId,
        info: NodeInfo,
    },
    /// Install with placement decided by the leader.
    Install {
        spec: ComponentSpec,
        binary: Vec<u8>,
    },
    Propose(Command),
    RemoveNode(NodeId),
    Status,
    /// Whether the answering node has Raft state (belongs to a cluster).
    Probe,
    /// For the node layer (admin calls forwarded to a component's owner); its own typed
    /// encoding, opaque here.
    App(Vec<u8>),
    /// The leader's commit index, after it confirmed with a quorum that it still leads (a
    /// restarted former leader believes it leads until a quorum says otherwise).
    ReadIndex,
}

impl PeerRequest {
    pub fn kind(&self) -> &'static str {
        match self {
            PeerRequest::Append(_) => "append",
            PeerRequest::Vote(_) => "vote",
            PeerRequest::Snapshot { .. } => "snapshot",
            PeerRequest::SnapshotChunk { .. } => "snapshot-chunk",
            PeerRequest::Commits(_) => "commits",
            PeerRequest::Join { .. } => "join",
            PeerRequest::Install { .. } => "install",
            PeerRequest::Propose(_) => "propose",
            PeerRequest::RemoveNode(_) => "remove-node",
            PeerRequest::Status => "status",
            PeerRequest::Probe => "probe",
            PeerRequest::App(_) => "app",
            PeerRequest::ReadIndex => "read-index",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    Append(AppendEntriesResponse<NodeId>),
    Vote(VoteResponse<NodeId>),
    Snapshot(SnapshotResponse<NodeId>),
    Done(Outcome),
    /// A commit's outcome and the log index it was applied at.
    Committed {
        index: u64,
        outcome: Outcome,
    },
    Status(crate::node::ClusterStatus),
    Probe {
        initialized: bool,
    },
    App(Vec<u8>),
    Error(PeerError),
    /// Everything up to this log index was committed when the leader was confirmed.
    ReadIndex(u64),
}

impl PeerResponse {
    pub fn kind(&self) -> &'static str {
        match self {
            PeerResponse::Append(_) => "append",
            PeerResponse::Vote(_) => "vote",
            PeerResponse::Snapshot(_) => "snapshot",
            PeerResponse::Done(_) => "done",
            PeerResponse::Committed { .. } => "committed",
            PeerResponse::Status(_) => "status",
            PeerResponse::Probe { .. } => "probe",
            PeerResponse::App(_) => "app",
            PeerResponse::Error(_) => "error",
            PeerResponse::ReadIndex(_) => "read-index",
        }
    }
}

/// Why a node did not do what a peer (or its own node layer) asked. It crosses the
/// cluster as it is: the node that started the call decides by variant (retry on another
/// leader, report "not found"), and maps it to a user-facing kind in one place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum PeerError {
    /// The answering node does not lead (any more); `leader` is the one it knows of.
    #[error("not the leader any more{}; retry", leader_hint(*.leader))]
    NotLeader { leader: Option<NodeId> },
    #[error("no leader is known yet; the cluster may be electing one or lack a quorum")]
    NoLeader,
    #[error("node {0} is not a member")]
    NotMember(NodeId),
    #[error("cannot remove the last voter")]
    LastVoter,
    /// A request sent to the leader that only another role answers, or the reverse.
    #[error("{0} is not a request this node serves")]
    WrongRequest(String),
    /// The answering node's Raft failed (stopped, or a storage error under it).
    #[error("raft: {0}")]
    Raft(String),
    /// The leader could not reach the node it relayed to.
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("snapshot: {0}")]
    Snapshot(String),
    #[error("the node is stopping")]
    Stopping,
    /// A request that speaks for another node than the one the caller's certificate
    /// names (`None`: it names none).
    #[error("a {request} request claims node {claimed}, but the peer's certificate is {}", certified_as(*.certified))]
    NotThisPeer {
        request: String,
        claimed: NodeId,
        certified: Option<NodeId>,
    },
    /// The answer was not the kind the request calls for (a bug, or mixed versions).
    #[error("unexpected answer {0}")]
    Unexpected(String),
    /// A vote asked of a node that started without Raft state (new, or its data wiped)
    /// and has not been admitted to the cluster since. Appended last: the variants above
    /// keep their encoding.
    #[error(
        "this node started without Raft state and grants no vote until the cluster has admitted it"
    )]
    NotVotingYet,
}

fn certified_as(node: Option<NodeId>) -> String {
    node.map(|n| format!("node {n}'s"))
        .unwrap_or_else(|| "no node's".into())
}

fn leader_hint(leader: Option<NodeId>) -> String {
    leader
        .map(|l| format!(" (node {l} leads)"))
        .unwrap_or_default()
}

impl PeerError {
    /// Whether asking the leader again (once one is known) may succeed.
    pub fn leader_changed(&self) -> bool {
        matches!(self, PeerError::NotLeader { .. } | PeerError::NoLeader)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode_frame, encode_frame};

    #[test]
    fn errors_cross_the_wire_as_their_variant() {
        for e in [
            PeerError::NotLeader { leader: Some(3) },
            PeerError::NotLeader { leader: None },
            PeerError::NoLeader,
            PeerError::NotMember(9),
            PeerError::LastVoter,
            PeerError::Raft("disk".into()),
            PeerError::Stopping,
        ] {
            let frame = encode_frame(&PeerResponse::Error(e.clone())).unwrap();
            match decode_frame::<PeerResponse>(&frame).unwrap() {
                PeerResponse::Error(back) => assert_eq!(back, e),
                other => panic!("{}", other.kind()),
            }
        }
    }

    #[test]
    fn only_a_leader_change_is_worth_asking_the_leader_again() {
        assert!(PeerError::NotLeader { leader: Some(2) }.leader_changed());
        assert!(PeerError::NoLeader.leader_changed());
        assert!(!PeerError::NotMember(2).leader_changed());
        assert!(!PeerError::Raft("x".into()).leader_changed());
        assert_eq!(
            PeerError::NotLeader { leader: Some(2) }.to_string(),
            "not the leader any more (node 2 leads); retry"
        );
    }
}
