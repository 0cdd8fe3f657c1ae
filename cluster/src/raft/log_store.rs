//! The Raft log on the node's RocksDB: entries under `raft/log/<index>`, the vote,
//! the committed and purged log ids. Every write is a synced commit but the committed index,
//! a hint.
//!
//! `append` returns as soon as its write is queued and tells openraft through the callback
//! when it is synced: the leader then replicates while its own fsync runs instead of after
//! it (openraft counts the leader's copy, and a follower acknowledges, only once flushed).
//! Until flushed, appended entries are served to readers from memory ([`Unflushed`]).

use super::codec::{self, COMMITTED_KEY, LOG_PREFIX, PURGED_KEY, VOTE_KEY};
use super::types::TypeConfig;
use airssys_storage::{CommitBatch, Storage};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};

type NodeId = u64;

/// Entries read per storage call when serving a range.
const READ_CHUNK: usize = 4096;

/// Entries appended but not yet synced, by index: what a reader must see that RocksDB may
/// not hold yet.
#[derive(Default)]
struct Unflushed(Mutex<BTreeMap<u64, Entry<TypeConfig>>>);

impl Unflushed {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Entry<TypeConfig>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets the entries with these ids once they are in RocksDB (an index appended again
    /// since, after a truncation, keeps its newer entry).
    fn flushed(&self, ids: &[LogId<NodeId>]) {
        let mut map = self.lock();
        for id in ids {
            if map.get(&id.index).is_some_and(|e| e.log_id == *id) {
                map.remove(&id.index);
            }
        }
    }
}

#[derive(Clone)]
pub struct LogStore {
    storage: Storage,
    /// Last log id written (or purged), kept in memory so `get_log_state` needs no scan.
    last: Arc<Mutex<Option<LogId<NodeId>>>>,
    unflushed: Arc<Unflushed>,
}

fn io_read(e: impl ToString) -> StorageError<NodeId> {
    StorageIOError::read_logs(&std::io::Error::other(e.to_string())).into()
}

fn io_write(e: impl ToString) -> StorageError<NodeId> {
    StorageIOError::write_logs(&std::io::Error::other(e.to_string())).into()
}

impl LogStore {
    pub fn open(storage: Storage) -> Result<LogStore, StorageError<NodeId>> {
        let store = LogStore {
            storage,
            last: Arc::new(Mutex::new(None)),
            unflushed: Arc::new(Unflushed::default()),
        };
        let mut last = store.read_id(PURGED_KEY)?;
        let mut start = codec::log_key(0);
        let end = codec::prefix_end(LOG_PREFIX);
        loop {
            let chunk = store
                .storage
                .sys_range(&start, &end, READ_CHUNK)
                .map_err(io_read)?;
            let Some((key, value)) = chunk.last() else {
                break;
            };
            let entry: Entry<TypeConfig> = codec::decode(value).map_err(io_read)?;
            last = Some(entry.log_id);
            start = key.clone();
            start.push(0);
            if chunk.len() < READ_CHUNK {
                break;
            }
        }
        if let Ok(mut l) = store.last.lock() {
            *l = last;
        }
        Ok(store)
    }

    fn read_id(&self, key: &[u8]) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        match self.storage.sys_get(key).map_err(io_read)? {
            Some(bytes) => Ok(Some(codec::decode(&bytes).map_err(io_read)?)),
            None => Ok(None),
        }
    }

    async fn write(
        &self,
        sys: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<(), StorageError<NodeId>> {
        self.storage
            .commit_async(CommitBatch::sys_only(sys))
            .await
            .map_err(io_write)
    }

    fn set_last(&self, id: Option<LogId<NodeId>>) {
        if let Ok(mut l) = self.last.lock() {
            *l = id;
        }
    }

    /// Keys of the log entries with index in `from..to`.
    fn keys_between(
        &self,
        from: u64,
        to: Option<u64>,
    ) -> Result<Vec<Vec<u8>>, StorageError<NodeId>> {
        let end = match to {
            Some(to) => codec::log_key(to),
            None => codec::prefix_end(LOG_PREFIX),
        };
        let mut keys = Vec::new();
        let mut start = codec::log_key(from);
        loop {
            let chunk = self
                .storage
                .sys_range(&start, &end, READ_CHUNK)
                .map_err(io_read)?;
            let done = chunk.len() < READ_CHUNK;
            if let Some((last, _)) = chunk.last() {
                start = last.clone();
                start.push(0);
            }
            keys.extend(chunk.into_iter().map(|(k, _)| k));
            if done {
                return Ok(keys);
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let from = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => codec::log_key(i.saturating_add(1)),
            Bound::Excluded(&i) => codec::log_key(i),
            Bound::Unbounded => codec::prefix_end(LOG_PREFIX),
        };
        if matches!(range.end_bound(), Bound::Included(&i) if i == u64::MAX) {
            return Err(io_read("log index out of range"));
        }
        let rows = self
            .storage
            .sys_range(&codec::log_key(from), &end, usize::MAX)
            .map_err(io_read)?;
        let mut entries = BTreeMap::new();
        for (_, v) in &rows {
            let entry: Entry<TypeConfig> = codec::decode(v).map_err(io_read)?;
            entries.insert(entry.log_id.index, entry);
        }
        // Read after RocksDB: an entry flushed in between is in one or the other. Those
        // still in memory are the newest for their index.
        for (index, entry) in self.unflushed.lock().range(from..) {
            if !range.contains(index) {
                break;
            }
            entries.insert(*index, entry.clone());
        }
        Ok(entries.into_values().collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged_log_id = self.read_id(PURGED_KEY)?;
        let last = self.last.lock().ok().and_then(|l| *l);
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let bytes = codec::encode(vote).map_err(io_write)?;
        self.write(vec![(VOTE_KEY.to_vec(), Some(bytes))]).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        match self.storage.sys_get(VOTE_KEY).map_err(io_read)? {
            Some(bytes) => Ok(Some(codec::decode(&bytes).map_err(io_read)?)),
            None => Ok(None),
        }
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        let value = match committed {
            Some(id) => Some(codec::encode(&id).map_err(io_write)?),
            None => None,
        };
        // Not synced: the committed index is a hint that lets a restarted node apply what it
        // holds before a leader speaks. An older value after a power loss is still a
        // committed index, so it is safe, and a sync here cost every commit a second fsync
        // on every node.
        self.storage
            .commit_async_unsynced(CommitBatch::sys_only(vec![(COMMITTED_KEY.to_vec(), value)]))
            .await
            .map_err(io_write)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        self.read_id(COMMITTED_KEY)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut sys = Vec::new();
        let mut ids = Vec::new();
        {
            let mut unflushed = self.unflushed.lock();
            for entry in entries {
                let bytes = codec::encode(&entry).map_err(io_write)?;
                sys.push((codec::log_key(entry.log_id.index), Some(bytes)));
                ids.push(entry.log_id);
                unflushed.insert(entry.log_id.index, entry);
            }
        }
        let Some(last) = ids.last().copied() else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        // Queued now (writes land in call order); synced in the background.
        let synced = self.storage.commit_async(CommitBatch::sys_only(sys));
        self.set_last(Some(last));
        let unflushed = self.unflushed.clone();
        tokio::spawn(async move {
            let result = synced.await;
            if result.is_ok() {
                unflushed.flushed(&ids);
            }
            callback.log_io_completed(result.map_err(|e| std::io::Error::other(e.to_string())));
        });
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // Entries still queued are deleted too: their write lands before this one.
        let queued: Vec<Vec<u8>> = {
            let mut unflushed = self.unflushed.lock();
            let gone = unflushed.split_off(&log_id.index);
            gone.keys().map(|&i| codec::log_key(i)).collect()
        };
        let mut keys = self.keys_between(log_id.index, None)?;
        keys.extend(queued);
        keys.sort();
        keys.dedup();
        let sys = keys.into_iter().map(|k| (k, None)).collect();
        self.write(sys).await?;
        // The new last entry is the one before `log_id` (or the purge point).
        let before = if log_id.index == 0 {
            Vec::new()
        } else {
            self.try_get_log_entries(log_id.index - 1..log_id.index)
                .await?
        };
        let last = match before.last() {
            Some(e) => Some(e.log_id),
            None => self.read_id(PURGED_KEY)?,
        };
        self.set_last(last);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.unflushed.lock().retain(|&i, _| i > log_id.index);
        let keys = self.keys_between(0, Some(log_id.index.saturating_add(1)))?;
        let mut sys: Vec<(Vec<u8>, Option<Vec<u8>>)> =
            keys.into_iter().map(|k| (k, None)).collect();
        sys.push((
            PURGED_KEY.to_vec(),
            Some(codec::encode(&log_id).map_err(io_write)?),
        ));
        self.write(sys).await?;
        let mut last = self.last.lock().map_err(io_write)?;
        if last.is_none_or(|l| l.index < log_id.index) {
            *last = Some(log_id);
        }
        Ok(())
    }
}
