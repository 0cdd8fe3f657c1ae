//! Where an actor runs. `Placement` names the owner node and the generation (bumped on
//! every move; a commit carrying an older generation is refused by storage).
//! `choose_node` is the scheduler's decision for a new component: a pure function of
//! membership and load, unit-tested without sockets or disks.

use serde::{Deserialize, Serialize};

/// A node's stable id (never reused within a cluster).
pub type NodeId = u64;

/// The owner of one component's actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub node: NodeId,
    pub generation: u64,
}

impl Placement {
    /// The first placement of a newly installed component.
    pub fn initial(node: NodeId) -> Placement {
        Placement {
            node,
            generation: 1,
        }
    }

    /// The placement after moving to `node`: the generation always grows, so the old
    /// owner's late commits are fenced off.
    pub fn moved_to(self, node: NodeId) -> Placement {
        Placement {
            node,
            generation: self.generation + 1,
        }
    }
}

/// What the scheduler knows of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeLoad {
    pub node: NodeId,
    pub alive: bool,
    /// Actors placed on it now.
    pub actors: u64,
}

/// The least-loaded live node; ties go to the lowest id so every node computes the
/// same answer from the same view. `None` when no node is alive.
pub fn choose_node(nodes: &[NodeLoad]) -> Option<NodeId> {
    nodes
        .iter()
        .filter(|n| n.alive)
        .min_by_key(|n| (n.actors, n.node))
        .map(|n| n.node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(node: NodeId, alive: bool, actors: u64) -> NodeLoad {
        NodeLoad {
            node,
            alive,
            actors,
        }
    }

    #[test]
    fn picks_the_least_loaded_live_node() {
        let nodes = [load(1, true, 5), load(2, true, 2), load(3, false, 0)];
        assert_eq!(choose_node(&nodes), Some(2));
    }

    #[test]
    fn ties_go_to_the_lowest_id_whatever_the_order() {
        let a = [load(3, true, 1), load(2, true, 1), load(5, true, 4)];
        let b = [load(5, true, 4), load(2, true, 1), load(3, true, 1)];
        assert_eq!(choose_node(&a), Some(2));
        assert_eq!(choose_node(&b), Some(2));
    }

    #[test]
    fn no_live_node_means_no_placement() {
        assert_eq!(choose_node(&[]), None);
        assert_eq!(choose_node(&[load(1, false, 0)]), None);
    }

    #[test]
    fn a_move_bumps_the_generation() {
        let p = Placement::initial(1);
        assert_eq!(p.generation, 1);
        let q = p.moved_to(2);
        assert_eq!(
            q,
            Placement {
                node: 2,
                generation: 2
            }
        );
        assert_eq!(q.moved_to(2).generation, 3);
    }
}
