//! What the node's benchmarks share: a one-node cluster, as `airssys node start` runs it.
#![allow(dead_code, clippy::unwrap_used)]

use airssys_node::cluster::{ClusterHost, ClusterSettings};
use airssys_node::config::NodeConfig;
use std::path::PathBuf;

/// A one-node cluster on `config`'s data directory, as `airssys node start` runs it.
pub async fn one_node(mut config: NodeConfig, ports: (u16, u16)) -> ClusterHost {
    config.admin_addr = std::net::SocketAddr::from(([127, 0, 0, 1], ports.0));
    let settings = ClusterSettings::local(config.admin_addr, ports.1);
    ClusterHost::start(config, settings).await.unwrap()
}

/// A free TCP port for the admin API and a free UDP port for QUIC.
pub fn free_ports() -> (u16, u16) {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    (
        tcp.local_addr().unwrap().port(),
        udp.local_addr().unwrap().port(),
    )
}

/// `<target>/wasm32-wasip2/release`, found from this bench binary's own path
/// (`<target>/release/deps/<bench>`), or `AIRSSYS_EXAMPLES_DIR`.
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
            "{}: {e} (run scripts/build-examples.sh first)",
            path.display()
        )
    })
}
