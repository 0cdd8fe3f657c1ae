//! The supervised actor loop on a real tokio runtime. Time-based tests run on a paused clock,
//! which auto-advances when every task is idle, so backoffs pass instantly and deterministically.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airssys_actor::{
    spawn_supervised, Actor, ActorFactory, ActorHandle, ActorStatus, Backoff, Crash, Intensity,
    MailboxSender, Rejection, RestartPolicy, TrySendError,
};
use tokio::sync::{oneshot, Notify};

type Reply = oneshot::Sender<Result<u32, String>>;

struct Msg {
    body: String,
    reply: Option<Reply>,
}

/// Lets a test hold an actor inside a handler.
#[derive(Default)]
struct Gate {
    entered: Notify,
    release: Notify,
}

/// Counts the messages handled by *this instance*: a reply of 1 after a crash proves a fresh one.
struct Counter {
    handled: u32,
    crash_always: bool,
    gate: Arc<Gate>,
}

impl Actor for Counter {
    type Msg = Msg;

    async fn handle(&mut self, msg: Msg) -> Result<(), Crash> {
        if self.crash_always {
            return Err(Crash::new(format!("cannot handle {}", msg.body)));
        }
        match msg.body.as_str() {
            "boom" => return Err(Crash::new("boom")),
            "panic" => panic!("kaboom"),
            "wait" => {
                self.gate.entered.notify_one();
                self.gate.release.notified().await;
            }
            _ => {}
        }
        self.handled += 1;
        if let Some(reply) = msg.reply {
            let _ = reply.send(Ok(self.handled));
        }
        Ok(())
    }
}

#[derive(Default, Clone)]
struct Probe {
    creates: Arc<AtomicU32>,
    rejected: Arc<Mutex<Vec<(String, Rejection)>>>,
    gate: Arc<Gate>,
}

impl Probe {
    fn creates(&self) -> u32 {
        self.creates.load(Ordering::SeqCst)
    }
    fn rejected(&self) -> Vec<(String, Rejection)> {
        self.rejected.lock().unwrap().clone()
    }
}

struct Factory {
    probe: Probe,
    crash_always: bool,
    fail_create: bool,
}

impl ActorFactory for Factory {
    type Actor = Counter;

    async fn create(&mut self) -> Result<Counter, Crash> {
        self.probe.creates.fetch_add(1, Ordering::SeqCst);
        if self.fail_create {
            return Err(Crash::new("cannot instantiate"));
        }
        Ok(Counter {
            handled: 0,
            crash_always: self.crash_always,
            gate: Arc::clone(&self.probe.gate),
        })
    }

    fn reject(&mut self, msg: Msg, why: &Rejection) {
        if let Some(reply) = msg.reply {
            let _ = reply.send(Err(why.to_string()));
        }
        self.probe
            .rejected
            .lock()
            .unwrap()
            .push((msg.body, why.clone()));
    }
}

fn policy(max_restarts: u32, initial: Duration) -> RestartPolicy {
    RestartPolicy {
        backoff: Backoff {
            initial,
            max: initial * 8,
            multiplier: 2,
        },
        intensity: Intensity {
            max_restarts,
            window: Duration::from_secs(60),
        },
    }
}

fn spawn(
    crash_always: bool,
    fail_create: bool,
    capacity: usize,
    policy: RestartPolicy,
) -> (ActorHandle<Msg>, Probe) {
    let probe = Probe::default();
    let factory = Factory {
        probe: probe.clone(),
        crash_always,
        fail_create,
    };
    (spawn_supervised(factory, capacity, policy), probe)
}

fn ask(tx: &MailboxSender<Msg>, body: &str) -> oneshot::Receiver<Result<u32, String>> {
    let (reply, rx) = oneshot::channel();
    let msg = Msg {
        body: body.to_owned(),
        reply: Some(reply),
    };
    if tx.try_send(msg).is_err() {
        panic!("send of {body} refused");
    }
    rx
}

async fn wait_status(
    handle: &ActorHandle<Msg>,
    want: impl Fn(&ActorStatus) -> bool,
) -> ActorStatus {
    let mut rx = handle.subscribe();
    let status = rx.wait_for(|s| want(s)).await.unwrap().clone();
    status
}

#[tokio::test(start_paused = true)]
async fn crash_recreates_a_fresh_instance_that_keeps_handling() {
    let (handle, probe) = spawn(false, false, 16, policy(5, Duration::from_millis(10)));
    let tx = handle.sender().clone();
    assert_eq!(ask(&tx, "a").await.unwrap(), Ok(1));
    assert_eq!(ask(&tx, "b").await.unwrap(), Ok(2));
    // The crashing message is consumed by the handler; its reply channel is dropped.
    let boom = ask(&tx, "boom");
    // Queued behind the crash: handled by the fresh instance, in order.
    let later: Vec<_> = ["c", "d", "e"].iter().map(|b| ask(&tx, b)).collect();
    assert!(
        boom.await.is_err(),
        "crashed request must not get a normal reply"
    );
    let mut replies = Vec::new();
    for rx in later {
        replies.push(rx.await.unwrap());
    }
    assert_eq!(replies, vec![Ok(1), Ok(2), Ok(3)], "state was not reset");
    assert_eq!(probe.creates(), 2);
    assert_eq!(handle.restarts(), 1);
    assert_eq!(handle.status(), ActorStatus::Running);
    assert!(probe.rejected().is_empty());
}

#[tokio::test(start_paused = true)]
async fn restarting_status_carries_count_and_error() {
    let (handle, probe) = spawn(false, false, 16, policy(5, Duration::from_secs(3600)));
    let tx = handle.sender().clone();
    assert_eq!(ask(&tx, "a").await.unwrap(), Ok(1));
    let _boom = ask(&tx, "boom");
    let status = wait_status(&handle, |s| matches!(s, ActorStatus::Restarting { .. })).await;
    assert_eq!(
        status,
        ActorStatus::Restarting {
            restarts: 1,
            last_error: "boom".into()
        }
    );
    assert_eq!(
        probe.creates(),
        1,
        "must wait the backoff before recreating"
    );
    // The paused clock jumps over the hour-long backoff; the queued message then runs.
    assert_eq!(ask(&tx, "b").await.unwrap(), Ok(1));
    assert_eq!(probe.creates(), 2);
}

#[tokio::test(start_paused = true)]
async fn panic_in_handler_is_a_crash() {
    let (handle, probe) = spawn(false, false, 16, policy(5, Duration::from_millis(10)));
    let tx = handle.sender().clone();
    assert_eq!(ask(&tx, "a").await.unwrap(), Ok(1));
    assert!(ask(&tx, "panic").await.is_err());
    assert_eq!(ask(&tx, "b").await.unwrap(), Ok(1));
    assert_eq!(probe.creates(), 2);
    assert_eq!(handle.restarts(), 1);
    assert!(!handle.is_finished());
}

#[tokio::test(start_paused = true)]
async fn panic_reason_reaches_failed_status() {
    let (handle, _probe) = spawn(false, false, 16, policy(0, Duration::from_millis(10)));
    let _reply = ask(handle.sender(), "panic");
    let status = wait_status(&handle, ActorStatus::is_terminal).await;
    match status {
        ActorStatus::Failed { reason } => assert!(reason.contains("kaboom"), "{reason}"),
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn always_crashing_actor_fails_and_rejects_later_messages() {
    let (handle, probe) = spawn(true, false, 16, policy(2, Duration::from_millis(10)));
    let tx = handle.sender().clone();
    // m1..m3 crash (two restarts allowed, the third crash gives up); m4, m5 are still queued then.
    let replies: Vec<_> = (1..=5).map(|n| ask(&tx, &format!("m{n}"))).collect();
    let status = wait_status(&handle, ActorStatus::is_terminal).await;
    let reason = match status {
        ActorStatus::Failed { reason } => reason,
        other => panic!("expected Failed, got {other:?}"),
    };
    assert!(reason.contains("3 times"), "{reason}");
    assert!(reason.contains("cannot handle m3"), "{reason}");
    assert_eq!(handle.restarts(), 2);
    assert_eq!(probe.creates(), 3);

    let mut answers = Vec::new();
    for rx in replies {
        answers.push(rx.await);
    }
    // Crashed ones lost their reply channel; queued ones were rejected with the reason.
    for a in &answers[..3] {
        assert!(a.is_err());
    }
    for a in &answers[3..] {
        let err = a.clone().unwrap().unwrap_err();
        assert!(
            err.contains("actor failed") && err.contains("3 times"),
            "{err}"
        );
    }

    // Messages sent after the failure are rejected too, not dropped and not refused.
    let late = ask(&tx, "m6").await.unwrap();
    assert!(late.unwrap_err().contains("actor failed"));
    let rejected = probe.rejected();
    let bodies: Vec<_> = rejected.iter().map(|(b, _)| b.as_str()).collect();
    assert_eq!(bodies, vec!["m4", "m5", "m6"]);
    assert!(rejected
        .iter()
        .all(|(_, why)| matches!(why, Rejection::Failed { reason: r } if *r == reason)));
    assert!(
        !tx.is_closed(),
        "a failed actor keeps its mailbox open to answer senders"
    );
    assert_eq!(probe.creates(), 3, "no restart after giving up");
}

#[tokio::test(start_paused = true)]
async fn failing_create_counts_as_crash_and_fails() {
    let (handle, probe) = spawn(false, true, 16, policy(3, Duration::from_millis(10)));
    let first = ask(handle.sender(), "x");
    let status = wait_status(&handle, ActorStatus::is_terminal).await;
    match status {
        ActorStatus::Failed { reason } => {
            assert!(
                reason.contains("4 times") && reason.contains("cannot instantiate"),
                "{reason}"
            )
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(probe.creates(), 4);
    assert!(first
        .await
        .unwrap()
        .unwrap_err()
        .contains("cannot instantiate"));
}

#[tokio::test(start_paused = true)]
async fn full_mailbox_refuses_while_actor_is_busy() {
    let (handle, probe) = spawn(false, false, 2, policy(5, Duration::from_millis(10)));
    let tx = handle.sender().clone();
    let busy = ask(&tx, "wait");
    probe.gate.entered.notified().await;
    let q1 = ask(&tx, "q1");
    let q2 = ask(&tx, "q2");
    let (reply, _rx) = oneshot::channel();
    match tx.try_send(Msg {
        body: "q3".into(),
        reply: Some(reply),
    }) {
        Err(TrySendError::Full(msg)) => assert_eq!(msg.body, "q3"),
        other => panic!("expected Full, got {:?}", other.map_err(|e| e.to_string())),
    }
    probe.gate.release.notify_one();
    assert_eq!(busy.await.unwrap(), Ok(1));
    assert_eq!(q1.await.unwrap(), Ok(2));
    assert_eq!(q2.await.unwrap(), Ok(3));
}

#[tokio::test(start_paused = true)]
async fn stop_finishes_current_and_rejects_queued() {
    let (handle, probe) = spawn(false, false, 16, policy(5, Duration::from_millis(10)));
    let tx = handle.sender().clone();
    let mut status = handle.subscribe();
    let busy = ask(&tx, "wait");
    probe.gate.entered.notified().await;
    let queued: Vec<_> = ["q1", "q2", "q3"].iter().map(|b| ask(&tx, b)).collect();

    let stop = handle.stop();
    tokio::pin!(stop);
    // Poll `stop` once so the request is registered while the handler is still running.
    tokio::select! {
        biased;
        _ = &mut stop => panic!("stop returned while a handler was running"),
        _ = std::future::ready(()) => {}
    }
    probe.gate.release.notify_one();
    stop.await;

    assert_eq!(
        busy.await.unwrap(),
        Ok(1),
        "the current message must finish"
    );
    for rx in queued {
        assert_eq!(rx.await.unwrap(), Err("actor stopped".to_string()));
    }
    let bodies = probe.rejected();
    assert_eq!(
        bodies,
        vec![
            ("q1".to_string(), Rejection::Stopped),
            ("q2".to_string(), Rejection::Stopped),
            ("q3".to_string(), Rejection::Stopped)
        ]
    );
    assert_eq!(*status.borrow_and_update(), ActorStatus::Stopped);
    assert!(tx.is_closed());
    let (reply, _rx) = oneshot::channel();
    assert!(matches!(
        tx.try_send(Msg {
            body: "late".into(),
            reply: Some(reply)
        }),
        Err(TrySendError::Closed(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn stop_cuts_the_backoff_short() {
    let (handle, probe) = spawn(false, false, 16, policy(5, Duration::from_secs(3600)));
    let tx = handle.sender().clone();
    let mut status = handle.subscribe();
    let _boom = ask(&tx, "boom");
    wait_status(&handle, |s| matches!(s, ActorStatus::Restarting { .. })).await;
    let queued = ask(&tx, "q");
    handle.stop().await;
    assert_eq!(queued.await.unwrap(), Err("actor stopped".to_string()));
    assert_eq!(probe.creates(), 1, "stopped actor must not be recreated");
    assert_eq!(*status.borrow_and_update(), ActorStatus::Stopped);
}

#[tokio::test(start_paused = true)]
async fn stop_idle_actor() {
    let (handle, probe) = spawn(false, false, 16, policy(5, Duration::from_millis(10)));
    let tx = handle.sender().clone();
    assert_eq!(ask(&tx, "a").await.unwrap(), Ok(1));
    let mut status = handle.subscribe();
    handle.stop().await;
    assert_eq!(*status.borrow_and_update(), ActorStatus::Stopped);
    assert!(tx.is_closed());
    assert!(probe.rejected().is_empty());
}

#[tokio::test(start_paused = true)]
async fn dropping_every_sender_ends_the_task() {
    let (handle, _probe) = spawn(false, false, 16, policy(5, Duration::from_millis(10)));
    let mut status = handle.subscribe();
    let tx = handle.sender().clone();
    drop(handle);
    // Still running while a sender exists: dropping the handle only detaches.
    assert_eq!(ask(&tx, "a").await.unwrap(), Ok(1));
    drop(tx);
    let end = status
        .wait_for(ActorStatus::is_terminal)
        .await
        .unwrap()
        .clone();
    assert_eq!(end, ActorStatus::Stopped);
}

/// Many messages from another thread arrive in order and all get handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_through_actor_under_load() {
    enum Op {
        Num(u64),
        Flush(oneshot::Sender<(u64, bool)>),
    }
    struct Seq {
        next: u64,
        in_order: bool,
    }
    impl Actor for Seq {
        type Msg = Op;
        async fn handle(&mut self, msg: Op) -> Result<(), Crash> {
            match msg {
                Op::Num(n) => {
                    self.in_order &= n == self.next;
                    self.next += 1;
                }
                Op::Flush(reply) => {
                    let _ = reply.send((self.next, self.in_order));
                }
            }
            Ok(())
        }
    }
    struct SeqFactory;
    impl ActorFactory for SeqFactory {
        type Actor = Seq;
        async fn create(&mut self) -> Result<Seq, Crash> {
            Ok(Seq {
                next: 0,
                in_order: true,
            })
        }
        fn reject(&mut self, _msg: Op, why: &Rejection) {
            panic!("unexpected rejection: {why}");
        }
    }

    const N: u64 = 100_000;
    let handle = spawn_supervised(SeqFactory, 1024, RestartPolicy::default());
    let tx = handle.sender().clone();
    tokio::spawn(async move {
        for n in 0..N {
            let mut op = Op::Num(n);
            loop {
                match tx.try_send(op) {
                    Ok(()) => break,
                    Err(TrySendError::Full(back)) => {
                        op = back;
                        tokio::task::yield_now().await;
                    }
                    Err(TrySendError::Closed(_)) => panic!("closed"),
                }
            }
        }
        let (reply, rx) = oneshot::channel();
        tx.push_committed(Op::Flush(reply)).ok().unwrap();
        rx.await.unwrap()
    })
    .await
    .map(|(count, in_order)| {
        assert_eq!(count, N);
        assert!(in_order, "messages were reordered");
    })
    .unwrap();
    assert_eq!(handle.restarts(), 0);
    handle.stop().await;
}

#[tokio::test(start_paused = true)]
async fn stopping_a_failed_actor_keeps_failed_and_closes() {
    let (handle, probe) = spawn(false, true, 16, policy(0, Duration::from_millis(10)));
    let mut status = handle.subscribe();
    let tx = handle.sender().clone();
    wait_status(&handle, ActorStatus::is_terminal).await;
    handle.stop().await;
    assert!(
        matches!(&*status.borrow_and_update(), ActorStatus::Failed { reason } if reason.contains("cannot instantiate"))
    );
    assert!(tx.is_closed());
    assert_eq!(probe.creates(), 1);
}
