//! One member of the cluster: the Raft instance over the node's storage, the QUIC
//! transport it speaks, and the operations the node asks of the cluster (bootstrap,
//! join, install with placement, move, remove, status). Writes go to the leader: a
//! follower forwards them over QUIC.
//!
//! Split by job, each file one `impl ClusterNode` block (or the types it owns):
//! - this file: [`ClusterNode`] and its shared state, [`ClusterConfig`], [`ClusterError`],
//!   [`ClusterNode::start`] and the small accessors;
//! - `membership`: bootstrap, join, admitting and evicting members, and the leader's duty of
//!   watching them (failover, rebalancing);
//! - `writes`: running a request on the leader (here, or forwarded over QUIC), install,
//!   propose, the read barrier, and the group commit of handler transactions;
//! - `serve`: what this node answers its peers (the
//!   [`PeerService`](crate::transport::PeerService) impl), the leader's side of forwarded
//!   requests, and snapshots received in chunks;
//! - `status`: what this node knows of the cluster and of itself (leader, figures,
//!   readiness, `cluster status`, loads for placement);
//! - `app`: the node layer's own traffic (lane frames and calls) and its [`AppInbox`].

mod app;
pub mod lease;
mod membership;
mod serve;
mod status;
mod writes;

pub use app::AppInbox;
pub use status::{ClusterStatus, ComponentPlacement, MemberStatus, RaftFigures, ALIVE_WITHIN};

use app::APP_FRAMES_WAITING;
use serve::Service;
use writes::run_commit_groups;

use crate::group_commit::Queued;
use crate::peer::PeerError;
use crate::placement::NodeId;
use crate::raft::log_store::LogStore;
use crate::raft::network::Network;
use crate::raft::state_machine::{KeyspaceRules, RegistryView, StateMachine};
use crate::raft::types::{NodeInfo, TypeConfig};
use crate::tls::{self, NodeCert};
use crate::transport::{Lanes, Transport, TransportError};
use airssys_storage::Storage;
use openraft::Raft;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// How long a write waits for a leader (elections take well under a second).
const LEADER_WAIT: Duration = Duration::from_secs(10);
/// Upper bound of one peer call.
const CALL_LIMIT: Duration = Duration::from_secs(30);

/// Everything a node needs to take part.
#[derive(Clone)]
pub struct ClusterConfig {
    pub node_id: NodeId,
    /// Where the QUIC endpoint listens.
    pub listen: SocketAddr,
    /// How other nodes reach this one.
    pub info: NodeInfo,
    pub ca_pem: String,
    pub cert: NodeCert,
    pub heartbeat_ms: u64,
    /// The shortest election timeout; a follower campaigns 2.5 to 3 times this long after
    /// its leader's last heartbeat (openraft's leader lease included).
    pub election_timeout_ms: u64,
    /// A member the leader has not heard from for this long loses its components.
    pub failure_timeout_ms: u64,
    /// A snapshot is built after this many applied entries; the log behind it is purged
    /// (a fifth of this many entries are kept for followers slightly behind).
    pub snapshot_every: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("storage: {0}")]
    Storage(String),
    #[error("tls: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("no leader is known yet; the cluster may be electing one or lack a quorum")]
    NoLeader,
    /// What a peer (or this node's own leader role) answered instead.
    #[error("{0}")]
    Peer(#[from] PeerError),
    #[error("cannot join through any of {0:?}: {1}")]
    Join(Vec<String>, String),
}

#[derive(Clone)]
pub struct ClusterNode {
    inner: Arc<Inner>,
}

struct Inner {
    id: NodeId,
    info: NodeInfo,
    raft: Raft<TypeConfig>,
    transport: Transport,
    lanes: Lanes,
    view: Arc<RegistryView>,
    storage: Storage,
    app_calls: mpsc::Sender<(Vec<u8>, oneshot::Sender<Vec<u8>>)>,
    app_frames: mpsc::Sender<Vec<u8>>,
    /// The snapshot being received in chunks: its id and the bytes so far.
    incoming_snapshot: Mutex<Option<(String, Vec<u8>)>>,
    failure_timeout: Duration,
    /// Transactions waiting to go to the leader in the next group.
    commits: mpsc::UnboundedSender<Queued>,
    /// The leader whose Raft calls (appends, heartbeats) this node received last, and when.
    last_leader_heard: Mutex<Option<(NodeId, Instant)>>,
    /// Set while a node that started without Raft state (new, or its data directory
    /// wiped) has not been admitted: it grants no vote. A wiped member may have voted in
    /// the current term before it lost its record; granting another vote in that term
    /// could elect two leaders. Admission (bootstrap, or a join the leader completes by
    /// taking the member out and adding it afresh) gives it the leader's term first.
    withholds_votes: AtomicBool,
    /// Set once this node has applied what the leader had committed when it asked
    /// ([`ClusterNode::catch_up`]) or had applied all of its log: from then on it stays
    /// ready while it lags by the entries in flight (see [`status::caught_up`]).
    caught_up_once: AtomicBool,
    /// Until when this node may answer reads of what it owns ([`lease`]).
    lease: Arc<lease::Lease>,
}

fn raft_err(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Raft(e.to_string())
}

impl ClusterError {
    /// The error as a peer hears it (every failure on the way is one the caller may
    /// retry or report; none is taken apart by its text).
    pub fn to_peer(&self) -> PeerError {
        match self {
            ClusterError::Peer(e) => e.clone(),
            ClusterError::NoLeader => PeerError::NoLeader,
            ClusterError::Transport(e) => PeerError::Unreachable(e.to_string()),
            other => PeerError::Raft(other.to_string()),
        }
    }
}

impl ClusterNode {
    /// Opens the Raft log and registry on `storage`, binds the QUIC endpoint and starts
    /// serving peers. The node neither bootstraps nor joins until told to.
    pub async fn start(
        config: ClusterConfig,
        storage: Storage,
        keyspace: KeyspaceRules,
    ) -> Result<(ClusterNode, AppInbox), ClusterError> {
        let log =
            LogStore::open(storage.clone()).map_err(|e| ClusterError::Storage(e.to_string()))?;
        let sm = StateMachine::open(storage.clone(), keyspace)
            .map_err(|e| ClusterError::Storage(e.to_string()))?;
        let view = sm.view();
        let transport = Transport::bind_with_reset_secret(
            config.listen,
            tls::server_config(&config.ca_pem, &config.cert)?,
            tls::client_config(&config.ca_pem, &config.cert)?,
            config.cert.key_pem().as_bytes(),
        )?;
        let raft_config = openraft::Config {
            cluster_name: "airssys".into(),
            heartbeat_interval: config.heartbeat_ms,
            // openraft 0.9 lets a follower that had a leader campaign only after a lease of
            // `election_timeout_max` plus its own random timeout in [min, max): a narrow
            // range keeps a leader's death to one election of about 2.5 × min.
            election_timeout_min: config.election_timeout_ms,
            election_timeout_max: config.election_timeout_ms * 3 / 2,
            max_payload_entries: 64,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_every.max(10)),
            max_in_snapshot_log_to_keep: config.snapshot_every.max(10) / 5,
            purge_batch_size: 64,
            ..Default::default()
        }
        .validate()
        .map_err(raft_err)?;
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            Network {
                transport: transport.clone(),
            },
            log,
            sm,
        )
        .await
        .map_err(raft_err)?;
        let stateless = !raft.is_initialized().await.unwrap_or(false);
        let (app_calls, calls) = mpsc::channel(1024);
        let (app_frames, frames) = mpsc::channel(APP_FRAMES_WAITING);
        let (commits, queued) = mpsc::unbounded_channel();
        let node = ClusterNode {
            inner: Arc::new(Inner {
                id: config.node_id,
                info: config.info,
                raft,
                lanes: Lanes::new(transport.clone()),
                transport,
                view,
                storage,
                app_calls,
                app_frames,
                incoming_snapshot: Mutex::new(None),
                failure_timeout: Duration::from_millis(config.failure_timeout_ms.max(1)),
                commits,
                last_leader_heard: Mutex::new(None),
                withholds_votes: AtomicBool::new(stateless),
                caught_up_once: AtomicBool::new(false),
                lease: Arc::default(),
            }),
        };
        tokio::spawn(run_commit_groups(Arc::downgrade(&node.inner), queued));
        node.inner
            .transport
            .serve(Arc::new(Service { node: node.clone() }));
        // A node that starts (or restarts) does not campaign before it has heard whether a
        // leader exists: a member coming back would otherwise time out before the leader's
        // first heartbeat reaches it, start an election with a higher term and depose a
        // healthy leader (openraft 0.9 has no pre-vote).
        let me = config.node_id;
        let others = node
            .inner
            .view
            .membership()
            .membership()
            .voter_ids()
            .any(|v| v != me);
        if others {
            node.inner.raft.runtime_config().elect(false);
            tokio::spawn(node.clone().allow_elections(Duration::from_millis(
                config.election_timeout_ms.max(100) * 6,
            )));
        }
        tokio::spawn(node.clone().watch_members());
        tokio::spawn(node.clone().keep_lease());
        Ok((node, AppInbox { calls, frames }))
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    pub fn info(&self) -> &NodeInfo {
        &self.inner.info
    }

    pub fn local_peer_addr(&self) -> Option<SocketAddr> {
        self.inner.transport.local_addr()
    }

    pub fn view(&self) -> &Arc<RegistryView> {
        &self.inner.view
    }

    /// True once this node has Raft state (it bootstrapped or joined before).
    pub async fn is_initialized(&self) -> bool {
        self.inner.raft.is_initialized().await.unwrap_or(false)
    }

    /// A component binary from the replicated registry.
    pub fn binary(&self, sha256: &str) -> Option<Vec<u8>> {
        StateMachine::binary(&self.inner.storage, sha256)
    }

    /// Whether Raft was shut down (or stopped on a fatal error) here.
    pub fn is_stopped(&self) -> bool {
        self.inner.raft.metrics().borrow().running_state.is_err()
    }

    /// Resolves once Raft has stopped here: shut down, or stopped on a fatal error (a
    /// disk that refused a write of the log, say), whose text it returns. Raft does not
    /// start again by itself; the node must be restarted.
    pub async fn raft_stopped(&self) -> String {
        let mut metrics = self.inner.raft.metrics();
        loop {
            if let Err(e) = &metrics.borrow_and_update().running_state {
                return e.to_string();
            }
            if metrics.changed().await.is_err() {
                return "Raft's metrics channel closed".to_string();
            }
        }
    }

    /// Stops Raft and closes the endpoint.
    pub async fn shutdown(&self) {
        let _ = self.inner.raft.shutdown().await;
        self.inner
            .transport
            .close_and_wait(Duration::from_secs(2))
            .await;
    }
}
