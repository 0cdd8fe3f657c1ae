//! The node façade: opens storage and the engine, brings every installed component
//! back after a restart (re-delivering committed messages that were not consumed),
//! and serves install, remove, send and request for the admin API.

mod admin;
mod cluster_ops;
mod recovery;

pub use cluster_ops::removal_writes;

use admin::state_of;
use recovery::GatedFactory;

use crate::api::{
    AdminBackend, ApiError, ComponentInfo, ComponentState, Delivery, ErrorKind, InstallRequest,
    Limits, NodeStatus,
};
use crate::clock::now_ms;
use crate::commit::{CommitError, Committer, LocalCommitter};
use crate::component::{ComponentActor, ComponentFactory, ComponentShared};
use crate::config::{NodeConfig, MAX_DEADLINE_MS, MAX_MAILBOX};
use crate::engine::{EngineError, Prepared, WasmEngine, POOL_MAX_MEMORY_BYTES};
use crate::messaging::{keys, Address, Body, Envelope, RequestErr, Router};
use crate::names;
use airssys_actor::{spawn_supervised, ActorHandle, ActorStatus, RestartPolicy};
use airssys_cluster::{choose_node, NodeLoad, Placement};
use airssys_storage::{CommitBatch, Fence, Storage, StorageError, StorageOptions};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Mutex};

/// Largest component binary accepted.
pub const MAX_BINARY_BYTES: usize = 64 << 20;

/// Why a node could not open.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    #[error("registry record of {name} is corrupt: {message}")]
    Registry { name: String, message: String },
}

/// What the registry keeps about an installed component (JSON under `reg/<name>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ComponentRecord {
    pub name: String,
    pub sha256: String,
    pub size_bytes: u64,
    pub limits: Limits,
    pub node_id: u64,
    pub generation: u64,
    /// The generation this incarnation of the name began at (`init` runs only then).
    #[serde(default = "first_generation")]
    pub incarnation: u64,
    pub installed_at_ms: u64,
}

fn first_generation() -> u64 {
    1
}

/// How long stopping a component waits for its commits in flight.
const STOP_DRAIN: Duration = Duration::from_secs(10);

/// What `/metrics` shows of one running component.
pub struct ComponentFigures {
    pub name: String,
    pub mailbox_depth: u64,
    pub restarts: u32,
    pub storage_bytes: u64,
    pub commits_waiting: u64,
}

struct Running {
    record: ComponentRecord,
    shared: Arc<ComponentShared>,
    handle: ActorHandle<Envelope>,
}

impl Running {
    /// Stops the actor after its current message, then waits for the commits of the
    /// handlers it already ran (committed, or refused once it moved), so their effects
    /// leave. A node cut off from its cluster cannot finish them: after [`STOP_DRAIN`] it
    /// stops anyway (nothing of them was released; durable inputs stay in their outboxes).
    async fn stop(self) {
        self.handle.stop().await;
        let drained = self.shared.pipeline.drained();
        if tokio::time::timeout(STOP_DRAIN, drained).await.is_err() {
            tracing::warn!(
                component = %self.record.name,
                waiting = self.shared.pipeline.waiting(),
                "stopped with commits still in flight"
            );
        }
    }
}

/// One node.
#[derive(Clone)]
pub struct Host {
    inner: Arc<Inner>,
}

struct Inner {
    config: NodeConfig,
    storage: Storage,
    engine: WasmEngine,
    router: Arc<Router>,
    components: Mutex<HashMap<String, Running>>,
    /// Actors wait on this until recovery has re-delivered every stored message, so
    /// no new message can overtake an older one from the same sender.
    recovered: watch::Sender<bool>,
    /// Serializes external durable sends: their per-receiver sequence numbers are
    /// committed and delivered in order.
    external_send: Mutex<()>,
    /// Where transactions go (local storage; the cluster's log once it is set).
    committer: std::sync::RwLock<Arc<dyn Committer>>,
    started: Instant,
    /// Durable messages re-delivered from storage when the node opened.
    replayed: std::sync::atomic::AtomicU64,
    /// Components this node should run but could not start (cluster mode), and why.
    failed: std::sync::Mutex<HashMap<String, (ComponentRecord, ApiError)>>,
}

fn api_err(kind: ErrorKind, message: impl Into<String>) -> ApiError {
    ApiError::new(kind, message)
}

fn storage_err(e: StorageError) -> ApiError {
    api_err(ErrorKind::Internal, format!("storage: {e}"))
}

impl Host {
    /// Opens the node's data directory and brings back every installed component.
    pub async fn open(config: NodeConfig) -> Result<Host, HostError> {
        let host = Host::open_bare(config)?;
        host.recover().await?;
        Ok(host)
    }

    /// Opens storage and the engine without starting anything (a cluster node starts
    /// what the replicated registry gives it, then calls [`Host::replay_stored`]).
    pub(crate) fn open_bare(config: NodeConfig) -> Result<Host, HostError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| HostError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let storage = Storage::open(&config.data_dir.join("db"), StorageOptions::default())?;
        let engine = WasmEngine::new(config.data_dir.join("compiled"), config.instance_pool)?;
        let router = Router::new(storage.clone());
        let committer: Arc<dyn Committer> = Arc::new(LocalCommitter {
            storage: storage.clone(),
        });
        let (recovered, _) = watch::channel(false);
        Ok(Host {
            inner: Arc::new(Inner {
                config,
                storage,
                engine,
                router,
                components: Mutex::new(HashMap::new()),
                recovered,
                external_send: Mutex::new(()),
                committer: std::sync::RwLock::new(committer),
                started: Instant::now(),
                replayed: std::sync::atomic::AtomicU64::new(0),
                failed: std::sync::Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Sends every transaction from now on to `committer` (the cluster's log; tests wrap the
    /// node's own); set before any component starts: a running component keeps the one it
    /// started with.
    pub fn set_committer(&self, committer: Arc<dyn Committer>) {
        if let Ok(mut c) = self.inner.committer.write() {
            *c = committer;
        }
    }

    /// Where transactions go now.
    pub fn committer(&self) -> Arc<dyn Committer> {
        match self.inner.committer.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The node's storage (the cluster keeps its Raft log and registry there too).
    /// The node's storage (tests and tools read the system keyspace through it).
    pub fn storage(&self) -> &Storage {
        &self.inner.storage
    }

    async fn prepare(&self, binary: Vec<u8>, sha256: String) -> Result<Prepared, ApiError> {
        let engine = self.inner.engine.clone();
        tokio::task::spawn_blocking(move || engine.prepare(&binary, &sha256))
            .await
            .map_err(|e| api_err(ErrorKind::Internal, format!("compile task failed: {e}")))?
            .map_err(|e| match e {
                EngineError::Invalid(inv) => api_err(ErrorKind::InvalidComponent, inv.reason),
                other => api_err(ErrorKind::Internal, other.to_string()),
            })
    }

    fn shared_for(
        &self,
        record: &ComponentRecord,
        prepared: Prepared,
    ) -> Result<Arc<ComponentShared>, StorageError> {
        Ok(Arc::new(ComponentShared::load(
            record.name.clone(),
            record.incarnation,
            record.limits,
            record.node_id,
            record.generation,
            prepared,
            self.inner.storage.clone(),
            self.inner.router.clone(),
            self.committer(),
        )?))
    }

    fn spawn(&self, record: ComponentRecord, shared: Arc<ComponentShared>) -> Running {
        let factory = GatedFactory {
            inner: ComponentFactory {
                shared: shared.clone(),
            },
            recovered: self.inner.recovered.subscribe(),
        };
        let handle = spawn_supervised(
            factory,
            record.limits.mailbox as usize,
            RestartPolicy::default(),
        );
        self.inner
            .router
            .register(&record.name, handle.sender().clone());
        Running {
            record,
            shared,
            handle,
        }
    }

    async fn start_component(&self, record: ComponentRecord) -> Result<Running, ApiError> {
        let binary = self
            .inner
            .storage
            .sys_get(&keys::binary(&record.sha256))
            .map_err(storage_err)?
            .ok_or_else(|| {
                api_err(
                    ErrorKind::Internal,
                    format!("binary {} is missing from storage", record.sha256),
                )
            })?;
        let prepared = self.prepare(binary, record.sha256.clone()).await?;
        self.inner
            .storage
            .set_generation(&record.name, record.node_id, record.generation)
            .map_err(storage_err)?;
        let shared = self.shared_for(&record, prepared).map_err(storage_err)?;
        Ok(self.spawn(record, shared))
    }

    fn resolve_limits(&self, req: &crate::api::LimitsRequest) -> Result<Limits, ApiError> {
        let limits = Limits::resolve(req, &self.inner.config.default_limits);
        let max_mb = (POOL_MAX_MEMORY_BYTES >> 20) as u32;
        if limits.memory_mb == 0 || limits.memory_mb > max_mb {
            return Err(api_err(
                ErrorKind::BadRequest,
                format!("memory_mb must be between 1 and {max_mb}"),
            ));
        }
        if limits.deadline_ms == 0 || limits.deadline_ms > MAX_DEADLINE_MS {
            return Err(api_err(
                ErrorKind::BadRequest,
                format!("deadline_ms must be between 1 and {MAX_DEADLINE_MS}"),
            ));
        }
        if limits.mailbox == 0 || limits.mailbox > MAX_MAILBOX {
            return Err(api_err(
                ErrorKind::BadRequest,
                format!("mailbox must be between 1 and {MAX_MAILBOX}"),
            ));
        }
        if limits.fuel == Some(0) {
            return Err(api_err(ErrorKind::BadRequest, "fuel must be at least 1"));
        }
        Ok(limits)
    }

    fn info(&self, running: &Running) -> ComponentInfo {
        let r = &running.record;
        let status = running.handle.status();
        let restarts = running.shared.restarts.load(Ordering::Relaxed);
        ComponentInfo {
            name: r.name.clone(),
            sha256: r.sha256.clone(),
            size_bytes: r.size_bytes,
            limits: r.limits,
            node_id: r.node_id,
            generation: r.generation,
            state: state_of(status),
            mailbox_depth: self.inner.router.mailbox_depth(&r.name),
            storage_bytes: self.inner.storage.usage_bytes(&r.name).unwrap_or(0),
            restarts,
            installed_at_ms: r.installed_at_ms,
        }
    }

    /// Removes the component's stored data and registry record (not its CF).
    fn removal_batch(
        &self,
        name: &str,
        sha256: &str,
        others_use_binary: bool,
    ) -> Result<CommitBatch, StorageError> {
        let s = &self.inner.storage;
        let mut sys: Vec<(Vec<u8>, Option<Vec<u8>>)> =
            vec![(keys::registry(name), None), (keys::seq(name), None)];
        for prefix in [
            keys::outbox_for_receiver(name),
            keys::dedup_for_receiver(name),
            keys::pending_for(name),
            keys::pair_seqs_of(name),
        ] {
            for (key, _) in s.sys_scan_prefix(&prefix)? {
                sys.push((key, None));
            }
        }
        if !others_use_binary {
            sys.push((keys::binary(sha256), None));
        }
        Ok(CommitBatch::sys_only(sys))
    }

    /// Stops every actor (graceful: queued requests are answered `unavailable`).
    pub async fn shutdown(&self) {
        let mut components = self.inner.components.lock().await;
        // Actors are stopped but stay registered: a message sent meanwhile to a
        // stopped actor finds its mailbox closed and stays stored for the next start.
        // (Unregistered, it would look like a message to a removed component and be
        // dropped.)
        let running: Vec<(String, Running)> = components.drain().collect();
        for (_, r) in running {
            r.stop().await;
        }
    }

    fn check_target(&self, name: &str, payload: &[u8]) -> Result<(), ApiError> {
        names::validate(name).map_err(|m| api_err(ErrorKind::InvalidName, m))?;
        if payload.len() > crate::component::MAX_PAYLOAD_BYTES {
            return Err(api_err(
                ErrorKind::TooLarge,
                format!(
                    "payload is {} bytes; the cap is {}",
                    payload.len(),
                    crate::component::MAX_PAYLOAD_BYTES
                ),
            ));
        }
        match self.inner.router.mailbox_room(name) {
            None => Err(api_err(
                ErrorKind::NotFound,
                format!("no component named {name}"),
            )),
            Some(0) => Err(api_err(
                ErrorKind::MailboxFull,
                format!("the mailbox of {name} is full; try again later"),
            )),
            Some(_) => Ok(()),
        }
    }

    /// Sends a message or request from an admin client: a durable one is committed to
    /// the outbox first; a fast one is handed over at once.
    async fn send_external(
        &self,
        to: &str,
        body: Body,
        delivery: Delivery,
    ) -> Result<(), ApiError> {
        match delivery {
            Delivery::Durable => self.send_external_durable(to, body).await,
            Delivery::Fast => {
                self.inner.router.deliver(Envelope {
                    from: Address::External,
                    from_incarnation: 0,
                    to: to.to_string(),
                    delivery,
                    seq: 0,
                    origin: 0,
                    trace: crate::telemetry::current_traceparent(),
                    body,
                });
                Ok(())
            }
        }
    }

    /// Commits an external durable message to the outbox, then delivers it. The commit is
    /// fenced with the receiver's placement: only its owner numbers messages to it.
    async fn send_external_durable(&self, to: &str, body: Body) -> Result<(), ApiError> {
        let _serial = self.inner.external_send.lock().await;
        let fence = {
            let components = self.inner.components.lock().await;
            let running = components.get(to).ok_or_else(|| {
                api_err(
                    ErrorKind::Unavailable,
                    format!("{to} is not running on this node; retry"),
                )
            })?;
            Fence {
                component: to.to_string(),
                node_id: running.record.node_id,
                generation: running.shared.generation(),
                commit: 0,
                sequence: 0, // numbered below
                peers: Vec::new(),
            }
        };
        let external = Address::External;
        let counter = keys::pair_seq(external.key_segment(), to);
        let next = self
            .inner
            .storage
            .sys_get(&counter)
            .map_err(storage_err)?
            .and_then(|v| keys::decode_u64(&v))
            .unwrap_or(0)
            + 1;
        let env = Envelope {
            from: external.clone(),
            from_incarnation: 0,
            to: to.to_string(),
            delivery: Delivery::Durable,
            seq: next,
            origin: 0,
            trace: crate::telemetry::current_traceparent(),
            body,
        };
        let mut batch = CommitBatch::sys_only(vec![
            (
                keys::outbox(to, external.key_segment(), next),
                Some(env.encode()),
            ),
            (counter, Some(keys::encode_u64(next))),
        ]);
        // Numbered in the fence too: the replicated log refuses it unless it is the next
        // one, so a number read before an earlier send of unknown outcome applied is never
        // applied twice (a 202 dropped as a duplicate).
        batch.fence = Some(Fence {
            sequence: next,
            ..fence
        });
        self.committer().commit(batch).await.map_err(|e| match e {
            CommitError::Fenced(m) => api_err(
                ErrorKind::Unavailable,
                format!("{to} is moving to another node; retry ({m})"),
            ),
            CommitError::Failed(m) => api_err(
                ErrorKind::Unavailable,
                format!("the message was not committed; it may be retried ({m})"),
            ),
        })?;
        self.inner.router.deliver(env);
        Ok(())
    }

    /// A component is gone: every counter and mark other components here share with
    /// it is dropped, so one installed later under its name starts fresh pairs.
    pub(crate) async fn forget_peer(&self, name: &str) -> Result<(), ApiError> {
        for running in self.inner.components.lock().await.values() {
            running.shared.forget_peer(name);
        }
        if self.committer().replicated() {
            // The removal's own log entry deleted the stored counters and marks everywhere.
            return Ok(());
        }
        let storage = &self.inner.storage;
        let suffix = [b"/".as_slice(), name.as_bytes()].concat();
        let mut sys: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        for prefix in [keys::PAIR_SEQ, keys::DEDUP] {
            for (key, _) in storage.sys_scan_prefix(prefix).map_err(storage_err)? {
                if key.ends_with(&suffix) {
                    sys.push((key, None));
                }
            }
        }
        if !sys.is_empty() {
            storage
                .commit_async(CommitBatch::sys_only(sys))
                .await
                .map_err(storage_err)?;
        }
        Ok(())
    }
}

impl Host {
    /// Per-component figures for `/metrics`.
    pub(crate) async fn component_figures(&self) -> Vec<ComponentFigures> {
        let components = self.inner.components.lock().await;
        let mut v: Vec<_> = components
            .values()
            .map(|r| {
                let name = r.record.name.clone();
                ComponentFigures {
                    mailbox_depth: self.inner.router.mailbox_depth(&name),
                    restarts: r.shared.restarts.load(Ordering::Relaxed),
                    storage_bytes: self.inner.storage.usage_bytes(&name).unwrap_or(0),
                    commits_waiting: r.shared.pipeline.waiting() as u64,
                    name,
                }
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Handler transactions of `name` waiting for their commit on this node (`None` when it
    /// does not run here). Their messages and replies leave once it is durable.
    pub async fn commits_waiting(&self, name: &str) -> Option<usize> {
        let components = self.inner.components.lock().await;
        components.get(name).map(|r| r.shared.pipeline.waiting())
    }

    pub(crate) fn router(&self) -> &Router {
        &self.inner.router
    }

    pub(crate) fn router_arc(&self) -> Arc<Router> {
        self.inner.router.clone()
    }

    /// Commits applied so far (handler transactions, installs, external durable
    /// sends) and the synced writes that carried them.
    pub fn commit_stats(&self) -> airssys_storage::CommitStats {
        self.inner.storage.commit_stats()
    }

    /// Committed durable messages still waiting for their receiver's commit.
    pub fn outbox_pending(&self) -> u64 {
        self.inner
            .storage
            .sys_scan_prefix(keys::OUTBOX)
            .map(|v| v.len() as u64)
            .unwrap_or(0)
    }

    /// Messages handed to a local mailbox so far.
    pub fn messages_delivered(&self) -> u64 {
        self.inner.router.metrics.delivered.load(Ordering::Relaxed)
    }

    /// How many stored durable messages were re-delivered when the node opened.
    pub fn replayed_on_open(&self) -> u64 {
        self.inner.replayed.load(Ordering::Relaxed)
    }

    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }
}
