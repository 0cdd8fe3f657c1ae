//! Where an actor runs. `Placement` names the owner node and the generation (bumped on
//! every move; a commit carrying an older generation is refused by storage).
//! `choose_node` is the scheduler's decision for a new component, `failover_moves` takes the
//! actors of dead nodes to live ones and `rebalance_moves` hands a joining node its share a
//! few components at a time. All are pure functions of (membership, load, current
//! placement), deterministic whatever the input order, unit-tested without sockets or disks.

use std::collections::{BTreeMap, BTreeSet};

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

/// The live members and their load, keyed (and so ordered) by node id. A node listed more than
/// once counts as alive only if every entry says so, with the highest load reported, so the
/// answer does not depend on the order of `nodes`.
fn live_loads(nodes: &[NodeLoad]) -> BTreeMap<NodeId, u64> {
    let mut seen: BTreeMap<NodeId, (bool, u64)> = BTreeMap::new();
    for n in nodes {
        let e = seen.entry(n.node).or_insert((true, 0));
        e.0 &= n.alive;
        e.1 = e.1.max(n.actors);
    }
    seen.into_iter()
        .filter(|(_, (alive, _))| *alive)
        .map(|(node, (_, actors))| (node, actors))
        .collect()
}

/// The least-loaded node, ties to the lowest id.
fn least_loaded(loads: &BTreeMap<NodeId, u64>) -> Option<NodeId> {
    loads
        .iter()
        .min_by_key(|(node, load)| (**load, **node))
        .map(|(node, _)| *node)
}

/// Where each orphaned component goes: every component whose owner is not a live member moves
/// to the least-loaded live node (ties to the lowest id), its generation + 1. Load is
/// `NodeLoad::actors` plus the moves already decided in this call, so orphans spread evenly.
/// Components are taken in name order. No live node means no moves (they wait).
pub fn failover_moves(
    current: &BTreeMap<String, Placement>,
    nodes: &[NodeLoad],
) -> Vec<(String, Placement)> {
    let mut loads = live_loads(nodes);
    let mut moves = Vec::new();
    for (name, placement) in current {
        if loads.contains_key(&placement.node) {
            continue;
        }
        let Some(target) = least_loaded(&loads) else {
            break;
        };
        if let Some(load) = loads.get_mut(&target) {
            *load += 1;
        }
        moves.push((name.clone(), placement.moved_to(target)));
    }
    moves
}

/// Gradual rebalancing (e.g. after a node joins): at most `max_moves` moves, each taking one
/// component from the most-loaded live node to the least-loaded one while their loads differ
/// by more than one; the generation of each moved component + 1. Load is `NodeLoad::actors`
/// adjusted by the moves decided in this call. The source is the most-loaded live node that
/// owns a component not yet moved in this call (ties to the lowest id); it gives up its
/// first such component in name order. Components on dead nodes are `failover_moves`' job and
/// stay put here. Each move narrows the gap it acts on, so the spread never grows.
pub fn rebalance_moves(
    current: &BTreeMap<String, Placement>,
    nodes: &[NodeLoad],
    max_moves: usize,
) -> Vec<(String, Placement)> {
    let mut loads = live_loads(nodes);
    // Movable components of each live node, in name order.
    let mut owned: BTreeMap<NodeId, BTreeSet<&String>> = BTreeMap::new();
    for (name, placement) in current {
        if loads.contains_key(&placement.node) {
            owned.entry(placement.node).or_default().insert(name);
        }
    }
    let mut moves = Vec::new();
    while moves.len() < max_moves {
        let Some(target) = least_loaded(&loads) else {
            break;
        };
        let target_load = loads.get(&target).copied().unwrap_or(0);
        let source = loads
            .iter()
            .filter(|(node, _)| owned.get(node).is_some_and(|set| !set.is_empty()))
            .max_by_key(|(node, load)| (**load, std::cmp::Reverse(**node)))
            .map(|(node, load)| (*node, *load));
        let Some((source, source_load)) = source else {
            break;
        };
        if source_load <= target_load.saturating_add(1) {
            break;
        }
        let Some(name) = owned.get_mut(&source).and_then(|set| set.pop_first()) else {
            break;
        };
        let Some(placement) = current.get(name) else {
            break;
        };
        if let Some(load) = loads.get_mut(&source) {
            *load -= 1;
        }
        if let Some(load) = loads.get_mut(&target) {
            *load += 1;
        }
        moves.push((name.clone(), placement.moved_to(target)));
    }
    moves
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

    fn table(entries: &[(&str, NodeId, u64)]) -> BTreeMap<String, Placement> {
        entries
            .iter()
            .map(|(name, node, generation)| {
                (
                    name.to_string(),
                    Placement {
                        node: *node,
                        generation: *generation,
                    },
                )
            })
            .collect()
    }

    /// `count` components named c00.. spread round-robin over `owners`, generation 1.
    fn spread(count: usize, owners: &[NodeId]) -> BTreeMap<String, Placement> {
        (0..count)
            .map(|i| {
                (
                    format!("c{i:02}"),
                    Placement::initial(owners[i % owners.len()]),
                )
            })
            .collect()
    }

    /// Node loads as the placement table says, with the given liveness.
    fn loads_of(current: &BTreeMap<String, Placement>, nodes: &[(NodeId, bool)]) -> Vec<NodeLoad> {
        nodes
            .iter()
            .map(|&(node, alive)| {
                let actors = current.values().filter(|p| p.node == node).count() as u64;
                load(node, alive, actors)
            })
            .collect()
    }

    fn apply(current: &mut BTreeMap<String, Placement>, moves: &[(String, Placement)]) {
        for (name, p) in moves {
            let old = current.insert(name.clone(), *p).unwrap();
            assert_eq!(p.generation, old.generation + 1, "{name}");
            assert_ne!(p.node, old.node, "{name}");
        }
    }

    fn counts(current: &BTreeMap<String, Placement>) -> BTreeMap<NodeId, usize> {
        let mut c = BTreeMap::new();
        for p in current.values() {
            *c.entry(p.node).or_default() += 1;
        }
        c
    }

    struct XorShift(u64);

    impl XorShift {
        fn below(&mut self, n: u64) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x % n
        }
    }

    #[test]
    fn failover_no_move_when_all_owners_alive() {
        let current = spread(9, &[1, 2, 3]);
        let nodes = loads_of(&current, &[(1, true), (2, true), (3, true)]);
        assert!(failover_moves(&current, &nodes).is_empty());
        assert!(failover_moves(&BTreeMap::new(), &nodes).is_empty());
    }

    #[test]
    fn failover_spreads_orphans_evenly() {
        let current = spread(10, &[9]);
        let nodes = [
            load(1, true, 0),
            load(2, true, 0),
            load(3, true, 0),
            load(9, false, 10),
        ];
        let moves = failover_moves(&current, &nodes);
        assert_eq!(moves.len(), 10);
        let mut after = current.clone();
        apply(&mut after, &moves);
        assert_eq!(counts(&after), BTreeMap::from([(1, 4), (2, 3), (3, 3)]));
        // Name order, round-robin from the lowest id.
        assert_eq!(
            moves[0],
            (
                "c00".to_owned(),
                Placement {
                    node: 1,
                    generation: 2
                }
            )
        );
        assert_eq!(moves[1].1.node, 2);
        assert_eq!(moves[2].1.node, 3);
    }

    #[test]
    fn failover_fills_the_least_loaded_first() {
        let current = spread(4, &[9]);
        let nodes = [load(1, true, 5), load(2, true, 2), load(9, false, 4)];
        let moves = failover_moves(&current, &nodes);
        let targets: Vec<NodeId> = moves.iter().map(|(_, p)| p.node).collect();
        // 2 goes 2→3→4→5, then the tie at 5 goes to node 1.
        assert_eq!(targets, [2, 2, 2, 1]);
    }

    #[test]
    fn failover_empties_dead_and_unknown_owners() {
        let mut current = spread(12, &[1, 2, 3]);
        current.insert(
            "stray".to_owned(),
            Placement {
                node: 42,
                generation: 7,
            },
        );
        let nodes = loads_of(&current, &[(1, true), (2, false), (3, true)]);
        let moves = failover_moves(&current, &nodes);
        assert_eq!(moves.len(), 5); // node 2's four and the one on non-member 42
        let mut after = current.clone();
        apply(&mut after, &moves);
        assert!(after.values().all(|p| p.node == 1 || p.node == 3));
        assert_eq!(after["stray"].generation, 8);
        // Untouched components keep their generation.
        assert_eq!(after["c00"], current["c00"]);
        // A second pass has nothing left to do.
        let nodes = loads_of(&after, &[(1, true), (2, false), (3, true)]);
        assert!(failover_moves(&after, &nodes).is_empty());
    }

    #[test]
    fn failover_without_live_node_moves_nothing() {
        let current = spread(3, &[1, 2]);
        assert!(failover_moves(&current, &[]).is_empty());
        assert!(failover_moves(&current, &[load(1, false, 2), load(2, false, 1)]).is_empty());
    }

    #[test]
    fn failover_generations_strictly_increase_over_repeated_failures() {
        let mut current = table(&[("a", 1, 1), ("b", 1, 5), ("c", 2, 3)]);
        for _ in 0..6 {
            // Kill whichever node owns "a"; the other two stay up.
            let dead = current["a"].node;
            let members: Vec<(NodeId, bool)> = (1..=3).map(|n| (n, n != dead)).collect();
            let before = current.clone();
            let moves = failover_moves(&current, &loads_of(&current, &members));
            assert!(moves.iter().any(|(name, _)| name == "a"));
            apply(&mut current, &moves); // checks generation + 1 and a new node for each
            for (name, p) in &current {
                assert!(p.generation >= before[name].generation);
                assert_ne!(p.node, dead);
            }
        }
        assert_eq!(current["a"].generation, 7);
    }

    #[test]
    fn failover_is_deterministic_under_input_order() {
        let mut current = spread(7, &[4]);
        current.extend(
            spread(3, &[1])
                .into_iter()
                .map(|(k, v)| (format!("x{k}"), v)),
        );
        let a = [
            load(1, true, 3),
            load(2, true, 0),
            load(3, true, 0),
            load(4, false, 7),
        ];
        let b = [a[3], a[2], a[0], a[1]];
        // Same table built in another insertion order.
        let reversed: BTreeMap<String, Placement> =
            current.iter().rev().map(|(k, v)| (k.clone(), *v)).collect();
        let expected = failover_moves(&current, &a);
        assert_eq!(failover_moves(&current, &b), expected);
        assert_eq!(failover_moves(&reversed, &b), expected);
        // A node listed twice is alive only if every entry says so.
        let c = [
            load(1, true, 3),
            load(2, true, 0),
            load(2, false, 0),
            load(3, true, 0),
        ];
        let d = [c[2], c[3], c[1], c[0]];
        assert_eq!(failover_moves(&current, &c), failover_moves(&current, &d));
        assert!(failover_moves(&current, &c)
            .iter()
            .all(|(_, p)| p.node != 2));
    }

    #[test]
    fn rebalance_gives_a_joining_node_its_share_gradually() {
        let mut current = spread(9, &[1, 2, 3]);
        let members = [(1, true), (2, true), (3, true), (4, true)];
        let first = rebalance_moves(&current, &loads_of(&current, &members), 1);
        assert_eq!(first.len(), 1);
        assert_eq!(
            first[0].1,
            Placement {
                node: 4,
                generation: 2
            }
        );
        // Most loaded is a tie at 3; the lowest id gives up its first component by name.
        assert_eq!(first[0].0, "c00");
        apply(&mut current, &first);
        let second = rebalance_moves(&current, &loads_of(&current, &members), 10);
        assert_eq!(second.len(), 1); // 2,3,3,1 → 2,2,3,2: one more step suffices
        apply(&mut current, &second);
        let c = counts(&current);
        let max = c.values().max().unwrap();
        let min = members
            .iter()
            .map(|(n, _)| c.get(n).copied().unwrap_or(0))
            .min()
            .unwrap();
        assert!(max - min <= 1, "{c:?}");
        assert!(rebalance_moves(&current, &loads_of(&current, &members), 10).is_empty());
    }

    #[test]
    fn rebalance_stops_at_max_moves_and_when_balanced() {
        let current = spread(20, &[1]);
        let nodes = loads_of(&current, &[(1, true), (2, true)]);
        assert!(rebalance_moves(&current, &nodes, 0).is_empty());
        assert_eq!(rebalance_moves(&current, &nodes, 3).len(), 3);
        let all = rebalance_moves(&current, &nodes, 100);
        assert_eq!(all.len(), 10);
        let balanced = spread(7, &[1, 2]);
        let nodes = loads_of(&balanced, &[(1, true), (2, true)]);
        assert!(rebalance_moves(&balanced, &nodes, 5).is_empty());
    }

    #[test]
    fn rebalance_ignores_dead_nodes() {
        let mut current = spread(6, &[1]);
        current.extend(
            spread(4, &[3])
                .into_iter()
                .map(|(k, v)| (format!("d{k}"), v)),
        );
        let nodes = loads_of(&current, &[(1, true), (2, true), (3, false)]);
        let moves = rebalance_moves(&current, &nodes, 10);
        assert_eq!(moves.len(), 3);
        assert!(moves
            .iter()
            .all(|(name, p)| p.node == 2 && current[name].node == 1));
        assert!(rebalance_moves(&current, &[load(1, false, 6)], 10).is_empty());
    }

    #[test]
    fn rebalance_never_worsens_imbalance() {
        let mut rng = XorShift(0xDEAD_BEEF_CAFE_F00D);
        for _ in 0..500 {
            let n_nodes = rng.below(5) + 1;
            let members: Vec<(NodeId, bool)> =
                (1..=n_nodes).map(|n| (n, rng.below(5) != 0)).collect();
            let mut current = BTreeMap::new();
            for i in 0..rng.below(40) {
                let owner = rng.below(n_nodes + 1) + 1; // sometimes a non-member
                current.insert(
                    format!("k{i}"),
                    Placement {
                        node: owner,
                        generation: rng.below(9) + 1,
                    },
                );
            }
            let nodes = loads_of(&current, &members);
            let live: Vec<NodeId> = members.iter().filter(|m| m.1).map(|m| m.0).collect();
            let spread_of = |t: &BTreeMap<String, Placement>| {
                let c = counts(t);
                let l: Vec<usize> = live
                    .iter()
                    .map(|n| c.get(n).copied().unwrap_or(0))
                    .collect();
                l.iter().max().copied().unwrap_or(0) - l.iter().min().copied().unwrap_or(0)
            };
            let max_moves = rng.below(6) as usize;
            let moves = rebalance_moves(&current, &nodes, max_moves);
            assert!(moves.len() <= max_moves);
            let names: BTreeSet<&String> = moves.iter().map(|(n, _)| n).collect();
            assert_eq!(names.len(), moves.len(), "a component moved twice");
            assert!(moves
                .iter()
                .all(|(n, p)| live.contains(&p.node) && live.contains(&current[n].node)));
            let before = spread_of(&current);
            let mut after = current.clone();
            apply(&mut after, &moves);
            assert!(spread_of(&after) <= before);
            if moves.len() < max_moves {
                assert!(spread_of(&after) <= 1, "stopped early while imbalanced");
            }
            // Failover on the same view also only targets live nodes, once per orphan.
            let fo = failover_moves(&current, &nodes);
            assert!(fo
                .iter()
                .all(|(n, p)| live.contains(&p.node) && !live.contains(&current[n].node)));
        }
    }

    #[test]
    fn rebalance_is_deterministic_under_input_order() {
        let current = spread(12, &[1, 2]);
        let a = loads_of(&current, &[(1, true), (2, true), (3, true), (4, true)]);
        let b = [a[2], a[3], a[1], a[0]];
        let reversed: BTreeMap<String, Placement> =
            current.iter().rev().map(|(k, v)| (k.clone(), *v)).collect();
        let expected = rebalance_moves(&current, &a, 4);
        assert_eq!(expected.len(), 4);
        assert_eq!(rebalance_moves(&current, &b, 4), expected);
        assert_eq!(rebalance_moves(&reversed, &b, 4), expected);
    }
}
