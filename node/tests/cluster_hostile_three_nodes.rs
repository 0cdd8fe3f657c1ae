//! Raft entries and peer messages are input, across three node processes: a peer holding a
//! certificate from the cluster's CA sends every node each crafted entry (a name that is no
//! store name, a digest that is a path, a binary under another binary's digest, limits no
//! install accepts, a commit that writes another component's records) and each claim to be
//! another node (a vote, a join). Every node refuses them the same way, and all three keep
//! serving, also after a restart that replays the log with those entries in it.
#![allow(clippy::unwrap_used)]

mod common;

use airssys_cluster::peer::{PeerError, PeerRequest, PeerResponse};
use airssys_cluster::{Command, NodeInfo, Outcome, Refusal};
use airssys_storage::{CommitBatch, Fence};
use common::peers::{peer_as, send, spec, GOOD_LIMITS};
use common::procs::{alive_voters, make_certs, owner_of, wait_for, Node};
use openraft::raft::VoteRequest;
use openraft::Vote;

fn inc(node: &Node) -> u64 {
    let reply = common::procs::admin_request(&node.endpoint, "counter", "inc", "durable", 10_000)
        .unwrap_or_else(|e| panic!("node {} must still serve: {e}", node.id));
    reply.trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_refuses_crafted_entries_and_false_identities_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let tls = make_certs(dir.path(), "ca", &[1, 2, 3]);
    let ca_dir = dir.path().join("ca");
    let n1 = Node::start(dir.path(), 1, &tls[0], None);
    let seed = n1.peer.clone();
    let n2 = Node::start(dir.path(), 2, &tls[1], Some(&seed));
    let n3 = Node::start(dir.path(), 3, &tls[2], Some(&seed));
    let mut nodes = vec![n1, n2, n3];
    wait_for("three live voters", || {
        (alive_voters(&nodes[0]) == Some(vec![1, 2, 3])).then_some(())
    });
    let counter_wasm = common::examples_dir().join("counter.wasm");
    nodes[0].ok(&[
        "component",
        "install",
        "counter",
        counter_wasm.to_str().unwrap(),
    ]);
    let mut count = 0;
    for node in &nodes {
        count += 1;
        assert_eq!(inc(node), count);
    }

    let intruder = peer_as(&ca_dir, 99);
    let counter = common::example("counter");
    let echo = common::example("echo");
    for (i, node) in nodes.iter().enumerate() {
        let bad_name = PeerRequest::Propose(Command::Install {
            spec: spec("../../evil", &counter, GOOD_LIMITS),
            owner: 1,
            binary: counter.clone(),
        });
        let mut path_digest = spec(&format!("pathy{i}"), &counter, GOOD_LIMITS);
        path_digest.sha256 = "../../../../tmp/airssys-owned".into();
        let path_digest = PeerRequest::Install {
            spec: path_digest,
            binary: counter.clone(),
        };
        let mut liar = spec(&format!("liar{i}"), &echo, GOOD_LIMITS);
        liar.size_bytes = counter.len() as u64;
        let liar = PeerRequest::Propose(Command::Install {
            spec: liar,
            owner: 1,
            binary: counter.clone(),
        });
        for (what, request) in [
            ("an invalid name", bad_name),
            ("a digest that is a path", path_digest),
            ("a binary under another's digest", liar),
        ] {
            match send(&intruder, &node.peer, request).await {
                PeerResponse::Done(Outcome::Refused(Refusal::Invalid(_))) => {}
                other => panic!("{what} sent to node {}: {other:?}", node.id),
            }
        }
        // Speaking for another node: a vote as node 1, a join as node 2 (which would have
        // had node 2 evicted as "wiped").
        let claims = [
            PeerRequest::Vote(VoteRequest {
                vote: Vote::new(1_000, 1),
                last_log_id: None,
            }),
            PeerRequest::Join {
                node_id: 2,
                info: NodeInfo {
                    peer_addr: "127.0.0.1:1".into(),
                    admin_addr: "127.0.0.1:1".into(),
                },
            },
        ];
        for request in claims {
            let kind = request.kind();
            match send(&intruder, &node.peer, request).await {
                PeerResponse::Error(PeerError::NotThisPeer {
                    certified: Some(99),
                    ..
                }) => {}
                other => panic!(
                    "a {kind} claiming another node, to node {}: {other:?}",
                    node.id
                ),
            }
        }
    }

    // Limits no install would accept are the node layer's business: the entry applies and
    // the owner reports the component failed instead of running it.
    let huge = r#"{"memory_mb":64,"deadline_ms":18446744073709551615,"mailbox":1024,"quota_mb":64,"fuel":null}"#;
    match send(
        &intruder,
        &nodes[1].peer,
        PeerRequest::Propose(Command::Install {
            spec: spec("huge", &counter, huge),
            owner: 2,
            binary: counter.clone(),
        }),
    )
    .await
    {
        PeerResponse::Done(Outcome::Installed { .. }) => {}
        other => panic!("limits out of range: {other:?}"),
    }
    let failed = wait_for("huge reported failed", || {
        let out = nodes[2].cli(&["component", "describe", "huge", "--json"]);
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (info["state"]["state"] == "failed").then_some(info)
    });
    assert!(failed.to_string().contains("deadline_ms"), "{failed}");

    // A commit fenced on the counter (its owner's id, from a second valid certificate for
    // that id, and its generation) writing the echo's de-dup mark: refused by the leader.
    let owner = owner_of(&nodes[0], "counter");
    let described: serde_json::Value =
        serde_json::from_str(&nodes[0].ok(&["component", "describe", "counter", "--json"]))
            .unwrap();
    let generation = described["generation"].as_u64().unwrap();
    let leader = nodes[0].status().unwrap()["leader"].as_u64().unwrap();
    let leader_peer = nodes.iter().find(|n| n.id == leader).unwrap().peer.clone();
    let twin = peer_as(&ca_dir, owner);
    let forged = CommitBatch {
        fence: Some(Fence {
            component: "counter".into(),
            node_id: owner,
            generation,
            commit: 0,
            sequence: 0,
            peers: Vec::new(),
        }),
        components: Vec::new(),
        sys: vec![(b"dd/echo/ping".to_vec(), Some(vec![0; 16]))],
    };
    match send(&twin, &leader_peer, PeerRequest::Commits(vec![forged])).await {
        PeerResponse::Committed {
            outcome: Outcome::Many(outcomes),
            ..
        } => assert!(
            matches!(
                &outcomes[..],
                [Outcome::Refused(Refusal::MalformedCommit(_))]
            ),
            "{outcomes:?}"
        ),
        other => panic!("a forged commit: {other:?}"),
    }

    // All three still serve, with the same voters; none took the bad installs.
    assert_eq!(alive_voters(&nodes[0]), Some(vec![1, 2, 3]));
    for node in &nodes {
        count += 1;
        assert_eq!(inc(node), count);
        let listed = node.ok(&["component", "list", "--json"]);
        assert!(
            !listed.contains("evil") && !listed.contains("pathy") && !listed.contains("liar"),
            "node {}: {listed}",
            node.id
        );
    }

    // A restart replays every entry above; none stops it.
    drop(intruder);
    drop(twin);
    nodes[2].restart();
    let after = wait_for("node 3 serving after its restart", || {
        common::procs::admin_request(&nodes[2].endpoint, "counter", "inc", "durable", 10_000).ok()
    });
    count += 1;
    assert_eq!(after.trim().parse::<u64>().unwrap(), count);
}
