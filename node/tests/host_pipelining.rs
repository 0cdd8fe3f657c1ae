//! Pipelined commits per actor: an actor handles its next messages while its previous
//! commit is in flight, its handlers read what the ones before them wrote, nothing they
//! produce leaves before it is durable, and a failed commit drops exactly what was
//! computed on top of it.
//!
//! The node's own committer is wrapped in a gate the test opens and closes, so "a commit
//! in flight" is a state the test sets up, not a timing it hopes for.
#![allow(clippy::unwrap_used)]

mod common;

use airssys_node::api::{AdminBackend, ApiError, Delivery};
use airssys_node::cluster::ClusterHost;
use airssys_node::commit::{CommitError, CommitFuture, Committer};
use airssys_storage::CommitBatch;
use common::{eventually, open};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The node's committer behind a gate: handler commits wait while it is closed.
struct Gated {
    inner: Arc<dyn Committer>,
    open: watch::Sender<bool>,
    handler_commits: AtomicUsize,
    refuse_next: AtomicBool,
}

struct GatedCommitter(Arc<Gated>);

impl Committer for GatedCommitter {
    fn commit_handler(&self, batch: CommitBatch) -> CommitFuture {
        let gated = self.0.clone();
        Box::pin(async move {
            gated.handler_commits.fetch_add(1, Ordering::SeqCst);
            let mut open = gated.open.subscribe();
            let _ = open.wait_for(|o| *o).await;
            if gated.refuse_next.swap(false, Ordering::SeqCst) {
                return Err(CommitError::Failed("refused by the test".into()));
            }
            gated.inner.commit_handler(batch).await
        })
    }

    fn commit(&self, batch: CommitBatch) -> CommitFuture {
        self.0.inner.commit(batch)
    }

    fn incarnation_of(&self, name: &str) -> Option<u64> {
        self.0.inner.incarnation_of(name)
    }
}

/// A node whose committer is gated (open), with a counter `c` at 1.
async fn gated_counter(dir: &std::path::Path) -> (ClusterHost, Arc<Gated>) {
    let host = open(dir).await;
    let gated = Arc::new(Gated {
        inner: host.host().committer(),
        open: watch::channel(true).0,
        handler_commits: AtomicUsize::new(0),
        refuse_next: AtomicBool::new(false),
    });
    host.host()
        .set_committer(Arc::new(GatedCommitter(gated.clone())));
    common::install(&host, "c", "counter").await;
    assert_eq!(inc(&host).await.unwrap(), "1");
    (host, gated)
}

async fn inc(host: &ClusterHost) -> Result<String, ApiError> {
    host.request(
        "c",
        b"inc".to_vec(),
        Duration::from_secs(60),
        Delivery::Fast,
        None,
    )
    .await
    .map(|b| String::from_utf8(b).unwrap())
}

/// `n` concurrent `inc` requests.
fn incs(host: &ClusterHost, n: usize) -> Vec<JoinHandle<Result<String, ApiError>>> {
    (0..n)
        .map(|_| {
            let host = host.clone();
            tokio::spawn(async move { inc(&host).await })
        })
        .collect()
}

/// Waits until `n` handler transactions of `c` wait for their commit.
async fn until_waiting(host: &ClusterHost, n: usize) {
    eventually(Duration::from_secs(60), || async {
        (host.host().commits_waiting("c").await == Some(n)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_handles_its_next_messages_while_its_commit_is_in_flight() {
    const N: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let (host, gated) = gated_counter(dir.path()).await;
    let commits_before = gated.handler_commits.load(Ordering::SeqCst);

    gated.open.send_replace(false);
    let requests = incs(&host, N);
    // Every handler ran although the first commit has not finished: one actor, N
    // transactions waiting. (Without pipelining the actor waits on the first and this
    // never reaches N.)
    until_waiting(&host, N).await;
    assert_eq!(
        gated.handler_commits.load(Ordering::SeqCst),
        commits_before + 1,
        "one commit in flight for the component, the rest waiting behind it"
    );
    for r in &requests {
        assert!(
            !r.is_finished(),
            "a reply left before its commit was durable"
        );
    }

    gated.open.send_replace(true);
    let mut replies = Vec::new();
    for r in requests {
        replies.push(r.await.unwrap().unwrap().parse::<u64>().unwrap());
    }
    replies.sort();
    // Each handler read what the ones before it wrote, still in flight at the time.
    assert_eq!(replies, (2..=N as u64 + 1).collect::<Vec<_>>());
    // The first commit took what had reached the pipeline when it started (at least the
    // first transaction); everything else waited behind it and went as one more commit.
    let commits = gated.handler_commits.load(Ordering::SeqCst) - commits_before;
    assert!(
        (1..=2).contains(&commits),
        "{N} transactions took {commits} commits; the ones waiting behind a commit in flight go together"
    );
    assert_eq!(host.host().commits_waiting("c").await, Some(0));
    assert_eq!(inc(&host).await.unwrap(), (N + 2).to_string());

    // And it is all durable: a restarted node has every increment.
    host.shutdown().await;
    drop(host);
    drop(gated); // it holds the node's committer, and so its storage
    let host = open(dir.path()).await;
    assert_eq!(
        common::ask(&host, "c", "get").await.unwrap(),
        (N + 2).to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_drops_what_waited_behind_it_and_the_actor_starts_again() {
    const N: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let (host, gated) = gated_counter(dir.path()).await;

    gated.open.send_replace(false);
    gated.refuse_next.store(true, Ordering::SeqCst);
    let requests = incs(&host, N);
    until_waiting(&host, N).await;
    gated.open.send_replace(true);
    for r in requests {
        match r.await.unwrap() {
            Err(e) => assert!(
                e.message.contains("refused by the test"),
                "unexpected error: {e}"
            ),
            Ok(v) => panic!("an increment computed on a refused commit was answered: {v}"),
        }
    }
    // Nothing of the dropped handlers is read, kept or numbered on: the count goes on
    // from the last committed value, with a fresh instance.
    assert_eq!(host.host().commits_waiting("c").await, Some(0));
    assert_eq!(inc(&host).await.unwrap(), "2");
    assert_eq!(common::ask(&host, "c", "get").await.unwrap(), "2");
}
