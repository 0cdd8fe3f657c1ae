//! Envelopes between nodes: the router's view of the cluster ([`ClusterRoute`]), the
//! handling of lane frames from peers, and the resend of durable messages not yet
//! acknowledged by their receiver's node.

use super::proto::LaneMsg;
use crate::messaging::{keys, Envelope, RemoteRoute, Router};
use airssys_cluster::ClusterNode;
use airssys_storage::{CommitBatch, Storage};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// How often unacknowledged durable messages to other nodes are sent again.
pub const RESEND_EVERY: Duration = Duration::from_secs(2);

pub struct ClusterRoute {
    pub cluster: ClusterNode,
}

impl RemoteRoute for ClusterRoute {
    fn local_node(&self) -> u64 {
        self.cluster.id()
    }

    fn owner(&self, name: &str) -> Option<u64> {
        self.cluster.view().owner_of(name).map(|(node, _)| node)
    }

    fn forward(&self, node: u64, mut env: Envelope) {
        let span = tracing::info_span!("airssys.forward", to = %env.to, node);
        crate::telemetry::adopt(&span, &env.trace);
        let traceparent = crate::telemetry::traceparent_of(&span);
        if !traceparent.is_empty() {
            env.trace = traceparent;
        }
        let frame = LaneMsg::Deliver(env.encode()).encode();
        if let Err(e) = self.cluster.send_frame(node, frame) {
            tracing::debug!(to = %env.to, "not forwarded: {e}");
        }
    }

    fn consumed(&self, origin: u64, receiver: &str, sender: &str, seq: u64) {
        let frame = LaneMsg::Consumed {
            receiver: receiver.to_string(),
            sender: sender.to_string(),
            seq,
        }
        .encode();
        if let Err(e) = self.cluster.send_frame(origin, frame) {
            tracing::debug!("acknowledgement not sent: {e}");
        }
    }
}

/// Applies one lane frame from a peer. Garbage is logged and dropped.
pub async fn on_lane_frame(router: &Router, storage: &Storage, frame: &[u8]) {
    match LaneMsg::decode(frame) {
        Ok(LaneMsg::Deliver(bytes)) => match Envelope::decode(&bytes) {
            Ok(env) => router.deliver(env),
            Err(e) => tracing::warn!("dropped an envelope from a peer: {e}"),
        },
        Ok(LaneMsg::Consumed {
            receiver,
            sender,
            seq,
        }) => {
            let batch = CommitBatch::sys_only(vec![(keys::outbox(&receiver, &sender, seq), None)]);
            if let Err(e) = storage.commit_async(batch).await {
                tracing::warn!("cannot delete an acknowledged outbox entry: {e}");
            }
        }
        Err(e) => tracing::warn!("dropped a malformed lane frame from a peer: {e}"),
    }
}

/// Sends again, in key order (so per pair in sequence order), every durable message
/// to another node that was already waiting at the previous sweep.
pub async fn resend_loop(router: Arc<Router>, storage: Storage, cluster: ClusterNode) {
    let mut waiting: HashSet<Vec<u8>> = HashSet::new();
    let me = cluster.id();
    loop {
        tokio::time::sleep(RESEND_EVERY).await;
        let entries = match storage.sys_scan_prefix(keys::OUTBOX) {
            Ok(e) => e,
            Err(_) => return, // storage closed: the node is stopping
        };
        let mut still = HashSet::new();
        for (key, value) in entries {
            let Ok(env) = Envelope::decode(&value) else {
                continue;
            };
            let remote = matches!(cluster.view().owner_of(&env.to), Some((n, _)) if n != me);
            if !remote {
                continue;
            }
            if waiting.contains(&key) {
                router.deliver(env);
            }
            still.insert(key);
        }
        waiting = still;
    }
}
