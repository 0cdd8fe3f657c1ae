//! Store data of one component instance and the host side of the WIT imports.
//!
//! Everything a handler does is collected in its `CallContext`: storage writes in a
//! transaction overlay, messages in `outgoing`. Nothing leaves before the actor
//! commits; a failed handler's context is simply dropped.

use super::limiter::MemoryCap;
use super::shared::ComponentShared;
use crate::api::Delivery;
use crate::engine::bindings::airssys::component::{host, storage, types};
use crate::engine::log_pipe::{LastLine, LogPipe};
use airssys_storage::{Txn, WriteError};
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use crate::caps::MAX_PAYLOAD_BYTES;
/// Most messages one handler call may queue.
pub const MAX_OUTGOING_PER_CALL: usize = 1_024;
/// Most bytes one handler's transaction may carry: its storage writes (keys and values)
/// and the payloads of the messages it sends, together. One transaction is one Raft entry
/// at most, so it must fit well inside a peer frame; and what a handler queues is held in
/// the host's memory until its commit. Past it, a write answers `quota-exceeded` and a
/// send `payload-too-large`.
pub const MAX_TRANSACTION_BYTES: usize = 16 << 20;
const _: () = assert!(MAX_TRANSACTION_BYTES * 4 <= airssys_cluster::MAX_FRAME_BYTES);
/// Most keys one `list-keys` call returns.
pub const MAX_KEYS_PER_PAGE: usize = 1_000;
/// Longest log line kept from a component.
const MAX_LOG_TEXT: usize = 4_096;

/// A message a handler queued; released after its commit.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub target: String,
    pub delivery: Delivery,
    pub payload: Vec<u8>,
    /// `Some((id, timeout_ms))` for a request.
    pub request: Option<(u64, u32)>,
}

/// What one handler call has done so far.
pub struct CallContext {
    /// Begun on the first storage access: a handler that never touches storage
    /// costs no transaction.
    pub txn: Option<Txn>,
    pub outgoing: Vec<Outgoing>,
    /// Bytes of targets and payloads in `outgoing`.
    pub outgoing_bytes: usize,
    pub deadline: Instant,
    /// The component's last durable sequence number when the call began: any number
    /// handed out since (durable request ids included) must be persisted by the
    /// call's commit, or a restart would hand it out again.
    pub seq_at_start: u64,
}

impl CallContext {
    /// The transaction's size (writes and messages) with `more` bytes added.
    pub fn bytes_with(&self, more: usize) -> usize {
        let written = self.txn.as_ref().map_or(0, Txn::written_bytes);
        written
            .saturating_add(self.outgoing_bytes)
            .saturating_add(more)
    }
}

/// Store data for one instance.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) memory: MemoryCap,
    pub(crate) shared: Arc<ComponentShared>,
    /// The last line the component wrote to stderr (its panic message, on a trap).
    pub(crate) last_stderr: LastLine,
    /// Set for the duration of a handler call.
    pub call: Option<CallContext>,
    /// Set while the instance is being created (start functions run): when it must be done.
    pub(crate) instantiating_until: Option<Instant>,
}

impl HostState {
    pub fn new(shared: Arc<ComponentShared>, limits: &crate::api::Limits) -> HostState {
        let name: Arc<str> = Arc::from(shared.name.as_str());
        let last_stderr = LastLine::default();
        // Deny by default: no preopened directories, no environment, no arguments, no
        // sockets or name lookup, empty stdin. Clocks and random stay available.
        let wasi = wasmtime_wasi::WasiCtxBuilder::new()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stdout(LogPipe::new(
                name.clone(),
                "stdout",
                None,
                shared.log_budget.clone(),
            ))
            .stderr(LogPipe::new(
                name,
                "stderr",
                Some(last_stderr.clone()),
                shared.log_budget.clone(),
            ))
            .build();
        let max_bytes = (limits.memory_mb as usize).saturating_mul(1 << 20);
        HostState {
            wasi,
            table: ResourceTable::new(),
            memory: MemoryCap::new(max_bytes),
            shared,
            last_stderr,
            call: None,
            instantiating_until: None,
        }
    }

    fn call(&mut self) -> wasmtime::Result<&mut CallContext> {
        self.call
            .as_mut()
            .ok_or_else(|| wasmtime::Error::msg("host import called outside a handler"))
    }

    /// The call's transaction, begun on first use.
    fn txn(&mut self) -> wasmtime::Result<&mut Txn> {
        let shared = self.shared.clone();
        let call = self.call()?;
        if call.txn.is_none() {
            // Over the writes of earlier handlers still committing: this one must see them.
            let txn = shared
                .storage
                .begin_over(
                    &shared.name,
                    shared.txn_limits(),
                    shared.pipeline.in_flight(),
                )
                .map_err(storage_failure)?;
            call.txn = Some(txn);
        }
        call.txn
            .as_mut()
            .ok_or_else(|| wasmtime::Error::msg("transaction missing"))
    }

    fn check_send(
        &mut self,
        target: &str,
        payload: &[u8],
    ) -> wasmtime::Result<Result<(), types::SendError>> {
        if let Err(reason) = crate::names::validate(target) {
            return Ok(Err(types::SendError::InvalidName(reason)));
        }
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Ok(Err(types::SendError::PayloadTooLarge));
        }
        let call = self.call()?;
        if call.outgoing.len() >= MAX_OUTGOING_PER_CALL {
            return Ok(Err(types::SendError::TooManyMessages));
        }
        if call.bytes_with(target.len() + payload.len()) > MAX_TRANSACTION_BYTES {
            return Ok(Err(types::SendError::PayloadTooLarge));
        }
        Ok(Ok(()))
    }

    /// Queues a message the handler sends (checked by `check_send`).
    fn queue(&mut self, out: Outgoing) -> wasmtime::Result<()> {
        let call = self.call()?;
        call.outgoing_bytes += out.target.len() + out.payload.len();
        call.outgoing.push(out);
        Ok(())
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

fn delivery(d: types::Delivery) -> Delivery {
    match d {
        types::Delivery::Durable => Delivery::Durable,
        types::Delivery::Fast => Delivery::Fast,
    }
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn send_message(
        &mut self,
        target: String,
        payload: Vec<u8>,
        how: types::Delivery,
    ) -> wasmtime::Result<Result<(), types::SendError>> {
        if let Err(e) = self.check_send(&target, &payload)? {
            return Ok(Err(e));
        }
        match self.shared.router.send_room(&target) {
            None => return Ok(Err(types::SendError::NotFound)),
            Some(0) => return Ok(Err(types::SendError::MailboxFull)),
            Some(_) => {}
        }
        self.queue(Outgoing {
            target,
            delivery: delivery(how),
            payload,
            request: None,
        })?;
        Ok(Ok(()))
    }

    fn send_request(
        &mut self,
        target: String,
        payload: Vec<u8>,
        timeout_ms: u32,
        how: types::Delivery,
    ) -> wasmtime::Result<Result<u64, types::SendError>> {
        if let Err(e) = self.check_send(&target, &payload)? {
            return Ok(Err(e));
        }
        let delivery = delivery(how);
        // Not-found and mailbox-full reach a request through its callback, so the
        // component handles every outcome of a request in one place.
        let id = self.shared.next_request_id(delivery);
        self.queue(Outgoing {
            target,
            delivery,
            payload,
            request: Some((id, timeout_ms.max(1))),
        })?;
        Ok(Ok(id))
    }

    fn log(&mut self, level: types::LogLevel, text: String) -> wasmtime::Result<()> {
        if !self.shared.log_budget.take() {
            return Ok(());
        }
        let text = truncate(&text, MAX_LOG_TEXT);
        let name = self.shared.name.as_str();
        match level {
            types::LogLevel::Trace => {
                tracing::trace!(target: "component", component = name, "{text}")
            }
            types::LogLevel::Debug => {
                tracing::debug!(target: "component", component = name, "{text}")
            }
            types::LogLevel::Info => {
                tracing::info!(target: "component", component = name, "{text}")
            }
            types::LogLevel::Warn => {
                tracing::warn!(target: "component", component = name, "{text}")
            }
            types::LogLevel::Error => {
                tracing::error!(target: "component", component = name, "{text}")
            }
        }
        Ok(())
    }

    fn now_ms(&mut self) -> wasmtime::Result<u64> {
        Ok(crate::clock::now_ms())
    }

    fn self_name(&mut self) -> wasmtime::Result<String> {
        Ok(self.shared.name.clone())
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn storage_failure(e: airssys_storage::StorageError) -> wasmtime::Error {
    // An IO failure of the node's own store: abort the handler (it rolls back) rather
    // than let the component act on a wrong answer.
    wasmtime::Error::msg(format!("storage failure: {e}"))
}

impl storage::Host for HostState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        self.txn()?.get(key.as_bytes()).map_err(storage_failure)
    }

    fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), types::StorageError>> {
        let outgoing = self.call()?.outgoing_bytes;
        let txn = self.txn()?;
        let after = txn
            .written_bytes_with(key.as_bytes(), value.len())
            .saturating_add(outgoing);
        if after > MAX_TRANSACTION_BYTES {
            return Ok(Err(types::StorageError::QuotaExceeded));
        }
        match txn.set(key.into_bytes(), value) {
            Ok(()) => Ok(Ok(())),
            Err(WriteError::QuotaExceeded { .. }) => Ok(Err(types::StorageError::QuotaExceeded)),
            Err(WriteError::KeyTooLarge { .. }) => Ok(Err(types::StorageError::KeyTooLarge)),
            Err(WriteError::ValueTooLarge { .. }) => Ok(Err(types::StorageError::ValueTooLarge)),
            Err(WriteError::Storage(e)) => Err(storage_failure(e)),
        }
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        self.txn()?.delete(key.as_bytes()).map_err(storage_failure)
    }

    fn list_keys(
        &mut self,
        prefix: String,
        after: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Vec<String>> {
        // One bounded page a call: the handler's deadline can stop a long listing between
        // two pages, and no call returns a whole keyspace.
        let limit = (limit as usize).min(MAX_KEYS_PER_PAGE);
        let keys = self
            .txn()?
            .list_keys_page(
                prefix.as_bytes(),
                after.as_deref().map(str::as_bytes),
                limit,
            )
            .map_err(storage_failure)?;
        // Keys are only ever written from WIT strings, so they are UTF-8.
        Ok(keys
            .into_iter()
            .map(|k| String::from_utf8_lossy(&k).into_owned())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("hello", 10), "hello");
    }
}
