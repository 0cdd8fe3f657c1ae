//! What the local runtime answers for a component running here: an external client's
//! send or request (numbered and committed first when durable), and how a component's
//! state and a request's failure read to the admin API. The admin API itself, with its
//! validation and its routing to the owner, is the cluster host's ([`crate::cluster`]).

use super::*;
use crate::messaging::idempotency::{self, Judgement, RequestKey};

/// Longest an external message waits for its receiver's code switch to end.
const SWITCH_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

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
        ActorStatus::Failed { reason } => ComponentState::Failed {
            reason,
            error: None,
        },
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
        RequestErr::KeyReused(_) => ErrorKind::KeyReused,
    };
    let message = match err {
        RequestErr::NotFound => "no such component".to_string(),
        RequestErr::Timeout => "no reply within the request's timeout".to_string(),
        RequestErr::MailboxFull => "the component's mailbox is full".to_string(),
        RequestErr::Rejected(t) => format!("the handler returned an error: {t}"),
        RequestErr::Trapped(t) | RequestErr::Unavailable(t) | RequestErr::KeyReused(t) => t,
    };
    api_err(kind, message)
}

/// The answer for a keyed fast send: a fast message is never recorded, so a key would
/// promise what it cannot keep.
pub(crate) fn fast_send_with_key() -> ApiError {
    api_err(
        ErrorKind::BadRequest,
        "an idempotency key needs durable delivery: a fast message is not recorded",
    )
}

/// The answer for a component this node owns but does not run at the moment.
pub(crate) fn not_running_here(name: &str) -> ApiError {
    api_err(
        ErrorKind::Unavailable,
        format!("{name} is not running on its owner node (starting or moving); retry"),
    )
}

impl Host {
    /// Hands an external client's message to `name`, running here. A keyed one is
    /// durable and accepted once per key: a repeat of an accepted send is answered
    /// accepted again and queues nothing (see [`crate::messaging::idempotency`]).
    pub(crate) async fn send(
        &self,
        name: &str,
        payload: Vec<u8>,
        delivery: Delivery,
        key: Option<RequestKey>,
    ) -> Result<(), ApiError> {
        let Some(key) = key else {
            self.check_room(name)?;
            return self
                .send_external(name, Body::Message { payload }, delivery)
                .await;
        };
        if delivery == Delivery::Fast {
            return Err(fast_send_with_key());
        }
        let digest = idempotency::send_digest(&payload);
        // A repeat is answered before the mailbox's room is looked at: it queues nothing.
        if self.judge_send(name, &key, &digest).await? {
            return Ok(());
        }
        self.check_room(name)?;
        self.send_external_durable(name, Body::Message { payload }, Some((key, digest)))
            .await
    }

    /// An external client's request to `name`, running here: its reply or why not. A
    /// keyed one runs once per key (see [`crate::messaging::idempotency`]).
    pub(crate) async fn request(
        &self,
        name: &str,
        payload: Vec<u8>,
        timeout: Duration,
        delivery: Delivery,
        key: Option<RequestKey>,
    ) -> Result<Vec<u8>, ApiError> {
        self.check_room(name)?;
        let (id, answer) = self
            .inner
            .router
            .register_external(Instant::now() + timeout);
        let deadline_ms = now_ms() + timeout.as_millis() as u64;
        let body = match key {
            None => Body::Request {
                id,
                payload,
                deadline_ms,
            },
            Some(key) => Body::KeyedRequest {
                id,
                payload,
                deadline_ms,
                key,
            },
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

    /// Whether stored messages were handed to the components running here (nothing
    /// runs before: a new message must not overtake an older one).
    pub(crate) fn ready(&self) -> bool {
        *self.inner.recovered.borrow()
    }

    /// A message for `name` finds its mailbox here with room (its name, size and owner
    /// were checked at the door: a component without a mailbox here is starting or moving,
    /// whichever node asked).
    fn check_room(&self, name: &str) -> Result<(), ApiError> {
        match self.inner.router.mailbox_room(name) {
            None => Err(self
                .still_compiling(name)
                .unwrap_or_else(|| not_running_here(name))),
            Some(0) => Err(api_err(
                ErrorKind::MailboxFull,
                format!("the mailbox of {name} is full; try again later"),
            )),
            Some(_) => Ok(()),
        }
    }

    /// Sends a message or request from an admin client: a durable one is committed to
    /// the outbox first; a fast one is handed over at once.
    async fn send_external(
        &self,
        to: &str,
        body: Body,
        delivery: Delivery,
    ) -> Result<(), ApiError> {
        match delivery {
            Delivery::Durable => self.send_external_durable(to, body, None).await,
            Delivery::Fast => {
                self.inner.router.deliver(Envelope {
                    from: Address::External,
                    from_incarnation: 0,
                    to: to.to_string(),
                    delivery,
                    seq: 0,
                    origin: 0,
                    trace: crate::telemetry::current_traceparent(),
                    body,
                });
                Ok(())
            }
        }
    }

    /// Commits an external durable message to the outbox, then delivers it. The commit is
    /// fenced with the receiver's placement: only its owner numbers messages to it. A commit
    /// refused because the component switched code in place meanwhile (an upgrade or import:
    /// same node, next generation) applied nothing and is numbered again at the new one.
    /// A keyed send's record goes in the same commit, so it exists exactly when the message
    /// was queued.
    async fn send_external_durable(
        &self,
        to: &str,
        body: Body,
        keyed: Option<(RequestKey, [u8; 32])>,
    ) -> Result<(), ApiError> {
        let _serial = self.inner.external_send.lock().await;
        let mut attempt = 0;
        loop {
            if let Some((key, digest)) = &keyed {
                // Again under the lock: an attempt that raced this one may have committed.
                if self.judge_send(to, key, digest).await? {
                    return Ok(());
                }
            }
            let (fence, env, mut batch) = self.numbered_external(to, body.clone()).await?;
            if let Some((key, digest)) = &keyed {
                batch.sys.extend(self.send_record(to, key, digest).await);
            }
            match self.committer().commit(batch).await {
                Ok(()) => {
                    self.inner.router.deliver(env);
                    return Ok(());
                }
                Err(CommitError::Fenced(m)) => {
                    attempt += 1;
                    if attempt < 3 && self.switched_in_place(to, &fence).await {
                        continue;
                    }
                    return Err(api_err(
                        ErrorKind::Unavailable,
                        format!("{to} is moving to another node; retry ({m})"),
                    ));
                }
                Err(CommitError::Failed(m)) => {
                    return Err(api_err(
                        ErrorKind::Unavailable,
                        format!("the message was not committed; it may be retried ({m})"),
                    ))
                }
            }
        }
    }

    /// Whether a keyed send to `to` was accepted before (true: answer it accepted again),
    /// or may go ahead (false); `key-reused` when the key was used for something else.
    async fn judge_send(
        &self,
        to: &str,
        key: &RequestKey,
        digest: &[u8; 32],
    ) -> Result<bool, ApiError> {
        let shared = {
            let components = self.inner.components.lock().await;
            components
                .get(to)
                .map(|r| r.shared.clone())
                .ok_or_else(|| {
                    self.still_compiling(to)
                        .unwrap_or_else(|| not_running_here(to))
                })?
        };
        let found = shared
            .recent_keys
            .lookup(&self.inner.storage, to, &key.key)
            .map_err(storage_err)?;
        match idempotency::judge(found.as_ref(), digest, now_ms()) {
            Judgement::Run => Ok(false),
            Judgement::Repeat(_) => Ok(true),
            Judgement::Reused => Err(request_error_to_api(idempotency::reused(&key.key))),
        }
    }

    /// The writes that record a keyed send's acceptance (and prune expired records).
    async fn send_record(
        &self,
        to: &str,
        key: &RequestKey,
        digest: &[u8; 32],
    ) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let now = now_ms();
        let expired = {
            let components = self.inner.components.lock().await;
            components
                .get(to)
                .map(|r| r.shared.recent_keys.expired(&self.inner.storage, to, now))
                .unwrap_or_default()
        };
        let record = idempotency::Record {
            digest: *digest,
            outcome: idempotency::SENT,
            expires_ms: now.saturating_add(key.retention_ms()),
        };
        idempotency::record_writes(to, &key.key, &record, &expired)
    }

    /// Whether `to` still runs here after switching its code in place since `fence` was
    /// taken (waiting for a switch under way to end).
    async fn switched_in_place(&self, to: &str, fence: &Fence) -> bool {
        let started = tokio::time::Instant::now();
        while self.upgrading().contains(to) && started.elapsed() < SWITCH_WAIT {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        self.inner.components.lock().await.get(to).is_some_and(|r| {
            r.record.node_id == fence.node_id && r.shared.generation() > fence.generation
        })
    }

    /// The next external message to `to`: its fence (the receiver's placement, numbered),
    /// the envelope and the commit that puts it in the outbox.
    async fn numbered_external(
        &self,
        to: &str,
        body: Body,
    ) -> Result<(Fence, Envelope, CommitBatch), ApiError> {
        let fence = {
            let components = self.inner.components.lock().await;
            let running = components.get(to).ok_or_else(|| {
                api_err(
                    ErrorKind::Unavailable,
                    format!("{to} is not running on this node; retry"),
                )
            })?;
            Fence {
                component: to.to_string(),
                node_id: running.record.node_id,
                generation: running.shared.generation(),
                commit: 0,
                sequence: 0, // numbered below
                peers: Vec::new(),
            }
        };
        let external = Address::External;
        let counter = keys::pair_seq(external.key_segment(), to);
        let next = self
            .inner
            .storage
            .sys_get(&counter)
            .map_err(storage_err)?
            .and_then(|v| keys::decode_u64(&v))
            .unwrap_or(0)
            + 1;
        let env = Envelope {
            from: external.clone(),
            from_incarnation: 0,
            to: to.to_string(),
            delivery: Delivery::Durable,
            seq: next,
            origin: 0,
            trace: crate::telemetry::current_traceparent(),
            body,
        };
        let mut batch = CommitBatch::sys_only(vec![
            (
                keys::outbox(to, external.key_segment(), next),
                Some(env.encode()),
            ),
            (counter, Some(keys::encode_u64(next))),
        ]);
        // Numbered in the fence too: the replicated log refuses it unless it is the next
        // one, so a number read before an earlier send of unknown outcome applied is never
        // applied twice (a 202 dropped as a duplicate).
        let fence = Fence {
            sequence: next,
            ..fence
        };
        batch.fence = Some(fence.clone());
        Ok((fence, env, batch))
    }
}
