//! Commits through the cluster's Raft log. A handler's commit carries the component's next
//! commit number: the state machine applies number n only after n − 1 and answers a repeat
//! of an applied number without applying it again, so when the way to the leader fails and
//! the outcome is unknown, the very same batch is simply sent again until the answer is
//! definite. The component's commit pipeline waits meanwhile (it has one commit in flight;
//! the handlers behind it read its writes in flight and commit after it).

use crate::commit::{CommitError, CommitFuture, Committer};
use airssys_cluster::{commit_fate, ClusterNode, CommitFate, Outcome, Refusal};
use airssys_storage::CommitBatch;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// First pause before sending a commit again; doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);

pub struct RaftCommitter {
    cluster: ClusterNode,
    /// Per component: the generation it runs at here and its last applied commit number.
    /// Generations are never given twice under one name (a reinstall starts past every
    /// earlier one), so an entry of a removed incarnation is simply never matched.
    numbers: Mutex<HashMap<String, (u64, u64)>>,
}

impl RaftCommitter {
    pub fn new(cluster: ClusterNode) -> Arc<RaftCommitter> {
        Arc::new(RaftCommitter {
            cluster,
            numbers: Mutex::new(HashMap::new()),
        })
    }

    /// The next commit number of `component` at `generation`: one past the last applied.
    /// A new activation starts from the registry (which counts every applied commit, the
    /// previous owner's included).
    fn next_number(&self, component: &str, generation: u64) -> u64 {
        let known = self
            .numbers
            .lock()
            .ok()
            .and_then(|m| m.get(component).copied())
            .filter(|(g, _)| *g == generation)
            .map(|(_, last)| last);
        let last = known.unwrap_or_else(|| self.cluster.view().commits_of(component).unwrap_or(0));
        last + 1
    }

    fn applied(&self, component: &str, generation: u64, number: u64) {
        if let Ok(mut m) = self.numbers.lock() {
            m.insert(component.to_string(), (generation, number));
        }
    }
}

fn refused(outcome: Outcome) -> CommitError {
    match outcome {
        Outcome::Refused(r @ Refusal::Fenced { .. }) => CommitError::Fenced(r.to_string()),
        Outcome::Refused(r) => CommitError::Failed(r.to_string()),
        other => CommitError::Failed(format!("unexpected commit outcome {other:?}")),
    }
}

impl Committer for Arc<RaftCommitter> {
    fn reads_confirmed(&self) -> bool {
        self.cluster.lease().holds()
    }

    fn confirm_reads(&self, limit: Duration) -> crate::commit::ConfirmFuture {
        let lease = self.cluster.lease().clone();
        Box::pin(async move { lease.wait(limit).await })
    }

    fn commit_handler(&self, mut batch: CommitBatch) -> CommitFuture {
        let this = self.clone();
        Box::pin(async move {
            let Some(fence) = batch.fence.as_mut() else {
                return Err(CommitError::Failed("a handler commit needs a fence".into()));
            };
            let (name, node, generation) =
                (fence.component.clone(), fence.node_id, fence.generation);
            let number = this.next_number(&name, generation);
            fence.commit = number;
            let mut pause = RETRY_FIRST;
            loop {
                match this.cluster.commit(batch.clone()).await {
                    Ok(Outcome::Committed { .. }) => {
                        this.applied(&name, generation, number);
                        return Ok(());
                    }
                    Ok(other) => return Err(refused(other)),
                    Err(e) if this.cluster.is_stopped() => {
                        // Nothing more will apply here; the transaction is retried (its
                        // durable input is still stored) when the node runs again.
                        return Err(CommitError::Failed(format!(
                            "the node stopped before the commit of {name} applied ({e})"
                        )));
                    }
                    Err(e) => {
                        // The registry applied here says whether the placement still
                        // stands, and if not, whether this commit made it in before it
                        // ended: an applied commit is reported applied, never refused.
                        let entry = this.cluster.view().entry(&name);
                        match commit_fate(entry.as_ref(), node, generation, number) {
                            CommitFate::Open => {}
                            CommitFate::Applied => {
                                this.applied(&name, generation, number);
                                tracing::info!(component = %name, number, "commit in doubt had applied before the component moved");
                                return Ok(());
                            }
                            CommitFate::NotApplied => {
                                return Err(CommitError::Fenced(format!(
                                    "{name} moved before its commit applied ({e})"
                                )));
                            }
                            CommitFate::Unknown => {
                                return Err(CommitError::Fenced(format!(
                                    "{name} moved while its commit was in doubt; it may have applied ({e})"
                                )));
                            }
                        }
                        tracing::warn!(component = %name, number, "commit outcome unknown, sending it again: {e}");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(RETRY_MAX);
                    }
                }
            }
        })
    }

    fn commit(&self, batch: CommitBatch) -> CommitFuture {
        let this = self.clone();
        Box::pin(async move {
            match this.cluster.commit(batch).await {
                Ok(Outcome::Committed { .. }) => Ok(()),
                Ok(other) => Err(refused(other)),
                Err(e) => Err(CommitError::Failed(format!("outcome unknown: {e}"))),
            }
        })
    }

    fn incarnation_of(&self, name: &str) -> Option<u64> {
        self.cluster.view().incarnation_of(name)
    }
}
