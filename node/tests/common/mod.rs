//! Shared helpers for the node's integration tests: the compiled example components
//! and a one-node cluster on a temporary data directory (what `airssys node start`
//! runs, with the Raft log, its state machine and its committer).
#![allow(dead_code, clippy::unwrap_used)]

pub mod peers;
pub mod procs;

use airssys_node::api::{AdminBackend, Delivery, InstallRequest, LimitsRequest};
use airssys_node::cluster::{ClusterHost, ClusterSettings};
use airssys_node::config::NodeConfig;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `<target>/wasm32-wasip2/release`, found from this test binary's own path
/// (`<target>/release/deps/<test>`), so it follows `CARGO_TARGET_DIR` wherever it is.
pub fn examples_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("AIRSSYS_EXAMPLES_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().unwrap().parent().unwrap().parent().unwrap();
    target.join("wasm32-wasip2").join("release")
}

/// The bytes of an example component.
pub fn example(name: &str) -> Vec<u8> {
    let path = examples_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}\nbuild the example components first: scripts/build-examples.sh",
            path.display()
        )
    })
}

pub fn config(dir: &std::path::Path) -> NodeConfig {
    NodeConfig {
        data_dir: dir.to_path_buf(),
        // Tests run many nodes in one process: keep each one's address-space
        // reservation small.
        instance_pool: 64,
        ..NodeConfig::default()
    }
}

/// The ports a node on `dir` uses: chosen on its first start and kept in the directory,
/// so a restarted node is the member its Raft log knows.
fn ports(dir: &std::path::Path) -> (u16, u16) {
    let file = dir.join("test-ports");
    if let Some((admin, peer)) = std::fs::read_to_string(&file)
        .ok()
        .and_then(|s| {
            s.split_once(' ')
                .map(|(a, p)| (a.parse(), p.trim().parse()))
        })
        .and_then(|(a, p)| Some((a.ok()?, p.ok()?)))
    {
        return (admin, peer);
    }
    let chosen = (procs::free_tcp(), procs::free_udp());
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&file, format!("{} {}", chosen.0, chosen.1)).unwrap();
    chosen
}

/// Starts a one-node cluster on `dir` (or starts it again). A restart right after a
/// shutdown may find RocksDB's lock still held for a moment by a background task
/// finishing; that is retried briefly.
pub async fn open(dir: &std::path::Path) -> ClusterHost {
    let (admin_port, peer_port) = ports(dir);
    let admin: std::net::SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let mut config = config(dir);
    config.admin_addr = admin;
    let start = Instant::now();
    loop {
        match ClusterHost::start(config.clone(), ClusterSettings::local(admin, peer_port)).await {
            Ok(node) => return node,
            Err(e)
                if e.to_string().contains("lock") && start.elapsed() < Duration::from_secs(5) =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot start the node: {e}"),
        }
    }
}

pub async fn install(host: &ClusterHost, name: &str, example_name: &str) {
    install_with(host, name, example_name, LimitsRequest::default()).await
}

pub async fn install_with(
    host: &ClusterHost,
    name: &str,
    example_name: &str,
    limits: LimitsRequest,
) {
    host.install(InstallRequest {
        name: name.into(),
        binary: example(example_name),
        limits,
    })
    .await
    .unwrap_or_else(|e| panic!("install {name}: {e}"));
}

/// A durable request with a generous timeout; the reply as text.
pub async fn ask(
    host: &ClusterHost,
    name: &str,
    payload: &str,
) -> Result<String, airssys_node::api::ApiError> {
    host.request(
        name,
        payload.as_bytes().to_vec(),
        Duration::from_secs(10),
        Delivery::Durable,
        None,
    )
    .await
    .map(|b| String::from_utf8(b).unwrap())
}

/// Polls `check` until it returns Some, for at most `limit`. A bounded wait for an
/// asynchronous effect, not a timing assertion: the limit only stops a broken run.
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "condition not reached within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
