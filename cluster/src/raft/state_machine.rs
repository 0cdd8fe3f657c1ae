//! The replicated state as a Raft state machine: the registry (components under
//! `raft/sm/c/<name>`, the code history of upgraded ones under `raft/sm/v/<name>`, binaries
//! under `raft/bin/<sha256>`, the applied log id and membership
//! under `raft/sm/meta`) and every handler commit (component stores, outboxes, marks).
//!
//! Deciding is pure ([`apply_command`], [`check_commit`]: the fence against the registry);
//! this module writes a run of entries' effects together with the applied position in one
//! synced storage write (so nothing is applied twice), creates a component's store when it
//! is installed and drops it when it is removed, and tells the node about placement changes
//! through a watch channel. Snapshots are an image of the whole replicated keyspace read
//! from one RocksDB snapshot.

use super::codec::{
    self, SM_COMPONENT_PREFIX, SM_GENERATION_BASE_KEY, SM_META_KEY, SM_VERSIONS_PREFIX,
    SNAPSHOT_KEY,
};
use super::command_check;
use super::types::{
    commit_fate, Command, CommitFate, ComponentEntry, NodeInfo, Outcome, Refusal, Registry,
    TypeConfig, Upgrade, Versions,
};
use crate::placement::NodeId;
use airssys_storage::{CommitBatch, StateImage, Storage};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

type Membership = StoredMembership<NodeId, NodeInfo>;

/// The log position `raft/sm/meta` (as stored) says the state stands at.
pub fn applied_position(meta: &[u8]) -> Result<Option<LogId<NodeId>>, String> {
    codec::decode::<Meta>(meta).map(|m| m.last_applied)
}

/// What `raft/sm/meta` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Meta {
    last_applied: Option<LogId<NodeId>>,
    membership: Membership,
}

/// A whole snapshot: every component's data and every replicated sys record (registry,
/// binaries, outboxes, marks, counters, and `raft/sm/meta` saying where it stands).
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotBlob {
    image: StateImage,
}

/// What storage a command changes besides the registry.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// A binary to store under its sha256.
    pub store: Option<(String, Vec<u8>)>,
    /// Binaries no component uses any more (nor keeps to roll back to).
    pub delete: Vec<String>,
    /// A component installed: its store must exist before anything writes to it.
    pub create_store: Option<String>,
    /// A component removed (its name and incarnation): its store and its messaging state go.
    pub drop_store: Option<(String, u64)>,
    /// The accepted commits' writes, in order.
    pub commits: Vec<CommitBatch>,
}

/// Whether an accepted commit is new or a retry of one already applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitCheck {
    Apply,
    AlreadyApplied,
}

/// A key a peer chose, for an error message: printable, at most 80 bytes.
fn shown_key(key: &[u8]) -> String {
    let cut = &key[..key.len().min(80)];
    let mut shown = String::from_utf8_lossy(cut).escape_debug().to_string();
    if key.len() > cut.len() {
        shown.push('…');
    }
    shown
}

/// Sys keys only Raft itself may write (a commit carrying one is malformed).
fn is_raft_key(key: &[u8]) -> bool {
    key.starts_with(b"raft/") || key.starts_with(&[0xff, 0xff])
}

/// Decides a commit against the registry: its fence must name the component's current owner
/// and generation, it may write only that component's store, never Raft's keys, every
/// component it numbers messages to must still be the incarnation it numbered them for, and a
/// numbered commit must be the next one (or a retry of the last: applied once, answered again).
pub fn check_commit(
    registry: &Registry,
    keyspace: &dyn Keyspace,
    batch: &CommitBatch,
) -> Result<CommitCheck, Refusal> {
    let Some(fence) = &batch.fence else {
        return Err(Refusal::MalformedCommit("a commit needs a fence".into()));
    };
    if let Some(other) = batch
        .components
        .iter()
        .find(|c| c.component != fence.component)
    {
        return Err(Refusal::MalformedCommit(format!(
            "a commit fenced on {} writes the store of {}",
            fence.component, other.component
        )));
    }
    if batch.sys.iter().any(|(k, _)| is_raft_key(k)) {
        return Err(Refusal::MalformedCommit(
            "a commit may not write Raft's keys".into(),
        ));
    }
    if let Some((key, value)) = batch
        .sys
        .iter()
        .find(|(k, v)| !keyspace.commit_may_write(&fence.component, k, v.is_some()))
    {
        return Err(Refusal::MalformedCommit(format!(
            "a commit fenced on {} may not {} the system record {}",
            fence.component,
            if value.is_some() { "write" } else { "delete" },
            shown_key(key)
        )));
    }
    let fenced = |now: String| Refusal::Fenced {
        component: fence.component.clone(),
        node: fence.node_id,
        generation: fence.generation,
        now,
    };
    let Some(entry) = registry.components.get(&fence.component) else {
        return Err(fenced("it is not installed".into()));
    };
    if entry.owner != fence.node_id || entry.generation != fence.generation {
        // A retry of a commit that applied before its generation ended is answered as
        // applied: its sender must not take it for refused (it was not lost).
        if commit_fate(Some(entry), fence.node_id, fence.generation, fence.commit)
            == CommitFate::Applied
        {
            return Ok(CommitCheck::AlreadyApplied);
        }
        return Err(fenced(format!(
            "it is on node {} at generation {}",
            entry.owner, entry.generation
        )));
    }
    // A peer numbered for incarnation 0 was not installed when the handler ran; it still
    // is not (the message is answered `not-found` on delivery) or the commit is refused.
    if let Some((peer, numbered_for)) = fence.peers.iter().find(|(peer, incarnation)| {
        registry.components.get(peer).map_or(0, |e| e.incarnation) != *incarnation
    }) {
        return Err(Refusal::PeerChanged {
            component: fence.component.clone(),
            peer: peer.clone(),
            numbered_for: *numbered_for,
            now: registry.components.get(peer).map(|e| e.incarnation),
        });
    }
    if fence.sequence > 0 && fence.sequence != entry.external_seq + 1 {
        return Err(Refusal::OutOfTurn {
            component: fence.component.clone(),
            got: fence.sequence,
            next: entry.external_seq + 1,
        });
    }
    match fence.commit {
        0 => Ok(CommitCheck::Apply),
        n if n == entry.commits + 1 => Ok(CommitCheck::Apply),
        n if n <= entry.commits => Ok(CommitCheck::AlreadyApplied),
        n => Err(Refusal::MalformedCommit(format!(
            "commit {n} of {} skips {} (last applied {})",
            fence.component,
            entry.commits + 1,
            entry.commits
        ))),
    }
}

/// Applies one command, the entry at Raft `index`, to the registry: deterministic, the
/// same on every node.
pub fn apply_command(
    registry: &mut Registry,
    members: &BTreeSet<NodeId>,
    binary_known: bool,
    index: u64,
    keyspace: &dyn Keyspace,
    command: Command,
) -> (Outcome, Effects) {
    let mut effects = Effects::default();
    let outcome = match command {
        Command::Install {
            spec,
            owner,
            binary,
        } => {
            if let Err(refusal) = command_check::check_install(&spec, &binary) {
                Outcome::Refused(refusal)
            } else if registry.components.contains_key(&spec.name) {
                Outcome::Refused(Refusal::AlreadyExists(spec.name))
            } else if !members.contains(&owner) {
                Outcome::Refused(Refusal::UnknownNode(owner))
            } else if !binary_known && binary.is_empty() {
                Outcome::Refused(Refusal::MissingBinary(spec.sha256))
            } else {
                if !binary_known {
                    effects.store = Some((spec.sha256.clone(), binary));
                }
                effects.create_store = Some(spec.name.clone());
                let entry =
                    ComponentEntry::installed(spec, owner, registry.generation_base + index);
                let generation = entry.generation;
                registry.components.insert(entry.spec.name.clone(), entry);
                Outcome::Installed { owner, generation }
            }
        }
        Command::Remove { name } => match registry.components.remove(&name) {
            None => Outcome::Refused(Refusal::NotFound(name)),
            Some(entry) => {
                let previous = registry.versions.remove(&name).map(|v| v.previous.sha256);
                for sha in std::iter::once(entry.spec.sha256).chain(previous) {
                    if !registry.uses_binary(&sha) && !effects.delete.contains(&sha) {
                        effects.delete.push(sha);
                    }
                }
                effects.drop_store = Some((name, entry.incarnation));
                Outcome::Removed
            }
        },
        Command::Move { name, to } => {
            if !members.contains(&to) {
                Outcome::Refused(Refusal::UnknownNode(to))
            } else {
                match registry.components.get_mut(&name) {
                    None => Outcome::Refused(Refusal::NotFound(name)),
                    Some(entry) => {
                        entry.move_to(to);
                        Outcome::Moved {
                            owner: to,
                            generation: entry.generation,
                        }
                    }
                }
            }
        }
        Command::Restart { name } => match registry.components.get_mut(&name) {
            None => Outcome::Refused(Refusal::NotFound(name)),
            Some(entry) => {
                let owner = entry.owner;
                entry.move_to(owner);
                Outcome::Moved {
                    owner,
                    generation: entry.generation,
                }
            }
        },
        Command::Upgrade(upgrade) => {
            apply_upgrade(registry, binary_known, keyspace, *upgrade, &mut effects)
        }
        Command::Commit(batch) => apply_commit(registry, keyspace, batch, &mut effects),
        Command::Commits(batches) => Outcome::Many(
            batches
                .into_iter()
                .map(|batch| apply_commit(registry, keyspace, batch, &mut effects))
                .collect(),
        ),
    };
    (outcome, effects)
}

/// Replaces a component's code, with its migration's writes: both or neither. The
/// migration must be fenced on the component at its current placement (so it ran on the
/// code and storage it replaces, and a move or restart in between refuses it) and the
/// code it replaces must still be the current one.
fn apply_upgrade(
    registry: &mut Registry,
    binary_known: bool,
    keyspace: &dyn Keyspace,
    upgrade: Upgrade,
    effects: &mut Effects,
) -> Outcome {
    let Upgrade {
        mut spec,
        binary,
        from_sha256,
        at_ms,
        migration,
        import,
    } = upgrade;
    if let Err(refusal) = command_check::check_install(&spec, &binary) {
        return Outcome::Refused(refusal);
    }
    let Some(entry) = registry.components.get(&spec.name) else {
        return Outcome::Refused(Refusal::NotFound(spec.name));
    };
    if entry.spec.sha256 != from_sha256 {
        return Outcome::Refused(Refusal::VersionChanged {
            component: spec.name,
            expected: from_sha256,
            now: entry.spec.sha256.clone(),
        });
    }
    let same_code = entry.spec.sha256 == spec.sha256;
    if same_code && !import {
        return Outcome::Refused(Refusal::SameVersion {
            component: spec.name,
            sha256: spec.sha256,
        });
    }
    if !binary_known && binary.is_empty() {
        return Outcome::Refused(Refusal::MissingBinary(spec.sha256));
    }
    match migration.fence.as_ref() {
        Some(f) if f.component == spec.name && f.commit == 0 && f.sequence == 0 => {}
        _ => {
            return Outcome::Refused(Refusal::MalformedCommit(format!(
                "the migration of {} must be fenced on it, unnumbered",
                spec.name
            )))
        }
    }
    // Checks the fence and the keys; applies nothing when it refuses.
    match apply_commit(registry, keyspace, migration, effects) {
        Outcome::Committed { duplicate: false } => {}
        Outcome::Refused(r) => return Outcome::Refused(r),
        other => {
            return Outcome::Refused(Refusal::MalformedCommit(format!(
                "the migration of {} was not applied ({other:?})",
                spec.name
            )))
        }
    }
    let name = spec.name.clone();
    let Some(entry) = registry.components.get_mut(&name) else {
        return Outcome::Refused(Refusal::NotFound(name));
    };
    let since = registry
        .versions
        .get(&name)
        .map_or(entry.spec.installed_at_ms, |v| v.upgraded_at_ms);
    spec.installed_at_ms = entry.spec.installed_at_ms;
    let replaced = std::mem::replace(&mut entry.spec, spec);
    let owner = entry.owner;
    entry.move_to(owner);
    let generation = entry.generation;
    if same_code {
        // An import over the same code: new data and limits, the same code history.
        return Outcome::Upgraded { owner, generation };
    }
    let new_sha = entry.spec.sha256.clone();
    let dropped = registry
        .versions
        .insert(
            name,
            Versions {
                upgraded_at_ms: at_ms,
                previous: replaced,
                previous_since_ms: since,
            },
        )
        .map(|v| v.previous.sha256);
    if !binary_known {
        effects.store = Some((new_sha, binary));
    }
    // The code two upgrades back is no longer kept, unless something else uses it.
    if let Some(sha) = dropped.filter(|sha| !registry.uses_binary(sha)) {
        effects.delete.push(sha);
    }
    Outcome::Upgraded { owner, generation }
}

/// One handler transaction: checked against the registry as it stands after everything
/// before it (in this entry too), its writes added to `effects` when accepted.
fn apply_commit(
    registry: &mut Registry,
    keyspace: &dyn Keyspace,
    mut batch: CommitBatch,
    effects: &mut Effects,
) -> Outcome {
    match check_commit(registry, keyspace, &batch) {
        Err(refusal) => Outcome::Refused(refusal),
        Ok(CommitCheck::AlreadyApplied) => Outcome::Committed { duplicate: true },
        Ok(CommitCheck::Apply) => {
            if let Some(f) = batch.fence.take() {
                if let Some(entry) = registry.components.get_mut(&f.component) {
                    if f.commit > 0 {
                        entry.commits = f.commit;
                    }
                    if f.sequence > 0 {
                        entry.external_seq = f.sequence;
                    }
                }
            }
            effects.commits.push(batch);
            Outcome::Committed { duplicate: false }
        }
    }
}

/// What the node reads: the registry as last applied, and a counter bumped on every
/// change of placement or membership (subscribe to wait for one; commits do not bump it).
pub struct RegistryView {
    state: RwLock<(Meta, Registry)>,
    changes: watch::Sender<u64>,
}

impl RegistryView {
    pub fn registry(&self) -> Registry {
        self.state.read().map(|s| s.1.clone()).unwrap_or_default()
    }

    pub fn owner_of(&self, name: &str) -> Option<(NodeId, u64)> {
        let s = self.state.read().ok()?;
        s.1.components.get(name).map(|c| (c.owner, c.generation))
    }

    pub fn entry(&self, name: &str) -> Option<ComponentEntry> {
        let s = self.state.read().ok()?;
        s.1.components.get(name).cloned()
    }

    /// The incarnation of `name` applied here (`None`: not installed).
    pub fn incarnation_of(&self, name: &str) -> Option<u64> {
        let s = self.state.read().ok()?;
        s.1.components.get(name).map(|c| c.incarnation)
    }

    /// Numbered commits of `name` applied here so far.
    pub fn commits_of(&self, name: &str) -> Option<u64> {
        let s = self.state.read().ok()?;
        s.1.components.get(name).map(|c| c.commits)
    }

    pub fn membership(&self) -> Membership {
        self.state
            .read()
            .map(|s| s.0.membership.clone())
            .unwrap_or_default()
    }

    pub fn last_applied(&self) -> Option<LogId<NodeId>> {
        self.state.read().ok().and_then(|s| s.0.last_applied)
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn bump(&self) {
        self.changes.send_modify(|n| *n += 1);
    }
}

/// What the state machine must know of the node layer's sys keyspace (outboxes, marks,
/// counters), which it applies without knowing its layout. Both answers must depend on
/// the stored state and the arguments only: every node applies them alike.
pub trait Keyspace: Send + Sync {
    /// The sys writes that remove a component's messaging state (given its name and
    /// incarnation): its outbox, marks, counters, other components' marks and counters
    /// about it, and what becomes of the messages it sent that were not consumed yet.
    fn removal_plan(&self, storage: &Storage, name: &str, incarnation: u64) -> RemovalPlan;

    /// Whether a commit fenced on `component` may write (`put`) or delete `key`: a commit
    /// comes from a peer, and one fenced on `a` must not touch `b`'s records.
    fn commit_may_write(&self, component: &str, key: &[u8], put: bool) -> bool;
}

/// The node layer's keyspace rules, shared by the state machine's clones.
pub type KeyspaceRules = Arc<dyn Keyspace>;

/// What removing a component does to the messaging state besides dropping its store.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RemovalPlan {
    /// Sys writes (`None` deletes).
    pub writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Components whose view of the removed one the writes changed (a message from it that
    /// they had not consumed is stored anew): each gets a new generation on the same node,
    /// so a commit of theirs computed before the removal is refused rather than applied
    /// over the changed state, and their actor starts again from what is stored.
    pub refence: Vec<String>,
}

/// Keys that belong to this node's Raft log rather than to the replicated state: they never
/// travel in a snapshot and an installed snapshot leaves them alone.
pub fn is_log_key(key: &[u8]) -> bool {
    key.starts_with(codec::LOG_PREFIX)
        || key == codec::VOTE_KEY
        || key == codec::COMMITTED_KEY
        || key == codec::PURGED_KEY
        || key == SNAPSHOT_KEY
}

#[derive(Clone)]
pub struct StateMachine {
    storage: Storage,
    view: Arc<RegistryView>,
    keyspace: KeyspaceRules,
    /// Where the last snapshot built or installed is kept (next to the database).
    snapshot_file: PathBuf,
}

fn sm_err(e: impl ToString) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(&std::io::Error::other(e.to_string())).into()
}

fn read_err(e: impl ToString) -> StorageError<NodeId> {
    StorageIOError::read_state_machine(&std::io::Error::other(e.to_string())).into()
}

/// The applied meta and registry as stored.
fn load_state(storage: &Storage) -> Result<(Meta, Registry), StorageError<NodeId>> {
    let meta: Meta = match storage.sys_get(SM_META_KEY).map_err(read_err)? {
        Some(b) => codec::decode(&b).map_err(read_err)?,
        None => Meta::default(),
    };
    let mut registry = Registry::default();
    for (_, value) in storage
        .sys_scan_prefix(SM_COMPONENT_PREFIX)
        .map_err(read_err)?
    {
        let entry: ComponentEntry = codec::decode(&value).map_err(read_err)?;
        registry.components.insert(entry.spec.name.clone(), entry);
    }
    for (key, value) in storage
        .sys_scan_prefix(SM_VERSIONS_PREFIX)
        .map_err(read_err)?
    {
        let versions: Versions = codec::decode(&value).map_err(read_err)?;
        let name = String::from_utf8_lossy(&key[SM_VERSIONS_PREFIX.len()..]).into_owned();
        registry.versions.insert(name, versions);
    }
    if let Some(base) = storage.sys_get(SM_GENERATION_BASE_KEY).map_err(read_err)? {
        let bytes: [u8; 8] = base
            .as_slice()
            .try_into()
            .map_err(|_| read_err("raft/sm/base is not 8 bytes"))?;
        registry.generation_base = u64::from_le_bytes(bytes);
    }
    Ok((meta, registry))
}

/// Drops the store of every component the applied registry does not hold: a removal whose
/// drop a crash interrupted (its registry change was written first). Only the state machine
/// creates and drops component stores, when it applies an install or a removal, and here,
/// before it applies anything: a store is never dropped under a component installed again.
fn drop_orphan_stores(storage: &Storage, registry: &Registry) -> Result<(), StorageError<NodeId>> {
    for name in storage.component_names() {
        if !registry.components.contains_key(&name) {
            tracing::warn!(component = %name, "dropping the store of a removed component (its removal was interrupted)");
            storage.drop_component(&name).map_err(sm_err)?;
        }
    }
    Ok(())
}

/// Writes accumulated while applying a run of entries.
#[derive(Default)]
struct Pending {
    batch: CommitBatch,
    /// Components whose registry record changed.
    touched: BTreeSet<String>,
}

impl StateMachine {
    /// Loads the last applied registry from storage.
    pub fn open(
        storage: Storage,
        keyspace: KeyspaceRules,
    ) -> Result<StateMachine, StorageError<NodeId>> {
        let (meta, registry) = load_state(&storage)?;
        drop_orphan_stores(&storage, &registry)?;
        let (changes, _) = watch::channel(0);
        let snapshot_file = storage.path().with_extension("snapshot");
        Ok(StateMachine {
            storage,
            view: Arc::new(RegistryView {
                state: RwLock::new((meta, registry)),
                changes,
            }),
            keyspace,
            snapshot_file,
        })
    }

    pub fn view(&self) -> Arc<RegistryView> {
        self.view.clone()
    }

    /// A component binary from the registry.
    pub fn binary(storage: &Storage, sha256: &str) -> Option<Vec<u8>> {
        storage.sys_get(&codec::binary_key(sha256)).ok().flatten()
    }

    /// Makes the pending writes, the changed registry records and the applied position durable
    /// in one write.
    async fn flush(
        &self,
        pending: &mut Pending,
        meta: &Meta,
        registry: &Registry,
    ) -> Result<(), StorageError<NodeId>> {
        let mut batch = std::mem::take(&mut pending.batch);
        for name in std::mem::take(&mut pending.touched) {
            let value = match registry.components.get(&name) {
                Some(entry) => Some(codec::encode(entry).map_err(sm_err)?),
                None => None,
            };
            batch.sys.push((codec::component_key(&name), value));
            let versions = match registry.versions.get(&name) {
                Some(v) => Some(codec::encode(v).map_err(sm_err)?),
                None => None,
            };
            batch.sys.push((codec::versions_key(&name), versions));
        }
        batch.sys.push((
            SM_META_KEY.to_vec(),
            Some(codec::encode(meta).map_err(sm_err)?),
        ));
        // Not synced: the log holds these entries (synced) until a snapshot covers them,
        // and a snapshot is only built after the write-ahead log is synced.
        self.storage
            .commit_async_unsynced(batch)
            .await
            .map_err(sm_err)
    }

    async fn save_snapshot(
        &self,
        meta: &SnapshotMeta<NodeId, NodeInfo>,
        data: &[u8],
    ) -> Result<(), StorageError<NodeId>> {
        let stored = codec::encode(&(meta.clone(), data.to_vec())).map_err(sm_err)?;
        let path = self.snapshot_file.clone();
        tokio::task::spawn_blocking(move || {
            let tmp = path.with_extension("snapshot.tmp");
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &stored)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })
        .await
        .map_err(sm_err)?
        .map_err(sm_err)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        // One RocksDB snapshot: the data and `raft/sm/meta` were written together, so the
        // applied position read from the image is exactly the point the data stands at.
        let storage = self.storage.clone();
        let image = tokio::task::spawn_blocking(move || {
            // Everything applied so far reaches the disk before the log behind it may go.
            storage.sync_wal()?;
            storage.export_image(|k| !is_log_key(k))
        })
        .await
        .map_err(read_err)?
        .map_err(read_err)?;
        let meta: Meta = match image.sys.iter().find(|(k, _)| k == SM_META_KEY) {
            Some((_, v)) => codec::decode(v).map_err(read_err)?,
            None => Meta::default(),
        };
        let data = codec::encode(&SnapshotBlob { image }).map_err(read_err)?;
        let last = meta.last_applied;
        let snap_meta = SnapshotMeta {
            last_log_id: last,
            last_membership: meta.membership.clone(),
            snapshot_id: format!(
                "{}-{}-{}",
                last.map(|l| l.leader_id.term).unwrap_or(0),
                last.map(|l| l.index).unwrap_or(0),
                data.len()
            ),
        };
        self.save_snapshot(&snap_meta, &data).await?;
        tracing::info!(
            index = last.map(|l| l.index).unwrap_or(0),
            bytes = data.len(),
            "snapshot built"
        );
        Ok(Snapshot {
            meta: snap_meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, Membership), StorageError<NodeId>> {
        let s = self.view.state.read().map_err(read_err)?;
        Ok((s.0.last_applied, s.0.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let (mut meta, mut registry) = self.view.state.read().map_err(read_err)?.clone();
        let mut outcomes = Vec::new();
        let mut pending = Pending::default();
        let mut placement_changed = false;
        for entry in entries {
            meta.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => outcomes.push(Outcome::Nothing),
                EntryPayload::Membership(m) => {
                    meta.membership = StoredMembership::new(Some(entry.log_id), m);
                    placement_changed = true;
                    outcomes.push(Outcome::Nothing);
                }
                EntryPayload::Normal(command) => {
                    let members: BTreeSet<NodeId> =
                        meta.membership.nodes().map(|(id, _)| *id).collect();
                    // A binary is stored exactly while some component uses it (it is
                    // deleted with its last user), so the registry says whether it is here.
                    let known = match &command {
                        Command::Install { spec, .. } => registry.uses_binary(&spec.sha256),
                        Command::Upgrade(u) => registry.uses_binary(&u.spec.sha256),
                        _ => true,
                    };
                    // Commits that move a count kept in the registry entry.
                    let numbered = |b: &CommitBatch| {
                        b.fence
                            .as_ref()
                            .filter(|f| f.commit > 0 || f.sequence > 0)
                            .map(|f| f.component.clone())
                    };
                    let touched: Vec<String> = match &command {
                        Command::Install { spec, .. } => vec![spec.name.clone()],
                        Command::Remove { name }
                        | Command::Move { name, .. }
                        | Command::Restart { name } => vec![name.clone()],
                        Command::Upgrade(u) => vec![u.spec.name.clone()],
                        Command::Commit(b) => numbered(b).into_iter().collect(),
                        Command::Commits(bs) => bs.iter().filter_map(numbered).collect(),
                    };
                    if !matches!(command, Command::Commit(_) | Command::Commits(_)) {
                        placement_changed = true;
                    }
                    let (outcome, effects) = apply_command(
                        &mut registry,
                        &members,
                        known,
                        entry.log_id.index,
                        self.keyspace.as_ref(),
                        command,
                    );
                    if let Outcome::Refused(r) = &outcome {
                        tracing::debug!(index = entry.log_id.index, "refused: {r}");
                    }
                    pending.touched.extend(touched);
                    self.stage(&mut pending, &meta, &mut registry, effects)
                        .await?;
                    outcomes.push(outcome);
                }
            }
        }
        self.flush(&mut pending, &meta, &registry).await?;
        if let Ok(mut s) = self.view.state.write() {
            *s = (meta, registry);
        }
        if placement_changed {
            self.view.bump();
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, NodeInfo>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let blob: SnapshotBlob = codec::decode(&data).map_err(sm_err)?;
        let storage = self.storage.clone();
        tokio::task::spawn_blocking(move || storage.import_image(&blob.image, |k| !is_log_key(k)))
            .await
            .map_err(sm_err)?
            .map_err(sm_err)?;
        let (mut stored_meta, registry) = load_state(&self.storage)?;
        // The snapshot's own word on where it stands.
        stored_meta.last_applied = meta.last_log_id;
        stored_meta.membership = meta.last_membership.clone();
        self.storage
            .commit_async(CommitBatch::sys_only(vec![(
                SM_META_KEY.to_vec(),
                Some(codec::encode(&stored_meta).map_err(sm_err)?),
            )]))
            .await
            .map_err(sm_err)?;
        self.save_snapshot(meta, &data).await?;
        tracing::info!(
            index = meta.last_log_id.map(|l| l.index).unwrap_or(0),
            bytes = data.len(),
            components = registry.components.len(),
            "snapshot installed"
        );
        if let Ok(mut s) = self.view.state.write() {
            *s = (stored_meta, registry);
        }
        self.view.bump();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let path = self.snapshot_file.clone();
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(read_err(e)),
        };
        let (meta, data): (SnapshotMeta<NodeId, NodeInfo>, Vec<u8>) =
            codec::decode(&bytes).map_err(read_err)?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

impl StateMachine {
    /// Adds one applied command's storage effects to `pending`. A removal is written at once
    /// (flushed, its messaging state deleted, its store dropped), so nothing accumulated
    /// before it can re-create what it deletes.
    async fn stage(
        &self,
        pending: &mut Pending,
        meta: &Meta,
        registry: &mut Registry,
        effects: Effects,
    ) -> Result<(), StorageError<NodeId>> {
        if let Some(name) = &effects.create_store {
            // Before any commit of this run writes to it.
            self.storage.create_component(name).map_err(sm_err)?;
        }
        if let Some((sha, bytes)) = effects.store {
            pending
                .batch
                .sys
                .push((codec::binary_key(&sha), Some(bytes)));
        }
        for sha in effects.delete {
            pending.batch.sys.push((codec::binary_key(&sha), None));
        }
        for commit in effects.commits {
            pending.batch.components.extend(commit.components);
            pending.batch.sys.extend(commit.sys);
        }
        if let Some((name, incarnation)) = effects.drop_store {
            self.flush(pending, meta, registry).await?;
            let plan = self
                .keyspace
                .removal_plan(&self.storage, &name, incarnation);
            if !plan.writes.is_empty() {
                self.storage
                    .commit_async(CommitBatch::sys_only(plan.writes))
                    .await
                    .map_err(sm_err)?;
            }
            for other in plan.refence {
                if let Some(entry) = registry.components.get_mut(&other) {
                    let owner = entry.owner;
                    entry.move_to(owner);
                    pending.touched.insert(other);
                }
            }
            self.storage.drop_component(&name).map_err(sm_err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::ComponentSpec;

    /// Keyspace rules for tests of everything else: a commit may write any record but
    /// those under `other/`.
    struct Open;

    impl Keyspace for Open {
        fn removal_plan(&self, _: &Storage, _: &str, _: u64) -> RemovalPlan {
            RemovalPlan::default()
        }
        fn commit_may_write(&self, _: &str, key: &[u8], _: bool) -> bool {
            !key.starts_with(b"other/")
        }
    }

    /// Applies a command as the entry at index 1: every install starts at generation 1.
    fn apply(
        registry: &mut Registry,
        members: &BTreeSet<NodeId>,
        binary_known: bool,
        command: Command,
    ) -> (Outcome, Effects) {
        apply_command(registry, members, binary_known, 1, &Open, command)
    }

    /// The digest of the test binary `label` (its bytes are the label's).
    fn sha(label: &str) -> String {
        command_check::sha256_hex(label.as_bytes())
    }

    fn spec(name: &str, label: &str) -> ComponentSpec {
        ComponentSpec {
            name: name.into(),
            sha256: sha(label),
            size_bytes: label.len() as u64,
            config: Vec::new(),
            installed_at_ms: 0,
        }
    }

    fn install(name: &str, label: &str, owner: NodeId) -> Command {
        Command::Install {
            spec: spec(name, label),
            owner,
            binary: label.as_bytes().to_vec(),
        }
    }

    #[test]
    fn install_move_remove() {
        let members = BTreeSet::from([1, 2, 3]);
        let mut reg = Registry::default();
        let (out, fx) = apply(&mut reg, &members, false, install("a", "s1", 2));
        assert_eq!(
            out,
            Outcome::Installed {
                owner: 2,
                generation: 1
            }
        );
        assert_eq!(fx.store, Some((sha("s1"), b"s1".to_vec())));
        let (out, _) = apply(&mut reg, &members, true, install("a", "s1", 3));
        assert_eq!(out, Outcome::Refused(Refusal::AlreadyExists("a".into())));
        let (out, _) = apply(
            &mut reg,
            &members,
            true,
            Command::Move {
                name: "a".into(),
                to: 3,
            },
        );
        assert_eq!(
            out,
            Outcome::Moved {
                owner: 3,
                generation: 2
            }
        );
        let (out, _) = apply(
            &mut reg,
            &members,
            true,
            Command::Move {
                name: "a".into(),
                to: 9,
            },
        );
        assert_eq!(out, Outcome::Refused(Refusal::UnknownNode(9)));
        assert_eq!(reg.components["a"].generation, 2);
        let (out, fx) = apply(
            &mut reg,
            &members,
            true,
            Command::Remove { name: "a".into() },
        );
        assert_eq!(out, Outcome::Removed);
        assert_eq!(fx.delete, vec![sha("s1")]);
        let (out, _) = apply(
            &mut reg,
            &members,
            true,
            Command::Remove { name: "a".into() },
        );
        assert_eq!(out, Outcome::Refused(Refusal::NotFound("a".into())));
    }

    #[test]
    fn shared_binary_survives_one_removal() {
        let members = BTreeSet::from([1]);
        let mut reg = Registry::default();
        apply(&mut reg, &members, false, install("a", "s", 1));
        let (_, fx) = apply(&mut reg, &members, true, install("b", "s", 1));
        assert_eq!(fx.store, None, "known binary is not stored twice");
        let (_, fx) = apply(
            &mut reg,
            &members,
            true,
            Command::Remove { name: "a".into() },
        );
        assert!(fx.delete.is_empty());
    }

    #[test]
    fn install_refused_on_non_member_or_without_binary() {
        let members = BTreeSet::from([1]);
        let mut reg = Registry::default();
        let (out, _) = apply(&mut reg, &members, false, install("a", "s", 5));
        assert_eq!(out, Outcome::Refused(Refusal::UnknownNode(5)));
        let cmd = Command::Install {
            spec: spec("a", "s"),
            owner: 1,
            binary: Vec::new(),
        };
        let (out, _) = apply(&mut reg, &members, false, cmd);
        assert_eq!(out, Outcome::Refused(Refusal::MissingBinary(sha("s"))));
        assert!(reg.components.is_empty());
    }

    fn commit(name: &str, node: NodeId, generation: u64, number: u64) -> Command {
        Command::Commit(CommitBatch {
            fence: Some(airssys_storage::Fence {
                component: name.into(),
                node_id: node,
                generation,
                commit: number,
                sequence: 0,
                peers: Vec::new(),
            }),
            components: vec![airssys_storage::ComponentWrites {
                component: name.into(),
                writes: vec![(b"n".to_vec(), Some(b"1".to_vec()))],
                usage_delta: 2,
            }],
            sys: vec![(b"ob/x/y/12345678".to_vec(), None)],
        })
    }

    /// An upgrade of `name` to binary `label`, from `from`, its migration fenced at
    /// (`node`, `generation`) writing `n` = `label`.
    fn upgrade(name: &str, label: &str, from: &str, node: NodeId, generation: u64) -> Command {
        let Command::Commit(mut migration) = commit(name, node, generation, 0) else {
            unreachable!()
        };
        migration.components[0].writes = vec![(b"n".to_vec(), Some(label.as_bytes().to_vec()))];
        migration.sys.clear();
        Command::Upgrade(Box::new(Upgrade {
            spec: spec(name, label),
            binary: label.as_bytes().to_vec(),
            from_sha256: sha(from),
            at_ms: 77,
            migration,
            import: false,
        }))
    }

    #[test]
    fn an_upgrade_replaces_the_code_with_its_migration_and_keeps_the_previous() {
        let members = BTreeSet::from([1, 2]);
        let mut reg = Registry::default();
        apply(&mut reg, &members, false, install("a", "v1", 2));
        let (out, fx) = apply(&mut reg, &members, false, upgrade("a", "v2", "v1", 2, 1));
        assert_eq!(
            out,
            Outcome::Upgraded {
                owner: 2,
                generation: 2
            }
        );
        assert_eq!(fx.store, Some((sha("v2"), b"v2".to_vec())));
        assert!(
            fx.delete.is_empty(),
            "the previous binary is kept for a rollback"
        );
        assert_eq!(fx.commits.len(), 1, "the migration's writes apply with it");
        assert_eq!(
            fx.commits[0].components[0].writes[0].1,
            Some(b"v2".to_vec())
        );
        let e = &reg.components["a"];
        assert_eq!(
            (e.spec.sha256.clone(), e.owner, e.generation),
            (sha("v2"), 2, 2)
        );
        assert_eq!(e.ended.last().map(|g| g.generation), Some(1));
        let v = &reg.versions["a"];
        assert_eq!(
            (v.previous.sha256.clone(), v.upgraded_at_ms),
            (sha("v1"), 77)
        );
        assert!(reg.uses_binary(&sha("v1")));
        assert_eq!(reg.current_since_ms("a"), Some(77));

        // A rollback is an upgrade to the previous code (its binary is known).
        let Command::Upgrade(mut back) = upgrade("a", "v1", "v2", 2, 2) else {
            unreachable!()
        };
        back.binary.clear();
        let (out, fx) = apply(&mut reg, &members, true, Command::Upgrade(back));
        assert!(
            matches!(out, Outcome::Upgraded { generation: 3, .. }),
            "{out:?}"
        );
        assert_eq!(fx.store, None);
        assert!(fx.delete.is_empty(), "v2 is now the previous one");
        assert_eq!(reg.versions["a"].previous.sha256, sha("v2"));

        // A third version: the code two back (v2) is no longer kept.
        let (_, fx) = apply(&mut reg, &members, false, upgrade("a", "v3", "v1", 2, 3));
        assert_eq!(fx.delete, vec![sha("v2")]);
        // Removal drops the current and the previous binary.
        let (_, fx) = apply(
            &mut reg,
            &members,
            true,
            Command::Remove { name: "a".into() },
        );
        assert_eq!(fx.delete, vec![sha("v3"), sha("v1")]);
        assert!(reg.versions.is_empty());
    }

    #[test]
    fn an_import_over_the_same_code_replaces_data_and_keeps_the_code_history() {
        let members = BTreeSet::from([1]);
        let mut reg = Registry::default();
        apply(&mut reg, &members, false, install("a", "v1", 1));
        apply(&mut reg, &members, true, upgrade("a", "v2", "v1", 1, 1));
        let history = reg.versions["a"].clone();
        let generation = reg.components["a"].generation;
        let Command::Upgrade(mut import) = upgrade("a", "v2", "v2", 1, generation) else {
            unreachable!()
        };
        import.import = true;
        let (out, fx) = apply(&mut reg, &members, true, Command::Upgrade(import));
        assert_eq!(
            out,
            Outcome::Upgraded {
                owner: 1,
                generation: generation + 1
            }
        );
        assert_eq!(fx.commits.len(), 1, "the data goes with it");
        assert_eq!(reg.versions["a"], history, "the code history stays");
        // Without the import flag, the same code is refused.
        let (out, _) = apply(
            &mut reg,
            &members,
            true,
            upgrade("a", "v2", "v2", 1, generation + 1),
        );
        assert!(
            matches!(out, Outcome::Refused(Refusal::SameVersion { .. })),
            "{out:?}"
        );
    }

    #[test]
    fn an_upgrade_is_refused_whole_when_anything_changed_under_it() {
        let members = BTreeSet::from([1, 2]);
        let mut reg = Registry::default();
        apply(&mut reg, &members, false, install("a", "v1", 1));
        let before = reg.clone();
        let refused = |reg: &mut Registry, cmd: Command| {
            let (out, fx) = apply(reg, &members, false, cmd);
            assert!(matches!(out, Outcome::Refused(_)), "{out:?}");
            assert_eq!(
                fx,
                Effects::default(),
                "nothing of a refused upgrade applies"
            );
            out
        };
        // Fenced: its migration ran at a placement that has ended (a move or restart).
        let out = refused(&mut reg, upgrade("a", "v2", "v1", 1, 0));
        assert!(
            matches!(out, Outcome::Refused(Refusal::Fenced { .. })),
            "{out:?}"
        );
        let out = refused(&mut reg, upgrade("a", "v2", "v1", 2, 1));
        assert!(
            matches!(out, Outcome::Refused(Refusal::Fenced { .. })),
            "not its owner"
        );
        // Computed against code another upgrade replaced.
        let out = refused(&mut reg, upgrade("a", "v2", "v0", 1, 1));
        assert!(
            matches!(out, Outcome::Refused(Refusal::VersionChanged { .. })),
            "{out:?}"
        );
        // To the code it runs.
        let out = refused(&mut reg, upgrade("a", "v1", "v1", 1, 1));
        assert!(
            matches!(out, Outcome::Refused(Refusal::SameVersion { .. })),
            "{out:?}"
        );
        // Unknown name; a binary that does not match its digest; a numbered migration.
        refused(&mut reg, upgrade("b", "v2", "v1", 1, 1));
        let Command::Upgrade(mut lying) = upgrade("a", "v2", "v1", 1, 1) else {
            unreachable!()
        };
        lying.binary = b"other".to_vec();
        let out = refused(&mut reg, Command::Upgrade(lying));
        assert!(
            matches!(out, Outcome::Refused(Refusal::Invalid(_))),
            "{out:?}"
        );
        let Command::Upgrade(mut numbered) = upgrade("a", "v2", "v1", 1, 1) else {
            unreachable!()
        };
        if let Some(f) = numbered.migration.fence.as_mut() {
            f.commit = 1;
        }
        let out = refused(&mut reg, Command::Upgrade(numbered));
        assert!(
            matches!(out, Outcome::Refused(Refusal::MalformedCommit(_))),
            "{out:?}"
        );
        // A migration that writes another component's store.
        let Command::Upgrade(mut foreign) = upgrade("a", "v2", "v1", 1, 1) else {
            unreachable!()
        };
        foreign.migration.components[0].component = "b".into();
        refused(&mut reg, Command::Upgrade(foreign));
        assert_eq!(reg, before);
    }

    #[test]
    fn a_commit_applies_only_under_the_current_placement() {
        let members = BTreeSet::from([1, 2]);
        let mut reg = Registry::default();
        apply(&mut reg, &members, false, install("a", "s", 1));
        let (out, fx) = apply(&mut reg, &members, true, commit("a", 1, 1, 1));
        assert_eq!(out, Outcome::Committed { duplicate: false });
        let applied = fx.commits.into_iter().next().expect("accepted writes");
        assert!(
            applied.fence.is_none(),
            "the fence is consumed by the check"
        );
        assert_eq!(applied.components.len(), 1);
        assert_eq!(reg.components["a"].commits, 1);

        apply(
            &mut reg,
            &members,
            true,
            Command::Move {
                name: "a".into(),
                to: 2,
            },
        );
        // The old owner's next commit is refused, and so is one at the new generation from
        // the wrong node.
        for (node, generation) in [(1, 1), (1, 2), (2, 1)] {
            let (out, fx) = apply(&mut reg, &members, true, commit("a", node, generation, 2));
            assert!(
                matches!(out, Outcome::Refused(Refusal::Fenced { .. })),
                "node {node} generation {generation}: {out:?}"
            );
            assert!(fx.commits.is_empty());
        }
        // The new owner continues the numbering.
        let (out, _) = apply(&mut reg, &members, true, commit("a", 2, 2, 2));
        assert_eq!(out, Outcome::Committed { duplicate: false });
        // Removed: fenced too.
        apply(
            &mut reg,
            &members,
            true,
            Command::Remove { name: "a".into() },
        );
        let (out, _) = apply(&mut reg, &members, true, commit("a", 2, 2, 3));
        assert!(matches!(out, Outcome::Refused(Refusal::Fenced { .. })));
    }

    #[test]
    fn a_restored_registry_gives_generations_past_its_base() {
        // A node seeded from a backup of index 900 starts its own log at 1.
        let members = BTreeSet::from([1]);
        let mut reg = Registry {
            generation_base: 900,
            ..Registry::default()
        };
        let (out, _) = apply_command(&mut reg, &members, false, 3, &Open, install("a", "s", 1));
        assert_eq!(
            out,
            Outcome::Installed {
                owner: 1,
                generation: 903
            }
        );
        assert_eq!(reg.components["a"].incarnation, 903);
    }

    #[test]
    fn a_reinstalled_name_starts_a_new_incarnation_that_no_earlier_commit_reaches() {
        let members = BTreeSet::from([1]);
        let mut reg = Registry::default();
        let (out, _) = apply_command(&mut reg, &members, false, 5, &Open, install("a", "s", 1));
        assert_eq!(
            out,
            Outcome::Installed {
                owner: 1,
                generation: 5
            },
            "an install's generation is its entry's index"
        );
        for n in 1..=2 {
            let (out, _) = apply_command(&mut reg, &members, true, 6, &Open, commit("a", 1, 5, n));
            assert_eq!(out, Outcome::Committed { duplicate: false });
        }
        apply_command(
            &mut reg,
            &members,
            true,
            8,
            &Open,
            Command::Remove { name: "a".into() },
        );
        let (out, _) = apply_command(&mut reg, &members, false, 9, &Open, install("a", "s", 1));
        assert_eq!(
            out,
            Outcome::Installed {
                owner: 1,
                generation: 9
            }
        );
        assert_eq!(reg.components["a"].commits, 0, "the numbering starts again");
        // A commit of the removed incarnation (a retry of its third) is refused, and the
        // new one's first commit is number 1.
        let (out, fx) = apply_command(&mut reg, &members, true, 10, &Open, commit("a", 1, 5, 3));
        assert!(
            matches!(out, Outcome::Refused(Refusal::Fenced { .. })),
            "{out:?}"
        );
        assert!(fx.commits.is_empty());
        let (out, _) = apply_command(&mut reg, &members, true, 11, &Open, commit("a", 1, 9, 1));
        assert_eq!(out, Outcome::Committed { duplicate: false });
    }

    #[test]
    fn a_commit_retried_after_its_generation_ended_is_answered_by_what_happened() {
        let members = BTreeSet::from([1, 2]);
        let mut reg = Registry::default();
        apply(&mut reg, &members, false, install("a", "s", 1));
        apply(&mut reg, &members, true, commit("a", 1, 1, 1));
        apply(
            &mut reg,
            &members,
            true,
            Command::Move {
                name: "a".into(),
                to: 2,
            },
        );
        // Applied before the move: a retry hears "applied", not "fenced".
        let (out, fx) = apply(&mut reg, &members, true, commit("a", 1, 1, 1));
        assert_eq!(out, Outcome::Committed { duplicate: true });
        assert!(fx.commits.is_empty(), "a repeat writes nothing");
        // Not applied before the move: refused, and never applied.
        let (out, fx) = apply(&mut reg, &members, true, commit("a", 1, 1, 2));
        assert!(matches!(out, Outcome::Refused(Refusal::Fenced { .. })));
        assert!(fx.commits.is_empty());
        // The same number from a node that never ran that generation is refused.
        let (out, _) = apply(&mut reg, &members, true, commit("a", 2, 1, 1));
        assert!(matches!(out, Outcome::Refused(Refusal::Fenced { .. })));
    }

    #[test]
    fn a_commit_numbered_for_an_ended_incarnation_of_its_receiver_is_refused() {
        let members = BTreeSet::from([1]);
        let mut reg = Registry::default();
        apply_command(&mut reg, &members, false, 1, &Open, install("a", "s", 1));
        apply_command(&mut reg, &members, true, 2, &Open, install("b", "s", 1));
        let to_b = |incarnation: u64| {
            let Command::Commit(mut b) = commit("a", 1, 1, 0) else {
                unreachable!()
            };
            if let Some(f) = b.fence.as_mut() {
                f.peers = vec![("b".into(), incarnation)];
            }
            Command::Commit(b)
        };
        let (out, _) = apply_command(&mut reg, &members, true, 3, &Open, to_b(2));
        assert_eq!(out, Outcome::Committed { duplicate: false });
        // b removed and installed again (incarnation 5): numbers given for 2 are refused.
        apply_command(
            &mut reg,
            &members,
            true,
            4,
            &Open,
            Command::Remove { name: "b".into() },
        );
        apply_command(&mut reg, &members, true, 5, &Open, install("b", "s", 1));
        let (out, fx) = apply_command(&mut reg, &members, true, 6, &Open, to_b(2));
        assert_eq!(
            out,
            Outcome::Refused(Refusal::PeerChanged {
                component: "a".into(),
                peer: "b".into(),
                numbered_for: 2,
                now: Some(5),
            })
        );
        assert!(
            fx.commits.is_empty(),
            "nothing of a refused commit is written"
        );
        let (out, _) = apply_command(&mut reg, &members, true, 7, &Open, to_b(5));
        assert_eq!(out, Outcome::Committed { duplicate: false });
        // Numbered by a node that did not know b at all (0) while it is installed: refused.
        let (out, _) = apply_command(&mut reg, &members, true, 8, &Open, to_b(0));
        assert!(matches!(out, Outcome::Refused(Refusal::PeerChanged { .. })));
        // Removed for good: refused as well (its messages would wait forever).
        apply_command(
            &mut reg,
            &members,
            true,
            9,
            &Open,
            Command::Remove { name: "b".into() },
        );
        let (out, _) = apply_command(&mut reg, &members, true, 10, &Open, to_b(5));
        assert!(
            matches!(
                out,
                Outcome::Refused(Refusal::PeerChanged { now: None, .. })
            ),
            "{out:?}"
        );
        // Numbered for a name not installed then (0), and still not installed: it goes
        // (its receiver is missing; a request is answered `not-found` on delivery).
        let (out, _) = apply_command(&mut reg, &members, true, 11, &Open, to_b(0));
        assert_eq!(out, Outcome::Committed { duplicate: false });
    }

    #[test]
    fn external_messages_apply_only_in_turn() {
        let members = BTreeSet::from([1]);
        let mut reg = Registry::default();
        apply(&mut reg, &members, false, install("a", "s", 1));
        let numbered = |sequence: u64| {
            let Command::Commit(mut b) = commit("a", 1, 1, 0) else {
                unreachable!()
            };
            if let Some(f) = b.fence.as_mut() {
                f.sequence = sequence;
            }
            Command::Commit(b)
        };
        let (out, _) = apply(&mut reg, &members, true, numbered(1));
        assert_eq!(out, Outcome::Committed { duplicate: false });
        assert_eq!(reg.components["a"].external_seq, 1);
        // A second send numbered from the same stale count: refused, nothing written.
        let (out, fx) = apply(&mut reg, &members, true, numbered(1));
        assert!(
            matches!(out, Outcome::Refused(Refusal::OutOfTurn { next: 2, .. })),
            "{out:?}"
        );
        assert!(fx.commits.is_empty());
        let (out, fx) = apply(&mut reg, &members, true, numbered(3));
        assert!(matches!(out, Outcome::Refused(Refusal::OutOfTurn { .. })));
        assert!(fx.commits.is_empty());
        let (out, _) = apply(&mut reg, &members, true, numbered(2));
        assert_eq!(out, Outcome::Committed { duplicate: false });
    }

    #[test]
    fn a_retried_commit_applies_once_and_a_gap_is_refused() {
        let members = BTreeSet::from([1]);
        let mut reg = Registry::default();
        apply(&mut reg, &members, false, install("a", "s", 1));
        let (out, fx) = apply(&mut reg, &members, true, commit("a", 1, 1, 1));
        assert_eq!(out, Outcome::Committed { duplicate: false });
        assert_eq!(fx.commits.len(), 1);
        let (out, fx) = apply(&mut reg, &members, true, commit("a", 1, 1, 1));
        assert_eq!(out, Outcome::Committed { duplicate: true });
        assert!(fx.commits.is_empty(), "a repeat writes nothing");
        let (out, fx) = apply(&mut reg, &members, true, commit("a", 1, 1, 3));
        assert!(matches!(out, Outcome::Refused(Refusal::MalformedCommit(_))));
        assert!(fx.commits.is_empty());
        assert_eq!(reg.components["a"].commits, 1);
        // Unnumbered commits (external sends) neither check nor move the count.
        let (out, _) = apply(&mut reg, &members, true, commit("a", 1, 1, 0));
        assert_eq!(out, Outcome::Committed { duplicate: false });
        assert_eq!(reg.components["a"].commits, 1);
    }

    #[test]
    fn a_group_applies_each_commit_as_its_own_entry_would() {
        let members = BTreeSet::from([1, 2]);
        let mut reg = Registry::default();
        apply(&mut reg, &members, false, install("a", "s", 1));
        apply(&mut reg, &members, true, install("b", "s", 2));
        let batch = |c: Command| match c {
            Command::Commit(b) => b,
            _ => unreachable!(),
        };
        let group = Command::Commits(vec![
            batch(commit("a", 1, 1, 1)),
            // Sees the first one's number within the same entry.
            batch(commit("a", 1, 1, 2)),
            // A retry of the first: answered, not applied again.
            batch(commit("a", 1, 1, 1)),
            // Wrong owner: refused alone, the rest of the group still applies.
            batch(commit("b", 1, 1, 1)),
            batch(commit("b", 2, 1, 1)),
        ]);
        let (out, fx) = apply(&mut reg, &members, true, group);
        let Outcome::Many(outcomes) = out else {
            panic!("a group answers per commit: {out:?}");
        };
        assert_eq!(outcomes.len(), 5);
        assert_eq!(outcomes[0], Outcome::Committed { duplicate: false });
        assert_eq!(outcomes[1], Outcome::Committed { duplicate: false });
        assert_eq!(outcomes[2], Outcome::Committed { duplicate: true });
        assert!(matches!(
            outcomes[3],
            Outcome::Refused(Refusal::Fenced { .. })
        ));
        assert_eq!(outcomes[4], Outcome::Committed { duplicate: false });
        assert_eq!(fx.commits.len(), 3, "only accepted, new commits write");
        assert_eq!(reg.components["a"].commits, 2);
        assert_eq!(reg.components["b"].commits, 1);
    }

    #[test]
    fn malformed_commits_are_refused() {
        let members = BTreeSet::from([1]);
        let mut reg = Registry::default();
        apply(&mut reg, &members, false, install("a", "s", 1));
        apply(&mut reg, &members, true, install("b", "s", 1));
        let mut unfenced = CommitBatch::sys_only(vec![(b"ob/a".to_vec(), None)]);
        assert!(matches!(
            check_commit(&reg, &Open, &unfenced),
            Err(Refusal::MalformedCommit(_))
        ));
        unfenced.fence = Some(airssys_storage::Fence {
            component: "a".into(),
            node_id: 1,
            generation: 1,
            commit: 0,
            sequence: 0,
            peers: Vec::new(),
        });
        assert_eq!(check_commit(&reg, &Open, &unfenced), Ok(CommitCheck::Apply));
        let Command::Commit(mut other_store) = commit("a", 1, 1, 1) else {
            unreachable!()
        };
        other_store.components[0].component = "b".into();
        assert!(matches!(
            check_commit(&reg, &Open, &other_store),
            Err(Refusal::MalformedCommit(_))
        ));
        let Command::Commit(mut raft_key) = commit("a", 1, 1, 1) else {
            unreachable!()
        };
        raft_key.sys.push((b"raft/vote".to_vec(), Some(vec![0])));
        assert!(matches!(
            check_commit(&reg, &Open, &raft_key),
            Err(Refusal::MalformedCommit(_))
        ));
        // A record the keyspace rules give to another component, put or deleted.
        for value in [Some(vec![1]), None] {
            let Command::Commit(mut foreign) = commit("a", 1, 1, 1) else {
                unreachable!()
            };
            foreign.sys.push((b"other/b".to_vec(), value));
            assert!(matches!(
                check_commit(&reg, &Open, &foreign),
                Err(Refusal::MalformedCommit(m)) if m.contains("other/b")
            ));
        }
    }

    #[test]
    fn a_restart_is_a_new_generation_on_the_same_owner() {
        let members = BTreeSet::from([1, 2]);
        let mut reg = Registry::default();
        apply(&mut reg, &members, false, install("a", "s", 2));
        let before = reg.components["a"].generation;
        let (out, _) = apply(
            &mut reg,
            &members,
            true,
            Command::Restart { name: "a".into() },
        );
        assert_eq!(
            out,
            Outcome::Moved {
                owner: 2,
                generation: before + 1
            }
        );
        assert_eq!(reg.components["a"].owner, 2);
        let (out, _) = apply(
            &mut reg,
            &members,
            true,
            Command::Restart { name: "b".into() },
        );
        assert_eq!(out, Outcome::Refused(Refusal::NotFound("b".into())));
    }
}
