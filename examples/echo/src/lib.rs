//! The `echo` example component: replies the payload unchanged (an empty payload
//! gets an empty reply).

use airssys_sdk::prelude::*;

/// Replies every message with its own payload.
struct Echo;

impl Component for Echo {
    fn handle_message(msg: Message) -> HandlerResult {
        Ok(Some(msg.payload))
    }
}

airssys_sdk::export_component!(Echo);
