//! openraft's network over the node's QUIC transport: each Raft RPC is one call.

use super::types::{NodeInfo, TypeConfig};
use crate::peer::{PeerRequest, PeerResponse, SNAPSHOT_CHUNK_BYTES};
use crate::placement::NodeId;
use crate::transport::{Transport, TransportError};
use crate::wire::WireError;
use openraft::error::{
    Fatal, NetworkError, PayloadTooLarge, RPCError, RaftError, ReplicationClosed, StreamingError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, Snapshot, Vote};
use std::future::Future;

type RpcErr = RPCError<NodeId, NodeInfo, RaftError<NodeId>>;

/// Makes one [`PeerLink`] per target node.
pub struct Network {
    pub transport: Transport,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerLink;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerLink {
        PeerLink {
            transport: self.transport.clone(),
            target,
            addr: node.peer_addr.clone(),
        }
    }
}

pub struct PeerLink {
    transport: Transport,
    target: NodeId,
    addr: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Remote(String);

impl PeerLink {
    async fn call(&self, req: PeerRequest, option: &RPCOption) -> Result<PeerResponse, RpcErr> {
        match self
            .transport
            .call::<_, PeerResponse>(&self.addr, &req, option.hard_ttl())
            .await
        {
            Ok(PeerResponse::Error(e)) => Err(RPCError::Network(NetworkError::new(&e))),
            Ok(resp) => {
                self.transport.record_contact(self.target);
                Ok(resp)
            }
            Err(TransportError::Wire(WireError::TooLarge { .. })) => {
                let n = match &req {
                    PeerRequest::Append(a) => (a.entries.len() as u64 / 2).max(1),
                    _ => 1,
                };
                Err(RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint(n),
                ))
            }
            Err(e) => Err(RPCError::Unreachable(Unreachable::new(&e))),
        }
    }
}

fn unexpected(resp: PeerResponse) -> RpcErr {
    RPCError::Network(NetworkError::new(&Remote(format!(
        "unexpected answer to a Raft call: {}",
        resp.kind()
    ))))
}

impl RaftNetwork<TypeConfig> for PeerLink {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        match self.call(PeerRequest::Append(rpc), &option).await? {
            PeerResponse::Append(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        match self.call(PeerRequest::Vote(rpc), &option).await? {
            PeerResponse::Vote(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let data = snapshot.snapshot.into_inner();
        let id = snapshot.meta.snapshot_id.clone();
        let data = if data.len() > SNAPSHOT_CHUNK_BYTES {
            // Large snapshots go in pieces first; the final call then carries none.
            for (i, piece) in data.chunks(SNAPSHOT_CHUNK_BYTES).enumerate() {
                let req = PeerRequest::SnapshotChunk {
                    id: id.clone(),
                    offset: (i * SNAPSHOT_CHUNK_BYTES) as u64,
                    bytes: piece.to_vec(),
                };
                match self.call(req, &option).await {
                    Ok(PeerResponse::Done(_)) => {}
                    Ok(other) => {
                        return Err(StreamingError::Network(NetworkError::new(&Remote(
                            format!("unexpected answer to a snapshot chunk: {}", other.kind()),
                        ))))
                    }
                    Err(RPCError::Unreachable(u)) => return Err(StreamingError::Unreachable(u)),
                    Err(e) => {
                        return Err(StreamingError::Network(NetworkError::new(&Remote(
                            e.to_string(),
                        ))))
                    }
                }
            }
            Vec::new()
        } else {
            data
        };
        let req = PeerRequest::Snapshot {
            vote,
            meta: snapshot.meta.clone(),
            data,
        };
        match self.call(req, &option).await {
            Ok(PeerResponse::Snapshot(r)) => Ok(r),
            Ok(other) => Err(StreamingError::Network(NetworkError::new(&Remote(
                format!("unexpected answer to a snapshot: {}", other.kind()),
            )))),
            Err(RPCError::Unreachable(u)) => Err(StreamingError::Unreachable(u)),
            Err(e) => Err(StreamingError::Network(NetworkError::new(&Remote(
                e.to_string(),
            )))),
        }
    }
}
