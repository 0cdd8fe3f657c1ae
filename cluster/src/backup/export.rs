//! One component as a file, to copy it between clusters or keep it: its code (registry
//! entry: digest and limits; the binary) and its storage, read from one snapshot, in the
//! backup [`format`](super::format). Its messages (outbox, marks, pending requests) stay in
//! the cluster they belong to: an export is the component's code and data only.
//!
//! [`read_export`] checks a file (checksum, one component, its binary matching its digest)
//! and answers what an import needs; the node makes the import one fenced transaction.

use super::format::{BackupHeader, BackupReader, Item};
use super::{header_at, BackupError, BackupSummary, FileSink};
use crate::placement::NodeId;
use crate::raft::codec::{self, binary_key, component_key, BINARY_PREFIX, SM_META_KEY};
use crate::raft::command_check::sha256_hex;
use crate::raft::types::{ComponentEntry, ComponentSpec};
use airssys_storage::{Storage, StorageError};
use std::cell::RefCell;
use std::io::{Read, Write};

/// What an export file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentExport {
    pub header: BackupHeader,
    /// The name it had where it was exported.
    pub name: String,
    /// Its code's digest, size and limits (its `installed_at_ms` as it was there).
    pub spec: ComponentSpec,
    pub binary: Vec<u8>,
    /// Its storage, in key order.
    pub pairs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Bytes of keys and values in `pairs`.
    pub data_bytes: u64,
}

/// Why an export cannot be made or read (besides a damaged file).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error("no component named {0} here")]
    NotFound(String),
    #[error("not a component export: {0}")]
    NotAnExport(String),
    #[error("the export holds more than {limit} bytes of data; an import is one transaction")]
    TooLarge { limit: u64 },
}

impl From<StorageError> for ExportError {
    fn from(e: StorageError) -> Self {
        ExportError::Backup(e.into())
    }
}

impl From<super::format::FormatError> for ExportError {
    fn from(e: super::format::FormatError) -> Self {
        ExportError::Backup(e.into())
    }
}

/// Writes component `name`'s export from `storage` (a node's) to `out`.
pub fn export_component<W: Write>(
    storage: &Storage,
    name: &str,
    node_id: NodeId,
    taken_at_ms: u64,
    out: W,
    progress: &mut dyn FnMut(u64),
) -> Result<BackupSummary, ExportError> {
    let entry_key = component_key(name);
    let sink = FileSink::new(out, progress);
    // The binary key is known once the entry is read from the walk's snapshot.
    let binary: RefCell<Option<Vec<u8>>> = RefCell::new(None);
    storage.export_component_each::<ExportError>(
        name,
        &[SM_META_KEY, &entry_key],
        |peeked| {
            let mut peeked = peeked.into_iter();
            let meta = peeked.next().flatten();
            let Some(entry) = peeked.next().flatten() else {
                return Err(ExportError::NotFound(name.to_string()));
            };
            let decoded: ComponentEntry =
                codec::decode(&entry).map_err(|why| BackupError::BadRecord {
                    key: String::from_utf8_lossy(&entry_key).into_owned(),
                    why,
                })?;
            *binary.borrow_mut() = Some(binary_key(&decoded.spec.sha256));
            sink.start(header_at(meta.as_deref(), node_id, taken_at_ms)?)?;
            Ok(())
        },
        |key| key == entry_key.as_slice() || binary.borrow().as_deref() == Some(key),
        &mut |record| Ok(sink.record(record)?),
    )?;
    Ok(sink.finish()?)
}

/// Reads and checks an export (at most `limit` bytes of data): its checksum and end, one
/// component with its registry entry, and a binary that is what the entry's digest says.
pub fn read_export<R: Read>(input: R, limit: u64) -> Result<ComponentExport, ExportError> {
    let mut reader = BackupReader::open(input)?;
    let not_export = |why: &str| ExportError::NotAnExport(why.to_string());
    let mut entry: Option<ComponentEntry> = None;
    let mut binary: Option<Vec<u8>> = None;
    let mut name: Option<String> = None;
    let mut pairs = Vec::new();
    let mut data_bytes = 0u64;
    while let Some(item) = reader.next_item()? {
        match item {
            Item::Sys(key, value) if key.starts_with(codec::SM_COMPONENT_PREFIX) => {
                if entry.is_some() {
                    return Err(not_export("it holds more than one registry entry"));
                }
                entry = Some(codec::decode(&value).map_err(|why| BackupError::BadRecord {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    why,
                })?);
            }
            Item::Sys(key, value) if key.starts_with(BINARY_PREFIX) => {
                if binary.is_some() {
                    return Err(not_export("it holds more than one binary"));
                }
                binary = Some(value);
            }
            Item::Sys(key, _) => {
                return Err(not_export(&format!(
                "it holds the record {} (a whole-cluster backup? restore it with `backup restore`)",
                String::from_utf8_lossy(&key)
            )))
            }
            Item::Component(n) => {
                if name.is_some() {
                    return Err(not_export(
                        "it holds more than one component (a whole-cluster backup? restore it with `backup restore`)",
                    ));
                }
                name = Some(n);
            }
            Item::Pair(k, v) => {
                data_bytes += (k.len() + v.len()) as u64;
                if data_bytes > limit {
                    return Err(ExportError::TooLarge { limit });
                }
                pairs.push((k, v));
            }
        }
    }
    let entry = entry.ok_or_else(|| not_export("it holds no registry entry"))?;
    let binary = binary.ok_or_else(|| not_export("it holds no binary"))?;
    if sha256_hex(&binary) != entry.spec.sha256 {
        return Err(not_export("its binary is not the one its entry names"));
    }
    // A component with no store yet (it never wrote) exports no pairs and no store record.
    let name = name.unwrap_or_else(|| entry.spec.name.clone());
    if name != entry.spec.name {
        return Err(not_export(
            "its store and its registry entry name different components",
        ));
    }
    Ok(ComponentExport {
        header: reader.header().clone(),
        name,
        spec: entry.spec,
        binary,
        pairs,
        data_bytes,
    })
}
