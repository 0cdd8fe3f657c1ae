//! Who a peer is, and whether what it sends claims to be someone else.
//!
//! Every node certificate from the cluster's CA names its node as the DNS name
//! `node-N.airssys` ([`crate::tls::node_dns_name`]). The transport reads that name from the
//! certificate a connection was verified with ([`node_id_of_cert`]), and the node checks the
//! node ids a request carries against it ([`check_claim`]) before it acts: a Raft vote,
//! append or snapshot must come from the node whose vote it carries, a join from the node
//! that asks to join (or a member relaying it), a commit from the node its fence names. A
//! node holding a valid certificate can therefore not speak for another node.
//!
//! Pure: no IO here; the transport hands the certificate in, the node the membership.

use crate::peer::{PeerError, PeerRequest};
use crate::placement::NodeId;
use crate::tls::NODE_NAME_SUFFIX;

/// The node a certificate names: the `N` of its one `node-N.airssys` DNS name. `None` when
/// it names no node, or more than one (such a certificate speaks for no node).
pub fn node_id_of_cert(der: &[u8]) -> Option<NodeId> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut ids = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => node_id_of_dns_name(dns),
            _ => None,
        });
    let first = ids.next()?;
    ids.all(|other| other == first).then_some(first)
}

/// `node-N.airssys` → `N` (digits only, no leading zero but for `0` itself).
pub fn node_id_of_dns_name(name: &str) -> Option<NodeId> {
    let digits = name.strip_prefix("node-")?.strip_suffix(NODE_NAME_SUFFIX)?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if !canonical {
        return None;
    }
    digits.parse().ok()
}

/// The node ids a request speaks for, each of which must be the caller's.
fn claims(request: &PeerRequest) -> Vec<NodeId> {
    match request {
        PeerRequest::Append(rpc) => vec![rpc.vote.leader_id().voted_for().unwrap_or(u64::MAX)],
        PeerRequest::Vote(rpc) => vec![rpc.vote.leader_id().voted_for().unwrap_or(u64::MAX)],
        PeerRequest::Snapshot { vote, .. } => {
            vec![vote.leader_id().voted_for().unwrap_or(u64::MAX)]
        }
        PeerRequest::Commits(batches) => batches
            .iter()
            .filter_map(|b| b.fence.as_ref().map(|f| f.node_id))
            .collect(),
        PeerRequest::Join { node_id, .. } => vec![*node_id],
        _ => Vec::new(),
    }
}

/// Whether a peer certified as `caller` (`None`: its certificate names no node) may send
/// `request`. A join may also be relayed by a member (`is_member`): the member checked the
/// joiner's certificate on its own hop. Everything else that names a node must come from
/// that node itself.
pub fn check_claim(
    caller: Option<NodeId>,
    request: &PeerRequest,
    is_member: impl Fn(NodeId) -> bool,
) -> Result<(), PeerError> {
    let relayed_join =
        matches!(request, PeerRequest::Join { .. }) && caller.is_some_and(&is_member);
    match claims(request)
        .into_iter()
        .find(|claimed| Some(*claimed) != caller)
    {
        Some(_) if relayed_join => Ok(()),
        Some(claimed) => Err(PeerError::NotThisPeer {
            request: request.kind().to_string(),
            claimed,
            certified: caller,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::raft::types::NodeInfo;
    use crate::tls::ClusterCa;
    use airssys_storage::{CommitBatch, Fence};
    use openraft::raft::VoteRequest;
    use openraft::Vote;
    #[test]
    fn a_node_certificate_names_its_node() {
        let ca = ClusterCa::generate("t").unwrap();
        let cert = ca.issue_node_cert(7, &["10.0.0.7".into()]).unwrap();
        assert_eq!(cert.named_node(), Some(7));
        assert_eq!(node_id_of_cert(b"not a certificate"), None);
    }

    #[test]
    fn only_the_canonical_node_name_counts() {
        assert_eq!(node_id_of_dns_name("node-12.airssys"), Some(12));
        assert_eq!(node_id_of_dns_name("node-0.airssys"), Some(0));
        for name in [
            "node-.airssys",
            "node-012.airssys",
            "node-1x.airssys",
            "node-1.airssys.evil",
            "xnode-1.airssys",
            "node-99999999999999999999999.airssys",
        ] {
            assert_eq!(node_id_of_dns_name(name), None, "{name}");
        }
    }

    fn vote_of(node: NodeId) -> PeerRequest {
        PeerRequest::Vote(VoteRequest {
            vote: Vote::new(3, node),
            last_log_id: None,
        })
    }

    fn commit_of(node: NodeId) -> CommitBatch {
        CommitBatch {
            fence: Some(Fence {
                component: "a".into(),
                node_id: node,
                generation: 1,
                commit: 1,
                sequence: 0,
                peers: Vec::new(),
            }),
            ..CommitBatch::default()
        }
    }

    #[test]
    fn a_peer_speaks_only_for_itself() {
        let nobody = |_: NodeId| false;
        assert_eq!(check_claim(Some(2), &vote_of(2), nobody), Ok(()));
        assert!(matches!(
            check_claim(Some(5), &vote_of(2), nobody),
            Err(PeerError::NotThisPeer {
                claimed: 2,
                certified: Some(5),
                ..
            })
        ));
        assert!(check_claim(None, &vote_of(2), nobody).is_err());
        let commits = PeerRequest::Commits(vec![commit_of(5), commit_of(2)]);
        assert!(check_claim(Some(5), &commits, nobody).is_err());
        let commits = PeerRequest::Commits(vec![commit_of(5), CommitBatch::default()]);
        assert_eq!(check_claim(Some(5), &commits, nobody), Ok(()));
        // Requests that name no node are anyone's.
        assert_eq!(check_claim(None, &PeerRequest::Status, nobody), Ok(()));
    }

    #[test]
    fn a_join_comes_from_the_joiner_or_is_relayed_by_a_member() {
        let join = PeerRequest::Join {
            node_id: 4,
            info: NodeInfo {
                peer_addr: "a".into(),
                admin_addr: "b".into(),
            },
        };
        let members = |n: NodeId| n == 1;
        assert_eq!(check_claim(Some(4), &join, members), Ok(()));
        assert_eq!(check_claim(Some(1), &join, members), Ok(()));
        assert!(check_claim(Some(6), &join, members).is_err());
        assert!(check_claim(None, &join, members).is_err());
    }
}
