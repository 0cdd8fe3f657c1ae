//! Backups of the whole replicated state, and new nodes seeded from them.
//!
//! [`create`] walks one RocksDB snapshot of a node's storage (its state machine writes the
//! data and the applied position together, so the snapshot stands at exactly one Raft
//! index) and writes the registry, binaries, code history, outboxes, marks, counters and
//! every component's store in the [`format`], a record at a time. Raft's own log, vote and
//! snapshot are left out: a backup is state, not a log.
//!
//! [`restore`] fills a fresh database from a backup for a node that starts a NEW cluster:
//! every component is given to that node (one generation on, so nothing of the old cluster
//! can commit to it), the applied position is left out (the new node bootstraps a log of its
//! own) and the generation base is set past every generation the old cluster gave. The checksum is checked
//! before the load is reported done; the caller deletes the database when it is not.

pub mod export;
pub mod format;

use crate::placement::NodeId;
use crate::raft::codec::{self, SM_COMPONENT_PREFIX, SM_GENERATION_BASE_KEY, SM_META_KEY};
use crate::raft::state_machine::{applied_position, is_log_key};
use crate::raft::types::ComponentEntry;
use airssys_storage::{Record, Storage, StorageError};
use format::{BackupHeader, BackupReader, BackupWriter, FormatError, Item, FORMAT};
use std::cell::RefCell;
use std::io::{Read, Write};

/// Why a backup could not be made or restored.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("the backup holds a registry record that cannot be read ({key}): {why}")]
    BadRecord { key: String, why: String },
}

/// What a finished backup is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    pub header: BackupHeader,
    pub bytes: u64,
    /// SHA-256 of the file (hex), as its trailer holds it.
    pub sha256: String,
    pub components: u64,
}

/// What a restore loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreSummary {
    pub header: BackupHeader,
    pub bytes: u64,
    pub components: u64,
}

/// Sys records a backup carries: all but Raft's log, vote and snapshot (and the state
/// machine's applied position, which the header carries instead).
fn carried(key: &[u8]) -> bool {
    !is_log_key(key)
}

/// The header a walk's file starts with, from the state machine's applied position as
/// the walk's snapshot holds it.
fn header_at(
    meta: Option<&[u8]>,
    node_id: NodeId,
    taken_at_ms: u64,
) -> Result<BackupHeader, BackupError> {
    let position = match meta {
        Some(bytes) => applied_position(bytes).map_err(|why| BackupError::BadRecord {
            key: "raft/sm/meta".into(),
            why,
        })?,
        None => None,
    };
    Ok(BackupHeader {
        format: FORMAT,
        index: position.map(|p| p.index).unwrap_or(0),
        term: position.map(|p| p.leader_id.term).unwrap_or(0),
        node_id,
        taken_at_ms,
    })
}

/// A backup file being written from a storage walk: the walk's two callbacks (the header
/// once, then each record) reach it one at a time.
struct FileSink<'p, W: Write> {
    out: RefCell<Option<W>>,
    writer: RefCell<Option<BackupWriter<W>>>,
    header: RefCell<Option<BackupHeader>>,
    components: RefCell<u64>,
    reported: RefCell<u64>,
    progress: RefCell<&'p mut dyn FnMut(u64)>,
}

impl<'p, W: Write> FileSink<'p, W> {
    fn new(out: W, progress: &'p mut dyn FnMut(u64)) -> Self {
        FileSink {
            out: RefCell::new(Some(out)),
            writer: RefCell::new(None),
            header: RefCell::new(None),
            components: RefCell::new(0),
            reported: RefCell::new(0),
            progress: RefCell::new(progress),
        }
    }

    fn start(&self, header: BackupHeader) -> Result<(), BackupError> {
        let out = self
            .out
            .borrow_mut()
            .take()
            .ok_or_else(|| FormatError::Corrupt {
                at: 0,
                why: "the header was written twice".into(),
            })?;
        *self.writer.borrow_mut() = Some(BackupWriter::new(out, &header)?);
        *self.header.borrow_mut() = Some(header);
        Ok(())
    }

    fn record(&self, record: Record<'_>) -> Result<(), BackupError> {
        let mut guard = self.writer.borrow_mut();
        let w = guard.as_mut().ok_or_else(|| FormatError::Corrupt {
            at: 0,
            why: "a record before the header".into(),
        })?;
        match record {
            Record::Sys { key, value } => w.sys(key, value)?,
            Record::Component(name) => {
                *self.components.borrow_mut() += 1;
                w.component(name)?
            }
            Record::Pair { key, value } => w.pair(key, value)?,
        }
        let mut reported = self.reported.borrow_mut();
        if w.bytes() >= *reported + (8 << 20) {
            *reported = w.bytes();
            (self.progress.borrow_mut())(*reported);
        }
        Ok(())
    }

    fn finish(self) -> Result<BackupSummary, BackupError> {
        let (writer, header) = match (self.writer.into_inner(), self.header.into_inner()) {
            (Some(w), Some(h)) => (w, h),
            _ => {
                return Err(FormatError::Corrupt {
                    at: 0,
                    why: "nothing was written".into(),
                }
                .into())
            }
        };
        let (_, bytes, sha256) = writer.finish()?;
        (self.progress.into_inner())(bytes);
        Ok(BackupSummary {
            header,
            bytes,
            sha256,
            components: self.components.into_inner(),
        })
    }
}

/// Writes a backup of `storage` (a node's, with its state machine's records) to `out`.
/// `progress` is called with the bytes written so far, now and then.
pub fn create<W: Write>(
    storage: &Storage,
    node_id: NodeId,
    taken_at_ms: u64,
    out: W,
    progress: &mut dyn FnMut(u64),
) -> Result<BackupSummary, BackupError> {
    let sink = FileSink::new(out, progress);
    storage.export_each::<BackupError>(
        &[SM_META_KEY],
        |peeked| {
            let meta = peeked.first().and_then(Option::as_deref);
            sink.start(header_at(meta, node_id, taken_at_ms)?)
        },
        |key| carried(key) && key != SM_META_KEY,
        &mut |record| sink.record(record),
    )?;
    sink.finish()
}

/// Reads a whole backup without loading it: its header and what it holds, once its
/// checksum and end are verified.
pub fn verify<R: Read>(input: R) -> Result<RestoreSummary, BackupError> {
    let mut reader = BackupReader::open(input)?;
    let mut components = 0;
    while let Some(item) = reader.next_item()? {
        if matches!(item, Item::Component(_)) {
            components += 1;
        }
    }
    Ok(RestoreSummary {
        header: reader.header().clone(),
        bytes: reader.bytes() + 32,
        components,
    })
}

/// Gives a restored component to `node`, one generation on.
fn reowned(key: &[u8], value: &[u8], node: NodeId) -> Result<(Vec<u8>, u64), BackupError> {
    let bad = |why: String| BackupError::BadRecord {
        key: String::from_utf8_lossy(key).into_owned(),
        why,
    };
    let mut entry: ComponentEntry = codec::decode(value).map_err(bad)?;
    entry.owner = node;
    entry.generation += 1;
    let generation = entry.generation;
    Ok((codec::encode(&entry).map_err(bad)?, generation))
}

/// Loads a backup into `storage` (a fresh database) for node `node`, the one member of the
/// new cluster it will start. `progress` is called with the bytes read so far, now and then.
/// On an error, what was loaded is incomplete: the caller deletes the database.
pub fn restore<R: Read>(
    input: R,
    storage: &Storage,
    node: NodeId,
    progress: &mut dyn FnMut(u64),
) -> Result<RestoreSummary, BackupError> {
    let mut reader = BackupReader::open(input)?;
    let mut load = storage.bulk_load();
    let mut components = 0u64;
    let mut highest_generation = 0u64;
    let mut old_base = 0u64;
    let mut reported = 0u64;
    while let Some(item) = reader.next_item()? {
        match item {
            Item::Sys(key, value) => {
                if key == SM_GENERATION_BASE_KEY {
                    old_base = value
                        .as_slice()
                        .try_into()
                        .map(u64::from_le_bytes)
                        .map_err(|_| BackupError::BadRecord {
                            key: "raft/sm/base".into(),
                            why: format!("{} bytes, not 8", value.len()),
                        })?;
                    continue;
                }
                if !carried(&key) || key == SM_META_KEY {
                    // Not from a backup this build wrote; never let it steer the new log.
                    continue;
                }
                if key.starts_with(SM_COMPONENT_PREFIX) {
                    let (value, generation) = reowned(&key, &value, node)?;
                    highest_generation = highest_generation.max(generation);
                    load.put_sys(&key, &value)?;
                } else {
                    load.put_sys(&key, &value)?;
                }
            }
            Item::Component(name) => {
                components += 1;
                load.component(&name)?;
            }
            Item::Pair(key, value) => load.put(&key, &value)?,
        }
        if reader.bytes() >= reported + (8 << 20) {
            reported = reader.bytes();
            progress(reported);
        }
    }
    // Checked through the end: now the load may count.
    let header = reader.header().clone();
    // Every generation the old cluster gave is at most its base plus its last index.
    let base = old_base
        .saturating_add(header.index)
        .max(highest_generation);
    load.put_sys(SM_GENERATION_BASE_KEY, &base.to_le_bytes())?;
    load.finish()?;
    progress(reader.bytes() + 32);
    Ok(RestoreSummary {
        header,
        bytes: reader.bytes() + 32,
        components,
    })
}
