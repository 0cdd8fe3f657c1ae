//! The plain data of a commit: what one batch writes, the fence it carries, and the placement
//! that fence is checked against. Nothing here touches RocksDB.

/// One atomic commit: a handler's component writes, the node's sys writes (outbox entries,
/// de-duplication marks, registry records …) and an optional placement fence. All of it becomes
/// durable together or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommitBatch {
    /// When set, the batch is refused unless the fence matches the component's current placement.
    pub fence: Option<Fence>,
    /// Writes to component column families.
    pub components: Vec<ComponentWrites>,
    /// Writes to the sys column family; `None` deletes the key.
    pub sys: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl CommitBatch {
    /// A batch of system-keyspace writes only: no component writes, no fence.
    pub fn sys_only(sys: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> CommitBatch {
        CommitBatch {
            fence: None,
            components: Vec::new(),
            sys,
        }
    }

    /// Whether the batch writes nothing at all.
    pub fn is_empty(&self) -> bool {
        self.sys.is_empty() && self.components.iter().all(|c| c.writes.is_empty())
    }

    /// Bytes of keys and values carried.
    pub fn approx_bytes(&self) -> usize {
        fn sum(w: &[(Vec<u8>, Option<Vec<u8>>)]) -> usize {
            w.iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
                .sum()
        }
        sum(&self.sys)
            + self
                .components
                .iter()
                .map(|c| sum(&c.writes))
                .sum::<usize>()
    }
}

/// The writes of one component within a commit (what [`Txn::into_writes`](crate::Txn::into_writes)
/// returns).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ComponentWrites {
    /// The component whose column family is written.
    pub component: String,
    /// Key writes in key order; `None` deletes the key.
    pub writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Change of the component's usage (sum of key + value lengths) these writes cause, as
    /// the writer computed it (its own quota check). Storage does not trust it: applying a
    /// commit recomputes the change from what is stored.
    pub usage_delta: i64,
}

/// A placement fencing token carried by a commit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fence {
    /// The component whose placement is checked.
    pub component: String,
    /// The node that ran the handler.
    pub node_id: u64,
    /// The placement generation the handler ran under.
    pub generation: u64,
    /// The component's commit number when a replicated log orders commits (each must be the
    /// previous one + 1, so a commit retried after an unknown outcome applies once); 0: not
    /// numbered. Local storage ignores it.
    #[serde(default)]
    pub commit: u64,
    /// For an external client's durable message: its number on the pair (external client →
    /// component). A replicated log applies it only as the next number after the last one
    /// applied, so a number is never used twice, even after an earlier send whose outcome
    /// was unknown applied late; 0: not numbered. Local storage ignores it.
    #[serde(default)]
    pub sequence: u64,
    /// The components this commit numbers durable messages to, each with the incarnation
    /// its numbering belongs to. A replicated log refuses the commit when one of them is no
    /// longer that incarnation (removed, perhaps installed again): numbers given for an
    /// ended incarnation would leave the new one waiting for messages that never come.
    /// Local storage ignores it.
    #[serde(default)]
    pub peers: Vec<(String, u64)>,
}

/// A component's current placement, as recorded by
/// [`Storage::set_generation`](crate::Storage::set_generation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// The node that holds the component's actor.
    pub node_id: u64,
    /// The placement generation (fencing token).
    pub generation: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_size_and_emptiness() {
        let mut b = CommitBatch::default();
        assert!(b.is_empty());
        b.components.push(ComponentWrites {
            component: "a".into(),
            writes: vec![
                (b"k".to_vec(), Some(b"vv".to_vec())),
                (b"kk".to_vec(), None),
            ],
            usage_delta: 0,
        });
        b.sys.push((b"s".to_vec(), Some(b"1234".to_vec())));
        assert!(!b.is_empty());
        assert_eq!(b.approx_bytes(), 3 + 2 + 5);
    }

    #[test]
    fn a_component_entry_without_writes_is_still_empty() {
        let b = CommitBatch {
            components: vec![ComponentWrites {
                component: "a".into(),
                writes: Vec::new(),
                usage_delta: 5,
            }],
            ..CommitBatch::default()
        };
        assert!(b.is_empty());
        assert_eq!(b.approx_bytes(), 0);
    }
}
