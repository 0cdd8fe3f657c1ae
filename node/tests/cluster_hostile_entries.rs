//! Raft entries and peer messages are input. A peer of the cluster (it holds a certificate
//! from the cluster's CA, so the transport lets it in) proposes commands no admin call would
//! make: a name that is no store name, a digest that is a path, a binary that is not what
//! its spec claims, limits out of range. Each is refused (or, for limits, the component is
//! reported failed), and so is a commit that writes another component's records, through
//! the real peer path, and the node keeps serving: it installs and
//! answers afterwards, and again after a restart replays the log with those entries in it.
#![allow(clippy::unwrap_used)]

mod common;

use airssys_cluster::peer::{PeerError, PeerRequest, PeerResponse};
use airssys_cluster::transport::Transport;
use airssys_cluster::{Command, NodeInfo, Outcome, Refusal};
use airssys_node::api::{AdminBackend, ComponentState, ErrorKind};
use airssys_storage::{CommitBatch, Fence};
use common::peers::{peer_as, send, spec, GOOD_LIMITS};
use common::*;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::Vote;
use std::path::Path;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(15);

/// A peer with a certificate from the node's own CA (found in its data directory), naming
/// node `id`.
fn intruder(dir: &Path, id: u64) -> Transport {
    peer_as(&dir.join("tls"), id)
}

fn assert_invalid(response: PeerResponse, what: &str) {
    match response {
        PeerResponse::Done(Outcome::Refused(Refusal::Invalid(why))) => {
            assert!(!why.is_empty(), "{what}")
        }
        other => panic!("{what}: expected an invalid-command refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_malformed_commands_are_refused_and_the_cluster_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path()).await;
    let me = host.cluster().id();
    let to = host.cluster().local_peer_addr().unwrap().to_string();
    let peer = intruder(dir.path(), 99);
    let counter = example("counter");

    // A name that is no store name, proposed straight into the log. Before the state
    // machine checked it, applying it failed on every node and stopped Raft.
    let bad_name = Command::Install {
        spec: spec("../../evil", &counter, GOOD_LIMITS),
        owner: me,
        binary: counter.clone(),
    };
    assert_invalid(
        send(&peer, &to, PeerRequest::Propose(bad_name)).await,
        "an invalid name",
    );

    // A digest that is a path: the binary would be stored under it.
    let mut path_digest = spec("pathy", &counter, GOOD_LIMITS);
    path_digest.sha256 = "../../../../tmp/airssys-owned".into();
    assert_invalid(
        send(
            &peer,
            &to,
            PeerRequest::Install {
                spec: path_digest,
                binary: counter.clone(),
            },
        )
        .await,
        "a digest that is a path",
    );

    // A binary that is not what its spec claims (another binary's digest).
    let mut liar = spec("liar", &example("echo"), GOOD_LIMITS);
    liar.size_bytes = counter.len() as u64;
    assert_invalid(
        send(
            &peer,
            &to,
            PeerRequest::Propose(Command::Install {
                spec: liar,
                owner: me,
                binary: counter.clone(),
            }),
        )
        .await,
        "a binary under another's digest",
    );

    // Limits no install would accept: the entry is well-formed to the log (limits are the
    // node's business), so it applies, and the activation refuses to run it. Before, the
    // deadline overflowed the actor's clock.
    let huge = r#"{"memory_mb":64,"deadline_ms":18446744073709551615,"mailbox":1024,"quota_mb":64,"fuel":null}"#;
    let response = send(
        &peer,
        &to,
        PeerRequest::Propose(Command::Install {
            spec: spec("huge", &counter, huge),
            owner: me,
            binary: counter.clone(),
        }),
    )
    .await;
    assert!(
        matches!(response, PeerResponse::Done(Outcome::Installed { .. })),
        "{response:?}"
    );
    let failed = eventually(LIMIT, || async {
        match host.describe("huge").await {
            Ok(info) if info.state != ComponentState::Starting => Some(info),
            _ => None,
        }
    })
    .await;
    assert!(
        matches!(
            &failed.state,
            ComponentState::Failed { error: Some(ErrorKind::InvalidComponent), reason }
                if reason.contains("deadline_ms")
        ),
        "{:?}",
        failed.state
    );

    // Still serving: an install through the front door, and its answers.
    install(&host, "counter", "counter").await;
    assert_eq!(ask(&host, "counter", "inc").await.unwrap(), "1");
    let names: Vec<String> = host
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.contains("evil") || n == "pathy" || n == "liar"),
        "{names:?}"
    );

    // A commit fenced on `counter` (its real owner and generation) that writes records of
    // another component: a mark that would make `echo` drop messages as repeats, and a
    // message forged as sent by `echo`. Sent with a second valid certificate for the
    // owner's node id (a peer with another id is refused before, see below); refused
    // whole, nothing of it is written.
    install(&host, "echo", "echo").await;
    let (owner, generation) = host.cluster().view().owner_of("counter").unwrap();
    let owner_twin = intruder(dir.path(), owner);
    for (key, value) in [
        (b"dd/echo/ping".to_vec(), Some(vec![0; 16])),
        (
            [&b"ob/counter/echo/"[..], &1u64.to_be_bytes()].concat(),
            Some(b"x".to_vec()),
        ),
    ] {
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
            sys: vec![(key.clone(), value)],
        };
        match send(&owner_twin, &to, PeerRequest::Commits(vec![forged])).await {
            PeerResponse::Committed {
                outcome: Outcome::Many(outcomes),
                ..
            } => assert!(
                matches!(&outcomes[..], [Outcome::Refused(Refusal::MalformedCommit(m))] if m.contains("may not write")),
                "{outcomes:?}"
            ),
            other => panic!("a forged commit: {other:?}"),
        }
        assert_eq!(host.host().storage().sys_get(&key).unwrap(), None);
    }
    assert_eq!(ask(&host, "counter", "inc").await.unwrap(), "2");
    drop(owner_twin);

    host.shutdown().await;
    // Dropped, not only shadowed: a live handle keeps the database open.
    drop(host);
    drop(peer);

    // A restart replays every entry above; none stops it.
    let host = open(dir.path()).await;
    let count = eventually(LIMIT, || async { ask(&host, "counter", "get").await.ok() }).await;
    assert_eq!(count, "2");
    assert_eq!(ask(&host, "counter", "inc").await.unwrap(), "3");
    host.shutdown().await;
}

/// A peer speaks only for the node its certificate names: node 99 claiming the node's own
/// id in a vote, an append, a join (which would have the node evicted as "wiped") or a
/// commit's fence is refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_speak_for_another_node() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path()).await;
    install(&host, "counter", "counter").await;
    assert_eq!(ask(&host, "counter", "inc").await.unwrap(), "1");
    let me = host.cluster().id();
    let to = host.cluster().local_peer_addr().unwrap().to_string();
    let impostor = intruder(dir.path(), 99);
    let (_, generation) = host.cluster().view().owner_of("counter").unwrap();
    let term_before = host.cluster().figures().term;

    let vote = Vote::new(term_before + 5, me);
    let requests = [
        PeerRequest::Vote(VoteRequest {
            vote,
            last_log_id: None,
        }),
        PeerRequest::Append(AppendEntriesRequest {
            vote: Vote::new_committed(term_before + 5, me),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        }),
        PeerRequest::Join {
            node_id: me,
            info: NodeInfo {
                peer_addr: to.clone(),
                admin_addr: "127.0.0.1:1".into(),
            },
        },
        PeerRequest::Commits(vec![CommitBatch {
            fence: Some(Fence {
                component: "counter".into(),
                node_id: me,
                generation,
                commit: 0,
                sequence: 0,
                peers: Vec::new(),
            }),
            components: Vec::new(),
            sys: vec![(b"seq/counter".to_vec(), Some(vec![0; 8]))],
        }]),
    ];
    for request in requests {
        let kind = request.kind();
        match send(&impostor, &to, request).await {
            PeerResponse::Error(PeerError::NotThisPeer {
                claimed, certified, ..
            }) => {
                assert_eq!((claimed, certified), (me, Some(99)), "{kind}");
            }
            other => panic!("{kind} claiming node {me} from node 99: {other:?}"),
        }
    }
    // Nothing moved: the same term, the node still a member, the counter where it was.
    assert_eq!(host.cluster().figures().term, term_before);
    assert!(host.cluster().is_ready());
    assert_eq!(ask(&host, "counter", "inc").await.unwrap(), "2");
    host.shutdown().await;
}
