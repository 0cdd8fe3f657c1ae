//! The leader's failure detector, as a pure decision: which members count as down, from how
//! long ago each last answered the leader's Raft calls and how long this node has led.
//!
//! The leader hears from every member at each heartbeat (100 ms by default), so a member
//! silent for longer than the failure timeout is down. A new leader has not called anyone
//! yet: it judges nobody by its own calls before it has led for half the timeout (several
//! heartbeats), so a healthy member is never declared down for silence that predates the
//! leadership. One member it can judge at once: the leader it followed until the election,
//! whose last heartbeat it received at a known moment. A leader's death is what starts the
//! election, so that judgement is what makes failover after a leader's death about as fast
//! as after a follower's.

use crate::placement::NodeId;
use std::collections::BTreeSet;
use std::time::Duration;

/// What the detector knows of one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heard {
    pub node: NodeId,
    /// How long ago it last answered this node; `None`: never.
    pub ago: Option<Duration>,
}

/// The members (other than `me`) to treat as down. `previous_leader`: the leader this node
/// last followed, and how long ago its last Raft call (heartbeat) arrived here.
pub fn down_members(
    me: NodeId,
    members: &[Heard],
    leading_for: Duration,
    timeout: Duration,
    previous_leader: Option<Heard>,
) -> BTreeSet<NodeId> {
    if leading_for < timeout / 2 {
        return previous_leader
            .filter(|p| p.node != me && members.iter().any(|m| m.node == p.node))
            .filter(|p| p.ago.is_some_and(|ago| ago > timeout))
            .map(|p| p.node)
            .into_iter()
            .collect();
    }
    members
        .iter()
        .filter(|h| h.node != me)
        .filter(|h| h.ago.is_none_or(|ago| ago > timeout))
        .map(|h| h.node)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_millis(600);

    fn heard(node: NodeId, ms: Option<u64>) -> Heard {
        Heard {
            node,
            ago: ms.map(Duration::from_millis),
        }
    }

    #[test]
    fn a_member_silent_past_the_timeout_is_down() {
        let members = [heard(1, None), heard(2, Some(100)), heard(3, Some(700))];
        let down = down_members(1, &members, Duration::from_secs(5), T, None);
        assert_eq!(down, BTreeSet::from([3]));
    }

    #[test]
    fn the_leader_never_judges_itself() {
        let down = down_members(1, &[heard(1, None)], Duration::from_secs(5), T, None);
        assert!(down.is_empty());
    }

    #[test]
    fn a_new_leader_waits_half_the_timeout_before_judging() {
        // Nobody answered yet: a fresh leader has not called anyone.
        let members = [heard(1, None), heard(2, None), heard(3, None)];
        assert!(down_members(1, &members, Duration::from_millis(200), T, None).is_empty());
        // Past half the timeout, members that still never answered are down.
        let down = down_members(1, &members, Duration::from_millis(300), T, None);
        assert_eq!(down, BTreeSet::from([2, 3]));
    }

    #[test]
    fn a_member_heard_at_exactly_the_timeout_is_still_up() {
        let down = down_members(1, &[heard(2, Some(600))], Duration::from_secs(1), T, None);
        assert!(down.is_empty());
    }

    #[test]
    fn a_new_leader_judges_the_leader_it_followed_at_once() {
        let members = [heard(1, None), heard(2, None), heard(3, None)];
        let early = Duration::from_millis(50);
        // Its last heartbeat is past the timeout: down, before anyone else may be judged.
        let down = down_members(1, &members, early, T, Some(heard(3, Some(700))));
        assert_eq!(down, BTreeSet::from([3]));
        // Heard recently (it stepped down, it did not die): not down.
        assert!(down_members(1, &members, early, T, Some(heard(3, Some(100)))).is_empty());
        // Not a member any more, or this node itself: nothing to judge.
        assert!(down_members(1, &members[..2], early, T, Some(heard(3, Some(700)))).is_empty());
        assert!(down_members(1, &members, early, T, Some(heard(1, Some(700)))).is_empty());
    }
}
