//! Replicated state and failover with real node processes on loopback: the owner of a
//! counter is killed (-9) while a client increments it, accounts transfer money while
//! nodes are killed and restarted, a restarted former leader does not run what it lost, a
//! paused (partitioned) old owner cannot commit, and a wiped node catches up from a
//! snapshot. Invariants, never timings: every acknowledged
//! increment is in the final count and none is counted twice; the money stays constant.
#![allow(clippy::unwrap_used)]

mod common;

use common::procs::{make_certs, owner_of, wait_for, Node, PATIENCE};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Clients incrementing the counter at once while its owner is killed.
const CLIENTS: usize = 4;

/// The tests here run one at a time: each runs three node processes, and twelve on two
/// cores would make heartbeats late enough to trigger failovers nobody asked for (harmless,
/// but slow).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A request through the admin API that never panics: `Ok(reply)` on 200, `Err(why)`
/// otherwise (refused connection, error status, dead node).
fn request(node: &Node, name: &str, text: &str) -> Result<String, String> {
    request_at(&node.endpoint, name, text)
}

fn request_at(endpoint: &str, name: &str, text: &str) -> Result<String, String> {
    common::procs::admin_request(endpoint, name, text, "durable", 10_000)
}

/// Three nodes; node 1 bootstraps, 2 and 3 join it. Extra environment for every node.
fn cluster(dir: &Path, env: &[(&str, &str)]) -> Vec<Node> {
    let tls = make_certs(dir, "ca", &[1, 2, 3]);
    let n1 = Node::start_with_env(dir, 1, &tls[0], None, env);
    let seed = n1.peer.clone();
    let n2 = Node::start_with_env(dir, 2, &tls[1], Some(&seed), env);
    let n3 = Node::start_with_env(dir, 3, &tls[2], Some(&seed), env);
    let nodes = vec![n1, n2, n3];
    wait_for("three live voters", || {
        (common::procs::alive_voters(&nodes[0]) == Some(vec![1, 2, 3])).then_some(())
    });
    nodes
}

fn install(via: &Node, name: &str, example: &str) {
    let wasm = common::examples_dir().join(format!("{example}.wasm"));
    via.ok(&["component", "install", name, wasm.to_str().unwrap()]);
}

/// Puts `name` on node `to` and waits until it answers `probe` there.
fn place(via: &Node, name: &str, to: u64, probe: &str) {
    if owner_of(via, name) != to {
        via.ok(&["component", "move", name, "--to", &to.to_string()]);
    }
    wait_for("the component to answer on its node", || {
        (owner_of(via, name) == to && request(via, name, probe).is_ok()).then_some(())
    });
}

/// (owner, generation) according to the leader's view through `via`, if it answers.
fn placement_now(via: &Node, name: &str) -> Option<(u64, u64)> {
    let s = via.status()?;
    let c = s["components"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)?
        .clone();
    Some((c["owner"].as_u64()?, c["generation"].as_u64()?))
}

fn owner_now(via: &Node, name: &str) -> Option<u64> {
    placement_now(via, name).map(|(owner, _)| owner)
}

fn generation_now(via: &Node, name: &str) -> Option<u64> {
    placement_now(via, name).map(|(_, generation)| generation)
}

/// Outcomes of a run of increments. Each increment carries its own id (`inc ID`), which
/// the counter records with the number of times it was applied, so a request applied twice
/// is seen as such even when other requests failed.
#[derive(Default)]
struct Tally {
    /// Prefix of this tally's ids (unique per client).
    who: String,
    sent: u64,
    /// (id, the count it replied).
    acked: Vec<(String, u64)>,
    /// Ids of keyed durable sends accepted (a send has no reply to count by).
    accepted: Vec<String>,
    unsure: Vec<String>,
}

impl Tally {
    fn new(who: &str) -> Tally {
        Tally {
            who: who.to_string(),
            ..Tally::default()
        }
    }

    fn inc(&mut self, via: &Node) {
        self.sent += 1;
        let id = format!("{}-{}", self.who, self.sent);
        match request(via, "counter", &format!("inc {id}")) {
            Ok(v) => self.acked.push((id, v.trim().parse().unwrap())),
            Err(_) => self.unsure.push(id),
        }
    }

    /// An increment through the CLI with its id as idempotency key: the CLI tries again
    /// by itself until its 10 s are spent. Returns how long it took.
    fn inc_keyed(&mut self, via: &Node) -> std::time::Duration {
        self.sent += 1;
        let id = format!("{}-{}", self.who, self.sent);
        let started = Instant::now();
        let out = via.cli(&[
            "request",
            "counter",
            &format!("inc {id}"),
            "--idempotency-key",
            &id,
            "--timeout-ms",
            "10000",
        ]);
        let took = started.elapsed();
        let reply = String::from_utf8_lossy(&out.stdout).trim().to_string();
        match (out.status.success(), reply.parse()) {
            (true, Ok(v)) => self.acked.push((id, v)),
            _ => {
                eprintln!(
                    "{id} failed after {took:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                self.unsure.push(id)
            }
        }
        took
    }

    /// An increment sent (not requested) through the CLI with its id as idempotency key;
    /// the CLI tries again by itself for 10 s. Returns how long it took.
    fn send_keyed(&mut self, via: &Node) -> std::time::Duration {
        self.sent += 1;
        let id = format!("{}-{}", self.who, self.sent);
        let started = Instant::now();
        let out = via.cli(&[
            "send",
            "counter",
            &format!("inc {id}"),
            "--idempotency-key",
            &id,
            "--timeout-ms",
            "10000",
        ]);
        let took = started.elapsed();
        if out.status.success() {
            self.accepted.push(id);
        } else {
            eprintln!(
                "{id} failed after {took:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            self.unsure.push(id)
        }
        took
    }

    fn absorb(&mut self, other: Tally) {
        self.acked.extend(other.acked);
        self.accepted.extend(other.accepted);
        self.unsure.extend(other.unsure);
    }

    /// Every acknowledged increment applied exactly once, every unanswered one at most
    /// once, nothing applied that was never sent, and the count is the sum of them.
    fn check(&self, final_count: u64, applied: &BTreeMap<String, u64>) {
        if let Some(p) = problems_of(self, final_count, applied) {
            panic!("{p}");
        }
    }
}

/// What is wrong with a run of increments, judged by what the counter recorded per id.
fn problems_of(t: &Tally, final_count: u64, applied: &BTreeMap<String, u64>) -> Option<String> {
    let mut problems = Vec::new();
    let replies: BTreeSet<u64> = t.acked.iter().map(|(_, v)| *v).collect();
    if replies.len() != t.acked.len() {
        problems.push("two acknowledged increments saw the same count".to_string());
    }
    for id in t.acked.iter().map(|(id, _)| id).chain(&t.accepted) {
        match applied.get(id).copied().unwrap_or(0) {
            1 => {}
            0 => problems.push(format!("acknowledged {id} was lost")),
            n => problems.push(format!("acknowledged {id} was applied {n} times")),
        }
    }
    for id in &t.unsure {
        let n = applied.get(id).copied().unwrap_or(0);
        if n > 1 {
            problems.push(format!("unanswered {id} was applied {n} times"));
        }
    }
    let sent: BTreeSet<&str> = t
        .acked
        .iter()
        .map(|(id, _)| id.as_str())
        .chain(t.accepted.iter().map(String::as_str))
        .chain(t.unsure.iter().map(String::as_str))
        .collect();
    for id in applied.keys() {
        if !sent.contains(id.as_str()) {
            problems.push(format!("{id} was applied but never sent"));
        }
    }
    let sum: u64 = applied.values().sum();
    if sum != final_count {
        problems.push(format!(
            "the count is {final_count} but the recorded increments add up to {sum}"
        ));
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// What the counter recorded: request id → times applied.
fn applied(via: &Node) -> BTreeMap<String, u64> {
    let text = wait_for("the counter's tally", || {
        request(via, "counter", "tally").ok()
    });
    text.lines()
        .filter_map(|l| {
            let (id, n) = l.split_once(' ')?;
            Some((id.to_string(), n.parse().ok()?))
        })
        .collect()
}

#[test]
fn the_increment_judge_sees_doubles_losses_and_strangers() {
    let mut t = Tally::new("t");
    t.acked = vec![("t-1".into(), 1), ("t-2".into(), 2)];
    t.unsure = vec!["t-3".into()];
    let ok = BTreeMap::from([("t-1".to_string(), 1), ("t-2".to_string(), 1)]);
    assert_eq!(problems_of(&t, 2, &ok), None);
    let unsure_applied = BTreeMap::from([
        ("t-1".to_string(), 1),
        ("t-2".to_string(), 1),
        ("t-3".to_string(), 1),
    ]);
    assert_eq!(problems_of(&t, 3, &unsure_applied), None);
    let doubled = BTreeMap::from([("t-1".to_string(), 2), ("t-2".to_string(), 1)]);
    assert!(problems_of(&t, 3, &doubled).is_some(), "an acked double");
    let unsure_doubled = BTreeMap::from([
        ("t-1".to_string(), 1),
        ("t-2".to_string(), 1),
        ("t-3".to_string(), 2),
    ]);
    assert!(
        problems_of(&t, 4, &unsure_doubled).is_some(),
        "an unsure double"
    );
    let lost = BTreeMap::from([("t-1".to_string(), 1)]);
    assert!(problems_of(&t, 1, &lost).is_some(), "a lost ack");
    let stranger = BTreeMap::from([
        ("t-1".to_string(), 1),
        ("t-2".to_string(), 1),
        ("x-9".to_string(), 1),
    ]);
    assert!(problems_of(&t, 3, &stranger).is_some(), "never sent");
    assert!(problems_of(&t, 5, &ok).is_some(), "a count off its records");
}

fn count(via: &Node) -> u64 {
    wait_for("the counter to answer", || {
        request(via, "counter", "get").ok()
    })
    .trim()
    .parse()
    .unwrap()
}

#[test]
fn killing_the_owner_while_incrementing_loses_and_doubles_nothing() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path(), &[]);
    install(&nodes[0], "counter", "counter");
    let mut tally = Tally::new("main");
    for victim in [2usize, 3] {
        place(&nodes[0], "counter", victim as u64, "get");
        let old_generation = wait_for("the counter's generation", || {
            generation_now(&nodes[0], "counter")
        });
        // Several clients at once keep the counter's mailbox busy, so its handlers run while
        // its earlier commits are in flight (pipelined) when its node dies. Its owner is
        // killed after 20 acknowledged increments; the clients go on through node 1 until
        // 20 more are acknowledged by the moved counter.
        let (first, rest) = nodes.split_at_mut(1);
        let via = &first[0];
        let acked = AtomicUsize::new(0);
        let enough = AtomicUsize::new(usize::MAX);
        let started = Instant::now();
        let tallies: Vec<Tally> = std::thread::scope(|s| {
            let clients: Vec<_> = (0..CLIENTS)
                .map(|client| {
                    let (acked, enough) = (&acked, &enough);
                    s.spawn(move || {
                        let mut t = Tally::new(&format!("v{victim}c{client}"));
                        while acked.load(Ordering::SeqCst) < enough.load(Ordering::SeqCst) {
                            let before = t.acked.len();
                            t.inc(via);
                            if t.acked.len() > before {
                                acked.fetch_add(1, Ordering::SeqCst);
                            }
                            assert!(started.elapsed() < PATIENCE, "the counter never came back");
                        }
                        t
                    })
                })
                .collect();
            wait_for("20 increments before the kill", || {
                (acked.load(Ordering::SeqCst) >= 20).then_some(())
            });
            rest[victim - 2].kill();
            enough.store(acked.load(Ordering::SeqCst) + 20, Ordering::SeqCst);
            clients.into_iter().map(|c| c.join().unwrap()).collect()
        });
        for t in tallies {
            // Through a node that stayed up, a request follows the counter to its new
            // owner: none fails, even the ones in flight to the dead node.
            assert!(
                t.unsure.is_empty(),
                "requests through node 1 failed when node {victim} died: {:?}",
                t.unsure
            );
            tally.absorb(t);
        }
        let owner = owner_now(&nodes[0], "counter").unwrap();
        assert_ne!(owner, victim as u64, "the dead node still owns the counter");
        // It comes back, learns it no longer owns the counter, and does not run it.
        nodes[victim - 1].restart();
        wait_for("the restarted node to be ready", || {
            nodes[victim - 1]
                .cli(&["node", "ready"])
                .status
                .success()
                .then_some(())
        });
        for _ in 0..10 {
            tally.inc(&nodes[victim - 1]);
        }
        // It may be given the counter again later (a new generation), but never runs it
        // at the generation it lost.
        let stale = format!("activated component=counter generation={old_generation}");
        assert!(
            !nodes[victim - 1].log_text().contains(&stale),
            "the restarted old owner ran the counter at the generation it lost"
        );
    }
    let final_count = count(&nodes[0]);
    eprintln!(
        "acked {} unsure {} final {final_count}",
        tally.acked.len(),
        tally.unsure.len()
    );
    tally.check(final_count, &applied(&nodes[0]));
    // Every node holds the same count in the counter's replicated store.
    for n in &nodes {
        assert_eq!(count(n), final_count);
    }
}

/// Two distinct nodes of the slice, both mutable.
fn two_of(nodes: &mut [Node], a: usize, b: usize) -> (&mut Node, &mut Node) {
    assert_ne!(a, b);
    if a < b {
        let (left, right) = nodes.split_at_mut(b);
        (&mut left[a], &mut right[0])
    } else {
        let (left, right) = nodes.split_at_mut(a);
        (&mut right[0], &mut left[b])
    }
}

/// The node a node's status names as the leader.
fn leader_now(via: &Node) -> Option<u64> {
    via.status()?["leader"].as_u64()
}

/// A client increments the counter through a node that survives, with idempotency keys,
/// while the counter's owner is killed: first the owner that also leads (the component
/// and the Raft leader fail over at once), then one that does not. Every increment is
/// answered (none waits out its 10 s and fails) and applied exactly once.
#[test]
fn keyed_requests_follow_the_counter_and_are_applied_exactly_once() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path(), &[]);
    install(&nodes[0], "counter", "counter");
    let mut tally = Tally::new("keyed");
    for round in ["leader", "follower"] {
        let alive: Vec<usize> = (0..3).filter(|&i| nodes[i].is_running()).collect();
        let leader = wait_for("a leader", || leader_now(&nodes[alive[0]]));
        let victim_id = match round {
            "leader" => leader,
            _ => alive
                .iter()
                .map(|&i| nodes[i].id)
                .find(|&id| id != leader)
                .unwrap(),
        };
        let victim = nodes.iter().position(|n| n.id == victim_id).unwrap();
        let via = alive.iter().copied().find(|&i| i != victim).unwrap();
        place(&nodes[via], "counter", victim_id, "get");
        let acked = AtomicUsize::new(0);
        let enough = AtomicUsize::new(usize::MAX);
        let started = Instant::now();
        let (via_node, victim_node) = two_of(&mut nodes, via, victim);
        let via_node = &*via_node;
        let (tallies, slowest) = std::thread::scope(|s| {
            let clients: Vec<_> = (0..CLIENTS)
                .map(|client| {
                    let (acked, enough) = (&acked, &enough);
                    s.spawn(move || {
                        let mut t = Tally::new(&format!("{round}c{client}"));
                        let mut slowest = std::time::Duration::ZERO;
                        while acked.load(Ordering::SeqCst) < enough.load(Ordering::SeqCst) {
                            let before = t.acked.len() + t.accepted.len();
                            // Half the clients send, half request: both follow the counter.
                            let took = if client % 2 == 0 {
                                t.inc_keyed(via_node)
                            } else {
                                t.send_keyed(via_node)
                            };
                            slowest = slowest.max(took);
                            if t.acked.len() + t.accepted.len() > before {
                                acked.fetch_add(1, Ordering::SeqCst);
                            }
                            assert!(started.elapsed() < PATIENCE, "the counter never came back");
                        }
                        (t, slowest)
                    })
                })
                .collect();
            wait_for("20 increments before the kill", || {
                (acked.load(Ordering::SeqCst) >= 20).then_some(())
            });
            victim_node.kill();
            enough.store(acked.load(Ordering::SeqCst) + 20, Ordering::SeqCst);
            let done: Vec<(Tally, std::time::Duration)> =
                clients.into_iter().map(|c| c.join().unwrap()).collect();
            let slowest = done.iter().map(|(_, d)| *d).max().unwrap_or_default();
            (
                done.into_iter().map(|(t, _)| t).collect::<Vec<_>>(),
                slowest,
            )
        });
        eprintln!("{round} round: slowest increment {slowest:?}");
        for t in tallies {
            assert!(
                t.unsure.is_empty(),
                "{round} round: keyed increments failed: {:?}",
                t.unsure
            );
            tally.absorb(t);
        }
        let owner = wait_for("a new owner", || owner_now(&nodes[via], "counter"));
        assert_ne!(owner, victim_id, "the dead node still owns the counter");
        nodes[victim].restart();
        wait_for("the restarted node to be ready", || {
            nodes[victim]
                .cli(&["node", "ready"])
                .status
                .success()
                .then_some(())
        });
    }
    // A request queued behind every accepted send: the count includes them all.
    let final_count = count(&nodes[0]);
    assert!(!tally.accepted.is_empty(), "no keyed send was accepted");
    assert_eq!(
        final_count,
        (tally.acked.len() + tally.accepted.len()) as u64,
        "acked = applied"
    );
    tally.check(final_count, &applied(&nodes[0]));
}

/// The leader owns the counter and is killed. It restarts believing it still leads its old
/// term (its vote says so) until a quorum tells it otherwise; it must not take its own word
/// for what is committed and start the counter at the generation it lost.
#[test]
fn a_restarted_former_leader_does_not_run_what_it_lost() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path(), &[]);
    install(&nodes[0], "counter", "counter");
    let leader = wait_for("a leader", || nodes[0].status()?["leader"].as_u64());
    let survivor = if leader == 1 { 1 } else { 0 };
    place(&nodes[survivor], "counter", leader, "get");
    let old_generation = wait_for("the counter's generation", || {
        generation_now(&nodes[survivor], "counter")
    });
    let victim = leader as usize - 1;
    nodes[victim].kill();
    wait_for("the counter to fail over", || {
        (owner_now(&nodes[survivor], "counter").is_some_and(|o| o != leader)
            && request(&nodes[survivor], "counter", "get").is_ok())
        .then_some(())
    });
    nodes[victim].restart();
    wait_for("the restarted node to be ready", || {
        nodes[victim]
            .cli(&["node", "ready"])
            .status
            .success()
            .then_some(())
    });
    // A request through it reaches the counter where it runs now.
    wait_for("the counter through the restarted node", || {
        request(&nodes[victim], "counter", "get").ok()
    });
    let stale = format!("activated component=counter generation={old_generation}");
    assert!(
        !nodes[victim].log_text().contains(&stale),
        "the restarted former leader ran the counter at the generation it lost"
    );
}

#[test]
fn transfers_across_nodes_keep_the_money_while_nodes_die_and_return() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path(), &[]);
    let accounts = ["a1", "a2", "a3"];
    for (i, a) in accounts.iter().enumerate() {
        install(&nodes[0], a, "account");
        place(&nodes[0], a, i as u64 + 1, "balance");
        must_ok(request(&nodes[0], a, "deposit 1000"));
    }
    let mut ok = 0;
    let mut transfer = |nodes: &[Node], i: usize| {
        let from = accounts[i % 3];
        let to = accounts[(i + 1 + i / 3 % 2) % 3];
        if let Ok(r) = request(&nodes[0], from, &format!("transfer 7 {to}")) {
            if r == "ok" {
                ok += 1;
            }
        }
    };
    for round in 0..2 {
        for i in 0..30 {
            transfer(&nodes, i);
        }
        let victim = 2 + round; // nodes 2 then 3 (node 1 carries the client)
        nodes[victim - 1].kill();
        for i in 0..40 {
            transfer(&nodes, i);
        }
        nodes[victim - 1].restart();
        for i in 0..30 {
            transfer(&nodes, i);
        }
    }
    assert!(ok > 0, "no transfer went through");
    // Deposits in flight land eventually; the total is never above the start.
    let total = wait_for("all deposits to land", || {
        let balances: Option<Vec<u64>> = accounts
            .iter()
            .map(|a| request(&nodes[0], a, "balance").ok()?.trim().parse().ok())
            .collect();
        let total: u64 = balances?.iter().sum();
        assert!(total <= 3000, "money was created: total {total}");
        (total == 3000).then_some(total)
    });
    assert_eq!(total, 3000);
    eprintln!("{ok} transfers went through");
}

fn must_ok(r: Result<String, String>) -> String {
    r.unwrap_or_else(|e| panic!("request failed: {e}"))
}

#[test]
fn a_paused_old_owner_cannot_commit_after_its_component_moved() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path(), &[]);
    install(&nodes[0], "counter", "counter");
    place(&nodes[0], "counter", 2, "get");
    let mut tally = Tally::new("p");
    for _ in 0..10 {
        tally.inc(&nodes[0]);
    }
    assert_eq!(tally.acked.len(), 10);
    // Node 2 freezes with the counter running. A request sent straight to it waits in its
    // socket and is handled when it thaws, by an actor that still believes it owns the
    // counter unless the move reaches it first.
    nodes[1].pause();
    let stale_endpoint = nodes[1].endpoint.clone();
    let stale = std::thread::spawn(move || request_at(&stale_endpoint, "counter", "inc stale"));
    wait_for("the counter to move off the frozen node", || {
        owner_now(&nodes[0], "counter").filter(|o| *o != 2)
    });
    for _ in 0..10 {
        tally.inc(&nodes[0]);
    }
    nodes[1].resume();
    // The component moved while its old owner was frozen: whatever the old actor does when
    // it thaws (run the request and have its commit refused, or learn of the move first),
    // it cannot acknowledge an increment, and it never applies one.
    let e = match stale.join().unwrap() {
        Ok(v) => panic!("the frozen old owner acknowledged an increment after the move: {v}"),
        Err(e) => e,
    };
    let fenced = nodes[1].log_text().contains("fenced");
    eprintln!("the frozen node's request: {e}; its commit refused by the fence: {fenced}");
    let final_count = count(&nodes[0]);
    let applied = applied(&nodes[0]);
    assert_eq!(
        applied.get("stale"),
        None,
        "the frozen old owner's increment applied"
    );
    tally.check(final_count, &applied);
    assert!(
        final_count >= 20,
        "the new owner's ten increments all count: {final_count}"
    );
    assert_eq!(count(&nodes[1]), final_count);
}

#[test]
fn a_wiped_node_rejoins_and_catches_up_from_a_snapshot() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path(), &[("AIRSSYS_SNAPSHOT_EVERY", "40")]);
    install(&nodes[0], "counter", "counter");
    place(&nodes[0], "counter", 2, "get");
    let mut tally = Tally::new("w");
    for _ in 0..150 {
        tally.inc(&nodes[0]);
    }
    assert!(tally.unsure.is_empty());
    nodes[2].wipe_and_restart();
    wait_for("the wiped node to catch up", || {
        nodes[2]
            .cli(&["node", "ready"])
            .status
            .success()
            .then_some(())
    });
    wait_for("a snapshot installed on the wiped node", || {
        nodes[2]
            .log_text()
            .contains("snapshot installed")
            .then_some(())
    });
    // Its copy of the counter's store is complete: moved there, the counter goes on.
    place(&nodes[0], "counter", 3, "get");
    tally.inc(&nodes[0]);
    assert_eq!(tally.acked.last().map(|(_, v)| *v), Some(151));
    assert_eq!(count(&nodes[2]), 151);
    tally.check(151, &applied(&nodes[2]));
}

fn owners(via: &Node) -> Option<Vec<u64>> {
    let s = via.status()?;
    Some(
        s["components"]
            .as_array()?
            .iter()
            .filter_map(|c| c["owner"].as_u64())
            .collect(),
    )
}

#[test]
fn a_joining_node_gets_a_share_and_scaling_down_and_up_again_works() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let tls = make_certs(dir.path(), "ca", &[1, 2, 3, 4]);
    let n1 = Node::start(dir.path(), 1, &tls[0], None);
    let seed = n1.peer.clone();
    let n2 = Node::start(dir.path(), 2, &tls[1], Some(&seed));
    let n3 = Node::start(dir.path(), 3, &tls[2], Some(&seed));
    wait_for("three live voters", || {
        (common::procs::alive_voters(&n1) == Some(vec![1, 2, 3])).then_some(())
    });
    let names: Vec<String> = (0..6).map(|i| format!("k{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        install(&n1, name, "counter");
        for _ in 0..=i {
            request(&n1, name, "inc").unwrap();
        }
    }
    let counts_intact = |via: &Node| {
        for (i, name) in names.iter().enumerate() {
            let got = wait_for("the counter to answer", || request(via, name, "get").ok());
            assert_eq!(got.trim(), (i + 1).to_string(), "{name} lost its count");
        }
    };

    // Scale up: node 4 joins and receives its share (loads end within one of each other).
    let mut n4 = Node::start(dir.path(), 4, &tls[3], Some(&seed));
    let spread = wait_for("node 4 to receive a share", || {
        let owned = owners(&n1)?;
        let per: Vec<usize> = (1..=4)
            .map(|n| owned.iter().filter(|o| **o == n).count())
            .collect();
        let (min, max) = (per.iter().min()?, per.iter().max()?);
        (per[3] >= 1 && max - min <= 1).then_some(per)
    });
    eprintln!("components per node after node 4 joined: {spread:?}");
    counts_intact(&n4);

    // Scale down: node 4 is removed (its components move first), then stopped.
    n1.ok(&["cluster", "remove-node", "4"]);
    n4.kill();
    let owned = owners(&n1).unwrap();
    assert!(owned.iter().all(|o| *o != 4), "{owned:?}");
    counts_intact(&n1);

    // Up again: a fresh node 4 (its volume deleted with the scale-down) joins and gets a
    // share again.
    n4.wipe_and_restart();
    wait_for("node 4 to receive a share again", || {
        owners(&n1)?.contains(&4).then_some(())
    });
    counts_intact(&n2);
    drop(n3);
}
