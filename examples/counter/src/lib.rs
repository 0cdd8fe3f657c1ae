//! The `counter` example component.
//!
//! Commands (UTF-8 text, surrounding whitespace ignored):
//! - `inc`: adds one to the stored count (storage key `count`, decimal) and replies
//!   the new value in decimal;
//! - `get`: replies the count (`0` if never set);
//! - anything else: `Err("unknown command: …")`.

use airssys_sdk::prelude::*;

/// Storage key holding the count as decimal text.
const COUNT: &str = "count";

/// A persistent counter.
struct Counter;

impl Component for Counter {
    fn handle_message(msg: Message) -> HandlerResult {
        let text = msg.text();
        match text.trim() {
            "inc" => {
                let n = storage::get_u64(COUNT)?
                    .unwrap_or(0)
                    .checked_add(1)
                    .ok_or("count overflow")?;
                storage::set_u64(COUNT, n)?;
                Ok(Some(n.to_string().into_bytes()))
            }
            "get" => {
                let n = storage::get_u64(COUNT)?.unwrap_or(0);
                Ok(Some(n.to_string().into_bytes()))
            }
            other => Err(format!("unknown command: {other}")),
        }
    }
}

airssys_sdk::export_component!(Counter);
