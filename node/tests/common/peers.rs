//! A peer of the cluster for the tests that play a buggy or hostile one: a transport with a
//! certificate from the cluster's own CA (so it is let in) naming any node id, and the
//! pieces of the commands it sends.
#![allow(dead_code, clippy::unwrap_used)]

use airssys_cluster::peer::{PeerRequest, PeerResponse};
use airssys_cluster::tls::{client_config, server_config, ClusterCa};
use airssys_cluster::transport::Transport;
use airssys_cluster::ComponentSpec;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Limits as an install stores them, all in range.
pub const GOOD_LIMITS: &str =
    r#"{"memory_mb":64,"deadline_ms":2000,"mailbox":1024,"quota_mb":64,"fuel":null}"#;

/// A peer with a certificate from the CA in `ca_dir` (`ca.pem`, `ca.key`) naming node `id`.
pub fn peer_as(ca_dir: &Path, id: u64) -> Transport {
    let read = |f: &str| std::fs::read_to_string(ca_dir.join(f)).unwrap();
    let ca = ClusterCa::from_pem(read("ca.pem"), read("ca.key")).unwrap();
    let cert = ca.issue_node_cert(id, &["127.0.0.1".into()]).unwrap();
    Transport::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        server_config(ca.cert_pem(), &cert).unwrap(),
        client_config(ca.cert_pem(), &cert).unwrap(),
    )
    .unwrap()
}

/// An install's spec for `binary`, its digest and size true.
pub fn spec(name: &str, binary: &[u8], config: &str) -> ComponentSpec {
    ComponentSpec {
        name: name.into(),
        sha256: hex::encode(Sha256::digest(binary)),
        size_bytes: binary.len() as u64,
        config: config.as_bytes().to_vec(),
        installed_at_ms: 0,
    }
}

/// Sends `request` to the node at `to`; a node must answer a bad request, not drop it.
pub async fn send(peer: &Transport, to: &str, request: PeerRequest) -> PeerResponse {
    peer.call(to, &request, Duration::from_secs(15))
        .await
        .unwrap_or_else(|e| panic!("the node must answer a bad request, not drop it: {e}"))
}
