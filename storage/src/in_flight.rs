//! [`InFlightWrites`]: a component's writes that are committing but not yet applied here.
//!
//! A pipelined actor starts its next handler while the previous one's commit is on its way
//! (fsync, Raft). That handler must read what the previous ones wrote, so its [`Txn`](crate::Txn)
//! reads through this layer before the committed store, and takes its usage base from here.
//!
//! Each recorded transaction has a tag (increasing per component). Once the commit of tag `t`
//! is applied to this node's store, [`InFlightWrites::applied_through`] drops every entry last
//! written by a tag `<= t`; the store then answers the same value, so a reader never sees a
//! gap. An entry rewritten by a later transaction keeps that later tag and stays.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use crate::ComponentWrites;

#[derive(Debug, Default)]
struct Layer {
    /// Key -> (value, `None` for a delete; tag of the last transaction that wrote it).
    writes: BTreeMap<Vec<u8>, (Option<Vec<u8>>, u64)>,
    /// The component's usage after the last recorded transaction, and its tag.
    usage: Option<(u64, u64)>,
}

/// Writes of one component's transactions whose commit has not been applied here yet.
#[derive(Debug, Default)]
pub struct InFlightWrites {
    layer: Mutex<Layer>,
}

/// What the layer says of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Not written by any transaction in flight: ask the store.
    Unknown,
    /// Written in flight: `None` when deleted.
    Written(Option<Vec<u8>>),
}

impl InFlightWrites {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Layer> {
        // The layer holds plain data: a panic elsewhere cannot leave it half-updated in a
        // way that matters more than losing the process, so a poisoned lock is still used.
        self.layer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a transaction handed to the committer under `tag`, with the component's usage
    /// once it applies (`Txn::usage_bytes` before `into_writes`).
    pub fn record(&self, tag: u64, writes: &ComponentWrites, usage_after: u64) {
        let mut layer = self.lock();
        for (k, v) in &writes.writes {
            layer.writes.insert(k.clone(), (v.clone(), tag));
        }
        layer.usage = Some((usage_after, tag));
    }

    /// The commits of every tag up to `tag` are applied to this node's store.
    pub fn applied_through(&self, tag: u64) {
        let mut layer = self.lock();
        layer.writes.retain(|_, (_, t)| *t > tag);
        if layer.usage.is_some_and(|(_, t)| t <= tag) {
            layer.usage = None;
        }
    }

    /// Forgets everything (the transactions in flight were refused and will not apply).
    pub fn clear(&self) {
        let mut layer = self.lock();
        layer.writes.clear();
        layer.usage = None;
    }

    /// True when nothing is in flight.
    pub fn is_empty(&self) -> bool {
        let layer = self.lock();
        layer.writes.is_empty() && layer.usage.is_none()
    }

    pub(crate) fn get(&self, key: &[u8]) -> Seen {
        match self.lock().writes.get(key) {
            Some((v, _)) => Seen::Written(v.clone()),
            None => Seen::Unknown,
        }
    }

    /// Like [`InFlightWrites::get`], the value's length only.
    pub(crate) fn value_len(&self, key: &[u8]) -> Option<Option<usize>> {
        self.lock()
            .writes
            .get(key)
            .map(|(v, _)| v.as_ref().map(Vec::len))
    }

    pub(crate) fn usage(&self) -> Option<u64> {
        self.lock().usage.map(|(u, _)| u)
    }

    /// Keys with `prefix` written in flight: `true` when present, `false` when deleted.
    pub(crate) fn with_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, bool)> {
        self.lock()
            .writes
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (v, _))| (k.clone(), v.is_some()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes(pairs: &[(&str, Option<&str>)]) -> ComponentWrites {
        ComponentWrites {
            component: "c".into(),
            writes: pairs
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec())))
                .collect(),
            usage_delta: 0,
        }
    }

    #[test]
    fn an_applied_tag_drops_only_what_no_later_transaction_rewrote() {
        let layer = InFlightWrites::new();
        layer.record(1, &writes(&[("a", Some("1")), ("b", Some("1"))]), 10);
        layer.record(2, &writes(&[("a", Some("2")), ("c", None)]), 12);
        assert_eq!(layer.get(b"a"), Seen::Written(Some(b"2".to_vec())));
        assert_eq!(layer.get(b"c"), Seen::Written(None));
        assert_eq!(layer.get(b"z"), Seen::Unknown);
        assert_eq!(layer.usage(), Some(12));

        layer.applied_through(1);
        assert_eq!(layer.get(b"b"), Seen::Unknown);
        assert_eq!(layer.get(b"a"), Seen::Written(Some(b"2".to_vec())));
        assert_eq!(layer.usage(), Some(12), "tag 2 is still in flight");

        layer.applied_through(2);
        assert!(layer.is_empty());
        assert_eq!(layer.usage(), None);
    }

    #[test]
    fn prefix_listing_reports_deletes_and_stops_at_the_prefix() {
        let layer = InFlightWrites::new();
        layer.record(
            1,
            &writes(&[("k/1", Some("x")), ("k/2", None), ("l/1", Some("y"))]),
            3,
        );
        assert_eq!(
            layer.with_prefix(b"k/"),
            vec![(b"k/1".to_vec(), true), (b"k/2".to_vec(), false)]
        );
        assert_eq!(layer.value_len(b"k/1"), Some(Some(1)));
        assert_eq!(layer.value_len(b"k/2"), Some(None));
        assert_eq!(layer.value_len(b"k/3"), None);
        layer.clear();
        assert!(layer.is_empty());
    }
}
