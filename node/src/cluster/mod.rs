//! A node in a cluster: the local host (engine, actors, storage) driven by the
//! replicated registry. The node runs exactly the components the applied registry
//! gives it ([`reconcile`]), sends envelopes for components elsewhere over QUIC
//! ([`route`]), forwards admin calls to a component's owner ([`proto`]) and admin
//! writes to the leader (through [`airssys_cluster::ClusterNode`]).

mod admin;
mod backup;
pub mod commit;
pub mod compile;
mod follow;
mod import;
pub mod proto;
pub mod reconcile;
pub mod route;
pub mod tls_files;
mod upgrade;

use crate::api::{ApiError, ErrorKind, Limits};
use crate::config::NodeConfig;
use crate::host::{ComponentRecord, Host, HostError};
use airssys_cluster::{AppInbox, ClusterConfig, ClusterError, ClusterNode, NodeInfo};
use proto::{AppAnswer, AppCall};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// How a node takes part in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// Where the QUIC endpoint listens.
    pub peer_listen: SocketAddr,
    /// How other nodes reach it (`host:port`; the host must be in the node's certificate).
    pub peer_advertise: String,
    /// How other nodes' admin APIs reach this one.
    pub admin_advertise: String,
    /// Peer addresses of members to join through; empty: start a new cluster (once).
    pub join: Vec<String>,
    /// Directory with `ca.pem`, `node.pem` and `node.key`; `None`: `<data-dir>/tls`,
    /// made on first start with a new CA (a single-node cluster).
    pub tls_dir: Option<PathBuf>,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: u64,
    /// A member the leader has not heard from for this long loses its components.
    pub failure_timeout_ms: u64,
    /// Applied entries between snapshots (the log behind a snapshot is purged).
    pub snapshot_every: u64,
}

/// Entries between snapshots by default.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 1000;

/// The default shortest election timeout. With openraft's leader lease a follower campaigns
/// 2.5 to 3 times this long after its leader's last heartbeat: 500–600 ms, within the
/// failure timeout, so a dead leader's components move about as fast as a follower's.
pub const DEFAULT_ELECTION_TIMEOUT_MS: u64 = 200;

/// The default failure timeout: with 100 ms heartbeats, six missed in a row. Detection plus
/// the move and the new owner's activation keep failover near the 1 s target.
pub const DEFAULT_FAILURE_TIMEOUT_MS: u64 = 600;

impl ClusterSettings {
    /// Loopback defaults for a node whose admin API is on `admin`.
    pub fn local(admin: SocketAddr, peer_port: u16) -> ClusterSettings {
        let peer = SocketAddr::new(admin.ip(), peer_port);
        ClusterSettings {
            peer_listen: peer,
            peer_advertise: peer.to_string(),
            admin_advertise: admin.to_string(),
            join: Vec::new(),
            tls_dir: None,
            heartbeat_ms: 100,
            election_timeout_ms: DEFAULT_ELECTION_TIMEOUT_MS,
            failure_timeout_ms: DEFAULT_FAILURE_TIMEOUT_MS,
            snapshot_every: DEFAULT_SNAPSHOT_EVERY,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterHostError {
    #[error("{0}")]
    Host(#[from] HostError),
    #[error("{0}")]
    Cluster(#[from] ClusterError),
    #[error("{0}")]
    Tls(String),
}

/// A host in a cluster.
#[derive(Clone)]
pub struct ClusterHost {
    host: Host,
    cluster: ClusterNode,
    /// Binaries compiled into this node's cache (every installed one, so a failover here
    /// activates without compiling).
    warmed: Arc<std::sync::Mutex<BTreeSet<String>>>,
    /// Binaries compiling in the background ([`compile`]).
    compiles: compile::Compiles,
    /// The incarnation of every registered name as of the last reconcile: a name whose
    /// incarnation changed (removed, maybe installed again) has its counters and marks
    /// forgotten by the actors here.
    seen: Arc<tokio::sync::Mutex<BTreeMap<String, u64>>>,
    /// Set once by [`ClusterHost::shutdown`]: every loop of this node ends, so nothing
    /// holds its storage afterwards (a restart in the same process opens it again).
    stopping: Arc<tokio::sync::watch::Sender<bool>>,
}

/// Runs `work` until it ends or the node is stopping, whichever comes first.
fn spawn_until_stopped(
    mut stop: tokio::sync::watch::Receiver<bool>,
    work: impl std::future::Future<Output = ()> + Send + 'static,
) {
    tokio::spawn(async move {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {}
            () = work => {}
        }
    });
}

/// The messaging keyspace's rules, as the state machine applies them (see `keys.rs`).
struct MessagingKeyspace;

impl airssys_cluster::Keyspace for MessagingKeyspace {
    fn removal_plan(
        &self,
        storage: &airssys_storage::Storage,
        name: &str,
        incarnation: u64,
    ) -> airssys_cluster::RemovalPlan {
        crate::host::removal_writes(storage, name, incarnation).unwrap_or_else(|e| {
            tracing::error!(component = name, "cannot list its state to delete: {e}");
            Default::default()
        })
    }

    fn commit_may_write(&self, component: &str, key: &[u8], put: bool) -> bool {
        crate::messaging::keys::commit_may_write(component, key, put)
    }
}

impl ClusterHost {
    /// Opens the node, starts Raft and the transport, runs what the registry already
    /// gives this node, then bootstraps or joins (once; a node with state does neither).
    pub async fn start(
        config: NodeConfig,
        settings: ClusterSettings,
    ) -> Result<ClusterHost, ClusterHostError> {
        let storage = Host::open_storage(&config)?;
        let (ca_pem, cert) =
            tls_files::load_or_create(&config, &settings).map_err(ClusterHostError::Tls)?;
        let (cluster, inbox) = ClusterNode::start(
            ClusterConfig {
                node_id: config.node_id,
                listen: settings.peer_listen,
                info: NodeInfo {
                    peer_addr: settings.peer_advertise.clone(),
                    admin_addr: settings.admin_advertise.clone(),
                },
                ca_pem,
                cert,
                heartbeat_ms: settings.heartbeat_ms,
                election_timeout_ms: settings.election_timeout_ms,
                failure_timeout_ms: settings.failure_timeout_ms,
                snapshot_every: settings.snapshot_every,
            },
            storage.clone(),
            Arc::new(MessagingKeyspace),
        )
        .await?;
        // Every transaction goes through the log.
        let host = Host::new(
            config.clone(),
            storage,
            Arc::new(commit::RaftCommitter::new(cluster.clone())),
        )?;
        host.router().set_remote(Arc::new(route::ClusterRoute {
            cluster: cluster.clone(),
        }));
        let node = ClusterHost {
            host,
            cluster,
            warmed: Arc::default(),
            compiles: compile::Compiles::new(compile::parallelism()),
            seen: Arc::default(),
            stopping: Arc::new(tokio::sync::watch::channel(false).0),
        };
        // The only voter has nobody to learn moves from: it runs what it owns before it
        // serves (a restarted single node answers at once). Others catch up first, and so
        // does a node with no membership yet (new, or seeded from a backup: what it owns
        // runs once its own cluster has a leader to commit through).
        let voters: Vec<u64> = node
            .cluster
            .view()
            .membership()
            .membership()
            .voter_ids()
            .collect();
        let alone = !voters.is_empty() && voters.iter().all(|v| *v == config.node_id);
        if alone {
            node.run_what_is_owned().await;
        }
        node.spawn_loops(inbox, alone);
        // The first seed starts the cluster (when it has no state and no other seed
        // belongs to a cluster already: a first pod whose volume was lost joins back
        // instead). Everyone else joins through the others.
        let me = &settings.peer_advertise;
        let others: Vec<String> = settings.join.iter().filter(|s| *s != me).cloned().collect();
        let first = settings.join.first().is_none_or(|s| s == me);
        let fresh = !node.cluster.is_initialized().await;
        let bootstrap = fresh && first && !node.cluster.any_member_among(&others).await;
        if bootstrap {
            node.cluster.bootstrap().await?;
        } else if fresh {
            let joining = node.clone();
            tokio::spawn(async move {
                if let Err(e) = joining
                    .cluster
                    .join(&others, Duration::from_secs(600))
                    .await
                {
                    tracing::error!("{e}");
                }
            });
        }
        Ok(node)
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    pub fn cluster(&self) -> &ClusterNode {
        &self.cluster
    }

    /// The first reconcile after start, then the replay of stored messages (which lets
    /// actors run).
    async fn run_what_is_owned(&self) {
        self.reconcile().await;
        if let Err(e) = self.host.replay_stored().await {
            tracing::error!("cannot replay stored messages: {e}");
        }
        tracing::info!(
            node = self.cluster.id(),
            "caught up; running what this node owns"
        );
    }

    /// `started`: the first reconcile already ran (a node that is the only voter).
    fn spawn_loops(&self, inbox: AppInbox, started: bool) {
        let AppInbox {
            mut calls,
            mut frames,
        } = inbox;
        let node = self.clone();
        // Subscribed before the first look at the registry, so no change is missed.
        let mut changes = self.cluster.view().subscribe();
        spawn_until_stopped(self.stopping.subscribe(), async move {
            if !started {
                // Nothing runs before this node has applied what the leader had committed:
                // a node coming back must first learn which of its components moved away.
                node.cluster.catch_up().await;
                node.run_what_is_owned().await;
            }
            loop {
                // A finished background compile lets a component waiting for it start.
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { break },
                    () = node.compiles.finished() => {}
                }
                node.reconcile().await;
            }
        });
        let node = self.clone();
        spawn_until_stopped(self.stopping.subscribe(), async move {
            while let Some((body, reply)) = calls.recv().await {
                let node = node.clone();
                tokio::spawn(async move {
                    let answer = node.answer_app_call(&body).await;
                    let _ = reply.send(answer);
                });
            }
        });
        let node = self.clone();
        spawn_until_stopped(self.stopping.subscribe(), async move {
            while let Some(frame) = frames.recv().await {
                route::on_lane_frame(node.host.router(), &frame);
            }
        });
        spawn_until_stopped(
            self.stopping.subscribe(),
            route::redeliver_loop(
                self.host.router_arc(),
                self.host.storage().clone(),
                self.host.clone(),
            ),
        );
    }

    /// Brings local actors and stores in line with the applied registry.
    async fn reconcile(&self) {
        // Stores before the registry: applying an install creates its store, so a store
        // listed here whose install the registry read below does not show yet could not
        // exist; read the other way round, a fresh store would look orphaned and be dropped.
        let stores: BTreeSet<String> = self.host.store_names().into_iter().collect();
        // One reconcile at a time: `seen` is what the previous one left.
        let mut seen = self.seen.lock().await;
        let registry = self.cluster.view().registry();
        // A component waiting for its code is planned afresh once the code is ready (or
        // its compile failed, or the registry changed under it).
        for (name, sha, generation) in self.host.compiling() {
            let same = registry.components.get(&name).is_some_and(|e| {
                e.owner == self.cluster.id() && e.generation == generation && e.spec.sha256 == sha
            });
            if !same || !self.compiles.must_wait(&self.host, &sha) {
                self.host.unmark_compiling(&name);
            }
        }
        let local = self.host.local_generations().await;
        let upgrading = self.host.upgrading();
        let steps = reconcile::plan(
            self.cluster.id(),
            &registry,
            &local,
            &upgrading,
            &stores,
            &seen,
        );
        *seen = reconcile::incarnations(&registry);
        for step in steps {
            let result = match &step {
                reconcile::Step::Deactivate(name) => {
                    self.host.deactivate(name).await;
                    Ok(())
                }
                reconcile::Step::Forget(name) => self.host.forget_peer(name).await,
                reconcile::Step::CreateStore(name) => self.host.ensure_store(name),
                reconcile::Step::Activate { name, .. } => match registry.components.get(name) {
                    Some(entry) => self.activate(entry).await,
                    None => Ok(()),
                },
            };
            if let Err(e) = result {
                tracing::error!(?step, "reconcile step failed: {e}");
            }
        }
        self.warm_up(&registry);
    }

    /// Compiles, in the background, every installed binary this node has not compiled yet:
    /// a standby that takes over a component after a failure then only loads it.
    fn warm_up(&self, registry: &airssys_cluster::Registry) {
        let mut todo = Vec::new();
        if let Ok(mut warmed) = self.warmed.lock() {
            for entry in registry.components.values() {
                if warmed.insert(entry.spec.sha256.clone()) {
                    todo.push(entry.spec.sha256.clone());
                }
            }
        }
        if todo.is_empty() {
            return;
        }
        for sha in todo {
            self.compiles
                .start(&self.host, &sha, || self.cluster.binary(&sha));
        }
    }

    /// Starts the component here, or, when its code is not compiled yet, queues the
    /// compile and marks it `compiling` (the reconcile after the compile starts it).
    async fn activate(&self, entry: &airssys_cluster::ComponentEntry) -> Result<(), ApiError> {
        let limits: Limits = serde_json::from_slice(&entry.spec.config).map_err(|e| {
            ApiError::new(
                ErrorKind::Internal,
                format!("component config is corrupt: {e}"),
            )
        })?;
        let binary = self.cluster.binary(&entry.spec.sha256).ok_or_else(|| {
            ApiError::new(
                ErrorKind::Internal,
                format!("binary {} is missing from the registry", entry.spec.sha256),
            )
        })?;
        let record = ComponentRecord {
            name: entry.spec.name.clone(),
            sha256: entry.spec.sha256.clone(),
            size_bytes: entry.spec.size_bytes,
            limits,
            node_id: entry.owner,
            generation: entry.generation,
            incarnation: entry.incarnation,
            installed_at_ms: entry.spec.installed_at_ms,
        };
        // Limits no install would accept are refused by the activation at once: nothing
        // to compile for.
        if record.limits.problem().is_none() && self.compiles.must_wait(&self.host, &record.sha256)
        {
            self.host.mark_compiling(record.clone());
            self.compiles
                .start(&self.host, &record.sha256, || Some(binary.clone()));
            // Unless it compiled in between: then it starts now.
            if self.compiles.must_wait(&self.host, &record.sha256) {
                tracing::info!(component = %record.name, "waiting for its code to compile");
                return Ok(());
            }
            self.host.unmark_compiling(&record.name);
        }
        self.host.activate(record, binary).await
    }

    async fn answer_app_call(&self, body: &[u8]) -> Vec<u8> {
        let answer = match AppCall::decode(body) {
            Err(e) => AppAnswer::Sent(Err(ApiError::new(
                ErrorKind::BadRequest,
                format!("malformed call from a peer: {e}"),
            ))),
            Ok(AppCall::Describe { name }) => AppAnswer::Info(Box::new(
                self.host
                    .local_info(&name)
                    .await
                    .ok_or_else(|| crate::host::not_running_here(&name)),
            )),
            Ok(AppCall::List) => AppAnswer::List(self.host.local_infos().await),
            Ok(AppCall::Upgrade(call)) => self.answer_upgrade(*call).await,
            Ok(AppCall::Send {
                name,
                payload,
                delivery,
                trace,
            }) => {
                let span = tracing::info_span!("airssys.admin.forwarded", component = %name);
                crate::telemetry::adopt(&span, &trace);
                AppAnswer::Sent(
                    self.host
                        .send(&name, payload, delivery, None)
                        .instrument(span)
                        .await,
                )
            }
            Ok(AppCall::KeyedSend {
                name,
                payload,
                delivery,
                trace,
                key,
            }) => {
                if let Err(why) = key.check() {
                    return AppAnswer::Sent(Err(ApiError::new(ErrorKind::BadRequest, why)))
                        .encode();
                }
                let span = tracing::info_span!("airssys.admin.forwarded", component = %name);
                crate::telemetry::adopt(&span, &trace);
                AppAnswer::Sent(
                    self.host
                        .send(&name, payload, delivery, Some(key))
                        .instrument(span)
                        .await,
                )
            }
            Ok(AppCall::Request {
                name,
                payload,
                timeout_ms,
                delivery,
                trace,
            }) => {
                self.answer_request(name, payload, timeout_ms, delivery, trace, None)
                    .await
            }
            Ok(AppCall::KeyedRequest {
                name,
                payload,
                timeout_ms,
                delivery,
                trace,
                key,
            }) => {
                if let Err(why) = key.check() {
                    return AppAnswer::Reply(Err(ApiError::new(ErrorKind::BadRequest, why)))
                        .encode();
                }
                self.answer_request(name, payload, timeout_ms, delivery, trace, Some(key))
                    .await
            }
        };
        answer.encode()
    }

    /// A request forwarded by another node, run here under the caller's trace.
    async fn answer_request(
        &self,
        name: String,
        payload: Vec<u8>,
        timeout_ms: u64,
        delivery: crate::api::Delivery,
        trace: String,
        key: Option<crate::messaging::idempotency::RequestKey>,
    ) -> AppAnswer {
        let span = tracing::info_span!("airssys.admin.forwarded", component = %name);
        crate::telemetry::adopt(&span, &trace);
        let timeout = Duration::from_millis(timeout_ms);
        AppAnswer::Reply(
            self.host
                .request(&name, payload, timeout, delivery, key)
                .instrument(span)
                .await,
        )
    }

    /// Stops actors, this node's loops and the cluster transport: afterwards nothing of
    /// the node holds its storage.
    pub async fn shutdown(&self) {
        self.stopping.send_replace(true);
        // Actors first, while the log still takes the commits of what they ran.
        self.host.shutdown().await;
        self.cluster.shutdown().await;
    }
}
