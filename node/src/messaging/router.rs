//! Routing: the table from component name to local mailbox, the requests waiting for a
//! reply (each answered exactly once: reply, error or timeout), the external clients
//! (admin API) waiting on their own requests, and, in a cluster, the hand-over of
//! envelopes whose receiver runs on another node ([`RemoteRoute`]).

use super::envelope::{Address, Body, Envelope, RequestErr};
use super::keys;
use super::mail::Mail;
use crate::api::Delivery;
use airssys_actor::{Correlator, MailboxSender, TrySendError};
use airssys_storage::{CommitBatch, Storage};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Instant;
use tokio::sync::oneshot;

/// Counters the node exports on `/metrics`.
#[derive(Debug, Default)]
pub struct RouterMetrics {
    pub delivered: AtomicU64,
    pub fast_dropped: AtomicU64,
    pub late_replies: AtomicU64,
    pub timeouts: AtomicU64,
    /// Envelopes handed to another node.
    pub forwarded: AtomicU64,
    /// Redelivery sweeps run, and the stored durable messages they handed again.
    pub redelivery_sweeps: AtomicU64,
    pub redelivered: AtomicU64,
    /// Time each handler call took (instance call; its commit completes behind it).
    pub handler_latency: super::histogram::Histogram,
}

type ReplySender = oneshot::Sender<Result<Vec<u8>, RequestErr>>;

/// Where a component lives in the cluster, and how envelopes get there.
pub trait RemoteRoute: Send + Sync + 'static {
    /// This node's id.
    fn local_node(&self) -> u64;
    /// The node the replicated registry gives `name` to; `None` when not installed.
    fn owner(&self, name: &str) -> Option<u64>;
    /// Hands an envelope to another node (in order per destination).
    fn forward(&self, node: u64, env: Envelope);
}

/// Where `deliver` sends an envelope whose receiver has no mailbox here.
enum Elsewhere {
    Node(u64),
    /// Installed and owned here, but not running (starting, failed or moving).
    NotRunningHere,
    NotInstalled,
}

pub struct Router {
    mailboxes: RwLock<HashMap<String, MailboxSender<Mail>>>,
    requests: Correlator<(Address, u64)>,
    external: Mutex<HashMap<u64, ReplySender>>,
    external_ids: AtomicU64,
    storage: Storage,
    remote: std::sync::OnceLock<Arc<dyn RemoteRoute>>,
    /// Outbox keys of the durable envelopes sitting in a local mailbox, not yet taken by
    /// their actor: a resend of one of them is not queued twice.
    queued: Mutex<HashSet<Vec<u8>>>,
    pub metrics: RouterMetrics,
}

impl Router {
    /// A router whose request timeouts fire on the current tokio runtime.
    pub fn new(storage: Storage) -> Arc<Router> {
        let router = Arc::new(Router {
            mailboxes: RwLock::new(HashMap::new()),
            requests: Correlator::new(),
            external: Mutex::new(HashMap::new()),
            // A random start: a durable external request replayed after a restart or a
            // failover is answered by id, and must not reach a new client's waiter.
            external_ids: AtomicU64::new((rand::random::<u64>() >> 2) | 1),
            storage,
            remote: std::sync::OnceLock::new(),
            queued: Mutex::new(HashSet::new()),
            metrics: RouterMetrics::default(),
        });
        let weak: Weak<Router> = Arc::downgrade(&router);
        router.requests.spawn_timeouts(move |(requester, id)| {
            if let Some(router) = weak.upgrade() {
                router.metrics.timeouts.fetch_add(1, Ordering::Relaxed);
                router.send_answer(&requester, id, Err(RequestErr::Timeout));
            }
        });
        router
    }

    /// Joins the router to a cluster: receivers without a local mailbox are looked
    /// up in the replicated registry.
    pub fn set_remote(&self, remote: Arc<dyn RemoteRoute>) {
        let _ = self.remote.set(remote);
    }

    fn elsewhere(&self, name: &str) -> Elsewhere {
        let Some(remote) = self.remote.get() else {
            return Elsewhere::NotInstalled;
        };
        match remote.owner(name) {
            Some(node) if node != remote.local_node() => Elsewhere::Node(node),
            Some(_) => Elsewhere::NotRunningHere,
            None => Elsewhere::NotInstalled,
        }
    }

    /// Sends `env` to `node`, marking where its outbox entry lives.
    fn forward(&self, node: u64, mut env: Envelope) {
        if let Some(remote) = self.remote.get() {
            if env.origin == 0 {
                env.origin = remote.local_node();
            }
            self.metrics.forwarded.fetch_add(1, Ordering::Relaxed);
            remote.forward(node, env);
        }
    }

    pub fn register(&self, name: &str, mailbox: MailboxSender<Mail>) {
        if let Ok(mut m) = self.mailboxes.write() {
            m.insert(name.to_string(), mailbox);
        }
    }

    pub fn unregister(&self, name: &str) {
        if let Ok(mut m) = self.mailboxes.write() {
            m.remove(name);
        }
        // Its mailbox is gone with whatever it held: those messages are in the outbox.
        let prefix = keys::outbox_for_receiver(name);
        if let Ok(mut q) = self.queued.lock() {
            q.retain(|k| !k.starts_with(&prefix));
        }
    }

    /// The actor took a durable envelope from its mailbox (to handle it, or to refuse it):
    /// from now on a resend of it may be queued again.
    pub fn taken(&self, env: &Envelope) {
        if env.delivery == Delivery::Durable {
            if let Ok(mut q) = self.queued.lock() {
                q.remove(&env.outbox_key());
            }
        }
    }

    /// True while the durable message stored under this outbox key waits in a mailbox here.
    pub fn is_queued(&self, outbox_key: &[u8]) -> bool {
        self.queued
            .lock()
            .map(|q| q.contains(outbox_key))
            .unwrap_or(false)
    }

    /// Marks a durable envelope as queued; false when it already is.
    fn enqueue_durable(&self, key: Vec<u8>) -> bool {
        self.queued
            .lock()
            .map(|mut q| q.insert(key))
            .unwrap_or(true)
    }

    fn dequeue_durable(&self, key: &[u8]) {
        if let Ok(mut q) = self.queued.lock() {
            q.remove(key);
        }
    }

    fn mailbox(&self, name: &str) -> Option<MailboxSender<Mail>> {
        self.mailboxes.read().ok()?.get(name).cloned()
    }

    /// Free places in `name`'s mailbox; `None` when no such component runs here.
    pub fn mailbox_room(&self, name: &str) -> Option<usize> {
        let m = self.mailboxes.read().ok()?;
        let mb = m.get(name)?;
        Some(mb.capacity().saturating_sub(mb.len()))
    }

    /// Room a sender sees for `name`: the local mailbox's, or unbounded for a component
    /// that runs on another node (its node applies its own mailbox limit) or is
    /// installed here but not running; `None` when no such component exists.
    pub fn send_room(&self, name: &str) -> Option<usize> {
        if let Some(room) = self.mailbox_room(name) {
            return Some(room);
        }
        match self.elsewhere(name) {
            Elsewhere::Node(_) | Elsewhere::NotRunningHere => Some(usize::MAX),
            Elsewhere::NotInstalled => None,
        }
    }

    pub fn mailbox_depth(&self, name: &str) -> u64 {
        self.mailboxes
            .read()
            .ok()
            .and_then(|m| m.get(name).map(|mb| mb.len() as u64))
            .unwrap_or(0)
    }

    /// Starts the clock on a request; its answer must come through `deliver` (a
    /// reply envelope) or `answer`, or the timeout fires.
    /// Completes a pending request (its answer is being handled); false when it was
    /// answered already (timed out).
    pub fn complete_request(&self, requester: &Address, id: u64) -> bool {
        let completed = self.requests.complete(&(requester.clone(), id));
        if !completed {
            self.metrics.late_replies.fetch_add(1, Ordering::Relaxed);
        }
        completed
    }

    pub fn register_request(&self, requester: Address, id: u64, deadline: Instant) {
        self.requests.register((requester, id), deadline);
    }

    /// Registers a request again unless it is still waiting (then its clock is kept).
    pub fn restore_request(&self, requester: Address, id: u64, deadline: Instant) {
        self.requests.register_if_absent((requester, id), deadline);
    }

    /// A request from an admin client: its id and where its answer arrives.
    pub fn register_external(
        &self,
        deadline: Instant,
    ) -> (u64, oneshot::Receiver<Result<Vec<u8>, RequestErr>>) {
        let id = self.external_ids.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.external.lock() {
            w.insert(id, tx);
        }
        self.register_request(Address::External, id, deadline);
        (id, rx)
    }

    /// Hands a committed (or fast) envelope to its receiver.
    pub fn deliver(&self, env: Envelope) {
        if self.remote.get().is_some() && self.mailbox(&env.to).is_none() {
            match self.elsewhere(&env.to) {
                Elsewhere::Node(node) => {
                    self.forward(node, env);
                    return;
                }
                Elsewhere::NotRunningHere => {
                    // A durable message stays stored (replayed on activation, or resent
                    // by its origin); a request is answered now.
                    if let Some(id) = env.body.request_id() {
                        self.answer(
                            &env.from,
                            id,
                            Err(RequestErr::Unavailable(format!(
                                "{} is not running on its node",
                                env.to
                            ))),
                        );
                    }
                    return;
                }
                Elsewhere::NotInstalled => {}
            }
        }
        if let Body::Reply { id, .. } = &env.body {
            // A durable reply goes to its requester's actor whatever happens: the actor
            // completes the request, and consumes a late one without a callback, so the
            // pair's numbering has no hole.
            let requester = Address::Component(env.to.clone());
            if env.delivery == Delivery::Fast && !self.requests.complete(&(requester, *id)) {
                // Timed out already (the requester got `timeout`): dropped.
                self.metrics.late_replies.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let Some(mailbox) = self.mailbox(&env.to) else {
            self.undeliverable(env, RequestErr::NotFound);
            return;
        };
        let result = match env.delivery {
            // Already durable: must not be dropped, so it may exceed the capacity
            // (bounded by what senders could commit while the mailbox was full).
            // At most one copy of it waits in the mailbox: a resend of one still queued
            // (the sweep, a replay, a peer's resend) is dropped here.
            Delivery::Durable => {
                let key = env.outbox_key();
                if !self.enqueue_durable(key.clone()) {
                    return;
                }
                mailbox.push_committed(Mail::Envelope(env)).map_err(|c| {
                    self.dequeue_durable(&key);
                    c.0
                })
            }
            Delivery::Fast => match &env.body {
                // An answer was already promised to the requester (its timeout is
                // cleared): never drop it.
                Body::Reply { .. } => mailbox.push_committed(Mail::Envelope(env)).map_err(|c| c.0),
                _ => match mailbox.try_send(Mail::Envelope(env)) {
                    Ok(()) => Ok(()),
                    Err(TrySendError::Full(mail)) => {
                        if let Mail::Envelope(env) = mail {
                            self.undeliverable(env, RequestErr::MailboxFull);
                        }
                        return;
                    }
                    Err(TrySendError::Closed(mail)) => Err(mail),
                },
            },
        };
        match result {
            Ok(()) => {
                self.metrics.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err(Mail::Envelope(env)) => {
                self.undeliverable(env, RequestErr::Unavailable("component stopped".into()))
            }
            Err(Mail::Host(_)) => {}
        }
    }

    /// A message that cannot reach its receiver: a request is answered with `err`; a
    /// fast message is dropped (at most once); a durable one stays stored unless its
    /// receiver no longer exists.
    fn undeliverable(&self, env: Envelope, err: RequestErr) {
        match env.body.request_id() {
            Some(id) => {
                self.answer(&env.from, id, Err(err.clone()));
                if err == RequestErr::NotFound {
                    self.forget_durable(&env);
                }
            }
            _ => {
                if err == RequestErr::NotFound {
                    self.forget_durable(&env);
                }
                if env.delivery == Delivery::Fast {
                    self.metrics.fast_dropped.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(to = %env.to, "message not delivered: {err}");
            }
        }
    }

    /// Answers request `id` of `requester` unless it was answered (or timed out)
    /// already.
    pub fn answer(&self, requester: &Address, id: u64, outcome: Result<Vec<u8>, RequestErr>) {
        if let Address::Component(name) = requester {
            if self.remote.get().is_some() && self.mailbox(name).is_none() {
                if let Elsewhere::Node(node) = self.elsewhere(name) {
                    // The requester's clock runs on its own node.
                    let env = Envelope {
                        from: Address::External,
                        from_incarnation: 0,
                        to: name.clone(),
                        delivery: Delivery::Fast,
                        seq: 0,
                        origin: 0,
                        trace: crate::telemetry::current_traceparent(),
                        body: Body::Reply { id, outcome },
                    };
                    self.forward(node, env);
                    return;
                }
            }
        }
        if self.requests.complete(&(requester.clone(), id)) {
            self.send_answer(requester, id, outcome);
        } else {
            self.metrics.late_replies.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends an answer whose request was already completed in the correlator.
    fn send_answer(&self, requester: &Address, id: u64, outcome: Result<Vec<u8>, RequestErr>) {
        match requester {
            Address::External => {
                let waiter = self.external.lock().ok().and_then(|mut w| w.remove(&id));
                if let Some(tx) = waiter {
                    // The client may have gone away; nothing to do then.
                    let _ = tx.send(outcome);
                }
            }
            Address::Component(name) => {
                let env = Envelope {
                    from: Address::External,
                    from_incarnation: 0,
                    to: name.clone(),
                    delivery: Delivery::Fast,
                    seq: 0,
                    origin: 0,
                    trace: crate::telemetry::current_traceparent(),
                    body: Body::Reply { id, outcome },
                };
                match self.mailbox(name) {
                    Some(mb) => {
                        if mb.push_committed(Mail::Envelope(env)).is_err() {
                            tracing::debug!(component = %name, "callback dropped: component stopped");
                        }
                    }
                    None => {
                        tracing::debug!(component = %name, "callback dropped: component removed")
                    }
                }
            }
        }
    }

    /// Deletes the outbox entry of a durable envelope that will never be consumed.
    fn forget_durable(&self, env: &Envelope) {
        if env.delivery != Delivery::Durable {
            return;
        }
        if self.remote.get().is_some() {
            // Replicated state changes only through the log: a removed receiver's outbox
            // goes with its removal.
            return;
        }
        let key = keys::outbox(&env.to, env.from.key_segment(), env.seq);
        let storage = self.storage.clone();
        let batch = CommitBatch::sys_only(vec![(key, None)]);
        tokio::spawn(async move {
            if let Err(e) = storage.commit_async(batch).await {
                tracing::warn!("cannot delete an undeliverable outbox entry: {e}");
            }
        });
    }
}
