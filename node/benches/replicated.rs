//! Replicated durable commits: three nodes in one process over loopback QUIC (the same
//! 2-core machine carries all three, like the etcd baseline's three members), N busy
//! counters spread over them, each driven by its own client in a loop of `inc` requests
//! (fast requests: each is exactly one handler transaction through the Raft log, fenced,
//! applied on all three nodes). Then ONE counter driven by C clients at once: its mailbox is
//! never empty, so it handles the next requests while its previous commit is in flight and
//! their transactions commit together (per-actor pipelining). Against, in the same run: raw
//! RocksDB synced puts with as many writer threads as clients, on the same disk. etcd
//! (3 members, the same number of clients) runs beside it from `scripts/bench-replicated.sh`.
//!
//! Also reports commits per synced write on the leader (log appends and applies share
//! fsyncs across many commits) and per-commit latency percentiles.
//!
//! `cargo bench -p airssys-node --bench replicated` (env AIRSSYS_BENCH_ACTORS, default
//! "1 16 64"; AIRSSYS_BENCH_BUSY_CLIENTS, clients of the one busy counter, default "16 64";
//! AIRSSYS_BENCH_SECONDS, default 8).

#![allow(clippy::unwrap_used)]

use airssys_cluster::tls::ClusterCa;
use airssys_node::api::{AdminBackend, Delivery, InstallRequest, LimitsRequest};
use airssys_node::cluster::{ClusterHost, ClusterSettings};
use airssys_node::config::NodeConfig;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

fn free_udp() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
        instance_pool: 256,
        ..NodeConfig::default()
    };
    let mut settings = ClusterSettings::local(admin, peer.port());
    settings.tls_dir = Some(write_tls(dir, ca, id));
    settings.join = join.into_iter().collect();
    // Long enough that a busy benchmark never triggers a failover.
    settings.failure_timeout_ms = 5_000;
    let host = ClusterHost::start(config, settings).await.unwrap();
    (host, peer.to_string())
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e3
}

/// Synced puts from `writers` threads for `secs` seconds: puts per second.
fn raw_rocksdb(dir: &Path, writers: usize, secs: f64) -> f64 {
    let path = dir.join(format!("raw-{writers}"));
    let db = Arc::new(rocksdb::DB::open_default(&path).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let (db, stop, done) = (db.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || {
                let mut wo = rocksdb::WriteOptions::default();
                wo.set_sync(true);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("w{w}/{i}");
                    db.put_opt(key.as_bytes(), i.to_le_bytes(), &wo).unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for th in threads {
        th.join().unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let actor_counts: Vec<usize> = std::env::var("AIRSSYS_BENCH_ACTORS")
        .unwrap_or_else(|_| "1 16 64".into())
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    let busy_clients: Vec<usize> = std::env::var("AIRSSYS_BENCH_BUSY_CLIENTS")
        .unwrap_or_else(|_| "16 64".into())
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    let secs: f64 = std::env::var("AIRSSYS_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8.0);
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::generate("bench").unwrap();
    let (n1, peer1) = node(dir.path(), &ca, 1, None).await;
    while !n1.cluster().is_ready() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (n2, _) = node(dir.path(), &ca, 2, Some(peer1.clone())).await;
    let (n3, _) = node(dir.path(), &ca, 3, Some(peer1)).await;
    while !(n2.cluster().is_ready()
        && n3.cluster().is_ready()
        && n1.cluster().loads().len() == 3
        && n1.cluster().loads().iter().all(|l| l.alive))
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hosts = [n1.clone(), n2.clone(), n3.clone()];
    let binary = std::fs::read(examples_dir().join("counter.wasm")).unwrap();
    let max_actors = actor_counts.iter().copied().max().unwrap_or(1);
    let mut owners = Vec::new();
    for i in 0..max_actors {
        let info = n1
            .install(InstallRequest {
                name: format!("c{i}"),
                binary: binary.clone(),
                limits: LimitsRequest::default(),
            })
            .await
            .unwrap();
        owners.push(info.node_id as usize - 1);
    }
    let leader = n1.cluster().leader().unwrap().0 as usize - 1;
    println!(
        "replicated durable commits, 3 nodes in one process (leader: node {}; c0 on node {}), {secs} s each:",
        leader + 1,
        owners.first().map_or(0, |o| o + 1)
    );
    println!(
        "  {:>6}  {:>10}  {:>12}  {:>10}  {:>10}  {:>16}  {:>14}",
        "actors", "clients", "commits/s", "p50 ms", "p99 ms", "commits/fsync(L)", "rocksdb sync/s"
    );
    // One client per actor (each actor has one request at a time), then one busy actor
    // whose mailbox many clients keep full: its handlers run while its previous commit is
    // in flight and their transactions commit together.
    let mut scenarios: Vec<(usize, usize)> = actor_counts.iter().map(|&n| (n, 1)).collect();
    scenarios.extend(busy_clients.iter().map(|&c| (1, c)));
    for (actors, clients_each) in scenarios {
        let clients = actors * clients_each;
        let stop = Arc::new(AtomicBool::new(false));
        let before = hosts[leader].host().commit_stats();
        let t = Instant::now();
        let mut tasks = Vec::new();
        for (i, &owner) in owners.iter().enumerate().take(actors) {
            for _ in 0..clients_each {
                let host = hosts[owner].clone();
                let stop = stop.clone();
                tasks.push(tokio::spawn(async move {
                    let name = format!("c{i}");
                    let mut lat = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        host.request(
                            &name,
                            b"inc".to_vec(),
                            Duration::from_secs(10),
                            Delivery::Fast,
                            None,
                        )
                        .await
                        .unwrap();
                        lat.push(t.elapsed());
                    }
                    lat
                }));
            }
        }
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        stop.store(true, Ordering::Relaxed);
        let mut lat = Vec::new();
        for task in tasks {
            lat.extend(task.await.unwrap());
        }
        let elapsed = t.elapsed().as_secs_f64();
        let after = hosts[leader].host().commit_stats();
        lat.sort();
        let commits = lat.len() as f64;
        let leader_syncs = (after.syncs - before.syncs).max(1) as f64;
        let raw = raw_rocksdb(dir.path(), clients, secs.min(4.0));
        println!(
            "  {:>6}  {:>10}  {:>12.0}  {:>10.2}  {:>10.2}  {:>16.1}  {:>14.0}   ratio to raw rocksdb {:.2}x",
            actors,
            clients,
            commits / elapsed,
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            commits / leader_syncs,
            raw,
            commits / elapsed / raw
        );
    }
    for h in &hosts {
        h.shutdown().await;
    }
}
