//! Two nodes in one process over loopback QUIC with mutual TLS, against raw quinn in the
//! same run (same TLS configs):
//! - request→reply, 32 bytes: an admin request on node 1 for `echo` on node 2 (forwarded
//!   call, actor, WASM handler, reply) vs a raw quinn stream-per-call ping-pong;
//! - one-way throughput, 32-byte messages: `ping` on node 1 blasting fast messages to `echo`
//!   on node 2 (handler, router, lane, router, mailbox, handler) vs raw quinn on one stream.
//!
//! `cargo bench -p airssys-node --bench cluster` (env AIRSSYS_BENCH_CALLS, default 2000;
//! AIRSSYS_BENCH_MESSAGES, default 50000).

#![allow(clippy::unwrap_used)]

use airssys_cluster::tls::{client_config, server_config, ClusterCa};
use airssys_node::api::{AdminBackend, Delivery, InstallRequest, LimitsRequest};
use airssys_node::cluster::{ClusterHost, ClusterSettings};
use airssys_node::config::NodeConfig;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn examples_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("AIRSSYS_EXAMPLES_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().unwrap().parent().unwrap().parent().unwrap();
    target.join("wasm32-wasip2").join("release")
}

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_udp() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn percentiles(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e6;
    (at(0.50), at(0.99))
}

fn write_tls(dir: &Path, ca: &ClusterCa, id: u64) -> PathBuf {
    let out = dir.join(format!("tls{id}"));
    std::fs::create_dir_all(&out).unwrap();
    let cert = ca.issue_node_cert(id, &["127.0.0.1".into()]).unwrap();
    std::fs::write(out.join("ca.pem"), ca.cert_pem()).unwrap();
    std::fs::write(out.join("node.pem"), cert.cert_pem()).unwrap();
    std::fs::write(out.join("node.key"), cert.key_pem()).unwrap();
    out
}

async fn node(dir: &Path, ca: &ClusterCa, id: u64, join: Option<String>) -> (ClusterHost, String) {
    let admin = SocketAddr::from(([127, 0, 0, 1], 1));
    let peer = SocketAddr::from(([127, 0, 0, 1], free_udp()));
    let config = NodeConfig {
        data_dir: dir.join(format!("data{id}")),
        node_id: id,
        instance_pool: 64,
        ..NodeConfig::default()
    };
    let mut settings = ClusterSettings::local(admin, peer.port());
    settings.tls_dir = Some(write_tls(dir, ca, id));
    settings.join = join.into_iter().collect();
    let host = ClusterHost::start(config, settings).await.unwrap();
    (host, peer.to_string())
}

async fn install(host: &ClusterHost, name: &str, file: &str) -> u64 {
    let binary = std::fs::read(examples_dir().join(format!("{file}.wasm"))).unwrap();
    host.install(InstallRequest {
        name: name.into(),
        binary,
        limits: LimitsRequest {
            mailbox: Some(100_000),
            ..Default::default()
        },
    })
    .await
    .unwrap()
    .node_id
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let calls = env_count("AIRSSYS_BENCH_CALLS", 2_000);
    let messages = env_count("AIRSSYS_BENCH_MESSAGES", 50_000);
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::generate("bench").unwrap();
    let (n1, peer1) = node(dir.path(), &ca, 1, None).await;
    while !n1.cluster().is_ready() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (n2, _) = node(dir.path(), &ca, 2, Some(peer1)).await;
    while !(n2.cluster().is_ready()
        && n1.cluster().loads().iter().all(|l| l.alive)
        && n1.cluster().loads().len() == 2)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(install(&n1, "pad", "echo").await, 1);
    assert_eq!(install(&n1, "echo", "echo").await, 2);
    assert_eq!(install(&n1, "ping", "ping").await, 1);

    // Raw quinn with the same TLS: an echo server.
    let c1 = ca.issue_node_cert(1, &["127.0.0.1".into()]).unwrap();
    let c2 = ca.issue_node_cert(2, &["127.0.0.1".into()]).unwrap();
    let server = quinn::Endpoint::server(
        server_config(ca.cert_pem(), &c1).unwrap(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .unwrap();
    let raw_addr = server.local_addr().unwrap();
    let raw_bytes = Arc::new(AtomicU64::new(0));
    let counted = raw_bytes.clone();
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
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
    let mut client = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    client.set_default_client_config(client_config(ca.cert_pem(), &c2).unwrap());
    let conn = client
        .connect(raw_addr, "127.0.0.1")
        .unwrap()
        .await
        .unwrap();

    let payload = vec![b'x'; 32];
    let timeout = Duration::from_secs(5);
    for _ in 0..50 {
        n1.request("echo", payload.clone(), timeout, Delivery::Fast, None)
            .await
            .unwrap();
    }
    let mut raw_lat = Vec::with_capacity(calls);
    let mut our_lat = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        let (mut s, mut r) = conn.open_bi().await.unwrap();
        s.write_all(&payload).await.unwrap();
        s.finish().unwrap();
        assert_eq!(r.read_to_end(1024).await.unwrap().len(), 32);
        raw_lat.push(t.elapsed());

        let t = Instant::now();
        let reply = n1
            .request("echo", payload.clone(), timeout, Delivery::Fast, None)
            .await
            .unwrap();
        our_lat.push(t.elapsed());
        assert_eq!(reply.len(), 32);
    }
    let (raw50, raw99) = percentiles(raw_lat);
    let (our50, our99) = percentiles(our_lat);
    println!("cross-node request->reply, 32 B, {calls} each (µs):");
    println!("  raw quinn ping-pong (stream per call)        p50 {raw50:7.1}  p99 {raw99:7.1}");
    println!("  airssys admin request node 1 -> echo node 2  p50 {our50:7.1}  p99 {our99:7.1}");
    println!(
        "  ratio airssys/raw                            p50 {:.2}x  p99 {:.2}x",
        our50 / raw50,
        our99 / raw99
    );

    // One-way: raw stream, then ping (node 1) -> echo (node 2), fast.
    let mut uni = conn.open_uni().await.unwrap();
    let t = Instant::now();
    for _ in 0..messages {
        uni.write_all(&payload).await.unwrap();
    }
    uni.finish().unwrap();
    while raw_bytes.load(Ordering::Relaxed) < (messages * 32) as u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let raw_rate = messages as f64 / t.elapsed().as_secs_f64();

    let before = n2.host().messages_delivered();
    let text = "x".repeat(32);
    let per_call = 1_000;
    let t = Instant::now();
    let mut sent = 0;
    while sent < messages {
        let n = per_call.min(messages - sent);
        let cmd = format!("blast {n} echo fast {text}");
        n1.request("ping", cmd.into_bytes(), timeout, Delivery::Fast, None)
            .await
            .unwrap();
        sent += n;
    }
    let want = before + messages as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while n2.host().messages_delivered() < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let got = n2.host().messages_delivered() - before;
    let our_rate = got as f64 / t.elapsed().as_secs_f64();
    println!("cross-node one-way, 32 B, {messages} each:");
    println!("  raw quinn (one uni stream)                   {raw_rate:>10.0} msg/s");
    println!(
        "  airssys ping node 1 -> echo node 2 (fast)    {our_rate:>10.0} msg/s ({got} delivered)"
    );
    println!(
        "  ratio airssys/raw                            {:.2}x",
        our_rate / raw_rate
    );
    n2.shutdown().await;
    n1.shutdown().await;
}
