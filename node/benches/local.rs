//! Local benchmarks, each beside its baseline in the same run (the targets are in docs/BENCHMARKS.md):
//!
//! - request → reply with no writes (`echo`, fast) vs a tokio mpsc + oneshot round trip;
//! - fire-and-forget throughput between two components (`ping blast` → `crash`), fast
//!   and durable, vs a ractor cast from one sender to one actor;
//! - actor activation (instantiate) vs plain wasmtime instantiation of the same
//!   component.
//!
//! Run: `scripts/build-examples.sh && cargo bench -p airssys-node --bench local`.
//! Criterion prints its own statistics; at the end a table gives p50/p99 and the ratio
//! to each baseline, which is what docs/BENCHMARKS.md records.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use airssys_node::api::{AdminBackend, Delivery, InstallRequest, LimitsRequest};
use airssys_node::cluster::ClusterHost;
use airssys_node::component::{ComponentActor, ComponentShared, HostState};
use airssys_node::config::NodeConfig;
use criterion::Criterion;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{free_ports, one_node};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};

fn examples_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("AIRSSYS_EXAMPLES_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().unwrap().parent().unwrap().parent().unwrap();
    target.join("wasm32-wasip2").join("release")
}

fn example(name: &str) -> Vec<u8> {
    let path = examples_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run scripts/build-examples.sh first)",
            path.display()
        )
    })
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Percentiles of a set of durations, in microseconds.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e6;
    (at(0.50), at(0.99))
}

struct Setup {
    rt: Runtime,
    host: ClusterHost,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let host = rt.block_on(async {
        let host = one_node(
            NodeConfig {
                data_dir: dir.path().to_path_buf(),
                instance_pool: 256,
                ..NodeConfig::default()
            },
            free_ports(),
        )
        .await;
        for (name, example_name, mailbox) in [
            ("echo", "echo", 1024),
            ("ping", "ping", 1024),
            ("sink", "crash", 100_000),
        ] {
            host.install(InstallRequest {
                name: name.into(),
                binary: example(example_name),
                limits: LimitsRequest {
                    mailbox: Some(mailbox),
                    ..Default::default()
                },
            })
            .await
            .unwrap();
        }
        host
    });
    Setup {
        rt,
        host,
        _dir: dir,
    }
}

// ---------- request → reply ----------

fn tokio_round_trip_server(rt: &Runtime) -> mpsc::Sender<(Vec<u8>, oneshot::Sender<Vec<u8>>)> {
    let (tx, mut rx) = mpsc::channel::<(Vec<u8>, oneshot::Sender<Vec<u8>>)>(1024);
    rt.spawn(async move {
        while let Some((payload, reply)) = rx.recv().await {
            let _ = reply.send(payload);
        }
    });
    tx
}

async fn tokio_round_trip(tx: &mpsc::Sender<(Vec<u8>, oneshot::Sender<Vec<u8>>)>) {
    let (rtx, rrx) = oneshot::channel();
    tx.send((b"x".to_vec(), rtx)).await.unwrap();
    rrx.await.unwrap();
}

async fn echo_round_trip(host: &ClusterHost) {
    host.request(
        "echo",
        b"x".to_vec(),
        Duration::from_secs(5),
        Delivery::Fast,
        None,
    )
    .await
    .unwrap();
}

/// Latency samples of `ours` and `base`, taken alternately so both see the same
/// machine noise (these machines drift within a run).
fn sample_interleaved<F, Fut, G, Gut>(
    rt: &Runtime,
    n: usize,
    mut ours: F,
    mut base: G,
) -> (Vec<Duration>, Vec<Duration>)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
    G: FnMut() -> Gut,
    Gut: std::future::Future<Output = ()>,
{
    rt.block_on(async {
        for _ in 0..n / 10 {
            ours().await;
            base().await;
        }
        let mut a = Vec::with_capacity(n);
        let mut b = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            ours().await;
            a.push(t.elapsed());
            let t = Instant::now();
            base().await;
            b.push(t.elapsed());
        }
        (a, b)
    })
}

// ---------- throughput ----------

/// One blast of `n` fire-and-forget messages from ping to sink; returns once sink has
/// handled all of them (a request to sink queued behind them has been answered).
async fn blast(host: &ClusterHost, n: usize, fast: bool) {
    let cmd = format!("blast {n} sink{}", if fast { " fast" } else { "" });
    host.request(
        "ping",
        cmd.into_bytes(),
        Duration::from_secs(60),
        Delivery::Fast,
        None,
    )
    .await
    .unwrap();
    host.request(
        "sink",
        b"done?".to_vec(),
        Duration::from_secs(60),
        Delivery::Fast,
        None,
    )
    .await
    .unwrap();
}

fn blast_rate(s: &Setup, per_blast: usize, blasts: usize, fast: bool) -> f64 {
    s.rt.block_on(async {
        blast(&s.host, per_blast, fast).await;
        let t = Instant::now();
        for _ in 0..blasts {
            blast(&s.host, per_blast, fast).await;
        }
        (per_blast * blasts) as f64 / t.elapsed().as_secs_f64()
    })
}

struct Counter;
impl ractor::Actor for Counter {
    type Msg = u64;
    type State = u64;
    type Arguments = ();
    async fn pre_start(
        &self,
        _: ractor::ActorRef<u64>,
        _: (),
    ) -> Result<u64, ractor::ActorProcessingErr> {
        Ok(0)
    }
    async fn handle(
        &self,
        _: ractor::ActorRef<u64>,
        msg: u64,
        state: &mut u64,
    ) -> Result<(), ractor::ActorProcessingErr> {
        *state += 1;
        if msg == u64::MAX {
            DONE.notify_one();
        }
        Ok(())
    }
}
static DONE: tokio::sync::Notify = tokio::sync::Notify::const_new();

fn ractor_rate(rt: &Runtime, n: u64) -> f64 {
    rt.block_on(async {
        let (actor, handle) = ractor::Actor::spawn(None, Counter, ()).await.unwrap();
        let t = Instant::now();
        for i in 0..n - 1 {
            actor.cast(i).unwrap();
        }
        actor.cast(u64::MAX).unwrap();
        DONE.notified().await;
        let rate = n as f64 / t.elapsed().as_secs_f64();
        actor.stop(None);
        let _ = handle.await;
        rate
    })
}

// ---------- instantiate ----------

fn instantiate_samples(s: &Setup, n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let engine =
        airssys_node::component::new_engine(s._dir.path().join("bench-cache"), 64).unwrap();
    let binary = example("echo");
    let prepared = engine.prepare(&binary, "bench-echo").unwrap();
    let storage = airssys_storage::Storage::open(
        &s._dir.path().join("bench-db"),
        airssys_storage::StorageOptions::default(),
    )
    .unwrap();
    storage.create_component("bench").unwrap();
    s.rt.block_on(async {
        let router = airssys_node::messaging::Router::new(storage.clone());
        let shared = Arc::new(
            ComponentShared::load(
                "bench".into(),
                1,
                airssys_node::config::DEFAULT_LIMITS,
                1,
                1,
                prepared.clone(),
                storage.clone(),
                router,
                // Instantiation commits nothing; the node's committer stands in.
                s.host.host().committer(),
            )
            .unwrap(),
        );
        let mut ours = Vec::with_capacity(n);
        let mut raw = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let actor = ComponentActor::instantiate(shared.clone()).await.unwrap();
            ours.push(t.elapsed());
            drop(actor);
            let t = Instant::now();
            let mut store = wasmtime::Store::new(
                engine.engine(),
                HostState::new(shared.clone(), &airssys_node::config::DEFAULT_LIMITS),
            );
            store.set_fuel(u64::MAX).unwrap();
            let _instance = prepared.pre.instantiate_async(&mut store).await.unwrap();
            raw.push(t.elapsed());
            drop(store);
        }
        (ours, raw)
    })
}

fn main() {
    let s = setup();
    // `AIRSSYS_BENCH_PROFILE=fast` runs only the fast fire-and-forget workload, long
    // enough to profile (e.g. under `perf record`).
    if std::env::var("AIRSSYS_BENCH_PROFILE").as_deref() == Ok("fast") {
        let rate = blast_rate(&s, 1_000, 3_000, true);
        println!("fast fire-and-forget: {rate:.0} msg/s");
        s.rt.block_on(s.host.shutdown());
        return;
    }
    let mut c = Criterion::default()
        .sample_size(30)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .configure_from_args();

    let tokio_tx = tokio_round_trip_server(&s.rt);
    {
        let mut g = c.benchmark_group("request_reply");
        g.bench_function("baseline_tokio_mpsc_oneshot", |b| {
            b.iter(|| s.rt.block_on(tokio_round_trip(&tokio_tx)))
        });
        g.bench_function("airssys_echo_fast", |b| {
            b.iter(|| s.rt.block_on(echo_round_trip(&s.host)))
        });
        g.finish();
    }
    c.final_summary();

    // The percentile table (the figures docs/BENCHMARKS.md records).
    let n = 20_000;
    let (ours, base) = sample_interleaved(
        &s.rt,
        n,
        || echo_round_trip(&s.host),
        || tokio_round_trip(&tokio_tx),
    );
    let (ours, base) = (percentiles(ours), percentiles(base));
    let ractor = ractor_rate(&s.rt, 1_000_000);
    let fast = blast_rate(&s, 1_000, 100, true);
    let durable = blast_rate(&s, 1_000, 5, false);
    let (inst_ours, inst_raw) = instantiate_samples(&s, 2_000);
    let inst_ours = percentiles(inst_ours);
    let inst_raw = percentiles(inst_raw);

    println!();
    println!("| what | airssys | baseline | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| request→reply p50 (echo, fast) | {:.1} µs | {:.1} µs (tokio mpsc+oneshot) | {:.2}× |",
        ours.0,
        base.0,
        ours.0 / base.0
    );
    println!(
        "| request→reply p99 | {:.1} µs | {:.1} µs | {:.2}× |",
        ours.1,
        base.1,
        ours.1 / base.1
    );
    println!(
        "| fire-and-forget, fast, component→component | {:.0} msg/s | {:.0} msg/s (ractor cast) | {:.2}× |",
        fast, ractor, fast / ractor
    );
    println!(
        "| fire-and-forget, durable, component→component | {:.0} msg/s | {:.0} msg/s (ractor cast) | {:.3}× |",
        durable, ractor, durable / ractor
    );
    println!(
        "| activation p50 (instantiate) | {:.1} µs | {:.1} µs (raw wasmtime) | {:.2}× |",
        inst_ours.0,
        inst_raw.0,
        inst_ours.0 / inst_raw.0
    );
    println!(
        "| activation p99 | {:.1} µs | {:.1} µs | {:.2}× |",
        inst_ours.1,
        inst_raw.1,
        inst_ours.1 / inst_raw.1
    );
    s.rt.block_on(s.host.shutdown());
}
