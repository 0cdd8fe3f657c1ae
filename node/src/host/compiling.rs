//! Components this node owns whose code is still compiling in the background: the node
//! serves everything else meanwhile, and these answer `unavailable` with a message that
//! says why, and describe as `compiling`. The compile queue itself is the cluster host's
//! (`crate::cluster::compile`); the host only keeps the marks.

use super::{api_err, ComponentRecord, Host};
use crate::api::{ApiError, ComponentInfo, ComponentState, ErrorKind};
use crate::clock::now_ms;

impl Host {
    /// Whether the binary with this SHA-256 is compiled here already (activation only
    /// loads it).
    pub(crate) fn is_compiled(&self, sha256: &str) -> bool {
        self.inner.engine.is_compiled(sha256)
    }

    /// Marks `record` as owned here and waiting for its code (kept until it is activated,
    /// deactivated, or the mark is taken back).
    pub(crate) fn mark_compiling(&self, record: ComponentRecord) {
        if let Ok(mut marks) = self.inner.compiling.lock() {
            let since = marks
                .get(&record.name)
                .filter(|(r, _)| r.sha256 == record.sha256)
                .map_or_else(now_ms, |(_, since)| *since);
            marks.insert(record.name.clone(), (record, since));
        }
    }

    /// Takes the mark of `name` back (its code compiled, or it is no longer owned here).
    pub(crate) fn unmark_compiling(&self, name: &str) {
        if let Ok(mut marks) = self.inner.compiling.lock() {
            marks.remove(name);
        }
    }

    /// The components waiting for their code: (name, binary SHA-256, generation).
    pub(crate) fn compiling(&self) -> Vec<(String, String, u64)> {
        self.inner
            .compiling
            .lock()
            .map(|m| {
                m.values()
                    .map(|(r, _)| (r.name.clone(), r.sha256.clone(), r.generation))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The answer for a message to `name` while its code compiles here, if it does.
    pub(crate) fn still_compiling(&self, name: &str) -> Option<ApiError> {
        let marks = self.inner.compiling.lock().ok()?;
        let (_, since) = marks.get(name)?;
        let secs = now_ms().saturating_sub(*since) / 1000;
        Some(api_err(
            ErrorKind::Unavailable,
            format!(
                "{name} is waiting for its code to compile on node {} (for {secs} s); retry shortly",
                self.inner.config.node_id
            ),
        ))
    }

    /// How `name` describes while its code compiles here.
    pub(crate) fn compiling_info(&self, name: &str) -> Option<ComponentInfo> {
        let marks = self.inner.compiling.lock().ok()?;
        let (r, since) = marks.get(name)?;
        Some(ComponentInfo {
            name: r.name.clone(),
            sha256: r.sha256.clone(),
            size_bytes: r.size_bytes,
            limits: r.limits,
            node_id: r.node_id,
            generation: r.generation,
            state: ComponentState::Compiling { since_ms: *since },
            mailbox_depth: 0,
            storage_bytes: self.inner.storage.usage_bytes(&r.name).unwrap_or(0),
            restarts: 0,
            installed_at_ms: r.installed_at_ms,
            log_lines_dropped: 0,
            upgraded_at_ms: None,
            previous: None,
        })
    }
}
