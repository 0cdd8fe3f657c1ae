//! What a cluster node asks of its local host: run a component the registry gives
//! it (creating its store, running `init` on its first activation), stop one it no
//! longer owns, and report on what runs here.

use super::*;
use std::collections::BTreeMap;

/// The sys writes that remove `name` (incarnation `incarnation`) from the messaging
/// state: its outbox, marks, counters and pending requests go, and so does every other
/// component's counter and mark about it (a component installed later under the name starts
/// fresh pairs). The durable messages it sent that were not consumed yet stay: each is
/// stored again as sent by its former incarnation ([`keys::former_sender`]), with the
/// receiver's mark for it, so it is still delivered exactly once, and a new incarnation's
/// messages are numbered apart from it.
pub fn removal_writes(
    storage: &Storage,
    name: &str,
    incarnation: u64,
) -> Result<airssys_cluster::RemovalPlan, StorageError> {
    let mut deletes = vec![keys::seq(name), keys::init_ran(name)];
    for prefix in [
        keys::outbox_for_receiver(name),
        keys::dedup_for_receiver(name),
        keys::pending_for(name),
        keys::pair_seqs_of(name),
        keys::idem_for(name),
        keys::idem_expiry_for(name),
    ] {
        deletes.extend(
            storage
                .sys_scan_prefix(&prefix)?
                .into_iter()
                .map(|(k, _)| k),
        );
    }
    let former = keys::former_sender(name, incarnation);
    let mut writes: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    // Receivers with a message from it still waiting keep their mark, under the new name.
    let mut waiting_at: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for (key, value) in storage.sys_scan_prefix(keys::OUTBOX)? {
        if keys::outbox_sender(&key) != Some(name.as_bytes()) {
            continue;
        }
        deletes.push(key.clone());
        let (Some(receiver), Ok(mut env)) = (keys::outbox_receiver(&key), Envelope::decode(&value))
        else {
            continue;
        };
        if receiver == name {
            continue; // sent to itself: gone with it
        }
        env.from = Address::Component(former.clone());
        writes.push((env.outbox_key(), Some(env.encode())));
        waiting_at.insert(receiver);
    }
    let suffix = [b"/".as_slice(), name.as_bytes()].concat();
    for prefix in [keys::PAIR_SEQ, keys::DEDUP] {
        for (key, value) in storage.sys_scan_prefix(prefix)? {
            if !key.ends_with(&suffix) {
                continue;
            }
            deletes.push(key.clone());
            if prefix == keys::DEDUP {
                let receiver = &key[keys::DEDUP.len()..key.len() - suffix.len()];
                let receiver = String::from_utf8_lossy(receiver).into_owned();
                if waiting_at.contains(&receiver) {
                    writes.push((keys::dedup(&receiver, &former), Some(value)));
                }
            }
        }
    }
    deletes.sort();
    deletes.dedup();
    let mut out: Vec<(Vec<u8>, Option<Vec<u8>>)> = deletes.into_iter().map(|k| (k, None)).collect();
    // The kept messages' new keys never clash with a delete (`~` is not in any name).
    out.extend(writes);
    Ok(airssys_cluster::RemovalPlan {
        writes: out,
        refence: waiting_at.into_iter().collect(),
    })
}

impl Host {
    /// Starts `record` here. `init` runs when this is the component's first
    /// activation anywhere (generation 1) and has not run here before.
    pub(crate) async fn activate(
        &self,
        record: ComponentRecord,
        binary: Vec<u8>,
    ) -> Result<(), ApiError> {
        if let Some(problem) = record.limits.problem() {
            // Checked at install; an entry that gets here anyway came from a peer that did
            // not check. It does not run (it is reported failed), and nothing else stops.
            let e = api_err(
                ErrorKind::InvalidComponent,
                format!("the registry's limits for it are out of range: {problem}"),
            );
            return Err(self.record_failure(record, e));
        }
        let name = record.name.clone();
        let generation = record.generation;
        let storage = &self.inner.storage;
        if !storage.has_component(&name) {
            storage.create_component(&name).map_err(storage_err)?;
        }
        let prepared = match self.prepare(binary, record.sha256.clone()).await {
            Ok(p) => p,
            Err(e) => return Err(self.record_failure(record, e)),
        };
        storage
            .set_generation(&name, record.node_id, record.generation)
            .map_err(storage_err)?;
        let shared = self.shared_for(&record, prepared).map_err(storage_err)?;
        let first = record.generation == record.incarnation
            && storage
                .sys_get(&keys::init_ran(&name))
                .map_err(storage_err)?
                .is_none();
        if first {
            let init = match ComponentActor::instantiate(shared.clone()).await {
                Ok(mut actor) => actor.run_init().await,
                Err(InstantiateError::Permanent(why)) => {
                    // It will never start with these limits: say so once, not "retry".
                    let e = api_err(ErrorKind::InvalidComponent, format!("cannot start: {why}"));
                    return Err(self.record_failure(record, e));
                }
                Err(InstantiateError::Transient(why)) => Err(RequestErr::Unavailable(why)),
            };
            if let Err(err) = init {
                let mut e = external::request_error_to_api(err);
                e.message = format!("init failed: {}", e.message);
                return Err(self.record_failure(record, e));
            }
            let mut marker = CommitBatch::sys_only(vec![(keys::init_ran(&name), Some(vec![1]))]);
            marker.fence = Some(Fence {
                component: name.clone(),
                node_id: record.node_id,
                generation: record.generation,
                commit: 0,
                sequence: 0,
                peers: Vec::new(),
            });
            if let Err(e) = self.committer().commit(marker).await {
                let e = api_err(ErrorKind::Unavailable, format!("init not recorded: {e}"));
                return Err(self.record_failure(record, e));
            }
        }
        let running = self.spawn(record, shared.clone());
        if let Ok(mut f) = self.inner.failed.lock() {
            f.remove(&name);
        }
        self.unmark_compiling(&name);
        self.inner
            .components
            .lock()
            .await
            .insert(name.clone(), running);
        self.inner.activations.send_modify(|n| *n += 1);
        // Messages stored for it while it was not running here, and the clocks of its
        // durable requests still waiting (it may have moved here with them).
        if *self.inner.recovered.borrow() {
            shared.restore_pending_requests().map_err(storage_err)?;
            for (_, value) in storage
                .sys_scan_prefix(&keys::outbox_for_receiver(&name))
                .map_err(storage_err)?
            {
                if let Ok(env) = Envelope::decode(&value) {
                    self.inner.router.deliver(env);
                }
            }
        }
        tracing::info!(component = %name, generation, "activated");
        Ok(())
    }

    fn record_failure(&self, record: ComponentRecord, e: ApiError) -> ApiError {
        tracing::error!(component = %record.name, "cannot activate: {e}");
        self.unmark_compiling(&record.name);
        if let Ok(mut f) = self.inner.failed.lock() {
            f.insert(record.name.clone(), (record, e.clone()));
        }
        self.inner.activations.send_modify(|n| *n += 1);
        e
    }

    /// Returns once generation `generation` of `name` (or a later one) has settled here:
    /// its activation failed, or its actor left `Starting` (running, restarting or failed). Waits on the activation and the actor's
    /// status rather than polling; the caller bounds the wait (the component may never
    /// come to this node).
    pub(crate) async fn settled(&self, name: &str, generation: u64) {
        let mut activations = self.inner.activations.subscribe();
        loop {
            let status = self
                .inner
                .components
                .lock()
                .await
                .get(name)
                .filter(|r| r.record.generation >= generation)
                .map(|r| r.handle.subscribe());
            if let Some(mut status) = status {
                let _ = status
                    .wait_for(|s| !matches!(s, airssys_actor::ActorStatus::Starting))
                    .await;
                return;
            }
            let failed = self
                .inner
                .failed
                .lock()
                .is_ok_and(|f| f.get(name).is_some_and(|(r, _)| r.generation >= generation));
            if failed {
                return;
            }
            if activations.changed().await.is_err() {
                return;
            }
        }
    }

    /// Stops a component here (it moved away or was removed). Its store stays.
    pub(crate) async fn deactivate(&self, name: &str) {
        if let Ok(mut f) = self.inner.failed.lock() {
            f.remove(name);
        }
        self.unmark_compiling(name);
        let running = self.inner.components.lock().await.remove(name);
        if let Some(r) = running {
            self.inner.router.unregister(name);
            r.stop().await;
            tracing::info!(component = %name, "deactivated");
        }
    }

    /// Makes sure a registered component has its (empty) store on this node.
    pub(crate) fn ensure_store(&self, name: &str) -> Result<(), ApiError> {
        let storage = &self.inner.storage;
        if !storage.has_component(name) {
            storage.create_component(name).map_err(storage_err)?;
        }
        Ok(())
    }

    /// Generation of every component running or failed here.
    pub(crate) async fn local_generations(&self) -> BTreeMap<String, u64> {
        let mut out: BTreeMap<String, u64> = self
            .inner
            .components
            .lock()
            .await
            .iter()
            .map(|(n, r)| (n.clone(), r.record.generation))
            .collect();
        if let Ok(f) = self.inner.failed.lock() {
            for (n, (r, _)) in f.iter() {
                out.insert(n.clone(), r.generation);
            }
        }
        for (name, _, generation) in self.compiling() {
            out.insert(name, generation);
        }
        out
    }

    /// Names of the components whose actors run here.
    pub(crate) async fn running_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.inner.components.lock().await.keys().cloned().collect();
        v.sort();
        v
    }

    /// Names of the component stores on this node.
    pub(crate) fn store_names(&self) -> Vec<String> {
        self.inner.storage.component_names()
    }

    /// What this node knows of a component it runs (or failed to start).
    pub(crate) async fn local_info(&self, name: &str) -> Option<ComponentInfo> {
        if let Some(r) = self.inner.components.lock().await.get(name) {
            return Some(self.info(r));
        }
        if let Some(info) = self.compiling_info(name) {
            return Some(info);
        }
        let f = self.inner.failed.lock().ok()?;
        let (r, e) = f.get(name)?;
        Some(ComponentInfo {
            name: r.name.clone(),
            sha256: r.sha256.clone(),
            size_bytes: r.size_bytes,
            limits: r.limits,
            node_id: r.node_id,
            generation: r.generation,
            state: ComponentState::Failed {
                reason: e.to_string(),
                error: Some(e.error),
            },
            mailbox_depth: 0,
            storage_bytes: self.inner.storage.usage_bytes(&r.name).unwrap_or(0),
            restarts: 0,
            installed_at_ms: r.installed_at_ms,
            log_lines_dropped: 0,
            upgraded_at_ms: None,
            previous: None,
        })
    }

    /// Every component this node runs or failed to start.
    pub(crate) async fn local_infos(&self) -> Vec<ComponentInfo> {
        let names: Vec<String> = self.local_generations().await.into_keys().collect();
        let mut out = Vec::new();
        for n in names {
            if let Some(i) = self.local_info(&n).await {
                out.push(i);
            }
        }
        out
    }

    /// Compiles (and so validates) a binary, as install does before anything is stored.
    pub(crate) async fn validate_binary(
        &self,
        binary: Vec<u8>,
        sha256: String,
    ) -> Result<(), ApiError> {
        self.prepare(binary, sha256).await.map(|_| ())
    }

    pub(crate) fn limits_for(&self, req: &crate::api::LimitsRequest) -> Result<Limits, ApiError> {
        self.resolve_limits(req)
    }

    pub(crate) fn node_id(&self) -> u64 {
        self.inner.config.node_id
    }

    pub(crate) fn uptime_ms(&self) -> u64 {
        self.inner.started.elapsed().as_millis() as u64
    }
}
