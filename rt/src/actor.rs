//! The supervised actor loop.
//!
//! This module owns the task that runs one actor: it creates the actor through its
//! [`ActorFactory`], takes messages from the bounded mailbox one at a time and handles each to
//! completion, and on a crash asks [`SupervisorState`] whether to wait and recreate or to give up.
//! It also guarantees that every message that entered the mailbox is either handled or given back
//! to the factory's [`ActorFactory::reject`] — never dropped silently.
//!
//! Lifecycle, as seen through [`ActorStatus`]:
//! `Starting → Running → (Restarting → Running)* → Failed | Stopped`.
//!
//! * Crash (handler `Err`, creation `Err`, or a panic in either): the broken instance is dropped;
//!   the message being handled is consumed by the handler (the actor must answer it itself, see
//!   [`Actor::handle`]). Messages already queued stay queued while the backoff runs, and the fresh
//!   instance handles them in order.
//! * Give up: status `Failed`; everything queued and everything sent later is passed to `reject`
//!   with [`Rejection::Failed`]. The mailbox stays open on purpose so senders keep getting an
//!   answer through `reject` instead of a bare `Closed`.
//! * [`ActorHandle::stop`]: the current message finishes, the mailbox closes, everything queued is
//!   rejected with [`Rejection::Stopped`], status `Stopped` (a `Failed` actor stays `Failed`, so
//!   its reason stays visible).
//! * Every sender (including the handle's) dropped: the task ends (`Stopped`, or stays `Failed`).
//!   Dropping the handle alone detaches the task; it does not stop the actor.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::mailbox::{mailbox, MailboxReceiver, MailboxSender};
use crate::supervisor::{Decision, RestartPolicy, SupervisorState};

/// An actor is broken: the supervisor drops it and creates a fresh one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Crash {
    reason: String,
}

impl Crash {
    /// A crash with a human-readable reason (it ends up in status and give-up messages).
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }

    /// Why the actor crashed.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl From<String> for Crash {
    fn from(reason: String) -> Self {
        Self { reason }
    }
}

impl From<&str> for Crash {
    fn from(reason: &str) -> Self {
        Self::new(reason)
    }
}

/// Why a message will never be handled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The actor crashed too often and the supervisor gave up.
    #[error("actor failed: {reason}")]
    Failed { reason: String },
    /// The actor was stopped.
    #[error("actor stopped")]
    Stopped,
}

/// Where an actor is in its lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActorStatus {
    /// Spawned; the first instance is being created.
    Starting,
    /// An instance exists and handles messages.
    Running,
    /// The last instance crashed; a fresh one is created after the backoff.
    /// `restarts` counts restarts so far, this one included.
    Restarting { restarts: u32, last_error: String },
    /// The supervisor gave up; messages are rejected. Terminal.
    Failed { reason: String },
    /// Stopped by [`ActorHandle::stop`] or because every sender went away. Terminal.
    /// (Stopping a `Failed` actor leaves it `Failed`.)
    Stopped,
}

impl ActorStatus {
    /// True for `Failed` and `Stopped`.
    pub fn is_terminal(&self) -> bool {
        matches!(self, ActorStatus::Failed { .. } | ActorStatus::Stopped)
    }
}

/// One actor instance. Dropped and replaced by a fresh one when it crashes.
pub trait Actor: Send + 'static {
    /// The messages this actor handles.
    type Msg: Send + 'static;

    /// Handle one message to completion. `Err` means the actor is broken: the supervisor drops
    /// it and creates a fresh one. The message is consumed either way, so an actor that fails on
    /// a request must answer that request (with an error) itself before returning `Err`, or let
    /// the dropped reply channel tell the requester.
    fn handle(&mut self, msg: Self::Msg) -> impl Future<Output = Result<(), Crash>> + Send;
}

/// Makes actor instances and answers messages that will never be handled.
pub trait ActorFactory: Send + 'static {
    /// The actor this factory makes.
    type Actor: Actor;

    /// Make a fresh actor (first start and every restart). `Err` counts as a crash.
    fn create(&mut self) -> impl Future<Output = Result<Self::Actor, Crash>> + Send;

    /// A message that will never be handled (actor failed or stopped): answer it (e.g. an error
    /// to a waiting requester). Called on the actor's task; keep it short and non-blocking.
    fn reject(&mut self, msg: <Self::Actor as Actor>::Msg, why: &Rejection);
}

/// Stop request shared by the handle and the task. The flag is checked between messages (one
/// relaxed load on the hot path); the `Notify` wakes a task that is idle or backing off.
#[derive(Default)]
struct StopSignal {
    requested: AtomicBool,
    wake: Notify,
}

impl StopSignal {
    fn request(&self) {
        self.requested.store(true, Ordering::Release);
        // notify_one keeps a permit if the task is not waiting right now, so no wake-up is lost.
        self.wake.notify_one();
    }

    #[inline]
    fn is_requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }
}

/// The owner's handle on a supervised actor.
pub struct ActorHandle<M> {
    sender: MailboxSender<M>,
    status: watch::Receiver<ActorStatus>,
    restarts: Arc<AtomicU32>,
    stop: Arc<StopSignal>,
    task: JoinHandle<()>,
}

impl<M> std::fmt::Debug for ActorHandle<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorHandle")
            .field("status", &*self.status.borrow())
            .field("restarts", &self.restarts())
            .field("mailbox", &self.sender)
            .finish()
    }
}

impl<M> ActorHandle<M> {
    /// The actor's mailbox. Clone it to give others a way to send.
    pub fn sender(&self) -> &MailboxSender<M> {
        &self.sender
    }

    /// The current status.
    pub fn status(&self) -> ActorStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change (for waiting on `Running`, `Failed`, ...).
    pub fn subscribe(&self) -> watch::Receiver<ActorStatus> {
        self.status.clone()
    }

    /// Restarts so far (not counting the first start).
    pub fn restarts(&self) -> u32 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// True once the actor's task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stop gracefully: the current message finishes, queued messages are rejected with
    /// [`Rejection::Stopped`], later sends get `Closed`, and the task ends. Returns when it has.
    pub async fn stop(self) {
        self.stop.request();
        if let Err(e) = self.task.await {
            // Only a panic in `reject` (host code) can get here; actor panics are caught.
            tracing::error!(error = %e, "actor task ended abnormally");
        }
    }
}

/// Spawn a supervised actor on the current tokio runtime, with a mailbox of `capacity`.
///
/// Must be called from inside a tokio runtime.
pub fn spawn_supervised<F: ActorFactory>(
    factory: F,
    capacity: usize,
    policy: RestartPolicy,
) -> ActorHandle<<F::Actor as Actor>::Msg> {
    let (sender, rx) = mailbox(capacity);
    let (status_tx, status) = watch::channel(ActorStatus::Starting);
    let restarts = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(StopSignal::default());
    let run = Supervised {
        factory,
        rx,
        status: status_tx,
        restarts: Arc::clone(&restarts),
        stop: Arc::clone(&stop),
        state: SupervisorState::new(policy),
    };
    let task = tokio::spawn(run.run());
    ActorHandle {
        sender,
        status,
        restarts,
        stop,
        task,
    }
}

/// How a run of one instance ended.
enum RunEnd {
    Crashed(Crash),
    StopRequested,
    SendersGone,
}

struct Supervised<F: ActorFactory> {
    factory: F,
    rx: MailboxReceiver<<F::Actor as Actor>::Msg>,
    status: watch::Sender<ActorStatus>,
    restarts: Arc<AtomicU32>,
    stop: Arc<StopSignal>,
    state: SupervisorState,
}

impl<F: ActorFactory> Supervised<F> {
    async fn run(mut self) {
        loop {
            // Bind first so the creation future (which borrows the factory) is gone before
            // `serve` borrows `self` again.
            let created = CatchUnwind::new(pin!(self.factory.create())).await;
            let end = match created {
                Ok(Ok(actor)) => {
                    self.status.send_replace(ActorStatus::Running);
                    self.serve(actor).await
                }
                Ok(Err(crash)) => RunEnd::Crashed(crash),
                Err(panic) => RunEnd::Crashed(panic),
            };
            let crash = match end {
                RunEnd::Crashed(crash) => crash,
                RunEnd::StopRequested => return self.stopped().await,
                RunEnd::SendersGone => {
                    self.status.send_replace(ActorStatus::Stopped);
                    return;
                }
            };
            if self.stop.is_requested() {
                return self.stopped().await;
            }
            let now = tokio::time::Instant::now().into_std();
            match self.state.on_crash(now, crash.reason()) {
                Decision::Restart { after, attempt } => {
                    let restarts = self.state.restarts();
                    self.restarts.store(restarts, Ordering::Relaxed);
                    tracing::warn!(
                        error = crash.reason(),
                        attempt,
                        restarts,
                        backoff = ?after,
                        "actor crashed; restarting"
                    );
                    self.status.send_replace(ActorStatus::Restarting {
                        restarts,
                        last_error: crash.reason().to_owned(),
                    });
                    // Messages keep queueing (bounded) while we wait; a stop cuts the wait short.
                    tokio::select! {
                        biased;
                        _ = self.stop.wake.notified() => return self.stopped().await,
                        _ = tokio::time::sleep(after) => {}
                    }
                }
                Decision::GiveUp { reason } => {
                    tracing::error!(%reason, "actor failed; supervisor gave up");
                    return self.failed(reason).await;
                }
            }
        }
    }

    /// Handle messages with one instance until it crashes, a stop is requested, or every sender
    /// is gone. This is the hot path: one flag load, one `try_recv`, one `handle` per message.
    async fn serve(&mut self, mut actor: F::Actor) -> RunEnd {
        loop {
            if self.stop.is_requested() {
                return RunEnd::StopRequested;
            }
            let msg = match self.rx.try_recv() {
                Some(msg) => msg,
                None => tokio::select! {
                    biased;
                    // A stale permit only costs one extra loop turn: the flag decides.
                    _ = self.stop.wake.notified() => continue,
                    msg = self.rx.recv() => match msg {
                        Some(msg) => msg,
                        None => return RunEnd::SendersGone,
                    },
                },
            };
            let handled = CatchUnwind::new(pin!(actor.handle(msg))).await;
            match handled {
                Ok(Ok(())) => {}
                Ok(Err(crash)) | Err(crash) => return RunEnd::Crashed(crash),
            }
            // `try_recv` never yields, so give the scheduler its turn when our budget runs out.
            tokio::task::coop::consume_budget().await;
        }
    }

    /// Terminal `Failed`: reject everything queued and everything that arrives later, until
    /// stopped or every sender is gone.
    async fn failed(mut self, reason: String) {
        self.status.send_replace(ActorStatus::Failed {
            reason: reason.clone(),
        });
        let why = Rejection::Failed { reason };
        loop {
            if self.stop.is_requested() {
                // Keep `Failed` visible: stopping a failed actor does not make it healthy.
                return self.drain_closed(&Rejection::Stopped).await;
            }
            tokio::select! {
                biased;
                _ = self.stop.wake.notified() => {}
                msg = self.rx.recv() => match msg {
                    Some(msg) => self.factory.reject(msg, &why),
                    None => return,
                },
            }
        }
    }

    /// Terminal `Stopped` after a stop request.
    async fn stopped(mut self) {
        self.drain_closed(&Rejection::Stopped).await;
        self.status.send_replace(ActorStatus::Stopped);
    }

    /// Close the mailbox and reject everything in it, including sends that raced with the close.
    async fn drain_closed(&mut self, why: &Rejection) {
        self.rx.close();
        // After close, `recv` returns `None` only when no send is still in flight, so this
        // catches every message that was accepted.
        while let Some(msg) = self.rx.recv().await {
            self.factory.reject(msg, why);
        }
    }
}

/// Turns a panic inside the actor's future into a [`Crash`], so a buggy actor is restarted like
/// any other crash instead of killing its task (and silently dropping its mailbox).
struct CatchUnwind<'a, Fut> {
    inner: Pin<&'a mut Fut>,
}

impl<'a, Fut> CatchUnwind<'a, Fut> {
    fn new(inner: Pin<&'a mut Fut>) -> Self {
        Self { inner }
    }
}

impl<Fut: Future> Future for CatchUnwind<'_, Fut> {
    type Output = Result<Fut::Output, Crash>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.inner.as_mut();
        // AssertUnwindSafe: after a panic the instance is dropped and never polled again.
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Err(payload) => Poll::Ready(Err(Crash::new(format!(
                "panicked: {}",
                panic_message(payload.as_ref())
            )))),
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}
