//! A component's life on three `airssys` node processes, through the CLI as an operator runs
//! it: an upgrade under load from a client on another node (no increment lost or doubled
//! across the switch, v1's keys rewritten by the migration), a failing migration that leaves
//! the old code and its state, rollback and forth, an upgrade while the owner is killed,
//! then a backup under load restored into a new node that answers with the state as of the
//! backup's index, a damaged backup refused with nothing left behind, and one component
//! exported from the old cluster and imported into the new one.
#![allow(clippy::unwrap_used)]

mod common;

use common::procs::*;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap()
}

fn describe(node: &Node, name: &str) -> serde_json::Value {
    json(&node.ok(&["component", "describe", name, "--json"]))
}

fn sha256_of(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// A client incrementing `name` through `endpoint` with ids `prefix0`, `prefix1`, … in
/// order until stopped (after at least `min` increments); answers each id's outcome.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    handle: JoinHandle<Vec<(String, Result<String, String>)>>,
}

impl Load {
    fn start(endpoint: &str, name: &str, prefix: &str, min: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let (endpoint, name, prefix) = (endpoint.to_string(), name.to_string(), prefix.to_string());
        let handle = {
            let (stop, acked) = (stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut outcomes = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) || i < min {
                    let id = format!("{prefix}{i}");
                    let r =
                        admin_request(&endpoint, &name, &format!("inc {id}"), "durable", 30_000);
                    outcomes.push((id, r));
                    i += 1;
                    acked.store(i, Ordering::Relaxed);
                }
                outcomes
            })
        };
        Load {
            stop,
            acked,
            handle,
        }
    }

    fn wait_acked(&self, n: u64) {
        wait_for("the load to get going", || {
            (self.acked.load(Ordering::Relaxed) >= n).then_some(())
        });
    }

    fn finish(self) -> Vec<(String, Result<String, String>)> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

#[test]
fn upgrade_rollback_and_backup_through_the_cli_on_three_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, tls) = three_nodes(dir.path());
    let examples = common::examples_dir();
    let wasm = |name: &str| examples.join(format!("{name}.wasm"));
    let path = |name: &str| wasm(name).to_str().unwrap().to_string();

    // ---- Upgrade under load: built against 0.1.0, upgraded to 0.1.1 with a migration.
    nodes[0].ok(&["component", "install", "c", &path("counter_v1")]);
    let owner = owner_of(&nodes[0], "c");
    // The client goes through a node that does not own it; the upgrade through a third.
    let client_node = nodes.iter().position(|n| n.id != owner).unwrap();
    let upgrade_node = nodes
        .iter()
        .position(|n| n.id != owner && n.id != nodes[client_node].id)
        .unwrap();
    let load = Load::start(&nodes[client_node].endpoint, "c", "r", 30);
    load.wait_acked(10);
    let upgraded = nodes[upgrade_node].ok(&["component", "upgrade", "c", &path("counter")]);
    assert!(upgraded.contains("upgraded"), "{upgraded}");
    let outcomes = load.finish();
    let failed: Vec<_> = outcomes.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "increments failed across the upgrade: {failed:?}"
    );
    // The replies count 1, 2, … N: none applied twice, none skipped.
    let replies: Vec<u64> = outcomes
        .iter()
        .map(|(_, r)| r.as_ref().unwrap().trim().parse().unwrap())
        .collect();
    let expected: Vec<u64> = (1..=outcomes.len() as u64).collect();
    assert_eq!(replies, expected);
    let total = outcomes.len();
    assert_eq!(
        nodes[0].ok(&["request", "c", "get"]).trim(),
        total.to_string()
    );
    for (id, _) in &outcomes {
        assert_eq!(
            nodes[1]
                .ok(&["request", "c", &format!("times {id}")])
                .trim(),
            "1",
            "{id}"
        );
    }
    // The new code runs (only it knows `tally`), with v1's keys rewritten.
    assert!(nodes[2].ok(&["request", "c", "tally"]).contains("r0 1"));
    let info = describe(&nodes[client_node], "c");
    assert_eq!(info["sha256"], sha256_of(&wasm("counter")));
    assert_eq!(info["previous"]["sha256"], sha256_of(&wasm("counter_v1")));
    assert!(info["upgraded_at_ms"].as_u64().is_some(), "{info}");
    assert_eq!(info["node_id"].as_u64().unwrap(), owner, "same owner");

    // ---- A failing migration: refused, old code and state untouched.
    nodes[0].ok(&["component", "install", "x", &path("counter")]);
    nodes[0].ok(&["request", "x", "inc"]);
    let refused = nodes[1].cli(&["component", "upgrade", "x", &path("crash")]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("runs its previous code"), "{said}");
    assert_eq!(
        describe(&nodes[2], "x")["sha256"],
        sha256_of(&wasm("counter"))
    );
    assert_eq!(nodes[2].ok(&["request", "x", "inc"]).trim(), "2");
    // The same binary again, an unknown name: each its own refusal.
    let same = nodes[0].cli(&["component", "upgrade", "x", &path("counter")]);
    assert!(String::from_utf8_lossy(&same.stderr).contains("conflict"));
    let unknown = nodes[0].cli(&["component", "upgrade", "nope", &path("counter")]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("not-found"));

    // ---- Rollback and forth.
    nodes[2].ok(&["component", "rollback", "c"]);
    assert_eq!(
        describe(&nodes[0], "c")["sha256"],
        sha256_of(&wasm("counter_v1"))
    );
    nodes[1].ok(&["component", "rollback", "c"]);
    assert_eq!(
        describe(&nodes[0], "c")["sha256"],
        sha256_of(&wasm("counter"))
    );
    assert_eq!(
        nodes[0].ok(&["request", "c", "get"]).trim(),
        total.to_string()
    );

    // ---- An upgrade while the owner is killed: refused or made, never both versions.
    nodes[0].ok(&["component", "install", "k", &path("counter_v1")]);
    for _ in 0..5 {
        nodes[0].ok(&["request", "k", "inc"]);
    }
    let k_owner = owner_of(&nodes[0], "k");
    let killed = nodes.iter().position(|n| n.id == k_owner).unwrap();
    let other = (killed + 1) % 3;
    nodes[killed].kill();
    let first = nodes[other].cli(&["component", "upgrade", "k", &path("counter")]);
    eprintln!(
        "upgrade with k's owner (node {k_owner}) killed: {}{}",
        String::from_utf8_lossy(&first.stdout),
        String::from_utf8_lossy(&first.stderr)
    );
    if !first.status.success() {
        let said = String::from_utf8_lossy(&first.stderr);
        assert!(
            said.contains("unavailable") || said.contains("conflict") || said.contains("timeout"),
            "{said}"
        );
        // Once the component failed over, the upgrade goes through.
        wait_for("k to fail over and take its upgrade", || {
            let out = nodes[other].cli(&["component", "upgrade", "k", &path("counter")]);
            let said = String::from_utf8_lossy(&out.stderr).to_string();
            (out.status.success() || said.contains("already runs")).then_some(())
        });
    }
    nodes[killed].restart();
    wait_for("the killed node back among the voters", || {
        alive_voters(&nodes[other]).filter(|v| v == &[1, 2, 3])
    });
    // The restarted node learns the new code; the count survived the migration.
    wait_for("the restarted node to see k upgraded", || {
        let out = nodes[killed].cli(&["component", "describe", "k", "--json"]);
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (info["sha256"] == sha256_of(&wasm("counter"))).then_some(())
    });
    assert_eq!(nodes[killed].ok(&["request", "k", "get"]).trim(), "5");
    assert_eq!(nodes[killed].ok(&["request", "k", "inc"]).trim(), "6");

    // ---- Backup under load through one node while a client increments through another.
    nodes[0].ok(&["component", "install", "idle", &path("counter")]);
    for _ in 0..4 {
        nodes[1].ok(&["request", "idle", "inc"]);
    }
    nodes[0].ok(&["component", "install", "busy", &path("counter")]);
    let load = Load::start(&nodes[1].endpoint, "busy", "b", 20);
    load.wait_acked(10);
    let acked_before = load.acked.load(Ordering::Relaxed);
    let file = dir.path().join("cluster.airssys");
    let made = nodes[2].ok(&["backup", "create", file.to_str().unwrap()]);
    let sent_by_end = load.acked.load(Ordering::Relaxed) + 1;
    let busy_outcomes = load.finish();
    assert!(busy_outcomes.iter().all(|(_, r)| r.is_ok()));
    assert!(made.contains("checksum verified"), "{made}");
    assert!(!dir.path().join("cluster.airssys.partial").exists());
    let verified = json(&run_ok(&[
        "backup",
        "verify",
        file.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(verified["components"], 5, "{verified}");
    // An existing file is kept unless --force.
    let again = nodes[2].cli(&["backup", "create", file.to_str().unwrap()]);
    assert!(!again.status.success());
    // The running node's data dir is not a restore target.
    let into_running = run(&[
        "backup",
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        dir.path().join("data1").to_str().unwrap(),
    ]);
    assert!(!into_running.status.success());
    assert!(String::from_utf8_lossy(&into_running.stderr).contains("holds a node's data already"));
    let c_count = nodes[0].ok(&["request", "c", "get"]).trim().to_string();
    // One component exported, to copy it into the restored cluster below.
    let export = dir.path().join("c.export");
    let exported = nodes[1].ok(&["component", "export", "c", export.to_str().unwrap()]);
    assert!(exported.contains("checksum verified"), "{exported}");
    for n in &mut nodes {
        n.kill();
    }

    // ---- A damaged copy is refused and leaves nothing.
    let bad = dir.path().join("bad.airssys");
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&bad, &bytes).unwrap();
    let bad_dir = dir.path().join("bad-restore");
    let refused = run(&[
        "backup",
        "restore",
        bad.to_str().unwrap(),
        "--data-dir",
        bad_dir.to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("checksum") || said.contains("corrupt"),
        "{said}"
    );
    assert!(
        !bad_dir.exists(),
        "a failed restore left {}",
        bad_dir.display()
    );

    // ---- Restored into a new node: every component as of the backup's index.
    let restored_root = dir.path().join("restored");
    run_ok(&[
        "backup",
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        restored_root.join("data1").to_str().unwrap(),
        "--node-id",
        "1",
    ]);
    let restored = Node::start(&restored_root, 1, &tls[0], None);
    wait_for("the restored node to lead", || {
        alive_voters(&restored).filter(|v| v == &[1])
    });
    let ask = |name: &str, text: &str| {
        wait_for("the restored component to answer", || {
            admin_request(&restored.endpoint, name, text, "durable", 10_000).ok()
        })
        .trim()
        .to_string()
    };
    assert_eq!(ask("idle", "get"), "4");
    assert_eq!(ask("c", "get"), c_count);
    assert_eq!(ask("k", "get"), "6");
    let n: u64 = ask("busy", "get").parse().unwrap();
    assert!(
        (acked_before..=sent_by_end).contains(&n),
        "{n} not within [{acked_before}, {sent_by_end}]"
    );
    for (i, (id, _)) in busy_outcomes.iter().enumerate() {
        let times = ask("busy", &format!("times {id}"));
        assert_eq!(times, if (i as u64) < n { "1" } else { "0" }, "{id}");
    }
    // A component copied from the old cluster into the new one under another name.
    let imported = restored.ok(&["component", "import", "c-copy", export.to_str().unwrap()]);
    assert!(imported.contains("c-copy"), "{imported}");
    assert_eq!(ask("c-copy", "get"), c_count);
    let again = restored.cli(&["component", "import", "c-copy", export.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("--replace"));
    let list = json(&restored.ok(&["component", "list", "--json"]));
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["node_id"] == 1 && c["state"]["state"] == "running"));

    // The restored node grows into a cluster: a new node joins it and takes a component.
    let joined = Node::start(&restored_root, 2, &tls[1], Some(&restored.peer));
    wait_for("the new node to join the restored one", || {
        alive_voters(&restored).filter(|v| v == &[1, 2])
    });
    restored.ok(&["component", "move", "idle", "--to", "2"]);
    assert_eq!(owner_of(&joined, "idle"), 2);
    let on_joined = wait_for("idle to answer on the new node", || {
        admin_request(&joined.endpoint, "idle", "inc", "durable", 10_000).ok()
    });
    assert_eq!(on_joined.trim(), "5");
}

fn run_ok(args: &[&str]) -> String {
    must(run(args), &format!("airssys {args:?}"))
}
