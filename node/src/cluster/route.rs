//! Envelopes between nodes: the router's view of the cluster ([`ClusterRoute`]), the
//! handling of lane frames from peers, and the re-delivery of durable messages waiting in
//! the (replicated) outbox of a component running here.

use super::proto::LaneMsg;
use crate::messaging::{keys, Envelope, RemoteRoute, Router};
use airssys_cluster::ClusterNode;
use airssys_storage::Storage;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
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

/// Which of a receiver's stored durable messages (outbox keys, in key order) a sweep hands
/// again: those that were already waiting at the previous sweep and are not sitting in its
/// mailbox now, at most `room` of them (the mailbox's free places), oldest first.
pub fn to_resend<'a>(
    stored: &'a [Vec<u8>],
    waiting_before: &HashSet<Vec<u8>>,
    queued: impl Fn(&[u8]) -> bool,
    room: usize,
) -> Vec<&'a [u8]> {
    stored
        .iter()
        .filter(|k| waiting_before.contains(*k) && !queued(k))
        .take(room)
        .map(Vec::as_slice)
        .collect()
}

/// Hands again, in key order (so per pair in sequence order), the durable messages for a
/// component running here that were already waiting at the previous sweep ([`to_resend`]).
/// Outboxes are replicated, so the receiver's node finds what was lost on the way (a broken
/// stream, a sender's node that died right after committing) without asking anyone; the
/// receiver's marks drop what it had consumed already. What still sits in the mailbox is
/// not sent again, and no more than the mailbox has room for: a slow actor's mailbox does
/// not grow by its own backlog every sweep.
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
            let room = router.mailbox_room(&name).unwrap_or(0);
            let stored: Vec<Vec<u8>> = entries.iter().map(|(k, _)| k.clone()).collect();
            let resend: HashSet<&[u8]> =
                to_resend(&stored, &waiting, |k| router.is_queued(k), room)
                    .into_iter()
                    .collect();
            for (key, value) in &entries {
                if resend.contains(key.as_slice()) {
                    if let Ok(env) = Envelope::decode(value) {
                        router.metrics.redelivered.fetch_add(1, Ordering::Relaxed);
                        router.deliver(env);
                    }
                }
            }
            still.extend(stored);
        }
        waiting = still;
        router
            .metrics
            .redelivery_sweeps
            .fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn a_sweep_resends_only_old_unqueued_messages_within_room() {
        let stored = vec![k("a"), k("b"), k("c"), k("d")];
        let before: HashSet<Vec<u8>> = [k("a"), k("b"), k("c")].into();
        // `d` arrived since the last sweep; `b` waits in the mailbox.
        let queued = |key: &[u8]| key == b"b";
        assert_eq!(
            to_resend(&stored, &before, queued, 10),
            vec![b"a".as_slice(), b"c".as_slice()]
        );
        assert_eq!(
            to_resend(&stored, &before, queued, 1),
            vec![b"a".as_slice()]
        );
        assert!(
            to_resend(&stored, &before, queued, 0).is_empty(),
            "a full mailbox gets nothing"
        );
    }
}
