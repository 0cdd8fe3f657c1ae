//! The node layer's own traffic between nodes, opaque bytes here: frames sent on ordered
//! lanes, calls answered by the other node's layer, and the [`AppInbox`] where this node's
//! layer receives both. Serving an incoming call is in `serve`.

use super::{ClusterError, ClusterNode};
use crate::peer::{PeerError, PeerRequest, PeerResponse};
use crate::placement::NodeId;
use crate::raft::types::NodeInfo;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Lane frames a node takes from peers before its node layer handles them.
pub(super) const APP_FRAMES_WAITING: usize = 4096;

/// What the node layer receives from peers.
pub struct AppInbox {
    /// Calls: the request body and where the answer goes.
    pub calls: mpsc::Receiver<(Vec<u8>, oneshot::Sender<Vec<u8>>)>,
    /// Lane frames, in arrival order per lane. Bounded: while the node layer is behind,
    /// lanes stop reading and their peers are held back by QUIC's flow control.
    pub frames: mpsc::Receiver<Vec<u8>>,
}

impl ClusterNode {
    /// A member's addresses, as the applied membership has them.
    fn member(&self, node: NodeId) -> Result<NodeInfo, ClusterError> {
        Ok(self
            .inner
            .view
            .membership()
            .membership()
            .get_node(&node)
            .cloned()
            .ok_or(PeerError::NotMember(node))?)
    }

    /// Sends a frame to another node's lane (in order per destination).
    pub fn send_frame(&self, node: NodeId, frame: Vec<u8>) -> Result<(), ClusterError> {
        let info = self.member(node)?;
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
        let info = self.member(node)?;
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
}
