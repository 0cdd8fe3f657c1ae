//! A component's idempotency records as its handlers see them: the ones its commits in
//! flight carry (remembered here until they are surely applied) over the stored ones,
//! and which expired records the next keyed commit prunes.
//!
//! A repeat of a key whose first attempt is still on its way to Raft must find it here,
//! or it would run the handler a second time. The memory is bounded: a record leaves it
//! once [`MEMORY`] newer ones came after it, long after its commit applied.

use crate::messaging::idempotency::{Record, PRUNE_BATCH};
use crate::messaging::keys;
use airssys_storage::{Storage, StorageError};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Records remembered in memory per component.
const MEMORY: usize = 4096;
/// How long after a prune that found nothing more to do the next one looks again.
const PRUNE_PAUSE_MS: u64 = 1_000;

#[derive(Default)]
pub struct RecentKeys {
    memory: Mutex<Memory>,
    /// Before this time (ms), keyed commits prune nothing (there was nothing to prune).
    next_prune_ms: AtomicU64,
}

#[derive(Default)]
struct Memory {
    by_key: HashMap<String, Record>,
    order: VecDeque<String>,
}

impl RecentKeys {
    /// The record of `key` of component `name`: a commit in flight's, else the stored one.
    pub fn lookup(
        &self,
        storage: &Storage,
        name: &str,
        key: &str,
    ) -> Result<Option<Record>, StorageError> {
        if let Some(r) = self
            .memory
            .lock()
            .ok()
            .and_then(|m| m.by_key.get(key).cloned())
        {
            return Ok(Some(r));
        }
        Ok(storage
            .sys_get(&keys::idem(name, key))?
            .and_then(|v| Record::decode(&v)))
    }

    /// Remembers a record a transaction just handed to the pipeline.
    pub fn remember(&self, key: String, record: Record) {
        let Ok(mut m) = self.memory.lock() else {
            return;
        };
        if m.by_key.insert(key.clone(), record).is_none() {
            m.order.push_back(key);
        }
        while m.order.len() > MEMORY {
            if let Some(old) = m.order.pop_front() {
                m.by_key.remove(&old);
            }
        }
    }

    /// Forgets what commits in flight carried (after a failed commit dropped them).
    pub fn forget_in_flight(&self) {
        if let Ok(mut m) = self.memory.lock() {
            *m = Memory::default();
        }
        self.next_prune_ms.store(0, Ordering::Relaxed);
    }

    /// Up to [`PRUNE_BATCH`] stored records of `name` expired at `now_ms` (expiry, key),
    /// oldest first; none when the last look found nothing more.
    pub fn expired(&self, storage: &Storage, name: &str, now_ms: u64) -> Vec<(u64, String)> {
        if now_ms < self.next_prune_ms.load(Ordering::Relaxed) {
            return Vec::new();
        }
        let start = keys::idem_expiry_for(name);
        let end = keys::idem_expiry(name, now_ms, "");
        let found = match storage.sys_range(&start, &end, PRUNE_BATCH) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(
                    component = name,
                    "cannot list expired idempotency records: {e}"
                );
                return Vec::new();
            }
        };
        if found.len() < PRUNE_BATCH {
            self.next_prune_ms
                .store(now_ms + PRUNE_PAUSE_MS, Ordering::Relaxed);
        }
        found
            .iter()
            .filter_map(|(k, _)| keys::idem_expiry_parts(name, k))
            .map(|(expires, key)| (expires, key.to_string()))
            .collect()
    }
}
