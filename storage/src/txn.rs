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
    /// Bytes of keys and values in `overlay`: what the commit will carry.
    overlay_bytes: usize,
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
            overlay_bytes: 0,
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
        self.record(key, Some(value));
        Ok(())
    }

    /// Puts a write in the overlay, keeping [`Txn::written_bytes`] current.
    fn record(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.overlay_bytes = self.written_bytes_with(&key, value.as_ref().map_or(0, Vec::len));
        self.overlay.insert(key, value);
    }

    /// Bytes of keys and values this transaction's commit will carry (an overwritten key is
    /// counted once, with its last value).
    pub fn written_bytes(&self) -> usize {
        self.overlay_bytes
    }

    /// What [`Txn::written_bytes`] would be after writing `value` under `key`.
    pub fn written_bytes_with(&self, key: &[u8], value_len: usize) -> usize {
        let old = self
            .overlay
            .get(key)
            .map_or(0, |v| key.len() + v.as_ref().map_or(0, Vec::len));
        (self.overlay_bytes - old).saturating_add(key.len() + value_len)
    }

    /// Deletes `key`. Deleting an absent key records nothing.
    pub fn delete(&mut self, key: &[u8]) -> Result<(), StorageError> {
        if let Some(old) = self.current_size(key)? {
            self.usage_delta -= old;
            self.record(key.to_vec(), None);
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

    /// One page of [`Txn::list_keys`]: at most `limit` keys starting with `prefix` that come
    /// after `after` (from the first when `None`), as this transaction sees them. Each page
    /// reads at most `limit` keys from the store plus one per deletion this transaction and
    /// the ones still committing made in that range, so a listing of any size costs a
    /// handler one bounded call per page.
    pub fn list_keys_page(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StorageError> {
        let in_range = |k: &[u8]| k.starts_with(prefix) && after.is_none_or(|a| k > a);
        // What the layers above the store say, the overlay last (it wins).
        let mut layered: Vec<(Vec<u8>, bool)> = self
            .beneath
            .iter()
            .flat_map(|b| b.with_prefix(prefix))
            .filter(|(k, _)| in_range(k))
            .collect();
        layered.extend(
            self.overlay
                .range(prefix.to_vec()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .filter(|(k, _)| in_range(k))
                .map(|(k, v)| (k.clone(), v.is_some())),
        );
        let deletes = layered.iter().filter(|(_, present)| !present).count();
        let mut keys: BTreeSet<Vec<u8>> = self
            .storage
            .keys_with_prefix_page(
                &self.component,
                prefix,
                after,
                limit.saturating_add(deletes),
            )?
            .into_iter()
            .collect();
        for (k, present) in layered {
            if present {
                keys.insert(k);
            } else {
                keys.remove(&k);
            }
        }
        Ok(keys.into_iter().take(limit).collect())
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
