//! The committer thread: takes the batches waiting on its channel as one group, applies the
//! group with one write ([`apply_group`]) and answers each caller.

use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::apply::apply_group;
use super::batch::CommitBatch;
use crate::store::Core;
use crate::StorageError;

/// At most this many batches are merged into one write.
pub const MAX_GROUP_BATCHES: usize = 4096;
/// A group stops taking more batches once it holds this many bytes of keys and values.
pub const MAX_GROUP_BYTES: usize = 64 << 20;

/// One batch waiting for the committer thread.
pub(crate) struct Job {
    pub(crate) batch: CommitBatch,
    pub(crate) reply: oneshot::Sender<Result<(), StorageError>>,
    /// Whether the write must reach the disk before the answer (a group syncs if any of its
    /// jobs asks).
    pub(crate) sync: bool,
}

/// Starts the committer thread. It holds only the [`Core`], never a `Storage`, so dropping the
/// last `Storage` closes the channel; the thread drains what is queued and exits.
pub(crate) fn spawn_committer(
    core: Arc<Core>,
) -> Result<(mpsc::Sender<Job>, JoinHandle<()>), StorageError> {
    let (tx, rx) = mpsc::channel::<Job>();
    let handle = std::thread::Builder::new()
        .name("airssys-committer".into())
        .spawn(move || run_committer(&core, &rx))
        .map_err(|e| StorageError::Io(format!("spawning the committer thread: {e}")))?;
    Ok((tx, handle))
}

fn run_committer(core: &Core, rx: &mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut bytes = first.batch.approx_bytes();
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP_BATCHES && bytes < MAX_GROUP_BYTES {
            match rx.try_recv() {
                Ok(j) => {
                    bytes += j.batch.approx_bytes();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        let sync = jobs.iter().any(|j| j.sync);
        let (batches, replies): (Vec<_>, Vec<_>) =
            jobs.into_iter().map(|j| (j.batch, j.reply)).unzip();
        tracing::trace!(batches = batches.len(), bytes, "group commit");
        let results = apply_group(core, &batches, sync);
        for (reply, r) in replies.into_iter().zip(results) {
            // The caller may have given up waiting; the commit stands either way.
            let _ = reply.send(r);
        }
    }
}
