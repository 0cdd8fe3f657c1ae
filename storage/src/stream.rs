//! A whole database one record at a time, for backups: [`Storage::export_each`] walks ONE
//! RocksDB snapshot (sys records first, then each component's pairs) and hands each record to
//! a visitor, so a backup of any size is written without holding it in memory;
//! [`BulkLoad`] fills a fresh database from such a walk in bounded write batches.
//!
//! Usage metadata is never carried: a bulk load recomputes it from what it wrote. Placements
//! are not carried either: the node that runs a component sets its own.

use std::collections::HashMap;

use rocksdb::WriteBatch;

use crate::meta::{encode_usage, is_reserved, usage_key};
use crate::names::{cf_name, validate_name, SYS_CF};
use crate::store::{component_cf, write, Db};
use crate::{Storage, StorageError};

/// One record of a database walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    /// A sys record (never this crate's reserved metadata).
    Sys { key: &'a [u8], value: &'a [u8] },
    /// The start of a component's store: the pairs that follow are its own.
    Component(&'a str),
    /// A key/value pair of the component named last.
    Pair { key: &'a [u8], value: &'a [u8] },
}

/// Bytes a bulk load gathers before it writes them.
const LOAD_BATCH_BYTES: usize = 8 << 20;

fn sys_cf(db: &Db) -> Result<std::sync::Arc<rocksdb::BoundColumnFamily<'_>>, StorageError> {
    db.cf_handle(SYS_CF)
        .ok_or_else(|| StorageError::Closed("sys column family missing".into()))
}

impl Storage {
    /// Walks one consistent snapshot: first hands `first` the values the `peek` keys have in
    /// it (so a caller can say where the snapshot stands before anything else), then every sys
    /// record for which `take_sys(key)` holds, then each component (in name order) with its
    /// pairs. The visitor's error stops the walk and is returned.
    pub fn export_each<E: From<StorageError>>(
        &self,
        peek: &[&[u8]],
        first: impl FnOnce(Vec<Option<Vec<u8>>>) -> Result<(), E>,
        take_sys: impl Fn(&[u8]) -> bool,
        visit: &mut dyn FnMut(Record<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut names = self.component_names();
        names.sort();
        self.walk(&names, peek, first, take_sys, visit)
    }

    /// [`Storage::export_each`] of one component: the sys records `take_sys` takes, then
    /// the component's own pairs (none, and no [`Record::Component`], if it has no store).
    pub fn export_component_each<E: From<StorageError>>(
        &self,
        name: &str,
        peek: &[&[u8]],
        first: impl FnOnce(Vec<Option<Vec<u8>>>) -> Result<(), E>,
        take_sys: impl Fn(&[u8]) -> bool,
        visit: &mut dyn FnMut(Record<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.walk(&[name.to_string()], peek, first, take_sys, visit)
    }

    fn walk<E: From<StorageError>>(
        &self,
        names: &[String],
        peek: &[&[u8]],
        first: impl FnOnce(Vec<Option<Vec<u8>>>) -> Result<(), E>,
        take_sys: impl Fn(&[u8]) -> bool,
        visit: &mut dyn FnMut(Record<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let core = self.core();
        let guard = crate::store::read(&core.db);
        let db = guard
            .as_ref()
            .ok_or_else(|| StorageError::Closed("database is not open".into()))?;
        let snap = db.snapshot();
        let sys = sys_cf(db)?;
        let mut peeked = Vec::with_capacity(peek.len());
        for key in peek {
            peeked.push(snap.get_cf(&sys, key).map_err(StorageError::from)?);
        }
        first(peeked)?;
        let mut it = snap.raw_iterator_cf(&sys);
        it.seek_to_first();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !is_reserved(k) && take_sys(k) {
                visit(Record::Sys { key: k, value: v })?;
            }
            it.next();
        }
        it.status().map_err(StorageError::from)?;
        for name in names {
            // A family dropped since the name list was taken is not in the walk.
            let Ok(cf) = component_cf(db, name) else {
                continue;
            };
            visit(Record::Component(name))?;
            let mut it = snap.raw_iterator_cf(&cf);
            it.seek_to_first();
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                visit(Record::Pair { key: k, value: v })?;
                it.next();
            }
            it.status().map_err(StorageError::from)?;
        }
        Ok(())
    }

    /// Starts filling this database from a walk ([`Storage::export_each`] of another one).
    /// Meant for a fresh database no one else writes to: what it writes is not one atomic
    /// write, so a caller that gives up deletes the database.
    pub fn bulk_load(&self) -> BulkLoad<'_> {
        BulkLoad {
            storage: self,
            pending: Vec::new(),
            pending_bytes: 0,
            current: None,
            usage: HashMap::new(),
        }
    }
}

/// One write waiting in a [`BulkLoad`]: `None` is the sys family.
type PendingWrite = (Option<String>, Vec<u8>, Vec<u8>);

/// A database being filled record by record ([`Storage::bulk_load`]).
pub struct BulkLoad<'s> {
    storage: &'s Storage,
    pending: Vec<PendingWrite>,
    pending_bytes: usize,
    current: Option<String>,
    usage: HashMap<String, u64>,
}

impl BulkLoad<'_> {
    /// Takes one record of a walk.
    pub fn record(&mut self, record: Record<'_>) -> Result<(), StorageError> {
        match record {
            Record::Sys { key, value } => self.put_sys(key, value),
            Record::Component(name) => self.component(name),
            Record::Pair { key, value } => self.put(key, value),
        }
    }

    /// A sys record (this crate's reserved keys are refused).
    pub fn put_sys(&mut self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        if is_reserved(key) {
            return Err(StorageError::ReservedKey);
        }
        self.push(None, key, value)
    }

    /// Creates the component's store; the pairs that follow are its.
    pub fn component(&mut self, name: &str) -> Result<(), StorageError> {
        validate_name(name)?;
        // Pairs of the previous component are written before a family is created (the
        // creation may re-open the database).
        self.flush()?;
        self.storage.create_component(name)?;
        self.usage.insert(name.to_string(), 0);
        self.current = Some(name.to_string());
        Ok(())
    }

    /// A pair of the component named last.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        let Some(name) = self.current.clone() else {
            return Err(StorageError::Closed(
                "a component's pair came before any component".into(),
            ));
        };
        *self.usage.entry(name.clone()).or_insert(0) += (key.len() + value.len()) as u64;
        self.push(Some(name), key, value)
    }

    fn push(
        &mut self,
        component: Option<String>,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StorageError> {
        self.pending_bytes += key.len() + value.len();
        self.pending.push((component, key.to_vec(), value.to_vec()));
        if self.pending_bytes >= LOAD_BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        self.storage.core().with_db(|db| {
            let sys = sys_cf(db)?;
            let mut wb = WriteBatch::default();
            for (component, k, v) in &pending {
                match component {
                    None => wb.put_cf(&sys, k, v),
                    Some(name) => {
                        let cf = db
                            .cf_handle(&cf_name(name))
                            .ok_or_else(|| StorageError::UnknownComponent(name.clone()))?;
                        wb.put_cf(&cf, k, v);
                    }
                }
            }
            Ok(db.write(wb)?)
        })
    }

    /// Writes what is left and each component's usage, and syncs: the database then holds
    /// the whole walk.
    pub fn finish(mut self) -> Result<(), StorageError> {
        self.flush()?;
        let core = self.storage.core();
        core.with_db(|db| {
            let sys = sys_cf(db)?;
            let mut wb = WriteBatch::default();
            for (name, used) in &self.usage {
                wb.put_cf(&sys, usage_key(name), encode_usage(*used));
            }
            let mut wo = rocksdb::WriteOptions::default();
            wo.set_sync(true);
            Ok(db.write_opt(wb, &wo)?)
        })?;
        let mut usage = write(&core.usage);
        for (name, used) in self.usage.drain() {
            usage.insert(name, used);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CommitBatch, ComponentWrites, StorageOptions};

    fn put(component: &str, k: &str, v: &str) -> CommitBatch {
        CommitBatch {
            fence: None,
            components: vec![ComponentWrites {
                component: component.into(),
                writes: vec![(k.as_bytes().to_vec(), Some(v.as_bytes().to_vec()))],
                usage_delta: (k.len() + v.len()) as i64,
            }],
            sys: vec![(format!("ob/{component}").into_bytes(), Some(b"x".to_vec()))],
        }
    }

    fn walk(s: &Storage, peek: &[u8]) -> (Option<Vec<u8>>, Vec<String>) {
        let mut peeked = None;
        let mut seen = Vec::new();
        s.export_each::<StorageError>(
            &[peek],
            |mut v| {
                peeked = v.remove(0);
                Ok(())
            },
            |k| !k.starts_with(b"skip/"),
            &mut |r| {
                seen.push(match r {
                    Record::Sys { key, value } => format!(
                        "sys {}={}",
                        String::from_utf8_lossy(key),
                        String::from_utf8_lossy(value)
                    ),
                    Record::Component(n) => format!("component {n}"),
                    Record::Pair { key, value } => format!(
                        "pair {}={}",
                        String::from_utf8_lossy(key),
                        String::from_utf8_lossy(value)
                    ),
                });
                Ok(())
            },
        )
        .unwrap();
        (peeked, seen)
    }

    #[test]
    fn a_walk_loaded_into_a_fresh_database_gives_the_same_walk_and_usage() {
        let a_dir = tempfile::tempdir().unwrap();
        let b_dir = tempfile::tempdir().unwrap();
        let a = Storage::open(a_dir.path(), StorageOptions::default()).unwrap();
        a.create_component("counter").unwrap();
        a.create_component("echo").unwrap();
        a.commit(put("counter", "n", "41")).unwrap();
        a.commit(put("echo", "k", "v")).unwrap();
        a.commit(CommitBatch::sys_only(vec![
            (b"meta".to_vec(), Some(b"here".to_vec())),
            (b"skip/me".to_vec(), Some(b"no".to_vec())),
        ]))
        .unwrap();
        let (peeked, seen) = walk(&a, b"meta");
        assert_eq!(peeked.as_deref(), Some(&b"here"[..]));
        assert_eq!(
            seen,
            [
                "sys meta=here",
                "sys ob/counter=x",
                "sys ob/echo=x",
                "component counter",
                "pair n=41",
                "component echo",
                "pair k=v",
            ]
        );

        let b = Storage::open(b_dir.path(), StorageOptions::default()).unwrap();
        let mut load = b.bulk_load();
        a.export_each::<StorageError>(&[b"meta"], |_| Ok(()), |_| true, &mut |r| load.record(r))
            .unwrap();
        load.finish().unwrap();
        assert_eq!(walk(&b, b"meta"), walk(&a, b"meta"));
        assert_eq!(b.usage_bytes("counter").unwrap(), 3);
        assert_eq!(b.get("echo", b"k").unwrap().as_deref(), Some(&b"v"[..]));
        // Reopened, it holds the same.
        drop(b);
        let b = Storage::open(b_dir.path(), StorageOptions::default()).unwrap();
        assert_eq!(walk(&b, b"meta"), walk(&a, b"meta"));
        assert_eq!(b.usage_bytes("counter").unwrap(), 3);
    }

    #[test]
    fn a_load_refuses_reserved_keys_bad_names_and_orphan_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path(), StorageOptions::default()).unwrap();
        let mut load = s.bulk_load();
        assert!(matches!(
            load.put_sys(b"\xff\xffairssys-storage/usage/x", b"1"),
            Err(StorageError::ReservedKey)
        ));
        assert!(load.component("Bad Name").is_err());
        assert!(load.put(b"k", b"v").is_err(), "a pair needs a component");
    }

    #[test]
    fn a_visitor_error_stops_the_walk() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path(), StorageOptions::default()).unwrap();
        s.create_component("a").unwrap();
        s.commit(put("a", "k", "v")).unwrap();
        let mut visited = 0;
        let r = s.export_each::<StorageError>(&[b"none"], |_| Ok(()), |_| true, &mut |_| {
            visited += 1;
            Err(StorageError::Closed("stop".into()))
        });
        assert!(r.is_err());
        assert_eq!(visited, 1);
    }
}
