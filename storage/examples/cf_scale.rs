//! Scale measurement: N component column families.
//!
//! `cargo run --release -p airssys-storage --example cf_scale -- N [--single] [--keep DIR]`
//!
//! 1. creates N components (bulk by default: `Storage::create_components`, one re-open; with
//!    `--single`, one `create_component` call each, which RocksDB makes quadratic), timing it;
//! 2. writes 3 keys to each (one commit per component through the group committer);
//! 3. times one more single creation with N families present (an install's cost at that size);
//! 4. closes, then re-opens in a fresh child process (so RSS is not polluted by phase 1), timing
//!    the open and reading VmRSS before and after, and after reading one key of every component.
//!
//! The same binary measures the baseline in the same run: RSS of the child before opening.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use airssys_storage::{CommitBatch, ComponentWrites, Storage, StorageOptions};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("component-{i:05}")).collect()
}

fn dir_bytes(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn reopen_child(dir: &Path, n: usize) -> Res<()> {
    let before = rss_kib();
    let t = Instant::now();
    let st = Storage::open(dir, StorageOptions::default())?;
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    let after_open = rss_kib();
    assert_eq!(st.component_names().len(), n, "components after reopen");
    let t = Instant::now();
    for c in names(n) {
        if st.get(&c, b"key-0")?.is_none() {
            return Err(format!("{c}: key-0 missing after reopen").into());
        }
    }
    let read_ms = t.elapsed().as_secs_f64() * 1e3;
    let after_reads = rss_kib();
    let per = |kib: u64| kib.saturating_sub(before) as f64 / n as f64;
    println!("reopen:            {open_ms:.0} ms ({n} families)");
    println!("rss before open:   {} KiB (process baseline)", before);
    println!(
        "rss after open:    {} KiB  (+{} KiB, {:.1} KiB per family)",
        after_open,
        after_open.saturating_sub(before),
        per(after_open)
    );
    println!(
        "rss after 1 read of each family ({read_ms:.0} ms): {} KiB  ({:.1} KiB per family)",
        after_reads,
        per(after_reads)
    );
    Ok(())
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--reopen-child") {
        let dir = PathBuf::from(args.get(1).ok_or("missing dir")?);
        let n: usize = args.get(2).ok_or("missing n")?.parse()?;
        return reopen_child(&dir, n);
    }
    let n: usize = args.first().map_or(Ok(1000), |a| a.parse())?;
    let single = args.iter().any(|a| a == "--single");
    let keep = args
        .iter()
        .position(|a| a == "--keep")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    let tmp = tempfile::tempdir()?;
    let dir = keep.unwrap_or_else(|| tmp.path().join("db"));

    let names = names(n);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    {
        let st = Storage::open(&dir, StorageOptions::default())?;
        let t = Instant::now();
        if single {
            for c in &refs {
                st.create_component(c)?;
            }
        } else {
            st.create_components(&refs)?;
        }
        let create = t.elapsed();
        println!(
            "create {n} families ({}): {:.2} s ({:.2} ms each)",
            if single { "one at a time" } else { "bulk" },
            create.as_secs_f64(),
            create.as_secs_f64() * 1e3 / n as f64
        );

        let rt = tokio::runtime::Builder::new_current_thread().build()?;
        let t = Instant::now();
        rt.block_on(async {
            let futs: Vec<_> = refs
                .iter()
                .map(|c| {
                    let writes: Vec<_> = (0..3)
                        .map(|k| (format!("key-{k}").into_bytes(), Some(vec![b'x'; 100])))
                        .collect();
                    let usage_delta = writes.iter().map(|(k, _)| k.len() as i64 + 100).sum();
                    st.commit_async(CommitBatch {
                        components: vec![ComponentWrites {
                            component: c.to_string(),
                            writes,
                            usage_delta,
                        }],
                        ..Default::default()
                    })
                })
                .collect();
            for f in futs {
                f.await?;
            }
            Ok::<_, airssys_storage::StorageError>(())
        })?;
        let stats = st.commit_stats();
        println!(
            "write 3 keys to each: {:.0} ms ({} commits in {} synced writes)",
            t.elapsed().as_secs_f64() * 1e3,
            stats.batches,
            stats.groups
        );

        let t = Instant::now();
        st.create_component("one-more")?;
        println!(
            "one more create_component with {n} families present: {:.1} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
        let t = Instant::now();
        st.drop_component("one-more")?;
        println!(
            "drop_component with {n} families present: {:.1} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
        println!("rss of the creating process: {} KiB", rss_kib());
    }
    println!("on disk: {} KiB", dir_bytes(&dir) / 1024);

    // The first re-open replays the WAL (and flushes what it replays); the second is a restart
    // of a node whose data is already in SST files.
    for round in ["first reopen (WAL replay)", "second reopen"] {
        println!("-- {round}");
        let out = Command::new(std::env::current_exe()?)
            .arg("--reopen-child")
            .arg(&dir)
            .arg(n.to_string())
            .output()?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
            return Err("reopen child failed".into());
        }
    }
    Ok(())
}
