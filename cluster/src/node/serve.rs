//! What this node answers its peers: the [`PeerService`] behind its QUIC endpoint (a
//! request that speaks for a node must come from that node's certificate), Raft's own calls
//! (appends, votes, snapshots received in chunks), the node layer's calls, and the leader's
//! side of forwarded requests. Forwarding itself is in `writes`.

use super::{ClusterNode, LEADER_WAIT};
use crate::peer::{PeerError, PeerRequest, PeerResponse};
use crate::peer_identity;
use crate::placement::NodeId;
use crate::raft::types::{Command, Outcome};
use crate::transport::{Caller, PeerService};
use openraft::Snapshot;
use std::io::Cursor;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio::sync::oneshot;

/// Largest snapshot a node accepts.
const MAX_SNAPSHOT_BYTES: usize = 4 << 30;

pub(super) struct Service {
    pub(super) node: ClusterNode,
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

impl ClusterNode {
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
            PeerRequest::Vote(_) if self.inner.withholds_votes.load(Ordering::SeqCst) => {
                tracing::info!("vote refused: not admitted since starting without Raft state");
                PeerResponse::Error(PeerError::NotVotingYet)
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

    pub(super) async fn serve_as_leader(&self, request: PeerRequest) -> PeerResponse {
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
}
