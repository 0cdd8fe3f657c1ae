//! What one component keeps across instance restarts on this node: identity, limits,
//! placement (node id + generation, the fencing token every commit carries), its
//! compiled code, durable sequence numbers, de-duplication marks and its commit pipeline.
//!
//! Marks and pair numbers are tentative: they include the transactions still in the
//! pipeline, so a handler that starts while earlier commits are in flight numbers and judges
//! after them. A failed commit drops everything behind it; the marks are then reloaded from
//! storage ([`ComponentShared::reload_marks`]).

use super::pipeline::CommitPipeline;
use crate::api::{Delivery, Limits};
use crate::commit::Committer;
use crate::engine::Prepared;
use crate::messaging::keys;
use crate::messaging::{Address, Router};
use airssys_storage::{Storage, StorageError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Request ids with this bit set are fast (memory-only) requests; below it, durable
/// requests use the component's persisted sequence, so ids never repeat across
/// restarts in either class.
pub const FAST_REQUEST_BIT: u64 = 1 << 63;

pub struct ComponentShared {
    pub name: String,
    pub limits: Limits,
    pub node_id: u64,
    pub generation: AtomicU64,
    pub prepared: Prepared,
    pub storage: Storage,
    pub router: Arc<Router>,
    /// Where its transactions go.
    pub committer: Arc<dyn Committer>,
    /// Set when a commit was refused because the component moved on: no new instance starts.
    pub fenced: AtomicBool,
    /// Last durable sequence number handed out (persisted with each commit that
    /// uses one).
    last_seq: AtomicU64,
    fast_requests: AtomicU64,
    /// Random per-activation salt for fast request ids.
    fast_salt: u64,
    /// Highest durable seq consumed per sender (commits in flight included).
    dedup: Mutex<HashMap<String, u64>>,
    /// Last durable seq numbered per receiver (commits in flight included): durable
    /// messages on a pair are numbered 1, 2, 3… with no gaps, so a receiver can refuse one
    /// that overtook another.
    pair_seqs: Mutex<HashMap<String, u64>>,
    /// Crashes since this activation started.
    pub restarts: AtomicU32,
    /// Where its handlers' transactions wait for their commit.
    pub pipeline: CommitPipeline,
}

/// The de-dup marks (per sender) and pair counters (per receiver) stored for `name`.
type Marks = (HashMap<String, u64>, HashMap<String, u64>);

fn load_marks(storage: &Storage, name: &str) -> Result<Marks, StorageError> {
    let by_suffix = |prefix: Vec<u8>| -> Result<HashMap<String, u64>, StorageError> {
        let mut out = HashMap::new();
        for (key, value) in storage.sys_scan_prefix(&prefix)? {
            let other = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            if let Some(seq) = keys::decode_u64(&value) {
                out.insert(other, seq);
            }
        }
        Ok(out)
    };
    Ok((
        by_suffix(keys::dedup_for_receiver(name))?,
        by_suffix(keys::pair_seqs_of(name))?,
    ))
}

impl ComponentShared {
    /// Loads the component's sequence counter and de-dup marks from storage and starts its
    /// commit pipeline (on the current tokio runtime).
    #[allow(clippy::too_many_arguments)] // one constructor, each argument a distinct part
    pub fn load(
        name: String,
        limits: Limits,
        node_id: u64,
        generation: u64,
        prepared: Prepared,
        storage: Storage,
        router: Arc<Router>,
        committer: Arc<dyn Committer>,
    ) -> Result<ComponentShared, StorageError> {
        let last_seq = storage
            .sys_get(&keys::seq(&name))?
            .and_then(|v| keys::decode_u64(&v))
            .unwrap_or(0);
        let (dedup, pair_seqs) = load_marks(&storage, &name)?;
        Ok(ComponentShared {
            name,
            limits,
            node_id,
            generation: AtomicU64::new(generation),
            prepared,
            storage,
            router,
            committer,
            fenced: AtomicBool::new(false),
            last_seq: AtomicU64::new(last_seq),
            fast_requests: AtomicU64::new(0),
            fast_salt: (rand::random::<u32>() as u64 & 0x7fff_ffff) << 32,
            dedup: Mutex::new(dedup),
            pair_seqs: Mutex::new(pair_seqs),
            restarts: AtomicU32::new(0),
            pipeline: CommitPipeline::start(),
        })
    }

    /// Replaces the tentative marks and counters with the committed ones (after a failed
    /// commit dropped the transactions that had moved them on).
    pub fn reload_marks(&self) -> Result<(), StorageError> {
        let (dedup, pair_seqs) = load_marks(&self.storage, &self.name)?;
        if let Ok(mut d) = self.dedup.lock() {
            *d = dedup;
        }
        if let Ok(mut p) = self.pair_seqs.lock() {
            *p = pair_seqs;
        }
        Ok(())
    }

    /// Puts every durable request still pending in storage back on the router's waiting
    /// table, with its stored deadline (one already waiting keeps its clock).
    pub fn restore_pending_requests(&self) -> Result<(), StorageError> {
        let me = Address::Component(self.name.clone());
        let now = crate::clock::now_ms();
        for (key, value) in self
            .storage
            .sys_scan_prefix(&keys::pending_for(&self.name))?
        {
            let (Some(id), Some(deadline_ms)) = (keys::pending_id(&key), keys::decode_u64(&value))
            else {
                continue;
            };
            let left = std::time::Duration::from_millis(deadline_ms.saturating_sub(now));
            self.router
                .restore_request(me.clone(), id, std::time::Instant::now() + left);
        }
        Ok(())
    }

    /// A fresh durable sequence number (used for durable messages and ids of durable
    /// requests). Numbers burned by a rolled-back handler are never reused.
    pub fn next_seq(&self) -> u64 {
        self.last_seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Relaxed)
    }

    pub fn next_request_id(&self, delivery: Delivery) -> u64 {
        match delivery {
            Delivery::Durable => self.next_seq(),
            Delivery::Fast => {
                let n = self.fast_requests.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff;
                FAST_REQUEST_BIT | self.fast_salt | n
            }
        }
    }

    /// What a durable message with this (sender, seq) is to the receiver.
    ///
    /// A sender not in the marks yet is looked up in storage: a removed sender's
    /// messages arrive under its former name with the mark the removal stored for it.
    pub fn arrival(&self, sender: &str, seq: u64) -> Arrival {
        let mut last = self.dedup.lock().ok().and_then(|d| d.get(sender).copied());
        if last.is_none() {
            let stored = self
                .storage
                .sys_get(&keys::dedup(&self.name, sender))
                .ok()
                .flatten()
                .and_then(|v| keys::decode_u64(&v));
            if let (Some(mark), Ok(mut d)) = (stored, self.dedup.lock()) {
                last = Some(*d.entry(sender.to_string()).or_insert(mark));
            }
        }
        classify_arrival(last, seq)
    }

    /// A handler's tentative pair numbering: taken from the counters, adopted when its
    /// transaction goes to the pipeline (a rolled-back handler leaves no gap).
    pub fn pair_numbering(&self) -> PairNumbering {
        PairNumbering {
            taken: HashMap::new(),
        }
    }

    /// The last number given on the pair (this component → `receiver`), commits in flight
    /// included.
    pub fn last_pair_seq(&self, receiver: &str) -> u64 {
        self.pair_seqs
            .lock()
            .ok()
            .and_then(|m| m.get(receiver).copied())
            .unwrap_or(0)
    }

    pub fn adopt_pair_numbering(&self, numbering: PairNumbering) {
        if let Ok(mut m) = self.pair_seqs.lock() {
            m.extend(numbering.taken);
        }
    }

    /// Forgets every counter and mark shared with `peer` (removed: a component installed
    /// later under that name starts a fresh pair). Returns the storage deletes.
    pub fn forget_peer(&self, peer: &str) -> Vec<Vec<u8>> {
        if let Ok(mut m) = self.pair_seqs.lock() {
            m.remove(peer);
        }
        if let Ok(mut d) = self.dedup.lock() {
            d.remove(peer);
        }
        vec![
            keys::pair_seq(&self.name, peer),
            keys::dedup(&self.name, peer),
        ]
    }

    /// Records a consumption when its transaction goes to the pipeline.
    pub fn mark_consumed(&self, sender: &str, seq: u64) {
        if let Ok(mut d) = self.dedup.lock() {
            let last = d.entry(sender.to_string()).or_insert(0);
            *last = (*last).max(seq);
        }
    }

    /// Storage caps of this component's handler transactions.
    pub fn txn_limits(&self) -> airssys_storage::TxnLimits {
        airssys_storage::TxnLimits {
            max_key_bytes: super::actor::MAX_KEY_BYTES,
            max_value_bytes: super::actor::MAX_VALUE_BYTES,
            quota_bytes: self.limits.quota_mb.saturating_mul(1 << 20),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }
}

/// How a durable message stands against what its receiver consumed from that sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next one: handle it.
    Next,
    /// Consumed before (a resend or replay): only acknowledge it.
    Duplicate,
    /// An earlier one is missing (it was lost on the way and will be sent again):
    /// leave this one for later, unacknowledged.
    Early,
}

/// Pair numbers have no gaps and start at 1. Marks travel with the component's state (they
/// are replicated, and a removal deletes both ends of every pair), so no mark means nothing
/// was consumed from that sender yet.
pub fn classify_arrival(last_consumed: Option<u64>, seq: u64) -> Arrival {
    let last = last_consumed.unwrap_or(0);
    if seq <= last {
        Arrival::Duplicate
    } else if seq == last + 1 {
        Arrival::Next
    } else {
        Arrival::Early
    }
}

/// Pair sequence numbers a handler takes, per receiver.
pub struct PairNumbering {
    taken: HashMap<String, u64>,
}

impl PairNumbering {
    /// The next number on the pair (this component → `receiver`); `committed` gives the
    /// last one committed, asked only for a receiver this handler has not sent to yet.
    pub fn take(&mut self, receiver: &str, committed: impl FnOnce(&str) -> u64) -> u64 {
        let last = match self.taken.get(receiver) {
            Some(&n) => n,
            None => committed(receiver),
        };
        self.taken.insert(receiver.to_string(), last + 1);
        last + 1
    }

    /// The counters to persist with the handler's commit.
    pub fn writes(&self, sender: &str) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.taken
            .iter()
            .map(|(r, n)| (keys::pair_seq(sender, r), Some(keys::encode_u64(*n))))
            .collect()
    }
}

/// True for ids of durable requests (their pending record lives in storage).
pub fn is_durable_request(id: u64) -> bool {
    id & FAST_REQUEST_BIT == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_are_judged_against_the_last_consumed() {
        assert_eq!(classify_arrival(None, 1), Arrival::Next);
        // No mark: message 1 has not been consumed, so 57 is early.
        assert_eq!(classify_arrival(None, 57), Arrival::Early);
        assert_eq!(classify_arrival(Some(4), 5), Arrival::Next);
        assert_eq!(classify_arrival(Some(4), 4), Arrival::Duplicate);
        assert_eq!(classify_arrival(Some(4), 1), Arrival::Duplicate);
        assert_eq!(classify_arrival(Some(4), 7), Arrival::Early);
    }

    #[test]
    fn numbering_is_gapless_per_receiver_and_tentative() {
        let committed = HashMap::from([("b".to_string(), 7)]);
        let last = |r: &str| committed.get(r).copied().unwrap_or(0);
        let mut n = PairNumbering {
            taken: HashMap::new(),
        };
        assert_eq!(n.take("b", last), 8);
        assert_eq!(n.take("b", last), 9);
        assert_eq!(n.take("c", last), 1);
        let mut w = n.writes("a");
        w.sort();
        assert_eq!(
            w,
            vec![
                (keys::pair_seq("a", "b"), Some(keys::encode_u64(9))),
                (keys::pair_seq("a", "c"), Some(keys::encode_u64(1))),
            ]
        );
    }
}
