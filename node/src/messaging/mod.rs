//! Messages between components on a node: the envelope, the keys under which durable
//! messages and their bookkeeping live in the system keyspace, the mailbox item, and local
//! routing.

pub mod envelope;
pub mod histogram;
pub mod idempotency;
pub mod keys;
pub mod mail;
pub mod router;

pub use envelope::{Address, Body, Envelope, RequestErr};
pub use mail::Mail;
pub use router::{RemoteRoute, Router};
