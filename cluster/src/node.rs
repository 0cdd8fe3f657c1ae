//! One member of the cluster: the Raft instance over the node's storage, the QUIC
//! transport it speaks, and the operations the node asks of the cluster (bootstrap,
//! join, install with placement, move, remove, status). Writes go to the leader: a
//! follower forwards them over QUIC.

use crate::failure::{down_members, Heard};
use crate::group_commit::{self, Queued};
use crate::peer::{PeerError, PeerRequest, PeerResponse};
use crate::peer_identity;
use crate::placement::{choose_node, failover_moves, rebalance_moves, NodeId, NodeLoad, Placement};
use crate::raft::log_store::LogStore;
use crate::raft::network::Network;
use crate::raft::state_machine::{KeyspaceRules, RegistryView, StateMachine};
use crate::raft::types::{Command, ComponentSpec, NodeInfo, Outcome, TypeConfig};
use crate::tls::{self, NodeCert};
use crate::transport::{Caller, Lanes, PeerService, Transport, TransportError};
use airssys_storage::{CommitBatch, Storage};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, Raft, ServerState, Snapshot};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// A node not heard from for this long counts as down for placement and status.
pub const ALIVE_WITHIN: Duration = Duration::from_secs(3);
/// How long a write waits for a leader (elections take well under a second).
const LEADER_WAIT: Duration = Duration::from_secs(10);
/// Upper bound of one peer call.
const CALL_LIMIT: Duration = Duration::from_secs(30);
/// How long a committing node waits to apply its own commit after the leader applied it.
const APPLY_WAIT: Duration = Duration::from_secs(10);
/// Largest snapshot a node accepts.
const MAX_SNAPSHOT_BYTES: usize = 4 << 30;
/// How often the leader looks for failed members and imbalance.
const DETECT_EVERY: Duration = Duration::from_millis(100);
/// How often the leader considers one rebalancing move.
const REBALANCE_EVERY: Duration = Duration::from_secs(2);

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

/// A member as `cluster status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: NodeId,
    pub peer_addr: String,
    pub admin_addr: String,
    pub voter: bool,
    /// As seen by the leader; `None` when the answering node knows no leader.
    pub alive: Option<bool>,
}

/// Where a component runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentPlacement {
    pub name: String,
    pub owner: NodeId,
    pub generation: u64,
}

/// The cluster as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The node that built this view (the leader when one is known).
    pub reported_by: NodeId,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub commit_index: u64,
    pub nodes: Vec<MemberStatus>,
    pub components: Vec<ComponentPlacement>,
}

/// Lane frames a node takes from peers before its node layer handles them.
const APP_FRAMES_WAITING: usize = 4096;

/// What the node layer receives from peers.
pub struct AppInbox {
    /// Calls: the request body and where the answer goes.
    pub calls: mpsc::Receiver<(Vec<u8>, oneshot::Sender<Vec<u8>>)>,
    /// Lane frames, in arrival order per lane. Bounded: while the node layer is behind,
    /// lanes stop reading and their peers are held back by QUIC's flow control.
    pub frames: mpsc::Receiver<Vec<u8>>,
}

/// Figures for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct RaftFigures {
    pub term: u64,
    pub leader: Option<NodeId>,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub is_leader: bool,
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
}

struct Service {
    node: ClusterNode,
}

impl PeerService for Service {
    type Request = PeerRequest;
    type Response = PeerResponse;

    async fn call(&self, caller: Caller, request: PeerRequest) -> PeerResponse {
        // A request that speaks for a node (a vote, an append, a commit's fence, a join)
        // must come from that node's certificate.
        // Asked only for a join: every other call (Raft appends included) reads nothing.
        let is_member = |n: NodeId| {
            self.node
                .inner
                .view
                .membership()
                .membership()
                .get_node(&n)
                .is_some()
        };
        if let Err(e) = peer_identity::check_claim(caller.node_id, &request, is_member) {
            tracing::warn!(peer = %caller.addr, "refused a peer's request: {e}");
            return PeerResponse::Error(e);
        }
        self.node.serve(request).await
    }

    async fn lane_frame(&self, _caller: Caller, frame: Vec<u8>) {
        let _ = self.node.inner.app_frames.send(frame).await;
    }
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

    /// Starts a new cluster with this node as its only voter, unless the node has
    /// state already (then nothing happens).
    pub async fn bootstrap(&self) -> Result<bool, ClusterError> {
        if self.is_initialized().await {
            return Ok(false);
        }
        // A new cluster of one elects itself at once.
        self.inner.raft.runtime_config().elect(true);
        let members = BTreeMap::from([(self.inner.id, self.inner.info.clone())]);
        self.inner
            .raft
            .initialize(members)
            .await
            .map_err(raft_err)?;
        tracing::info!(node = self.inner.id, "bootstrapped a new cluster");
        Ok(true)
    }

    /// Asks the cluster behind any of `seeds` (peer addresses) to take this node in:
    /// as a learner first, then as a voter. Retries until `limit`. Does nothing for a
    /// node that has state already.
    pub async fn join(&self, seeds: &[String], limit: Duration) -> Result<(), ClusterError> {
        if self.is_initialized().await {
            return Ok(());
        }
        let req = PeerRequest::Join {
            node_id: self.inner.id,
            info: self.inner.info.clone(),
        };
        let started = tokio::time::Instant::now();
        let mut last_error = String::from("no seed given");
        loop {
            if self.is_voter() {
                // An earlier attempt got through after all (its answer was lost).
                return Ok(());
            }
            for seed in seeds {
                match self
                    .inner
                    .transport
                    .call::<_, PeerResponse>(seed, &req, CALL_LIMIT)
                    .await
                {
                    Ok(PeerResponse::Done(_)) => {
                        tracing::info!(node = self.inner.id, via = %seed, "joined the cluster");
                        return Ok(());
                    }
                    Ok(PeerResponse::Error(e)) => last_error = e.to_string(),
                    Ok(other) => last_error = format!("unexpected answer {}", other.kind()),
                    Err(e) => last_error = e.to_string(),
                }
            }
            if started.elapsed() > limit {
                return Err(ClusterError::Join(seeds.to_vec(), last_error));
            }
            tracing::info!("join not done yet ({last_error}); retrying");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// True when any of `seeds` answers that it belongs to a cluster already.
    pub async fn any_member_among(&self, seeds: &[String]) -> bool {
        for seed in seeds {
            if let Ok(PeerResponse::Probe { initialized: true }) = self
                .inner
                .transport
                .call::<_, PeerResponse>(seed, &PeerRequest::Probe, Duration::from_secs(2))
                .await
            {
                return true;
            }
        }
        false
    }

    /// The leader's id and address, as this node knows them.
    pub fn leader(&self) -> Option<(NodeId, NodeInfo)> {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        let info = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, info))
    }

    /// Whether this node is a voter in the membership it knows.
    pub fn is_voter(&self) -> bool {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let voter = m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == self.inner.id);
        voter
    }

    pub fn is_leader(&self) -> bool {
        self.leader().is_some_and(|(id, _)| id == self.inner.id)
    }

    pub fn figures(&self) -> RaftFigures {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        RaftFigures {
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            is_leader: m.state == ServerState::Leader,
        }
    }

    /// Joined, a leader known, and everything received applied.
    pub fn is_ready(&self) -> bool {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let member = m
            .membership_config
            .membership()
            .get_node(&self.inner.id)
            .is_some();
        let caught_up = m.last_applied.map(|l| l.index) == m.last_log_index;
        // A Raft that stopped (an apply or a log write failed: a full or failing disk)
        // keeps its last figures; this node serves nothing until it restarts.
        let running = m.running_state.is_ok();
        running && member && m.current_leader.is_some() && caught_up
    }

    /// Runs `req` on the leader: here when this node leads, else over QUIC. Waits for
    /// a leader up to [`LEADER_WAIT`].
    async fn on_leader(&self, req: PeerRequest) -> Result<PeerResponse, ClusterError> {
        let started = tokio::time::Instant::now();
        let mut req = Some(req);
        loop {
            match self.leader() {
                Some((id, _)) if id == self.inner.id => {
                    let r = req.take().ok_or(ClusterError::NoLeader)?;
                    return Ok(self.serve_as_leader(r).await);
                }
                Some((_, info)) => {
                    let r = req.as_ref().ok_or(ClusterError::NoLeader)?;
                    match self
                        .inner
                        .transport
                        .call::<_, PeerResponse>(&info.peer_addr, r, CALL_LIMIT)
                        .await
                    {
                        Ok(PeerResponse::Error(e)) if e.leader_changed() => {}
                        Ok(resp) => return Ok(resp),
                        Err(e) if started.elapsed() > LEADER_WAIT => return Err(e.into()),
                        Err(_) => {}
                    }
                }
                None if started.elapsed() > LEADER_WAIT => return Err(ClusterError::NoLeader),
                None => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn done(resp: PeerResponse) -> Result<Outcome, ClusterError> {
        match resp {
            PeerResponse::Done(o) => Ok(o),
            PeerResponse::Error(e) => Err(e.into()),
            other => Err(PeerError::Unexpected(other.kind().into()).into()),
        }
    }

    /// Registers a component; the leader picks its node.
    pub async fn install(
        &self,
        spec: ComponentSpec,
        binary: Vec<u8>,
    ) -> Result<Outcome, ClusterError> {
        Self::done(
            self.on_leader(PeerRequest::Install { spec, binary })
                .await?,
        )
    }

    pub async fn propose(&self, command: Command) -> Result<Outcome, ClusterError> {
        Self::done(self.on_leader(PeerRequest::Propose(command)).await?)
    }

    /// Waits until this node has applied everything committed when a leader confirmed by a
    /// quorum was asked (and, before that, until there is such a leader). Retries until it
    /// succeeds. A leader's word alone is not enough: a former leader that restarts takes
    /// itself for the leader of its old term, and a node that believed it would run what
    /// that old term gave it (a second, stale activation).
    pub async fn catch_up(&self) {
        loop {
            if let Ok(PeerResponse::ReadIndex(index)) = self.on_leader(PeerRequest::ReadIndex).await
            {
                let reached = self
                    .inner
                    .raft
                    .wait(Some(LEADER_WAIT))
                    .applied_index_at_least(Some(index), "caught up with the leader")
                    .await;
                if reached.is_ok() {
                    return;
                }
            }
            if self.inner.raft.metrics().borrow().running_state.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Commits a handler's transaction through the log, in a group with whatever else this
    /// node has waiting ([`group_commit`]). Returns the outcome once this node has applied it
    /// too (so the next handler here reads its writes). An error means the outcome is
    /// unknown: a numbered commit may be retried as it is.
    pub async fn commit(&self, batch: CommitBatch) -> Result<Outcome, ClusterError> {
        if self.is_stopped() {
            return Err(PeerError::Stopping.into());
        }
        let (answer, outcome) = oneshot::channel();
        self.inner
            .commits
            .send(Queued { batch, answer })
            .map_err(|_| PeerError::Stopping)?;
        outcome
            .await
            .map_err(|_| PeerError::Stopping)?
            .map_err(ClusterError::Peer)
    }

    /// Sends one group to the leader as one entry and answers each transaction in it.
    async fn commit_group(&self, group: Vec<Queued>) {
        let (batches, answers): (Vec<CommitBatch>, Vec<_>) =
            group.into_iter().map(|q| (q.batch, q.answer)).unzip();
        match self.append_group(batches).await {
            Ok(outcomes) => {
                for (answer, outcome) in answers.into_iter().zip(outcomes) {
                    let _ = answer.send(Ok(outcome));
                }
            }
            Err(e) => {
                let e = e.to_peer();
                for answer in answers {
                    let _ = answer.send(Err(e.clone()));
                }
            }
        }
    }

    /// The outcome of each transaction, once this node has applied the entry.
    async fn append_group(&self, batches: Vec<CommitBatch>) -> Result<Vec<Outcome>, ClusterError> {
        let n = batches.len();
        let (index, outcomes) = match self.on_leader(PeerRequest::Commits(batches)).await? {
            PeerResponse::Committed {
                index,
                outcome: Outcome::Many(outcomes),
            } if outcomes.len() == n => (index, outcomes),
            PeerResponse::Error(e) => return Err(e.into()),
            other => {
                return Err(PeerError::Unexpected(format!(
                    "{} to a group of {n} commits",
                    other.kind()
                ))
                .into())
            }
        };
        if outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Committed { .. }))
        {
            self.inner
                .raft
                .wait(Some(APPLY_WAIT))
                .applied_index_at_least(Some(index), "own commit applied")
                .await
                .map_err(|e| ClusterError::Raft(format!("commit not applied here: {e}")))?;
        }
        Ok(outcomes)
    }

    /// Moves the node's components away, then takes it out of the membership.
    pub async fn remove_node(&self, node: NodeId) -> Result<Outcome, ClusterError> {
        Self::done(self.on_leader(PeerRequest::RemoveNode(node)).await?)
    }

    /// The cluster as the leader sees it (or this node, when no leader is known).
    pub async fn status(&self) -> ClusterStatus {
        match self.on_leader(PeerRequest::Status).await {
            Ok(PeerResponse::Status(s)) => s,
            _ => self.local_status(false),
        }
    }

    fn local_status(&self, as_leader: bool) -> ClusterStatus {
        let m = self.inner.raft.metrics();
        let m = m.borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let nodes = membership
            .nodes()
            .map(|(id, info)| MemberStatus {
                id: *id,
                peer_addr: info.peer_addr.clone(),
                admin_addr: info.admin_addr.clone(),
                voter: voters.contains(id),
                alive: as_leader.then(|| self.alive(*id)),
            })
            .collect();
        let components = self
            .inner
            .view
            .registry()
            .components
            .values()
            .map(|c| ComponentPlacement {
                name: c.spec.name.clone(),
                owner: c.owner,
                generation: c.generation,
            })
            .collect();
        ClusterStatus {
            reported_by: self.inner.id,
            leader: m.current_leader,
            term: m.current_term,
            commit_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            nodes,
            components,
        }
    }

    fn alive(&self, node: NodeId) -> bool {
        node == self.inner.id
            || self
                .inner
                .transport
                .since_contact(node)
                .is_some_and(|d| d < ALIVE_WITHIN)
    }

    /// Sends a frame to another node's lane (in order per destination).
    pub fn send_frame(&self, node: NodeId, frame: Vec<u8>) -> Result<(), ClusterError> {
        let info = self
            .inner
            .view
            .membership()
            .membership()
            .get_node(&node)
            .cloned()
            .ok_or(PeerError::NotMember(node))?;
        self.inner.lanes.send(&info.peer_addr, frame);
        Ok(())
    }

    /// Calls the node layer of another node.
    pub async fn app_call(
        &self,
        node: NodeId,
        body: Vec<u8>,
        limit: Duration,
    ) -> Result<Vec<u8>, ClusterError> {
        let info = self
            .inner
            .view
            .membership()
            .membership()
            .get_node(&node)
            .cloned()
            .ok_or(PeerError::NotMember(node))?;
        match self
            .inner
            .transport
            .call::<_, PeerResponse>(&info.peer_addr, &PeerRequest::App(body), limit)
            .await?
        {
            PeerResponse::App(b) => Ok(b),
            PeerResponse::Error(e) => Err(e.into()),
            other => Err(PeerError::Unexpected(other.kind().into()).into()),
        }
    }

    /// A component binary from the replicated registry.
    pub fn binary(&self, sha256: &str) -> Option<Vec<u8>> {
        StateMachine::binary(&self.inner.storage, sha256)
    }

    /// Whether Raft was shut down (or stopped on a fatal error) here.
    pub fn is_stopped(&self) -> bool {
        self.inner.raft.metrics().borrow().running_state.is_err()
    }

    /// Stops Raft and closes the endpoint.
    pub async fn shutdown(&self) {
        let _ = self.inner.raft.shutdown().await;
        self.inner
            .transport
            .close_and_wait(Duration::from_secs(2))
            .await;
    }

    async fn serve(&self, request: PeerRequest) -> PeerResponse {
        let raft = &self.inner.raft;
        match request {
            PeerRequest::Append(rpc) => {
                if let Some(leader) = rpc.vote.leader_id().voted_for() {
                    if let Ok(mut heard) = self.inner.last_leader_heard.lock() {
                        *heard = Some((leader, Instant::now()));
                    }
                }
                match raft.append_entries(rpc).await {
                    Ok(r) => PeerResponse::Append(r),
                    Err(e) => PeerResponse::Error(PeerError::Raft(e.to_string())),
                }
            }
            PeerRequest::Vote(rpc) => match raft.vote(rpc).await {
                Ok(r) => PeerResponse::Vote(r),
                Err(e) => PeerResponse::Error(PeerError::Raft(e.to_string())),
            },
            PeerRequest::SnapshotChunk { id, offset, bytes } => {
                match self.take_snapshot_chunk(id, offset, bytes) {
                    Ok(()) => PeerResponse::Done(Outcome::Nothing),
                    Err(e) => PeerResponse::Error(PeerError::Snapshot(e)),
                }
            }
            PeerRequest::Snapshot { vote, meta, data } => {
                let data = if data.is_empty() {
                    match self
                        .inner
                        .incoming_snapshot
                        .lock()
                        .ok()
                        .and_then(|mut s| s.take())
                    {
                        Some((id, bytes)) if id == meta.snapshot_id => bytes,
                        _ => {
                            return PeerResponse::Error(PeerError::Snapshot(format!(
                                "snapshot {} was not received in full",
                                meta.snapshot_id
                            )))
                        }
                    }
                } else {
                    data
                };
                let snapshot = Snapshot {
                    meta,
                    snapshot: Box::new(Cursor::new(data)),
                };
                match raft.install_full_snapshot(vote, snapshot).await {
                    Ok(r) => PeerResponse::Snapshot(r),
                    Err(e) => PeerResponse::Error(PeerError::Raft(e.to_string())),
                }
            }
            PeerRequest::Probe => PeerResponse::Probe {
                initialized: self.is_initialized().await,
            },
            PeerRequest::App(body) => {
                let (tx, rx) = oneshot::channel();
                if self.inner.app_calls.send((body, tx)).await.is_err() {
                    return PeerResponse::Error(PeerError::Stopping);
                }
                match rx.await {
                    Ok(b) => PeerResponse::App(b),
                    Err(_) => PeerResponse::Error(PeerError::Stopping),
                }
            }
            // Commits are checked against the node that sends them, so they are never
            // relayed: a node that does not lead sends the caller to the leader.
            PeerRequest::Commits(_) if !self.is_leader() => PeerResponse::Error(self.not_leader()),
            // Writes and status: only the leader serves them; others forward.
            other => match self.on_leader(other).await {
                Ok(r) => r,
                Err(e) => PeerResponse::Error(e.to_peer()),
            },
        }
    }

    async fn serve_as_leader(&self, request: PeerRequest) -> PeerResponse {
        let result = match request {
            PeerRequest::Join { node_id, info } => self.admit(node_id, info).await,
            PeerRequest::Install { spec, binary } => self.place_and_install(spec, binary).await,
            PeerRequest::Propose(command) => self.write(command).await,
            PeerRequest::Commits(batches) => {
                return self.append_commits(Command::Commits(batches)).await
            }
            PeerRequest::RemoveNode(node) => self.evict(node).await,
            PeerRequest::Status => return PeerResponse::Status(self.local_status(true)),
            PeerRequest::ReadIndex => return self.confirmed_read_index().await,
            other => Err(PeerError::WrongRequest(other.kind().into()).into()),
        };
        match result {
            Ok(o) => PeerResponse::Done(o),
            Err(e) => PeerResponse::Error(e.to_peer()),
        }
    }

    /// What a node that was asked to lead answers: it does not, and whom it knows leads.
    fn not_leader(&self) -> PeerError {
        PeerError::NotLeader {
            leader: self
                .leader()
                .map(|(id, _)| id)
                .filter(|l| *l != self.inner.id),
        }
    }

    /// Leader: confirms with a quorum that it still leads, then answers its commit index.
    async fn confirmed_read_index(&self) -> PeerResponse {
        match tokio::time::timeout(LEADER_WAIT, self.inner.raft.get_read_log_id()).await {
            Ok(Ok((read, _))) => PeerResponse::ReadIndex(read.map(|l| l.index).unwrap_or(0)),
            Ok(Err(e)) => {
                tracing::debug!("read index refused: {e}");
                PeerResponse::Error(self.not_leader())
            }
            // No quorum confirmed this leader in time.
            Err(_) => PeerResponse::Error(self.not_leader()),
        }
    }

    /// Leader: appends handler transactions and answers with the entry's index.
    async fn append_commits(&self, command: Command) -> PeerResponse {
        match self.inner.raft.client_write(command).await {
            Ok(resp) => PeerResponse::Committed {
                index: resp.log_id.index,
                outcome: resp.data,
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                PeerResponse::Error(PeerError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(e) => PeerResponse::Error(PeerError::Raft(e.to_string())),
        }
    }

    async fn write(&self, command: Command) -> Result<Outcome, ClusterError> {
        // The state machine refuses the same commands; checked here first, a bad one costs
        // no log entry.
        if let Err(refusal) = crate::raft::command_check::check_command(&command) {
            return Ok(Outcome::Refused(refusal));
        }
        match self.inner.raft.client_write(command).await {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(PeerError::NotLeader {
                    leader: f.leader_id,
                }
                .into())
            }
            Err(e) => Err(raft_err(e)),
        }
    }

    /// Leader: adds `node` as a learner (waits until it has caught up), then makes it
    /// a voter.
    async fn admit(&self, node: NodeId, info: NodeInfo) -> Result<Outcome, ClusterError> {
        let membership = self.inner.view.membership();
        if membership.membership().voter_ids().any(|v| v == node) {
            // Only a node without Raft state asks to join: a member that asks has lost its
            // data (a wiped volume). Raft assumes a member keeps its log and vote, so it is
            // taken out (its components move first) and admitted afresh: as a learner it
            // gets a snapshot before it can vote again.
            tracing::warn!(
                node,
                "a member asks to join with no state; re-admitting it from scratch"
            );
            self.evict(node).await?;
        }
        tracing::info!(node, %info, "admitting a node as learner");
        self.inner
            .raft
            .add_learner(node, info, true)
            .await
            .map_err(raft_err)?;
        self.inner
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node])), false)
            .await
            .map_err(raft_err)?;
        tracing::info!(node, "promoted to voter");
        Ok(Outcome::Nothing)
    }

    /// The leader's view for placement: every member, alive or not, and its load.
    pub fn loads(&self) -> Vec<NodeLoad> {
        let counts = self.inner.view.registry().owned_counts();
        self.inner
            .view
            .membership()
            .membership()
            .nodes()
            .map(|(id, _)| NodeLoad {
                node: *id,
                alive: self.alive(*id),
                actors: counts.get(id).copied().unwrap_or(0),
            })
            .collect()
    }

    async fn place_and_install(
        &self,
        spec: ComponentSpec,
        binary: Vec<u8>,
    ) -> Result<Outcome, ClusterError> {
        let owner = choose_node(&self.loads()).unwrap_or(self.inner.id);
        // Known binaries travel once: the registry holds one exactly while it is in use.
        let binary = if self.inner.view.registry().uses_binary(&spec.sha256) {
            Vec::new()
        } else {
            binary
        };
        self.write(Command::Install {
            spec,
            owner,
            binary,
        })
        .await
    }

    async fn evict(&self, node: NodeId) -> Result<Outcome, ClusterError> {
        let membership = self.inner.view.membership();
        if membership.membership().get_node(&node).is_none() {
            return Err(PeerError::NotMember(node).into());
        }
        let voters: BTreeSet<NodeId> = membership.membership().voter_ids().collect();
        if voters.len() == 1 && voters.contains(&node) {
            return Err(PeerError::LastVoter.into());
        }
        // Its components go to the least-loaded other live nodes first.
        let owned: Vec<String> = self
            .inner
            .view
            .registry()
            .components
            .values()
            .filter(|c| c.owner == node)
            .map(|c| c.spec.name.clone())
            .collect();
        for name in owned {
            let loads: Vec<NodeLoad> = self
                .loads()
                .into_iter()
                .filter(|l| l.node != node)
                .collect();
            if let Some(to) = choose_node(&loads) {
                self.write(Command::Move { name, to }).await?;
            }
        }
        if voters.contains(&node) {
            self.inner
                .raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([node])), false)
                .await
                .map_err(raft_err)?;
        }
        self.inner
            .raft
            .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([node])), false)
            .await
            .map_err(raft_err)?;
        tracing::info!(node, "removed from the cluster");
        Ok(Outcome::Removed)
    }

    /// Lets this node campaign once a leader has answered it and it has caught up, or after
    /// `quiet` without that (the whole cluster is starting). The leader remembered in the
    /// persisted vote proves nothing: it may be the node that died.
    async fn allow_elections(self, quiet: Duration) {
        let _ = tokio::time::timeout(quiet, self.catch_up()).await;
        self.inner.raft.runtime_config().elect(true);
    }

    fn take_snapshot_chunk(&self, id: String, offset: u64, bytes: Vec<u8>) -> Result<(), String> {
        let mut slot = self
            .inner
            .incoming_snapshot
            .lock()
            .map_err(|_| "snapshot buffer poisoned".to_string())?;
        if offset == 0 {
            *slot = Some((id.clone(), Vec::new()));
        }
        match slot.as_mut() {
            Some((have, buf)) if *have == id && buf.len() as u64 == offset => {
                if buf.len() + bytes.len() > MAX_SNAPSHOT_BYTES {
                    *slot = None;
                    return Err(format!(
                        "snapshot {id} is larger than {MAX_SNAPSHOT_BYTES} bytes"
                    ));
                }
                buf.extend_from_slice(&bytes);
                Ok(())
            }
            _ => Err(format!(
                "snapshot chunk at {offset} of {id} does not follow what was received; restart it"
            )),
        }
    }

    /// Leader duty, run on every node (it acts only while this node leads): members silent
    /// past the failure timeout lose their components to live ones (generation + 1). When a
    /// node joins or comes back, and nobody is down, one component at a time moves from the
    /// busiest node to the idlest until their loads differ by at most one (the newcomer gets
    /// its share); an operator's own moves are not undone otherwise.
    async fn watch_members(self) {
        let mut led_since: Option<(u64, Instant)> = None;
        let mut last_rebalance = Instant::now();
        let mut live_before: BTreeSet<NodeId> = BTreeSet::new();
        let mut rebalancing = false;
        let mut ticker = tokio::time::interval(DETECT_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let figures = self.figures();
            if !figures.is_leader {
                led_since = None;
                if self.inner.raft.metrics().borrow().running_state.is_err() {
                    return;
                }
                continue;
            }
            let since = match led_since {
                Some((term, at)) if term == figures.term => at,
                _ => {
                    let now = Instant::now();
                    led_since = Some((figures.term, now));
                    tracing::info!(node = self.inner.id, term = figures.term, "leading");
                    now
                }
            };
            let membership = self.inner.view.membership();
            let heard: Vec<Heard> = membership
                .membership()
                .nodes()
                .map(|(id, _)| Heard {
                    node: *id,
                    ago: self.inner.transport.since_contact(*id),
                })
                .collect();
            let previous_leader = self
                .inner
                .last_leader_heard
                .lock()
                .ok()
                .and_then(|h| *h)
                .map(|(node, at)| Heard {
                    node,
                    ago: Some(at.elapsed()),
                });
            let down = down_members(
                self.inner.id,
                &heard,
                since.elapsed(),
                self.inner.failure_timeout,
                previous_leader,
            );
            let registry = self.inner.view.registry();
            let current: BTreeMap<String, Placement> = registry
                .components
                .values()
                .map(|c| {
                    (
                        c.spec.name.clone(),
                        Placement {
                            node: c.owner,
                            generation: c.generation,
                        },
                    )
                })
                .collect();
            let counts = registry.owned_counts();
            let loads: Vec<NodeLoad> = heard
                .iter()
                .map(|h| NodeLoad {
                    node: h.node,
                    alive: !down.contains(&h.node),
                    actors: counts.get(&h.node).copied().unwrap_or(0),
                })
                .collect();
            let live: BTreeSet<NodeId> = loads.iter().filter(|l| l.alive).map(|l| l.node).collect();
            if !live.is_subset(&live_before) {
                rebalancing = true;
            }
            live_before = live;
            let moves = if !down.is_empty() {
                failover_moves(&current, &loads)
            } else if rebalancing && last_rebalance.elapsed() >= REBALANCE_EVERY {
                last_rebalance = Instant::now();
                let moves = rebalance_moves(&current, &loads, 1);
                rebalancing = !moves.is_empty();
                moves
            } else {
                Vec::new()
            };
            for (name, to) in moves {
                let reason = if down.is_empty() {
                    "rebalance"
                } else {
                    "failover"
                };
                tracing::info!(component = %name, to = to.node, generation = to.generation, reason, "moving");
                if let Err(e) = self.write(Command::Move { name, to: to.node }).await {
                    tracing::warn!("move not made: {e}");
                    break;
                }
            }
        }
    }
}

/// Runs a node's commit queue: gathers what waits into groups and keeps up to
/// [`group_commit::GROUPS_IN_FLIGHT`] of them on their way to the leader. Holds the node
/// weakly, so it ends with the node.
async fn run_commit_groups(node: Weak<Inner>, mut queued: mpsc::UnboundedReceiver<Queued>) {
    let slots = Arc::new(Semaphore::new(group_commit::GROUPS_IN_FLIGHT));
    let mut waiting: VecDeque<Queued> = VecDeque::new();
    loop {
        if waiting.is_empty() {
            match queued.recv().await {
                Some(q) => waiting.push_back(q),
                None => return,
            }
        }
        // Whatever arrives while every slot is busy joins the next group.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        while let Ok(q) = queued.try_recv() {
            waiting.push_back(q);
        }
        let sizes: Vec<usize> = waiting.iter().map(|q| q.batch.approx_bytes()).collect();
        let n = group_commit::group_len(&sizes, group_commit::LIMITS);
        let group: Vec<Queued> = waiting.drain(..n).collect();
        let Some(inner) = node.upgrade() else {
            return;
        };
        let node = ClusterNode { inner };
        tokio::spawn(async move {
            node.commit_group(group).await;
            drop(slot);
        });
    }
}
