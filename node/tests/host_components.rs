//! The real example components through the real engine and storage: isolation,
//! rollback, crashes and restarts, deadlines, memory caps, persistence.
#![allow(clippy::unwrap_used)]

mod common;

use airssys_node::api::{AdminBackend, ComponentState, Delivery, ErrorKind, LimitsRequest};
use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_counters_never_see_each_others_counts() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path()).await;
    install(&host, "c1", "counter").await;
    install(&host, "c2", "counter").await;
    for _ in 0..3 {
        ask(&host, "c1", "inc").await.unwrap();
    }
    assert_eq!(ask(&host, "c2", "inc").await.unwrap(), "1");
    assert_eq!(ask(&host, "c1", "get").await.unwrap(), "3");
    assert_eq!(ask(&host, "c2", "get").await.unwrap(), "1");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_replies_bytes_unchanged_and_unknown_commands_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path()).await;
    install(&host, "echo", "echo").await;
    install(&host, "counter", "counter").await;
    let bytes = vec![0u8, 255, 7, b'\n'];
    let reply = host
        .request(
            "echo",
            bytes.clone(),
            Duration::from_secs(5),
            Delivery::Fast,
            None,
        )
        .await
        .unwrap();
    assert_eq!(reply, bytes);
    let err = ask(&host, "counter", "bogus").await.unwrap_err();
    assert_eq!(err.error, ErrorKind::Rejected);
    assert!(err.message.contains("unknown command"), "{}", err.message);
    // A rejected handler does not break the component.
    assert_eq!(ask(&host, "counter", "inc").await.unwrap(), "1");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_writes_then_traps_leaves_storage_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path()).await;
    install(&host, "crash", "crash").await;
    let err = ask(&host, "crash", "write-then-trap").await.unwrap_err();
    assert_eq!(err.error, ErrorKind::Trapped, "{err}");
    assert_eq!(ask(&host, "crash", "get").await.unwrap(), "none");
    let info = host.describe("crash").await.unwrap();
    assert_eq!(info.storage_bytes, 0);
    assert!(info.restarts >= 1);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapped_component_is_restarted_and_serves_again() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path()).await;
    install(&host, "crash", "crash").await;
    let err = ask(&host, "crash", "trap").await.unwrap_err();
    assert_eq!(err.error, ErrorKind::Trapped);
    assert_eq!(ask(&host, "crash", "hello").await.unwrap(), "ok");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_is_stopped_by_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path()).await;
    let limits = LimitsRequest {
        deadline_ms: Some(200),
        ..Default::default()
    };
    install_with(&host, "crash", "crash", limits).await;
    let err = ask(&host, "crash", "spin").await.unwrap_err();
    assert_eq!(err.error, ErrorKind::Trapped);
    assert!(err.message.contains("deadline exceeded"), "{}", err.message);
    assert_eq!(ask(&host, "crash", "hello").await.unwrap(), "ok");
    host.shutdown().await;
}

/// A component that logs in a loop gets its allowance (a burst of 500 lines) and the rest
/// is dropped and counted, in `describe` and in `/metrics`; it keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_logging_in_a_loop_is_cut_off_and_the_drops_counted() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path()).await;
    install(&host, "crash", "crash").await;
    assert_eq!(ask(&host, "crash", "chatter 5000").await.unwrap(), "5000");
    let info = host.describe("crash").await.unwrap();
    // At most the burst plus what the rate refilled while it ran got through.
    assert!(
        info.log_lines_dropped > 0 && info.log_lines_dropped <= 4_500,
        "{}",
        info.log_lines_dropped
    );
    let metrics = host.metrics().await;
    let line = format!(
        "airssys_component_log_lines_dropped_total{{component=\"crash\"}} {}",
        info.log_lines_dropped
    );
    assert!(metrics.contains(&line), "{line} not in metrics");
    assert_eq!(ask(&host, "crash", "hello").await.unwrap(), "ok");
    host.shutdown().await;
}

/// Recursion without end traps with an error that names the stack limit; the node and the
/// component (a fresh instance) keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_recursion_traps_naming_the_stack_limit() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path()).await;
    install(&host, "crash", "crash").await;
    let err = ask(&host, "crash", "recurse").await.unwrap_err();
    assert_eq!(err.error, ErrorKind::Trapped);
    assert!(
        err.message.contains("stack overflow") && err.message.contains("512 KiB"),
        "{}",
        err.message
    );
    assert_eq!(ask(&host, "crash", "hello").await.unwrap(), "ok");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_is_stopped_by_the_memory_cap() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path()).await;
    let limits = LimitsRequest {
        memory_mb: Some(16),
        ..Default::default()
    };
    install_with(&host, "crash", "crash", limits).await;
    let err = ask(&host, "crash", "oom").await.unwrap_err();
    assert_eq!(err.error, ErrorKind::Trapped);
    assert!(err.message.contains("out of memory"), "{}", err.message);
    assert_eq!(ask(&host, "crash", "hello").await.unwrap(), "ok");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_limit_stops_a_spinning_handler() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path()).await;
    let limits = LimitsRequest {
        fuel: Some(1_000_000),
        ..Default::default()
    };
    install_with(&host, "crash", "crash", limits).await;
    let err = ask(&host, "crash", "spin").await.unwrap_err();
    assert!(err.message.contains("out of fuel"), "{}", err.message);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_that_keeps_crashing_is_marked_failed_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path()).await;
    install(&host, "crash", "crash").await;
    let mut failed = None;
    for _ in 0..20 {
        let err = ask(&host, "crash", "trap").await.unwrap_err();
        if err.error == ErrorKind::Unavailable {
            failed = Some(err);
            break;
        }
        assert_eq!(err.error, ErrorKind::Trapped);
    }
    let err = failed.expect("the component was never marked failed");
    assert!(!err.message.is_empty());
    match host.describe("crash").await.unwrap().state {
        ComponentState::Failed { reason, .. } => assert!(reason.contains("trap"), "{reason}"),
        other => panic!("expected failed, got {other:?}"),
    }
    // The node and other components keep serving.
    install(&host, "echo", "echo").await;
    assert_eq!(ask(&host, "echo", "hi").await.unwrap(), "hi");
    host.shutdown().await;
}

/// `component restart` brings a failed component back: a fresh instance on its node
/// (generation + 1), its storage kept, and a durable message sent while it was failed is
/// handled by the new instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_component_is_restarted_keeping_its_storage_and_waiting_messages() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path()).await;
    install(&host, "crash", "crash").await;
    ask(&host, "crash", "hog first 1").await.unwrap();
    let stored = host.describe("crash").await.unwrap().storage_bytes;
    assert!(stored >= 1024, "{stored}");
    for _ in 0..20 {
        if ask(&host, "crash", "trap").await.unwrap_err().error == ErrorKind::Unavailable {
            break;
        }
    }
    let failed = host.describe("crash").await.unwrap();
    assert!(
        matches!(failed.state, ComponentState::Failed { .. }),
        "{:?}",
        failed.state
    );
    host.send("crash", b"hog second 1".to_vec(), Delivery::Durable, None)
        .await
        .unwrap();

    let restarted = host.restart("crash").await.unwrap();
    assert_eq!(restarted.generation, failed.generation + 1);
    assert_eq!(restarted.node_id, failed.node_id);
    assert_eq!(ask(&host, "crash", "hello").await.unwrap(), "ok");
    let both = eventually(Duration::from_secs(15), || async {
        let bytes = host.describe("crash").await.ok()?.storage_bytes;
        (bytes >= stored + 1024).then_some(bytes)
    })
    .await;
    assert!(both >= 2048, "{both}");
    let err = host.restart("nobody").await.unwrap_err();
    assert_eq!(err.error, ErrorKind::NotFound);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_components_and_their_storage_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let host = open(dir.path()).await;
        install(&host, "counter", "counter").await;
        for _ in 0..3 {
            ask(&host, "counter", "inc").await.unwrap();
        }
        host.shutdown().await;
    }
    let host = open(dir.path()).await;
    let list = host.list().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name, "counter");
    assert_eq!(ask(&host, "counter", "get").await.unwrap(), "3");
    assert_eq!(ask(&host, "counter", "inc").await.unwrap(), "4");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_drops_the_component_and_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path()).await;
    install(&host, "counter", "counter").await;
    ask(&host, "counter", "inc").await.unwrap();
    host.remove("counter").await.unwrap();
    assert_eq!(
        ask(&host, "counter", "get").await.unwrap_err().error,
        ErrorKind::NotFound
    );
    assert_eq!(
        host.remove("counter").await.unwrap_err().error,
        ErrorKind::NotFound
    );
    install(&host, "counter", "counter").await;
    assert_eq!(ask(&host, "counter", "get").await.unwrap(), "0");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mailbox_refuses_with_mailbox_full() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path()).await;
    let limits = LimitsRequest {
        mailbox: Some(2),
        deadline_ms: Some(3_000),
        ..Default::default()
    };
    install_with(&host, "crash", "crash", limits).await;
    host.send("crash", b"spin".to_vec(), Delivery::Fast, None)
        .await
        .unwrap();
    // Wait until the actor has taken `spin` out of its mailbox and is busy with it.
    eventually(Duration::from_secs(10), || async {
        (host.describe("crash").await.unwrap().mailbox_depth == 0).then_some(())
    })
    .await;
    host.send("crash", b"a".to_vec(), Delivery::Fast, None)
        .await
        .unwrap();
    host.send("crash", b"b".to_vec(), Delivery::Fast, None)
        .await
        .unwrap();
    let err = host
        .send("crash", b"c".to_vec(), Delivery::Fast, None)
        .await
        .unwrap_err();
    assert_eq!(err.error, ErrorKind::MailboxFull);
    let err = host
        .send("crash", b"d".to_vec(), Delivery::Durable, None)
        .await
        .unwrap_err();
    assert_eq!(err.error, ErrorKind::MailboxFull);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_code_is_cached_on_disk_and_a_damaged_cache_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let cached = |dir: &std::path::Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir.join("compiled"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
            .collect()
    };
    {
        let host = open(dir.path()).await;
        install(&host, "a", "counter").await;
        // The same binary under a second name reuses the compilation.
        install(&host, "b", "counter").await;
        host.shutdown().await;
    }
    let files = cached(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let sha = host_sha(&files[0]);
    assert_eq!(sha.len(), 64);
    // Damage the cache: the node must recompile instead of failing or crashing.
    std::fs::write(&files[0], b"garbage").unwrap();
    let host = open(dir.path()).await;
    assert_eq!(ask(&host, "a", "inc").await.unwrap(), "1");
    assert_eq!(ask(&host, "b", "inc").await.unwrap(), "1");
    host.shutdown().await;
    assert!(
        std::fs::metadata(&files[0]).unwrap().len() > 1_000,
        "cache was not rebuilt"
    );
}

/// The sha256 part of `<sha256>-<engine hash>.cwasm`.
fn host_sha(path: &std::path::Path) -> String {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    name.split('-').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_quota_and_size_caps_reach_the_component_as_errors() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path()).await;
    let limits = LimitsRequest {
        quota_mb: Some(1),
        ..Default::default()
    };
    install_with(&host, "crash", "crash", limits).await;
    assert_eq!(ask(&host, "crash", "hog a 600").await.unwrap(), "stored");
    // A second 600 KiB value would pass the 1 MiB quota: refused, nothing written.
    assert_eq!(
        ask(&host, "crash", "hog b 600").await.unwrap(),
        "quota-exceeded"
    );
    let used = host.describe("crash").await.unwrap().storage_bytes;
    assert!((600 * 1024..700 * 1024).contains(&used), "{used}");
    // Overwriting the same key in place fits.
    assert_eq!(ask(&host, "crash", "hog a 500").await.unwrap(), "stored");
    // A value over the 1 MiB value cap, and a key over the 1 KiB key cap.
    install(&host, "big", "crash").await;
    assert_eq!(
        ask(&host, "big", "hog v 1025").await.unwrap(),
        "value-too-large"
    );
    let long_key = "k".repeat(1025);
    assert_eq!(
        ask(&host, "big", &format!("hog {long_key} 1"))
            .await
            .unwrap(),
        "key-too-large"
    );
    assert_eq!(host.describe("big").await.unwrap().storage_bytes, 0);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_sees_no_environment_files_or_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path()).await;
    install(&host, "crash", "crash").await;
    assert_eq!(
        ask(&host, "crash", "snoop").await.unwrap(),
        "env=0 args=0 root=denied passwd=denied"
    );
    host.shutdown().await;
}
