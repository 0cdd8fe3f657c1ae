//! Mutual-TLS QUIC between cluster nodes over real quinn endpoints on loopback.

#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use airssys_cluster::tls::{client_config, server_config, ClusterCa, NodeCert, ALPN};
use quinn::Endpoint;
use tokio::time::timeout;

/// Upper bound against hangs only; never a timing assertion.
const LIMIT: Duration = Duration::from_secs(5);

fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

fn server(ca: &ClusterCa, node: &NodeCert) -> Endpoint {
    Endpoint::server(server_config(ca.cert_pem(), node).unwrap(), loopback()).unwrap()
}

fn client(trusted_ca_pem: &str, node: &NodeCert) -> Endpoint {
    let mut ep = Endpoint::client(loopback()).unwrap();
    ep.set_default_client_config(client_config(trusted_ca_pem, node).unwrap());
    ep
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_ca_nodes_exchange_bytes_with_alpn() {
    let ca = ClusterCa::generate("test").unwrap();
    let n1 = ca.issue_node_cert(1, &["127.0.0.1".into()]).unwrap();
    let n2 = ca.issue_node_cert(2, &["127.0.0.1".into()]).unwrap();
    let srv = server(&ca, &n1);
    let addr = srv.local_addr().unwrap();

    let accept = tokio::spawn(async move {
        let conn = srv.accept().await.unwrap().await.unwrap();
        let alpn = conn
            .handshake_data()
            .unwrap()
            .downcast::<quinn::crypto::rustls::HandshakeData>()
            .unwrap()
            .protocol;
        let peer_certs = conn.peer_identity().is_some();
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        let got = recv.read_to_end(1024).await.unwrap();
        let mut reply = b"pong:".to_vec();
        reply.extend_from_slice(&got);
        send.write_all(&reply).await.unwrap();
        send.finish().unwrap();
        // Keep the connection open until the client has read the reply.
        let _ = conn.closed().await;
        (alpn, peer_certs, got)
    });

    let cli = client(ca.cert_pem(), &n2);
    let result = timeout(LIMIT, async {
        let conn = cli.connect(addr, "node-1.airssys").unwrap().await.unwrap();
        let alpn = conn
            .handshake_data()
            .unwrap()
            .downcast::<quinn::crypto::rustls::HandshakeData>()
            .unwrap()
            .protocol;
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(b"ping").await.unwrap();
        send.finish().unwrap();
        let reply = recv.read_to_end(1024).await.unwrap();
        conn.close(0u32.into(), b"done");
        (alpn, reply)
    })
    .await
    .expect("client side hung");
    let (client_alpn, reply) = result;
    assert_eq!(reply, b"pong:ping");
    assert_eq!(client_alpn.as_deref(), Some(ALPN));
    assert_eq!(client_alpn.as_deref(), Some(&b"airssys/1"[..]));

    let (server_alpn, server_saw_client_cert, got) = timeout(LIMIT, accept)
        .await
        .expect("server side hung")
        .unwrap();
    assert_eq!(got, b"ping");
    assert_eq!(server_alpn.as_deref(), Some(ALPN));
    assert!(
        server_saw_client_cert,
        "server must see the client's certificate"
    );
    cli.wait_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cert_from_another_ca_is_refused() {
    let ca = ClusterCa::generate("test").unwrap();
    let rogue_ca = ClusterCa::generate("rogue").unwrap();
    let n1 = ca.issue_node_cert(1, &[]).unwrap();
    let rogue = rogue_ca.issue_node_cert(2, &[]).unwrap();
    let srv = server(&ca, &n1);
    let addr = srv.local_addr().unwrap();

    let accept = tokio::spawn(async move {
        let incoming = srv.accept().await.unwrap();
        incoming.await.map(|_| ())
    });

    // The rogue client trusts the real CA (so it accepts the server) but presents a cert
    // the server cannot chain: the handshake or the first stream must fail.
    let cli = client(ca.cert_pem(), &rogue);
    let outcome = timeout(LIMIT, async {
        let conn = cli.connect(addr, "node-1.airssys").unwrap().await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(b"ping").await?;
        send.finish()?;
        recv.read_to_end(1024).await?;
        Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
    })
    .await
    .expect("rogue client hung instead of failing");
    assert!(
        outcome.is_err(),
        "a client from another CA must not get a working stream"
    );

    let server_side = timeout(LIMIT, accept).await.expect("server hung").unwrap();
    assert!(server_side.is_err(), "server must refuse the handshake");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_trusting_another_ca_refuses_server() {
    let ca = ClusterCa::generate("test").unwrap();
    let other_ca = ClusterCa::generate("other").unwrap();
    let n1 = ca.issue_node_cert(1, &[]).unwrap();
    let n2 = ca.issue_node_cert(2, &[]).unwrap();
    let srv = server(&ca, &n1);
    let addr = srv.local_addr().unwrap();
    let accept = drain_one_handshake(srv);

    let cli = client(other_ca.cert_pem(), &n2);
    let connected = timeout(LIMIT, cli.connect(addr, "node-1.airssys").unwrap())
        .await
        .expect("connect hung instead of failing");
    let err = connected.expect_err("client must refuse a server from another CA");
    assert!(
        matches!(err, quinn::ConnectionError::TransportError(_)),
        "expected a TLS transport error, got {err:?}"
    );
    accept.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_server_name_is_refused() {
    let ca = ClusterCa::generate("test").unwrap();
    let n1 = ca.issue_node_cert(1, &[]).unwrap();
    let n2 = ca.issue_node_cert(2, &[]).unwrap();
    let srv = server(&ca, &n1);
    let addr = srv.local_addr().unwrap();
    let accept = drain_one_handshake(srv);
    let cli = client(ca.cert_pem(), &n2);
    let connected = timeout(LIMIT, cli.connect(addr, "node-3.airssys").unwrap())
        .await
        .expect("connect hung instead of failing");
    assert!(connected.is_err(), "node 1's cert must not pass as node 3");
    accept.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_wildcard_certificate_serves_every_pod_of_a_headless_service() {
    let ca = ClusterCa::generate("test").unwrap();
    let pods = ca
        .issue_node_cert(1, &["*.airssys-peers.ns.svc".into()])
        .unwrap();
    let n2 = ca.issue_node_cert(2, &[]).unwrap();
    for (name, ok) in [
        ("airssys-0.airssys-peers.ns.svc", true),
        ("airssys-4.airssys-peers.ns.svc", true),
        ("a.b.airssys-peers.ns.svc", false),
        ("airssys-peers.ns.svc", false),
    ] {
        let srv = server(&ca, &pods);
        let addr = srv.local_addr().unwrap();
        let accept = drain_one_handshake(srv);
        let cli = client(ca.cert_pem(), &n2);
        let connected = timeout(LIMIT, cli.connect(addr, name).unwrap())
            .await
            .expect("connect hung");
        assert_eq!(connected.is_ok(), ok, "{name}");
        accept.abort();
    }
    assert!(ca.issue_node_cert(1, &["*.*.bad".into()]).is_err());
}

/// Lets the server take part in one handshake (whatever its outcome) so the client's
/// attempt completes instead of waiting for a peer that never answers.
fn drain_one_handshake(srv: quinn::Endpoint) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Some(incoming) = srv.accept().await {
            let _ = incoming.await;
        }
    })
}
