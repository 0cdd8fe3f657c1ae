//! Failover time with real node processes on loopback: a counter is placed on node k, node k
//! is killed with SIGKILL, and a client asks a surviving node for the counter until the
//! moved actor answers. Time from the kill to that first reply, over many kills (each node in
//! turn, so about a third of them kill the Raft leader). The killed node is restarted and
//! the cluster settles before the next kill.
//!
//! `cargo bench --bench failover` (env AIRSSYS_BENCH_KILLS, default 21;
//! AIRSSYS_BENCH_KEEP_LOGS=1 keeps the nodes' logs and prints each kill's wall-clock time).
//!
//! `AIRSSYS_BENCH_CLIENT=keyed`: the client's view instead. A client increments the counter
//! through the survivor without pause, each increment durable, under its own idempotency
//! key, with a 10 s timeout, and tries again under the same key on any failure (as
//! `airssys request --idempotency-key` does). Per kill: the time from the kill to the
//! client's first answer, and the longest any increment took; at the end the count must
//! equal the increments answered, each applied once.
//! `AIRSSYS_BENCH_VICTIM=leader`: every kill is of the node that leads (and owns the counter).

#![allow(clippy::unwrap_used)]

#[path = "../tests/common/procs.rs"]
mod procs;

use procs::{alive_voters, make_certs, owner_of, wait_for, Node};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the keyed client saw: when each increment was answered, and how long it took.
#[derive(Default)]
struct Seen {
    answered: Vec<(Instant, Duration)>,
    ids: Vec<String>,
}

/// Increments `c` through `endpoint` until `stop`, each under its own key, retrying a key
/// until it is answered (10 s per attempt).
fn keyed_client(endpoint: String, prefix: String, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let id = format!("{prefix}-{n}");
        let started = Instant::now();
        loop {
            let r = procs::admin_request_keyed(
                &endpoint,
                "c",
                &format!("inc {id}"),
                "durable",
                10_000,
                Some(&id),
            );
            match r {
                Ok(_) => break,
                Err(e) => {
                    assert!(
                        !e.contains("key-reused"),
                        "a retry was refused as another payload: {e}"
                    );
                    assert!(
                        started.elapsed() < Duration::from_secs(60),
                        "no failover: {e}"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        let mut s = seen.lock().unwrap();
        s.answered.push((Instant::now(), started.elapsed()));
        s.ids.push(id);
    }
}

fn request_at(endpoint: &str, name: &str, text: &str) -> Result<String, String> {
    procs::admin_request(endpoint, name, text, "fast", 300)
}

fn leader_of(node: &Node) -> Option<u64> {
    node.status()?["leader"].as_u64()
}

fn main() {
    let kills: usize = std::env::var("AIRSSYS_BENCH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(21);
    let dir = tempfile::tempdir().unwrap();
    let keep_logs = std::env::var_os("AIRSSYS_BENCH_KEEP_LOGS").is_some();
    let tls = make_certs(dir.path(), "ca", &[1, 2, 3]);
    let n1 = Node::start(dir.path(), 1, &tls[0], None);
    let seed = n1.peer.clone();
    let n2 = Node::start(dir.path(), 2, &tls[1], Some(&seed));
    let n3 = Node::start(dir.path(), 3, &tls[2], Some(&seed));
    let mut nodes = [n1, n2, n3];
    wait_for("three live voters", || {
        (alive_voters(&nodes[0]) == Some(vec![1, 2, 3])).then_some(())
    });
    let examples = std::env::var("AIRSSYS_EXAMPLES_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            let exe = std::path::PathBuf::from(procs::bin());
            exe.parent()
                .unwrap()
                .parent()
                .unwrap()
                .join("wasm32-wasip2/release")
        });
    nodes[0].ok(&[
        "component",
        "install",
        "c",
        examples.join("counter.wasm").to_str().unwrap(),
    ]);
    let keyed = std::env::var("AIRSSYS_BENCH_CLIENT").is_ok_and(|v| v == "keyed");
    let mut all = Vec::new();
    let mut leader_kills = Vec::new();
    let mut other_kills = Vec::new();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let always_leader = std::env::var("AIRSSYS_BENCH_VICTIM").is_ok_and(|v| v == "leader");
    for k in 0..kills {
        let victim = if always_leader {
            wait_for("a leader", || leader_of(&nodes[0]))
        } else {
            (k % 3) as u64 + 1
        };
        let via = if victim == 1 { 1 } else { 0 }; // a survivor's index
        if owner_of(&nodes[via], "c") != victim {
            nodes[via].ok(&["component", "move", "c", "--to", &victim.to_string()]);
        }
        wait_for("the counter on the victim", || {
            (owner_of(&nodes[via], "c") == victim
                && request_at(&nodes[via].endpoint, "c", "get").is_ok())
            .then_some(())
        });
        let was_leader = leader_of(&nodes[via]) == Some(victim);
        let stop = Arc::new(AtomicBool::new(false));
        let client = keyed.then(|| {
            let (endpoint, stop, shared) =
                (nodes[via].endpoint.clone(), stop.clone(), seen.clone());
            let client =
                std::thread::spawn(move || keyed_client(endpoint, format!("k{k}"), stop, shared));
            // Under way before the kill.
            wait_for("the client's first increments", || {
                (seen
                    .lock()
                    .unwrap()
                    .ids
                    .iter()
                    .filter(|i| i.starts_with(&format!("k{k}-")))
                    .count()
                    >= 5)
                    .then_some(())
            });
            client
        });
        let t = Instant::now();
        if keep_logs {
            let since_epoch = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            println!(
                "kill {:>2} at {:.3} s since the epoch",
                k + 1,
                since_epoch.as_secs_f64()
            );
        }
        nodes[victim as usize - 1].kill();
        let endpoint = nodes[via].endpoint.clone();
        let took = match client {
            None => {
                loop {
                    if request_at(&endpoint, "c", "get").is_ok() {
                        break;
                    }
                    assert!(t.elapsed() < Duration::from_secs(60), "no failover");
                    std::thread::sleep(Duration::from_millis(5));
                }
                t.elapsed()
            }
            Some(client) => {
                // The first answer the client gets after the kill (an increment in flight
                // at the kill included), once the counter runs elsewhere.
                let first = wait_for("the client's first answer after the kill", || {
                    let s = seen.lock().unwrap();
                    s.answered
                        .iter()
                        .find(|(at, _)| *at > t)
                        .map(|(at, _)| *at - t)
                });
                wait_for("the counter elsewhere", || {
                    (owner_of(&nodes[via], "c") != victim).then_some(())
                });
                stop.store(true, Ordering::SeqCst);
                client.join().unwrap();
                first
            }
        };
        println!(
            "kill {:>2}: node {victim}{}  first reply after {:>6.0} ms",
            k + 1,
            if was_leader { " (leader)" } else { "" },
            took.as_secs_f64() * 1e3
        );
        all.push(took);
        if was_leader {
            leader_kills.push(took);
        } else {
            other_kills.push(took);
        }
        nodes[victim as usize - 1].restart();
        wait_for("the cluster to settle", || {
            (alive_voters(&nodes[via]) == Some(vec![1, 2, 3])
                && nodes[victim as usize - 1]
                    .cli(&["node", "ready"])
                    .status
                    .success())
            .then_some(())
        });
    }
    let show = |label: &str, mut v: Vec<Duration>| {
        if v.is_empty() {
            return;
        }
        v.sort();
        let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e3;
        println!(
            "{label:<22} n={:<3} p50 {:>6.0} ms  p99 {:>6.0} ms  max {:>6.0} ms",
            v.len(),
            at(0.5),
            at(0.99),
            at(1.0)
        );
    };
    if keyed {
        let s = seen.lock().unwrap();
        let slowest_increment = s.answered.iter().map(|(_, d)| *d).max().unwrap_or_default();
        let count: u64 = wait_for("the final count", || {
            request_at(&nodes[0].endpoint, "c", "get").ok()
        })
        .trim()
        .parse()
        .unwrap();
        let tally = wait_for("the tally", || {
            request_at(&nodes[0].endpoint, "c", "tally").ok()
        });
        let doubled: Vec<&str> = tally.lines().filter(|l| !l.ends_with(" 1")).collect();
        assert!(doubled.is_empty(), "applied more than once: {doubled:?}");
        assert_eq!(count, s.ids.len() as u64, "acked = applied");
        println!(
            "keyed client: {} increments, all answered and applied once; count {count}",
            s.ids.len()
        );
        println!(
            "slowest increment {:.0} ms (its timeout: 10,000 ms)",
            slowest_increment.as_secs_f64() * 1e3
        );
        println!("failover: kill -9 of the owner -> the keyed client's first answer");
    } else {
        println!("failover: kill -9 of the owner -> first reply from the moved actor");
    }
    show("all kills", all);
    show("leader killed", leader_kills);
    show("follower killed", other_kills);
    if keep_logs {
        println!("node logs kept in {}", dir.keep().display());
    }
}
