//! [`Txn`]: a handler's transaction overlay over one component's committed data.
//!
//! Reads see the transaction's own writes first. Every write is checked against [`TxnLimits`]
//! before it is recorded, and the usage change it causes is tracked from the size of the value it
//! replaces (looked up through the overlay), so a refused write changes nothing and the commit
//! carries an exact `usage_delta`.
//!
//! One transaction per component at a time. A transaction begun while earlier ones are still
//! committing must be begun over their [`InFlightWrites`] ([`Storage::begin_over`]): it reads
//! through them and takes its usage base from them, otherwise its reads and usage are stale.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::in_flight::{InFlightWrites, Seen};
use crate::{ComponentWrites, Storage, StorageError, WriteError};

/// Per-component write limits applied by a [`Txn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnLimits {
    /// Longest key accepted, in bytes.
    pub max_key_bytes: usize,
    /// Longest value accepted, in bytes.
    pub max_value_bytes: usize,
    /// Most stored bytes (sum of key and value lengths) the component may hold.
    pub quota_bytes: u64,
}

impl Default for TxnLimits {
    /// 1 KiB keys, 1 MiB values, 64 MiB quota.
    fn default() -> Self {
        Self {
            max_key_bytes: 1 << 10,
            max_value_bytes: 1 << 20,
            quota_bytes: 64 << 20,
        }
    }
}

/// A handler's uncommitted writes to one component. Owned and `'static`: it holds a `Storage`
/// clone, so the database stays open while it lives.
pub struct Txn {
    storage: Storage,
    component: String,
    limits: TxnLimits,
    base_usage: u64,
    usage_delta: i64,
    overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Earlier transactions of the component still committing, read before the store.
    beneath: Option<Arc<InFlightWrites>>,
}

impl std::fmt::Debug for Txn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Txn")
            .field("component", &self.component)
            .field("writes", &self.overlay.len())
            .field("usage_delta", &self.usage_delta)
            .finish()
    }
}

fn entry_size(key: &[u8], value_len: usize) -> i64 {
    i64::try_from(key.len() + value_len).unwrap_or(i64::MAX)
}

impl Txn {
    pub(crate) fn new(
        storage: Storage,
        component: String,
        limits: TxnLimits,
        base: u64,
        beneath: Option<Arc<InFlightWrites>>,
    ) -> Self {
        Self {
            storage,
            component,
            limits,
            base_usage: base,
            usage_delta: 0,
            overlay: BTreeMap::new(),
            beneath,
        }
    }

    /// The component this transaction writes.
    pub fn component(&self) -> &str {
        &self.component
    }

    /// The limits in force.
    pub fn limits(&self) -> TxnLimits {
        self.limits
    }

    /// The component's usage as it will be after this transaction commits.
    pub fn usage_bytes(&self) -> u64 {
        let u = i128::from(self.base_usage) + i128::from(self.usage_delta);
        u64::try_from(u.max(0)).unwrap_or(u64::MAX)
    }

    /// The usage change recorded so far.
    pub fn usage_delta(&self) -> i64 {
        self.usage_delta
    }

    /// The value of `key`: this transaction's own write if there is one, else the latest write
    /// still in flight, else the committed value.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        if let Some(v) = self.overlay.get(key) {
            return Ok(v.clone());
        }
        if let Some(Seen::Written(v)) = self.beneath.as_ref().map(|b| b.get(key)) {
            return Ok(v);
        }
        self.storage.get(&self.component, key)
    }

    /// Size (key + value) of the entry `key` currently has through the overlay, `None` if absent.
    fn current_size(&self, key: &[u8]) -> Result<Option<i64>, StorageError> {
        Ok(match self.overlay.get(key) {
            Some(Some(v)) => Some(entry_size(key, v.len())),
            Some(None) => None,
            None => match self.beneath.as_ref().and_then(|b| b.value_len(key)) {
                Some(len) => len.map(|l| entry_size(key, l)),
                None => self
                    .storage
                    .value_len(&self.component, key)?
                    .map(|l| entry_size(key, l)),
            },
        })
    }

    /// Sets `key` to `value`. Refused, with nothing changed, when the key or value is over its
    /// cap or when the write would raise usage above the quota (a write that does not raise usage
    /// is accepted even over quota, so a component can always shrink).
    pub fn set(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), WriteError> {
        if key.len() > self.limits.max_key_bytes {
            return Err(WriteError::KeyTooLarge {
                len: key.len(),
                max: self.limits.max_key_bytes,
            });
        }
        if value.len() > self.limits.max_value_bytes {
            return Err(WriteError::ValueTooLarge {
                len: value.len(),
                max: self.limits.max_value_bytes,
            });
        }
        let old = self.current_size(&key)?.unwrap_or(0);
        let change = entry_size(&key, value.len()) - old;
        let would_use =
            i128::from(self.base_usage) + i128::from(self.usage_delta) + i128::from(change);
        if change > 0 && would_use > i128::from(self.limits.quota_bytes) {
            return Err(WriteError::QuotaExceeded {
                quota: self.limits.quota_bytes,
                would_use: u64::try_from(would_use).unwrap_or(u64::MAX),
            });
        }
        self.usage_delta += change;
        self.overlay.insert(key, Some(value));
        Ok(())
    }

    /// Deletes `key`. Deleting an absent key records nothing.
    pub fn delete(&mut self, key: &[u8]) -> Result<(), StorageError> {
        if let Some(old) = self.current_size(key)? {
            self.usage_delta -= old;
            self.overlay.insert(key.to_vec(), None);
        }
        Ok(())
    }

    /// Keys starting with `prefix` as this transaction sees them (committed keys it deleted are
    /// hidden, keys it added are included), sorted in byte order.
    pub fn list_keys(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StorageError> {
        let mut keys: BTreeSet<Vec<u8>> = self
            .storage
            .keys_with_prefix(&self.component, prefix)?
            .into_iter()
            .collect();
        for (k, present) in self.beneath.iter().flat_map(|b| b.with_prefix(prefix)) {
            if present {
                keys.insert(k);
            } else {
                keys.remove(&k);
            }
        }
        for (k, v) in self
            .overlay
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
        {
            if v.is_some() {
                keys.insert(k.clone());
            } else {
                keys.remove(k);
            }
        }
        Ok(keys.into_iter().collect())
    }

    /// Whether the transaction has recorded no write (then it needs no commit).
    pub fn is_empty(&self) -> bool {
        self.overlay.is_empty()
    }

    /// The recorded writes, in key order, with their usage change, ready for a
    /// [`CommitBatch`](crate::CommitBatch).
    pub fn into_writes(self) -> ComponentWrites {
        ComponentWrites {
            component: self.component,
            writes: self.overlay.into_iter().collect(),
            usage_delta: self.usage_delta,
        }
    }
}
