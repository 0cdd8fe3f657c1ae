//! Many components on one node: install time as the count grows, memory per idle
//! actor, and node restart time (targets: 1,000 installed, restart ≤ 5 s, idle actor
//! ≤ 100 KiB).
//!
//! Run: `scripts/build-examples.sh && cargo bench -p airssys-node --bench scale`
//! (`AIRSSYS_SCALE_N=200` for a quicker run).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use airssys_node::api::{AdminBackend, Delivery, InstallRequest, LimitsRequest};
use airssys_node::config::NodeConfig;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::{free_ports, one_node};

fn example(name: &str) -> Vec<u8> {
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().unwrap().parent().unwrap().parent().unwrap();
    let path: PathBuf = target
        .join("wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/build-examples.sh)", path.display()))
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    // `cargo bench` passes `--bench`; this is not a criterion harness.
    let n: usize = std::env::var("AIRSSYS_SCALE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = NodeConfig {
        data_dir: dir.path().to_path_buf(),
        ..NodeConfig::default()
    };
    let binary = example("counter");
    let ports = free_ports();
    rt.block_on(async {
        let rss_empty = {
            let host = one_node(config.clone(), ports).await;
            let rss_empty = rss_kib();
            let start = Instant::now();
            let mut last_hundred = Instant::now();
            for i in 0..n {
                host.install(InstallRequest {
                    name: format!("c{i:05}"),
                    binary: binary.clone(),
                    limits: LimitsRequest::default(),
                })
                .await
                .unwrap();
                if (i + 1) % 100 == 0 {
                    println!(
                        "installed {:>5}: last 100 took {:>6.0} ms ({:.1} ms each)",
                        i + 1,
                        last_hundred.elapsed().as_secs_f64() * 1e3,
                        last_hundred.elapsed().as_secs_f64() * 10.0
                    );
                    last_hundred = Instant::now();
                }
            }
            println!("installed {n} components in {:.1} s", start.elapsed().as_secs_f64());
            // Touch every actor once so each holds a live instance.
            for i in 0..n {
                host.request(&format!("c{i:05}"), b"inc".to_vec(), Duration::from_secs(10), Delivery::Fast, None)
                    .await
                    .unwrap();
            }
            let rss_full = rss_kib();
            println!(
                "RSS: {} MiB empty, {} MiB with {n} active components: {:.0} KiB per component (actor + instance + column family)",
                rss_empty / 1024,
                rss_full / 1024,
                (rss_full.saturating_sub(rss_empty)) as f64 / n as f64
            );
            host.shutdown().await;
            rss_empty
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let start = Instant::now();
        let host = one_node(config.clone(), ports).await;
        let opened = start.elapsed();
        let count = host.list().await.unwrap().len();
        let reply = host
            .request("c00000", b"get".to_vec(), Duration::from_secs(10), Delivery::Fast, None)
            .await
            .unwrap();
        println!(
            "restart: {count} components back and serving in {:.2} s (c00000 says {})",
            opened.as_secs_f64(),
            String::from_utf8_lossy(&reply)
        );
        println!("RSS after restart: {} MiB ({} MiB before any component)", rss_kib() / 1024, rss_empty / 1024);
        host.shutdown().await;
    });
}
