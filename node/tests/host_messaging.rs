//! Messages between the real example components: request and callback (reply,
//! not-found, timeout), fire-and-forget, and money conservation across many durable
//! transfers, including a node restart in the middle.
#![allow(clippy::unwrap_used)]

mod common;

use airssys_node::api::{AdminBackend, Delivery, LimitsRequest};
use airssys_node::commit::{CommitFuture, Committer};
use airssys_storage::CommitBatch;
use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

async fn last(host: &airssys_node::cluster::ClusterHost, ping: &str) -> String {
    eventually(Duration::from_secs(15), || async {
        let v = ask(host, ping, "last").await.unwrap();
        (v != "none").then_some(v)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_gets_the_counters_reply_through_its_callback() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path()).await;
    install(&host, "counter", "counter").await;
    install(&host, "ping", "ping").await;
    for _ in 0..2 {
        ask(&host, "counter", "inc").await.unwrap();
    }
    let sent = ask(&host, "ping", "ping counter").await.unwrap();
    assert!(sent.starts_with("sent "), "{sent}");
    assert_eq!(last(&host, "ping").await, "2");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_requests_get_their_callback_too() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path()).await;
    install(&host, "counter", "counter").await;
    install(&host, "ping", "ping").await;
    ask(&host, "counter", "inc").await.unwrap();
    ask(&host, "ping", "ping-fast counter").await.unwrap();
    assert_eq!(last(&host, "ping").await, "1");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_to_a_missing_component_calls_back_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path()).await;
    install(&host, "ping", "ping").await;
    ask(&host, "ping", "ping nobody").await.unwrap();
    assert_eq!(last(&host, "ping").await, "not-found");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_gets_no_answer_in_time_calls_back_timeout_once() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path()).await;
    let slow = LimitsRequest {
        deadline_ms: Some(1_500),
        ..Default::default()
    };
    install_with(&host, "crash", "crash", slow).await;
    install(&host, "ping", "ping").await;
    // `crash` answers `get` with its stored poison ("none") but first it is kept busy
    // spinning until its deadline, far past ping's 100 ms timeout.
    host.send("crash", b"spin".to_vec(), Delivery::Fast, None)
        .await
        .unwrap();
    ask(&host, "ping", "ping crash 100").await.unwrap();
    assert_eq!(last(&host, "ping").await, "timeout");
    // The late reply (after crash recovers) must not produce a second callback.
    assert_eq!(ask(&host, "crash", "hello").await.unwrap(), "ok");
    assert_eq!(ask(&host, "ping", "last").await.unwrap(), "timeout");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_requests_time_out_with_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path()).await;
    let slow = LimitsRequest {
        deadline_ms: Some(1_000),
        ..Default::default()
    };
    install_with(&host, "crash", "crash", slow).await;
    let err = host
        .request(
            "crash",
            b"spin".to_vec(),
            Duration::from_millis(100),
            Delivery::Fast,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.error, airssys_node::api::ErrorKind::Timeout);
    host.shutdown().await;
}

async fn balances(host: &airssys_node::cluster::ClusterHost, names: &[String]) -> Vec<u64> {
    let mut out = Vec::new();
    for n in names {
        out.push(ask(host, n, "balance").await.unwrap().parse().unwrap());
    }
    out
}

/// Waits until every durable message has been consumed: no mailbox holds anything and
/// two readings in a row agree. Bounded, so a broken run fails instead of hanging.
async fn settle(host: &airssys_node::cluster::ClusterHost, names: &[String]) -> Vec<u64> {
    let start = std::time::Instant::now();
    let mut previous: Option<Vec<u64>> = None;
    loop {
        let now = balances(host, names).await;
        let idle = host
            .list()
            .await
            .unwrap()
            .iter()
            .all(|c| c.mailbox_depth == 0);
        if idle && previous.as_ref() == Some(&now) {
            return now;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never settled: {now:?}"
        );
        previous = Some(now);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_is_conserved_across_transfers_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..5).map(|i| format!("acct-{i}")).collect();
    let initial = 1_000u64;
    {
        let host = open(dir.path()).await;
        for n in &names {
            install(&host, n, "account").await;
            ask(&host, n, &format!("deposit {initial}")).await.unwrap();
        }
        // A deterministic pseudo-random workload; fire-and-forget so transfers pile up
        // and some are still in flight when the node stops.
        let mut x: u64 = 42;
        for _ in 0..300 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let from = &names[(x >> 33) as usize % names.len()];
            let to = &names[(x >> 17) as usize % names.len()];
            let amount = (x >> 45) % 50 + 1;
            host.send(
                from,
                format!("transfer {amount} {to}").into_bytes(),
                Delivery::Durable,
                None,
            )
            .await
            .unwrap();
        }
        host.shutdown().await;
    }
    let host = open(dir.path()).await;
    let after = settle(&host, &names).await;
    assert_eq!(
        after.iter().sum::<u64>(),
        initial * names.len() as u64,
        "{after:?}"
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_messages_in_flight_at_shutdown_are_handled_exactly_once_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sent = 300usize;
    {
        let host = open(dir.path()).await;
        install(&host, "counter", "counter").await;
        install(&host, "ping", "ping").await;
        // One handler commits 300 durable `inc`s at once; they all land in counter's
        // mailbox together, and the node stops while most are still queued.
        assert_eq!(
            ask(&host, "ping", &format!("blast {sent} counter durable inc"))
                .await
                .unwrap(),
            "ok"
        );
        host.shutdown().await;
    }
    let host = open(dir.path()).await;
    let replayed = host.host().replayed_on_open();
    let count: usize = eventually(Duration::from_secs(30), || async {
        let info = host.describe("counter").await.unwrap();
        let c: usize = ask(&host, "counter", "get").await.unwrap().parse().unwrap();
        (info.mailbox_depth == 0 && c >= sent).then_some(c)
    })
    .await;
    eprintln!("re-delivered after restart: {replayed}");
    assert_eq!(count, sent, "each durable inc must count exactly once");
    // Nothing is left to deliver: a second restart re-delivers nothing.
    host.shutdown().await;
    drop(host);
    let host = open(dir.path()).await;
    assert_eq!(host.host().replayed_on_open(), 0);
    assert_eq!(
        ask(&host, "counter", "get").await.unwrap(),
        sent.to_string()
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_delivery_class_keeps_fifo_order_per_sender_and_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path()).await;
    install(&host, "source", "account").await;
    install(&host, "sink", "account").await;
    // `transfer 1` succeeds only if the `deposit 1` sent just before it was handled
    // first: any reordering leaves money behind in `source`.
    for delivery in [Delivery::Durable, Delivery::Fast] {
        for _ in 0..100 {
            host.send("source", b"deposit 1".to_vec(), delivery, None)
                .await
                .unwrap();
            host.send("source", b"transfer 1 sink".to_vec(), delivery, None)
                .await
                .unwrap();
        }
    }
    let sink: u64 = eventually(Duration::from_secs(30), || async {
        let v: u64 = ask(&host, "sink", "balance")
            .await
            .unwrap()
            .parse()
            .unwrap();
        (v == 200).then_some(v)
    })
    .await;
    assert_eq!(sink, 200);
    assert_eq!(ask(&host, "source", "balance").await.unwrap(), "0");
    host.shutdown().await;
}

/// The node's committer, counting the handler commits it is asked for.
struct Counting {
    inner: Arc<dyn Committer>,
    handler_commits: Arc<AtomicUsize>,
}

impl Committer for Counting {
    fn commit_handler(&self, batch: CommitBatch) -> CommitFuture {
        self.handler_commits.fetch_add(1, Ordering::SeqCst);
        self.inner.commit_handler(batch)
    }

    fn commit(&self, batch: CommitBatch) -> CommitFuture {
        self.inner.commit(batch)
    }

    fn incarnation_of(&self, name: &str) -> Option<u64> {
        self.inner.incarnation_of(name)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_writes_nothing_and_sends_nothing_durable_needs_no_commit() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path()).await;
    let commits = Arc::new(AtomicUsize::new(0));
    host.host().set_committer(Arc::new(Counting {
        inner: host.host().committer(),
        handler_commits: commits.clone(),
    }));
    install(&host, "echo", "echo").await;
    install(&host, "counter", "counter").await;
    let before = commits.load(Ordering::SeqCst);
    for _ in 0..50 {
        host.request(
            "echo",
            b"hi".to_vec(),
            Duration::from_secs(5),
            Delivery::Fast,
            None,
        )
        .await
        .unwrap();
        host.request(
            "counter",
            b"get".to_vec(),
            Duration::from_secs(5),
            Delivery::Fast,
            None,
        )
        .await
        .unwrap();
    }
    assert_eq!(
        commits.load(Ordering::SeqCst),
        before,
        "read-only fast requests committed"
    );
    // A write does commit, once.
    host.request(
        "counter",
        b"inc".to_vec(),
        Duration::from_secs(5),
        Delivery::Fast,
        None,
    )
    .await
    .unwrap();
    assert_eq!(commits.load(Ordering::SeqCst), before + 1);
    host.shutdown().await;
}
