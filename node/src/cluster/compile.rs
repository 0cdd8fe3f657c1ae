//! Background compilation: binaries this node must run (or may take over) and has not
//! compiled yet are compiled a few at a time, off the reconcile, so that a node with a
//! cold compiled-code cache (new, wiped, or after an upgrade of airssys) serves at once:
//! health, status and every component whose code is ready. A component owned here waits
//! as `compiling` (the host's marks) until its binary is done; each finished compile
//! wakes the reconcile, which then activates it from the cache in milliseconds.

use crate::host::Host;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, Semaphore};

/// Binaries compiled at once: compiling is CPU-bound (Cranelift uses threads of its own
/// too), so half the cores, and at least one, leaves the rest to serving.
pub fn parallelism() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() / 2)
        .unwrap_or(1)
        .max(1)
}

#[derive(Clone)]
pub struct Compiles {
    inner: Arc<Inner>,
}

struct Inner {
    permits: Semaphore,
    /// Binaries queued or compiling (SHA-256).
    in_flight: Mutex<BTreeSet<String>>,
    /// Binaries whose compile failed: activation compiles them inline instead, which
    /// records the failure where `describe` shows it (no endless retry here).
    failed: Mutex<BTreeSet<String>>,
    /// Woken after each compile ends.
    done: Notify,
}

impl Compiles {
    pub fn new(parallelism: usize) -> Compiles {
        Compiles {
            inner: Arc::new(Inner {
                permits: Semaphore::new(parallelism.max(1)),
                in_flight: Mutex::default(),
                failed: Mutex::default(),
                done: Notify::new(),
            }),
        }
    }

    /// Whether the binary's activation should wait for a background compile: not
    /// compiled here yet, and its compile has not failed before.
    pub fn must_wait(&self, host: &Host, sha256: &str) -> bool {
        !host.is_compiled(sha256) && !self.has_failed(sha256)
    }

    fn has_failed(&self, sha256: &str) -> bool {
        self.inner.failed.lock().is_ok_and(|f| f.contains(sha256))
    }

    /// Queues the binary's compile, unless it is queued or compiling already.
    pub fn start(&self, host: &Host, sha256: &str, binary: impl FnOnce() -> Option<Vec<u8>>) {
        let Ok(mut in_flight) = self.inner.in_flight.lock() else {
            return;
        };
        if in_flight.contains(sha256) || !self.must_wait(host, sha256) {
            return;
        }
        let Some(binary) = binary() else {
            return;
        };
        in_flight.insert(sha256.to_string());
        let (me, host, sha) = (self.clone(), host.clone(), sha256.to_string());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let result = match me.inner.permits.acquire().await {
                Ok(_permit) => host.prepare(binary, sha.clone()).await.map(|_| ()),
                Err(_) => return,
            };
            match result {
                Ok(()) => tracing::info!(
                    sha256 = %sha,
                    ms = started.elapsed().as_millis() as u64,
                    "compiled in the background"
                ),
                Err(e) => {
                    tracing::warn!(sha256 = %sha, "background compile failed: {e}");
                    if let Ok(mut failed) = me.inner.failed.lock() {
                        failed.insert(sha.clone());
                    }
                }
            }
            if let Ok(mut in_flight) = me.inner.in_flight.lock() {
                in_flight.remove(&sha);
            }
            me.inner.done.notify_one();
        });
    }

    /// How many binaries are queued or compiling.
    pub fn pending(&self) -> usize {
        self.inner.in_flight.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Resolves when a compile ends (one waiter: the reconcile loop).
    pub async fn finished(&self) {
        self.inner.done.notified().await;
    }
}
