//! The component actor: one wasmtime instance, one message at a time, each handler a
//! transaction.
//!
//! A handler's storage writes, its durable messages, the consumption of the durable
//! message it handled and its durable reply go into one `CommitBatch`, handed to the
//! component's commit pipeline; the actor goes on with its next message meanwhile.
//! Nothing leaves before that batch is durable; a handler that neither writes nor touches
//! anything durable needs no commit and, when nothing is waiting in the pipeline, releases
//! its fast messages at once. A failed handler (error, trap, deadline, out of memory, out
//! of fuel) applies nothing: only the consumption of its input and the error answer to its
//! requester are committed, so every request gets exactly one answer and no durable
//! message is handled twice.

use super::host_state::{CallContext, HostState};
use super::pipeline::{Release, Tentative};
use super::shared::{Arrival, ComponentShared};
use super::transaction::{
    consumption, duplicate_cleared, transaction, Handled, Incoming, Me, Now, Seqs,
};
use super::upgrade::{Code, UpgradeOrder};
use crate::api::Delivery;
use crate::clock::now_ms;
use crate::commit::CommitError;
use crate::engine::bindings::{types, Component_};
use crate::messaging::idempotency::{self, Judgement, RequestKey, ToRecord};
use crate::messaging::{keys, Address, Body, Envelope, Mail, RequestErr};
use airssys_actor::{Actor, ActorFactory, Crash, Rejection};
use airssys_storage::CommitBatch;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::{Store, Trap, UpdateDeadline};

pub struct ComponentActor {
    shared: Arc<ComponentShared>,
    /// The code this instance runs (the component's, unless this is an upgrade's new
    /// instance, not switched to yet).
    code: Arc<Code>,
    store: Store<HostState>,
    instance: Component_,
    /// The same instance, untyped: for the exports not every component has (`migrate`).
    raw: wasmtime::component::Instance,
}

/// How a handler call ended.
enum Outcome {
    /// Returned ok; the reply (for requests).
    Ok(Option<Vec<u8>>),
    /// Returned an error: rolled back; the instance is replaced (its memory may hold
    /// state that no longer matches storage) but this is not a crash.
    Rejected(String),
    /// Trapped, deadline, out of memory or fuel: rolled back, counts as a crash.
    Trapped(String),
}

/// Why an instance could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstantiateError {
    /// The component as built does not fit its limits (memory at start, a start function
    /// past its deadline or trapping): it fails the same way every time.
    #[error("{0}")]
    Permanent(String),
    /// It may work later (a resource of the node's ran short).
    #[error("{0}")]
    Transient(String),
}

impl ComponentActor {
    /// A fresh instance of the component.
    pub async fn instantiate(
        shared: Arc<ComponentShared>,
    ) -> Result<ComponentActor, InstantiateError> {
        let code = shared.code();
        Self::instantiate_with(shared, code).await
    }

    /// A fresh instance of `code` for the component (its own, or the new code of an
    /// upgrade).
    pub async fn instantiate_with(
        shared: Arc<ComponentShared>,
        code: Arc<Code>,
    ) -> Result<ComponentActor, InstantiateError> {
        let engine = code.prepared.pre.engine().clone();
        let mut store = Store::new(&engine, HostState::new(shared.clone(), &code.limits));
        store.limiter(|s| &mut s.memory);
        store.epoch_deadline_callback(|ctx| {
            let data = ctx.data();
            let deadline = data
                .call
                .as_ref()
                .map(|c| c.deadline)
                .or(data.instantiating_until);
            let expired = deadline.is_some_and(|d| Instant::now() >= d);
            // Yield at every tick so a long handler does not hold a runtime thread;
            // interrupt once the handler's deadline has passed.
            Ok(if expired {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        store.set_epoch_deadline(1);
        // Instantiating runs guest code too (a core module's start function): it gets the
        // handler's deadline and fuel, so a start function that never returns is stopped.
        let deadline_ms = code.limits.deadline_ms.min(crate::config::MAX_DEADLINE_MS);
        store.data_mut().instantiating_until =
            Some(Instant::now() + Duration::from_millis(deadline_ms));
        store
            .set_fuel(code.limits.fuel.unwrap_or(u64::MAX))
            .map_err(|e| InstantiateError::Transient(format!("cannot set fuel: {e}")))?;
        let raw = match code
            .prepared
            .pre
            .instance_pre()
            .instantiate_async(&mut store)
            .await
        {
            Ok(instance) => instance,
            Err(e) => {
                let memory = &store.data().memory;
                let limit_mb = code.limits.memory_mb;
                return Err(if memory.hit {
                    let needs_mb = memory.wanted_bytes.div_ceil(1 << 20);
                    InstantiateError::Permanent(format!(
                        "the component needs {needs_mb} MiB of memory to start; its memory_mb limit is {limit_mb} MiB"
                    ))
                } else {
                    match e.downcast_ref::<Trap>() {
                        Some(Trap::Interrupt) => InstantiateError::Permanent(format!(
                            "instantiation ran past the {deadline_ms} ms deadline (a start function that does not return)"
                        )),
                        Some(Trap::OutOfFuel) => InstantiateError::Permanent(
                            "instantiation ran out of fuel".to_string(),
                        ),
                        // A start function that traps traps every time.
                        Some(trap) => InstantiateError::Permanent(format!(
                            "instantiation trapped: {trap}"
                        )),
                        None => InstantiateError::Transient(format!(
                            "instantiation failed: {e:#}"
                        )),
                    }
                });
            }
        };
        store.data_mut().instantiating_until = None;
        let instance = Component_::new(&mut store, &raw)
            .map_err(|e| InstantiateError::Permanent(format!("wrong exports: {e:#}")))?;
        Ok(ComponentActor {
            shared,
            code,
            store,
            instance,
            raw,
        })
    }

    pub(super) fn shared(&self) -> &Arc<ComponentShared> {
        &self.shared
    }

    pub(super) fn code(&self) -> &Arc<Code> {
        &self.code
    }

    /// Runs the code's `migrate` (when it has one) as a transaction: its storage writes,
    /// or why it failed. It may not send messages.
    pub(super) async fn run_migrate(
        &mut self,
        previous: &crate::engine::bindings::lifecycle::PreviousVersion,
    ) -> Result<Option<airssys_storage::ComponentWrites>, crate::api::ApiError> {
        use crate::api::{ApiError, ErrorKind};
        let Some(indices) = self.code.prepared.migrate.clone() else {
            return Ok(None);
        };
        let lifecycle = indices
            .load(&mut self.store, &self.raw)
            .map_err(|e| ApiError::new(ErrorKind::InvalidComponent, format!("{e:#}")))?;
        self.begin_call()
            .map_err(|e| ApiError::new(ErrorKind::Unavailable, e))?;
        let result = lifecycle
            .call_migrate(&mut self.store, previous)
            .await
            .map(|r| r.map(|()| None));
        let outcome = self.classify(result);
        let call = self.end_call();
        match outcome {
            Outcome::Ok(_) => {
                let Some(call) = call else {
                    return Err(ApiError::new(
                        ErrorKind::Internal,
                        "migration finished without a call context",
                    ));
                };
                if !call.outgoing.is_empty() {
                    return Err(ApiError::new(
                        ErrorKind::Rejected,
                        format!(
                            "it sent {} message(s); a migration may only read and write storage",
                            call.outgoing.len()
                        ),
                    ));
                }
                Ok(call.txn.filter(|t| !t.is_empty()).map(|t| t.into_writes()))
            }
            Outcome::Rejected(text) => Err(ApiError::new(ErrorKind::Rejected, text)),
            Outcome::Trapped(text) => Err(ApiError::new(ErrorKind::Trapped, text)),
        }
    }

    /// Runs the component's `init` as a transaction (at install).
    pub async fn run_init(&mut self) -> Result<(), RequestErr> {
        self.begin_call().map_err(RequestErr::Unavailable)?;
        let result = self
            .instance
            .airssys_component_guest()
            .call_init(&mut self.store)
            .await;
        let outcome = self.classify(result.map(|r| r.map(|()| None)));
        let incoming = Incoming::init();
        match outcome {
            Outcome::Ok(_) => {
                let call = self.end_call();
                let (done, durable) = tokio::sync::oneshot::channel();
                self.succeed(incoming, call, None, Some(done))
                    .await
                    .map_err(|c| {
                        RequestErr::Unavailable(format!("init commit failed: {}", c.reason()))
                    })?;
                match durable.await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(RequestErr::Unavailable(format!("init commit failed: {e}"))),
                    Err(_) => Err(RequestErr::Unavailable(
                        "init commit failed: the commit task stopped".into(),
                    )),
                }
            }
            Outcome::Rejected(text) => {
                self.end_call();
                Err(RequestErr::Rejected(text))
            }
            Outcome::Trapped(text) => {
                self.end_call();
                Err(RequestErr::Trapped(text))
            }
        }
    }

    fn begin_call(&mut self) -> Result<(), String> {
        let limits = &self.code.limits;
        // Capped again here: an entry from a peer may carry any number (see `Limits::problem`).
        let deadline_ms = limits.deadline_ms.min(crate::config::MAX_DEADLINE_MS);
        let deadline = Instant::now() + Duration::from_millis(deadline_ms);
        let fuel = limits.fuel.unwrap_or(u64::MAX);
        let seq_at_start = self.shared.last_seq();
        let data = self.store.data_mut();
        data.memory.hit = false;
        if let Ok(mut last) = data.last_stderr.lock() {
            last.clear();
        }
        data.call = Some(CallContext {
            txn: None,
            outgoing: Vec::new(),
            outgoing_bytes: 0,
            deadline,
            seq_at_start,
        });
        self.store
            .set_fuel(fuel)
            .map_err(|e| format!("cannot set fuel: {e}"))?;
        self.store.set_epoch_deadline(1);
        Ok(())
    }

    fn end_call(&mut self) -> Option<CallContext> {
        self.store.data_mut().call.take()
    }

    /// Turns the raw call result into an outcome with a message a user can act on.
    fn classify(&mut self, result: wasmtime::Result<Result<Option<Vec<u8>>, String>>) -> Outcome {
        match result {
            // A reply travels like a message: the same cap, and nothing of the handler kept.
            Ok(Ok(Some(reply))) if reply.len() > crate::caps::MAX_PAYLOAD_BYTES => {
                Outcome::Rejected(format!(
                    "too-large: the reply is {} bytes; the cap is {}",
                    reply.len(),
                    crate::caps::MAX_PAYLOAD_BYTES
                ))
            }
            Ok(Ok(reply)) => Outcome::Ok(reply),
            Ok(Err(text)) => Outcome::Rejected(text),
            Err(err) => {
                let limits = &self.code.limits;
                let why = if self.store.data().memory.hit {
                    format!(
                        "out of memory: the {} MiB memory cap was reached",
                        limits.memory_mb
                    )
                } else {
                    match err.downcast_ref::<Trap>() {
                        Some(Trap::Interrupt) => {
                            format!(
                                "deadline exceeded: the handler ran past {} ms",
                                limits.deadline_ms
                            )
                        }
                        Some(Trap::OutOfFuel) => format!(
                            "out of fuel: the handler used more than {} units",
                            limits.fuel.unwrap_or(u64::MAX)
                        ),
                        Some(Trap::StackOverflow) => format!(
                            "stack overflow: the handler went past the {} KiB call stack limit (deep recursion)",
                            crate::engine::MAX_WASM_STACK_BYTES >> 10
                        ),
                        Some(trap) => trap.to_string(),
                        None => first_line(&format!("{err:#}")).to_string(),
                    }
                };
                // The component's last words on stderr (a Rust panic message) say
                // more than the trap code.
                let said = crate::engine::log_pipe::take_last_words(&self.store.data().last_stderr);
                match said {
                    Some(said) => Outcome::Trapped(format!("{why} ({said})")),
                    None => Outcome::Trapped(why),
                }
            }
        }
    }

    /// Hands a successful handler's transaction to the pipeline, with what it produced
    /// (released once it is committed). `done` hears when it is durable.
    async fn succeed(
        &mut self,
        incoming: Incoming,
        call: Option<CallContext>,
        reply: Option<Vec<u8>>,
        done: Option<tokio::sync::oneshot::Sender<Result<(), CommitError>>>,
    ) -> Result<(), Crash> {
        let Some(call) = call else {
            return Err(Crash::new("handler finished without a call context"));
        };
        let handled = Handled {
            writes: call.txn.filter(|t| !t.is_empty()).map(|t| {
                let usage = t.usage_bytes();
                (t.into_writes(), usage)
            }),
            outgoing: call.outgoing,
            answer: Ok(reply.unwrap_or_default()),
        };
        let seqs = Seqs {
            at_start: call.seq_at_start,
            now: self.shared.last_seq(),
        };
        self.commit(incoming, handled, seqs, done).await;
        Ok(())
    }

    /// Commits what a failed handler must still leave behind (its input consumed, the
    /// error answer to its requester) and sends that answer.
    async fn fail(&mut self, incoming: Incoming, err: RequestErr) {
        let seqs = Seqs::unchanged(self.shared.last_seq());
        self.commit(incoming, Handled::failed(err), seqs, None)
            .await;
    }

    /// Makes the handler's transaction from what it did (the pure part, in
    /// `transaction.rs`) and hands it to the pipeline.
    async fn commit(
        &mut self,
        incoming: Incoming,
        handled: Handled,
        seqs: Seqs,
        done: Option<tokio::sync::oneshot::Sender<Result<(), CommitError>>>,
    ) {
        let shared = self.shared.clone();
        let me = self.me();
        let ends_former = self.ends_former_sender(&incoming);
        let now = Now {
            ms: now_ms(),
            instant: Instant::now(),
            traceparent: crate::telemetry::current_traceparent(),
        };
        let t = transaction(
            &me,
            &incoming,
            ends_former,
            handled,
            seqs,
            shared.as_ref(),
            &now,
        );
        let peers = shared.adopt_pair_numbering(t.numbering);
        if let Some((key, record)) = t.recorded {
            shared.recent_keys.remember(key, record);
        }
        Self::submit(
            shared.clone(),
            t.batch,
            peers,
            t.usage_after,
            &incoming,
            t.release,
            done,
        )
        .await;
    }

    /// A keyed request: `Ok` to run it (with what to record), or `Err` with the answer
    /// its key already has (a repeat's, or `key-reused`).
    fn judge_key(
        &self,
        key: &RequestKey,
        payload: &[u8],
    ) -> Result<ToRecord, Result<Vec<u8>, RequestErr>> {
        let shared = &self.shared;
        let digest = idempotency::digest(payload);
        let now = now_ms();
        let found = shared
            .recent_keys
            .lookup(&shared.storage, &shared.name, &key.key)
            .map_err(|e| {
                Err(RequestErr::Unavailable(format!(
                    "cannot read the idempotency record: {e}"
                )))
            })?;
        match idempotency::judge(found.as_ref(), &digest, now) {
            Judgement::Run => Ok(ToRecord {
                key: key.clone(),
                digest,
                at_ms: now,
                expired: shared
                    .recent_keys
                    .expired(&shared.storage, &shared.name, now),
            }),
            Judgement::Repeat(outcome) => {
                tracing::debug!(component = %shared.name, key = %key.key, "repeat of a keyed request answered from its record");
                Err(outcome)
            }
            Judgement::Reused => Err(Err(idempotency::reused(&key.key))),
        }
    }

    fn me(&self) -> Me<'_> {
        Me {
            name: &self.shared.name,
            incarnation: self.shared.incarnation,
        }
    }

    /// True when the input is a durable message from a removed sender's former name and
    /// nothing it sent after it waits in storage: it can send nothing more, so its mark is
    /// no longer needed.
    fn ends_former_sender(&self, incoming: &Incoming) -> bool {
        let sender = incoming.from.key_segment();
        if incoming.delivery != Delivery::Durable || keys::is_live_name(sender) {
            return false;
        }
        let prefix = keys::outbox_pair(&self.shared.name, sender);
        match self.shared.storage.sys_scan_prefix(&prefix) {
            Ok(waiting) => waiting
                .iter()
                .all(|(key, _)| keys::outbox_seq(key).is_some_and(|s| s <= incoming.seq)),
            // Unsure: keep the mark.
            Err(_) => false,
        }
    }

    /// Hands a transaction and its effects to the component's pipeline. A transaction
    /// with nothing to commit, when nothing waits before it, releases its effects at once.
    #[allow(clippy::too_many_arguments)] // the parts of one transaction, each distinct
    async fn submit(
        shared: Arc<ComponentShared>,
        batch: CommitBatch,
        peers: Vec<(String, u64)>,
        usage_after: Option<u64>,
        incoming: &Incoming,
        release: Release,
        done: Option<tokio::sync::oneshot::Sender<Result<(), CommitError>>>,
    ) {
        if batch.is_empty() && shared.pipeline.waiting() == 0 {
            // Nothing commits, so nothing but the owner lease says this node still owns
            // the component: without it, the answer waits for it or is refused.
            if shared.committer.reads_confirmed() {
                release.send(&shared.name, &shared.router);
            } else {
                let confirm = shared.committer.confirm_reads(READ_CONFIRM_WAIT);
                let shared = shared.clone();
                tokio::spawn(async move {
                    if confirm.await {
                        release.send(&shared.name, &shared.router);
                    } else {
                        tracing::info!(component = %shared.name, "a read was not answered: no owner lease");
                        release
                            .refused(&format!(
                                "this node cannot confirm with the cluster that it still runs {}; retry",
                                shared.name
                            ))
                            .send(&shared.name, &shared.router);
                    }
                });
            }
            if let Some(done) = done {
                let _ = done.send(Ok(()));
            }
            return;
        }
        if incoming.delivery == Delivery::Durable {
            // Tentative: the next message from this sender is judged against it. A failed
            // commit reloads the marks.
            shared.mark_consumed(
                incoming.from.key_segment(),
                incoming.from_incarnation,
                incoming.seq,
            );
        }
        let item = Tentative {
            batch,
            peers,
            usage_after,
            release,
            requester: waiting_requester(&incoming.from, incoming.delivery, incoming.request_id),
            done,
        };
        shared.pipeline.submit(item).await;
    }

    /// A transaction of messaging bookkeeping only (a consumption), with nothing to release.
    async fn submit_bookkeeping(
        shared: Arc<ComponentShared>,
        batch: CommitBatch,
        incoming: &Incoming,
    ) {
        Self::submit(
            shared,
            batch,
            Vec::new(),
            None,
            incoming,
            Release::default(),
            None,
        )
        .await;
    }

    /// Before a handler: when a commit failed, the transactions behind it were dropped;
    /// start again from what is committed (a fresh instance: this one's memory may hold
    /// their effects), or stop if the component moved on.
    async fn recover_from_failed_commit(
        &mut self,
        incoming: &Incoming,
        id: Option<u64>,
    ) -> Result<(), Crash> {
        let Some(failure) = self.shared.pipeline.failure_now() else {
            return Ok(());
        };
        if failure.fenced {
            // A waiting requester learns now; a durable input stays in its outbox for the
            // new owner.
            if let Some((from, id)) = waiting_requester(&incoming.from, incoming.delivery, id) {
                self.shared.router.answer(
                    &from,
                    id,
                    Err(RequestErr::Unavailable(failure.why.clone())),
                );
            }
            return Err(Crash::new(failure.why));
        }
        self.shared.reset_after_failure().map_err(Crash::new)?;
        self.reinstantiate().await
    }

    /// A fresh instance of the component's code in place of this one.
    pub(super) async fn reinstantiate_now(&mut self) -> Result<(), Crash> {
        self.reinstantiate().await
    }

    async fn reinstantiate(&mut self) -> Result<(), Crash> {
        let fresh = ComponentActor::instantiate(self.shared.clone())
            .await
            .map_err(|e| Crash::new(e.to_string()))?;
        *self = fresh;
        Ok(())
    }
}

/// How long an answer without a commit waits for the owner lease before it is refused.
const READ_CONFIRM_WAIT: Duration = Duration::from_secs(1);

/// The requester that must hear `unavailable` if the commit fails: one whose request is
/// not kept in an outbox (a fast request, or an external client's).
fn waiting_requester(
    from: &Address,
    delivery: Delivery,
    request_id: Option<u64>,
) -> Option<(Address, u64)> {
    let id = request_id?;
    (delivery == Delivery::Fast || *from == Address::External).then(|| (from.clone(), id))
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

fn wit_sender(from: &Address) -> types::Sender {
    match from {
        Address::Component(name) => types::Sender::Component(name.clone()),
        Address::External => types::Sender::External,
    }
}

fn wit_request_error(err: RequestErr) -> types::RequestError {
    match err {
        RequestErr::NotFound => types::RequestError::NotFound,
        RequestErr::Timeout => types::RequestError::Timeout,
        RequestErr::MailboxFull => types::RequestError::MailboxFull,
        RequestErr::Rejected(t) => types::RequestError::Rejected(t),
        RequestErr::Trapped(t) => types::RequestError::Trapped(t),
        RequestErr::Unavailable(t) => types::RequestError::Unavailable(t),
        // Only external clients' requests carry keys; never seen by a component.
        RequestErr::KeyReused(t) => types::RequestError::Rejected(t),
    }
}

impl Actor for ComponentActor {
    type Msg = Mail;

    async fn handle(&mut self, mail: Mail) -> Result<(), Crash> {
        match mail {
            Mail::Envelope(env) => self.handle_one(env).await,
            Mail::Host(order) => match order.downcast::<UpgradeOrder>() {
                Ok(order) => self.switch_code(*order).await,
                Err(_) => {
                    tracing::error!(component = %self.shared.name, "unknown host order ignored");
                    Ok(())
                }
            },
        }
    }
}

impl ComponentActor {
    async fn handle_one(&mut self, env: Envelope) -> Result<(), Crash> {
        use tracing::Instrument;
        let started = std::time::Instant::now();
        // One span per hop, the child of the sender's span (from the envelope).
        let span = tracing::info_span!(
            "airssys.handle",
            component = %self.shared.name,
            from = %env.from.key_segment(),
            delivery = ?env.delivery,
            node = self.shared.node_id,
        );
        crate::telemetry::adopt(&span, &env.trace);
        let result = self.handle_envelope(env).instrument(span).await;
        self.shared
            .router
            .metrics
            .handler_latency
            .observe(started.elapsed());
        result
    }
}

impl ComponentActor {
    async fn handle_envelope(&mut self, env: Envelope) -> Result<(), Crash> {
        self.shared.router.taken(&env);
        let Envelope {
            from,
            from_incarnation,
            delivery,
            seq,
            body,
            ..
        } = env;
        let mut incoming = Incoming {
            from,
            from_incarnation,
            delivery,
            seq,
            request_id: None,
            callback_id: None,
            keyed: None,
        };
        self.recover_from_failed_commit(&incoming, body.request_id())
            .await?;
        if delivery == Delivery::Durable {
            match self
                .shared
                .arrival(incoming.from.key_segment(), from_incarnation, seq)
            {
                Arrival::Next => {}
                Arrival::Stale => {
                    tracing::info!(
                        component = %self.shared.name,
                        from = %incoming.from.key_segment(),
                        from_incarnation,
                        seq,
                        "durable message from a removed incarnation of its sender; ignored"
                    );
                    return Ok(());
                }
                Arrival::Duplicate => {
                    // Handled before (a replay or a resend): only clear the leftover
                    // entry (on every node). The de-dup mark
                    // stays where it is: writing this older seq would move it back.
                    let batch = duplicate_cleared(&self.me(), &incoming);
                    Self::submit_bookkeeping(self.shared.clone(), batch, &incoming).await;
                    return Ok(());
                }
                Arrival::Early => {
                    // An earlier message on this pair is still on its way (lost with a
                    // broken stream): this one waits in its sender's outbox and comes
                    // again after it.
                    tracing::info!(
                        component = %self.shared.name,
                        from = %incoming.from.key_segment(),
                        seq,
                        "durable message ahead of a missing one; left for a resend"
                    );
                    return Ok(());
                }
            }
        }

        if let Body::KeyedRequest {
            id, payload, key, ..
        } = &body
        {
            incoming.request_id = Some(*id);
            match self.judge_key(key, payload) {
                Ok(to) => incoming.keyed = Some(to),
                Err(outcome) => {
                    // Answered from its record (or refused): the handler does not run.
                    let seqs = Seqs::unchanged(self.shared.last_seq());
                    let handled = Handled {
                        writes: None,
                        outgoing: Vec::new(),
                        answer: outcome,
                    };
                    self.commit(incoming, handled, seqs, None).await;
                    return Ok(());
                }
            }
        }
        if let Err(why) = self.begin_call() {
            if let Some(id) = body.request_id() {
                incoming.request_id = Some(id);
            }
            self.fail(incoming, RequestErr::Unavailable(why.clone()))
                .await;
            return Err(Crash::new(why));
        }
        let guest = self.instance.airssys_component_guest();
        let result = match body {
            Body::Message { payload } => {
                let msg = types::Message {
                    sender: wit_sender(&incoming.from),
                    payload,
                    is_request: false,
                };
                guest.call_handle_message(&mut self.store, &msg).await
            }
            Body::Request { id, payload, .. } | Body::KeyedRequest { id, payload, .. } => {
                incoming.request_id = Some(id);
                let msg = types::Message {
                    sender: wit_sender(&incoming.from),
                    payload,
                    is_request: true,
                };
                guest.call_handle_message(&mut self.store, &msg).await
            }
            Body::Reply { id, .. }
                if delivery == Delivery::Durable
                    && !self
                        .shared
                        .router
                        .complete_request(&Address::Component(self.shared.name.clone()), id) =>
            {
                // Late (the request timed out and its callback ran): consumed, not handled.
                self.end_call();
                incoming.callback_id = Some(id);
                let ends_former = self.ends_former_sender(&incoming);
                let batch = consumption(&self.me(), &incoming, ends_former);
                Self::submit_bookkeeping(self.shared.clone(), batch, &incoming).await;
                return Ok(());
            }
            Body::Reply { id, outcome } => {
                incoming.callback_id = Some(id);
                let outcome = outcome.map_err(wit_request_error);
                guest
                    .call_handle_callback(&mut self.store, id, outcome.as_ref())
                    .await
                    .map(|r| r.map(|()| None))
            }
        };
        let outcome = self.classify(result);
        let call = self.end_call();
        match outcome {
            Outcome::Ok(reply) => self.succeed(incoming, call, reply, None).await,
            Outcome::Rejected(text) => {
                drop(call);
                self.fail(incoming, RequestErr::Rejected(text)).await;
                self.reinstantiate().await
            }
            Outcome::Trapped(why) => {
                drop(call);
                self.shared.restarts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(component = %self.shared.name, "handler failed: {why}");
                self.fail(incoming, RequestErr::Trapped(why.clone())).await;
                Err(Crash::new(why))
            }
        }
    }
}

/// Makes the component's instances for the supervisor, and answers the messages it
/// will never run.
pub struct ComponentFactory {
    pub shared: Arc<ComponentShared>,
}

impl ActorFactory for ComponentFactory {
    type Actor = ComponentActor;

    async fn create(&mut self) -> Result<ComponentActor, Crash> {
        if self.shared.fenced.load(Ordering::Relaxed) {
            return Err(Crash::new(format!(
                "{} moved to another node; not restarted here",
                self.shared.name
            )));
        }
        if let Some(failure) = self.shared.pipeline.failure_now() {
            // A commit failed and dropped what waited behind it: the new instance starts
            // from what is committed.
            tracing::info!(component = %self.shared.name, "restarting after a failed commit: {}", failure.why);
            self.shared.reset_after_failure().map_err(Crash::new)?;
        }
        ComponentActor::instantiate(self.shared.clone())
            .await
            .map_err(|e| Crash::new(e.to_string()))
    }

    fn reject(&mut self, mail: Mail, why: &Rejection) {
        let env = match mail {
            Mail::Envelope(env) => env,
            Mail::Host(order) => {
                if let Ok(order) = order.downcast::<UpgradeOrder>() {
                    let _ = order.reply.send(Err(crate::api::ApiError::new(
                        crate::api::ErrorKind::Unavailable,
                        format!(
                            "{} cannot take its upgrade: {why}; nothing was applied",
                            self.shared.name
                        ),
                    )));
                }
                return;
            }
        };
        // A waiting requester learns at once. A durable message stays in the outbox
        // and is delivered again when the component next starts.
        self.shared.router.taken(&env);
        if let Some(id) = env.body.request_id() {
            self.shared
                .router
                .answer(&env.from, id, Err(RequestErr::Unavailable(why.to_string())));
        } else if env.delivery == Delivery::Fast {
            tracing::debug!(component = %self.shared.name, "fast message dropped: {why}");
        }
    }
}
