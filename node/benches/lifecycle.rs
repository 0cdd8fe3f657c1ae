//! Lifecycle costs on a one-node cluster (what `airssys node start` runs):
//!
//! - **Upgrade pause**: one client sends `inc` requests to a counter back to back while the
//!   counter is upgraded (v1 → counter, its migration rewriting v1's keys) and rolled back,
//!   again and again. For each switch, the longest gap between two consecutive replies
//!   around it; against, in the same run, the gaps between replies while nothing switches.
//! - **Backup throughput**: a node whose components hold AIRSSYS_BENCH_BACKUP_MB of data
//!   (written through the same storage the state machine uses), backed up through
//!   `AdminBackend::backup` into a file; against, in the same run, a plain copy of the
//!   node's data directory (every file read and written once).
//!
//! `scripts/build-examples.sh && cargo bench --bench lifecycle` (env AIRSSYS_BENCH_UPGRADES,
//! default 20; AIRSSYS_BENCH_BACKUP_MB, default 256).

#![allow(clippy::unwrap_used)]

mod support;

use airssys_node::api::{AdminBackend, Delivery, InstallRequest, LimitsRequest, UpgradeRequest};
use airssys_node::cluster::ClusterHost;
use airssys_node::config::NodeConfig;
use airssys_storage::{CommitBatch, ComponentWrites};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{example, free_ports, one_node};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn node(dir: &Path) -> ClusterHost {
    let config = NodeConfig {
        data_dir: dir.to_path_buf(),
        instance_pool: 64,
        ..NodeConfig::default()
    };
    one_node(config, free_ports()).await
}

async fn install(node: &ClusterHost, name: &str, binary: Vec<u8>) {
    node.install(InstallRequest {
        name: name.into(),
        binary,
        limits: LimitsRequest::default(),
    })
    .await
    .unwrap();
    // Wait until it answers.
    while node
        .request(
            name,
            b"get".to_vec(),
            Duration::from_secs(5),
            Delivery::Fast,
            None,
        )
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reply times of a client that sends `inc` back to back until stopped.
fn spawn_client(
    node: Arc<ClusterHost>,
    stop: Arc<AtomicBool>,
    replies: Arc<Mutex<Vec<Instant>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let text = format!("inc r{i}");
            node.request(
                "c",
                text.into_bytes(),
                Duration::from_secs(30),
                Delivery::Durable,
                None,
            )
            .await
            .unwrap();
            replies.lock().unwrap().push(Instant::now());
            i += 1;
        }
    })
}

/// The longest gap between consecutive replies that spans `[from, to]`, or lies in it.
fn longest_gap_around(replies: &[Instant], from: Instant, to: Instant) -> Duration {
    let mut longest = Duration::ZERO;
    for w in replies.windows(2) {
        if w[1] >= from && w[0] <= to {
            longest = longest.max(w[1] - w[0]);
        }
    }
    longest
}

async fn upgrade_pause(rt_dir: &Path) {
    let switches = env_num("AIRSSYS_BENCH_UPGRADES", 20) as usize;
    let node = Arc::new(node(rt_dir).await);
    install(&node, "c", example("counter_v1")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let replies = Arc::new(Mutex::new(Vec::new()));
    let client = spawn_client(node.clone(), stop.clone(), replies.clone());

    // Baseline: gaps while nothing switches (the same client, the same counter).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let quiet_end = Instant::now();
    let mut windows = Vec::new();
    for k in 0..switches {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let from = Instant::now();
        if k % 2 == 0 {
            node.upgrade(UpgradeRequest {
                name: "c".into(),
                binary: example("counter"),
                limits: LimitsRequest::default(),
            })
            .await
            .unwrap();
        } else {
            node.rollback("c").await.unwrap();
        }
        windows.push((from, Instant::now()));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    client.await.unwrap();
    let replies = replies.lock().unwrap().clone();

    let mut quiet: Vec<Duration> = replies
        .windows(2)
        .filter(|w| w[1] <= quiet_end)
        .map(|w| w[1] - w[0])
        .collect();
    quiet.sort();
    let mut pauses: Vec<Duration> = windows
        .iter()
        .map(|(from, to)| longest_gap_around(&replies, *from, *to))
        .collect();
    pauses.sort();
    let mut switch_times: Vec<Duration> = windows.iter().map(|(f, t)| *t - *f).collect();
    switch_times.sort();
    let (p50, p99) = (percentile(&pauses, 0.5), percentile(&pauses, 0.99));
    let (q50, q99) = (percentile(&quiet, 0.5), percentile(&quiet, 0.99));
    println!(
        "upgrade pause ({switches} switches, {} replies): longest reply gap per switch p50 {:.2} ms, p99 {:.2} ms",
        replies.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    println!(
        "  baseline, reply gaps with no switch: p50 {:.3} ms, p99 {:.3} ms ({} gaps); ratio p50 {:.1}x, p99 {:.1}x",
        q50.as_secs_f64() * 1e3,
        q99.as_secs_f64() * 1e3,
        quiet.len(),
        p50.as_secs_f64() / q50.as_secs_f64().max(1e-9),
        p99.as_secs_f64() / q99.as_secs_f64().max(1e-9)
    );
    println!(
        "  the upgrade command itself: p50 {:.2} ms, p99 {:.2} ms",
        percentile(&switch_times, 0.5).as_secs_f64() * 1e3,
        percentile(&switch_times, 0.99).as_secs_f64() * 1e3
    );
    node.shutdown().await;
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

fn copy_dir(from: &Path, to: &Path) -> u64 {
    std::fs::create_dir_all(to).unwrap();
    let mut total = 0;
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        // A file RocksDB removed since the listing is not data.
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if meta.is_dir() {
            total += copy_dir(&entry.path(), &target);
        } else {
            let Ok(bytes) = std::fs::read(entry.path()) else {
                continue;
            };
            let mut f = std::fs::File::create(&target).unwrap();
            f.write_all(&bytes).unwrap();
            f.sync_all().unwrap();
            total += bytes.len() as u64;
        }
    }
    total
}

async fn backup_throughput(dir: &Path) {
    let mb = env_num("AIRSSYS_BENCH_BACKUP_MB", 256);
    let data = dir.join("node");
    let node = node(&data).await;
    // 64 components (the echo binary) whose stores hold `mb` MiB of 64 KiB values between
    // them, written as commits straight to the node's storage.
    let components = 64;
    for c in 0..components {
        node.install(InstallRequest {
            name: format!("s{c}"),
            binary: example("echo"),
            limits: LimitsRequest::default(),
        })
        .await
        .unwrap();
    }
    let value = vec![0x5au8; 64 << 10];
    let per_component = (mb << 20) / (components as u64 * value.len() as u64);
    for c in 0..components {
        let name = format!("s{c}");
        for chunk in 0..per_component.div_ceil(16) {
            let writes: Vec<_> = (0..16)
                .map(|k| {
                    let key = format!("blob/{chunk:06}/{k:02}").into_bytes();
                    (key, Some(value.clone()))
                })
                .collect();
            node.host()
                .storage()
                .commit(CommitBatch {
                    fence: None,
                    components: vec![ComponentWrites {
                        component: name.clone(),
                        usage_delta: writes
                            .iter()
                            .map(|(k, v)| (k.len() + v.as_ref().unwrap().len()) as i64)
                            .sum(),
                        writes,
                    }],
                    sys: Vec::new(),
                })
                .unwrap();
        }
    }
    node.host().storage().sync_wal().unwrap();

    let file = dir.join("bench.airssys");
    let started = Instant::now();
    let mut chunks = node.backup().await.unwrap();
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    let mut bytes = 0u64;
    while let Some(chunk) = chunks.recv().await {
        let chunk = chunk.unwrap();
        bytes += chunk.len() as u64;
        out.write_all(&chunk).unwrap();
    }
    out.into_inner().unwrap().sync_all().unwrap();
    let backup_secs = started.elapsed().as_secs_f64();
    node.shutdown().await;
    drop(node);
    // The storage's last background work ends shortly after the node is dropped.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let on_disk = dir_bytes(&data);
    let started = Instant::now();
    let copied = copy_dir(&data, &dir.join("copy"));
    let copy_secs = started.elapsed().as_secs_f64();
    let backup_rate = bytes as f64 / (1 << 20) as f64 / backup_secs;
    let copy_rate = copied as f64 / (1 << 20) as f64 / copy_secs;
    println!(
        "backup: {:.0} MiB file from {:.0} MiB on disk in {:.2} s = {backup_rate:.0} MiB/s",
        bytes as f64 / (1 << 20) as f64,
        on_disk as f64 / (1 << 20) as f64,
        backup_secs
    );
    println!(
        "  baseline, plain copy of the data directory: {:.0} MiB in {:.2} s = {copy_rate:.0} MiB/s; ratio {:.2}x",
        copied as f64 / (1 << 20) as f64,
        copy_secs,
        backup_rate / copy_rate
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        upgrade_pause(&dir.path().join("upgrade")).await;
        backup_throughput(&dir.path().join("backup")).await;
    });
}
