//! What an actor's mailbox carries: envelopes, and (rarely) an order from the actor's own
//! host. Routing only ever makes envelopes; the order stays opaque here, so messaging does
//! not depend on the component layer that reads it.

use super::Envelope;
use std::any::Any;

/// One item of a component's mailbox, taken in order.
pub enum Mail {
    Envelope(Envelope),
    /// From the node's host, never from a component or a peer (an upgrade of the code: the
    /// component layer knows its type).
    Host(Box<dyn Any + Send>),
}

impl From<Envelope> for Mail {
    fn from(env: Envelope) -> Mail {
        Mail::Envelope(env)
    }
}
