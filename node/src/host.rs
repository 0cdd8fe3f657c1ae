//! The node façade: opens storage and the engine, brings every installed component
//! back after a restart (re-delivering committed messages that were not consumed),
//! and serves install, remove, send and request for the admin API.

use crate::api::{
    AdminBackend, ApiError, ComponentInfo, ComponentState, Delivery, ErrorKind, InstallRequest,
    Limits, NodeStatus,
};
use crate::clock::now_ms;
use crate::component::{ComponentActor, ComponentFactory, ComponentShared};
use crate::config::{NodeConfig, MAX_DEADLINE_MS, MAX_MAILBOX};
use crate::engine::{EngineError, Prepared, WasmEngine, POOL_MAX_MEMORY_BYTES};
use crate::messaging::{keys, Address, Body, Envelope, RequestErr, Router};
use crate::names;
use airssys_actor::{spawn_supervised, ActorHandle, ActorStatus, RestartPolicy};
use airssys_cluster::{choose_node, NodeLoad, Placement};
use airssys_storage::{CommitBatch, Storage, StorageError, StorageOptions};
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
struct ComponentRecord {
    name: String,
    sha256: String,
    size_bytes: u64,
    limits: Limits,
    node_id: u64,
    generation: u64,
    installed_at_ms: u64,
}

struct Running {
    record: ComponentRecord,
    shared: Arc<ComponentShared>,
    handle: ActorHandle<Envelope>,
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
    /// Serializes external durable sends: their sequence numbers are committed and
    /// delivered in order.
    external_seq: Mutex<u64>,
    started: Instant,
    /// Durable messages re-delivered from storage when the node opened.
    replayed: std::sync::atomic::AtomicU64,
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
        std::fs::create_dir_all(&config.data_dir).map_err(|source| HostError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let storage = Storage::open(&config.data_dir.join("db"), StorageOptions::default())?;
        let engine = WasmEngine::new(config.data_dir.join("compiled"), config.instance_pool)?;
        let router = Router::new(storage.clone());
        let external_seq = storage
            .sys_get(&keys::seq(Address::External.key_segment()))?
            .and_then(|v| keys::decode_u64(&v))
            .unwrap_or(0);
        let (recovered, _) = watch::channel(false);
        let host = Host {
            inner: Arc::new(Inner {
                config,
                storage,
                engine,
                router,
                components: Mutex::new(HashMap::new()),
                recovered,
                external_seq: Mutex::new(external_seq),
                started: Instant::now(),
                replayed: std::sync::atomic::AtomicU64::new(0),
            }),
        };
        host.recover().await?;
        Ok(host)
    }

    async fn recover(&self) -> Result<(), HostError> {
        let inner = &self.inner;
        let mut components = inner.components.lock().await;
        for (key, value) in inner.storage.sys_scan_prefix(keys::REGISTRY)? {
            let name = String::from_utf8_lossy(&key[keys::REGISTRY.len()..]).into_owned();
            let record: ComponentRecord =
                serde_json::from_slice(&value).map_err(|e| HostError::Registry {
                    name: name.clone(),
                    message: e.to_string(),
                })?;
            match self.start_component(record.clone()).await {
                Ok(running) => {
                    components.insert(name, running);
                }
                // One broken component must not keep the node down: it is left out
                // and the log says why.
                Err(e) => tracing::error!(component = %name, "cannot start: {e}"),
            }
        }

        // Requests still waiting for their answer get their clocks back; those whose
        // deadline passed while the node was down time out now.
        let now = now_ms();
        for (key, value) in inner.storage.sys_scan_prefix(keys::PENDING)? {
            let rest = &key[keys::PENDING.len()..];
            let Some(slash) = rest.iter().position(|&b| b == b'/') else {
                continue;
            };
            let requester = String::from_utf8_lossy(&rest[..slash]).into_owned();
            let (Some(id), Some(deadline_ms)) = (keys::pending_id(&key), keys::decode_u64(&value))
            else {
                continue;
            };
            let left = Duration::from_millis(deadline_ms.saturating_sub(now));
            inner
                .router
                .register_request(Address::Component(requester), id, Instant::now() + left);
        }

        // Re-deliver, in order, every committed durable message not yet consumed.
        let mut replayed = 0usize;
        for (key, value) in inner.storage.sys_scan_prefix(keys::OUTBOX)? {
            match Envelope::decode(&value) {
                Ok(env) => {
                    inner.router.deliver(env);
                    replayed += 1;
                }
                Err(e) => tracing::error!(
                    key = %String::from_utf8_lossy(&key),
                    "stored message does not decode, left in place: {e}"
                ),
            }
        }
        drop(components);
        inner.replayed.store(replayed as u64, Ordering::Relaxed);
        inner.recovered.send_replace(true);
        tracing::info!(
            components = self.inner.components.lock().await.len(),
            replayed,
            "node recovered"
        );
        Ok(())
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
            record.limits,
            record.node_id,
            record.generation,
            prepared,
            self.inner.storage.clone(),
            self.inner.router.clone(),
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
        ] {
            for (key, _) in s.sys_scan_prefix(&prefix)? {
                sys.push((key, None));
            }
        }
        if !others_use_binary {
            sys.push((keys::binary(sha256), None));
        }
        Ok(CommitBatch {
            fence: None,
            components: Vec::new(),
            sys,
        })
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
            r.handle.stop().await;
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
                    to: to.to_string(),
                    delivery,
                    seq: 0,
                    body,
                });
                Ok(())
            }
        }
    }

    /// Commits an external durable message to the outbox, then delivers it.
    async fn send_external_durable(&self, to: &str, body: Body) -> Result<(), ApiError> {
        let mut seq = self.inner.external_seq.lock().await;
        let next = *seq + 1;
        let external = Address::External;
        let env = Envelope {
            from: external.clone(),
            to: to.to_string(),
            delivery: Delivery::Durable,
            seq: next,
            body,
        };
        let batch = CommitBatch {
            fence: None,
            components: Vec::new(),
            sys: vec![
                (
                    keys::outbox(to, external.key_segment(), next),
                    Some(env.encode()),
                ),
                (
                    keys::seq(external.key_segment()),
                    Some(keys::encode_u64(next)),
                ),
            ],
        };
        self.inner
            .storage
            .commit_async(batch)
            .await
            .map_err(storage_err)?;
        *seq = next;
        self.inner.router.deliver(env);
        Ok(())
    }
}

fn state_of(status: ActorStatus) -> ComponentState {
    match status {
        ActorStatus::Starting => ComponentState::Starting,
        ActorStatus::Running => ComponentState::Running,
        ActorStatus::Restarting {
            restarts,
            last_error,
        } => ComponentState::Restarting {
            restarts,
            last_error,
        },
        ActorStatus::Failed { reason } => ComponentState::Failed { reason },
        ActorStatus::Stopped => ComponentState::Stopped,
    }
}

fn request_error_to_api(err: RequestErr) -> ApiError {
    let kind = match &err {
        RequestErr::NotFound => ErrorKind::NotFound,
        RequestErr::Timeout => ErrorKind::Timeout,
        RequestErr::MailboxFull => ErrorKind::MailboxFull,
        RequestErr::Rejected(_) => ErrorKind::Rejected,
        RequestErr::Trapped(_) => ErrorKind::Trapped,
        RequestErr::Unavailable(_) => ErrorKind::Unavailable,
    };
    let message = match err {
        RequestErr::NotFound => "no such component".to_string(),
        RequestErr::Timeout => "no reply within the request's timeout".to_string(),
        RequestErr::MailboxFull => "the component's mailbox is full".to_string(),
        RequestErr::Rejected(t) => format!("the handler returned an error: {t}"),
        RequestErr::Trapped(t) | RequestErr::Unavailable(t) => t,
    };
    api_err(kind, message)
}

/// Holds each fresh instance back until recovery has finished re-delivering.
struct GatedFactory {
    inner: ComponentFactory,
    recovered: watch::Receiver<bool>,
}

impl airssys_actor::ActorFactory for GatedFactory {
    type Actor = ComponentActor;

    async fn create(&mut self) -> Result<ComponentActor, airssys_actor::Crash> {
        if self.recovered.wait_for(|done| *done).await.is_err() {
            return Err(airssys_actor::Crash::new("node is shutting down"));
        }
        self.inner.create().await
    }

    fn reject(&mut self, msg: Envelope, why: &airssys_actor::Rejection) {
        self.inner.reject(msg, why)
    }
}

impl AdminBackend for Host {
    async fn install(&self, req: InstallRequest) -> Result<ComponentInfo, ApiError> {
        let name = req.name;
        names::validate(&name).map_err(|m| api_err(ErrorKind::InvalidName, m))?;
        if req.binary.len() > MAX_BINARY_BYTES {
            return Err(api_err(
                ErrorKind::TooLarge,
                format!(
                    "the binary is {} bytes; the cap is {MAX_BINARY_BYTES}",
                    req.binary.len()
                ),
            ));
        }
        let limits = self.resolve_limits(&req.limits)?;
        let mut components = self.inner.components.lock().await;
        if components.contains_key(&name) {
            return Err(api_err(
                ErrorKind::AlreadyExists,
                format!("a component named {name} is already installed; remove it first"),
            ));
        }
        let sha256 = hex::encode(Sha256::digest(&req.binary));
        let size_bytes = req.binary.len() as u64;
        let binary_key = keys::binary(&sha256);
        let storage = &self.inner.storage;
        let binary_known = storage.sys_get(&binary_key).map_err(storage_err)?.is_some();
        let prepared = self.prepare(req.binary.clone(), sha256.clone()).await?;

        // One node today: the scheduler's view holds just this node. The decision is
        // the same pure function the cluster's leader will run over every member.
        let view = [NodeLoad {
            node: self.inner.config.node_id,
            alive: true,
            actors: components.len() as u64,
        }];
        let node = choose_node(&view).unwrap_or(self.inner.config.node_id);
        let placement = Placement::initial(node);
        let record = ComponentRecord {
            name: name.clone(),
            sha256: sha256.clone(),
            size_bytes,
            limits,
            node_id: placement.node,
            generation: placement.generation,
            installed_at_ms: now_ms(),
        };
        storage.create_component(&name).map_err(storage_err)?;
        storage
            .set_generation(&name, record.node_id, record.generation)
            .map_err(storage_err)?;
        let record_json =
            serde_json::to_vec(&record).map_err(|e| api_err(ErrorKind::Internal, e.to_string()))?;
        let mut sys = vec![(keys::registry(&name), Some(record_json))];
        if !binary_known {
            sys.push((binary_key, Some(req.binary)));
        }
        storage
            .commit_async(CommitBatch {
                fence: None,
                components: Vec::new(),
                sys,
            })
            .await
            .map_err(storage_err)?;

        let shared = self.shared_for(&record, prepared).map_err(storage_err)?;
        let init = match ComponentActor::instantiate(shared.clone()).await {
            Ok(mut actor) => actor.run_init().await,
            Err(e) => Err(RequestErr::Unavailable(e)),
        };
        if let Err(err) = init {
            // Leave nothing behind: the install did not happen.
            let others = components.values().any(|r| r.record.sha256 == sha256);
            let batch = self
                .removal_batch(&name, &sha256, others || binary_known)
                .map_err(storage_err)?;
            storage.commit_async(batch).await.map_err(storage_err)?;
            storage.drop_component(&name).map_err(storage_err)?;
            let mut e = request_error_to_api(err);
            e.message = format!("init failed, nothing was installed: {}", e.message);
            return Err(e);
        }
        let running = self.spawn(record, shared);
        let info = self.info(&running);
        components.insert(name.clone(), running);
        tracing::info!(component = %name, sha256 = %sha256, "installed");
        Ok(info)
    }

    async fn list(&self) -> Result<Vec<ComponentInfo>, ApiError> {
        let components = self.inner.components.lock().await;
        let mut list: Vec<ComponentInfo> = components.values().map(|r| self.info(r)).collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(list)
    }

    async fn describe(&self, name: &str) -> Result<ComponentInfo, ApiError> {
        let components = self.inner.components.lock().await;
        components
            .get(name)
            .map(|r| self.info(r))
            .ok_or_else(|| api_err(ErrorKind::NotFound, format!("no component named {name}")))
    }

    async fn remove(&self, name: &str) -> Result<(), ApiError> {
        let mut components = self.inner.components.lock().await;
        let running = components
            .remove(name)
            .ok_or_else(|| api_err(ErrorKind::NotFound, format!("no component named {name}")))?;
        self.inner.router.unregister(name);
        running.handle.stop().await;
        let sha = running.record.sha256.clone();
        let others = components.values().any(|r| r.record.sha256 == sha);
        let batch = self
            .removal_batch(name, &sha, others)
            .map_err(storage_err)?;
        let storage = &self.inner.storage;
        storage.commit_async(batch).await.map_err(storage_err)?;
        storage.drop_component(name).map_err(storage_err)?;
        tracing::info!(component = %name, "removed");
        Ok(())
    }

    async fn send(&self, name: &str, payload: Vec<u8>, delivery: Delivery) -> Result<(), ApiError> {
        self.check_target(name, &payload)?;
        self.send_external(name, Body::Message { payload }, delivery)
            .await
    }

    async fn request(
        &self,
        name: &str,
        payload: Vec<u8>,
        timeout: Duration,
        delivery: Delivery,
    ) -> Result<Vec<u8>, ApiError> {
        self.check_target(name, &payload)?;
        let (id, answer) = self
            .inner
            .router
            .register_external(Instant::now() + timeout);
        let body = Body::Request {
            id,
            payload,
            deadline_ms: now_ms() + timeout.as_millis() as u64,
        };
        if let Err(e) = self.send_external(name, body, delivery).await {
            self.inner.router.answer(
                &Address::External,
                id,
                Err(RequestErr::Unavailable(e.message.clone())),
            );
            return Err(e);
        }
        match answer.await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(request_error_to_api(e)),
            Err(_) => Err(api_err(
                ErrorKind::Internal,
                "the request was dropped without an answer",
            )),
        }
    }

    async fn status(&self) -> Result<NodeStatus, ApiError> {
        Ok(NodeStatus {
            node_id: self.inner.config.node_id,
            admin_addr: self.inner.config.admin_addr.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            components: self.inner.components.lock().await.len() as u64,
            uptime_ms: self.inner.started.elapsed().as_millis() as u64,
        })
    }

    async fn metrics(&self) -> String {
        crate::metrics::render(self).await
    }

    async fn ready(&self) -> bool {
        *self.inner.recovered.borrow()
    }
}

impl Host {
    /// Per-component figures for `/metrics`: (name, mailbox depth, restarts, storage bytes).
    pub(crate) async fn component_figures(&self) -> Vec<(String, u64, u32, u64)> {
        let components = self.inner.components.lock().await;
        let mut v: Vec<_> = components
            .values()
            .map(|r| {
                let name = r.record.name.clone();
                (
                    name.clone(),
                    self.inner.router.mailbox_depth(&name),
                    r.shared.restarts.load(Ordering::Relaxed),
                    self.inner.storage.usage_bytes(&name).unwrap_or(0),
                )
            })
            .collect();
        v.sort();
        v
    }

    pub(crate) fn router(&self) -> &Router {
        &self.inner.router
    }

    /// Commits applied so far (handler transactions, installs, external durable
    /// sends) and the synced writes that carried them.
    pub fn commit_stats(&self) -> airssys_storage::CommitStats {
        self.inner.storage.commit_stats()
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
