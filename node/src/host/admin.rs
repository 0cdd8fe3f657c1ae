//! The admin contract implemented by the host: install, list, describe, remove, send,
//! request, status, metrics, readiness.

use super::*;

pub(super) fn state_of(status: ActorStatus) -> ComponentState {
    match status {
        ActorStatus::Starting => ComponentState::Starting,
        ActorStatus::Running => ComponentState::Running,
        ActorStatus::Restarting {
            restarts,
            last_error,
        } => ComponentState::Restarting {
            restarts,
            last_error,
        },
        ActorStatus::Failed { reason } => ComponentState::Failed { reason },
        ActorStatus::Stopped => ComponentState::Stopped,
    }
}

pub(super) fn request_error_to_api(err: RequestErr) -> ApiError {
    let kind = match &err {
        RequestErr::NotFound => ErrorKind::NotFound,
        RequestErr::Timeout => ErrorKind::Timeout,
        RequestErr::MailboxFull => ErrorKind::MailboxFull,
        RequestErr::Rejected(_) => ErrorKind::Rejected,
        RequestErr::Trapped(_) => ErrorKind::Trapped,
        RequestErr::Unavailable(_) => ErrorKind::Unavailable,
    };
    let message = match err {
        RequestErr::NotFound => "no such component".to_string(),
        RequestErr::Timeout => "no reply within the request's timeout".to_string(),
        RequestErr::MailboxFull => "the component's mailbox is full".to_string(),
        RequestErr::Rejected(t) => format!("the handler returned an error: {t}"),
        RequestErr::Trapped(t) | RequestErr::Unavailable(t) => t,
    };
    api_err(kind, message)
}

impl AdminBackend for Host {
    async fn install(&self, req: InstallRequest) -> Result<ComponentInfo, ApiError> {
        let name = req.name;
        names::validate(&name).map_err(|m| api_err(ErrorKind::InvalidName, m))?;
        if req.binary.len() > MAX_BINARY_BYTES {
            return Err(api_err(
                ErrorKind::TooLarge,
                format!(
                    "the binary is {} bytes; the cap is {MAX_BINARY_BYTES}",
                    req.binary.len()
                ),
            ));
        }
        let limits = self.resolve_limits(&req.limits)?;
        let already_exists = || {
            api_err(
                ErrorKind::AlreadyExists,
                format!("a component named {name} is already installed; remove it first"),
            )
        };
        if self.inner.components.lock().await.contains_key(&name) {
            return Err(already_exists());
        }
        // Compile outside the lock: a large component takes seconds, and list,
        // describe and other installs must not wait for it.
        let sha256 = hex::encode(Sha256::digest(&req.binary));
        let size_bytes = req.binary.len() as u64;
        let prepared = self.prepare(req.binary.clone(), sha256.clone()).await?;

        let mut components = self.inner.components.lock().await;
        if components.contains_key(&name) {
            return Err(already_exists());
        }
        let binary_key = keys::binary(&sha256);
        let storage = &self.inner.storage;
        let binary_known = storage.sys_get(&binary_key).map_err(storage_err)?.is_some();

        // One node today: the scheduler's view holds just this node. The decision is
        // the same pure function the cluster's leader will run over every member.
        let view = [NodeLoad {
            node: self.inner.config.node_id,
            alive: true,
            actors: components.len() as u64,
        }];
        let node = choose_node(&view).unwrap_or(self.inner.config.node_id);
        let placement = Placement::initial(node);
        let record = ComponentRecord {
            name: name.clone(),
            sha256: sha256.clone(),
            size_bytes,
            limits,
            node_id: placement.node,
            generation: placement.generation,
            incarnation: placement.generation,
            installed_at_ms: now_ms(),
        };
        storage.create_component(&name).map_err(storage_err)?;
        storage
            .set_generation(&name, record.node_id, record.generation)
            .map_err(storage_err)?;
        let record_json =
            serde_json::to_vec(&record).map_err(|e| api_err(ErrorKind::Internal, e.to_string()))?;
        let mut sys = vec![(keys::registry(&name), Some(record_json))];
        if !binary_known {
            sys.push((binary_key, Some(req.binary)));
        }
        storage
            .commit_async(CommitBatch::sys_only(sys))
            .await
            .map_err(storage_err)?;

        let shared = self.shared_for(&record, prepared).map_err(storage_err)?;
        let init = match ComponentActor::instantiate(shared.clone()).await {
            Ok(mut actor) => actor.run_init().await,
            Err(e) => Err(RequestErr::Unavailable(e)),
        };
        if let Err(err) = init {
            // Leave nothing behind: the install did not happen.
            let others = components.values().any(|r| r.record.sha256 == sha256);
            let batch = self
                .removal_batch(&name, &sha256, others || binary_known)
                .map_err(storage_err)?;
            storage.commit_async(batch).await.map_err(storage_err)?;
            storage.drop_component(&name).map_err(storage_err)?;
            let mut e = request_error_to_api(err);
            e.message = format!("init failed, nothing was installed: {}", e.message);
            return Err(e);
        }
        let running = self.spawn(record, shared);
        let info = self.info(&running);
        components.insert(name.clone(), running);
        tracing::info!(component = %name, sha256 = %sha256, "installed");
        Ok(info)
    }

    async fn list(&self) -> Result<Vec<ComponentInfo>, ApiError> {
        let components = self.inner.components.lock().await;
        let mut list: Vec<ComponentInfo> = components.values().map(|r| self.info(r)).collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(list)
    }

    async fn describe(&self, name: &str) -> Result<ComponentInfo, ApiError> {
        let components = self.inner.components.lock().await;
        components
            .get(name)
            .map(|r| self.info(r))
            .ok_or_else(|| api_err(ErrorKind::NotFound, format!("no component named {name}")))
    }

    async fn remove(&self, name: &str) -> Result<(), ApiError> {
        let mut components = self.inner.components.lock().await;
        let running = components
            .remove(name)
            .ok_or_else(|| api_err(ErrorKind::NotFound, format!("no component named {name}")))?;
        self.inner.router.unregister(name);
        let sha = running.record.sha256.clone();
        running.stop().await;
        let others = components.values().any(|r| r.record.sha256 == sha);
        let batch = self
            .removal_batch(name, &sha, others)
            .map_err(storage_err)?;
        let storage = &self.inner.storage;
        storage.commit_async(batch).await.map_err(storage_err)?;
        storage.drop_component(name).map_err(storage_err)?;
        drop(components);
        self.forget_peer(name).await?;
        tracing::info!(component = %name, "removed");
        Ok(())
    }

    async fn send(&self, name: &str, payload: Vec<u8>, delivery: Delivery) -> Result<(), ApiError> {
        self.check_target(name, &payload)?;
        self.send_external(name, Body::Message { payload }, delivery)
            .await
    }

    async fn request(
        &self,
        name: &str,
        payload: Vec<u8>,
        timeout: Duration,
        delivery: Delivery,
    ) -> Result<Vec<u8>, ApiError> {
        self.check_target(name, &payload)?;
        let (id, answer) = self
            .inner
            .router
            .register_external(Instant::now() + timeout);
        let body = Body::Request {
            id,
            payload,
            deadline_ms: now_ms() + timeout.as_millis() as u64,
        };
        if let Err(e) = self.send_external(name, body, delivery).await {
            self.inner.router.answer(
                &Address::External,
                id,
                Err(RequestErr::Unavailable(e.message.clone())),
            );
            return Err(e);
        }
        match answer.await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(request_error_to_api(e)),
            Err(_) => Err(api_err(
                ErrorKind::Internal,
                "the request was dropped without an answer",
            )),
        }
    }

    async fn status(&self) -> Result<NodeStatus, ApiError> {
        Ok(NodeStatus {
            node_id: self.inner.config.node_id,
            admin_addr: self.inner.config.admin_addr.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            components: self.inner.components.lock().await.len() as u64,
            uptime_ms: self.inner.started.elapsed().as_millis() as u64,
        })
    }

    async fn metrics(&self) -> String {
        crate::metrics::render(self).await
    }

    async fn ready(&self) -> bool {
        *self.inner.recovered.borrow()
    }
}
