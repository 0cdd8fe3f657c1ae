//! Switching a running component to new code, from inside its actor, between two
//! messages: the handler it was running ended on the old code; the messages queued behind
//! the order are handled by the new code. An import is the same switch whose writes replace
//! the component's whole store with an export's (instead of the new code's migration).
//!
//! The actor first lets its commits in flight land (the migration must read what they
//! wrote), then starts an instance of the new code beside the old one and runs its
//! `migrate` as a transaction, whose writes are fenced on the current placement and go to
//! the cluster with the switch itself, as one entry (the host's `propose`). Applied: the
//! actor takes the new instance, code and generation. Anything else: the new instance is
//! dropped and the old one goes on, as if nothing had been asked.

use super::actor::{ComponentActor, InstantiateError};
use super::Prepared;
use crate::api::{ApiError, ErrorKind, Limits};
use crate::engine::bindings::lifecycle::PreviousVersion;
use airssys_storage::{CommitBatch, ComponentWrites, Fence, Storage};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::oneshot;

/// The code a component runs: its compiled binary and the limits it runs under (they
/// change together, at an upgrade).
pub struct Code {
    pub prepared: Prepared,
    pub limits: Limits,
}

/// Proposes the upgrade's one entry with the migration's writes; answers the generation
/// the component runs at once it applied.
pub type ProposeUpgrade = Box<
    dyn FnOnce(CommitBatch) -> Pin<Box<dyn Future<Output = Result<u64, ApiError>> + Send>> + Send,
>;

/// The host's order to switch to `code`.
pub struct UpgradeOrder {
    pub code: Arc<Code>,
    /// When the code it replaces started to run (for `migrate`'s `previous`).
    pub previous_since_ms: u64,
    pub propose: ProposeUpgrade,
    /// An import: the store's new content, in key order (no migration runs).
    pub replace: Option<Vec<(Vec<u8>, Vec<u8>)>>,
    /// The generation it runs at after the switch, or why there was none.
    pub reply: oneshot::Sender<Result<u64, ApiError>>,
}

fn api(kind: ErrorKind, message: impl Into<String>) -> ApiError {
    ApiError::new(kind, message)
}

impl ComponentActor {
    /// Carries out an upgrade order. Only a commit that failed in a way this actor cannot
    /// go on from (it was fenced: moved away) ends the actor; a failed upgrade does not.
    pub(super) async fn switch_code(
        &mut self,
        order: UpgradeOrder,
    ) -> Result<(), airssys_actor::Crash> {
        let UpgradeOrder {
            code,
            previous_since_ms,
            propose,
            replace,
            reply,
        } = order;
        let name = self.shared().name.clone();
        // The migration reads what the handlers before it wrote: their commits land first.
        self.shared().pipeline.drained().await;
        if let Some(failure) = self.shared().pipeline.failure_now() {
            if failure.fenced {
                let _ = reply.send(Err(api(
                    ErrorKind::Conflict,
                    format!(
                        "{name} moved or restarted while its upgrade waited; nothing was \
                         applied: run the upgrade again"
                    ),
                )));
                return Err(airssys_actor::Crash::new(failure.why));
            }
            self.shared()
                .reset_after_failure()
                .map_err(airssys_actor::Crash::new)?;
            self.reinstantiate_now().await?;
        }
        let previous = PreviousVersion {
            digest: self.code().prepared.sha256.clone(),
            since_ms: previous_since_ms,
        };
        let outcome = self
            .migrate_and_propose(code.clone(), previous, replace, propose)
            .await;
        let _ = reply.send(match outcome {
            Ok((fresh, generation)) => {
                let shared = self.shared().clone();
                shared
                    .generation
                    .store(generation, std::sync::atomic::Ordering::Relaxed);
                shared.set_code(code);
                *self = fresh;
                tracing::info!(component = %name, generation, sha256 = %self.code().prepared.sha256, "upgraded");
                Ok(generation)
            }
            Err(e) => {
                tracing::warn!(component = %name, "upgrade not applied: {e}");
                Err(e)
            }
        });
        Ok(())
    }

    /// Starts the new code, runs its migration and proposes the switch. The new instance
    /// and the generation it runs at, when the switch applied.
    async fn migrate_and_propose(
        &mut self,
        code: Arc<Code>,
        previous: PreviousVersion,
        replace: Option<Vec<(Vec<u8>, Vec<u8>)>>,
        propose: ProposeUpgrade,
    ) -> Result<(ComponentActor, u64), ApiError> {
        let name = self.shared().name.clone();
        let not_applied = |what: String| {
            format!("{what}; the upgrade was not applied and {name} runs its previous code")
        };
        let mut fresh = ComponentActor::instantiate_with(self.shared().clone(), code)
            .await
            .map_err(|e| match e {
                InstantiateError::Permanent(why) => api(
                    ErrorKind::InvalidComponent,
                    not_applied(format!("the new code cannot start: {why}")),
                ),
                InstantiateError::Transient(why) => api(
                    ErrorKind::Unavailable,
                    not_applied(format!("the new code could not start now: {why}")),
                ),
            })?;
        let writes = match replace {
            Some(pairs) => Some(replacement(&self.shared().storage, &name, pairs).map_err(
                |e| {
                    api(
                        ErrorKind::Unavailable,
                        not_applied(format!("cannot read its store: {e}")),
                    )
                },
            )?),
            None => fresh.run_migrate(&previous).await.map_err(|mut e| {
                e.message = not_applied(format!("its migration failed: {}", e.message));
                e
            })?,
        };
        let shared = self.shared();
        let migration = CommitBatch {
            fence: Some(Fence {
                component: shared.name.clone(),
                node_id: shared.node_id,
                generation: shared.generation(),
                commit: 0,
                sequence: 0,
                peers: Vec::new(),
            }),
            components: writes.into_iter().collect(),
            sys: Vec::new(),
        };
        let generation = propose(migration).await?;
        Ok((fresh, generation))
    }
}

/// The writes that make `name`'s store hold exactly `pairs`: every key it has now deleted
/// unless `pairs` writes it again.
fn replacement(
    storage: &Storage,
    name: &str,
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<ComponentWrites, airssys_storage::StorageError> {
    let current = storage.keys_with_prefix(name, b"")?;
    let now_used = storage.usage_bytes(name)?;
    let new_used: u64 = pairs.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
    let mut writes: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>> =
        current.into_iter().map(|k| (k, None)).collect();
    for (k, v) in pairs {
        writes.insert(k, Some(v));
    }
    Ok(ComponentWrites {
        component: name.to_string(),
        writes: writes.into_iter().collect(),
        usage_delta: new_used as i64 - now_used as i64,
    })
}
