//! The local actor runtime of airssys: actors, bounded mailboxes, supervision, request
//! correlation.
//!
//! No WASM, no networking, no storage: the node crate builds component actors on top of this.
//!
//! * [`mod@mailbox`] — bounded per-actor mailbox; full means `Full(msg)`, never a silent drop.
//! * [`supervisor`] — sans-IO restart decisions: exponential backoff and restart intensity.
//! * [`actor`] — the supervised actor task: create, handle one message at a time, restart or fail,
//!   and reject (never drop) every message that will not be handled.
//! * [`request`] — request correlation: each request is completed or timed out, exactly once.

pub mod actor;
pub mod mailbox;
pub mod request;
pub mod supervisor;

pub use actor::{
    spawn_supervised, Actor, ActorFactory, ActorHandle, ActorStatus, Crash, Rejection,
};
pub use mailbox::{mailbox, Closed, MailboxReceiver, MailboxSender, TrySendError};
pub use request::{Correlator, RequestIdGen, RequestTracker};
pub use supervisor::{Backoff, Decision, Intensity, RestartPolicy, SupervisorState};
