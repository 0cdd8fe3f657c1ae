//! What the node's benchmarks share: a one-node cluster, as `airssys node start` runs it.
#![allow(dead_code, clippy::unwrap_used)]

use airssys_node::cluster::{ClusterHost, ClusterSettings};
use airssys_node::config::NodeConfig;

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
