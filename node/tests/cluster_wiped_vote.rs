//! A node whose data directory was wiped must not vote in a term it may have voted in
//! before: until the cluster has admitted it again (taken the stateless member out and
//! added it afresh, so that it holds the leader's term), it refuses every vote. Three node
//! processes; a peer with a certificate from the cluster's CA plays the candidate.
#![allow(clippy::unwrap_used)]

mod common;

use airssys_cluster::peer::{PeerError, PeerRequest, PeerResponse};
use airssys_cluster::transport::Transport;
use common::peers::peer_as;
use common::procs::{alive_voters, three_nodes, wait_for, Node};
use openraft::raft::VoteRequest;
use openraft::Vote;
use std::time::Duration;

fn vote_request(term: u64) -> PeerRequest {
    // As node 1, the certificate's own node: the claim is true.
    PeerRequest::Vote(VoteRequest {
        vote: Vote::new(term, 1),
        last_log_id: None,
    })
}

fn leader_of(node: &Node) -> Option<u64> {
    node.status()?["leader"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_votes_only_after_the_cluster_admitted_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, _tls) = three_nodes(dir.path());
    let ca_dir = dir.path().join("prod");
    let candidate = peer_as(&ca_dir, 1);

    // Node 3 loses its data while nodes 1 and 2 are down: it cannot be admitted (no leader),
    // and a candidate that still counts it as a voter asks for its vote in a term it may
    // have voted in before the wipe.
    nodes[0].kill();
    nodes[1].kill();
    nodes[2].wipe_and_restart();
    let asked = wait_for("node 3 to answer its peers", || {
        ask(&candidate, &nodes[2], vote_request(1_000))
    });
    match asked {
        PeerResponse::Error(PeerError::NotVotingYet) => {}
        other => panic!("a wiped node that was not admitted again answered a vote: {other:?}"),
    }
    assert!(
        nodes[2].log_text().contains("vote refused"),
        "the refusal is logged"
    );

    // The others come back; the leader re-admits node 3 (out, then in as a learner that
    // catches up, then a voter), and from then on it votes.
    nodes[0].restart();
    nodes[1].restart();
    for n in &nodes {
        wait_for("three live voters again", || {
            alive_voters(n).filter(|v| v == &[1, 2, 3])
        });
    }
    wait_for("node 3 to be admitted and answer votes", || {
        match ask(&candidate, &nodes[2], vote_request(1))? {
            // A stale term: answered, not granted (its term is the leader's now).
            PeerResponse::Vote(v) => {
                assert!(
                    !v.is_granted_to(&Vote::new(1, 1)),
                    "granted a stale vote: {v:?}"
                );
                Some(())
            }
            PeerResponse::Error(PeerError::NotVotingYet) => None,
            other => panic!("unexpected answer to a vote: {other:?}"),
        }
    });
    // Its vote counts: with the leader gone, node 3 and the other survivor elect one.
    let leader = wait_for("a leader", || leader_of(&nodes[2]));
    let victim = nodes.iter().position(|n| n.id == leader).unwrap();
    nodes[victim].kill();
    let survivor = nodes
        .iter()
        .position(|n| n.id != leader && n.id != 3)
        .unwrap();
    let new_leader = wait_for("a new leader elected with node 3's vote", || {
        leader_of(&nodes[2]).filter(|l| *l != leader)
    });
    assert!(new_leader == 3 || new_leader == nodes[survivor].id);
}

/// `request` to `node` as the candidate peer; `None` while the node does not answer (it
/// is still starting).
fn ask(candidate: &Transport, node: &Node, request: PeerRequest) -> Option<PeerResponse> {
    tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(candidate.call::<_, PeerResponse>(
            &node.peer,
            &request,
            Duration::from_secs(5),
        ))
    })
    .ok()
}
