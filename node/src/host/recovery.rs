//! Bringing a node back: once the cluster host has activated what this node owns, pending
//! durable requests get their clocks back, and every committed durable message not yet
//! consumed is re-delivered in order before any actor runs (actors wait on the `recovered`
//! gate).

use super::*;

impl Host {
    /// Gives pending requests their clocks back and re-delivers every stored durable
    /// message, then lets actors run.
    pub(crate) async fn replay_stored(&self) -> Result<(), HostError> {
        let inner = &self.inner;
        let components = inner.components.lock().await;

        // Requests still waiting for their answer get their clocks back; those whose
        // deadline passed while the node was down time out now.
        // Only components running here: in a cluster the keyspace holds every component's
        // state, and the others' clocks and messages are their owners' business.
        let mut names: Vec<&String> = components.keys().collect();
        names.sort();
        for name in &names {
            if let Some(running) = components.get(*name) {
                running.shared.restore_pending_requests()?;
            }
        }

        // Re-deliver, in order, every committed durable message not yet consumed.
        let mut replayed = 0usize;
        let mut stored = Vec::new();
        for name in &names {
            stored.extend(
                inner
                    .storage
                    .sys_scan_prefix(&keys::outbox_for_receiver(name))?,
            );
        }
        for (key, value) in stored {
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
        let running = self.inner.components.lock().await.len();
        tracing::info!(components = running, replayed, "node recovered");
        Ok(())
    }
}

/// Holds each fresh instance back until recovery has finished re-delivering.
pub(super) struct GatedFactory {
    pub(super) inner: ComponentFactory,
    pub(super) recovered: watch::Receiver<bool>,
}

impl airssys_actor::ActorFactory for GatedFactory {
    type Actor = ComponentActor;

    async fn create(&mut self) -> Result<ComponentActor, airssys_actor::Crash> {
        if self.recovered.wait_for(|done| *done).await.is_err() {
            return Err(airssys_actor::Crash::new("node is shutting down"));
        }
        self.inner.create().await
    }

    fn reject(&mut self, msg: crate::messaging::Mail, why: &airssys_actor::Rejection) {
        self.inner.reject(msg, why)
    }
}
