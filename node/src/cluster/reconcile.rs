//! Which actors this node must start or stop so that it runs exactly what the applied
//! registry gives it: a pure function over plain data.

use airssys_cluster::Registry;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Stop the local actor (moved away, removed, or about to restart at a newer
    /// generation).
    Deactivate(String),
    /// Drop the store of a removed component.
    DropStore(String),
    /// Every node keeps a store for every registered component.
    CreateStore(String),
    /// Start the actor at this generation.
    Activate { name: String, generation: u64 },
}

/// Steps from what runs here (`local`: name → generation) and the stores here to what
/// the registry says. Stops come before starts.
pub fn plan(
    me: u64,
    registry: &Registry,
    local: &BTreeMap<String, u64>,
    stores: &BTreeSet<String>,
) -> Vec<Step> {
    let mut stops = Vec::new();
    let mut starts = Vec::new();
    for (name, &generation) in local {
        match registry.components.get(name) {
            Some(e) if e.owner == me && e.generation == generation => {}
            _ => stops.push(Step::Deactivate(name.clone())),
        }
    }
    for name in stores {
        if !registry.components.contains_key(name) {
            stops.push(Step::DropStore(name.clone()));
        }
    }
    for (name, entry) in &registry.components {
        if !stores.contains(name) {
            starts.push(Step::CreateStore(name.clone()));
        }
        if entry.owner == me && local.get(name) != Some(&entry.generation) {
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
    fn starts_only_what_this_node_owns_and_keeps_every_store() {
        let reg = registry(&[("a", 1, 1), ("b", 2, 1)]);
        let steps = plan(1, &reg, &BTreeMap::new(), &set(&[]));
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
            plan(1, &reg, &running_on_1, &set(&["a"])),
            vec![Step::Deactivate("a".into())]
        );
        assert_eq!(
            plan(2, &reg, &BTreeMap::new(), &set(&["a"])),
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
            plan(1, &reg, &local, &set(&["a"])),
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
    fn removal_stops_then_drops_the_store() {
        let reg = registry(&[]);
        let local = BTreeMap::from([("a".to_string(), 1)]);
        assert_eq!(
            plan(1, &reg, &local, &set(&["a"])),
            vec![Step::Deactivate("a".into()), Step::DropStore("a".into())]
        );
    }

    #[test]
    fn in_sync_means_nothing_to_do() {
        let reg = registry(&[("a", 1, 4), ("b", 3, 1)]);
        let local = BTreeMap::from([("a".to_string(), 4)]);
        assert!(plan(1, &reg, &local, &set(&["a", "b"])).is_empty());
    }
}
