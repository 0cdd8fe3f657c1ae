//! Exactly-once holes, each tested through the path the binary runs: a one-node cluster
//! (`ClusterHost`, the Raft log, its state machine and committer), as `airssys node start`
//! makes it.
//!
//! - a removed and reinstalled name starts from nothing (its commit numbering, its store,
//!   and every other component's pair counters about it);
//! - a durable callback whose commit failed runs when its reply comes again;
//! - a durable message is delivered though its sender was removed before it was consumed
//!   (and the removed sender's mark goes once its last message is consumed);
//! - a handler's transaction cannot grow past what one log entry may carry;
//! - messages numbered for an incarnation of their receiver that has ended are refused
//!   and numbered again for the current one;
//! - an external durable send numbered before an earlier one of unknown outcome applied is
//!   refused, never taken for a repeat (its `202` would be a lie);
//! - the redelivery sweep hands again only what waits, and no more than the receiver's
//!   mailbox has room for.
#![allow(clippy::unwrap_used)]

mod common;

use airssys_node::api::{AdminBackend, ApiError, Delivery, ErrorKind, InstallRequest};
use airssys_node::cluster::ClusterHost;
use airssys_node::commit::{CommitError, CommitFuture, Committer};
use airssys_storage::CommitBatch;
use common::{eventually, example};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

async fn one_node(dir: &Path) -> ClusterHost {
    common::open(dir).await
}

async fn install(node: &ClusterHost, name: &str, example_name: &str) {
    node.install(InstallRequest {
        name: name.into(),
        binary: example(example_name),
        limits: Default::default(),
    })
    .await
    .unwrap_or_else(|e| panic!("install {name}: {e}"));
}

async fn ask(node: &ClusterHost, name: &str, text: &str) -> Result<String, ApiError> {
    node.request(
        name,
        text.as_bytes().to_vec(),
        Duration::from_secs(20),
        Delivery::Durable,
        None,
    )
    .await
    .map(|b| String::from_utf8(b).unwrap())
}

/// Waits until `p`'s last callback stored `want`.
async fn until_last(node: &ClusterHost, want: &str) {
    eventually(Duration::from_secs(30), || async {
        (ask(node, "p", "last").await.ok()? == want).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_and_reinstalled_component_starts_from_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = one_node(dir.path()).await;
    install(&node, "c", "counter").await;
    install(&node, "p", "ping").await;
    assert_eq!(ask(&node, "c", "inc").await.unwrap(), "1");
    assert_eq!(ask(&node, "c", "inc").await.unwrap(), "2");
    // `p` talks to this incarnation of `c`: both ends number their pair.
    ask(&node, "p", "ping c").await.unwrap();
    until_last(&node, "2").await;
    let first = node.describe("c").await.unwrap().generation;

    node.remove("c").await.unwrap();
    install(&node, "c", "counter").await;
    let second = node.describe("c").await.unwrap().generation;
    assert!(
        second > first,
        "a new incarnation gets a generation never given before ({first} then {second})"
    );
    // Its commit numbering starts again (it failed with "commit 3 of c skips 1"), and its
    // store is empty.
    assert_eq!(ask(&node, "c", "get").await.unwrap(), "0");
    assert_eq!(ask(&node, "c", "inc").await.unwrap(), "1");
    assert_eq!(ask(&node, "c", "inc").await.unwrap(), "2");
    // `p` forgot its pair with the old `c`: its next durable request is the new pair's
    // first, not one the new `c` would hold back forever as out of order.
    assert_eq!(ask(&node, "p", "last").await.unwrap(), "2");
    ask(&node, "p", "ping c").await.unwrap();
    until_last(&node, "2").await;
    assert_eq!(ask(&node, "c", "inc").await.unwrap(), "3");
    ask(&node, "p", "ping c").await.unwrap();
    until_last(&node, "3").await;
    node.shutdown().await;
}

/// The node's committer, refusing the handler commits a predicate picks (while it says so).
struct Refusing {
    inner: Arc<dyn Committer>,
    refuse: Box<dyn Fn(&CommitBatch) -> bool + Send + Sync>,
    refused: AtomicUsize,
    /// A name whose incarnation this node reports as the one given (a node that has not
    /// applied its removal yet).
    lagging: std::sync::Mutex<Option<(String, u64)>>,
}

struct RefusingCommitter(Arc<Refusing>);

/// The node's committer, with the first external durable send's commit held back: its
/// sender hears "failed" at once, and the held commit is applied late, just before the
/// next external send's (which was numbered while the first had not applied).
struct LateFirstSend {
    inner: Arc<dyn Committer>,
    held: tokio::sync::Mutex<Option<CommitBatch>>,
    seen: AtomicUsize,
}

struct LateCommitter(Arc<LateFirstSend>);

impl Committer for LateCommitter {
    fn commit_handler(&self, batch: CommitBatch) -> CommitFuture {
        self.0.inner.commit_handler(batch)
    }

    fn commit(&self, batch: CommitBatch) -> CommitFuture {
        let this = self.0.clone();
        Box::pin(async move {
            if this.seen.fetch_add(1, Ordering::SeqCst) == 0 {
                *this.held.lock().await = Some(batch);
                return Err(CommitError::Failed(
                    "outcome unknown (held by the test)".into(),
                ));
            }
            if let Some(late) = this.held.lock().await.take() {
                this.inner.commit(late).await?;
            }
            this.inner.commit(batch).await
        })
    }

    fn incarnation_of(&self, name: &str) -> Option<u64> {
        self.0.inner.incarnation_of(name)
    }
}

impl Committer for RefusingCommitter {
    fn commit_handler(&self, batch: CommitBatch) -> CommitFuture {
        let this = self.0.clone();
        Box::pin(async move {
            if (this.refuse)(&batch) {
                this.refused.fetch_add(1, Ordering::SeqCst);
                return Err(CommitError::Failed("refused by the test".into()));
            }
            this.inner.commit_handler(batch).await
        })
    }

    fn commit(&self, batch: CommitBatch) -> CommitFuture {
        self.0.inner.commit(batch)
    }

    fn incarnation_of(&self, name: &str) -> Option<u64> {
        if let Some((lagging, incarnation)) = self.0.lagging.lock().unwrap().as_ref() {
            if lagging == name {
                return Some(*incarnation);
            }
        }
        self.0.inner.incarnation_of(name)
    }
}

/// Puts a refusing committer in front of the node's own (before any component starts).
fn refuse_on(
    node: &ClusterHost,
    refuse: impl Fn(&CommitBatch) -> bool + Send + Sync + 'static,
) -> Arc<Refusing> {
    let gate = Arc::new(Refusing {
        inner: node.host().committer(),
        refuse: Box::new(refuse),
        refused: AtomicUsize::new(0),
        lagging: std::sync::Mutex::new(None),
    });
    node.host()
        .set_committer(Arc::new(RefusingCommitter(gate.clone())));
    gate
}

fn fenced_on(batch: &CommitBatch, name: &str) -> bool {
    batch.fence.as_ref().is_some_and(|f| f.component == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_callback_whose_commit_failed_runs_when_its_reply_comes_again() {
    let dir = tempfile::tempdir().unwrap();
    let node = one_node(dir.path()).await;
    // The first commit of `p` that consumes a callback (it deletes a pending request).
    let once = AtomicBool::new(false);
    let gate = refuse_on(&node, move |batch| {
        fenced_on(batch, "p")
            && batch
                .sys
                .iter()
                .any(|(k, v)| k.starts_with(b"pend/p/") && v.is_none())
            && !once.swap(true, Ordering::SeqCst)
    });
    install(&node, "c", "counter").await;
    install(&node, "p", "ping").await;
    assert_eq!(ask(&node, "c", "inc").await.unwrap(), "1");
    // A long timeout: the callback must come from the reply, not from a timeout.
    ask(&node, "p", "ping c 60000").await.unwrap();
    eventually(Duration::from_secs(30), || async {
        (gate.refused.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    // The reply stays in p's outbox and is handed again; the callback then runs (it was
    // taken for a late reply and consumed without a callback).
    let last = eventually(Duration::from_secs(30), || async {
        let last = ask(&node, "p", "last").await.ok()?;
        (last != "none").then_some(last)
    })
    .await;
    assert_eq!(last, "1", "the callback stored the reply");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_cannot_queue_more_than_one_entry_may_carry() {
    let dir = tempfile::tempdir().unwrap();
    let node = one_node(dir.path()).await;
    install(&node, "p", "ping").await;
    install(&node, "e", "echo").await;
    // 24 durable messages of almost 1 MiB each: 24 MiB, past the 16 MiB a transaction
    // may carry.
    let text = "x".repeat((1 << 20) - 64);
    let err = ask(&node, "p", &format!("blast 24 e durable {text}"))
        .await
        .unwrap_err();
    assert_eq!(err.error, ErrorKind::Rejected, "{err}");
    assert!(err.message.contains("payload-too-large"), "{err}");
    // Under the cap it goes, and the node keeps serving.
    assert_eq!(
        ask(&node, "p", &format!("blast 8 e durable {text}"))
            .await
            .unwrap(),
        "ok"
    );
    install(&node, "c", "counter").await;
    assert_eq!(ask(&node, "c", "inc").await.unwrap(), "1");
    node.shutdown().await;
}

/// The balance, or `None` while the account cannot answer (it is restarted by the removal
/// of a sender whose message it had not consumed: `unavailable`, retry).
async fn balance(node: &ClusterHost, name: &str) -> Option<u64> {
    ask(node, name, "balance")
        .await
        .ok()
        .map(|b| b.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_message_is_delivered_though_its_sender_was_removed() {
    let dir = tempfile::tempdir().unwrap();
    let node = one_node(dir.path()).await;
    let hold = Arc::new(AtomicBool::new(false));
    let held = hold.clone();
    // While `hold` is set, every commit of `b` fails: what is sent to it stays unconsumed.
    let gate = refuse_on(&node, move |batch| {
        held.load(Ordering::SeqCst) && fenced_on(batch, "b")
    });
    install(&node, "a", "account").await;
    install(&node, "b", "account").await;
    assert_eq!(ask(&node, "a", "deposit 100").await.unwrap(), "100");
    assert_eq!(ask(&node, "a", "transfer 10 b").await.unwrap(), "ok");
    eventually(Duration::from_secs(30), || async {
        (balance(&node, "b").await? == 10).then_some(())
    })
    .await;

    hold.store(true, Ordering::SeqCst);
    // The debit commits; the credit waits in the outbox, refused at `b` each time it comes.
    assert_eq!(ask(&node, "a", "transfer 5 b").await.unwrap(), "ok");
    eventually(Duration::from_secs(30), || async {
        (gate.refused.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    node.remove("a").await.unwrap();
    hold.store(false, Ordering::SeqCst);
    // The credit arrives once, from the removed sender.
    eventually(Duration::from_secs(30), || async {
        (balance(&node, "b").await? == 15).then_some(())
    })
    .await;
    // Its last message consumed, nothing of the removed sender is left at `b`.
    let storage = node.host().storage().clone();
    let leftovers = |prefix: &[u8]| {
        storage
            .sys_scan_prefix(prefix)
            .unwrap()
            .into_iter()
            .filter(|(k, _)| k.windows(2).any(|w| w == b"a~"))
            .count()
    };
    eventually(Duration::from_secs(30), || async {
        (leftovers(b"dd/b/") == 0).then_some(())
    })
    .await;
    assert_eq!(
        leftovers(b"ob/"),
        0,
        "no message to or from the former name waits"
    );
    assert_eq!(leftovers(b"ps/"), 0, "no counter about the former name");

    // A new `a` numbers its messages apart: its first transfer is neither dropped as a
    // repeat of the old one's nor held back.
    install(&node, "a", "account").await;
    assert_eq!(
        ask(&node, "a", "balance").await.unwrap(),
        "0",
        "a new account"
    );
    assert_eq!(ask(&node, "a", "deposit 7").await.unwrap(), "7");
    assert_eq!(ask(&node, "a", "transfer 7 b").await.unwrap(), "ok");
    eventually(Duration::from_secs(30), || async {
        (balance(&node, "b").await? == 22).then_some(())
    })
    .await;
    // And nothing is applied twice: it stays there.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(balance(&node, "b").await, Some(22));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_numbered_for_an_ended_incarnation_are_refused_and_numbered_again() {
    let dir = tempfile::tempdir().unwrap();
    let node = one_node(dir.path()).await;
    let gate = refuse_on(&node, |_| false);
    install(&node, "c", "counter").await;
    install(&node, "p", "ping").await;
    assert_eq!(ask(&node, "c", "inc").await.unwrap(), "1");
    ask(&node, "p", "ping c").await.unwrap();
    until_last(&node, "1").await;
    assert_eq!(ask(&node, "c", "inc").await.unwrap(), "2");
    ask(&node, "p", "ping c").await.unwrap();
    until_last(&node, "2").await;
    let old = gate.inner.incarnation_of("c").unwrap();

    node.remove("c").await.unwrap();
    install(&node, "c", "counter").await;
    assert_eq!(ask(&node, "c", "inc").await.unwrap(), "1");
    let new = gate.inner.incarnation_of("c").unwrap();
    assert!(new > old, "a new incarnation ({old} then {new})");
    // `p` numbers as a node would that has not applied the removal yet: for the old `c`.
    // The log refuses the commit, so the new `c` never holds a message it must wait
    // behind; the requester hears why.
    *gate.lagging.lock().unwrap() = Some(("c".into(), old));
    let err = ask(&node, "p", "ping c").await.unwrap_err();
    assert_eq!(err.error, ErrorKind::Unavailable, "{err}");
    assert!(
        err.message.contains(&format!("incarnation {old} of c")),
        "{err}"
    );
    // Caught up: numbered for the new `c`, which answers at once.
    *gate.lagging.lock().unwrap() = None;
    ask(&node, "p", "ping c").await.unwrap();
    until_last(&node, "1").await;
    assert_eq!(ask(&node, "c", "inc").await.unwrap(), "2");
    ask(&node, "p", "ping c").await.unwrap();
    until_last(&node, "2").await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_send_numbered_before_a_late_one_applied_is_refused_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let node = one_node(dir.path()).await;
    install(&node, "c", "counter").await;
    let late = Arc::new(LateFirstSend {
        inner: node.host().committer(),
        held: tokio::sync::Mutex::new(None),
        seen: AtomicUsize::new(0),
    });
    node.host()
        .set_committer(Arc::new(LateCommitter(late.clone())));
    let send = |text: &'static str| {
        let node = node.clone();
        async move {
            node.send("c", text.as_bytes().to_vec(), Delivery::Durable, None)
                .await
        }
    };
    // The first send's outcome is unknown to its client (it will apply late).
    let first = send("inc e-1").await.unwrap_err();
    assert_eq!(first.error, ErrorKind::Unavailable, "{first}");
    // The second was numbered from the count before the first applied: the log refuses
    // it (out of turn) instead of storing it under the first one's number, where the
    // counter would drop it as a repeat after its client heard 202.
    let second = send("inc e-2").await.unwrap_err();
    assert_eq!(second.error, ErrorKind::Unavailable, "{second}");
    assert!(second.message.contains("out of turn"), "{second}");
    // Sent again, it is numbered past the first and applies.
    send("inc e-2").await.unwrap();
    eventually(Duration::from_secs(30), || async {
        (ask(&node, "c", "get").await.ok()? == "2").then_some(())
    })
    .await;
    assert_eq!(ask(&node, "c", "times e-1").await.unwrap(), "1");
    assert_eq!(ask(&node, "c", "times e-2").await.unwrap(), "1");
    node.shutdown().await;
}

/// A counter family's value in `/metrics` text.
fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redelivery_sweep_hands_again_no_more_than_the_mailbox_has_room_for() {
    const ROOM: u64 = 4;
    const WAITING: u64 = 12;
    let dir = tempfile::tempdir().unwrap();
    let node = one_node(dir.path()).await;
    let hold = Arc::new(AtomicBool::new(true));
    let held = hold.clone();
    // While `hold` is set, every handler commit of `c` fails: what is sent to it stays in
    // the outbox, and each sweep hands it again.
    let gate = refuse_on(&node, move |batch| {
        held.load(Ordering::SeqCst) && fenced_on(batch, "c")
    });
    node.install(InstallRequest {
        name: "c".into(),
        binary: example("counter"),
        limits: airssys_node::api::LimitsRequest {
            mailbox: Some(ROOM as u32),
            ..Default::default()
        },
    })
    .await
    .unwrap();
    for i in 0..WAITING {
        node.send(
            "c",
            format!("inc m-{i}").into_bytes(),
            Delivery::Durable,
            None,
        )
        .await
        .unwrap();
    }
    // Four sweeps after the twelve were waiting (each one refused at least once).
    eventually(Duration::from_secs(30), || async {
        (gate.refused.load(Ordering::SeqCst) >= WAITING as usize).then_some(())
    })
    .await;
    let start = counter(&node.metrics().await, "airssys_redelivery_sweeps_total");
    let deepest = AtomicU64::new(0);
    let metrics = eventually(Duration::from_secs(60), || async {
        deepest.fetch_max(
            node.describe("c").await.ok()?.mailbox_depth,
            Ordering::SeqCst,
        );
        let m = node.metrics().await;
        (counter(&m, "airssys_redelivery_sweeps_total") >= start + 4).then_some(m)
    })
    .await;
    let sweeps = counter(&metrics, "airssys_redelivery_sweeps_total");
    let redelivered = counter(&metrics, "airssys_redelivered_total");
    assert!(
        redelivered > 0,
        "the sweep hands again what is still waiting"
    );
    assert!(
        redelivered <= ROOM * sweeps,
        "{redelivered} handed again in {sweeps} sweeps into a mailbox of {ROOM}"
    );
    let deepest = deepest.load(Ordering::SeqCst);
    assert!(deepest <= ROOM, "the mailbox held {deepest} (room {ROOM})");
    // Let through: every one applies once.
    hold.store(false, Ordering::SeqCst);
    eventually(Duration::from_secs(60), || async {
        (ask(&node, "c", "get").await.ok()? == WAITING.to_string()).then_some(())
    })
    .await;
    for i in 0..WAITING {
        assert_eq!(ask(&node, "c", &format!("times m-{i}")).await.unwrap(), "1");
    }
    node.shutdown().await;
}
