//! Upgrade in place and rollback, as the cluster runs them.
//!
//! The node that takes the call checks what it can alone (the name, the binary compiles
//! for the world, it is not the code that runs already, the limits) and hands the upgrade
//! to the component's owner. There the component's actor takes it in mailbox order: the
//! handler it is running ends on the old code, then it waits for its commits in flight,
//! runs the new code's `migrate` against the stored state and proposes ONE Raft entry
//! ([`Command::Upgrade`]) with the migration's writes fenced on its placement. Applied, the
//! generation goes up by one and the actor goes on with the new code (its mailbox as it
//! was); refused, or the migration failed, nothing changed and the old code goes on.

use super::admin::{cluster_err, not_found, refusal};
use super::proto::{AppAnswer, AppCall};
use super::ClusterHost;
use crate::admin::params;
use crate::api::{
    AdminBackend, ApiError, ComponentInfo, ComponentState, ErrorKind, Limits, PreviousVersion,
    UpgradeRequest,
};
use crate::caps::MAX_BINARY_BYTES;
use crate::clock::now_ms;
use crate::host::{CodeSwitch, ProposeUpgrade};
use airssys_cluster::{Command, ComponentSpec, Outcome, Refusal, Registry, Upgrade};
use airssys_storage::CommitBatch;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// How long the node that took an upgrade waits for the owner to make it: the actor
/// takes it after the messages queued before it.
const UPGRADE_WAIT: Duration = Duration::from_secs(120);

/// An upgrade as the owner receives it: the new version, and the one it replaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeCall {
    pub name: String,
    pub sha256: String,
    pub size_bytes: u64,
    /// The new limits, as the registry keeps them (JSON).
    pub config: Vec<u8>,
    /// Empty: the registry holds the binary (a rollback).
    pub binary: Vec<u8>,
    pub from_sha256: String,
    pub at_ms: u64,
    /// An import: the store's new content (no migration runs; the code may stay).
    pub data: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

/// A component's limits as its registry entry keeps them.
fn limits_of(config: &[u8]) -> Result<Limits, ApiError> {
    serde_json::from_slice(config).map_err(|e| {
        ApiError::new(
            ErrorKind::Internal,
            format!("component config is corrupt: {e}"),
        )
    })
}

/// Adds what the registry keeps of a component's code history to what its owner reported.
pub(super) fn with_versions(mut info: ComponentInfo, registry: &Registry) -> ComponentInfo {
    if let Some(v) = registry.versions.get(&info.name) {
        info.upgraded_at_ms = Some(v.upgraded_at_ms);
        info.previous = Some(PreviousVersion {
            sha256: v.previous.sha256.clone(),
            size_bytes: v.previous.size_bytes,
            limits: limits_of(&v.previous.config).unwrap_or(info.limits),
            since_ms: v.previous_since_ms,
        });
    }
    info
}

/// What a refused upgrade means to the user who asked for it.
fn upgrade_refusal(name: &str, r: Refusal) -> ApiError {
    match r {
        Refusal::Fenced { .. } => ApiError::new(
            ErrorKind::Conflict,
            format!(
                "{name} moved, restarted or was removed while its upgrade was being made; \
                 nothing was applied: run the upgrade again ({r})"
            ),
        ),
        Refusal::VersionChanged { .. }
        | Refusal::SameVersion { .. }
        | Refusal::NoPreviousVersion(_) => ApiError::new(ErrorKind::Conflict, r.to_string()),
        other => refusal(other),
    }
}

impl ClusterHost {
    /// `component upgrade`: checks the new code here, has the owner switch to it.
    pub(super) async fn upgrade_component(
        &self,
        req: UpgradeRequest,
    ) -> Result<ComponentInfo, ApiError> {
        let name = req.name;
        params::validate_name(&name)?;
        params::check_size(req.binary.len(), MAX_BINARY_BYTES, "component binary")?;
        let entry = self
            .cluster
            .view()
            .entry(&name)
            .ok_or_else(|| not_found(&name))?;
        let sha256 = hex::encode(Sha256::digest(&req.binary));
        if sha256 == entry.spec.sha256 {
            return Err(upgrade_refusal(
                &name,
                Refusal::SameVersion {
                    component: name.clone(),
                    sha256,
                },
            ));
        }
        let current = limits_of(&entry.spec.config)?;
        let limits = Limits::resolve(&req.limits, &current);
        if let Some(problem) = limits.problem() {
            return Err(ApiError::new(ErrorKind::BadRequest, problem));
        }
        // Compiled here first: a binary that is not a component for the world is refused
        // before anything reaches the owner.
        self.host
            .validate_binary(req.binary.clone(), sha256.clone())
            .await?;
        let call = UpgradeCall {
            name,
            sha256,
            size_bytes: req.binary.len() as u64,
            config: serde_json::to_vec(&limits)
                .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?,
            binary: req.binary,
            from_sha256: entry.spec.sha256,
            at_ms: now_ms(),
            data: None,
        };
        self.run_upgrade(call, entry.owner).await
    }

    /// `component rollback`: an upgrade to the previous code and its limits.
    pub(super) async fn rollback_component(&self, name: &str) -> Result<ComponentInfo, ApiError> {
        params::validate_name(name)?;
        let registry = self.cluster.view().registry();
        let entry = registry
            .components
            .get(name)
            .ok_or_else(|| not_found(name))?;
        let Some(versions) = registry.versions.get(name) else {
            return Err(upgrade_refusal(
                name,
                Refusal::NoPreviousVersion(name.to_string()),
            ));
        };
        let previous = &versions.previous;
        let call = UpgradeCall {
            name: name.to_string(),
            sha256: previous.sha256.clone(),
            size_bytes: previous.size_bytes,
            config: previous.config.clone(),
            binary: Vec::new(),
            from_sha256: entry.spec.sha256.clone(),
            at_ms: now_ms(),
            data: None,
        };
        self.run_upgrade(call, entry.owner).await
    }

    /// Has the owner make the upgrade, then waits until this node applied it and the
    /// owner runs it.
    pub(super) async fn run_upgrade(
        &self,
        call: UpgradeCall,
        owner: u64,
    ) -> Result<ComponentInfo, ApiError> {
        let name = call.name.clone();
        let owner = self.restarted_if_failed(&name, owner).await?;
        let generation = if owner == self.cluster.id() {
            self.upgrade_here(call).await?
        } else {
            match self
                .call_owner(owner, &AppCall::Upgrade(Box::new(call)), UPGRADE_WAIT)
                .await?
            {
                AppAnswer::Upgraded(r) => r?,
                _ => {
                    return Err(ApiError::new(
                        ErrorKind::Internal,
                        "unexpected answer to an upgrade",
                    ))
                }
            }
        };
        self.await_generation(&name, generation).await
    }

    /// A component marked failed is restarted first (replicated, fenced, its queued
    /// messages kept): the migration runs against a live instance of its state. Answers
    /// the owner to upgrade at. If the current code cannot start even so, the upgrade is
    /// refused with what to do instead.
    async fn restarted_if_failed(&self, name: &str, owner: u64) -> Result<u64, ApiError> {
        let failed = matches!(
            self.describe(name).await.map(|i| i.state),
            Ok(ComponentState::Failed { .. })
        );
        if !failed {
            return Ok(owner);
        }
        tracing::info!(
            component = name,
            "restarting a failed component before its upgrade"
        );
        let restarted = self.restart(name).await?;
        if let ComponentState::Failed { reason, .. } = restarted.state {
            return Err(ApiError::new(
                ErrorKind::Unavailable,
                format!(
                    "{name} failed again when restarted for its upgrade ({reason}); its \
                     current code cannot run, so no migration can: remove it and install the \
                     new code, or `component import` its exported state"
                ),
            ));
        }
        Ok(restarted.node_id)
    }

    /// On the owner: compiles the new code (from the cache, usually) and has the actor
    /// switch to it. Answers the generation the component now runs at.
    pub(super) async fn upgrade_here(&self, mut call: UpgradeCall) -> Result<u64, ApiError> {
        let name = call.name.clone();
        let registry = self.cluster.view().registry();
        let entry = registry
            .components
            .get(&name)
            .ok_or_else(|| not_found(&name))?;
        if entry.owner != self.cluster.id() {
            return Err(ApiError::new(
                ErrorKind::Unavailable,
                format!(
                    "{name} moved to node {} while its upgrade was on its way; nothing was \
                     applied: run it again",
                    entry.owner
                ),
            ));
        }
        if entry.spec.sha256 != call.from_sha256 {
            return Err(upgrade_refusal(
                &name,
                Refusal::VersionChanged {
                    component: name.clone(),
                    expected: call.from_sha256,
                    now: entry.spec.sha256.clone(),
                },
            ));
        }
        let binary = if call.binary.is_empty() {
            self.cluster.binary(&call.sha256).ok_or_else(|| {
                ApiError::new(
                    ErrorKind::Unavailable,
                    format!("binary {} is no longer in the registry", call.sha256),
                )
            })?
        } else {
            call.binary.clone()
        };
        let limits = limits_of(&call.config)?;
        let prepared = self.host.prepare(binary, call.sha256.clone()).await?;
        let since = registry.current_since_ms(&name).unwrap_or(0);
        let size_bytes = call.size_bytes;
        let data = call.data.take();
        let propose = self.proposer(call, entry.generation, data.is_some());
        let generation = self
            .host
            .upgrade(
                &name,
                CodeSwitch {
                    prepared,
                    limits,
                    size_bytes,
                    previous_since_ms: since,
                    replace: data,
                },
                propose,
            )
            .await;
        // Whatever happened, the actor here is settled: bring it in line with the registry
        // (an upgrade whose outcome the actor could not learn is taken over from there).
        self.reconcile().await;
        generation
    }

    /// What the actor calls with its migration's writes: proposes the upgrade's one entry
    /// and says what became of it.
    fn proposer(&self, call: UpgradeCall, fenced_at: u64, import: bool) -> ProposeUpgrade {
        let cluster = self.cluster.clone();
        Box::new(move |migration: CommitBatch| {
            Box::pin(async move {
                let name = call.name.clone();
                // Sent without the binary when the registry holds it already.
                let binary = if cluster.view().registry().uses_binary(&call.sha256) {
                    Vec::new()
                } else {
                    call.binary
                };
                let command = Command::Upgrade(Box::new(Upgrade {
                    spec: ComponentSpec {
                        name: name.clone(),
                        sha256: call.sha256.clone(),
                        size_bytes: call.size_bytes,
                        config: call.config,
                        installed_at_ms: 0,
                    },
                    binary,
                    from_sha256: call.from_sha256,
                    at_ms: call.at_ms,
                    migration,
                    import,
                }));
                match cluster.propose(command).await {
                    Ok(Outcome::Upgraded { generation, .. }) => Ok(generation),
                    Ok(Outcome::Refused(r)) => Err(upgrade_refusal(&name, r)),
                    Ok(other) => Err(ApiError::new(
                        ErrorKind::Internal,
                        format!("unexpected upgrade outcome {other:?}"),
                    )),
                    Err(e) => {
                        // The way to the leader failed: what this node applies says whether
                        // the entry made it (the component runs the new code one generation
                        // on) or not.
                        cluster.catch_up().await;
                        match cluster.view().entry(&name) {
                            Some(now)
                                if now.spec.sha256 == call.sha256
                                    && now.generation == fenced_at + 1 =>
                            {
                                Ok(now.generation)
                            }
                            _ => {
                                let mut err = cluster_err(e);
                                err.message = format!(
                                    "the upgrade of {name} may not have been applied: {}; see \
                                     `airssys component describe {name}`",
                                    err.message
                                );
                                Err(err)
                            }
                        }
                    }
                }
            })
        })
    }

    /// Answers an upgrade another node handed to this one, the component's owner.
    pub(super) async fn answer_upgrade(&self, call: UpgradeCall) -> AppAnswer {
        AppAnswer::Upgraded(self.upgrade_here(call).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_upgrade_says_what_to_do() {
        let fenced = upgrade_refusal(
            "c",
            Refusal::Fenced {
                component: "c".into(),
                node: 1,
                generation: 4,
                now: "it is on node 2 at generation 5".into(),
            },
        );
        assert_eq!(fenced.error, ErrorKind::Conflict);
        assert!(fenced.message.contains("run the upgrade again"), "{fenced}");
        let same = upgrade_refusal(
            "c",
            Refusal::SameVersion {
                component: "c".into(),
                sha256: "ab".into(),
            },
        );
        assert_eq!(same.error, ErrorKind::Conflict);
        assert_eq!(
            upgrade_refusal("c", Refusal::NotFound("c".into())).error,
            ErrorKind::NotFound
        );
    }
}
