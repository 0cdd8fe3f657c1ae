//! The node transport over real QUIC on loopback: calls and ordered lanes work, and a
//! malformed frame from an authenticated peer closes only its stream.
#![allow(clippy::unwrap_used)]

use airssys_cluster::tls::{client_config, server_config, ClusterCa};
use airssys_cluster::transport::{
    Caller, Lanes, PeerService, Transport, TransportError, MALFORMED_FRAME,
};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Echo {
    lane: Mutex<Vec<Vec<u8>>>,
}

impl PeerService for Echo {
    type Request = String;
    type Response = String;

    async fn call(&self, caller: Caller, request: String) -> String {
        match request.as_str() {
            // Who the transport says called, from the caller's certificate.
            "who" => format!("{:?}", caller.node_id),
            _ => format!("echo:{request}"),
        }
    }

    async fn lane_frame(&self, _caller: Caller, frame: Vec<u8>) {
        self.lane.lock().unwrap().push(frame);
    }
}

fn transport(ca: &ClusterCa, id: u64) -> Transport {
    let cert = ca.issue_node_cert(id, &["127.0.0.1".into()]).unwrap();
    Transport::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        server_config(ca.cert_pem(), &cert).unwrap(),
        client_config(ca.cert_pem(), &cert).unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_lanes_and_malformed_frames() {
    let ca = ClusterCa::generate("t").unwrap();
    let server = transport(&ca, 1);
    let service = Arc::new(Echo::default());
    server.serve(service.clone());
    let addr = server.local_addr().unwrap().to_string();
    let client = transport(&ca, 2);

    let answer: String = client.call(&addr, &"hi".to_string(), LIMIT).await.unwrap();
    assert_eq!(answer, "echo:hi");
    // The server knows the caller by the node its certificate names.
    let who: String = client.call(&addr, &"who".to_string(), LIMIT).await.unwrap();
    assert_eq!(who, "Some(2)");

    // A lane keeps order.
    let lanes = Lanes::new(client.clone());
    for i in 0..100u32 {
        lanes.send(&addr, i.to_be_bytes().to_vec());
    }
    timeout(LIMIT, async {
        while service.lane.lock().unwrap().len() < 100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("lane frames did not all arrive");
    let got: Vec<u32> = service
        .lane
        .lock()
        .unwrap()
        .iter()
        .map(|f| u32::from_be_bytes(f[..4].try_into().unwrap()))
        .collect();
    assert_eq!(got, (0..100).collect::<Vec<_>>());

    // Garbage on a call stream: the stream is reset with MALFORMED_FRAME.
    let cert = ca.issue_node_cert(3, &["127.0.0.1".into()]).unwrap();
    let mut raw = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    raw.set_default_client_config(client_config(ca.cert_pem(), &cert).unwrap());
    let conn = raw
        .connect(addr.parse().unwrap(), "127.0.0.1")
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&[0, 0, 0, 3, 99, 1, 2]).await.unwrap();
    send.finish().unwrap();
    let err = timeout(LIMIT, recv.read_to_end(1 << 20))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        err.to_string().contains(&MALFORMED_FRAME.to_string()),
        "{err}"
    );
    // A length prefix over the cap on a lane: the lane is stopped.
    let mut uni = conn.open_uni().await.unwrap();
    let _ = uni.write_all(&[0xff, 0xff, 0xff, 0xff, 1]).await;
    let stopped = timeout(LIMIT, uni.stopped()).await.unwrap().unwrap();
    assert_eq!(stopped, Some(quinn::VarInt::from_u32(MALFORMED_FRAME)));

    // The server keeps serving, on the same connection and on others.
    let answer: String = client
        .call(&addr, &"again".to_string(), LIMIT)
        .await
        .unwrap();
    assert_eq!(answer, "echo:again");
}

/// A peer that never answers (a UDP socket nobody reads: the QUIC handshake hangs until the
/// idle timeout) must not hold up calls to a live peer. With one lock over every cached
/// connection, the live call waited for the dead handshake to give up, so heartbeats and
/// votes stalled after a node was killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_does_not_hold_up_calls_to_a_live_one() {
    let ca = ClusterCa::generate("t").unwrap();
    let server = transport(&ca, 1);
    server.serve(Arc::new(Echo::default()));
    let live = server.local_addr().unwrap().to_string();
    let silent_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = silent_socket.local_addr().unwrap().to_string();
    let client = transport(&ca, 2);

    let dead_call = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .call::<_, String>(&silent, &"anyone?".to_string(), LIMIT)
                .await
        })
    };
    // Let the dead call start its handshake first.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answer: String = client.call(&live, &"hi".to_string(), LIMIT).await.unwrap();
    assert_eq!(answer, "echo:hi");
    assert!(
        !dead_call.is_finished(),
        "the live call had to wait for the silent peer's handshake to give up"
    );
    let dead = timeout(LIMIT * 2, dead_call).await.unwrap().unwrap();
    assert!(dead.is_err(), "a silent peer cannot answer");
    drop(silent_socket);
}

fn transport_with_secret(ca: &ClusterCa, id: u64, at: SocketAddr, secret: &[u8]) -> Transport {
    let cert = ca.issue_node_cert(id, &["127.0.0.1".into()]).unwrap();
    Transport::bind_with_reset_secret(
        at,
        server_config(ca.cert_pem(), &cert).unwrap(),
        client_config(ca.cert_pem(), &cert).unwrap(),
        secret,
    )
    .unwrap()
}

/// A node killed and started again on the same port, with the reset secret `second_secret`
/// (the first life used `first_secret`): the caller's cached connection belongs to the dead
/// process. Returns what the caller's first call after the restart got (bounded well under
/// the 4 s idle timeout, so that only a stateless reset can end the old connection in time),
/// and what the call after it got.
fn restart_then_call(
    first_secret: &[u8],
    second_secret: &[u8],
) -> (
    Result<String, TransportError>,
    Result<String, TransportError>,
) {
    let ca = ClusterCa::generate("t").unwrap();
    let main = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The first life runs on its own runtime, so that it can die without a word: shutting
    // that runtime down drops its endpoint with no CONNECTION_CLOSE sent (nothing polls its
    // driver any more), like kill -9.
    let first_life = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let addr = first_life.block_on(async {
        let server =
            transport_with_secret(&ca, 1, SocketAddr::from(([127, 0, 0, 1], 0)), first_secret);
        server.serve(Arc::new(Echo::default()));
        server.local_addr().unwrap()
    });
    let client = main.block_on(async { transport(&ca, 2) });
    let target = addr.to_string();
    main.block_on(async {
        let answer: String = client
            .call(&target, &"one".to_string(), LIMIT)
            .await
            .unwrap();
        assert_eq!(answer, "echo:one");
    });
    // Drops every task of the first life (its endpoint and socket) without running them.
    first_life.shutdown_timeout(LIMIT);

    main.block_on(async {
        let second = transport_with_secret(&ca, 1, addr, second_secret);
        second.serve(Arc::new(Echo::default()));
        let stale = client
            .call::<_, String>(&target, &"two".to_string(), Duration::from_secs(2))
            .await;
        let next = client
            .call::<_, String>(&target, &"three".to_string(), LIMIT)
            .await;
        (stale, next)
    })
}

/// The new process signs a stateless reset with the key the old one used (both derive it
/// from the node's secret), so the old connection ends at once instead of by timing out.
/// Either the caller's call is the first packet the new process sees on it (the call fails
/// at once with a stream error), or a keep-alive sent since the new process bound already
/// drew the reset (the cached connection is closed, so the call dials afresh and is
/// answered). Either way the call after it reaches the new process.
#[test]
fn a_restarted_peer_resets_its_previous_lifes_connections() {
    let secret = b"node 1 private key";
    let (stale, next) = restart_then_call(secret, secret);
    match &stale {
        Err(TransportError::Stream { .. }) => {}
        Ok(answer) => assert_eq!(answer, "echo:two"),
        Err(other) => panic!("the stale connection must be reset, not time out: {other:?}"),
    }
    assert_eq!(next.unwrap(), "echo:three");
}

/// The judge for the test above: a restarted process whose reset key differs (a node that
/// did not derive it from its secret) cannot end the old connection, so the caller's call
/// waits on the dead connection and times out. If this stopped timing out, the test above
/// could not tell a reset from luck.
#[test]
fn without_the_same_reset_key_the_stale_connection_only_times_out() {
    let (stale, _) = restart_then_call(b"node 1 private key", b"another key");
    assert!(
        matches!(stale, Err(TransportError::Timeout(_))),
        "a reset signed with another key must be ignored: {stale:?}"
    );
}

/// Holds every call until released, counting how many it holds at once.
#[derive(Default)]
struct Holding {
    held: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
    release: tokio::sync::Notify,
    released: std::sync::atomic::AtomicBool,
}

impl PeerService for Holding {
    type Request = String;
    type Response = usize;

    async fn call(&self, _caller: Caller, request: String) -> usize {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.held.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        while !self.released.load(SeqCst) {
            let notified = self.release.notified();
            if self.released.load(SeqCst) {
                break;
            }
            notified.await;
        }
        self.held.fetch_sub(1, SeqCst);
        request.len()
    }

    async fn lane_frame(&self, _caller: Caller, _frame: Vec<u8>) {}
}

/// The resident set of this process, in bytes (Linux).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A peer that floods a node with more large calls than it handles (48 frames of 16 MiB,
/// 768 MiB, against a service that holds every call) makes it hold at most what the
/// inbound budget allows: the frames past it wait in the peer's QUIC flow control. Once the
/// service lets go, every call is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_peer_is_held_to_the_inbound_budget() {
    use airssys_cluster::transport::INBOUND_BUDGET_BYTES;
    use std::sync::atomic::Ordering::SeqCst;
    const CALLS: usize = 48;
    const BODY: usize = 16 << 20;
    let ca = ClusterCa::generate("t").unwrap();
    let server = transport(&ca, 1);
    let service = Arc::new(Holding::default());
    server.serve(service.clone());
    let addr: SocketAddr = server.local_addr().unwrap();
    let before = rss_bytes();

    // One encoded frame, written on every stream (the flooder's own memory stays small).
    let frame = Arc::new(airssys_cluster::wire::encode_frame(&"x".repeat(BODY)).unwrap());
    let cert = ca.issue_node_cert(2, &["127.0.0.1".into()]).unwrap();
    let mut raw = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    raw.set_default_client_config(client_config(ca.cert_pem(), &cert).unwrap());
    let conn = raw.connect(addr, "127.0.0.1").unwrap().await.unwrap();
    let mut calls = Vec::new();
    for _ in 0..CALLS {
        let (conn, frame) = (conn.clone(), frame.clone());
        calls.push(tokio::spawn(async move {
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            send.write_all(&frame).await.unwrap();
            send.finish().unwrap();
            recv.read_to_end(1 << 10).await.unwrap()
        }));
    }

    // The budget fits this many frames (each counted in whole KiB).
    let fits = INBOUND_BUDGET_BYTES / (frame.len().div_ceil(1024) * 1024);
    timeout(Duration::from_secs(60), async {
        while service.held.load(SeqCst) < fits {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the node should take calls up to its budget");
    // The flood goes on; give the rest every chance to get in.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let peak = rss_bytes().saturating_sub(before);
    assert_eq!(
        service.most.load(SeqCst),
        fits,
        "held more calls than the budget fits"
    );
    eprintln!(
        "flood: {CALLS} x {} MiB offered; {fits} held at once; the process grew {} MiB",
        BODY >> 20,
        peak >> 20
    );

    service.released.store(true, SeqCst);
    service.release.notify_waiters();
    for call in calls {
        let answer = timeout(LIMIT * 6, call).await.unwrap().unwrap();
        assert_eq!(
            airssys_cluster::wire::decode_frame::<usize>(&answer).unwrap(),
            BODY
        );
    }
}
