//! Atomic commits: the plain data of one commit ([`CommitBatch`]), the fence check
//! ([`check_fence`]), applying a group of batches as one RocksDB `WriteBatch`, and the committer
//! thread behind [`Storage::commit_async`](crate::Storage::commit_async).
//!
//! Group commit: the committer thread blocks for one batch, then takes every batch already
//! waiting (up to [`MAX_GROUP_BATCHES`] / [`MAX_GROUP_BYTES`]), checks each one's fence, merges
//! the valid ones into ONE `WriteBatch` and does ONE (synced) write, then answers each caller.
//! While that write's fsync runs, the next group queues up, so many commits share one sync.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use rocksdb::{BoundColumnFamily, WriteBatch, WriteOptions};
use tokio::sync::oneshot;

use crate::meta::{encode_usage, is_reserved, usage_key};
use crate::names::SYS_CF;
use crate::store::{component_cf, lock, read, write, Core, Db};
use crate::StorageError;

/// At most this many batches are merged into one write.
pub const MAX_GROUP_BATCHES: usize = 4096;
/// A group stops taking more batches once it holds this many bytes of keys and values.
pub const MAX_GROUP_BYTES: usize = 64 << 20;

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

/// `base + delta`, clamped to `0..=u64::MAX`.
fn apply_delta(component: &str, base: u64, delta: i64) -> u64 {
    let next = i128::from(base) + i128::from(delta);
    if next < 0 {
        tracing::warn!(
            component,
            base,
            delta,
            "usage delta would go below zero; clamped"
        );
    }
    u64::try_from(next.max(0)).unwrap_or(u64::MAX)
}

/// A component's key, within one group's apply.
type ComponentKey<'b> = (&'b str, &'b [u8]);

/// Bytes a stored pair counts for in its component's usage: key plus value.
fn pair_bytes(key: &[u8], value: Option<usize>) -> Option<u64> {
    value.map(|v| (key.len() + v) as u64)
}

/// The change of usage `cw`'s writes make, from what is stored (and what earlier batches of
/// this group write, in `written`), never from the batch's own claim: a commit comes from a
/// peer, and a made-up delta would let a component past its quota. Each written key's size
/// after this batch goes into `staged_sizes` (this batch's, kept apart until it is accepted).
fn usage_change<'b>(
    db: &Db,
    cf: &Arc<BoundColumnFamily<'_>>,
    cw: &'b ComponentWrites,
    written: &HashMap<ComponentKey<'b>, Option<u64>>,
    staged_sizes: &mut HashMap<ComponentKey<'b>, Option<u64>>,
) -> Result<i64, StorageError> {
    let name = cw.component.as_str();
    let mut change: i128 = 0;
    for (k, v) in &cw.writes {
        let key = (name, k.as_slice());
        let before = match staged_sizes.get(&key).or_else(|| written.get(&key)) {
            Some(size) => *size,
            None => pair_bytes(k, db.get_pinned_cf(cf, k)?.map(|v| v.len())),
        };
        let after = pair_bytes(k, v.as_ref().map(Vec::len));
        change += i128::from(after.unwrap_or(0)) - i128::from(before.unwrap_or(0));
        staged_sizes.insert(key, after);
    }
    Ok(i64::try_from(change).unwrap_or(if change < 0 { i64::MIN } else { i64::MAX }))
}

/// Checks one batch and, when it is valid, appends it to `wb` and records its usage changes in
/// `new_usage` (computed from the writes, see [`usage_change`]). A refused batch appends
/// nothing.
#[allow(clippy::too_many_arguments)] // one group's shared state, each part distinct
fn stage<'db, 'b>(
    db: &'db Db,
    sys: &Arc<BoundColumnFamily<'db>>,
    placements: &HashMap<String, Placement>,
    usage: &HashMap<String, u64>,
    new_usage: &mut HashMap<&'b str, u64>,
    written: &mut HashMap<ComponentKey<'b>, Option<u64>>,
    batch: &'b CommitBatch,
    wb: &mut WriteBatch,
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
    let mut cfs = Vec::with_capacity(batch.components.len());
    let mut staged: Vec<(&'b str, u64)> = Vec::new();
    let mut staged_sizes = HashMap::new();
    for cw in &batch.components {
        let name = cw.component.as_str();
        let cf = component_cf(db, name)?;
        let base = match staged.iter().find(|(n, _)| *n == name) {
            Some((_, u)) => *u,
            None => match new_usage.get(name).or_else(|| usage.get(name)) {
                Some(u) => *u,
                None => return Err(StorageError::UnknownComponent(name.to_string())),
            },
        };
        let change = usage_change(db, &cf, cw, written, &mut staged_sizes)?;
        let next = apply_delta(name, base, change);
        match staged.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = next,
            None => staged.push((name, next)),
        }
        cfs.push(cf);
    }
    for (cw, cf) in batch.components.iter().zip(&cfs) {
        for (k, v) in &cw.writes {
            match v {
                Some(v) => wb.put_cf(cf, k, v),
                None => wb.delete_cf(cf, k),
            }
        }
    }
    for (k, v) in &batch.sys {
        match v {
            Some(v) => wb.put_cf(sys, k, v),
            None => wb.delete_cf(sys, k),
        }
    }
    new_usage.extend(staged);
    written.extend(staged_sizes);
    Ok(())
}

/// Applies `batches` with one RocksDB write. Each batch gets its own result: a batch refused by
/// its fence (or naming an unknown component, or a reserved sys key) is left out and does not
/// affect the others; if the write itself fails, every batch that was in it fails.
pub(crate) fn apply_group(
    core: &Core,
    batches: &[CommitBatch],
    sync: bool,
) -> Vec<Result<(), StorageError>> {
    // Held across the write: a placement change cannot slip between a fence check and the write.
    let placements = lock(&core.commit);
    let guard = read(&core.db);
    let Some(db) = guard.as_ref() else {
        return vec![Err(StorageError::Closed("database is not open".into())); batches.len()];
    };
    let Some(sys) = db.cf_handle(SYS_CF) else {
        return vec![Err(StorageError::Closed("sys column family missing".into())); batches.len()];
    };
    let mut wb = WriteBatch::default();
    let mut new_usage: HashMap<&str, u64> = HashMap::new();
    let mut written = HashMap::new();
    let mut results = {
        let usage = read(&core.usage);
        batches
            .iter()
            .map(|b| {
                stage(
                    db,
                    &sys,
                    &placements,
                    &usage,
                    &mut new_usage,
                    &mut written,
                    b,
                    &mut wb,
                )
            })
            .collect::<Vec<_>>()
    };
    if results.iter().all(Result::is_err) {
        return results;
    }
    for (component, u) in &new_usage {
        wb.put_cf(&sys, usage_key(component), encode_usage(*u));
    }
    let mut wo = WriteOptions::default();
    let synced = core.opts.sync_writes && sync;
    wo.set_sync(synced);
    match db.write_opt(wb, &wo) {
        Ok(()) => {
            let mut usage = write(&core.usage);
            for (component, u) in new_usage {
                if let Some(slot) = usage.get_mut(component) {
                    *slot = u;
                }
            }
            core.stats_groups.fetch_add(1, Ordering::Relaxed);
            if synced {
                core.stats_syncs.fetch_add(1, Ordering::Relaxed);
            }
            let accepted = results.iter().filter(|r| r.is_ok()).count();
            core.stats_batches
                .fetch_add(accepted as u64, Ordering::Relaxed);
        }
        Err(e) => {
            tracing::error!(error = %e, "commit write failed");
            for r in &mut results {
                if r.is_ok() {
                    *r = Err(StorageError::Rocks(e.clone()));
                }
            }
        }
    }
    results
}

/// One batch waiting for the committer thread.
pub(crate) struct Job {
    pub(crate) batch: CommitBatch,
    pub(crate) reply: oneshot::Sender<Result<(), StorageError>>,
    /// Whether the write must reach the disk before the answer (a group syncs if any of its
    /// jobs asks).
    pub(crate) sync: bool,
}

/// Starts the committer thread. It holds only the [`Core`], never a `Storage`, so dropping the
/// last `Storage` closes the channel; the thread drains what is queued and exits.
pub(crate) fn spawn_committer(
    core: Arc<Core>,
) -> Result<(mpsc::Sender<Job>, JoinHandle<()>), StorageError> {
    let (tx, rx) = mpsc::channel::<Job>();
    let handle = std::thread::Builder::new()
        .name("airssys-committer".into())
        .spawn(move || run_committer(&core, &rx))
        .map_err(|e| StorageError::Io(format!("spawning the committer thread: {e}")))?;
    Ok((tx, handle))
}

fn run_committer(core: &Core, rx: &mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut bytes = first.batch.approx_bytes();
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP_BATCHES && bytes < MAX_GROUP_BYTES {
            match rx.try_recv() {
                Ok(j) => {
                    bytes += j.batch.approx_bytes();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        let sync = jobs.iter().any(|j| j.sync);
        let (batches, replies): (Vec<_>, Vec<_>) =
            jobs.into_iter().map(|j| (j.batch, j.reply)).unzip();
        tracing::trace!(batches = batches.len(), bytes, "group commit");
        let results = apply_group(core, &batches, sync);
        for (reply, r) in replies.into_iter().zip(results) {
            // The caller may have given up waiting; the commit stands either way.
            let _ = reply.send(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn fence_matches_current_placement() {
        let cur = Some(Placement {
            node_id: 2,
            generation: 5,
        });
        assert_eq!(check_fence(cur, &fence(2, 5)), Ok(()));
    }

    #[test]
    fn older_and_newer_generations_are_stale() {
        let cur = Some(Placement {
            node_id: 2,
            generation: 5,
        });
        for got in [0, 4, 6] {
            assert_eq!(
                check_fence(cur, &fence(2, got)),
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
        let cur = Some(Placement {
            node_id: 2,
            generation: 5,
        });
        assert_eq!(
            check_fence(cur, &fence(3, 5)),
            Err(StorageError::WrongNode {
                component: "c".into(),
                owner: 2,
                got: 3
            })
        );
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
    fn delta_is_clamped() {
        assert_eq!(apply_delta("c", 10, -3), 7);
        assert_eq!(apply_delta("c", 10, 5), 15);
        assert_eq!(apply_delta("c", 3, -10), 0);
        assert_eq!(apply_delta("c", u64::MAX, 1), u64::MAX);
    }

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
}
