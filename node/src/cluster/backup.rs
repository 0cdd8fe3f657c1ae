//! `backup create` on the node that takes it: after a read barrier (everything the leader
//! committed before the call is applied here), the node's own storage is walked from one
//! snapshot (`airssys_cluster::backup::create`) on a blocking thread, and the file goes to
//! the client in chunks through a small channel: a backup of any size holds a few chunks in
//! memory, and a client that goes away stops the walk.

use super::ClusterHost;
use crate::api::{ApiError, BackupStream, ErrorKind};
use crate::clock::now_ms;
use std::io::Write;
use tokio::sync::mpsc;

/// Size of the chunks the file is sent in.
const CHUNK_BYTES: usize = 256 << 10;
/// Chunks waiting for the client at most.
const CHUNKS_AHEAD: usize = 8;

/// A `Write` that sends what it is given as chunks on a channel (from a blocking thread).
pub(super) struct ChunkSender {
    tx: mpsc::Sender<std::io::Result<Vec<u8>>>,
    buf: Vec<u8>,
}

impl ChunkSender {
    fn send_buffered(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the client stopped reading the backup",
            )
        })
    }
}

impl Write for ChunkSender {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK_BYTES {
            self.send_buffered()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_buffered()
    }
}

/// Runs `write` on a blocking thread with a [`ChunkSender`]; answers the chunks as they
/// come. An error of `write` ends the stream with that error (the client's file is then
/// incomplete, and refused by its checksum).
pub(super) fn stream_blocking<F>(write: F) -> BackupStream
where
    F: FnOnce(&mut ChunkSender) -> Result<(), String> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(CHUNKS_AHEAD);
    tokio::task::spawn_blocking(move || {
        let mut out = ChunkSender {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK_BYTES),
        };
        if let Err(e) = write(&mut out) {
            tracing::warn!("a backup or export broke off: {e}");
            let _ = tx.blocking_send(Err(std::io::Error::other(e)));
        }
    });
    rx
}

impl ClusterHost {
    /// Starts a backup of this node's replicated state; answers the stream of its file.
    pub(super) async fn backup_stream(&self) -> Result<BackupStream, ApiError> {
        if !self.cluster.is_initialized().await {
            return Err(ApiError::new(
                ErrorKind::Unavailable,
                "this node has not joined a cluster yet: there is nothing to back up here",
            ));
        }
        self.cluster.catch_up().await;
        let storage = self.host.storage().clone();
        let node = self.cluster.id();
        Ok(stream_blocking(move |out| {
            let summary =
                airssys_cluster::backup::create(&storage, node, now_ms(), out, &mut |_| {})
                    .map_err(|e| e.to_string())?;
            tracing::info!(
                index = summary.header.index,
                bytes = summary.bytes,
                components = summary.components,
                sha256 = %summary.sha256,
                "backup written"
            );
            Ok(())
        }))
    }
}
