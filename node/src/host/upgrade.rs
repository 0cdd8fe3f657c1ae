//! Upgrade in place on the component's owner: the host hands the new code to the
//! component's actor, which switches between two messages (`component::upgrade`), and
//! then records what runs here. While the actor switches, the reconcile leaves it alone
//! ([`Host::upgrading`]): the generation it runs at changes by its own hand.

use super::{api_err, Host};
use crate::api::{ApiError, ErrorKind, Limits};
use crate::component::Prepared;
use crate::component::{Code, UpgradeOrder};
use crate::messaging::Mail;
use airssys_actor::ActorStatus;
use std::collections::BTreeSet;
use std::sync::Arc;

pub use crate::component::ProposeUpgrade;

/// Marks a component as switching its code for as long as it lives.
struct Switching<'a> {
    host: &'a Host,
    name: String,
}

impl Drop for Switching<'_> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.host.inner.upgrading.lock() {
            set.remove(&self.name);
        }
    }
}

/// What a component switches to.
pub(crate) struct CodeSwitch {
    pub prepared: Prepared,
    pub limits: Limits,
    pub size_bytes: u64,
    /// When the code it replaces started to run (for `migrate`'s `previous`).
    pub previous_since_ms: u64,
    /// An import: the store's new content (no migration runs).
    pub replace: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl Host {
    /// Components whose actor is switching its code now.
    pub(crate) fn upgrading(&self) -> BTreeSet<String> {
        self.inner
            .upgrading
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Has the actor of `name` switch to `prepared` (with `limits`): after the message it
    /// is handling, once its commits in flight are done, it runs the new code's migration
    /// and calls `propose` with its writes. Answers the generation it runs at afterwards;
    /// on an error the old code goes on, nothing applied (or, when the message says so,
    /// the outcome is unknown and the reconcile takes it from the registry).
    pub(crate) async fn upgrade(
        &self,
        name: &str,
        switch: CodeSwitch,
        propose: ProposeUpgrade,
    ) -> Result<u64, ApiError> {
        let CodeSwitch {
            prepared,
            limits,
            size_bytes,
            previous_since_ms,
            replace,
        } = switch;
        {
            let mut set = self
                .inner
                .upgrading
                .lock()
                .map_err(|_| api_err(ErrorKind::Internal, "upgrade marks poisoned"))?;
            if !set.insert(name.to_string()) {
                return Err(api_err(
                    ErrorKind::Conflict,
                    format!("{name} is being upgraded already; wait for that one to end"),
                ));
            }
        }
        let _switching = Switching {
            host: self,
            name: name.to_string(),
        };
        let restart_first = || {
            api_err(
                ErrorKind::Unavailable,
                format!(
                    "{name} is marked failed here: `airssys component restart {name}` first, \
                     then upgrade it (its migration runs against a live instance of its state)"
                ),
            )
        };
        let sender = {
            let components = self.inner.components.lock().await;
            match components.get(name) {
                Some(r) if matches!(r.handle.status(), ActorStatus::Failed { .. }) => {
                    return Err(restart_first())
                }
                Some(r) => Some(r.handle.sender().clone()),
                None => None,
            }
        };
        let Some(sender) = sender else {
            let failed = self.inner.failed.lock().is_ok_and(|f| f.contains_key(name));
            return Err(if failed {
                restart_first()
            } else {
                super::not_running_here(name)
            });
        };
        let sha256 = prepared.sha256.clone();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let order = UpgradeOrder {
            code: Arc::new(Code { prepared, limits }),
            previous_since_ms,
            propose,
            replace,
            reply,
        };
        // Past the mailbox's cap like a committed message: an upgrade is not dropped for a
        // full mailbox.
        if sender.push_committed(Mail::Host(Box::new(order))).is_err() {
            return Err(api_err(
                ErrorKind::Unavailable,
                format!("{name} stopped here before it took the upgrade; nothing was applied"),
            ));
        }
        let generation = answer.await.unwrap_or_else(|_| {
            Err(api_err(
                ErrorKind::Unavailable,
                format!(
                    "{name} stopped while switching its code; the upgrade may or may not have \
                     been applied: see `airssys component describe {name}`"
                ),
            ))
        })?;
        if let Some(running) = self.inner.components.lock().await.get_mut(name) {
            running.record.sha256 = sha256;
            running.record.size_bytes = size_bytes;
            running.record.limits = limits;
            running.record.generation = generation;
        }
        Ok(generation)
    }
}
