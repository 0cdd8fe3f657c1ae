//! Who belongs to the cluster: starting one (bootstrap), joining one, admitting and evicting
//! members (the leader's side of a join and of `remove_node`), when a (re)started node may
//! campaign, and the leader's duty of watching the members (failover of a down member's
//! components, rebalancing onto a newcomer). The writes these make go through `writes`.

use super::{raft_err, ClusterError, ClusterNode, CALL_LIMIT};
use crate::failure::{down_members, Heard};
use crate::peer::{PeerError, PeerRequest, PeerResponse};
use crate::placement::{choose_node, failover_moves, rebalance_moves, NodeId, NodeLoad, Placement};
use crate::raft::types::{Command, NodeInfo, Outcome};
use openraft::ChangeMembers;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How often the leader looks for failed members and imbalance.
const DETECT_EVERY: Duration = Duration::from_millis(100);
/// How often the leader considers one rebalancing move.
const REBALANCE_EVERY: Duration = Duration::from_secs(2);

impl ClusterNode {
    /// Starts a new cluster with this node as its only voter, unless the node has
    /// state already (then nothing happens).
    pub async fn bootstrap(&self) -> Result<bool, ClusterError> {
        if self.is_initialized().await {
            return Ok(false);
        }
        // A new cluster of one elects itself at once.
        self.inner.raft.runtime_config().elect(true);
        let members = BTreeMap::from([(self.inner.id, self.inner.info.clone())]);
        self.inner
            .raft
            .initialize(members)
            .await
            .map_err(raft_err)?;
        self.admitted();
        tracing::info!(node = self.inner.id, "bootstrapped a new cluster");
        Ok(true)
    }

    /// Asks the cluster behind any of `seeds` (peer addresses) to take this node in:
    /// as a learner first, then as a voter. Retries until `limit`. Does nothing for a
    /// node that has state already.
    pub async fn join(&self, seeds: &[String], limit: Duration) -> Result<(), ClusterError> {
        if self.is_initialized().await {
            return Ok(());
        }
        let req = PeerRequest::Join {
            node_id: self.inner.id,
            info: self.inner.info.clone(),
        };
        let started = tokio::time::Instant::now();
        let mut last_error = String::from("no seed given");
        loop {
            if self.is_voter() {
                // An earlier attempt got through after all (its answer was lost).
                self.admitted();
                return Ok(());
            }
            for seed in seeds {
                match self
                    .inner
                    .transport
                    .call::<_, PeerResponse>(seed, &req, CALL_LIMIT)
                    .await
                {
                    Ok(PeerResponse::Done(_)) => {
                        tracing::info!(node = self.inner.id, via = %seed, "joined the cluster");
                        self.admitted();
                        return Ok(());
                    }
                    Ok(PeerResponse::Error(e)) => last_error = e.to_string(),
                    Ok(other) => last_error = format!("unexpected answer {}", other.kind()),
                    Err(e) => last_error = e.to_string(),
                }
            }
            if started.elapsed() > limit {
                return Err(ClusterError::Join(seeds.to_vec(), last_error));
            }
            tracing::info!("join not done yet ({last_error}); retrying");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The cluster took this node in (it bootstrapped one, or a join was completed): from
    /// now on it votes.
    fn admitted(&self) {
        self.inner.withholds_votes.store(false, Ordering::SeqCst);
    }

    /// True when any of `seeds` answers that it belongs to a cluster already.
    pub async fn any_member_among(&self, seeds: &[String]) -> bool {
        for seed in seeds {
            if let Ok(PeerResponse::Probe { initialized: true }) = self
                .inner
                .transport
                .call::<_, PeerResponse>(seed, &PeerRequest::Probe, Duration::from_secs(2))
                .await
            {
                return true;
            }
        }
        false
    }

    /// Moves the node's components away, then takes it out of the membership.
    pub async fn remove_node(&self, node: NodeId) -> Result<Outcome, ClusterError> {
        Self::done(self.on_leader(PeerRequest::RemoveNode(node)).await?)
    }

    /// Leader: adds `node` as a learner (waits until it has caught up), then makes it
    /// a voter.
    pub(super) async fn admit(
        &self,
        node: NodeId,
        info: NodeInfo,
    ) -> Result<Outcome, ClusterError> {
        let membership = self.inner.view.membership();
        if membership.membership().voter_ids().any(|v| v == node) {
            // Only a node without Raft state asks to join: a member that asks has lost its
            // data (a wiped volume). Raft assumes a member keeps its log and vote, so it is
            // taken out (its components move first) and admitted afresh: as a learner it
            // gets a snapshot before it can vote again.
            tracing::warn!(
                node,
                "a member asks to join with no state; re-admitting it from scratch"
            );
            self.evict(node).await?;
        }
        if self.state_not_in_log() {
            self.compact_log().await?;
        }
        tracing::info!(node, %info, "admitting a node as learner");
        self.inner
            .raft
            .add_learner(node, info, true)
            .await
            .map_err(raft_err)?;
        self.inner
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node])), false)
            .await
            .map_err(raft_err)?;
        tracing::info!(node, "promoted to voter");
        Ok(Outcome::Nothing)
    }

    /// Whether this node's applied state did not all come through its log: it was seeded
    /// from a backup (its registry has a generation base) and no snapshot has covered the
    /// log since. A learner replaying that log would miss the seeded state.
    fn state_not_in_log(&self) -> bool {
        self.inner.view.registry().generation_base > 0
            && self.inner.raft.metrics().borrow().purged.is_none()
    }

    /// Builds a snapshot at the applied index and purges the log up to it, so that new
    /// members start from the snapshot (all of the state) rather than from the log.
    pub async fn compact_log(&self) -> Result<(), ClusterError> {
        let applied = self
            .inner
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map(|l| l.index)
            .unwrap_or(0);
        tracing::info!(
            applied,
            "compacting the log before the first new member (state seeded from a backup)"
        );
        self.inner
            .raft
            .trigger()
            .snapshot()
            .await
            .map_err(raft_err)?;
        let limit = Duration::from_secs(60);
        self.inner
            .raft
            .wait(Some(limit))
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index >= applied),
                "snapshot at the applied index",
            )
            .await
            .map_err(raft_err)?;
        self.inner
            .raft
            .trigger()
            .purge_log(applied)
            .await
            .map_err(raft_err)?;
        self.inner
            .raft
            .wait(Some(limit))
            .metrics(
                |m| m.purged.is_some_and(|p| p.index >= applied),
                "log purged to the applied index",
            )
            .await
            .map_err(raft_err)?;
        Ok(())
    }

    pub(super) async fn evict(&self, node: NodeId) -> Result<Outcome, ClusterError> {
        let membership = self.inner.view.membership();
        if membership.membership().get_node(&node).is_none() {
            return Err(PeerError::NotMember(node).into());
        }
        let voters: BTreeSet<NodeId> = membership.membership().voter_ids().collect();
        if voters.len() == 1 && voters.contains(&node) {
            return Err(PeerError::LastVoter.into());
        }
        // Its components go to the least-loaded other live nodes first.
        let owned: Vec<String> = self
            .inner
            .view
            .registry()
            .components
            .values()
            .filter(|c| c.owner == node)
            .map(|c| c.spec.name.clone())
            .collect();
        for name in owned {
            let loads: Vec<NodeLoad> = self
                .loads()
                .into_iter()
                .filter(|l| l.node != node)
                .collect();
            if let Some(to) = choose_node(&loads) {
                self.write(Command::Move { name, to }).await?;
            }
        }
        if voters.contains(&node) {
            self.inner
                .raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([node])), false)
                .await
                .map_err(raft_err)?;
        }
        self.inner
            .raft
            .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([node])), false)
            .await
            .map_err(raft_err)?;
        tracing::info!(node, "removed from the cluster");
        Ok(Outcome::Removed)
    }

    /// Lets this node campaign once a leader has answered it and it has caught up, or after
    /// `quiet` without that (the whole cluster is starting). The leader remembered in the
    /// persisted vote proves nothing: it may be the node that died.
    pub(super) async fn allow_elections(self, quiet: Duration) {
        let _ = tokio::time::timeout(quiet, self.catch_up()).await;
        self.inner.raft.runtime_config().elect(true);
    }

    /// Leader duty, run on every node (it acts only while this node leads): members silent
    /// past the failure timeout lose their components to live ones (generation + 1). When a
    /// node joins or comes back, and nobody is down, one component at a time moves from the
    /// busiest node to the idlest until their loads differ by at most one (the newcomer gets
    /// its share); an operator's own moves are not undone otherwise.
    pub(super) async fn watch_members(self) {
        let mut led_since: Option<(u64, Instant)> = None;
        let mut last_rebalance = Instant::now();
        let mut live_before: BTreeSet<NodeId> = BTreeSet::new();
        let mut rebalancing = false;
        let mut ticker = tokio::time::interval(DETECT_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let figures = self.figures();
            if !figures.is_leader {
                led_since = None;
                if self.inner.raft.metrics().borrow().running_state.is_err() {
                    return;
                }
                continue;
            }
            let since = match led_since {
                Some((term, at)) if term == figures.term => at,
                _ => {
                    let now = Instant::now();
                    led_since = Some((figures.term, now));
                    tracing::info!(node = self.inner.id, term = figures.term, "leading");
                    now
                }
            };
            let membership = self.inner.view.membership();
            let heard: Vec<Heard> = membership
                .membership()
                .nodes()
                .map(|(id, _)| Heard {
                    node: *id,
                    ago: self.inner.transport.since_contact(*id),
                })
                .collect();
            let previous_leader = self
                .inner
                .last_leader_heard
                .lock()
                .ok()
                .and_then(|h| *h)
                .map(|(node, at)| Heard {
                    node,
                    ago: Some(at.elapsed()),
                });
            let down = down_members(
                self.inner.id,
                &heard,
                since.elapsed(),
                self.inner.failure_timeout,
                previous_leader,
            );
            let registry = self.inner.view.registry();
            let current: BTreeMap<String, Placement> = registry
                .components
                .values()
                .map(|c| {
                    (
                        c.spec.name.clone(),
                        Placement {
                            node: c.owner,
                            generation: c.generation,
                        },
                    )
                })
                .collect();
            let counts = registry.owned_counts();
            let loads: Vec<NodeLoad> = heard
                .iter()
                .map(|h| NodeLoad {
                    node: h.node,
                    alive: !down.contains(&h.node),
                    actors: counts.get(&h.node).copied().unwrap_or(0),
                })
                .collect();
            let live: BTreeSet<NodeId> = loads.iter().filter(|l| l.alive).map(|l| l.node).collect();
            if !live.is_subset(&live_before) {
                rebalancing = true;
            }
            live_before = live;
            let moves = if !down.is_empty() {
                failover_moves(&current, &loads)
            } else if rebalancing && last_rebalance.elapsed() >= REBALANCE_EVERY {
                last_rebalance = Instant::now();
                let moves = rebalance_moves(&current, &loads, 1);
                rebalancing = !moves.is_empty();
                moves
            } else {
                Vec::new()
            };
            for (name, to) in moves {
                let reason = if down.is_empty() {
                    "rebalance"
                } else {
                    "failover"
                };
                tracing::info!(component = %name, to = to.node, generation = to.generation, reason, "moving");
                if let Err(e) = self.write(Command::Move { name, to: to.node }).await {
                    tracing::warn!("move not made: {e}");
                    break;
                }
            }
        }
    }
}
