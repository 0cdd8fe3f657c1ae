//! The airssys node: the wasmtime engine, component actors, the host that ties them to
//! storage and messaging, the admin HTTP API and the `airssys` CLI.
//!
//! Module map:
//! - `api`: the admin contract (plain data + the `AdminBackend` trait).
//! - `config`: node configuration and defaults.
//! - `engine`: wasmtime setup, compile cache, validation, bindings.
//! - `component`: one component's actor (instance + transaction per message).
//! - `commit`: the seam where a transaction goes (the cluster's Raft log).
//! - `messaging`: envelopes, outbox/dedupe keys, local routing.
//! - `host`: the local runtime (activation, replay, external sends for what runs here).
//! - `cluster`: the one front door (`ClusterHost`, the only `AdminBackend`), driving the
//!   local runtime from the replicated registry.
//! - `caps`, `names`: the size caps and the component-name rule, each stated once.
//! - `daemon`: `airssys node start`: starts the cluster host and serves the admin API.
//! - `admin`: the admin HTTP server (axum) and bearer-token auth.
//! - `client`: the admin HTTP client the CLI uses.
//! - `cli`: the `airssys` command line.

pub mod admin;
pub mod api;
pub mod caps;
pub mod cli;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod commit;
pub mod component;
pub mod config;
pub mod crypto;
pub mod daemon;
pub mod engine;
pub mod host;
pub mod messaging;
pub mod metrics;
pub mod names;
pub mod telemetry;
