//! The admin contract on a cluster node: reads come from the replicated registry and
//! the owner node; writes go through Raft (forwarded to the leader); sends and
//! requests go to the owner node.

use super::proto::{AppAnswer, AppCall};
use super::{follow, ClusterHost};
use crate::admin::params;
use crate::api::{
    AdminBackend, ApiError, ComponentInfo, ComponentState, Delivery, ErrorKind, InstallRequest,
    NodeStatus, UpgradeRequest,
};
use crate::caps::{MAX_BINARY_BYTES, MAX_PAYLOAD_BYTES};
use crate::clock::now_ms;
use crate::messaging::idempotency::RequestKey;
use airssys_cluster::{
    ClusterError, ClusterStatus, Command, ComponentSpec, Outcome, PeerError, Refusal,
};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// How long install waits for the owner to start the component.
const ACTIVATION_WAIT: Duration = Duration::from_secs(30);
/// How often an install asks another node whether its component runs yet, at most.
const REMOTE_POLL_MAX: Duration = Duration::from_millis(50);
/// How long an install waits on a local activation before it looks again at where the
/// component is placed.
const LOCAL_RECHECK: Duration = Duration::from_millis(500);
/// Extra time a forwarded request gets over its own timeout.
const FORWARD_SLACK: Duration = Duration::from_secs(5);
/// How long a send is tried (again, when keyed) before its last failure is the answer.
const SEND_DEADLINE: Duration = Duration::from_secs(10);
/// The least time one attempt of a send at another node is given.
const SEND_ATTEMPT_MIN: Duration = Duration::from_millis(500);

/// The one place a cluster failure becomes a user-facing kind.
pub(super) fn cluster_err(e: ClusterError) -> ApiError {
    let kind = match &e {
        ClusterError::NoLeader => ErrorKind::NotLeader,
        ClusterError::Peer(p) => match p {
            PeerError::NotLeader { .. } | PeerError::NoLeader => ErrorKind::NotLeader,
            PeerError::NotMember(_) => ErrorKind::NotFound,
            PeerError::LastVoter => ErrorKind::BadRequest,
            PeerError::WrongRequest(_) | PeerError::Unexpected(_) => ErrorKind::Internal,
            // A node whose certificate is not the node it says it is: a set-up fault.
            PeerError::NotThisPeer { .. } => ErrorKind::Internal,
            PeerError::Raft(_)
            | PeerError::Unreachable(_)
            | PeerError::Snapshot(_)
            | PeerError::Stopping
            | PeerError::NotVotingYet => ErrorKind::Unavailable,
        },
        ClusterError::Transport(_) => ErrorKind::Unavailable,
        ClusterError::Storage(_)
        | ClusterError::Tls(_)
        | ClusterError::Raft(_)
        | ClusterError::Join(..) => ErrorKind::Internal,
    };
    ApiError::new(kind, e.to_string())
}

pub(super) fn refusal(r: Refusal) -> ApiError {
    let kind = match &r {
        Refusal::AlreadyExists(_) => ErrorKind::AlreadyExists,
        Refusal::NotFound(_) => ErrorKind::NotFound,
        Refusal::UnknownNode(_) => ErrorKind::BadRequest,
        // Its last user was removed while the install was on its way: a retry carries it.
        Refusal::MissingBinary(_) => ErrorKind::Unavailable,
        // Commits are not admin writes; these reach an operator only through a bug.
        Refusal::Fenced { .. } => ErrorKind::Unavailable,
        Refusal::MalformedCommit(_) => ErrorKind::Internal,
        Refusal::OutOfTurn { .. } | Refusal::PeerChanged { .. } => ErrorKind::Unavailable,
        // The admin API checks names and hashes the binary itself before it proposes.
        Refusal::Invalid(_) => ErrorKind::BadRequest,
        Refusal::VersionChanged { .. }
        | Refusal::SameVersion { .. }
        | Refusal::NoPreviousVersion(_) => ErrorKind::Conflict,
    };
    ApiError::new(kind, r.to_string())
}

pub(super) fn not_found(name: &str) -> ApiError {
    ApiError::new(ErrorKind::NotFound, format!("no component named {name}"))
}

impl ClusterHost {
    /// Resolves once `name` is no longer owned by `from` (moved, failed over, or removed).
    async fn owner_moved(&self, name: &str, from: u64) {
        let mut changes = self.cluster.view().subscribe();
        loop {
            if self.cluster.view().owner_of(name).map(|(n, _)| n) != Some(from) {
                return;
            }
            if changes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// One attempt of a request at another node, the owner. If the registry names
    /// another owner while it is out (the owner failed, or the component moved), the
    /// attempt ends `unavailable` at once rather than waiting on that node: the caller
    /// sends it again under its key.
    async fn forward_request(
        &self,
        owner: u64,
        name: &str,
        payload: Vec<u8>,
        left: Duration,
        delivery: Delivery,
        key: RequestKey,
    ) -> Result<Vec<u8>, ApiError> {
        let call = AppCall::KeyedRequest {
            name: name.into(),
            payload,
            timeout_ms: left.as_millis() as u64,
            delivery,
            trace: crate::telemetry::current_traceparent(),
            key,
        };
        tokio::select! {
            answer = self.call_owner(owner, &call, left + FORWARD_SLACK) => {
                match answer? {
                    AppAnswer::Reply(r) => r,
                    _ => Err(ApiError::new(
                        ErrorKind::Internal,
                        "unexpected answer to a request",
                    )),
                }
            }
            () = self.owner_moved(name, owner) => {
                tracing::debug!(component = name, from = owner, "owner changed while a request was out");
                Err(ApiError::new(
                    ErrorKind::Unavailable,
                    format!("{name} moved away from node {owner} while the request was in flight"),
                ))
            }
        }
    }

    /// One attempt of a send at another node, the owner. A keyed one ends `unavailable`
    /// as soon as the registry names another owner (the caller sends it again under its
    /// key); an unkeyed one waits for the owner's answer.
    async fn forward_send(
        &self,
        owner: u64,
        name: &str,
        payload: Vec<u8>,
        delivery: Delivery,
        key: Option<RequestKey>,
        left: Duration,
    ) -> Result<(), ApiError> {
        let trace = crate::telemetry::current_traceparent();
        let keyed = key.is_some();
        let call = match key {
            Some(key) => AppCall::KeyedSend {
                name: name.into(),
                payload,
                delivery,
                trace,
                key,
            },
            None => AppCall::Send {
                name: name.into(),
                payload,
                delivery,
                trace,
            },
        };
        let answer = async {
            match self
                .call_owner(owner, &call, left.max(SEND_ATTEMPT_MIN))
                .await?
            {
                AppAnswer::Sent(r) => r,
                _ => Err(ApiError::new(
                    ErrorKind::Internal,
                    "unexpected answer to a send",
                )),
            }
        };
        if !keyed {
            return answer.await;
        }
        tokio::select! {
            answer = answer => answer,
            () = self.owner_moved(name, owner) => {
                tracing::debug!(component = name, from = owner, "owner changed while a send was out");
                Err(ApiError::new(
                    ErrorKind::Unavailable,
                    format!("{name} moved away from node {owner} while the message was in flight"),
                ))
            }
        }
    }

    fn owner(&self, name: &str) -> Result<u64, ApiError> {
        params::validate_name(name)?;
        self.cluster
            .view()
            .owner_of(name)
            .map(|(node, _)| node)
            .ok_or_else(|| not_found(name))
    }

    pub(super) async fn call_owner(
        &self,
        node: u64,
        call: &AppCall,
        limit: Duration,
    ) -> Result<AppAnswer, ApiError> {
        let body = call.encode();
        let bytes = self
            .cluster
            .app_call(node, body, limit)
            .await
            .map_err(|e| {
                ApiError::new(
                    ErrorKind::Unavailable,
                    format!("node {node} does not answer: {e}"),
                )
            })?;
        AppAnswer::decode(&bytes).map_err(|e| {
            ApiError::new(
                ErrorKind::Internal,
                format!("unexpected answer from node {node}: {e}"),
            )
        })
    }

    /// What the registry alone says of a component whose owner has not reported it at
    /// this generation yet (still starting it, or not answering).
    fn not_reported(&self, entry: &airssys_cluster::ComponentEntry) -> ComponentInfo {
        ComponentInfo {
            name: entry.spec.name.clone(),
            sha256: entry.spec.sha256.clone(),
            size_bytes: entry.spec.size_bytes,
            limits: serde_json::from_slice(&entry.spec.config)
                .unwrap_or(self.host.config().default_limits),
            node_id: entry.owner,
            generation: entry.generation,
            state: ComponentState::Starting,
            mailbox_depth: 0,
            storage_bytes: 0,
            restarts: 0,
            installed_at_ms: entry.spec.installed_at_ms,
            log_lines_dropped: 0,
            upgraded_at_ms: None,
            previous: None,
        }
    }

    /// Waits until this node has applied a write the leader committed (read your
    /// writes on the node that took the call).
    pub(super) async fn wait_applied(&self, done: impl Fn(&airssys_cluster::Registry) -> bool) {
        let mut changes = self.cluster.view().subscribe();
        let wait = async {
            loop {
                if done(&self.cluster.view().registry()) {
                    return;
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(ACTIVATION_WAIT, wait).await;
    }

    /// Waits until this node applied `generation` of `name` and its owner runs it, and
    /// describes it.
    pub(super) async fn await_generation(
        &self,
        name: &str,
        generation: u64,
    ) -> Result<ComponentInfo, ApiError> {
        self.wait_applied(|r| {
            r.components
                .get(name)
                .is_some_and(|c| c.generation >= generation)
        })
        .await;
        self.await_activation(name).await
    }

    /// Waits until the owner runs the component (or reports that it failed).
    /// Here, it waits on the activation itself; for another node's component it asks
    /// again, soon at first and then every [`REMOTE_POLL_MAX`].
    pub(super) async fn await_activation(&self, name: &str) -> Result<ComponentInfo, ApiError> {
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            match self.describe(name).await {
                Ok(info)
                    if !matches!(
                        info.state,
                        ComponentState::Starting | ComponentState::Compiling { .. }
                    ) =>
                {
                    return Ok(info)
                }
                Err(e) if e.error == ErrorKind::NotFound => return Err(e),
                Ok(_) | Err(_) if started.elapsed() > ACTIVATION_WAIT => {
                    return self.describe(name).await
                }
                _ => {}
            }
            let placed = self.cluster.view().owner_of(name);
            match placed {
                Some((owner, generation)) if owner == self.cluster.id() => {
                    // Bounded: the component may move away while we wait.
                    let settled = self.host.settled(name, generation);
                    let _ = tokio::time::timeout(LOCAL_RECHECK, settled).await;
                }
                _ => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(REMOTE_POLL_MAX);
                }
            }
        }
    }

    /// After a move or restart was proposed: waits until this node applied it and the
    /// owner runs the new generation, and describes it.
    async fn await_placement(
        &self,
        name: &str,
        outcome: Outcome,
        what: &str,
    ) -> Result<ComponentInfo, ApiError> {
        match outcome {
            Outcome::Moved { generation, .. } => self.await_generation(name, generation).await,
            Outcome::Refused(r) => Err(refusal(r)),
            other => Err(ApiError::new(
                ErrorKind::Internal,
                format!("unexpected {what} outcome {other:?}"),
            )),
        }
    }
}

impl AdminBackend for ClusterHost {
    async fn install(&self, req: InstallRequest) -> Result<ComponentInfo, ApiError> {
        let name = req.name;
        params::validate_name(&name)?;
        params::check_size(req.binary.len(), MAX_BINARY_BYTES, "component binary")?;
        let limits = self.host.limits_for(&req.limits)?;
        if self.cluster.view().owner_of(&name).is_some() {
            return Err(refusal(Refusal::AlreadyExists(name)));
        }
        // Validate here, before anything is replicated.
        let sha256 = hex::encode(Sha256::digest(&req.binary));
        self.host
            .validate_binary(req.binary.clone(), sha256.clone())
            .await?;
        let spec = ComponentSpec {
            name: name.clone(),
            sha256,
            size_bytes: req.binary.len() as u64,
            config: serde_json::to_vec(&limits)
                .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?,
            installed_at_ms: now_ms(),
        };
        match self
            .cluster
            .install(spec, req.binary)
            .await
            .map_err(cluster_err)?
        {
            Outcome::Installed { .. } => {
                self.wait_applied(|r| r.components.contains_key(&name))
                    .await;
            }
            Outcome::Refused(r) => return Err(refusal(r)),
            other => {
                return Err(ApiError::new(
                    ErrorKind::Internal,
                    format!("unexpected install outcome {other:?}"),
                ))
            }
        }
        let info = self.await_activation(&name).await?;
        if let ComponentState::Failed { reason, error } = &info.state {
            // Leave nothing behind: the install did not happen.
            let _ = self
                .cluster
                .propose(Command::Remove { name: name.clone() })
                .await;
            // A trap or a refusing `init` says so; anything else may pass on a retry.
            let kind = error.unwrap_or(ErrorKind::Unavailable);
            return Err(ApiError::new(
                kind,
                format!("{reason}; nothing was installed"),
            ));
        }
        tracing::info!(component = %name, node = info.node_id, "installed");
        Ok(info)
    }

    async fn list(&self) -> Result<Vec<ComponentInfo>, ApiError> {
        let registry = self.cluster.view().registry();
        let owners: std::collections::BTreeSet<u64> =
            registry.components.values().map(|c| c.owner).collect();
        let mut known = std::collections::HashMap::new();
        for node in owners {
            let infos = if node == self.cluster.id() {
                self.host.local_infos().await
            } else {
                match self
                    .call_owner(node, &AppCall::List, Duration::from_secs(5))
                    .await
                {
                    Ok(AppAnswer::List(l)) => l,
                    _ => Vec::new(),
                }
            };
            for i in infos {
                known.insert(i.name.clone(), i);
            }
        }
        let mut out = Vec::new();
        for entry in registry.components.values() {
            let info = match known.remove(&entry.spec.name) {
                Some(i) if i.generation == entry.generation => i,
                _ => self.not_reported(entry),
            };
            out.push(super::upgrade::with_versions(info, &registry));
        }
        Ok(out)
    }

    async fn describe(&self, name: &str) -> Result<ComponentInfo, ApiError> {
        let owner = self.owner(name)?;
        let entry = self
            .cluster
            .view()
            .entry(name)
            .ok_or_else(|| not_found(name))?;
        let found = if owner == self.cluster.id() {
            self.host.local_info(name).await
        } else {
            match self
                .call_owner(
                    owner,
                    &AppCall::Describe { name: name.into() },
                    Duration::from_secs(5),
                )
                .await
            {
                Ok(AppAnswer::Info(answer)) => (*answer).ok(),
                _ => None,
            }
        };
        let info = match found {
            Some(i) if i.generation == entry.generation => i,
            _ => self.not_reported(&entry),
        };
        Ok(super::upgrade::with_versions(
            info,
            &self.cluster.view().registry(),
        ))
    }

    async fn remove(&self, name: &str) -> Result<(), ApiError> {
        self.owner(name)?;
        match self
            .cluster
            .propose(Command::Remove { name: name.into() })
            .await
            .map_err(cluster_err)?
        {
            Outcome::Removed => {
                self.wait_applied(|r| !r.components.contains_key(name))
                    .await;
                Ok(())
            }
            Outcome::Refused(r) => Err(refusal(r)),
            other => Err(ApiError::new(
                ErrorKind::Internal,
                format!("unexpected remove outcome {other:?}"),
            )),
        }
    }

    async fn send(
        &self,
        name: &str,
        payload: Vec<u8>,
        delivery: Delivery,
        idempotency_key: Option<String>,
    ) -> Result<(), ApiError> {
        params::validate_name(name)?;
        params::check_size(payload.len(), MAX_PAYLOAD_BYTES, "payload")?;
        let mut key = idempotency_key
            .map(|k| RequestKey::from_client(&k))
            .transpose()
            .map_err(|m| ApiError::new(ErrorKind::BadRequest, m))?;
        if key.is_some() && delivery == Delivery::Fast {
            return Err(crate::host::fast_send_with_key());
        }
        let deadline = tokio::time::Instant::now() + SEND_DEADLINE;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let owner = self.owner(name)?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let tried = if owner == self.cluster.id() {
                self.host
                    .send(name, payload.clone(), delivery, key.clone())
                    .await
            } else {
                // A forwarded durable send carries a key, so that it can follow the
                // component to a new owner if this one fails (a fast one is at most once).
                if delivery == Delivery::Durable {
                    key.get_or_insert_with(|| RequestKey::for_forwarding(self.cluster.id()));
                }
                self.forward_send(owner, name, payload.clone(), delivery, key.clone(), left)
                    .await
            };
            let err = match tried {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !follow::try_again(&err, key.is_some(), left) {
                return Err(err);
            }
            tracing::debug!(
                component = name,
                attempt,
                "send made again: {}",
                err.message
            );
            let _ =
                tokio::time::timeout(follow::pause(attempt, left), self.owner_moved(name, owner))
                    .await;
        }
    }

    async fn request(
        &self,
        name: &str,
        payload: Vec<u8>,
        timeout: Duration,
        delivery: Delivery,
        idempotency_key: Option<String>,
    ) -> Result<Vec<u8>, ApiError> {
        params::validate_name(name)?;
        params::check_size(payload.len(), MAX_PAYLOAD_BYTES, "payload")?;
        let mut key = idempotency_key
            .map(|k| RequestKey::from_client(&k))
            .transpose()
            .map_err(|m| ApiError::new(ErrorKind::BadRequest, m))?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let owner = self.owner(name)?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let tried = if owner == self.cluster.id() {
                self.host
                    .request(name, payload.clone(), left, delivery, key.clone())
                    .await
            } else {
                // A forwarded request carries a key, so that it can follow the component
                // to a new owner if this one fails.
                let k = key
                    .get_or_insert_with(|| RequestKey::for_forwarding(self.cluster.id()))
                    .clone();
                self.forward_request(owner, name, payload.clone(), left, delivery, k)
                    .await
            };
            let err = match tried {
                Ok(reply) => return Ok(reply),
                Err(e) => e,
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !follow::try_again(&err, key.is_some(), left) {
                return Err(err);
            }
            tracing::debug!(
                component = name,
                attempt,
                "request sent again: {}",
                err.message
            );
            // Soon once the registry names another owner; after a pause if it does not.
            let _ =
                tokio::time::timeout(follow::pause(attempt, left), self.owner_moved(name, owner))
                    .await;
        }
    }

    async fn status(&self) -> Result<NodeStatus, ApiError> {
        Ok(NodeStatus {
            node_id: self.host.node_id(),
            admin_addr: self.host.config().admin_addr.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            components: self.host.local_generations().await.len() as u64,
            uptime_ms: self.host.uptime_ms(),
        })
    }

    async fn metrics(&self) -> String {
        let mut text = crate::metrics::render(&self.host).await;
        crate::metrics::render_raft(&mut text, &self.cluster.figures());
        text
    }

    async fn ready(&self) -> bool {
        self.host.ready() && self.cluster.is_ready()
    }

    async fn compiling(&self) -> usize {
        self.compiles.pending()
    }

    async fn cluster_status(&self) -> Result<ClusterStatus, ApiError> {
        Ok(self.cluster.status().await)
    }

    async fn move_component(&self, name: &str, to: u64) -> Result<ComponentInfo, ApiError> {
        self.owner(name)?;
        let proposed = self
            .cluster
            .propose(Command::Move {
                name: name.into(),
                to,
            })
            .await
            .map_err(cluster_err)?;
        self.await_placement(name, proposed, "move").await
    }

    async fn restart(&self, name: &str) -> Result<ComponentInfo, ApiError> {
        self.owner(name)?;
        let proposed = self
            .cluster
            .propose(Command::Restart { name: name.into() })
            .await
            .map_err(cluster_err)?;
        self.await_placement(name, proposed, "restart").await
    }

    async fn upgrade(&self, req: UpgradeRequest) -> Result<ComponentInfo, ApiError> {
        self.upgrade_component(req).await
    }

    async fn rollback(&self, name: &str) -> Result<ComponentInfo, ApiError> {
        self.rollback_component(name).await
    }

    async fn backup(&self) -> Result<crate::api::BackupStream, ApiError> {
        self.backup_stream().await
    }

    async fn export(&self, name: &str) -> Result<crate::api::BackupStream, ApiError> {
        self.export_stream(name).await
    }

    async fn import(&self, req: crate::api::ImportRequest) -> Result<ComponentInfo, ApiError> {
        self.import_component(req).await
    }

    async fn remove_node(&self, node: u64) -> Result<(), ApiError> {
        self.cluster.remove_node(node).await.map_err(cluster_err)?;
        Ok(())
    }
}
