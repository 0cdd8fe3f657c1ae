//! Rough throughput check of the actor loop against a plain tokio mpsc baseline, measured in the
//! same process and run (the machines are noisy, so the ratio is what counts).
//!
//! `cargo run --release -p airssys-actor --example throughput [messages]`

use std::time::Instant;

use airssys_actor::TrySendError;
use airssys_actor::{spawn_supervised, Actor, ActorFactory, Crash, Rejection, RestartPolicy};
use tokio::sync::{mpsc, oneshot};

enum Op {
    Tick,
    Flush(oneshot::Sender<u64>),
}

struct Sink {
    seen: u64,
}

impl Actor for Sink {
    type Msg = Op;
    async fn handle(&mut self, msg: Op) -> Result<(), Crash> {
        match msg {
            Op::Tick => self.seen += 1,
            Op::Flush(reply) => {
                let _ = reply.send(self.seen);
            }
        }
        Ok(())
    }
}

struct SinkFactory;

impl ActorFactory for SinkFactory {
    type Actor = Sink;
    async fn create(&mut self) -> Result<Sink, Crash> {
        Ok(Sink { seen: 0 })
    }
    fn reject(&mut self, _msg: Op, _why: &Rejection) {}
}

async fn baseline(n: u64) -> f64 {
    let (tx, mut rx) = mpsc::unbounded_channel::<Op>();
    let start = Instant::now();
    let consumer = tokio::spawn(async move {
        let mut seen = 0u64;
        while let Some(op) = rx.recv().await {
            match op {
                Op::Tick => seen += 1,
                Op::Flush(reply) => {
                    let _ = reply.send(seen);
                }
            }
        }
    });
    let (reply, done) = oneshot::channel();
    tokio::spawn(async move {
        for _ in 0..n {
            let _ = tx.send(Op::Tick);
        }
        let _ = tx.send(Op::Flush(reply));
    });
    let seen = done.await.unwrap_or(0);
    let rate = seen as f64 / start.elapsed().as_secs_f64();
    consumer.abort();
    rate
}

async fn actor(n: u64, capacity: usize) -> (f64, u64) {
    let handle = spawn_supervised(SinkFactory, capacity, RestartPolicy::default());
    let tx = handle.sender().clone();
    let start = Instant::now();
    let (reply, done) = oneshot::channel();
    tokio::spawn(async move {
        let mut full = 0u64;
        for _ in 0..n {
            let mut op = Op::Tick;
            loop {
                match tx.try_send(op) {
                    Ok(()) => break,
                    Err(TrySendError::Full(back)) => {
                        full += 1;
                        op = back;
                        tokio::task::yield_now().await;
                    }
                    Err(TrySendError::Closed(_)) => return full,
                }
            }
        }
        let _ = tx.push_committed(Op::Flush(reply));
        full
    });
    let seen = done.await.unwrap_or(0);
    let rate = seen as f64 / start.elapsed().as_secs_f64();
    handle.stop().await;
    (rate, seen)
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    else {
        eprintln!("cannot build runtime");
        return;
    };
    rt.block_on(async {
        for round in 0..3 {
            let base = baseline(n).await;
            for capacity in [1024, 65_536] {
                let (ours, seen) = actor(n, capacity).await;
                println!(
                    "round {round}: baseline mpsc {:.2} M msg/s, actor (capacity {capacity}) {:.2} M msg/s ({seen} handled), ratio {:.2}",
                    base / 1e6,
                    ours / 1e6,
                    ours / base
                );
            }
        }
    });
}
