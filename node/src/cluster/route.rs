//! Envelopes between nodes: the router's view of the cluster ([`ClusterRoute`]), the
//! handling of lane frames from peers, and the re-delivery of durable messages waiting in
//! the (replicated) outbox of a component running here.

use super::proto::LaneMsg;
use crate::messaging::{keys, Envelope, RemoteRoute, Router};
use airssys_cluster::ClusterNode;
use airssys_storage::Storage;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// How often durable messages still waiting for their receiver here are handed again.
pub const REDELIVER_EVERY: Duration = Duration::from_secs(2);

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
}

/// Applies one lane frame from a peer. Garbage is logged and dropped.
pub fn on_lane_frame(router: &Router, frame: &[u8]) {
    match LaneMsg::decode(frame) {
        Ok(LaneMsg::Deliver(bytes)) => match Envelope::decode(&bytes) {
            Ok(env) => router.deliver(env),
            Err(e) => tracing::warn!("dropped an envelope from a peer: {e}"),
        },
        Err(e) => tracing::warn!("dropped a malformed lane frame from a peer: {e}"),
    }
}

/// Hands again, in key order (so per pair in sequence order), every durable message for a
/// component running here that was already waiting at the previous sweep. Outboxes are
/// replicated, so the receiver's node finds what was lost on the way (a broken stream, a
/// sender's node that died right after committing) without asking anyone; the receiver's
/// marks drop what it had consumed already.
pub async fn redeliver_loop(router: Arc<Router>, storage: Storage, host: crate::host::Host) {
    let mut waiting: HashSet<Vec<u8>> = HashSet::new();
    loop {
        tokio::time::sleep(REDELIVER_EVERY).await;
        let mut still = HashSet::new();
        for name in host.running_names().await {
            let entries = match storage.sys_scan_prefix(&keys::outbox_for_receiver(&name)) {
                Ok(e) => e,
                Err(_) => return, // storage closed: the node is stopping
            };
            for (key, value) in entries {
                if waiting.contains(&key) {
                    if let Ok(env) = Envelope::decode(&value) {
                        router.deliver(env);
                    }
                }
                still.insert(key);
            }
        }
        waiting = still;
    }
}
