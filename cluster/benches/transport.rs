//! Node-to-node transport against raw quinn, in the same run, on loopback with the same
//! mutual-TLS configs:
//! - request→reply, 32-byte payload: raw quinn (one bi stream per call, raw bytes) vs
//!   `Transport::call` (the path of Raft RPCs and forwarded admin calls: frame, bincode,
//!   service dispatch);
//! - one-way throughput, 32-byte messages: raw quinn (one uni stream, raw bytes) vs
//!   `Lanes` (the path of actor envelopes between nodes: framed, in order).
//!
//! `cargo bench -p airssys-cluster --bench transport` (env AIRSSYS_BENCH_CALLS,
//! AIRSSYS_BENCH_MESSAGES to change the counts).

use airssys_cluster::tls::{client_config, server_config, ClusterCa};
use airssys_cluster::transport::{Caller, Lanes, PeerService, Transport};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn percentiles(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)].as_secs_f64() * 1e6;
    (at(0.50), at(0.99))
}

#[derive(Default)]
struct Counter {
    frames: AtomicU64,
}

impl PeerService for Counter {
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn call(&self, _caller: Caller, request: Vec<u8>) -> Vec<u8> {
        request
    }

    async fn lane_frame(&self, _caller: Caller, _frame: Vec<u8>) {
        self.frames.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let calls = env_count("AIRSSYS_BENCH_CALLS", 5_000);
    let messages = env_count("AIRSSYS_BENCH_MESSAGES", 200_000);
    let ca = ClusterCa::generate("bench").expect("ca");
    let c1 = ca.issue_node_cert(1, &["127.0.0.1".into()]).expect("cert");
    let c2 = ca.issue_node_cert(2, &["127.0.0.1".into()]).expect("cert");
    let payload = vec![7u8; 32];

    // --- raw quinn server: echo on bi streams, count bytes on uni streams.
    let raw_server =
        quinn::Endpoint::server(server_config(ca.cert_pem(), &c1).expect("cfg"), loopback())
            .expect("endpoint");
    let raw_addr = raw_server.local_addr().expect("addr");
    let raw_bytes = Arc::new(AtomicU64::new(0));
    let counted = raw_bytes.clone();
    tokio::spawn(async move {
        while let Some(incoming) = raw_server.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                loop {
                    tokio::select! {
                        bi = conn.accept_bi() => {
                            let Ok((mut s, mut r)) = bi else { return };
                            tokio::spawn(async move {
                                if let Ok(b) = r.read_to_end(1024).await {
                                    let _ = s.write_all(&b).await;
                                    let _ = s.finish();
                                }
                            });
                        }
                        uni = conn.accept_uni() => {
                            let Ok(mut r) = uni else { return };
                            let counted = counted.clone();
                            tokio::spawn(async move {
                                let mut buf = vec![0u8; 65536];
                                while let Ok(Some(n)) = r.read(&mut buf).await {
                                    counted.fetch_add(n as u64, Ordering::Relaxed);
                                }
                            });
                        }
                    }
                }
            });
        }
    });
    let mut raw_client = quinn::Endpoint::client(loopback()).expect("endpoint");
    raw_client.set_default_client_config(client_config(ca.cert_pem(), &c2).expect("cfg"));
    let conn = raw_client
        .connect(raw_addr, "127.0.0.1")
        .expect("connect")
        .await
        .expect("handshake");

    // --- airssys transport.
    let server = Transport::bind(
        loopback(),
        server_config(ca.cert_pem(), &c1).expect("cfg"),
        client_config(ca.cert_pem(), &c1).expect("cfg"),
    )
    .expect("bind");
    let service = Arc::new(Counter::default());
    server.serve(service.clone());
    let addr = server.local_addr().expect("addr").to_string();
    let client = Transport::bind(
        loopback(),
        server_config(ca.cert_pem(), &c2).expect("cfg"),
        client_config(ca.cert_pem(), &c2).expect("cfg"),
    )
    .expect("bind");
    let limit = Duration::from_secs(10);
    let _: Vec<u8> = client.call(&addr, &payload, limit).await.expect("warm-up");

    // Latency, interleaved so both see the same machine state.
    let mut raw_lat = Vec::with_capacity(calls);
    let mut our_lat = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        let (mut s, mut r) = conn.open_bi().await.expect("bi");
        s.write_all(&payload).await.expect("write");
        s.finish().expect("finish");
        let back = r.read_to_end(1024).await.expect("read");
        raw_lat.push(t.elapsed());
        assert_eq!(back.len(), 32);

        let t = Instant::now();
        let back: Vec<u8> = client.call(&addr, &payload, limit).await.expect("call");
        our_lat.push(t.elapsed());
        assert_eq!(back.len(), 32);
    }
    let (raw50, raw99) = percentiles(raw_lat);
    let (our50, our99) = percentiles(our_lat);
    println!("request->reply 32 B over QUIC+mTLS, {calls} calls each (µs):");
    println!("  raw quinn (stream per call)   p50 {raw50:7.1}  p99 {raw99:7.1}");
    println!("  airssys Transport::call       p50 {our50:7.1}  p99 {our99:7.1}");
    println!(
        "  ratio airssys/raw             p50 {:.2}x  p99 {:.2}x",
        our50 / raw50,
        our99 / raw99
    );

    // One-way throughput.
    let mut uni = conn.open_uni().await.expect("uni");
    let t = Instant::now();
    for _ in 0..messages {
        uni.write_all(&payload).await.expect("write");
    }
    uni.finish().expect("finish");
    while raw_bytes.load(Ordering::Relaxed) < (messages * 32) as u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let raw_rate = messages as f64 / t.elapsed().as_secs_f64();

    let lanes = Lanes::new(client.clone());
    let t = Instant::now();
    for _ in 0..messages {
        lanes.send(&addr, payload.clone());
    }
    while service.frames.load(Ordering::Relaxed) < messages as u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let our_rate = messages as f64 / t.elapsed().as_secs_f64();
    println!("one-way 32 B messages, {messages} each:");
    println!("  raw quinn (one uni stream)    {:>10.0} msg/s", raw_rate);
    println!("  airssys Lanes (framed)        {:>10.0} msg/s", our_rate);
    println!(
        "  ratio airssys/raw             {:.2}x",
        our_rate / raw_rate
    );
    conn.close(0u32.into(), b"done");
}
