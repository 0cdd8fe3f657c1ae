//! The replicated registry as a Raft state machine. Applying a command is a pure
//! function over the registry ([`apply_command`]); this module persists the result
//! (components under `raft/sm/c/<name>`, binaries under `raft/bin/<sha256>`, the
//! applied log id and membership under `raft/sm/meta`) in one synced commit per batch
//! of entries, and tells the node through a watch channel.

use super::codec::{self, BINARY_PREFIX, SM_COMPONENT_PREFIX, SM_META_KEY, SNAPSHOT_KEY};
use super::types::{Command, ComponentEntry, NodeInfo, Outcome, Refusal, Registry, TypeConfig};
use crate::placement::NodeId;
use airssys_storage::{CommitBatch, Storage};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::Cursor;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

type Membership = StoredMembership<NodeId, NodeInfo>;

/// What `raft/sm/meta` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Meta {
    last_applied: Option<LogId<NodeId>>,
    membership: Membership,
}

/// A whole snapshot: the registry, the binaries it uses, and where it stands.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotBlob {
    meta: Meta,
    registry: Registry,
    binaries: Vec<(String, Vec<u8>)>,
}

/// What storage a command changes besides the registry.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BinaryEffects {
    pub store: Option<(String, Vec<u8>)>,
    pub delete: Option<String>,
}

/// Applies one command to the registry: deterministic, the same on every node.
pub fn apply_command(
    registry: &mut Registry,
    members: &BTreeSet<NodeId>,
    binary_known: bool,
    command: Command,
) -> (Outcome, BinaryEffects) {
    let mut effects = BinaryEffects::default();
    let outcome = match command {
        Command::Install {
            spec,
            owner,
            binary,
        } => {
            if registry.components.contains_key(&spec.name) {
                Outcome::Refused(Refusal::AlreadyExists(spec.name))
            } else if !members.contains(&owner) {
                Outcome::Refused(Refusal::UnknownNode(owner))
            } else if !binary_known && binary.is_empty() {
                Outcome::Refused(Refusal::MissingBinary(spec.sha256))
            } else {
                if !binary_known {
                    effects.store = Some((spec.sha256.clone(), binary));
                }
                let entry = ComponentEntry {
                    spec,
                    owner,
                    generation: 1,
                };
                registry.components.insert(entry.spec.name.clone(), entry);
                Outcome::Installed {
                    owner,
                    generation: 1,
                }
            }
        }
        Command::Remove { name } => match registry.components.remove(&name) {
            None => Outcome::Refused(Refusal::NotFound(name)),
            Some(entry) => {
                if !registry.uses_binary(&entry.spec.sha256) {
                    effects.delete = Some(entry.spec.sha256);
                }
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
                        entry.owner = to;
                        entry.generation += 1;
                        Outcome::Moved {
                            owner: to,
                            generation: entry.generation,
                        }
                    }
                }
            }
        }
    };
    (outcome, effects)
}

/// What the node reads: the registry as last applied, and a counter bumped on every
/// change (subscribe to wait for one).
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

#[derive(Clone)]
pub struct StateMachine {
    storage: Storage,
    view: Arc<RegistryView>,
}

fn sm_err(e: impl ToString) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(&std::io::Error::other(e.to_string())).into()
}

fn read_err(e: impl ToString) -> StorageError<NodeId> {
    StorageIOError::read_state_machine(&std::io::Error::other(e.to_string())).into()
}

impl StateMachine {
    /// Loads the last applied registry from storage.
    pub fn open(storage: Storage) -> Result<StateMachine, StorageError<NodeId>> {
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
        let (changes, _) = watch::channel(0);
        Ok(StateMachine {
            storage,
            view: Arc::new(RegistryView {
                state: RwLock::new((meta, registry)),
                changes,
            }),
        })
    }

    pub fn view(&self) -> Arc<RegistryView> {
        self.view.clone()
    }

    /// A component binary from the registry.
    pub fn binary(storage: &Storage, sha256: &str) -> Option<Vec<u8>> {
        storage.sys_get(&codec::binary_key(sha256)).ok().flatten()
    }

    fn snapshot_blob(&self) -> Result<SnapshotBlob, StorageError<NodeId>> {
        let (meta, registry) = self
            .view
            .state
            .read()
            .map(|s| s.clone())
            .map_err(read_err)?;
        let mut binaries = Vec::new();
        for sha in registry
            .components
            .values()
            .map(|c| c.spec.sha256.clone())
            .collect::<BTreeSet<_>>()
        {
            if let Some(b) = Self::binary(&self.storage, &sha) {
                binaries.push((sha, b));
            }
        }
        Ok(SnapshotBlob {
            meta,
            registry,
            binaries,
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let blob = self.snapshot_blob()?;
        let data = codec::encode(&blob).map_err(read_err)?;
        let last = blob.meta.last_applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: blob.meta.membership.clone(),
            snapshot_id: format!(
                "{}-{}",
                last.map(|l| l.leader_id.term).unwrap_or(0),
                last.map(|l| l.index).unwrap_or(0)
            ),
        };
        let stored = codec::encode(&(meta.clone(), data.clone())).map_err(sm_err)?;
        self.storage
            .commit_async(CommitBatch::sys_only(vec![(
                SNAPSHOT_KEY.to_vec(),
                Some(stored),
            )]))
            .await
            .map_err(sm_err)?;
        Ok(Snapshot {
            meta,
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
        let mut sys: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        let mut touched = BTreeSet::new();
        for entry in entries {
            meta.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => outcomes.push(Outcome::Nothing),
                EntryPayload::Membership(m) => {
                    meta.membership = StoredMembership::new(Some(entry.log_id), m);
                    outcomes.push(Outcome::Nothing);
                }
                EntryPayload::Normal(command) => {
                    let members: BTreeSet<NodeId> =
                        meta.membership.nodes().map(|(id, _)| *id).collect();
                    // A binary is stored exactly while some component uses it (it is
                    // deleted with its last user), so the registry says whether it is here.
                    let known = match &command {
                        Command::Install { spec, .. } => registry.uses_binary(&spec.sha256),
                        _ => true,
                    };
                    let name = match &command {
                        Command::Install { spec, .. } => spec.name.clone(),
                        Command::Remove { name } | Command::Move { name, .. } => name.clone(),
                    };
                    let (outcome, effects) = apply_command(&mut registry, &members, known, command);
                    if let Some((sha, bytes)) = effects.store {
                        sys.push((codec::binary_key(&sha), Some(bytes)));
                    }
                    if let Some(sha) = effects.delete {
                        sys.push((codec::binary_key(&sha), None));
                    }
                    touched.insert(name);
                    outcomes.push(outcome);
                }
            }
        }
        for name in touched {
            let value = match registry.components.get(&name) {
                Some(entry) => Some(codec::encode(entry).map_err(sm_err)?),
                None => None,
            };
            sys.push((codec::component_key(&name), value));
        }
        sys.push((
            SM_META_KEY.to_vec(),
            Some(codec::encode(&meta).map_err(sm_err)?),
        ));
        self.storage
            .commit_async(CommitBatch::sys_only(sys))
            .await
            .map_err(sm_err)?;
        if let Ok(mut s) = self.view.state.write() {
            *s = (meta, registry);
        }
        self.view.bump();
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
        let mut sys: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        for (key, _) in self
            .storage
            .sys_scan_prefix(SM_COMPONENT_PREFIX)
            .map_err(read_err)?
        {
            sys.push((key, None));
        }
        for (key, _) in self
            .storage
            .sys_scan_prefix(BINARY_PREFIX)
            .map_err(read_err)?
        {
            sys.push((key, None));
        }
        for entry in blob.registry.components.values() {
            sys.push((
                codec::component_key(&entry.spec.name),
                Some(codec::encode(entry).map_err(sm_err)?),
            ));
        }
        for (sha, bytes) in &blob.binaries {
            sys.push((codec::binary_key(sha), Some(bytes.clone())));
        }
        let new_meta = Meta {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        sys.push((
            SM_META_KEY.to_vec(),
            Some(codec::encode(&new_meta).map_err(sm_err)?),
        ));
        sys.push((
            SNAPSHOT_KEY.to_vec(),
            Some(codec::encode(&(meta.clone(), data)).map_err(sm_err)?),
        ));
        // Deletes first, then puts: a key both deleted and re-put ends up put.
        let (dels, puts): (Vec<_>, Vec<_>) = sys.into_iter().partition(|(_, v)| v.is_none());
        let sys = dels.into_iter().chain(puts).collect();
        self.storage
            .commit_async(CommitBatch::sys_only(sys))
            .await
            .map_err(sm_err)?;
        if let Ok(mut s) = self.view.state.write() {
            *s = (new_meta, blob.registry);
        }
        self.view.bump();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        match self.storage.sys_get(SNAPSHOT_KEY).map_err(read_err)? {
            None => Ok(None),
            Some(bytes) => {
                let (meta, data): (SnapshotMeta<NodeId, NodeInfo>, Vec<u8>) =
                    codec::decode(&bytes).map_err(read_err)?;
                Ok(Some(Snapshot {
                    meta,
                    snapshot: Box::new(Cursor::new(data)),
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::ComponentSpec;

    fn spec(name: &str, sha: &str) -> ComponentSpec {
        ComponentSpec {
            name: name.into(),
            sha256: sha.into(),
            size_bytes: 1,
            config: Vec::new(),
            installed_at_ms: 0,
        }
    }

    fn install(name: &str, sha: &str, owner: NodeId) -> Command {
        Command::Install {
            spec: spec(name, sha),
            owner,
            binary: vec![1],
        }
    }

    #[test]
    fn install_move_remove() {
        let members = BTreeSet::from([1, 2, 3]);
        let mut reg = Registry::default();
        let (out, fx) = apply_command(&mut reg, &members, false, install("a", "s1", 2));
        assert_eq!(
            out,
            Outcome::Installed {
                owner: 2,
                generation: 1
            }
        );
        assert_eq!(fx.store, Some(("s1".into(), vec![1])));
        let (out, _) = apply_command(&mut reg, &members, true, install("a", "s1", 3));
        assert_eq!(out, Outcome::Refused(Refusal::AlreadyExists("a".into())));
        let (out, _) = apply_command(
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
        let (out, _) = apply_command(
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
        let (out, fx) = apply_command(
            &mut reg,
            &members,
            true,
            Command::Remove { name: "a".into() },
        );
        assert_eq!(out, Outcome::Removed);
        assert_eq!(fx.delete, Some("s1".into()));
        let (out, _) = apply_command(
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
        apply_command(&mut reg, &members, false, install("a", "s", 1));
        let (_, fx) = apply_command(&mut reg, &members, true, install("b", "s", 1));
        assert_eq!(fx.store, None, "known binary is not stored twice");
        let (_, fx) = apply_command(
            &mut reg,
            &members,
            true,
            Command::Remove { name: "a".into() },
        );
        assert_eq!(fx.delete, None);
    }

    #[test]
    fn install_refused_on_non_member_or_without_binary() {
        let members = BTreeSet::from([1]);
        let mut reg = Registry::default();
        let (out, _) = apply_command(&mut reg, &members, false, install("a", "s", 5));
        assert_eq!(out, Outcome::Refused(Refusal::UnknownNode(5)));
        let cmd = Command::Install {
            spec: spec("a", "s"),
            owner: 1,
            binary: Vec::new(),
        };
        let (out, _) = apply_command(&mut reg, &members, false, cmd);
        assert_eq!(out, Outcome::Refused(Refusal::MissingBinary("s".into())));
        assert!(reg.components.is_empty());
    }
}
