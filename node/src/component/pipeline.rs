//! The commit pipeline of one component activation: an actor hands each handler's
//! transaction here and goes on with its next message while the commit is on its way, so
//! one slow fsync or Raft round does not hold the actor up.
//!
//! * Transactions wait in the order the actor ran them. One task per activation takes
//!   everything waiting (up to [`MAX_MERGED_TRANSACTIONS`] / [`MAX_MERGED_BYTES`]), commits
//!   it as ONE fenced batch (so the component has one commit in flight, and the committer's
//!   per-component numbering stays simple), then releases each transaction's effects
//!   (messages, requests, reply) in order. Nothing leaves before its commit is durable.
//! * A handler begun meanwhile reads the writes in flight ([`InFlightWrites`]), and numbers
//!   its durable messages and judges arrivals against marks that include them.
//! * When a commit fails, every transaction that waited behind it was computed on top of it:
//!   they are all dropped (each requester answered `unavailable`, durable inputs left in their
//!   outbox for a resend). The actor notices ([`CommitPipeline::failure_now`]), starts again
//!   from what is committed ([`CommitPipeline::reset`], then the activation reloads its
//!   marks) and, when it was fenced, stops.
//!
//! The queue holds at most [`MAX_WAITING`] transactions: a full queue makes the actor wait.
//! Of its activation the pipeline knows only its [`CommitTarget`]: whom it commits for,
//! under which placement, and where released effects go.

use crate::commit::{CommitError, Committer};
use crate::messaging::{Address, Envelope, RequestErr, Router};
use airssys_storage::{CommitBatch, Fence, InFlightWrites};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, Notify};

/// Transactions that may wait for their commit before the actor itself waits.
pub const MAX_WAITING: usize = 128;
/// Most transactions merged into one commit.
pub const MAX_MERGED_TRANSACTIONS: usize = 256;
/// Merging stops once a commit carries this many bytes of keys and values.
pub const MAX_MERGED_BYTES: usize = 1 << 20;

/// What a handler produced that may leave only once its transaction is committed.
#[derive(Default)]
pub struct Release {
    /// Requests it sent: (id, deadline), registered before the envelopes go out.
    pub requests: Vec<(u64, Instant)>,
    pub envelopes: Vec<Envelope>,
    pub reply: Option<PendingReply>,
}

/// A reply produced by a handler, sent after its commit.
pub enum PendingReply {
    External {
        id: u64,
        outcome: Result<Vec<u8>, RequestErr>,
    },
    Component(Envelope),
}

impl PendingReply {
    fn send(self, router: &Router) {
        match self {
            PendingReply::External { id, outcome } => {
                router.answer(&Address::External, id, outcome)
            }
            PendingReply::Component(env) => router.deliver(env),
        }
    }
}

impl Release {
    /// What is left of it when this node may not answer (it cannot confirm it still owns
    /// the component): the requester hears `unavailable` instead of the reply, fast
    /// messages are dropped (at most once), its own requests are left to time out.
    pub fn refused(self, why: &str) -> Release {
        let err = || RequestErr::Unavailable(why.to_string());
        let reply = self.reply.map(|r| match r {
            PendingReply::External { id, .. } => PendingReply::External {
                id,
                outcome: Err(err()),
            },
            PendingReply::Component(mut env) => {
                if let crate::messaging::Body::Reply { outcome, .. } = &mut env.body {
                    *outcome = Err(err());
                }
                PendingReply::Component(env)
            }
        });
        Release {
            requests: self.requests,
            envelopes: Vec::new(),
            reply,
        }
    }

    /// Sends everything, in the order the handler produced it.
    pub fn send(self, me: &str, router: &Router) {
        for (id, deadline) in self.requests {
            router.register_request(Address::Component(me.to_string()), id, deadline);
        }
        for env in self.envelopes {
            router.deliver(env);
        }
        if let Some(reply) = self.reply {
            reply.send(router);
        }
    }
}

/// One handler's transaction, as handed to the pipeline.
pub struct Tentative {
    /// Its writes (the fence is added to the merged commit).
    pub batch: CommitBatch,
    /// The components it numbered durable messages to, with the incarnation numbered for
    /// (checked by the fence of the merged commit).
    pub peers: Vec<(String, u64)>,
    /// The component's storage usage once it applies, when it writes the component's store.
    pub usage_after: Option<u64>,
    pub release: Release,
    /// Who must hear `unavailable` if the commit fails (a waiting requester whose request
    /// is not kept in an outbox).
    pub requester: Option<(Address, u64)>,
    /// Told the outcome (install waits for `init` to be durable).
    pub done: Option<oneshot::Sender<Result<(), CommitError>>>,
}

/// A commit failure, and the epoch of the transactions it dropped.
#[derive(Debug, Clone)]
pub struct Failure {
    epoch: u64,
    pub why: String,
    pub fenced: bool,
}

/// What the commit task needs of its activation, built once with it. The generation and
/// the fenced flag are the activation's own (shared, not copied): a commit is fenced with
/// the generation of the moment, and a refused one stops the activation.
pub struct CommitTarget {
    /// The component committed for.
    pub name: String,
    pub node_id: u64,
    /// The activation's generation (the fencing token every commit carries).
    pub generation: Arc<AtomicU64>,
    /// Where the merged transactions go.
    pub committer: Arc<dyn Committer>,
    /// Where released effects go.
    pub router: Arc<Router>,
    /// Set when a commit was refused because the component moved on.
    pub fenced: Arc<AtomicBool>,
}

struct Queued {
    /// The pipeline it waits in: the commit task holds it (and so the target) only while
    /// committing a group, never between groups.
    state: Arc<PipelineState>,
    epoch: u64,
    tag: u64,
    item: Tentative,
}

pub struct CommitPipeline {
    queue: mpsc::Sender<Queued>,
    state: Arc<PipelineState>,
}

/// The pipeline's bookkeeping, shared by the actor's side and the commit task.
struct PipelineState {
    target: CommitTarget,
    /// Transactions submitted and not yet released or dropped.
    waiting: AtomicUsize,
    emptied: Notify,
    /// Bumped by each reset: transactions from before it are dropped, never committed.
    epoch: AtomicU64,
    /// The epoch of the last failure + 1 (0: none): checked on every message without a lock.
    failed_epoch: AtomicU64,
    failure: Mutex<Option<Failure>>,
    in_flight: Arc<InFlightWrites>,
    tags: AtomicU64,
}

impl CommitPipeline {
    /// A pipeline committing for `target`, and its commit task (on the current tokio
    /// runtime). The task ends when the pipeline is dropped and its queue is empty.
    pub fn start(target: CommitTarget) -> CommitPipeline {
        let (queue, rx) = mpsc::channel(MAX_WAITING);
        tokio::spawn(run(rx));
        CommitPipeline {
            queue,
            state: Arc::new(PipelineState {
                target,
                waiting: AtomicUsize::new(0),
                emptied: Notify::new(),
                epoch: AtomicU64::new(0),
                failed_epoch: AtomicU64::new(0),
                failure: Mutex::new(None),
                in_flight: Arc::new(InFlightWrites::new()),
                tags: AtomicU64::new(0),
            }),
        }
    }

    /// The writes of transactions not yet applied here, for the next handler to read through.
    pub fn in_flight(&self) -> Arc<InFlightWrites> {
        self.state.in_flight.clone()
    }

    /// Transactions waiting for their commit.
    pub fn waiting(&self) -> usize {
        self.state.waiting()
    }

    /// The failure that dropped this epoch's transactions, if one did: the actor must start
    /// again from what is committed (or stop, when fenced) before its next handler.
    pub fn failure_now(&self) -> Option<Failure> {
        let state = &self.state;
        let epoch = state.epoch.load(Ordering::Acquire);
        if state.failed_epoch.load(Ordering::Acquire) != epoch + 1 {
            return None;
        }
        state
            .failure
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .filter(|f| f.epoch == epoch)
    }

    /// Starts a new epoch after a failure: forgets the dropped transactions' writes. Their
    /// tentative marks and pending requests are the activation's to reload from storage
    /// right after (`ComponentShared::reset_after_failure` does both). Call with no handler
    /// running.
    pub fn reset(&self) {
        self.state.epoch.fetch_add(1, Ordering::AcqRel);
        self.state.in_flight.clear();
    }

    /// Hands a transaction over; waits only when [`MAX_WAITING`] are already waiting.
    pub async fn submit(&self, item: Tentative) {
        let state = &self.state;
        let tag = state.tags.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(usage) = item.usage_after {
            for writes in &item.batch.components {
                state.in_flight.record(tag, writes, usage);
            }
        }
        state.waiting.fetch_add(1, Ordering::AcqRel);
        let queued = Queued {
            state: state.clone(),
            epoch: state.epoch.load(Ordering::Acquire),
            tag,
            item,
        };
        if let Err(mpsc::error::SendError(q)) = self.queue.send(queued).await {
            // The commit task is gone (only a panic ends it early): nothing can commit.
            let err = CommitError::Failed("the component's commit task stopped".into());
            state.fail(q, &err);
        }
    }

    /// Waits until every submitted transaction is released or dropped.
    pub async fn drained(&self) {
        loop {
            let emptied = self.state.emptied.notified();
            if self.waiting() == 0 {
                return;
            }
            emptied.await;
        }
    }
}

impl PipelineState {
    fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    fn finished(&self) {
        if self.waiting.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.emptied.notify_waiters();
        }
    }

    fn release(&self, q: Queued) {
        q.item.release.send(&self.target.name, &self.target.router);
        if let Some(done) = q.item.done {
            let _ = done.send(Ok(()));
        }
        self.finished();
    }

    fn fail(&self, q: Queued, err: &CommitError) {
        if let Some((from, id)) = &q.item.requester {
            self.target
                .router
                .answer(from, *id, Err(RequestErr::Unavailable(err.to_string())));
        }
        if let Some(done) = q.item.done {
            let _ = done.send(Err(err.clone()));
        }
        self.finished();
    }

    fn record_failure(&self, epoch: u64, err: &CommitError) {
        let target = &self.target;
        let fenced = matches!(err, CommitError::Fenced(_));
        if fenced {
            // Moved on: this activation is over; its new owner takes the messages.
            target.fenced.store(true, Ordering::Relaxed);
            tracing::warn!(component = %target.name, "{err}; stopping here");
        } else {
            tracing::warn!(component = %target.name, "commit failed: {err}; the handlers behind it run again");
        }
        if let Ok(mut f) = self.failure.lock() {
            *f = Some(Failure {
                epoch,
                why: err.to_string(),
                fenced,
            });
        }
        self.failed_epoch.store(epoch + 1, Ordering::Release);
    }

    /// The failure that drops transactions of `epoch`, if any.
    fn failure_covering(&self, epoch: u64) -> Option<Failure> {
        if epoch >= self.failed_epoch.load(Ordering::Acquire) {
            return None;
        }
        self.failure
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .filter(|f| epoch <= f.epoch)
    }
}

/// Whether a merged commit already holding `count` transactions and `bytes` takes another.
pub fn takes_more(count: usize, bytes: usize) -> bool {
    count < MAX_MERGED_TRANSACTIONS && bytes < MAX_MERGED_BYTES
}

/// Every (receiver, incarnation) of the merged transactions, once each. Two incarnations
/// of one receiver both stay: the log then refuses the commit, as one of them has ended.
pub fn merge_peers<'a>(peers: impl IntoIterator<Item = &'a [(String, u64)]>) -> Vec<(String, u64)> {
    let mut all: Vec<(String, u64)> = peers.into_iter().flatten().cloned().collect();
    all.sort();
    all.dedup();
    all
}

/// One batch doing what `batches` do one after another: later writes to a key win, usage
/// deltas add up (storage applies writes in order, component by component).
pub fn merge(batches: impl IntoIterator<Item = CommitBatch>) -> CommitBatch {
    let mut merged = CommitBatch::default();
    for b in batches {
        merged.components.extend(b.components);
        merged.sys.extend(b.sys);
    }
    merged
}

async fn run(mut rx: mpsc::Receiver<Queued>) {
    while let Some(first) = rx.recv().await {
        let mut bytes = first.item.batch.approx_bytes();
        let mut group = vec![first];
        while takes_more(group.len(), bytes) {
            match rx.try_recv() {
                Ok(q) => {
                    bytes += q.item.batch.approx_bytes();
                    group.push(q);
                }
                Err(_) => break,
            }
        }
        commit_group(group).await;
    }
}

async fn commit_group(group: Vec<Queued>) {
    let Some(pipeline) = group.first().map(|q| q.state.clone()) else {
        return;
    };
    let target = &pipeline.target;
    let mut live = Vec::with_capacity(group.len());
    for q in group {
        match pipeline.failure_covering(q.epoch) {
            Some(f) => pipeline.fail(q, &CommitError::Failed(f.why)),
            None => live.push(q),
        }
    }
    let (Some(last_tag), Some(epoch)) = (
        live.last().map(|q| q.tag),
        live.iter().map(|q| q.epoch).max(),
    ) else {
        return;
    };
    let peers = merge_peers(live.iter().map(|q| q.item.peers.as_slice()));
    let mut merged = merge(live.iter_mut().map(|q| std::mem::take(&mut q.item.batch)));
    if !merged.is_empty() {
        // The placement it was made under: refused if the component has moved on since, or
        // if a receiver it numbered messages for is another incarnation now.
        merged.fence = Some(Fence {
            component: target.name.clone(),
            node_id: target.node_id,
            generation: target.generation.load(Ordering::Relaxed),
            commit: 0,
            sequence: 0,
            peers,
        });
        if let Err(err) = target.committer.commit_handler(merged).await {
            pipeline.record_failure(epoch, &err);
            for q in live {
                pipeline.fail(q, &err);
            }
            return;
        }
        pipeline.in_flight.applied_through(last_tag);
    }
    for q in live {
        pipeline.release(q);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airssys_storage::ComponentWrites;

    fn batch(component: &[(&str, Option<&str>)], sys: &[(&str, Option<&str>)]) -> CommitBatch {
        let pairs = |p: &[(&str, Option<&str>)]| {
            p.iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec())))
                .collect::<Vec<_>>()
        };
        CommitBatch {
            fence: None,
            components: if component.is_empty() {
                Vec::new()
            } else {
                vec![ComponentWrites {
                    component: "c".into(),
                    writes: pairs(component),
                    usage_delta: 1,
                }]
            },
            sys: pairs(sys),
        }
    }

    #[test]
    fn merging_keeps_every_write_in_handler_order() {
        let merged = merge([
            batch(&[("n", Some("1"))], &[("outbox/1", None)]),
            batch(&[], &[("seq", Some("7"))]),
            batch(&[("n", Some("2"))], &[("outbox/2", None)]),
        ]);
        assert_eq!(merged.components.len(), 2);
        assert_eq!(merged.components[0].writes[0].1.as_deref(), Some(&b"1"[..]));
        assert_eq!(merged.components[1].writes[0].1.as_deref(), Some(&b"2"[..]));
        let sys: Vec<&[u8]> = merged.sys.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(sys, vec![&b"outbox/1"[..], b"seq", b"outbox/2"]);
        assert!(
            merged.fence.is_none(),
            "the pipeline fences the merged batch itself"
        );
        assert!(merge(Vec::new()).is_empty());
    }

    #[test]
    fn a_merged_commit_is_bounded_by_count_and_bytes() {
        assert!(takes_more(1, 0));
        assert!(!takes_more(MAX_MERGED_TRANSACTIONS, 0));
        assert!(!takes_more(2, MAX_MERGED_BYTES));
        assert_eq!(
            batch(&[("ab", Some("cde"))], &[("k", None)]).approx_bytes(),
            6
        );
    }
}
