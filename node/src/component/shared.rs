//! What one component keeps across instance restarts on this node: identity, limits,
//! placement (node id + generation, the fencing token every commit carries), its
//! compiled code, durable sequence numbers and de-duplication marks.

use crate::api::{Delivery, Limits};
use crate::engine::Prepared;
use crate::messaging::keys;
use crate::messaging::Router;
use airssys_storage::{Storage, StorageError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
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
    /// Last durable sequence number handed out (persisted with each commit that
    /// uses one).
    last_seq: AtomicU64,
    fast_requests: AtomicU64,
    /// Random per-activation salt for fast request ids.
    fast_salt: u64,
    /// Highest durable seq consumed per sender.
    dedup: Mutex<HashMap<String, u64>>,
    /// Crashes since this activation started.
    pub restarts: AtomicU32,
}

impl ComponentShared {
    /// Loads the component's sequence counter and de-dup marks from storage.
    pub fn load(
        name: String,
        limits: Limits,
        node_id: u64,
        generation: u64,
        prepared: Prepared,
        storage: Storage,
        router: Arc<Router>,
    ) -> Result<ComponentShared, StorageError> {
        let last_seq = storage
            .sys_get(&keys::seq(&name))?
            .and_then(|v| keys::decode_u64(&v))
            .unwrap_or(0);
        let prefix = keys::dedup_for_receiver(&name);
        let mut dedup = HashMap::new();
        for (key, value) in storage.sys_scan_prefix(&prefix)? {
            let sender = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            if let Some(seq) = keys::decode_u64(&value) {
                dedup.insert(sender, seq);
            }
        }
        Ok(ComponentShared {
            name,
            limits,
            node_id,
            generation: AtomicU64::new(generation),
            prepared,
            storage,
            router,
            last_seq: AtomicU64::new(last_seq),
            fast_requests: AtomicU64::new(0),
            fast_salt: (rand::random::<u32>() as u64 & 0x7fff_ffff) << 32,
            dedup: Mutex::new(dedup),
            restarts: AtomicU32::new(0),
        })
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

    /// True when a durable message with this (sender, seq) was already consumed.
    pub fn already_consumed(&self, sender: &str, seq: u64) -> bool {
        self.dedup
            .lock()
            .map(|d| d.get(sender).is_some_and(|&last| seq <= last))
            .unwrap_or(false)
    }

    /// Records a consumption once its commit is durable.
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

/// True for ids of durable requests (their pending record lives in storage).
pub fn is_durable_request(id: u64) -> bool {
    id & FAST_REQUEST_BIT == 0
}
