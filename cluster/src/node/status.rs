//! What this node knows of the cluster and of itself: the leader and its own role, the
//! figures for `/metrics`, readiness, `cluster status` (the leader's view, or this node's
//! when no leader is known), who is alive, and the loads placement decides on.

use super::ClusterNode;
use crate::peer::{PeerRequest, PeerResponse};
use crate::placement::{NodeId, NodeLoad};
use crate::raft::types::NodeInfo;
use openraft::ServerState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::Duration;

/// A node not heard from for this long counts as down for placement and status.
pub const ALIVE_WITHIN: Duration = Duration::from_secs(3);

/// A member as `cluster status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: NodeId,
    pub peer_addr: String,
    pub admin_addr: String,
    pub voter: bool,
    /// As seen by the leader; `None` when the answering node knows no leader.
    pub alive: Option<bool>,
}

/// Where a component runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentPlacement {
    pub name: String,
    pub owner: NodeId,
    pub generation: u64,
}

/// The cluster as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The node that built this view (the leader when one is known).
    pub reported_by: NodeId,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub commit_index: u64,
    pub nodes: Vec<MemberStatus>,
    pub components: Vec<ComponentPlacement>,
}

/// Figures for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct RaftFigures {
    pub term: u64,
    pub leader: Option<NodeId>,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub is_leader: bool,
}

impl ClusterNode {
    /// The leader's id and address, as this node knows them.
    pub fn leader(&self) -> Option<(NodeId, NodeInfo)> {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        let info = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, info))
    }

    /// Whether this node is a voter in the membership it knows.
    pub fn is_voter(&self) -> bool {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let voter = m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == self.inner.id);
        voter
    }

    pub fn is_leader(&self) -> bool {
        self.leader().is_some_and(|(id, _)| id == self.inner.id)
    }

    pub fn figures(&self) -> RaftFigures {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        RaftFigures {
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            is_leader: m.state == ServerState::Leader,
        }
    }

    /// Joined, a leader known, and caught up once since it started.
    pub fn is_ready(&self) -> bool {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let member = m
            .membership_config
            .membership()
            .get_node(&self.inner.id)
            .is_some();
        let level = m.last_applied.map(|l| l.index) == m.last_log_index;
        let caught_up = caught_up(&self.inner.caught_up_once, level);
        // A Raft that stopped (an apply or a log write failed: a full or failing disk)
        // keeps its last figures; this node serves nothing until it restarts.
        let running = m.running_state.is_ok();
        running && member && m.current_leader.is_some() && caught_up
    }

    /// The cluster as the leader sees it (or this node, when no leader is known).
    pub async fn status(&self) -> ClusterStatus {
        match self.on_leader(PeerRequest::Status).await {
            Ok(PeerResponse::Status(s)) => s,
            _ => self.local_status(false),
        }
    }

    pub(super) fn local_status(&self, as_leader: bool) -> ClusterStatus {
        let m = self.inner.raft.metrics();
        let m = m.borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let nodes = membership
            .nodes()
            .map(|(id, info)| MemberStatus {
                id: *id,
                peer_addr: info.peer_addr.clone(),
                admin_addr: info.admin_addr.clone(),
                voter: voters.contains(id),
                alive: as_leader.then(|| self.alive(*id)),
            })
            .collect();
        let components = self
            .inner
            .view
            .registry()
            .components
            .values()
            .map(|c| ComponentPlacement {
                name: c.spec.name.clone(),
                owner: c.owner,
                generation: c.generation,
            })
            .collect();
        ClusterStatus {
            reported_by: self.inner.id,
            leader: m.current_leader,
            term: m.current_term,
            commit_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            nodes,
            components,
        }
    }

    fn alive(&self, node: NodeId) -> bool {
        node == self.inner.id
            || self
                .inner
                .transport
                .since_contact(node)
                .is_some_and(|d| d < ALIVE_WITHIN)
    }

    /// The leader's view for placement: every member, alive or not, and its load.
    pub fn loads(&self) -> Vec<NodeLoad> {
        let counts = self.inner.view.registry().owned_counts();
        self.inner
            .view
            .membership()
            .membership()
            .nodes()
            .map(|(id, _)| NodeLoad {
                node: *id,
                alive: self.alive(*id),
                actors: counts.get(id).copied().unwrap_or(0),
            })
            .collect()
    }
}

/// Whether a node counts as caught up: once it has been (its whole log applied, or the
/// leader's read index reached), it stays so. Under load every node, the leader first, has
/// a few entries appended and not yet applied at any moment; asking for none flapped
/// readiness, and a five-node cluster was almost never seen ready everywhere at once.
pub(super) fn caught_up(once: &std::sync::atomic::AtomicBool, level_now: bool) -> bool {
    use std::sync::atomic::Ordering;
    if level_now {
        once.store(true, Ordering::Relaxed);
    }
    once.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::caught_up;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn once_caught_up_a_node_stays_so_while_entries_are_in_flight() {
        let once = AtomicBool::new(false);
        assert!(!caught_up(&once, false), "never level, never caught up");
        assert!(caught_up(&once, true));
        assert!(
            caught_up(&once, false),
            "a lag after that is entries in flight"
        );
    }
}
