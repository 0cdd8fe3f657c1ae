//! Which actors this node must start or stop so that it runs exactly what the applied
//! registry gives it: a pure function over plain data. Stores are dropped only by the state
//! machine (when it applies a removal, and at open for one a crash interrupted): a plan made
//! before a reinstall was applied must never drop the new incarnation's store.

use airssys_cluster::Registry;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Stop the local actor (moved away, removed, or about to restart at a newer
    /// generation).
    Deactivate(String),
    /// The incarnation of this name that the actors here know ended (removed, perhaps
    /// installed again): they forget their counters and marks about it, so the next one
    /// starts fresh pairs.
    Forget(String),
    /// Every node keeps a store for every registered component.
    CreateStore(String),
    /// Start the actor at this generation.
    Activate { name: String, generation: u64 },
}

/// The incarnation of every registered name.
pub fn incarnations(registry: &Registry) -> BTreeMap<String, u64> {
    registry
        .components
        .iter()
        .map(|(name, e)| (name.clone(), e.incarnation))
        .collect()
}

/// Steps from what runs here (`local`: name → generation), the stores here and the
/// incarnations the previous reconcile saw (`seen`) to what the registry says. Stops come
/// before starts. An actor switching its code in place (`upgrading`) is left alone: its
/// generation changes by its own hand when the upgrade applies; a reconcile after the
/// switch deals with whatever the registry says then.
pub fn plan(
    me: u64,
    registry: &Registry,
    local: &BTreeMap<String, u64>,
    upgrading: &BTreeSet<String>,
    stores: &BTreeSet<String>,
    seen: &BTreeMap<String, u64>,
) -> Vec<Step> {
    let mut stops = Vec::new();
    let mut starts = Vec::new();
    for (name, &incarnation) in seen {
        let now = registry.components.get(name).map(|e| e.incarnation);
        if now != Some(incarnation) {
            stops.push(Step::Forget(name.clone()));
        }
    }
    for (name, &generation) in local {
        if upgrading.contains(name) {
            continue;
        }
        match registry.components.get(name) {
            Some(e) if e.owner == me && e.generation == generation => {}
            _ => stops.push(Step::Deactivate(name.clone())),
        }
    }
    for (name, entry) in &registry.components {
        if !stores.contains(name) {
            starts.push(Step::CreateStore(name.clone()));
        }
        if entry.owner == me
            && local.get(name) != Some(&entry.generation)
            && !upgrading.contains(name)
        {
            starts.push(Step::Activate {
                name: name.clone(),
                generation: entry.generation,
            });
        }
    }
    stops.extend(starts);
    stops
}

#[cfg(test)]
mod tests {
    use super::*;
    use airssys_cluster::{ComponentEntry, ComponentSpec};

    fn registry(entries: &[(&str, u64, u64)]) -> Registry {
        let mut r = Registry::default();
        for &(name, owner, generation) in entries {
            r.components.insert(
                name.to_string(),
                ComponentEntry {
                    commits: 0,
                    incarnation: generation,
                    external_seq: 0,
                    ended: Vec::new(),
                    spec: ComponentSpec {
                        name: name.to_string(),
                        sha256: "s".into(),
                        size_bytes: 1,
                        config: Vec::new(),
                        installed_at_ms: 0,
                    },
                    owner,
                    generation,
                },
            );
        }
        r
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_actor_switching_its_code_is_left_alone() {
        // The upgrade applied (generation 2) before the actor switched (it still runs 1).
        let reg = registry(&[("a", 1, 2)]);
        let local = BTreeMap::from([("a".to_string(), 1)]);
        let seen = incarnations(&reg);
        assert!(plan(1, &reg, &local, &set(&["a"]), &set(&["a"]), &seen).is_empty());
        // Not upgrading (it ended without switching): started again at the new generation.
        assert_eq!(
            plan(1, &reg, &local, &set(&[]), &set(&["a"]), &seen),
            vec![
                Step::Deactivate("a".into()),
                Step::Activate {
                    name: "a".into(),
                    generation: 2
                }
            ]
        );
    }

    #[test]
    fn starts_only_what_this_node_owns_and_keeps_every_store() {
        let reg = registry(&[("a", 1, 1), ("b", 2, 1)]);
        let steps = plan(
            1,
            &reg,
            &BTreeMap::new(),
            &set(&[]),
            &set(&[]),
            &BTreeMap::new(),
        );
        assert_eq!(
            steps,
            vec![
                Step::CreateStore("a".into()),
                Step::Activate {
                    name: "a".into(),
                    generation: 1
                },
                Step::CreateStore("b".into()),
            ]
        );
    }

    #[test]
    fn a_move_stops_the_old_owner_and_starts_the_new_one() {
        let reg = registry(&[("a", 2, 2)]);
        let running_on_1 = BTreeMap::from([("a".to_string(), 1)]);
        assert_eq!(
            plan(
                1,
                &reg,
                &running_on_1,
                &set(&[]),
                &set(&["a"]),
                &incarnations(&reg)
            ),
            vec![Step::Deactivate("a".into())]
        );
        assert_eq!(
            plan(
                2,
                &reg,
                &BTreeMap::new(),
                &set(&[]),
                &set(&["a"]),
                &incarnations(&reg)
            ),
            vec![Step::Activate {
                name: "a".into(),
                generation: 2
            }]
        );
    }

    #[test]
    fn a_newer_generation_on_the_same_node_restarts_the_actor() {
        let reg = registry(&[("a", 1, 3)]);
        let local = BTreeMap::from([("a".to_string(), 2)]);
        assert_eq!(
            plan(
                1,
                &reg,
                &local,
                &set(&[]),
                &set(&["a"]),
                &incarnations(&reg)
            ),
            vec![
                Step::Deactivate("a".into()),
                Step::Activate {
                    name: "a".into(),
                    generation: 3
                }
            ]
        );
    }

    #[test]
    fn removal_stops_the_actor_and_leaves_the_store_to_the_state_machine() {
        let reg = registry(&[]);
        let local = BTreeMap::from([("a".to_string(), 1)]);
        assert_eq!(
            plan(
                1,
                &reg,
                &local,
                &set(&[]),
                &set(&["a"]),
                &incarnations(&reg)
            ),
            vec![Step::Deactivate("a".into())]
        );
    }

    #[test]
    fn a_reinstall_is_forgotten_everywhere_and_restarted_on_its_owner() {
        // `a` was removed and installed again (incarnation 1 → 9) between two reconciles.
        let before = registry(&[("a", 1, 1), ("b", 2, 1)]);
        let seen = incarnations(&before);
        let after = registry(&[("a", 1, 9), ("b", 2, 1)]);
        let local = BTreeMap::from([("a".to_string(), 1)]);
        assert_eq!(
            plan(1, &after, &local, &set(&[]), &set(&["a", "b"]), &seen),
            vec![
                Step::Forget("a".into()),
                Step::Deactivate("a".into()),
                Step::Activate {
                    name: "a".into(),
                    generation: 9
                }
            ]
        );
        // A node that runs neither forgets too: its actors may have sent to `a`.
        assert_eq!(
            plan(
                3,
                &after,
                &BTreeMap::new(),
                &set(&[]),
                &set(&["a", "b"]),
                &seen
            ),
            vec![Step::Forget("a".into())]
        );
        // Removed and not installed again: forgotten and stopped.
        let gone = registry(&[("b", 2, 1)]);
        assert_eq!(
            plan(1, &gone, &local, &set(&[]), &set(&["a", "b"]), &seen),
            vec![Step::Forget("a".into()), Step::Deactivate("a".into())]
        );
    }

    #[test]
    fn in_sync_means_nothing_to_do() {
        let reg = registry(&[("a", 1, 4), ("b", 3, 1)]);
        let local = BTreeMap::from([("a".to_string(), 4)]);
        assert!(plan(
            1,
            &reg,
            &local,
            &set(&[]),
            &set(&["a", "b"]),
            &incarnations(&reg)
        )
        .is_empty());
    }
}
