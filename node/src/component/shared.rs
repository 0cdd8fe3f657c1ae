//! What one component keeps across instance restarts on this node: identity, limits,
//! placement (node id + generation, the fencing token every commit carries), its
//! compiled code, durable sequence numbers, de-duplication marks and its commit pipeline.
//!
//! Marks and pair numbers are tentative: they include the transactions still in the
//! pipeline, so a handler that starts while earlier commits are in flight numbers and judges
//! after them. A failed commit drops everything behind it; the marks are then reloaded from
//! storage ([`ComponentShared::reload_marks`]).

use super::pipeline::{CommitPipeline, CommitTarget};
use super::upgrade::Code;
use super::Prepared;
use crate::api::{Delivery, Limits};
use crate::commit::Committer;
use crate::messaging::keys::{self, Mark};
use crate::messaging::{Address, Router};
use airssys_storage::{Storage, StorageError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Request ids with this bit set are fast (memory-only) requests; below it, durable
/// requests use the component's persisted sequence, so ids never repeat across
/// restarts in either class.
pub const FAST_REQUEST_BIT: u64 = 1 << 63;

pub struct ComponentShared {
    pub name: String,
    /// The incarnation of the name this is (the Raft index of its install; its
    /// generation at install on a single node): carried by every message it sends.
    pub incarnation: u64,
    pub node_id: u64,
    /// Shared with the pipeline's [`CommitTarget`], which fences each commit with it.
    pub generation: Arc<AtomicU64>,
    /// The code it runs and its limits; replaced by an upgrade.
    code: RwLock<Arc<Code>>,
    pub storage: Storage,
    pub router: Arc<Router>,
    /// Where its transactions go.
    pub committer: Arc<dyn Committer>,
    /// Set when a commit was refused because the component moved on: no new instance starts.
    /// Shared with the pipeline's [`CommitTarget`], which sets it.
    pub fenced: Arc<AtomicBool>,
    /// Last durable sequence number handed out (persisted with each commit that
    /// uses one).
    last_seq: AtomicU64,
    fast_requests: AtomicU64,
    /// Random per-activation salt for fast request ids.
    fast_salt: u64,
    /// Highest durable seq consumed per sender, with the sender's incarnation (commits in
    /// flight included).
    dedup: Mutex<HashMap<String, Mark>>,
    /// Last durable seq numbered per receiver, with the receiver incarnation it was numbered
    /// for (commits in flight included): durable messages on a pair are numbered 1, 2, 3…
    /// with no gaps, so a receiver can refuse one that overtook another.
    pair_seqs: Mutex<HashMap<String, Mark>>,
    /// Crashes since this activation started.
    pub restarts: AtomicU32,
    /// How much it may log; shared by its instances, so a restart does not refill it.
    pub log_budget: Arc<crate::engine::log_budget::LogBudget>,
    /// Where its handlers' transactions wait for their commit.
    pub pipeline: CommitPipeline,
    /// Its idempotency records, those of commits in flight included.
    pub recent_keys: super::recent_keys::RecentKeys,
}

/// The de-dup marks (per sender) and pair counters (per receiver) stored for `name`.
type Marks = (HashMap<String, Mark>, HashMap<String, Mark>);

fn load_marks(storage: &Storage, name: &str) -> Result<Marks, StorageError> {
    let by_suffix = |prefix: Vec<u8>| -> Result<HashMap<String, Mark>, StorageError> {
        let mut out = HashMap::new();
        for (key, value) in storage.sys_scan_prefix(&prefix)? {
            let other = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            if let Some(mark) = keys::decode_mark(&value) {
                out.insert(other, mark);
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
        incarnation: u64,
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
        let generation = Arc::new(AtomicU64::new(generation));
        let fenced = Arc::new(AtomicBool::new(false));
        let pipeline = CommitPipeline::start(CommitTarget {
            name: name.clone(),
            node_id,
            generation: generation.clone(),
            committer: committer.clone(),
            router: router.clone(),
            fenced: fenced.clone(),
        });
        Ok(ComponentShared {
            name,
            incarnation,
            node_id,
            generation,
            code: RwLock::new(Arc::new(Code { prepared, limits })),
            storage,
            router,
            committer,
            fenced,
            last_seq: AtomicU64::new(last_seq),
            fast_requests: AtomicU64::new(0),
            fast_salt: (rand::random::<u32>() as u64 & 0x7fff_ffff) << 32,
            dedup: Mutex::new(dedup),
            pair_seqs: Mutex::new(pair_seqs),
            restarts: AtomicU32::new(0),
            log_budget: Arc::default(),
            pipeline,
            recent_keys: Default::default(),
        })
    }

    /// Starts again from what is committed after a failed commit dropped the transactions
    /// behind it: a new pipeline epoch forgets their writes, and the tentative marks and
    /// pending requests are reloaded from storage. Call with no handler running.
    ///
    /// A dropped callback had already taken its request off the router's waiting table; the
    /// request is still pending in storage (its callback did not commit), so it is put back
    /// with its stored deadline and the redelivered reply is handled, not taken as late.
    pub fn reset_after_failure(&self) -> Result<(), String> {
        self.pipeline.reset();
        self.recent_keys.forget_in_flight();
        self.reload_marks()
            .map_err(|e| format!("cannot reload the component's marks: {e}"))?;
        self.restore_pending_requests()
            .map_err(|e| format!("cannot reload the component's pending requests: {e}"))
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
    pub fn arrival(&self, sender: &str, sender_incarnation: u64, seq: u64) -> Arrival {
        let mut last = self.dedup.lock().ok().and_then(|d| d.get(sender).copied());
        if last.is_none() {
            let stored = self
                .storage
                .sys_get(&keys::dedup(&self.name, sender))
                .ok()
                .flatten()
                .and_then(|v| keys::decode_mark(&v));
            if let (Some(mark), Ok(mut d)) = (stored, self.dedup.lock()) {
                last = Some(*d.entry(sender.to_string()).or_insert(mark));
            }
        }
        classify_arrival(last, sender_incarnation, seq)
    }

    /// A handler's tentative pair numbering: taken from the counters, adopted when its
    /// transaction goes to the pipeline (a rolled-back handler leaves no gap).
    /// The last number given on the pair (this component → incarnation `incarnation` of
    /// `receiver`), commits in flight included: 0 when the last one was given to another
    /// incarnation (a new one starts its pairs afresh).
    pub fn last_pair_seq(&self, receiver: &str, incarnation: u64) -> u64 {
        self.pair_seqs
            .lock()
            .ok()
            .and_then(|m| m.get(receiver).copied())
            .filter(|m| same_incarnation(m.incarnation, incarnation))
            .map_or(0, |m| m.seq)
    }

    /// The incarnation of `receiver` a durable message to it is numbered for now.
    pub fn receiver_incarnation(&self, receiver: &str) -> u64 {
        self.committer.incarnation_of(receiver).unwrap_or(0)
    }

    /// Makes a handler's numbering the current one; returns the peers (receiver and the
    /// incarnation numbered for) its commit must be checked against.
    pub fn adopt_pair_numbering(&self, numbering: PairNumbering) -> Vec<(String, u64)> {
        let peers = numbering.peers();
        if let Ok(mut m) = self.pair_seqs.lock() {
            m.extend(numbering.taken);
        }
        peers
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
    pub fn mark_consumed(&self, sender: &str, sender_incarnation: u64, seq: u64) {
        if let Ok(mut d) = self.dedup.lock() {
            let next = Mark {
                incarnation: sender_incarnation,
                seq,
            };
            d.entry(sender.to_string())
                .and_modify(|last| *last = advance_mark(*last, next))
                .or_insert(next);
        }
    }

    /// Storage caps of this component's handler transactions.
    pub fn txn_limits(&self) -> airssys_storage::TxnLimits {
        airssys_storage::TxnLimits {
            max_key_bytes: super::caps::MAX_KEY_BYTES,
            max_value_bytes: super::caps::MAX_VALUE_BYTES,
            quota_bytes: self.code().limits.quota_mb.saturating_mul(1 << 20),
        }
    }

    /// The code it runs now.
    pub fn code(&self) -> Arc<Code> {
        match self.code.read() {
            Ok(code) => code.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Switches to new code (an upgrade): instances made from now on run it.
    pub fn set_code(&self, code: Arc<Code>) {
        match self.code.write() {
            Ok(mut now) => *now = code,
            Err(poisoned) => *poisoned.into_inner() = code,
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
    /// From an incarnation of the sender older than one already heard from (sent before
    /// a removal): ignore it. What such a sender left unconsumed was stored again under its
    /// former name and arrives under that name.
    Stale,
    /// An earlier one is missing (it was lost on the way and will be sent again):
    /// leave this one for later, unacknowledged.
    Early,
}

/// True when two incarnations are the same one; 0 is "not known" (written by earlier
/// builds, or an external client) and matches any.
fn same_incarnation(a: u64, b: u64) -> bool {
    a == b || a == 0 || b == 0
}

/// The mark after consuming `next`: a newer incarnation of the sender starts afresh.
fn advance_mark(last: Mark, next: Mark) -> Mark {
    if same_incarnation(last.incarnation, next.incarnation) {
        Mark {
            incarnation: last.incarnation.max(next.incarnation),
            seq: last.seq.max(next.seq),
        }
    } else if next.incarnation > last.incarnation {
        next
    } else {
        last
    }
}

/// Pair numbers have no gaps and start at 1, per incarnation of the sender. Marks travel
/// with the component's state (they are replicated, and a removal deletes both ends of every
/// pair), so no mark means nothing was consumed from that sender yet.
pub fn classify_arrival(last_consumed: Option<Mark>, sender_incarnation: u64, seq: u64) -> Arrival {
    let last = match last_consumed {
        None => 0,
        Some(m) if same_incarnation(m.incarnation, sender_incarnation) => m.seq,
        // A newer incarnation of the sender: nothing consumed from it yet.
        Some(m) if sender_incarnation > m.incarnation => 0,
        Some(_) => return Arrival::Stale,
    };
    if seq <= last {
        Arrival::Duplicate
    } else if seq == last + 1 {
        Arrival::Next
    } else {
        Arrival::Early
    }
}

/// A handler's transaction reads the pairs through this (see `transaction.rs`).
impl super::transaction::PairBook for ComponentShared {
    fn receiver_incarnation(&self, receiver: &str) -> u64 {
        ComponentShared::receiver_incarnation(self, receiver)
    }

    fn last_pair_seq(&self, receiver: &str, incarnation: u64) -> u64 {
        ComponentShared::last_pair_seq(self, receiver, incarnation)
    }
}

/// Pair sequence numbers a handler takes, per receiver, each for one incarnation of it.
#[derive(Default)]
pub struct PairNumbering {
    taken: HashMap<String, Mark>,
}

impl PairNumbering {
    /// The next number on the pair (this component → `receiver`). The first number a
    /// handler takes for a receiver fixes the incarnation (`incarnation`, asked then) its
    /// numbers are for, and `committed` gives the last one given to that incarnation.
    pub fn take(
        &mut self,
        receiver: &str,
        incarnation: impl FnOnce(&str) -> u64,
        committed: impl FnOnce(&str, u64) -> u64,
    ) -> u64 {
        let next = match self.taken.get(receiver) {
            Some(m) => Mark {
                incarnation: m.incarnation,
                seq: m.seq + 1,
            },
            None => {
                let incarnation = incarnation(receiver);
                Mark {
                    incarnation,
                    seq: committed(receiver, incarnation) + 1,
                }
            }
        };
        self.taken.insert(receiver.to_string(), next);
        next.seq
    }

    /// The counters to persist with the handler's commit.
    pub fn writes(&self, sender: &str) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.taken
            .iter()
            .map(|(r, m)| (keys::pair_seq(sender, r), Some(keys::encode_mark(*m))))
            .collect()
    }

    /// The receivers numbered for, each with its incarnation (0: not installed as far as
    /// this node knows), for the commit's fence. A removed sender's former name (a reply
    /// to it) is left out: no incarnation of it lives, nor ever will.
    pub fn peers(&self) -> Vec<(String, u64)> {
        let mut peers: Vec<(String, u64)> = self
            .taken
            .iter()
            .filter(|(r, _)| keys::is_live_name(r))
            .map(|(r, m)| (r.clone(), m.incarnation))
            .collect();
        peers.sort();
        peers
    }
}

/// True for ids of durable requests (their pending record lives in storage).
pub fn is_durable_request(id: u64) -> bool {
    id & FAST_REQUEST_BIT == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(incarnation: u64, seq: u64) -> Option<Mark> {
        Some(Mark { incarnation, seq })
    }

    #[test]
    fn arrivals_are_judged_against_the_last_consumed() {
        assert_eq!(classify_arrival(None, 3, 1), Arrival::Next);
        // No mark: message 1 has not been consumed, so 57 is early.
        assert_eq!(classify_arrival(None, 3, 57), Arrival::Early);
        assert_eq!(classify_arrival(mark(3, 4), 3, 5), Arrival::Next);
        assert_eq!(classify_arrival(mark(3, 4), 3, 4), Arrival::Duplicate);
        assert_eq!(classify_arrival(mark(3, 4), 3, 1), Arrival::Duplicate);
        assert_eq!(classify_arrival(mark(3, 4), 3, 7), Arrival::Early);
    }

    #[test]
    fn a_new_incarnation_of_the_sender_starts_afresh_and_an_old_one_is_stale() {
        // Sender reinstalled (incarnation 3 → 9): its message 1 is new, not a repeat.
        assert_eq!(classify_arrival(mark(3, 4), 9, 1), Arrival::Next);
        assert_eq!(classify_arrival(mark(3, 4), 9, 2), Arrival::Early);
        // A message of incarnation 3 after 9 was heard from: neither handled nor acknowledged.
        assert_eq!(classify_arrival(mark(9, 1), 3, 5), Arrival::Stale);
        // Incarnation 0 (marks of earlier builds, external clients) matches any.
        assert_eq!(classify_arrival(mark(0, 4), 9, 5), Arrival::Next);
        assert_eq!(classify_arrival(mark(9, 4), 0, 4), Arrival::Duplicate);
    }

    #[test]
    fn consuming_from_a_newer_incarnation_replaces_the_mark() {
        assert_eq!(
            advance_mark(
                Mark {
                    incarnation: 3,
                    seq: 4
                },
                Mark {
                    incarnation: 3,
                    seq: 5
                }
            ),
            Mark {
                incarnation: 3,
                seq: 5
            }
        );
        assert_eq!(
            advance_mark(
                Mark {
                    incarnation: 3,
                    seq: 4
                },
                Mark {
                    incarnation: 9,
                    seq: 1
                }
            ),
            Mark {
                incarnation: 9,
                seq: 1
            }
        );
        assert_eq!(
            advance_mark(
                Mark {
                    incarnation: 9,
                    seq: 1
                },
                Mark {
                    incarnation: 3,
                    seq: 5
                }
            ),
            Mark {
                incarnation: 9,
                seq: 1
            }
        );
        assert_eq!(
            advance_mark(
                Mark {
                    incarnation: 0,
                    seq: 4
                },
                Mark {
                    incarnation: 9,
                    seq: 5
                }
            ),
            Mark {
                incarnation: 9,
                seq: 5
            }
        );
    }

    #[test]
    fn numbering_is_gapless_per_receiver_incarnation_and_tentative() {
        let committed = HashMap::from([(
            "b".to_string(),
            Mark {
                incarnation: 5,
                seq: 7,
            },
        )]);
        let last = |r: &str, inc: u64| {
            committed
                .get(r)
                .filter(|m| m.incarnation == inc)
                .map_or(0, |m| m.seq)
        };
        let mut n = PairNumbering {
            taken: HashMap::new(),
        };
        assert_eq!(n.take("b", |_| 5, last), 8);
        // The incarnation is fixed by the first number taken in a handler.
        assert_eq!(n.take("b", |_| 6, last), 9);
        assert_eq!(n.take("c", |_| 2, last), 1);
        // A reply to a removed sender's former name: numbered, but no live peer to check.
        assert_eq!(n.take("d~4", |_| 0, last), 1);
        // A receiver this node does not know: numbered for incarnation 0, which the log
        // refuses unless it is still not installed.
        assert_eq!(n.take("e", |_| 0, last), 1);
        let counter = |receiver: &str, incarnation: u64, seq: u64| {
            (
                keys::pair_seq("a", receiver),
                Some(keys::encode_mark(Mark { incarnation, seq })),
            )
        };
        let mut w = n.writes("a");
        w.sort();
        assert_eq!(
            w,
            vec![
                counter("b", 5, 9),
                counter("c", 2, 1),
                counter("d~4", 0, 1),
                counter("e", 0, 1),
            ]
        );
        assert_eq!(
            n.peers(),
            vec![
                ("b".to_string(), 5),
                ("c".to_string(), 2),
                ("e".to_string(), 0)
            ]
        );
        // b reinstalled (incarnation 11): a new handler numbers it from 1.
        let mut again = PairNumbering {
            taken: HashMap::new(),
        };
        assert_eq!(again.take("b", |_| 11, last), 1);
    }
}
