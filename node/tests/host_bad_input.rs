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
        )
        .await
        .unwrap_err();
    assert_eq!(err.error, ErrorKind::TooLarge);
    host.shutdown().await;
}
