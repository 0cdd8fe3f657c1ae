//! Durable commit throughput: `Storage::commit_async` (group commit) against raw synced RocksDB
//! puts, in the same process and run, at several concurrencies.
//!
//! `cargo run --release -p airssys-storage --example commit_throughput -- [SECONDS]`
//!
//! Each commit writes one 256-byte value (plus the usage metadata) to the writer's own component;
//! the baseline does one synced 256-byte `put` per writer thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use airssys_storage::{CommitBatch, ComponentWrites, Storage, StorageOptions};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn pct(lat: &mut [u64], p: f64) -> f64 {
    if lat.is_empty() {
        return 0.0;
    }
    lat.sort_unstable();
    let i = ((lat.len() - 1) as f64 * p) as usize;
    lat[i] as f64 / 1e3
}

fn baseline(writers: usize, secs: f64) -> Res<(f64, f64, f64)> {
    let dir = tempfile::tempdir()?;
    let mut o = rocksdb::Options::default();
    o.create_if_missing(true);
    let db = Arc::new(rocksdb::DB::open(&o, dir.path())?);
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (db, stop) = (db.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut wo = rocksdb::WriteOptions::default();
                wo.set_sync(true);
                let mut lat = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    if db.put_opt(format!("w{w}-{i}"), [7u8; 256], &wo).is_err() {
                        break;
                    }
                    lat.push(t.elapsed().as_micros() as u64);
                    i += 1;
                }
                lat
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(h.join().map_err(|_| "writer panicked")?);
    }
    let n = lat.len() as f64;
    Ok((n / secs, pct(&mut lat, 0.5), pct(&mut lat, 0.99)))
}

fn ours(writers: usize, secs: f64) -> Res<(f64, f64, f64, f64)> {
    let dir = tempfile::tempdir()?;
    let st = Storage::open(dir.path(), StorageOptions::default())?;
    let names: Vec<String> = (0..writers).map(|w| format!("w{w}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    st.create_components(&refs)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let before = st.commit_stats();
    let lat = rt.block_on(async {
        let tasks: Vec<_> = names
            .iter()
            .map(|c| {
                let (st, stop, c) = (st.clone(), stop.clone(), c.clone());
                tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("k{i}").into_bytes();
                        let batch = CommitBatch {
                            components: vec![ComponentWrites {
                                component: c.clone(),
                                usage_delta: (key.len() + 256) as i64,
                                writes: vec![(key, Some(vec![7u8; 256]))],
                            }],
                            ..Default::default()
                        };
                        let t = Instant::now();
                        if st.commit_async(batch).await.is_err() {
                            break;
                        }
                        lat.push(t.elapsed().as_micros() as u64);
                        i += 1;
                    }
                    lat
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for t in tasks {
            if let Ok(l) = t.await {
                all.extend(l);
            }
        }
        all
    });
    let after = st.commit_stats();
    let mut lat = lat;
    let n = lat.len() as f64;
    let per_sync =
        (after.batches - before.batches) as f64 / (after.groups - before.groups).max(1) as f64;
    Ok((n / secs, pct(&mut lat, 0.5), pct(&mut lat, 0.99), per_sync))
}

fn main() -> Res<()> {
    let secs: f64 = std::env::args().nth(1).map_or(Ok(3.0), |a| a.parse())?;
    println!("writers | raw synced put/s (p50, p99 ms) | commit_async/s (p50, p99 ms, commits per sync) | ratio");
    for writers in [1usize, 16, 64] {
        let (b, b50, b99) = baseline(writers, secs)?;
        let (o, o50, o99, per) = ours(writers, secs)?;
        println!(
            "{writers:>7} | {b:>9.0} ({b50:.2}, {b99:.2}) | {o:>9.0} ({o50:.2}, {o99:.2}, {per:.1}) | {:.2}x",
            o / b
        );
    }
    Ok(())
}
