//! Whether a batch may be applied, decided from plain data before RocksDB is touched: its fence
//! against the component's recorded placement, and the refusals that need no read (unknown
//! fenced component, sys write into the reserved keyspace).
//!
//! A fence's `commit`, `sequence` and `peers` are not checked here: ordering commits is the
//! replicated log's job, local storage ignores them.

use std::collections::HashMap;

use super::batch::{CommitBatch, Fence, Placement};
use crate::meta::is_reserved;
use crate::StorageError;

/// Decides whether a commit carrying `fence` may be applied given the component's `current`
/// placement. With no placement recorded the current generation is 0 and any node is accepted.
pub fn check_fence(current: Option<Placement>, fence: &Fence) -> Result<(), StorageError> {
    let current_gen = current.map_or(0, |p| p.generation);
    if fence.generation != current_gen {
        return Err(StorageError::StaleGeneration {
            component: fence.component.clone(),
            current: current_gen,
            got: fence.generation,
        });
    }
    match current {
        Some(p) if p.node_id != fence.node_id => Err(StorageError::WrongNode {
            component: fence.component.clone(),
            owner: p.node_id,
            got: fence.node_id,
        }),
        _ => Ok(()),
    }
}

/// The checks of `batch` that read nothing from the database, in the order they apply: a
/// fenced component must exist (be in `usage`) and match its entry in `placements`; no sys
/// write may touch the reserved prefix. Components written without a fence are checked
/// later, when their column family is opened.
pub(crate) fn admit(
    batch: &CommitBatch,
    placements: &HashMap<String, Placement>,
    usage: &HashMap<String, u64>,
) -> Result<(), StorageError> {
    if let Some(f) = &batch.fence {
        if !usage.contains_key(&f.component) {
            return Err(StorageError::UnknownComponent(f.component.clone()));
        }
        check_fence(placements.get(&f.component).copied(), f)?;
    }
    if batch.sys.iter().any(|(k, _)| is_reserved(k)) {
        return Err(StorageError::ReservedKey);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::usage_key;

    fn fence(node_id: u64, generation: u64) -> Fence {
        Fence {
            commit: 0,
            sequence: 0,
            peers: Vec::new(),
            component: "c".into(),
            node_id,
            generation,
        }
    }

    const PLACED: Placement = Placement {
        node_id: 2,
        generation: 5,
    };

    /// `c` is installed and placed on node 2 at generation 5.
    fn known() -> (HashMap<String, Placement>, HashMap<String, u64>) {
        (
            HashMap::from([("c".to_string(), PLACED)]),
            HashMap::from([("c".to_string(), 10)]),
        )
    }

    fn fenced(f: Fence) -> CommitBatch {
        CommitBatch {
            fence: Some(f),
            ..CommitBatch::default()
        }
    }

    #[test]
    fn fence_matches_current_placement() {
        assert_eq!(check_fence(Some(PLACED), &fence(2, 5)), Ok(()));
    }

    #[test]
    fn older_and_newer_generations_are_stale() {
        for got in [0, 4, 6] {
            assert_eq!(
                check_fence(Some(PLACED), &fence(2, got)),
                Err(StorageError::StaleGeneration {
                    component: "c".into(),
                    current: 5,
                    got
                })
            );
        }
    }

    #[test]
    fn right_generation_wrong_node_is_refused() {
        assert_eq!(
            check_fence(Some(PLACED), &fence(3, 5)),
            Err(StorageError::WrongNode {
                component: "c".into(),
                owner: 2,
                got: 3
            })
        );
    }

    #[test]
    fn a_stale_generation_is_reported_before_a_wrong_node() {
        assert!(matches!(
            check_fence(Some(PLACED), &fence(3, 4)),
            Err(StorageError::StaleGeneration {
                current: 5,
                got: 4,
                ..
            })
        ));
    }

    #[test]
    fn no_placement_means_generation_zero_any_node() {
        assert_eq!(check_fence(None, &fence(9, 0)), Ok(()));
        assert_eq!(
            check_fence(None, &fence(9, 1)),
            Err(StorageError::StaleGeneration {
                component: "c".into(),
                current: 0,
                got: 1
            })
        );
    }

    #[test]
    fn commit_and_sequence_numbers_are_not_checked_locally() {
        let f = Fence {
            commit: 7,
            sequence: 3,
            peers: vec![("other".into(), 99)],
            ..fence(2, 5)
        };
        assert_eq!(check_fence(Some(PLACED), &f), Ok(()));
        // The same numbers again are not a duplicate here either.
        assert_eq!(check_fence(Some(PLACED), &f), Ok(()));
    }

    #[test]
    fn admits_a_batch_whose_fence_matches() {
        let (placements, usage) = known();
        let mut b = fenced(fence(2, 5));
        b.sys.push((b"outbox/1".to_vec(), Some(b"m".to_vec())));
        assert_eq!(admit(&b, &placements, &usage), Ok(()));
    }

    #[test]
    fn admit_refuses_what_the_fence_refuses() {
        let (placements, usage) = known();
        assert!(matches!(
            admit(&fenced(fence(2, 4)), &placements, &usage),
            Err(StorageError::StaleGeneration { .. })
        ));
        assert!(matches!(
            admit(&fenced(fence(1, 5)), &placements, &usage),
            Err(StorageError::WrongNode { .. })
        ));
    }

    #[test]
    fn a_fence_on_an_unknown_component_is_refused() {
        let (placements, usage) = known();
        let f = Fence {
            component: "gone".into(),
            ..fence(2, 0)
        };
        assert_eq!(
            admit(&fenced(f), &placements, &usage),
            Err(StorageError::UnknownComponent("gone".into()))
        );
    }

    #[test]
    fn a_known_component_without_placement_takes_generation_zero() {
        let (_, usage) = known();
        assert_eq!(admit(&fenced(fence(7, 0)), &HashMap::new(), &usage), Ok(()));
    }

    #[test]
    fn sys_writes_into_the_reserved_prefix_are_refused() {
        let (placements, usage) = known();
        for value in [Some(b"0".to_vec()), None] {
            let b = CommitBatch::sys_only(vec![(b"ok".to_vec(), None), (usage_key("c"), value)]);
            assert_eq!(
                admit(&b, &placements, &usage),
                Err(StorageError::ReservedKey)
            );
        }
        let b = CommitBatch::sys_only(vec![(b"\xff".to_vec(), None)]);
        assert_eq!(admit(&b, &placements, &usage), Ok(()));
    }

    #[test]
    fn the_fence_is_checked_before_the_sys_keys() {
        let (placements, usage) = known();
        let mut b = fenced(fence(2, 6));
        b.sys.push((usage_key("c"), None));
        assert!(matches!(
            admit(&b, &placements, &usage),
            Err(StorageError::StaleGeneration { .. })
        ));
    }

    #[test]
    fn an_unfenced_batch_is_admitted_whatever_it_names() {
        let b = CommitBatch {
            components: vec![crate::ComponentWrites {
                component: "unknown".into(),
                ..Default::default()
            }],
            ..CommitBatch::default()
        };
        // Unknown components without a fence are refused when their column family is opened.
        assert_eq!(admit(&b, &HashMap::new(), &HashMap::new()), Ok(()));
    }
}
