//! The local runtime: the engine, the actors and the storage of one node. It runs what
//! the cluster host tells it to ([`cluster_ops`]: activate, deactivate, replay), answers
//! external sends and requests for the components running here ([`external`]), and knows
//! nothing of the admin API, placement or other nodes.

mod cluster_ops;
mod compiling;
mod external;
mod recovery;
mod upgrade;

pub(crate) use upgrade::CodeSwitch;
pub use upgrade::ProposeUpgrade;

pub(crate) use external::{fast_send_with_key, not_running_here};

pub use cluster_ops::removal_writes;

use external::state_of;
use recovery::GatedFactory;

use crate::api::{ApiError, ComponentInfo, ComponentState, Delivery, ErrorKind, Limits};
use crate::clock::now_ms;
use crate::commit::{CommitError, Committer};
use crate::component::{ComponentActor, ComponentFactory, ComponentShared, InstantiateError};
use crate::component::{NodeEngine, Prepared};
use crate::config::NodeConfig;
use crate::engine::EngineError;
use crate::messaging::{keys, Address, Body, Envelope, RequestErr, Router};
use airssys_actor::{spawn_supervised, ActorHandle, ActorStatus, RestartPolicy};
use airssys_storage::{CommitBatch, Fence, Storage, StorageError, StorageOptions};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Mutex};

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
}

/// What the local runtime keeps about a component it runs (from the replicated registry).
#[derive(Debug, Clone)]
pub(crate) struct ComponentRecord {
    pub name: String,
    pub sha256: String,
    pub size_bytes: u64,
    pub limits: Limits,
    pub node_id: u64,
    pub generation: u64,
    /// The generation this incarnation of the name began at (`init` runs only then).
    pub incarnation: u64,
    pub installed_at_ms: u64,
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
    pub log_lines_dropped: u64,
}

struct Running {
    record: ComponentRecord,
    shared: Arc<ComponentShared>,
    handle: ActorHandle<crate::messaging::Mail>,
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
    engine: NodeEngine,
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
    /// Bumped each time an activation here ends (spawned, or failed): what an install
    /// waits on instead of polling.
    activations: watch::Sender<u64>,
    /// Components whose actor is switching its code now ([`Host::upgrading`]).
    upgrading: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Components owned here waiting for their code to compile, and since when
    /// ([`compiling`]).
    compiling: std::sync::Mutex<HashMap<String, (ComponentRecord, u64)>>,
}

fn api_err(kind: ErrorKind, message: impl Into<String>) -> ApiError {
    ApiError::new(kind, message)
}

fn storage_err(e: StorageError) -> ApiError {
    api_err(ErrorKind::Internal, format!("storage: {e}"))
}

impl Host {
    /// Opens the node's storage: the Raft log, the registry and every component's state
    /// live there.
    pub(crate) fn open_storage(config: &NodeConfig) -> Result<Storage, HostError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| HostError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        Ok(Storage::open(
            &config.data_dir.join("db"),
            StorageOptions::default(),
        )?)
    }

    /// The local runtime on `storage`, committing through `committer` (the cluster's
    /// log). Nothing runs until the cluster host activates what the registry gives this
    /// node and then replays what is stored ([`Host::replay_stored`]).
    pub(crate) fn new(
        config: NodeConfig,
        storage: Storage,
        committer: Arc<dyn Committer>,
    ) -> Result<Host, HostError> {
        let engine =
            crate::component::new_engine(config.data_dir.join("compiled"), config.instance_pool)?;
        let router = Router::new(storage.clone());
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
                activations: watch::channel(0).0,
                upgrading: std::sync::Mutex::new(std::collections::BTreeSet::new()),
                compiling: std::sync::Mutex::new(HashMap::new()),
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

    /// Compiles (or loads from the cache) and links a binary.
    pub(crate) async fn prepare(
        &self,
        binary: Vec<u8>,
        sha256: String,
    ) -> Result<Prepared, ApiError> {
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

    fn resolve_limits(&self, req: &crate::api::LimitsRequest) -> Result<Limits, ApiError> {
        let limits = Limits::resolve(req, &self.inner.config.default_limits);
        match limits.problem() {
            Some(problem) => Err(api_err(ErrorKind::BadRequest, problem)),
            None => Ok(limits),
        }
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
            log_lines_dropped: running.shared.log_budget.dropped(),
            upgraded_at_ms: None,
            previous: None,
        }
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

    /// A component is gone: every counter and mark other components here share with
    /// it is dropped, so one installed later under its name starts fresh pairs.
    pub(crate) async fn forget_peer(&self, name: &str) -> Result<(), ApiError> {
        for running in self.inner.components.lock().await.values() {
            running.shared.forget_peer(name);
        }
        // The removal's own log entry deleted the stored counters and marks everywhere.
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
                    log_lines_dropped: r.shared.log_budget.dropped(),
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
