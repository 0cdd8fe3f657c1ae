//! Three `airssys` node processes over loopback QUIC with mutual TLS, driven through
//! the CLI and the admin API as an operator would: formation and join, install on one
//! node placed on another, requests through a third, component-to-component messages
//! across nodes, move, a refused foreign certificate, garbage on the QUIC port, 401
//! without the token, and a leader stop with a new election.
#![allow(clippy::unwrap_used)]

mod common;

use common::procs::*;
use std::process::Command;

#[test]
fn three_nodes_form_route_and_survive_a_leader_stop() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, _certs) = three_nodes(dir.path());

    // Placement: the least-loaded node, ties to the lowest id.
    let examples = common::examples_dir();
    let wasm = |name: &str| examples.join(format!("{name}.wasm"));
    nodes[0].ok(&[
        "component",
        "install",
        "echo",
        wasm("echo").to_str().unwrap(),
    ]);
    assert_eq!(owner_of(&nodes[0], "echo"), 1);
    // Installed at node 3, placed on node 2, requested through node 1.
    nodes[2].ok(&[
        "component",
        "install",
        "counter",
        wasm("counter").to_str().unwrap(),
    ]);
    assert_eq!(owner_of(&nodes[0], "counter"), 2);
    assert_eq!(nodes[0].ok(&["request", "counter", "inc"]).trim(), "1");
    assert_eq!(nodes[2].ok(&["request", "counter", "get"]).trim(), "1");
    nodes[0].ok(&["send", "counter", "inc"]);
    wait_for("the durable send through node 1 to count", || {
        (nodes[1].ok(&["request", "counter", "get"]).trim() == "2").then_some(())
    });

    // Every node has the registry; `list` from any node shows the owners.
    for n in &nodes {
        let list: serde_json::Value =
            serde_json::from_str(&n.ok(&["component", "list", "--json"])).unwrap();
        let owners: Vec<(String, u64)> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["node_id"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(owners, vec![("counter".into(), 2), ("echo".into(), 1)]);
    }

    // A component on node 3 requests the counter on node 2, both delivery classes.
    nodes[0].ok(&[
        "component",
        "install",
        "ping",
        wasm("ping").to_str().unwrap(),
    ]);
    assert_eq!(owner_of(&nodes[0], "ping"), 3);
    for cmd in ["ping counter 5000", "ping-fast counter 5000"] {
        let sent = nodes[0].ok(&["request", "ping", cmd]);
        assert!(sent.starts_with("sent "), "{sent}");
        let last = wait_for("ping's callback", || {
            let last = nodes[1].ok(&["request", "ping", "last"]);
            (last.trim() != "none").then_some(last)
        });
        assert_eq!(last.trim(), "2", "{cmd}");
    }
    // Many durable messages across nodes, in order and exactly once.
    nodes[2].ok(&["request", "ping", "blast 200 counter durable inc"]);
    wait_for("200 durable increments from node 3 on node 2", || {
        (nodes[0].ok(&["request", "counter", "get"]).trim() == "202").then_some(())
    });

    // Operator move: the old owner stops the actor, the new one runs it.
    let generation_of_echo = |via: &Node| {
        via.status().unwrap()["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "echo")
            .unwrap()["generation"]
            .as_u64()
            .unwrap()
    };
    let before = generation_of_echo(&nodes[1]);
    let moved = nodes[0].ok(&["component", "move", "echo", "--to", "3"]);
    assert!(moved.contains("node 3"), "{moved}");
    assert_eq!(owner_of(&nodes[1], "echo"), 3);
    assert_eq!(nodes[1].ok(&["request", "echo", "hello"]).trim(), "hello");
    let status = nodes[1].status().unwrap();
    let echo = status["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "echo")
        .unwrap()
        .clone();
    assert_eq!(echo["owner"], 3);
    assert_eq!(
        echo["generation"],
        before + 1,
        "a move is the next generation"
    );
    assert!(status["term"].as_u64().unwrap() >= 1);

    // A receiver that moved keeps its state (replicated) and goes on with the pair's
    // numbering: 10 more durable increments land on top of the 202.
    nodes[0].ok(&["component", "move", "counter", "--to", "1"]);
    nodes[2].ok(&["request", "ping", "blast 10 counter durable inc"]);
    wait_for("10 durable increments on the moved counter", || {
        (nodes[1].ok(&["request", "counter", "get"]).trim() == "212").then_some(())
    });

    // No token: 401 with a clear message, on every node.
    for n in &nodes {
        let out = Command::new(bin())
            .args(["component", "list"])
            .env("AIRSSYS_ENDPOINT", &n.endpoint)
            .env_remove("AIRSSYS_TOKEN")
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(6),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The admin API over HTTP: 401 with a message, health open, metrics with Raft figures.
    let (code, body) = http_get(&nodes[2].endpoint, "/v1/components", None);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("unauthorized"), "{body}");
    let (code, _) = http_get(&nodes[2].endpoint, "/v1/components", Some("wrong-token"));
    assert_eq!(code, 401);
    assert_eq!(http_get(&nodes[2].endpoint, "/healthz", None).0, 200);
    assert_eq!(http_get(&nodes[2].endpoint, "/readyz", Some(TOKEN)).0, 200);
    let (code, metrics) = http_get(&nodes[0].endpoint, "/metrics", Some(TOKEN));
    assert_eq!(code, 200);
    for family in [
        "airssys_raft_term ",
        "airssys_raft_leader ",
        "airssys_raft_commit_index ",
        "airssys_handler_seconds_bucket{le=\"+Inf\"} ",
        "airssys_messages_forwarded_total ",
        "airssys_mailbox_depth{component=\"counter\"} ",
    ] {
        assert!(metrics.contains(family), "missing {family} in:\n{metrics}");
    }

    // Garbage on a node's QUIC port: dropped, the node keeps serving.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..200u32 {
        let junk: Vec<u8> = (0..(i % 1300 + 1)).map(|b| (b * 31 + i) as u8).collect();
        sock.send_to(&junk, &nodes[1].peer).unwrap();
    }
    assert_eq!(nodes[1].ok(&["request", "counter", "get"]).trim(), "212");

    // A node with a certificate from another CA cannot join.
    let foreign = make_certs(dir.path(), "other", &[4]);
    let n4 = Node::start(dir.path(), 4, &foreign[0], Some(&nodes[0].peer));
    wait_for("the foreign node to report its refused join twice", || {
        (n4.log_text().matches("join not done yet").count() >= 2).then_some(())
    });
    let members: Vec<serde_json::Value> =
        serde_json::from_str(&nodes[0].ok(&["cluster", "members", "--json"])).unwrap();
    assert_eq!(members.len(), 3, "{members:?}");
    drop(n4);

    // Stop the leader: the others elect a new one; installs and messages still work.
    let leader = nodes[0].status().unwrap()["leader"].as_u64().unwrap();
    let idx = nodes.iter().position(|n| n.id == leader).unwrap();
    nodes[idx].kill();
    let survivor = nodes.iter().find(|n| n.id != leader).unwrap();
    let new_leader = wait_for("a new leader", || {
        let l = survivor.status()?["leader"].as_u64()?;
        (l != leader).then_some(l)
    });
    assert_ne!(new_leader, leader);
    survivor.ok(&[
        "component",
        "install",
        "echo2",
        wasm("echo").to_str().unwrap(),
    ]);
    let echo2_owner = owner_of(survivor, "echo2");
    assert_ne!(echo2_owner, leader, "placed on a live node");
    assert_eq!(
        survivor.ok(&["request", "echo2", "still here"]).trim(),
        "still here"
    );
    for n in nodes.iter().filter(|n| n.id != leader) {
        assert_eq!(n.ok(&["request", "echo2", "from any"]).trim(), "from any");
    }

    // The operator removes the dead node: its components (if any) move to live nodes
    // first, then it leaves the membership; the rest keeps working.
    let removed = survivor.ok(&["cluster", "remove-node", &leader.to_string()]);
    assert!(
        removed.contains(&format!("removed node {leader}")),
        "{removed}"
    );
    let members: Vec<serde_json::Value> =
        serde_json::from_str(&survivor.ok(&["cluster", "members", "--json"])).unwrap();
    let ids: Vec<u64> = members.iter().map(|m| m["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), 2, "{members:?}");
    assert!(!ids.contains(&leader));
    let status = survivor.status().unwrap();
    for c in status["components"].as_array().unwrap() {
        assert_ne!(c["owner"].as_u64().unwrap(), leader, "{c}");
    }
    // State moves with a component (it is replicated): the count survives whichever node
    // was removed.
    let count: u64 = survivor
        .ok(&["request", "counter", "get"])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(count, 212);
    let unknown = survivor.cli(&["cluster", "remove-node", "99"]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("not a member"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    nodes.clear();
}
