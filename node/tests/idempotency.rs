//! Idempotency keys on one node, through the node's own front door: a keyed request runs
//! once and every retry gets the first attempt's outcome (a reply or the handler's
//! error), another payload under the same key is refused, bad keys are refused at the
//! door, records are removed with their component, and the header works over HTTP. A
//! keyed durable send is queued once per key the same way.
#![allow(clippy::unwrap_used)]

mod common;

use airssys_node::api::{AdminBackend, Delivery, ErrorKind};
use std::time::Duration;

async fn keyed(
    host: &airssys_node::cluster::ClusterHost,
    name: &str,
    payload: &str,
    delivery: Delivery,
    key: Option<&str>,
) -> Result<String, airssys_node::api::ApiError> {
    host.request(
        name,
        payload.as_bytes().to_vec(),
        Duration::from_secs(10),
        delivery,
        key.map(str::to_string),
    )
    .await
    .map(|b| String::from_utf8(b).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_request_runs_once_and_every_retry_gets_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let host = common::open(dir.path()).await;
    common::install(&host, "counter", "counter").await;

    let first = keyed(&host, "counter", "inc a", Delivery::Durable, Some("k-1")).await;
    assert_eq!(first.unwrap().trim(), "1");
    // The same request again, durable or fast: the first reply, nothing applied again.
    for delivery in [Delivery::Durable, Delivery::Fast, Delivery::Durable] {
        let again = keyed(&host, "counter", "inc a", delivery, Some("k-1")).await;
        assert_eq!(again.unwrap().trim(), "1", "{delivery:?}");
    }
    assert_eq!(
        common::ask(&host, "counter", "get").await.unwrap().trim(),
        "1"
    );
    assert_eq!(
        common::ask(&host, "counter", "times a")
            .await
            .unwrap()
            .trim(),
        "1",
        "the keyed increment was applied once"
    );

    // The same key with another payload: refused, and nothing applied.
    let reused = keyed(&host, "counter", "inc b", Delivery::Durable, Some("k-1"))
        .await
        .unwrap_err();
    assert_eq!(reused.error, ErrorKind::KeyReused, "{reused}");
    assert!(reused.message.contains("k-1"), "{reused}");
    assert_eq!(
        common::ask(&host, "counter", "get").await.unwrap().trim(),
        "1"
    );

    // Another key is another request; no key is a request each time.
    let other = keyed(&host, "counter", "inc b", Delivery::Fast, Some("k-2")).await;
    assert_eq!(other.unwrap().trim(), "2");
    assert_eq!(
        common::ask(&host, "counter", "inc").await.unwrap().trim(),
        "3"
    );
    assert_eq!(
        common::ask(&host, "counter", "inc").await.unwrap().trim(),
        "4"
    );

    // Keys are per component: the same key at another component is its own request.
    common::install(&host, "counter-2", "counter").await;
    let there = keyed(&host, "counter-2", "inc a", Delivery::Durable, Some("k-1")).await;
    assert_eq!(there.unwrap().trim(), "1");

    // A key that breaks the rule is refused before anything runs.
    for bad in ["a/b", "", "~fwd:1:x", "sp ace"] {
        let e = keyed(&host, "counter", "inc", Delivery::Durable, Some(bad))
            .await
            .unwrap_err();
        assert_eq!(e.error, ErrorKind::BadRequest, "{bad:?}: {e}");
    }
    assert_eq!(
        common::ask(&host, "counter", "get").await.unwrap().trim(),
        "4"
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_error_is_the_outcome_every_retry_gets() {
    let dir = tempfile::tempdir().unwrap();
    let host = common::open(dir.path()).await;
    common::install(&host, "crash", "crash").await;

    for _ in 0..2 {
        let e = keyed(&host, "crash", "fail", Delivery::Durable, Some("f-1"))
            .await
            .unwrap_err();
        assert_eq!(e.error, ErrorKind::Rejected, "{e}");
        assert!(e.message.contains("failed on purpose"), "{e}");
    }
    // A trap is an outcome too: the retry does not crash the component again.
    let trapped = keyed(&host, "crash", "trap", Delivery::Durable, Some("t-1"))
        .await
        .unwrap_err();
    assert_eq!(trapped.error, ErrorKind::Trapped, "{trapped}");
    let restarts_after_trap = host.describe("crash").await.unwrap().restarts;
    let again = keyed(&host, "crash", "trap", Delivery::Durable, Some("t-1"))
        .await
        .unwrap_err();
    assert_eq!(again.error, ErrorKind::Trapped, "{again}");
    assert_eq!(
        host.describe("crash").await.unwrap().restarts,
        restarts_after_trap,
        "the retry ran the trapping handler again"
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_survive_a_restart_and_go_with_their_component() {
    let dir = tempfile::tempdir().unwrap();
    let host = common::open(dir.path()).await;
    common::install(&host, "counter", "counter").await;
    let first = keyed(&host, "counter", "inc x", Delivery::Durable, Some("r-1")).await;
    assert_eq!(first.unwrap().trim(), "1");
    host.shutdown().await;
    drop(host);

    let host = common::open(dir.path()).await;
    let again = keyed(&host, "counter", "inc x", Delivery::Durable, Some("r-1")).await;
    assert_eq!(
        again.unwrap().trim(),
        "1",
        "the record was lost in the restart"
    );

    // Removed and installed again under the name: a fresh component, fresh keys.
    host.remove("counter").await.unwrap();
    common::install(&host, "counter", "counter").await;
    let fresh = keyed(&host, "counter", "inc x", Delivery::Durable, Some("r-1")).await;
    assert_eq!(fresh.unwrap().trim(), "1");
    assert_eq!(
        common::ask(&host, "counter", "get").await.unwrap().trim(),
        "1"
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_send_is_queued_once_and_every_retry_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let host = common::open(dir.path()).await;
    common::install(&host, "counter", "counter").await;
    let send = |payload: &str, delivery, key: &str| {
        host.send(
            "counter",
            payload.as_bytes().to_vec(),
            delivery,
            Some(key.to_string()),
        )
    };

    for _ in 0..3 {
        send("inc a", Delivery::Durable, "s-1").await.unwrap();
    }
    // A durable request is queued behind the sends: they were all handled before it.
    assert_eq!(
        common::ask(&host, "counter", "times a")
            .await
            .unwrap()
            .trim(),
        "1",
        "a retried keyed send was queued again"
    );

    // The same key with another payload, or for a request: refused, nothing queued.
    let reused = send("inc b", Delivery::Durable, "s-1").await.unwrap_err();
    assert_eq!(reused.error, ErrorKind::KeyReused, "{reused}");
    let as_request = keyed(&host, "counter", "inc a", Delivery::Durable, Some("s-1"))
        .await
        .unwrap_err();
    assert_eq!(as_request.error, ErrorKind::KeyReused, "{as_request}");
    // A fast message is never recorded: a key on it is refused, not ignored.
    let fast = send("inc a", Delivery::Fast, "s-2").await.unwrap_err();
    assert_eq!(fast.error, ErrorKind::BadRequest, "{fast}");
    let bad = send("inc a", Delivery::Durable, "a/b").await.unwrap_err();
    assert_eq!(bad.error, ErrorKind::BadRequest, "{bad}");
    assert_eq!(
        common::ask(&host, "counter", "get").await.unwrap().trim(),
        "1"
    );

    // The record outlives a restart.
    host.shutdown().await;
    drop(host);
    let host = common::open(dir.path()).await;
    host.send(
        "counter",
        b"inc a".to_vec(),
        Delivery::Durable,
        Some("s-1".into()),
    )
    .await
    .unwrap();
    assert_eq!(
        common::ask(&host, "counter", "get").await.unwrap().trim(),
        "1",
        "the send's record was lost in the restart"
    );
    host.shutdown().await;
}
