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
use super::pipeline::{PendingReply, Release, Tentative};
use super::shared::{is_durable_request, Arrival, ComponentShared, PairNumbering};
use crate::api::Delivery;
use crate::clock::now_ms;
use crate::commit::CommitError;
use crate::engine::bindings::{types, Component_};
use crate::messaging::{keys, Address, Body, Envelope, RequestErr};
use airssys_actor::{Actor, ActorFactory, Crash, Rejection};
use airssys_storage::CommitBatch;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::{Store, Trap, UpdateDeadline};

/// Key and value caps of component storage.
pub const MAX_KEY_BYTES: usize = 1_024;
pub const MAX_VALUE_BYTES: usize = 1 << 20;

pub struct ComponentActor {
    shared: Arc<ComponentShared>,
    store: Store<HostState>,
    instance: Component_,
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

/// The parts of an incoming envelope the commit needs after the handler ran.
struct Incoming {
    from: Address,
    /// The sender's incarnation (0: an external client, or an envelope of an earlier build).
    from_incarnation: u64,
    delivery: Delivery,
    seq: u64,
    /// `Some(id)` when the sender waits for a reply.
    request_id: Option<u64>,
    /// `Some(id)` when this is the callback of our own request `id`.
    callback_id: Option<u64>,
}

impl ComponentActor {
    /// A fresh instance of the component.
    pub async fn instantiate(shared: Arc<ComponentShared>) -> Result<ComponentActor, String> {
        let engine = shared.prepared.pre.engine().clone();
        let mut store = Store::new(&engine, HostState::new(shared.clone()));
        store.limiter(|s| &mut s.memory);
        store.epoch_deadline_callback(|ctx| {
            let expired = ctx
                .data()
                .call
                .as_ref()
                .is_some_and(|c| Instant::now() >= c.deadline);
            // Yield at every tick so a long handler does not hold a runtime thread;
            // interrupt once the handler's deadline has passed.
            Ok(if expired {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        store.set_epoch_deadline(1);
        store
            .set_fuel(u64::MAX)
            .map_err(|e| format!("cannot set fuel: {e}"))?;
        let instance = shared
            .prepared
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| format!("instantiation failed: {e:#}"))?;
        Ok(ComponentActor {
            shared,
            store,
            instance,
        })
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
        let incoming = Incoming {
            from: Address::External,
            from_incarnation: 0,
            delivery: Delivery::Fast,
            seq: 0,
            request_id: None,
            callback_id: None,
        };
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
        let shared = &self.shared;
        let deadline = Instant::now() + Duration::from_millis(shared.limits.deadline_ms);
        let fuel = shared.limits.fuel.unwrap_or(u64::MAX);
        let seq_at_start = shared.last_seq();
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
            Ok(Ok(Some(reply))) if reply.len() > super::host_state::MAX_PAYLOAD_BYTES => {
                Outcome::Rejected(format!(
                    "too-large: the reply is {} bytes; the cap is {}",
                    reply.len(),
                    super::host_state::MAX_PAYLOAD_BYTES
                ))
            }
            Ok(Ok(reply)) => Outcome::Ok(reply),
            Ok(Err(text)) => Outcome::Rejected(text),
            Err(err) => {
                let limits = &self.shared.limits;
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
        let shared = self.shared.clone();
        let me = shared.name.as_str();
        let seq_before = call.seq_at_start;
        let mut batch = self.batch_consuming(&incoming);
        let mut usage_after = None;
        if let Some(txn) = call.txn.filter(|t| !t.is_empty()) {
            usage_after = Some(txn.usage_bytes());
            batch.components.push(txn.into_writes());
        }

        let mut release = Vec::with_capacity(call.outgoing.len() + 1);
        let mut requests = Vec::new();
        let mut numbering = shared.pair_numbering();
        for out in call.outgoing {
            let seq = match out.delivery {
                Delivery::Durable => numbering.take(
                    &out.target,
                    |r| shared.receiver_incarnation(r),
                    |r, inc| shared.last_pair_seq(r, inc),
                ),
                Delivery::Fast => 0,
            };
            let body = match out.request {
                Some((id, timeout_ms)) => {
                    let deadline_ms = now_ms() + u64::from(timeout_ms);
                    requests.push((
                        id,
                        Instant::now() + Duration::from_millis(timeout_ms.into()),
                    ));
                    if out.delivery == Delivery::Durable {
                        batch
                            .sys
                            .push((keys::pending(me, id), Some(keys::encode_u64(deadline_ms))));
                    }
                    Body::Request {
                        id,
                        payload: out.payload,
                        deadline_ms,
                    }
                }
                None => Body::Message {
                    payload: out.payload,
                },
            };
            let env = Envelope {
                from: Address::Component(me.to_string()),
                from_incarnation: shared.incarnation,
                to: out.target,
                delivery: out.delivery,
                seq,
                origin: 0,
                trace: crate::telemetry::current_traceparent(),
                body,
            };
            if env.is_durable() {
                batch
                    .sys
                    .push((keys::outbox(&env.to, me, seq), Some(env.encode())));
            }
            release.push(env);
        }

        let reply = incoming.request_id.and_then(|id| {
            self.reply_envelope(
                &incoming,
                id,
                Ok(reply.unwrap_or_default()),
                &mut batch,
                &mut numbering,
            )
        });

        if shared.last_seq() != seq_before {
            batch
                .sys
                .push((keys::seq(me), Some(keys::encode_u64(shared.last_seq()))));
        }
        batch.sys.extend(numbering.writes(me));
        let peers = shared.adopt_pair_numbering(numbering);
        let release = Release {
            requests,
            envelopes: release,
            reply,
        };
        Self::submit(
            shared.clone(),
            batch,
            peers,
            usage_after,
            &incoming,
            release,
            done,
        )
        .await;
        Ok(())
    }

    /// Commits what a failed handler must still leave behind (its input consumed, the
    /// error answer to its requester) and sends that answer.
    async fn fail(&mut self, incoming: Incoming, err: RequestErr) {
        let shared = self.shared.clone();
        let seq_before = shared.last_seq();
        let mut batch = self.batch_consuming(&incoming);
        let mut numbering = shared.pair_numbering();
        let reply = incoming.request_id.and_then(|id| {
            self.reply_envelope(&incoming, id, Err(err), &mut batch, &mut numbering)
        });
        if shared.last_seq() != seq_before {
            batch.sys.push((
                keys::seq(&shared.name),
                Some(keys::encode_u64(shared.last_seq())),
            ));
        }
        batch.sys.extend(numbering.writes(&shared.name));
        let peers = shared.adopt_pair_numbering(numbering);
        let release = Release {
            reply,
            ..Release::default()
        };
        Self::submit(shared.clone(), batch, peers, None, &incoming, release, None).await;
    }

    /// A batch that consumes the incoming durable message (outbox entry deleted,
    /// de-dup mark advanced) and, for the callback of a durable request, its pending
    /// record.
    fn batch_consuming(&self, incoming: &Incoming) -> CommitBatch {
        let me = self.shared.name.as_str();
        // The fence is added in `commit`, only when there is something to commit.
        let mut batch = CommitBatch::sys_only(Vec::new());
        if incoming.delivery == Delivery::Durable {
            let sender = incoming.from.key_segment();
            batch
                .sys
                .push((keys::outbox(me, sender, incoming.seq), None));
            let mark = if self.last_from_former_sender(sender, incoming.seq) {
                // A removed sender's last message: its mark goes with it (the in-memory
                // one stays, so a copy still on its way is known for a repeat).
                None
            } else {
                Some(keys::encode_mark(keys::Mark {
                    incarnation: incoming.from_incarnation,
                    seq: incoming.seq,
                }))
            };
            batch.sys.push((keys::dedup(me, sender), mark));
        }
        if let Some(id) = incoming.callback_id {
            if is_durable_request(id) {
                batch.sys.push((keys::pending(me, id), None));
            }
        }
        batch
    }

    /// True when `sender` is a removed sender's former name and nothing it sent after
    /// `seq` waits in storage: it can send nothing more, so its mark is no longer needed.
    fn last_from_former_sender(&self, sender: &str, seq: u64) -> bool {
        if keys::is_live_name(sender) {
            return false;
        }
        let prefix = keys::outbox_pair(&self.shared.name, sender);
        match self.shared.storage.sys_scan_prefix(&prefix) {
            Ok(waiting) => waiting
                .iter()
                .all(|(key, _)| keys::outbox_seq(key).is_some_and(|s| s <= seq)),
            // Unsure: keep the mark.
            Err(_) => false,
        }
    }

    fn reply_envelope(
        &self,
        incoming: &Incoming,
        id: u64,
        outcome: Result<Vec<u8>, RequestErr>,
        batch: &mut CommitBatch,
        numbering: &mut PairNumbering,
    ) -> Option<PendingReply> {
        let me = self.shared.name.as_str();
        match &incoming.from {
            Address::External => Some(PendingReply::External { id, outcome }),
            // Asked by a component since removed (its request outlived it under its former
            // name): no one can take the answer, and nothing is left waiting for one.
            Address::Component(requester) if !keys::is_live_name(requester) => None,
            Address::Component(requester) => {
                let seq = match incoming.delivery {
                    // Numbered for the incarnation that asked.
                    Delivery::Durable => numbering.take(
                        requester,
                        |_| incoming.from_incarnation,
                        |r, inc| self.shared.last_pair_seq(r, inc),
                    ),
                    Delivery::Fast => 0,
                };
                let env = Envelope {
                    from: Address::Component(me.to_string()),
                    from_incarnation: self.shared.incarnation,
                    to: requester.clone(),
                    delivery: incoming.delivery,
                    seq,
                    origin: 0,
                    trace: crate::telemetry::current_traceparent(),
                    body: Body::Reply { id, outcome },
                };
                if env.is_durable() {
                    // A durable request's reply is part of this commit: exactly once
                    // end to end.
                    batch
                        .sys
                        .push((keys::outbox(requester, me, seq), Some(env.encode())));
                }
                Some(PendingReply::Component(env))
            }
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
            release.send(&shared.name, &shared.router);
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
        shared.pipeline.submit(&shared, item).await;
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
        self.shared
            .pipeline
            .reset(&self.shared)
            .map_err(Crash::new)?;
        self.reinstantiate().await
    }

    async fn reinstantiate(&mut self) -> Result<(), Crash> {
        let fresh = ComponentActor::instantiate(self.shared.clone())
            .await
            .map_err(Crash::new)?;
        *self = fresh;
        Ok(())
    }
}

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
    }
}

impl Actor for ComponentActor {
    type Msg = Envelope;

    async fn handle(&mut self, env: Envelope) -> Result<(), Crash> {
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
        };
        self.recover_from_failed_commit(&incoming, request_id_of(&body))
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
                    let batch = CommitBatch::sys_only(vec![(
                        keys::outbox(&self.shared.name, incoming.from.key_segment(), incoming.seq),
                        None,
                    )]);
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

        if let Err(why) = self.begin_call() {
            if let Some(id) = request_id_of(&body) {
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
            Body::Request { id, payload, .. } => {
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
                let batch = self.batch_consuming(&incoming);
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

fn request_id_of(body: &Body) -> Option<u64> {
    match body {
        Body::Request { id, .. } => Some(*id),
        _ => None,
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
            self.shared
                .pipeline
                .reset(&self.shared)
                .map_err(Crash::new)?;
        }
        ComponentActor::instantiate(self.shared.clone())
            .await
            .map_err(Crash::new)
    }

    fn reject(&mut self, env: Envelope, why: &Rejection) {
        // A waiting requester learns at once. A durable message stays in the outbox
        // and is delivered again when the component next starts.
        self.shared.router.taken(&env);
        if let Body::Request { id, .. } = env.body {
            self.shared
                .router
                .answer(&env.from, id, Err(RequestErr::Unavailable(why.to_string())));
        } else if env.delivery == Delivery::Fast {
            tracing::debug!(component = %self.shared.name, "fast message dropped: {why}");
        }
    }
}
