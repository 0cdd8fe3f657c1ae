//! The RocksDB side of a commit: reads the stored sizes a batch's usage depends on, builds one
//! `WriteBatch` for a group of batches, writes it, then publishes the new usage and counters.
//! What is decided goes through [`fence`](super::fence) and [`usage`](super::usage).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rocksdb::{BoundColumnFamily, WriteBatch, WriteOptions};

use super::batch::{CommitBatch, Placement};
use super::fence::admit;
use super::usage::{apply_delta, base_usage, stage_usage, usage_change, ComponentKey};
use crate::meta::{encode_usage, usage_key};
use crate::names::SYS_CF;
use crate::store::{component_cf, lock, read, write, Core, Db};
use crate::StorageError;

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
    admit(batch, placements, usage)?;
    let mut cfs = Vec::with_capacity(batch.components.len());
    let mut staged: Vec<(&'b str, u64)> = Vec::new();
    let mut staged_sizes = HashMap::new();
    for cw in &batch.components {
        let name = cw.component.as_str();
        let cf = component_cf(db, name)?;
        let base = base_usage(name, &staged, new_usage, usage)?;
        let change = usage_change(cw, written, &mut staged_sizes, |k| {
            Ok(db.get_pinned_cf(&cf, k)?.map(|v| v.len()))
        })?;
        stage_usage(&mut staged, name, apply_delta(name, base, change));
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
