//! Hostile and malformed input: garbage, core modules, components that import what the
//! host does not provide or lack the airssys exports, bad names and limits. Each gets a
//! specific error, nothing is stored, and the node keeps serving.
#![allow(clippy::unwrap_used)]

mod common;

use airssys_node::api::{AdminBackend, ErrorKind, InstallRequest, LimitsRequest};
use common::*;

async fn try_install(
    host: &airssys_node::cluster::ClusterHost,
    name: &str,
    binary: Vec<u8>,
) -> airssys_node::api::ApiError {
    host.install(InstallRequest {
        name: name.into(),
        binary,
        limits: LimitsRequest::default(),
    })
    .await
    .unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_foreign_binaries_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path()).await;

    let err = try_install(&host, "garbage", b"definitely not wasm".to_vec()).await;
    assert_eq!(err.error, ErrorKind::InvalidComponent);
    assert!(
        err.message.contains("not a WebAssembly binary"),
        "{}",
        err.message
    );

    let core = wat::parse_str("(module (func (export \"f\")))").unwrap();
    let err = try_install(&host, "core", core).await;
    assert_eq!(err.error, ErrorKind::InvalidComponent);
    assert!(
        err.message.contains("core WebAssembly module"),
        "{}",
        err.message
    );

    let evil = wat::parse_str(
        r#"(component (import "evil:net/socket" (instance (export "open" (func)))))"#,
    )
    .unwrap();
    let err = try_install(&host, "evil", evil).await;
    assert_eq!(err.error, ErrorKind::InvalidComponent);
    assert!(err.message.contains("evil:net/socket"), "{}", err.message);

    let empty = wat::parse_str("(component)").unwrap();
    let err = try_install(&host, "empty", empty).await;
    assert_eq!(err.error, ErrorKind::InvalidComponent);
    assert!(err.message.contains("export"), "{}", err.message);

    let mut truncated = example("counter");
    truncated.truncate(truncated.len() / 2);
    let err = try_install(&host, "truncated", truncated).await;
    assert_eq!(err.error, ErrorKind::InvalidComponent);

    // Nothing of the refused installs is left, and the node still serves.
    assert!(host.list().await.unwrap().is_empty());
    install(&host, "counter", "counter").await;
    assert_eq!(ask(&host, "counter", "inc").await.unwrap(), "1");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_limits_and_duplicates_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path()).await;
    let err = try_install(&host, "Bad_Name", example("echo")).await;
    assert_eq!(err.error, ErrorKind::InvalidName);
    let err = host
        .install(InstallRequest {
            name: "echo".into(),
            binary: example("echo"),
            limits: LimitsRequest {
                memory_mb: Some(0),
                ..Default::default()
            },
        })
        .await
        .unwrap_err();
    assert_eq!(err.error, ErrorKind::BadRequest);
    assert!(err.message.contains("memory_mb"));
    install(&host, "echo", "echo").await;
    let err = try_install(&host, "echo", example("echo")).await;
    assert_eq!(err.error, ErrorKind::AlreadyExists);
    let err = ask(&host, "nobody", "hi").await.unwrap_err();
    assert_eq!(err.error, ErrorKind::NotFound);
    let err = host
        .request(
            "echo",
            vec![0u8; (1 << 20) + 1],
            std::time::Duration::from_secs(1),
            airssys_node::api::Delivery::Fast,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.error, ErrorKind::TooLarge);
    host.shutdown().await;
}

/// A component with every export the host wants, whose core module's start function never
/// returns: instantiating it runs guest code outside any handler. `spin` chooses between
/// that loop and a start function that returns at once (the same component otherwise).
fn start_function_component(spin: bool) -> Vec<u8> {
    let start = if spin {
        "(loop $forever (br $forever))"
    } else {
        "(nop)"
    };
    wat::parse_str(format!(
        r#"(component
  (core module $m
    (memory (export "memory") 1)
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 64))
    (func (export "init") (result i32) (i32.const 0))
    (func (export "handle-message") (param i32 i32 i32 i32 i32 i32) (result i32) (i32.const 0))
    (func (export "handle-callback") (param i64 i32 i32 i32 i32) (result i32) (i32.const 0))
    (func $start {start})
    (start $start))
  (core instance $i (instantiate $m))
  (type $sender (variant (case "component" string) (case "external")))
  (type $message (record (field "sender" $sender) (field "payload" (list u8)) (field "is-request" bool)))
  (type $request-error (variant (case "not-found") (case "timeout") (case "mailbox-full")
    (case "rejected" string) (case "trapped" string) (case "unavailable" string)))
  (func $init (result (result (error string)))
    (canon lift (core func $i "init") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (func $handle (param "msg" $message) (result (result (option (list u8)) (error string)))
    (canon lift (core func $i "handle-message") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (func $callback (param "id" u64) (param "outcome" (result (list u8) (error $request-error)))
    (result (result (error string)))
    (canon lift (core func $i "handle-callback") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (instance $guest
    (export "sender" (type $sender))
    (export "message" (type $message))
    (export "request-error" (type $request-error))
    (export "init" (func $init))
    (export "handle-message" (func $handle))
    (export "handle-callback" (func $callback)))
  (export "airssys:component/guest@0.1.0" (instance $guest)))"#
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_function_that_never_returns_is_stopped_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path()).await;
    // The same component with a start function that returns installs: the hostile one
    // below fails only for its loop.
    host.install(InstallRequest {
        name: "polite".into(),
        binary: start_function_component(false),
        limits: LimitsRequest::default(),
    })
    .await
    .unwrap_or_else(|e| panic!("the well-behaved twin must install: {e}"));

    let install = {
        let host = host.clone();
        tokio::spawn(async move {
            host.install(InstallRequest {
                name: "spinner".into(),
                binary: start_function_component(true),
                limits: LimitsRequest {
                    deadline_ms: Some(300),
                    ..Default::default()
                },
            })
            .await
        })
    };
    // While it spins, the node answers everything else.
    install_with(&host, "echo", "echo", LimitsRequest::default()).await;
    assert_eq!(ask(&host, "echo", "hi").await.unwrap(), "hi");
    assert!(host.list().await.is_ok());

    let err = install.await.unwrap().unwrap_err();
    assert!(
        err.message.contains("start function") && err.message.contains("300 ms"),
        "{err:?}"
    );
    assert_eq!(ask(&host, "echo", "still").await.unwrap(), "still");
    host.shutdown().await;
}

/// A component whose memory at start is more than its limit can never run: the install
/// says so once, as `invalid-component` naming the limit and what it needs (not
/// `unavailable`, which tells a client to retry), and the node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_little_memory_to_start_is_a_permanent_error_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path()).await;
    // Every Rust-built example asks for more than 1 MiB of linear memory at start.
    let err = host
        .install(InstallRequest {
            name: "tiny".into(),
            binary: example("counter"),
            limits: LimitsRequest {
                memory_mb: Some(1),
                ..Default::default()
            },
        })
        .await
        .unwrap_err();
    assert_eq!(err.error, ErrorKind::InvalidComponent, "{err:?}");
    assert!(
        err.message.contains("memory_mb limit is 1 MiB") && err.message.contains("needs"),
        "{}",
        err.message
    );
    install(&host, "counter", "counter").await;
    assert_eq!(ask(&host, "counter", "inc").await.unwrap(), "1");
    host.shutdown().await;
}
