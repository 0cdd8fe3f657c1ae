//! Upgrade in place and rollback through the path the binary runs (a one-node cluster:
//! `ClusterHost`, the Raft log, its state machine and committer):
//!
//! - a component built against `airssys:component@0.1.0` (`counter-v1`) installs and runs,
//!   and its upgrade to `counter` keeps its name and storage, with `counter`'s migration
//!   rewriting the keys v1 used, while requests keep coming: none fails, none is lost or
//!   applied twice;
//! - a migration that fails leaves the old code running and its state untouched;
//! - rollback goes back to the previous code, storage as it is now, and forth again;
//! - bad input: the same binary, garbage, an unknown name, nothing to roll back to, a
//!   component marked failed (restarted by the upgrade first).
#![allow(clippy::unwrap_used)]

mod common;

use airssys_node::api::{
    AdminBackend, ApiError, ComponentState, Delivery, ErrorKind, LimitsRequest, UpgradeRequest,
};
use airssys_node::cluster::ClusterHost;
use common::{ask, eventually, example, install, install_with};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

async fn upgrade(node: &ClusterHost, name: &str, example_name: &str) -> Result<u64, ApiError> {
    upgrade_with(node, name, example(example_name), LimitsRequest::default()).await
}

async fn upgrade_with(
    node: &ClusterHost,
    name: &str,
    binary: Vec<u8>,
    limits: LimitsRequest,
) -> Result<u64, ApiError> {
    node.upgrade(UpgradeRequest {
        name: name.into(),
        binary,
        limits,
    })
    .await
    .map(|info| info.generation)
}

/// A value in the component's own store, read straight from the node's storage.
fn stored(node: &ClusterHost, name: &str, key: &str) -> Option<String> {
    node.host()
        .storage()
        .get(name, key.as_bytes())
        .unwrap()
        .map(|v| String::from_utf8(v).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_0_1_0_component_upgraded_under_load_keeps_every_increment_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(common::open(dir.path()).await);
    install(&node, "c", "counter_v1").await;
    let v1 = node.describe("c").await.unwrap();
    assert_eq!(v1.sha256, sha(&example("counter_v1")));
    assert_eq!(ask(&node, "c", "inc warm").await.unwrap(), "1");
    assert_eq!(stored(&node, "c", "total").as_deref(), Some("1"));

    // A client increments with a fresh id each time while the upgrade is made.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let (node, stop) = (node.clone(), stop.clone());
        tokio::spawn(async move {
            let mut outcomes: BTreeMap<String, Result<String, ApiError>> = BTreeMap::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || i < 40 {
                let id = format!("r{i}");
                outcomes.insert(id.clone(), ask(&node, "c", &format!("inc {id}")).await);
                i += 1;
            }
            outcomes
        })
    };
    // Let some land on the old code first.
    eventually(Duration::from_secs(30), || async {
        (stored(&node, "c", "applied/r5").is_some()).then_some(())
    })
    .await;
    let generation = upgrade_with(&node, "c", example("counter"), LimitsRequest::default())
        .await
        .unwrap();
    assert_eq!(
        generation,
        v1.generation + 1,
        "the switch is one generation"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let outcomes = client.await.unwrap();

    // Every request was handled, by one code or the other; none failed at the switch.
    let failed: Vec<_> = outcomes.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "requests failed across the upgrade: {failed:?}"
    );
    // Replies count up by one: none applied twice, none skipped.
    let mut replies: Vec<u64> = outcomes
        .values()
        .map(|r| r.as_ref().unwrap().parse().unwrap())
        .collect();
    replies.sort();
    let expected: Vec<u64> = (2..2 + outcomes.len() as u64).collect();
    assert_eq!(replies, expected);
    // The migration moved v1's keys; each request id was applied exactly once.
    let total = outcomes.len() as u64 + 1;
    assert_eq!(ask(&node, "c", "get").await.unwrap(), total.to_string());
    assert_eq!(stored(&node, "c", "total"), None, "v1's key was moved");
    assert_eq!(stored(&node, "c", "applied/r0"), None);
    for id in outcomes.keys().chain(std::iter::once(&"warm".to_string())) {
        assert_eq!(
            ask(&node, "c", &format!("times {id}")).await.unwrap(),
            "1",
            "request {id}"
        );
    }
    // Handled by the new code from now on (`tally` is only in `counter`).
    assert!(ask(&node, "c", "tally").await.unwrap().contains("r0 1"));

    let info = node.describe("c").await.unwrap();
    assert_eq!(info.sha256, sha(&example("counter")));
    assert_eq!(info.generation, generation);
    assert_eq!(info.state, ComponentState::Running);
    assert_eq!(
        info.installed_at_ms, v1.installed_at_ms,
        "installed-at stays"
    );
    assert!(info.upgraded_at_ms.unwrap() >= v1.installed_at_ms);
    let previous = info.previous.unwrap();
    assert_eq!(previous.sha256, v1.sha256);
    assert_eq!(previous.since_ms, v1.installed_at_ms);
    // The listing says the same.
    let listed = node.list().await.unwrap();
    assert_eq!(listed[0].previous.as_ref().unwrap().sha256, v1.sha256);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_migration_leaves_the_old_code_and_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::open(dir.path()).await;
    install(&node, "c", "counter").await;
    assert_eq!(ask(&node, "c", "inc").await.unwrap(), "1");
    let before = node.describe("c").await.unwrap();

    // `crash`'s migration writes `migrated`, then refuses.
    let err = upgrade(&node, "c", "crash").await.unwrap_err();
    assert_eq!(err.error, ErrorKind::Rejected, "{err}");
    assert!(
        err.message.contains("crash does not take over")
            && err.message.contains("runs its previous code"),
        "{err}"
    );
    assert_eq!(
        stored(&node, "c", "migrated"),
        None,
        "its write was not applied"
    );
    let after = node.describe("c").await.unwrap();
    assert_eq!(after.sha256, before.sha256);
    assert_eq!(after.generation, before.generation);
    assert_eq!(after.previous, None);
    // The old code goes on, from the state it had.
    assert_eq!(ask(&node, "c", "inc").await.unwrap(), "2");

    // The same binary it runs, garbage, an unknown name: each its own error, nothing changed.
    let same = upgrade(&node, "c", "counter").await.unwrap_err();
    assert_eq!(same.error, ErrorKind::Conflict, "{same}");
    assert!(same.message.contains("already runs"), "{same}");
    let garbage = upgrade_with(
        &node,
        "c",
        b"\0asm garbage".to_vec(),
        LimitsRequest::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(garbage.error, ErrorKind::InvalidComponent, "{garbage}");
    let unknown = upgrade(&node, "nope", "echo").await.unwrap_err();
    assert_eq!(unknown.error, ErrorKind::NotFound, "{unknown}");
    let bad_limits = upgrade_with(
        &node,
        "c",
        example("echo"),
        LimitsRequest {
            memory_mb: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(bad_limits.error, ErrorKind::BadRequest, "{bad_limits}");
    let nothing_back = node.rollback("c").await.unwrap_err();
    assert_eq!(nothing_back.error, ErrorKind::Conflict, "{nothing_back}");
    assert_eq!(
        node.describe("c").await.unwrap().generation,
        before.generation
    );
    assert_eq!(ask(&node, "c", "get").await.unwrap(), "2");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_returns_to_the_previous_code_with_storage_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::open(dir.path()).await;
    install_with(
        &node,
        "c",
        "counter_v1",
        LimitsRequest {
            deadline_ms: Some(1500),
            ..Default::default()
        },
    )
    .await;
    for _ in 0..3 {
        ask(&node, "c", "inc").await.unwrap();
    }
    // Limits not given keep theirs; one given changes.
    let limits = LimitsRequest {
        fuel: Some(50_000_000),
        ..Default::default()
    };
    upgrade_with(&node, "c", example("counter"), limits)
        .await
        .unwrap();
    let upgraded = node.describe("c").await.unwrap();
    assert_eq!(upgraded.limits.deadline_ms, 1500);
    assert_eq!(upgraded.limits.fuel, Some(50_000_000));
    assert_eq!(ask(&node, "c", "get").await.unwrap(), "3");

    // Back to v1, with its limits: it reads `total`, which the migration moved away.
    let back = node.rollback("c").await.unwrap();
    assert_eq!(back.sha256, sha(&example("counter_v1")));
    assert_eq!(back.limits.fuel, None);
    assert_eq!(back.generation, upgraded.generation + 1);
    assert_eq!(back.previous.as_ref().unwrap().sha256, upgraded.sha256);
    assert_eq!(ask(&node, "c", "get").await.unwrap(), "0");
    assert_eq!(ask(&node, "c", "inc").await.unwrap(), "1");
    // And forward again: `counter`'s migration adds v1's new count to what it kept.
    let forth = node.rollback("c").await.unwrap();
    assert_eq!(forth.sha256, upgraded.sha256);
    assert_eq!(forth.limits.fuel, Some(50_000_000));
    assert_eq!(ask(&node, "c", "get").await.unwrap(), "4");
    // Each binary is still in the registry for the next rollback; restarting the node
    // runs the current code.
    node.shutdown().await;
    drop(node);
    let node = common::open(dir.path()).await;
    eventually(Duration::from_secs(30), || async {
        ask(&node, "c", "get").await.ok().filter(|n| n == "4")
    })
    .await;
    assert_eq!(node.describe("c").await.unwrap().sha256, upgraded.sha256);
    let again = node.rollback("c").await.unwrap();
    assert_eq!(again.sha256, back.sha256);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_marked_failed_is_restarted_before_it_is_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::open(dir.path()).await;
    install(&node, "x", "crash").await;
    // Crash it past its restart limit.
    eventually(Duration::from_secs(60), || async {
        let _ = node
            .request(
                "x",
                b"trap".to_vec(),
                Duration::from_secs(5),
                Delivery::Durable,
                None,
            )
            .await;
        matches!(
            node.describe("x").await.ok()?.state,
            ComponentState::Failed { .. }
        )
        .then_some(())
    })
    .await;
    let failed_at = node.describe("x").await.unwrap().generation;
    // The upgrade restarts it (a fresh instance, one generation) and then switches it to
    // the new code (another): echo has no migration to run.
    let generation = upgrade(&node, "x", "echo").await.unwrap();
    assert_eq!(generation, failed_at + 2, "restarted, then upgraded");
    assert_eq!(
        node.describe("x").await.unwrap().state,
        ComponentState::Running
    );
    assert_eq!(ask(&node, "x", "hello").await.unwrap(), "hello");
    node.shutdown().await;
}

/// `binary` with one more custom section: the same code under another digest.
fn variant(binary: &[u8]) -> Vec<u8> {
    let name = b"airssys-test-variant";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(b"same code, another digest");
    let mut out = binary.to_vec();
    out.push(0);
    out.push(payload.len() as u8);
    out.extend_from_slice(&payload);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_pending_at_the_switch_calls_back_into_the_new_code() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::open(dir.path()).await;
    // The target answers slowly: it spins until its 10 s deadline before it takes the request.
    install_with(
        &node,
        "slow",
        "crash",
        LimitsRequest {
            deadline_ms: Some(10_000),
            ..Default::default()
        },
    )
    .await;
    ask(&node, "slow", "hog poison 1").await.unwrap();
    install(&node, "p", "ping").await;
    node.send("slow", b"spin".to_vec(), Delivery::Fast, None)
        .await
        .unwrap();
    let sent = ask(&node, "p", "ping slow 30000").await.unwrap();
    assert!(sent.starts_with("sent "), "{sent}");
    // Switched while its request waits behind the spin: nothing has called back yet.
    let generation = upgrade_with(
        &node,
        "p",
        variant(&example("ping")),
        LimitsRequest::default(),
    )
    .await
    .unwrap();
    assert_eq!(ask(&node, "p", "last").await.unwrap(), "none");
    // The reply reaches the component as it now runs: the new code's callback stores it.
    let last = eventually(Duration::from_secs(60), || async {
        ask(&node, "p", "last").await.ok().filter(|l| l != "none")
    })
    .await;
    assert_eq!(last.len(), 1024, "the target's 1 KiB value: {last:.40}");
    let info = node.describe("p").await.unwrap();
    assert_eq!(info.generation, generation, "no other switch happened");
    assert_eq!(info.sha256, sha(&variant(&example("ping"))));
    node.shutdown().await;
}
