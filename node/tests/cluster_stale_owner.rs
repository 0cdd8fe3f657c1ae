//! No answers from an old owner: the node that owns a counter is cut off from the other
//! two (its peer port dropped by iptables on loopback; its admin API still reachable), a
//! client keeps asking it directly for the count, the cluster moves the counter and
//! increments it at its new owner. The old owner may answer only until its owner lease
//! runs out, which is before the new owner starts: it never answers with a count the new
//! owner has overwritten.
#![allow(clippy::unwrap_used)]

mod common;

use common::procs::{admin_request, make_certs, owner_of, wait_for, Node};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Drops every UDP packet to or from `port` on loopback while it lives.
struct Cut {
    rules: Vec<Vec<String>>,
}

impl Cut {
    fn peer_port(peer: &str) -> Cut {
        let port = peer.rsplit(':').next().unwrap().to_string();
        let rules: Vec<Vec<String>> = ["--dport", "--sport"]
            .iter()
            .map(|dir| {
                ["INPUT", "-i", "lo", "-p", "udp", dir, &port, "-j", "DROP"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            })
            .collect();
        for rule in &rules {
            let ok = Command::new("iptables")
                .arg("-I")
                .args(rule)
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "this test cuts a node off with iptables (root, on loopback): `iptables -I {}` failed",
                rule.join(" ")
            );
        }
        Cut { rules }
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        for rule in &self.rules {
            let _ = Command::new("iptables").arg("-D").args(rule).status();
        }
    }
}

fn get(node: &Node) -> Result<u64, String> {
    admin_request(&node.endpoint, "counter", "get", "fast", 3_000)
        .map(|r| r.trim().parse().unwrap())
}

fn inc(node: &Node) -> Result<u64, String> {
    admin_request(&node.endpoint, "counter", "inc", "durable", 10_000)
        .map(|r| r.trim().parse().unwrap())
}

#[test]
fn a_cut_off_owner_never_answers_with_what_the_new_owner_overwrote() {
    let dir = tempfile::tempdir().unwrap();
    let tls = make_certs(dir.path(), "ca", &[1, 2, 3]);
    let n1 = Node::start(dir.path(), 1, &tls[0], None);
    let seed = n1.peer.clone();
    let n2 = Node::start(dir.path(), 2, &tls[1], Some(&seed));
    let n3 = Node::start(dir.path(), 3, &tls[2], Some(&seed));
    let nodes = [n1, n2, n3];
    wait_for("three live voters", || {
        (common::procs::alive_voters(&nodes[0]) == Some(vec![1, 2, 3])).then_some(())
    });
    let wasm = common::examples_dir().join("counter.wasm");
    nodes[0].ok(&["component", "install", "counter", wasm.to_str().unwrap()]);
    // The old owner: a node that does not lead (node 1 bootstrapped and leads).
    let leader = nodes[0].status().unwrap()["leader"].as_u64().unwrap();
    let victim = nodes.iter().find(|n| n.id != leader).unwrap();
    let via = nodes.iter().find(|n| n.id != victim.id).unwrap();
    if owner_of(via, "counter") != victim.id {
        via.ok(&[
            "component",
            "move",
            "counter",
            "--to",
            &victim.id.to_string(),
        ]);
    }
    wait_for("the counter on the victim", || {
        (owner_of(via, "counter") == victim.id && get(victim).is_ok()).then_some(())
    });
    for _ in 0..5 {
        inc(via).unwrap();
    }
    let before = get(victim).unwrap();
    assert_eq!(before, 5);

    // Cut it off; ask it directly, without pause, for as long as the test runs.
    let cut = Cut::peer_port(&victim.peer);
    let cut_at = Instant::now();
    let stop = AtomicBool::new(false);
    let answers: Mutex<Vec<(Instant, Instant, u64)>> = Mutex::new(Vec::new());
    let overwritten_at = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                let sent = Instant::now();
                if let Ok(n) = get(victim) {
                    answers.lock().unwrap().push((sent, Instant::now(), n));
                }
            }
        });
        // The cluster moves the counter away and the new owner increments it.
        wait_for("the counter to move away from the cut-off node", || {
            (owner_of(via, "counter") != victim.id).then_some(())
        });
        let after = wait_for("an increment at the new owner", || inc(via).ok());
        assert_eq!(after, before + 1);
        let overwritten_at = Instant::now();
        // Keep asking the old owner a while longer.
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::SeqCst);
        overwritten_at
    });
    drop(cut);
    let answers = answers.into_inner().unwrap();
    let last_answer = answers.iter().map(|(_, at, _)| *at).max();
    eprintln!(
        "the cut-off node answered {} reads, the last {:?} after the cut",
        answers.len(),
        last_answer.map(|at| at - cut_at)
    );
    // Every read it answered was answered before the new owner overwrote the count...
    for (sent, at, n) in &answers {
        assert!(
            *at < overwritten_at,
            "the old owner answered {n} to a read sent {:?} after the cut, {:?} after the new owner's increment was acknowledged",
            *sent - cut_at,
            *at - overwritten_at
        );
        assert_eq!(*n, before);
    }
    // ...and once healed, it learns of the move and sends reads to the new owner.
    wait_for("the old owner to answer with the new count", || {
        (get(victim).ok()? == before + 1).then_some(())
    });
}
