//! `component export` and `component import` on the node that takes them.
//!
//! An export is read from one snapshot of this node's storage (after a read barrier) and
//! streamed like a backup. An import is checked here whole (checksum, one component, a
//! binary that matches its digest, data within one transaction's cap and the quota), then
//! made as an upgrade whose writes replace the component's store: a new name is installed
//! with the export's code first; `--replace` writes code and data over an existing one.
//! Either way the data lands in one fenced Raft entry with its code (generation + 1).

use super::admin::not_found;
use super::backup::stream_blocking;
use super::upgrade::UpgradeCall;
use super::ClusterHost;
use crate::admin::params;
use crate::api::{
    AdminBackend, ApiError, BackupStream, ComponentInfo, ErrorKind, ImportRequest, InstallRequest,
    Limits, LimitsRequest,
};
use crate::caps::{MAX_IMPORT_DATA_BYTES, MAX_IMPORT_FILE_BYTES};
use crate::clock::now_ms;
use airssys_cluster::backup::export::{self, ComponentExport, ExportError};

/// Code and data one import carries in one Raft entry at most (under the peer frame cap).
const MAX_ONE_ENTRY_BYTES: u64 = 64 << 20;

fn export_error(e: ExportError) -> ApiError {
    match e {
        ExportError::NotFound(name) => not_found(&name),
        ExportError::TooLarge { limit } => ApiError::new(
            ErrorKind::TooLarge,
            format!(
                "the export holds more than {} MiB of data, the most one import (one \
                 transaction) takes",
                limit >> 20
            ),
        ),
        other => ApiError::new(
            ErrorKind::BadRequest,
            format!("not a usable export: {other}"),
        ),
    }
}

fn as_request(limits: &Limits) -> LimitsRequest {
    LimitsRequest {
        memory_mb: Some(limits.memory_mb),
        deadline_ms: Some(limits.deadline_ms),
        mailbox: Some(limits.mailbox),
        quota_mb: Some(limits.quota_mb),
        fuel: limits.fuel,
    }
}

impl ClusterHost {
    /// Starts the export of `name`; answers the stream of its file.
    pub(super) async fn export_stream(&self, name: &str) -> Result<BackupStream, ApiError> {
        params::validate_name(name)?;
        self.cluster.catch_up().await;
        if self.cluster.view().entry(name).is_none() {
            return Err(not_found(name));
        }
        let storage = self.host.storage().clone();
        let node = self.cluster.id();
        let name = name.to_string();
        Ok(stream_blocking(move |out| {
            let summary =
                export::export_component(&storage, &name, node, now_ms(), out, &mut |_| {})
                    .map_err(|e| e.to_string())?;
            tracing::info!(component = %name, index = summary.header.index, bytes = summary.bytes, "export written");
            Ok(())
        }))
    }

    /// `component import`: checks the export, then installs and/or writes it over.
    pub(super) async fn import_component(
        &self,
        req: ImportRequest,
    ) -> Result<ComponentInfo, ApiError> {
        let ImportRequest {
            name,
            file,
            replace,
        } = req;
        params::validate_name(&name)?;
        params::check_size(file.len(), MAX_IMPORT_FILE_BYTES, "export file")?;
        let export: ComponentExport = tokio::task::spawn_blocking(move || {
            export::read_export(file.as_slice(), MAX_IMPORT_DATA_BYTES as u64)
        })
        .await
        .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?
        .map_err(export_error)?;
        let limits: Limits = serde_json::from_slice(&export.spec.config).map_err(|e| {
            ApiError::new(
                ErrorKind::BadRequest,
                format!("the export's limits cannot be read: {e}"),
            )
        })?;
        if let Some(problem) = limits.problem() {
            return Err(ApiError::new(
                ErrorKind::BadRequest,
                format!("the export's limits: {problem}"),
            ));
        }
        if export.data_bytes > limits.quota_mb << 20 {
            return Err(ApiError::new(
                ErrorKind::QuotaExceeded,
                format!(
                    "the export holds {} bytes of data, over its quota of {} MiB",
                    export.data_bytes, limits.quota_mb
                ),
            ));
        }
        match self.cluster.view().entry(&name) {
            Some(_) if !replace => {
                return Err(ApiError::new(
                    ErrorKind::AlreadyExists,
                    format!(
                        "{name} exists; `--replace` writes the export over it (its code, limits \
                         and data)"
                    ),
                ))
            }
            Some(_) => {}
            None => {
                self.install(InstallRequest {
                    name: name.clone(),
                    binary: export.binary.clone(),
                    limits: as_request(&limits),
                })
                .await?;
            }
        }
        let entry = self
            .cluster
            .view()
            .entry(&name)
            .ok_or_else(|| not_found(&name))?;
        // The owner and the log take the binary from the registry when it holds it; else it
        // travels with the data, in one entry.
        let size_bytes = export.binary.len() as u64;
        let binary = if self
            .cluster
            .view()
            .registry()
            .uses_binary(&export.spec.sha256)
        {
            Vec::new()
        } else {
            export.binary
        };
        if binary.len() as u64 + export.data_bytes > MAX_ONE_ENTRY_BYTES {
            return Err(ApiError::new(
                ErrorKind::TooLarge,
                format!(
                    "new code and data together are over {} MiB, the most one entry carries: \
                     install the export's code first (`component upgrade`), then import",
                    MAX_ONE_ENTRY_BYTES >> 20
                ),
            ));
        }
        let call = UpgradeCall {
            name: name.clone(),
            sha256: export.spec.sha256.clone(),
            size_bytes,
            config: serde_json::to_vec(&limits)
                .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?,
            binary,
            from_sha256: entry.spec.sha256,
            at_ms: now_ms(),
            data: Some(export.pairs),
        };
        self.run_upgrade(call, entry.owner).await
    }
}
