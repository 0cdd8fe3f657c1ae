//! [`Storage`]: opening the database, creating and dropping components, reads, placement
//! generations, and the hand-off of commits to the committer thread.
//!
//! Locks, always taken in this order: `commit` (serialises commits, component creation and
//! removal, and placement changes; holds the placements) → `db` (read for every operation, write
//! only to swap the database during a bulk creation) → `usage`. Reads take `db` alone, so they
//! never wait for a commit's fsync.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{
    mpsc, Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
use std::thread::JoinHandle;

use rocksdb::{
    checkpoint::Checkpoint, BoundColumnFamily, ColumnFamilyDescriptor, DBWithThreadMode,
    MultiThreaded, Options, ReadOptions, WriteBatch, WriteOptions,
};
use tokio::sync::oneshot;

use crate::commit::{apply_group, spawn_committer, Job};
use crate::meta::{
    decode, encode_placement, encode_usage, is_reserved, placement_key, usage_key, MetaRecord,
    RESERVED_PREFIX,
};
use crate::names::{cf_name, component_of_cf, validate_name, SYS_CF};
use crate::{CommitBatch, InFlightWrites, Placement, StorageError, StorageOptions, Txn, TxnLimits};

pub(crate) type Db = DBWithThreadMode<MultiThreaded>;

/// [`Storage::create_components`] creates this many new components or more by re-opening the
/// database with all of them as missing column families (RocksDB then writes its OPTIONS file
/// once), and fewer one at a time (each single creation rewrites the OPTIONS file of every
/// family). See `examples/cf_scale.rs` for the measurement behind the number.
pub const BULK_CREATE_MIN: usize = 4;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

/// Returns freed heap pages to the OS. Opening many column families makes RocksDB allocate about
/// as much temporary memory (parsing and verifying its OPTIONS file) as the families keep; glibc
/// keeps those pages, doubling the resident size (measured with 1,000 families: ~110 KiB per
/// family before, ~55 KiB after).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::os::raw::c_int;
        }
        // SAFETY: glibc's malloc_trim only releases free memory of the allocator's own arenas;
        // it takes no pointers and is thread-safe.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// The column family of `component`, or [`StorageError::UnknownComponent`].
pub(crate) fn component_cf<'db>(
    db: &'db Db,
    component: &str,
) -> Result<Arc<BoundColumnFamily<'db>>, StorageError> {
    db.cf_handle(&cf_name(component))
        .ok_or_else(|| StorageError::UnknownComponent(component.to_string()))
}

/// The smallest key greater than every key starting with `prefix`, if there is one.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// State shared by every `Storage` clone and the committer thread.
pub(crate) struct Core {
    path: PathBuf,
    pub(crate) opts: StorageOptions,
    rocks: Options,
    /// `None` only after a bulk re-open failed twice.
    pub(crate) db: RwLock<Option<Db>>,
    /// Serialises writers; holds each component's current placement.
    pub(crate) commit: Mutex<HashMap<String, Placement>>,
    /// Each component's usage in bytes; its key set is the set of components.
    pub(crate) usage: RwLock<HashMap<String, u64>>,
    pub(crate) stats_groups: AtomicU64,
    pub(crate) stats_syncs: AtomicU64,
    pub(crate) stats_batches: AtomicU64,
}

impl Core {
    pub(crate) fn with_db<R>(
        &self,
        f: impl FnOnce(&Db) -> Result<R, StorageError>,
    ) -> Result<R, StorageError> {
        let guard = read(&self.db);
        match guard.as_ref() {
            Some(db) => f(db),
            None => Err(StorageError::Closed("database is not open".into())),
        }
    }

    fn write_opts(&self) -> WriteOptions {
        let mut wo = WriteOptions::default();
        wo.set_sync(self.opts.sync_writes);
        wo
    }
}

/// Opens the database at `dir` with every existing column family, `sys`, and `extra`.
fn open_db(rocks: &Options, dir: &Path, extra: &[String]) -> Result<Db, StorageError> {
    let mut names = if dir.join("CURRENT").exists() {
        Db::list_cf(rocks, dir)?
    } else {
        Vec::new()
    };
    for n in ["default", SYS_CF]
        .into_iter()
        .map(str::to_string)
        .chain(extra.iter().cloned())
    {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    let descriptors = names
        .iter()
        .map(|n| ColumnFamilyDescriptor::new(n, rocks.clone()));
    Ok(Db::open_cf_descriptors(rocks, dir, descriptors)?)
}

/// Writes fresh metadata (usage 0, no placement) for newly created components.
fn reset_meta(db: &Db, names: &[&str], wo: &WriteOptions) -> Result<(), StorageError> {
    let sys = db
        .cf_handle(SYS_CF)
        .ok_or_else(|| StorageError::Closed("sys column family missing".into()))?;
    let mut wb = WriteBatch::default();
    for n in names {
        wb.put_cf(&sys, usage_key(n), encode_usage(0));
        wb.delete_cf(&sys, placement_key(n));
    }
    Ok(db.write_opt(wb, wo)?)
}

/// Reads every component's usage and placement; deletes metadata of components whose column
/// family no longer exists (a crash between dropping a family and deleting its metadata).
type Loaded = (HashMap<String, u64>, HashMap<String, Placement>);

fn load_meta(db: &Db) -> Result<Loaded, StorageError> {
    let mut usage: HashMap<String, u64> = HashMap::new();
    for cf in Db::list_cf(&Options::default(), db.path())? {
        if let Some(c) = component_of_cf(&cf) {
            usage.insert(c.to_string(), 0);
        } else if cf != SYS_CF && cf != "default" {
            tracing::warn!(cf, "ignoring a column family that is not a component");
        }
    }
    let sys = db
        .cf_handle(SYS_CF)
        .ok_or_else(|| StorageError::Closed("sys column family missing".into()))?;
    let mut placements = HashMap::new();
    let mut stale = Vec::new();
    let mut it = db.raw_iterator_cf(&sys);
    it.seek(RESERVED_PREFIX);
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        if !k.starts_with(RESERVED_PREFIX) {
            break;
        }
        match decode(k, v)? {
            MetaRecord::Usage(c, u) => match usage.get_mut(&c) {
                Some(slot) => *slot = u,
                None => stale.push(k.to_vec()),
            },
            MetaRecord::Placement(c, p) => {
                if usage.contains_key(&c) {
                    placements.insert(c, p);
                } else {
                    stale.push(k.to_vec());
                }
            }
        }
        it.next();
    }
    it.status()?;
    drop(it);
    if !stale.is_empty() {
        tracing::info!(
            records = stale.len(),
            "removing metadata of dropped components"
        );
        let mut wb = WriteBatch::default();
        for k in stale {
            wb.delete_cf(&sys, k);
        }
        db.write(wb)?;
    }
    Ok((usage, placements))
}

/// The handle behind every `Storage` clone. Dropping it stops the committer thread (after it has
/// answered everything queued) and then closes the database.
struct Handle {
    core: Arc<Core>,
    committer: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        drop(self.committer.take());
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the committer thread panicked");
            }
        }
        // `core` drops after this: the committer's reference is gone, so the database closes
        // here and a re-open in the same process works as soon as the last clone is dropped.
    }
}

/// RocksDB storage of one node. Cheap to clone; the database closes when the last clone (and the
/// last [`Txn`], which holds one) is dropped.
#[derive(Clone)]
pub struct Storage {
    h: Arc<Handle>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("path", &self.h.core.path)
            .field("components", &read(&self.h.core.usage).len())
            .finish()
    }
}

/// Counters of the committer (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// RocksDB writes done for commits.
    pub groups: u64,
    /// Those of them that were synced to disk (an fsync of the write-ahead log).
    pub syncs: u64,
    /// Batches committed by those writes.
    pub batches: u64,
}

impl Storage {
    pub(crate) fn core(&self) -> &Core {
        &self.h.core
    }

    /// Opens (or creates) the database in `dir`: every existing column family in one call, `sys`
    /// created if missing, usage and placements loaded into memory, committer thread started.
    pub fn open(dir: &Path, opts: StorageOptions) -> Result<Storage, StorageError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StorageError::Io(format!("creating {}: {e}", dir.display())))?;
        let rocks = opts.rocks_options();
        let db = open_db(&rocks, dir, &[])?;
        let (usage, placements) = load_meta(&db)?;
        release_free_memory();
        tracing::debug!(path = %dir.display(), components = usage.len(), "storage opened");
        let core = Arc::new(Core {
            path: dir.to_path_buf(),
            opts,
            rocks,
            db: RwLock::new(Some(db)),
            commit: Mutex::new(placements),
            usage: RwLock::new(usage),
            stats_groups: AtomicU64::new(0),
            stats_syncs: AtomicU64::new(0),
            stats_batches: AtomicU64::new(0),
        });
        let (tx, thread) = spawn_committer(core.clone())?;
        Ok(Storage {
            h: Arc::new(Handle {
                core,
                committer: Some(tx),
                thread: Some(thread),
            }),
        })
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.core().path
    }

    /// Creates a component's column family with usage 0 and no placement. Creating an existing
    /// component does nothing. Each creation costs time proportional to the number of existing
    /// families (RocksDB rewrites its OPTIONS file): never call it on the message path, and use
    /// [`Storage::create_components`] when many arrive at once.
    pub fn create_component(&self, name: &str) -> Result<(), StorageError> {
        validate_name(name)?;
        let core = self.core();
        let mut placements = lock(&core.commit);
        if read(&core.usage).contains_key(name) {
            return Ok(());
        }
        core.with_db(|db| {
            let cf = cf_name(name);
            if db.cf_handle(&cf).is_none() {
                db.create_cf(&cf, &core.rocks)?;
            }
            reset_meta(db, &[name], &core.write_opts())
        })?;
        release_free_memory();
        placements.remove(name);
        write(&core.usage).insert(name.to_string(), 0);
        Ok(())
    }

    /// Creates many components at once (snapshot install, replay). Names already present are
    /// skipped; all names are validated before anything is created. From [`BULK_CREATE_MIN`] new
    /// names on, the database is closed and re-opened with the new families as missing ones,
    /// which costs one re-open instead of one OPTIONS rewrite per family; reads and commits wait
    /// meanwhile.
    pub fn create_components(&self, names: &[&str]) -> Result<(), StorageError> {
        for n in names {
            validate_name(n)?;
        }
        let core = self.core();
        let mut placements = lock(&core.commit);
        let new: Vec<&str> = {
            let usage = read(&core.usage);
            let set: BTreeSet<&str> = names
                .iter()
                .copied()
                .filter(|n| !usage.contains_key(*n))
                .collect();
            set.into_iter().collect()
        };
        if new.is_empty() {
            return Ok(());
        }
        if new.len() < BULK_CREATE_MIN {
            core.with_db(|db| {
                for n in &new {
                    let cf = cf_name(n);
                    if db.cf_handle(&cf).is_none() {
                        db.create_cf(&cf, &core.rocks)?;
                    }
                }
                Ok(())
            })?;
        } else {
            let extra: Vec<String> = new.iter().map(|n| cf_name(n)).collect();
            let mut guard = write(&core.db);
            // Closes the database: nothing else can hold it while the write lock is held.
            drop(guard.take());
            match open_db(&core.rocks, &core.path, &extra) {
                Ok(db) => {
                    *guard = Some(db);
                    release_free_memory();
                }
                Err(e) => {
                    tracing::error!(error = %e, "bulk creation re-open failed; re-opening as before");
                    match open_db(&core.rocks, &core.path, &[]) {
                        Ok(db) => *guard = Some(db),
                        Err(e2) => tracing::error!(error = %e2, "storage is closed"),
                    }
                    return Err(e);
                }
            }
        }
        core.with_db(|db| reset_meta(db, &new, &core.write_opts()))?;
        let mut usage = write(&core.usage);
        for n in new {
            placements.remove(n);
            usage.insert(n.to_string(), 0);
        }
        Ok(())
    }

    /// Drops a component's column family (its data) and its metadata. Returns whether it
    /// existed. A later [`Storage::create_component`] of the same name starts empty.
    pub fn drop_component(&self, name: &str) -> Result<bool, StorageError> {
        validate_name(name)?;
        let core = self.core();
        let mut placements = lock(&core.commit);
        if !read(&core.usage).contains_key(name) {
            return Ok(false);
        }
        core.with_db(|db| {
            db.drop_cf(&cf_name(name))?;
            placements.remove(name);
            write(&core.usage).remove(name);
            // After the family: a crash in between leaves stale metadata that `open` removes.
            let sys = db
                .cf_handle(SYS_CF)
                .ok_or_else(|| StorageError::Closed("sys column family missing".into()))?;
            let mut wb = WriteBatch::default();
            wb.delete_cf(&sys, usage_key(name));
            wb.delete_cf(&sys, placement_key(name));
            Ok(db.write_opt(wb, &core.write_opts())?)
        })?;
        release_free_memory();
        Ok(true)
    }

    /// Whether the component exists.
    pub fn has_component(&self, name: &str) -> bool {
        read(&self.core().usage).contains_key(name)
    }

    /// Every component, sorted.
    pub fn component_names(&self) -> Vec<String> {
        let mut v: Vec<String> = read(&self.core().usage).keys().cloned().collect();
        v.sort_unstable();
        v
    }

    /// A component's committed value for `key`.
    pub fn get(&self, component: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.core().with_db(|db| {
            let cf = component_cf(db, component)?;
            Ok(db.get_cf(&cf, key)?)
        })
    }

    /// The length of a component's committed value for `key` (no copy).
    pub(crate) fn value_len(
        &self,
        component: &str,
        key: &[u8],
    ) -> Result<Option<usize>, StorageError> {
        self.core().with_db(|db| {
            let cf = component_cf(db, component)?;
            Ok(db.get_pinned_cf(&cf, key)?.map(|v| v.len()))
        })
    }

    fn scan(
        db: &Db,
        cf: &Arc<BoundColumnFamily<'_>>,
        prefix: &[u8],
        mut each: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), StorageError> {
        let mut ro = ReadOptions::default();
        if let Some(end) = prefix_end(prefix) {
            ro.set_iterate_upper_bound(end);
        }
        let mut it = db.raw_iterator_cf_opt(cf, ro);
        it.seek(prefix);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(prefix) {
                break;
            }
            each(k, v);
            it.next();
        }
        Ok(it.status()?)
    }

    /// A component's committed keys starting with `prefix`, in byte order.
    pub fn keys_with_prefix(
        &self,
        component: &str,
        prefix: &[u8],
    ) -> Result<Vec<Vec<u8>>, StorageError> {
        self.core().with_db(|db| {
            let cf = component_cf(db, component)?;
            let mut out = Vec::new();
            Self::scan(db, &cf, prefix, |k, _| out.push(k.to_vec()))?;
            Ok(out)
        })
    }

    /// At most `limit` of a component's committed keys that start with `prefix` and come
    /// after `after` (all of them when `None`), in byte order: one page of a listing.
    pub fn keys_with_prefix_page(
        &self,
        component: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StorageError> {
        self.core().with_db(|db| {
            let cf = component_cf(db, component)?;
            let mut ro = ReadOptions::default();
            if let Some(end) = prefix_end(prefix) {
                ro.set_iterate_upper_bound(end);
            }
            let mut it = db.raw_iterator_cf_opt(&cf, ro);
            match after {
                Some(a) if a >= prefix => {
                    it.seek(a);
                    if it.key() == Some(a) {
                        it.next();
                    }
                }
                _ => it.seek(prefix),
            }
            let mut out = Vec::new();
            while out.len() < limit {
                let Some(k) = it.key() else { break };
                if !k.starts_with(prefix) {
                    break;
                }
                out.push(k.to_vec());
                it.next();
            }
            it.status()?;
            Ok(out)
        })
    }

    /// A component's stored bytes (sum of key and value lengths), exact as of the last commit.
    pub fn usage_bytes(&self, component: &str) -> Result<u64, StorageError> {
        read(&self.core().usage)
            .get(component)
            .copied()
            .ok_or_else(|| StorageError::UnknownComponent(component.to_string()))
    }

    /// A sys record. Keys starting with `0xFF 0xFF` are reserved ([`StorageError::ReservedKey`]).
    pub fn sys_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        if is_reserved(key) {
            return Err(StorageError::ReservedKey);
        }
        self.core().with_db(|db| {
            let sys = db
                .cf_handle(SYS_CF)
                .ok_or_else(|| StorageError::Closed("sys column family missing".into()))?;
            Ok(db.get_cf(&sys, key)?)
        })
    }

    /// Every sys record whose key starts with `prefix`, in key order (the reserved range is
    /// never included).
    #[allow(clippy::type_complexity)] // the pair of byte vectors is the plain, documented shape
    pub fn sys_scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StorageError> {
        if is_reserved(prefix) {
            return Err(StorageError::ReservedKey);
        }
        self.core().with_db(|db| {
            let sys = db
                .cf_handle(SYS_CF)
                .ok_or_else(|| StorageError::Closed("sys column family missing".into()))?;
            let mut out = Vec::new();
            Self::scan(db, &sys, prefix, |k, v| {
                if !is_reserved(k) {
                    out.push((k.to_vec(), v.to_vec()));
                }
            })?;
            Ok(out)
        })
    }

    /// Sys records with `start <= key < end`, in key order, at most `limit` of them (the
    /// reserved range is never included). Raft reads its log through this.
    #[allow(clippy::type_complexity)] // the pair of byte vectors is the plain, documented shape
    pub fn sys_range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StorageError> {
        if is_reserved(start) {
            return Err(StorageError::ReservedKey);
        }
        self.core().with_db(|db| {
            let sys = db
                .cf_handle(SYS_CF)
                .ok_or_else(|| StorageError::Closed("sys column family missing".into()))?;
            let mut ro = ReadOptions::default();
            ro.set_iterate_upper_bound(end.to_vec());
            let mut it = db.raw_iterator_cf_opt(&sys, ro);
            it.seek(start);
            let mut out = Vec::new();
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                if out.len() >= limit || is_reserved(k) {
                    break;
                }
                out.push((k.to_vec(), v.to_vec()));
                it.next();
            }
            it.status()?;
            Ok(out)
        })
    }

    /// Records a component's current placement (persisted, synced). From now on a commit fenced
    /// with another generation (or, at this generation, another node) is refused. Waits for an
    /// in-flight group commit, so no commit checked against the old placement lands after it.
    pub fn set_generation(
        &self,
        component: &str,
        node_id: u64,
        generation: u64,
    ) -> Result<(), StorageError> {
        let core = self.core();
        let mut placements = lock(&core.commit);
        if !read(&core.usage).contains_key(component) {
            return Err(StorageError::UnknownComponent(component.to_string()));
        }
        let p = Placement {
            node_id,
            generation,
        };
        core.with_db(|db| {
            let sys = db
                .cf_handle(SYS_CF)
                .ok_or_else(|| StorageError::Closed("sys column family missing".into()))?;
            Ok(db.put_cf_opt(
                &sys,
                placement_key(component),
                encode_placement(p),
                &core.write_opts(),
            )?)
        })?;
        placements.insert(component.to_string(), p);
        Ok(())
    }

    /// A component's current placement, `None` when none was recorded.
    pub fn placement(&self, component: &str) -> Result<Option<Placement>, StorageError> {
        let core = self.core();
        let placements = lock(&core.commit);
        if !read(&core.usage).contains_key(component) {
            return Err(StorageError::UnknownComponent(component.to_string()));
        }
        Ok(placements.get(component).copied())
    }

    /// Starts a handler's transaction on `component`.
    pub fn begin(&self, component: &str, limits: TxnLimits) -> Result<Txn, StorageError> {
        let base = self.usage_bytes(component)?;
        Ok(Txn::new(
            self.clone(),
            component.to_string(),
            limits,
            base,
            None,
        ))
    }

    /// Begins a transaction on top of the component's transactions still committing: it reads
    /// their writes before the store and starts from the usage they leave.
    pub fn begin_over(
        &self,
        component: &str,
        limits: TxnLimits,
        in_flight: Arc<InFlightWrites>,
    ) -> Result<Txn, StorageError> {
        // The layer forgets a transaction only after the store has applied it, so when it has
        // no usage the store's is current.
        let base = match in_flight.usage() {
            Some(u) => {
                if !self.has_component(component) {
                    return Err(StorageError::UnknownComponent(component.to_string()));
                }
                u
            }
            None => self.usage_bytes(component)?,
        };
        Ok(Txn::new(
            self.clone(),
            component.to_string(),
            limits,
            base,
            Some(in_flight),
        ))
    }

    /// Commits one batch on the calling thread with one RocksDB write (synced per
    /// [`StorageOptions::sync_writes`]). Blocks: from async code use [`Storage::commit_async`].
    pub fn commit(&self, batch: CommitBatch) -> Result<(), StorageError> {
        apply_group(self.core(), std::slice::from_ref(&batch), true)
            .into_iter()
            .next()
            .unwrap_or(Ok(()))
    }

    /// Queues a batch for the committer thread, which merges every waiting batch into one synced
    /// write. The batch is queued when this is called (so calls commit in call order); the future
    /// resolves once it is durable, or with the error that refused it.
    pub fn commit_async(
        &self,
        batch: CommitBatch,
    ) -> impl Future<Output = Result<(), StorageError>> + Send + 'static {
        self.queue(batch, true)
    }

    /// Like [`Storage::commit_async`], but the write is not synced to disk: it survives the
    /// process being killed, not the machine losing power, until the next synced write or
    /// [`Storage::sync_wal`]. For state that can be rebuilt (a Raft state machine whose log
    /// is synced and kept until a snapshot).
    pub fn commit_async_unsynced(
        &self,
        batch: CommitBatch,
    ) -> impl Future<Output = Result<(), StorageError>> + Send + 'static {
        self.queue(batch, false)
    }

    /// Makes every write so far durable (syncs RocksDB's write-ahead log).
    pub fn sync_wal(&self) -> Result<(), StorageError> {
        self.core().with_db(|db| Ok(db.flush_wal(true)?))
    }

    fn queue(
        &self,
        batch: CommitBatch,
        sync: bool,
    ) -> impl Future<Output = Result<(), StorageError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let queued = match &self.h.committer {
            Some(s) => s
                .send(Job {
                    batch,
                    reply: tx,
                    sync,
                })
                .map_err(|_| StorageError::Closed("committer thread stopped".into())),
            None => Err(StorageError::Closed("committer thread stopped".into())),
        };
        async move {
            queued?;
            rx.await
                .map_err(|_| StorageError::Closed("committer thread stopped".into()))?
        }
    }

    /// Counters of commits done so far.
    pub fn commit_stats(&self) -> CommitStats {
        CommitStats {
            groups: self.core().stats_groups.load(Ordering::Relaxed),
            syncs: self.core().stats_syncs.load(Ordering::Relaxed),
            batches: self.core().stats_batches.load(Ordering::Relaxed),
        }
    }

    /// Writes a consistent checkpoint of the whole database (all families, metadata included) to
    /// `dir`, which must not exist; open it with [`Storage::open`]. Files are hard-linked where
    /// possible.
    pub fn checkpoint(&self, dir: &Path) -> Result<(), StorageError> {
        let _writers = lock(&self.core().commit);
        self.core().with_db(|db| {
            Checkpoint::new(db)?.create_checkpoint(dir)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
