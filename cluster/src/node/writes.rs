//! Writes, and everything else that must run on the leader: [`ClusterNode::on_leader`]
//! (here when this node leads, else forwarded over QUIC), install and propose, the read
//! barrier ([`ClusterNode::catch_up`]), and the group commit of handler transactions (the
//! queue, one group per entry, the leader's append). The leader's dispatch of a forwarded
//! request is in `serve`; membership changes are in `membership`.

use super::{raft_err, ClusterError, ClusterNode, Inner, CALL_LIMIT, LEADER_WAIT};
use crate::group_commit::{self, Queued};
use crate::peer::{PeerError, PeerRequest, PeerResponse};
use crate::placement::choose_node;
use crate::raft::types::{Command, ComponentSpec, Outcome};
use airssys_storage::CommitBatch;
use openraft::error::{ClientWriteError, RaftError};
use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// How long a committing node waits to apply its own commit after the leader applied it.
const APPLY_WAIT: Duration = Duration::from_secs(10);

impl ClusterNode {
    /// Runs `req` on the leader: here when this node leads, else over QUIC. Waits for
    /// a leader up to [`LEADER_WAIT`].
    pub(super) async fn on_leader(&self, req: PeerRequest) -> Result<PeerResponse, ClusterError> {
        let started = tokio::time::Instant::now();
        let mut req = Some(req);
        loop {
            match self.leader() {
                Some((id, _)) if id == self.inner.id => {
                    let r = req.take().ok_or(ClusterError::NoLeader)?;
                    return Ok(self.serve_as_leader(r).await);
                }
                Some((_, info)) => {
                    let r = req.as_ref().ok_or(ClusterError::NoLeader)?;
                    match self
                        .inner
                        .transport
                        .call::<_, PeerResponse>(&info.peer_addr, r, CALL_LIMIT)
                        .await
                    {
                        Ok(PeerResponse::Error(e)) if e.leader_changed() => {}
                        Ok(resp) => return Ok(resp),
                        Err(e) if started.elapsed() > LEADER_WAIT => return Err(e.into()),
                        Err(_) => {}
                    }
                }
                None if started.elapsed() > LEADER_WAIT => return Err(ClusterError::NoLeader),
                None => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(super) fn done(resp: PeerResponse) -> Result<Outcome, ClusterError> {
        match resp {
            PeerResponse::Done(o) => Ok(o),
            PeerResponse::Error(e) => Err(e.into()),
            other => Err(PeerError::Unexpected(other.kind().into()).into()),
        }
    }

    /// Registers a component; the leader picks its node.
    pub async fn install(
        &self,
        spec: ComponentSpec,
        binary: Vec<u8>,
    ) -> Result<Outcome, ClusterError> {
        Self::done(
            self.on_leader(PeerRequest::Install { spec, binary })
                .await?,
        )
    }

    pub async fn propose(&self, command: Command) -> Result<Outcome, ClusterError> {
        Self::done(self.on_leader(PeerRequest::Propose(command)).await?)
    }

    /// Waits until this node has applied everything committed when a leader confirmed by a
    /// quorum was asked (and, before that, until there is such a leader). Retries until it
    /// succeeds. A leader's word alone is not enough: a former leader that restarts takes
    /// itself for the leader of its old term, and a node that believed it would run what
    /// that old term gave it (a second, stale activation).
    pub async fn catch_up(&self) {
        loop {
            if let Ok(PeerResponse::ReadIndex(index)) = self.on_leader(PeerRequest::ReadIndex).await
            {
                let reached = self
                    .inner
                    .raft
                    .wait(Some(LEADER_WAIT))
                    .applied_index_at_least(Some(index), "caught up with the leader")
                    .await;
                if reached.is_ok() {
                    self.inner
                        .caught_up_once
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
            }
            if self.inner.raft.metrics().borrow().running_state.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Until when this node may answer reads of what it owns.
    pub fn lease(&self) -> &Arc<super::lease::Lease> {
        &self.inner.lease
    }

    /// Renews the owner lease ([`super::lease`]) while the node runs: the leader's read
    /// index, confirmed by a quorum, asked for at `asked`, and applied here.
    pub(super) async fn keep_lease(self) {
        let timeout = self.inner.failure_timeout;
        let every = super::lease::renew_every(timeout);
        loop {
            if self.is_stopped() {
                return;
            }
            let asked = std::time::Instant::now();
            let answer =
                tokio::time::timeout(timeout / 2, self.on_leader(PeerRequest::ReadIndex)).await;
            if let Ok(Ok(PeerResponse::ReadIndex(index))) = answer {
                let applied = self
                    .inner
                    .raft
                    .wait(Some(timeout / 2))
                    .applied_index_at_least(Some(index), "applied the leader's read index")
                    .await;
                if applied.is_ok() {
                    self.inner
                        .lease
                        .extend(super::lease::lease_end(asked, timeout));
                }
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Commits a handler's transaction through the log, in a group with whatever else this
    /// node has waiting ([`group_commit`]). Returns the outcome once this node has applied it
    /// too (so the next handler here reads its writes). An error means the outcome is
    /// unknown: a numbered commit may be retried as it is.
    pub async fn commit(&self, batch: CommitBatch) -> Result<Outcome, ClusterError> {
        if self.is_stopped() {
            return Err(PeerError::Stopping.into());
        }
        let (answer, outcome) = oneshot::channel();
        self.inner
            .commits
            .send(Queued { batch, answer })
            .map_err(|_| PeerError::Stopping)?;
        outcome
            .await
            .map_err(|_| PeerError::Stopping)?
            .map_err(ClusterError::Peer)
    }

    /// Sends one group to the leader as one entry and answers each transaction in it.
    async fn commit_group(&self, group: Vec<Queued>) {
        let (batches, answers): (Vec<CommitBatch>, Vec<_>) =
            group.into_iter().map(|q| (q.batch, q.answer)).unzip();
        match self.append_group(batches).await {
            Ok(outcomes) => {
                for (answer, outcome) in answers.into_iter().zip(outcomes) {
                    let _ = answer.send(Ok(outcome));
                }
            }
            Err(e) => {
                let e = e.to_peer();
                for answer in answers {
                    let _ = answer.send(Err(e.clone()));
                }
            }
        }
    }

    /// The outcome of each transaction, once this node has applied the entry.
    async fn append_group(&self, batches: Vec<CommitBatch>) -> Result<Vec<Outcome>, ClusterError> {
        let n = batches.len();
        let (index, outcomes) = match self.on_leader(PeerRequest::Commits(batches)).await? {
            PeerResponse::Committed {
                index,
                outcome: Outcome::Many(outcomes),
            } if outcomes.len() == n => (index, outcomes),
            PeerResponse::Error(e) => return Err(e.into()),
            other => {
                return Err(PeerError::Unexpected(format!(
                    "{} to a group of {n} commits",
                    other.kind()
                ))
                .into())
            }
        };
        if outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Committed { .. }))
        {
            self.inner
                .raft
                .wait(Some(APPLY_WAIT))
                .applied_index_at_least(Some(index), "own commit applied")
                .await
                .map_err(|e| ClusterError::Raft(format!("commit not applied here: {e}")))?;
        }
        Ok(outcomes)
    }

    /// Leader: appends handler transactions and answers with the entry's index.
    pub(super) async fn append_commits(&self, command: Command) -> PeerResponse {
        match self.inner.raft.client_write(command).await {
            Ok(resp) => PeerResponse::Committed {
                index: resp.log_id.index,
                outcome: resp.data,
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                PeerResponse::Error(PeerError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(e) => PeerResponse::Error(PeerError::Raft(e.to_string())),
        }
    }

    pub(super) async fn write(&self, command: Command) -> Result<Outcome, ClusterError> {
        // The state machine refuses the same commands; checked here first, a bad one costs
        // no log entry.
        if let Err(refusal) = crate::raft::command_check::check_command(&command) {
            return Ok(Outcome::Refused(refusal));
        }
        match self.inner.raft.client_write(command).await {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(PeerError::NotLeader {
                    leader: f.leader_id,
                }
                .into())
            }
            Err(e) => Err(raft_err(e)),
        }
    }

    pub(super) async fn place_and_install(
        &self,
        spec: ComponentSpec,
        binary: Vec<u8>,
    ) -> Result<Outcome, ClusterError> {
        let owner = choose_node(&self.loads()).unwrap_or(self.inner.id);
        // Known binaries travel once: the registry holds one exactly while it is in use.
        let binary = if self.inner.view.registry().uses_binary(&spec.sha256) {
            Vec::new()
        } else {
            binary
        };
        self.write(Command::Install {
            spec,
            owner,
            binary,
        })
        .await
    }
}

/// Runs a node's commit queue: gathers what waits into groups and keeps up to
/// [`group_commit::GROUPS_IN_FLIGHT`] of them on their way to the leader. Holds the node
/// weakly, so it ends with the node.
pub(super) async fn run_commit_groups(
    node: Weak<Inner>,
    mut queued: mpsc::UnboundedReceiver<Queued>,
) {
    let slots = Arc::new(Semaphore::new(group_commit::GROUPS_IN_FLIGHT));
    let mut waiting: VecDeque<Queued> = VecDeque::new();
    loop {
        if waiting.is_empty() {
            match queued.recv().await {
                Some(q) => waiting.push_back(q),
                None => return,
            }
        }
        // Whatever arrives while every slot is busy joins the next group.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        while let Ok(q) = queued.try_recv() {
            waiting.push_back(q);
        }
        let sizes: Vec<usize> = waiting.iter().map(|q| q.batch.approx_bytes()).collect();
        let n = group_commit::group_len(&sizes, group_commit::LIMITS);
        let group: Vec<Queued> = waiting.drain(..n).collect();
        let Some(inner) = node.upgrade() else {
            return;
        };
        let node = ClusterNode { inner };
        tokio::spawn(async move {
            node.commit_group(group).await;
            drop(slot);
        });
    }
}
