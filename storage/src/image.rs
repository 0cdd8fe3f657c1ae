//! A whole-database image for Raft snapshots: [`Storage::export_image`] reads every component
//! family and the chosen sys records from ONE RocksDB snapshot (a consistent point: what a
//! single write made visible is in it entirely or not at all); [`Storage::import_image`]
//! replaces this database's components and chosen sys records with an image in one write.
//!
//! Usage metadata is not carried: it is recomputed from the imported data, so it can never
//! disagree with it.

use std::collections::{BTreeSet, HashMap};

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use crate::meta::{encode_usage, is_reserved, usage_key};
use crate::names::{cf_name, validate_name, SYS_CF};
use crate::store::{component_cf, lock, write, Db};
use crate::{Storage, StorageError};

/// Key/value pairs in key order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Every component's data and a selection of sys records, as of one point in time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateImage {
    /// `(component, its pairs)`, components in name order.
    pub components: Vec<(String, Pairs)>,
    /// The selected sys records.
    pub sys: Pairs,
}

impl StateImage {
    /// Bytes of keys and values carried.
    pub fn approx_bytes(&self) -> usize {
        fn sum(p: &Pairs) -> usize {
            p.iter().map(|(k, v)| k.len() + v.len()).sum()
        }
        sum(&self.sys) + self.components.iter().map(|(_, p)| sum(p)).sum::<usize>()
    }
}

fn sys_handle(db: &Db) -> Result<std::sync::Arc<rocksdb::BoundColumnFamily<'_>>, StorageError> {
    db.cf_handle(SYS_CF)
        .ok_or_else(|| StorageError::Closed("sys column family missing".into()))
}

impl Storage {
    /// Reads every component and every sys record for which `take_sys(key)` holds (reserved
    /// metadata never) from one consistent RocksDB snapshot.
    pub fn export_image(
        &self,
        take_sys: impl Fn(&[u8]) -> bool,
    ) -> Result<StateImage, StorageError> {
        let names = self.component_names();
        self.core().with_db(|db| {
            let snap = db.snapshot();
            let mut image = StateImage::default();
            for name in names {
                // A family dropped since the name list was taken is simply not in the image.
                let Ok(cf) = component_cf(db, &name) else {
                    continue;
                };
                let mut pairs = Vec::new();
                let mut it = snap.raw_iterator_cf(&cf);
                it.seek_to_first();
                while let (Some(k), Some(v)) = (it.key(), it.value()) {
                    pairs.push((k.to_vec(), v.to_vec()));
                    it.next();
                }
                it.status()?;
                image.components.push((name, pairs));
            }
            let sys = sys_handle(db)?;
            let mut it = snap.raw_iterator_cf(&sys);
            it.seek_to_first();
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                if !is_reserved(k) && take_sys(k) {
                    image.sys.push((k.to_vec(), v.to_vec()));
                }
                it.next();
            }
            it.status()?;
            Ok(image)
        })
    }

    /// Makes this database hold exactly the image's components (families missing from it are
    /// dropped, new ones created) and, among sys records for which `replaced_sys(key)` holds,
    /// exactly the image's ones. Other sys records stay. One synced write carries the data.
    pub fn import_image(
        &self,
        image: &StateImage,
        replaced_sys: impl Fn(&[u8]) -> bool,
    ) -> Result<(), StorageError> {
        // Everything is checked before anything changes: an image from a buggy or hostile
        // peer leaves this database as it was.
        for (name, _) in &image.components {
            validate_name(name)?;
        }
        if image.sys.iter().any(|(k, _)| is_reserved(k)) {
            return Err(StorageError::ReservedKey);
        }
        let wanted: BTreeSet<&str> = image.components.iter().map(|(n, _)| n.as_str()).collect();
        let names: Vec<&str> = wanted.iter().copied().collect();
        // New families first (empty until the write): a crash before the write leaves
        // only empty stores the registry does not name, which the next open drops.
        self.create_components(&names)?;

        let core = self.core();
        // Writers wait: nothing may commit between the deletes and the puts.
        let _placements = lock(&core.commit);
        let mut usage_after: HashMap<String, u64> = HashMap::new();
        self.core().with_db(|db| {
            let sys = sys_handle(db)?;
            let mut wb = WriteBatch::default();
            for (name, pairs) in &image.components {
                let cf = db
                    .cf_handle(&cf_name(name))
                    .ok_or_else(|| StorageError::UnknownComponent(name.clone()))?;
                let mut it = db.raw_iterator_cf(&cf);
                it.seek_to_first();
                while let Some(k) = it.key() {
                    wb.delete_cf(&cf, k);
                    it.next();
                }
                it.status()?;
                let mut used = 0u64;
                for (k, v) in pairs {
                    wb.put_cf(&cf, k, v);
                    used += (k.len() + v.len()) as u64;
                }
                wb.put_cf(&sys, usage_key(name), encode_usage(used));
                usage_after.insert(name.clone(), used);
            }
            let mut it = db.raw_iterator_cf(&sys);
            it.seek_to_first();
            while let Some(k) = it.key() {
                if !is_reserved(k) && replaced_sys(k) {
                    wb.delete_cf(&sys, k);
                }
                it.next();
            }
            it.status()?;
            for (k, v) in &image.sys {
                wb.put_cf(&sys, k, v);
            }
            let mut wo = rocksdb::WriteOptions::default();
            wo.set_sync(core.opts.sync_writes);
            Ok(db.write_opt(wb, &wo)?)
        })?;
        let mut usage = write(&core.usage);
        for (name, used) in usage_after {
            usage.insert(name, used);
        }
        drop(usage);
        drop(_placements);
        // Families the image does not hold go only once its data is in: a failed write
        // above leaves them as they were.
        for name in self.component_names() {
            if !wanted.contains(name.as_str()) {
                self.drop_component(&name)?;
            }
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

    #[test]
    fn an_image_moves_components_and_selected_sys_records() {
        let a_dir = tempfile::tempdir().unwrap();
        let b_dir = tempfile::tempdir().unwrap();
        let a = Storage::open(a_dir.path(), StorageOptions::default()).unwrap();
        let b = Storage::open(b_dir.path(), StorageOptions::default()).unwrap();
        a.create_component("counter").unwrap();
        a.commit(put("counter", "n", "41")).unwrap();
        a.commit(CommitBatch::sys_only(vec![(
            b"raft/log/1".to_vec(),
            Some(b"l".to_vec()),
        )]))
        .unwrap();
        // b holds a component a does not have, stale data, and its own log.
        b.create_component("gone").unwrap();
        b.create_component("counter").unwrap();
        b.commit(put("counter", "stale", "1")).unwrap();
        b.commit(CommitBatch::sys_only(vec![
            (b"raft/log/7".to_vec(), Some(b"mine".to_vec())),
            (b"ob/old".to_vec(), Some(b"y".to_vec())),
        ]))
        .unwrap();

        let not_log = |k: &[u8]| !k.starts_with(b"raft/log/");
        let image = a.export_image(not_log).unwrap();
        assert_eq!(image.components.len(), 1);
        assert!(image.sys.iter().all(|(k, _)| !k.starts_with(b"raft/log/")));
        b.import_image(&image, not_log).unwrap();

        assert_eq!(b.component_names(), vec!["counter".to_string()]);
        assert_eq!(b.get("counter", b"n").unwrap(), Some(b"41".to_vec()));
        assert_eq!(b.get("counter", b"stale").unwrap(), None);
        assert_eq!(b.usage_bytes("counter").unwrap(), 3);
        assert_eq!(b.sys_get(b"ob/counter").unwrap(), Some(b"x".to_vec()));
        assert_eq!(b.sys_get(b"ob/old").unwrap(), None, "replaced records go");
        assert_eq!(
            b.sys_get(b"raft/log/7").unwrap(),
            Some(b"mine".to_vec()),
            "records outside the replaced set stay"
        );
        // Usage survives a re-open (it was persisted with the data).
        drop(b);
        let b = Storage::open(b_dir.path(), StorageOptions::default()).unwrap();
        assert_eq!(b.usage_bytes("counter").unwrap(), 3);
    }

    /// An image no node could have built (a peer's crafted snapshot) is refused whole: the
    /// database keeps every component and record it had, the ones the image leaves out too.
    #[test]
    fn a_bad_image_is_refused_before_anything_changes() {
        let dir = tempfile::tempdir().unwrap();
        let db = Storage::open(dir.path(), StorageOptions::default()).unwrap();
        db.create_component("kept").unwrap();
        db.commit(put("kept", "n", "7")).unwrap();
        let bad_name = StateImage {
            components: vec![("../evil".into(), Vec::new())],
            sys: Vec::new(),
        };
        let reserved = StateImage {
            components: vec![("other".into(), Vec::new())],
            sys: vec![(usage_key("kept"), encode_usage(0).to_vec())],
        };
        for image in [bad_name, reserved] {
            assert!(db.import_image(&image, |_| true).is_err(), "{image:?}");
            assert_eq!(db.component_names(), vec!["kept".to_string()]);
            assert_eq!(db.get("kept", b"n").unwrap(), Some(b"7".to_vec()));
            assert_eq!(db.sys_get(b"ob/kept").unwrap(), Some(b"x".to_vec()));
            assert_eq!(db.usage_bytes("kept").unwrap(), 2);
        }
    }
}
