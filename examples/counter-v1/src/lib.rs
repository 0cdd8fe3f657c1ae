//! The `counter-v1` example component: the first version of `counter`, built without the
//! SDK against the frozen `airssys:component@0.1.0` contract (`wit/airssys.wit` in this
//! crate). It shows two things: a component built against 0.1.0 runs unchanged on a host
//! that speaks 0.1.1, and an upgrade whose new code rewrites what the old code stored
//! (`counter`'s `migrate` moves `total` to `count` and `applied/ID` to `req/ID`).
//!
//! Commands (UTF-8 text, surrounding whitespace ignored), the same replies as `counter`:
//! - `inc`: adds one to the count (storage key `total`, decimal) and replies the new value;
//! - `inc ID`: the same, and counts how many times this request was applied under
//!   `applied/ID`;
//! - `get`: replies the count (`0` if never set);
//! - `times ID`: replies how many times `inc ID` was applied;
//! - anything else: an error.

wit_bindgen::generate!({
    world: "component",
    path: "wit",
});

use airssys::component::storage;
use exports::airssys::component::guest::{Guest, Message, Payload, RequestError, RequestId};

/// Storage key of the count (decimal text).
const TOTAL: &str = "total";
/// Prefix of the per-request application counts.
const APPLIED: &str = "applied/";

struct CounterV1;

fn read(key: &str) -> Result<u64, String> {
    match storage::get(key) {
        None => Ok(0),
        Some(bytes) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| format!("{key} does not hold a number")),
    }
}

fn bump(key: &str) -> Result<u64, String> {
    let n = read(key)?.checked_add(1).ok_or("count overflow")?;
    storage::set(key, n.to_string().as_bytes()).map_err(|e| format!("{e:?}"))?;
    Ok(n)
}

fn request_id(id: &str) -> Result<&str, String> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    ok.then_some(id)
        .ok_or_else(|| format!("bad request id {id:?}"))
}

impl Guest for CounterV1 {
    fn init() -> Result<(), String> {
        Ok(())
    }

    fn handle_message(msg: Message) -> Result<Option<Payload>, String> {
        let text = String::from_utf8_lossy(&msg.payload).into_owned();
        let mut words = text.split_whitespace();
        let reply = match (words.next(), words.next(), words.next()) {
            (Some("inc"), id, None) => {
                if let Some(id) = id {
                    bump(&format!("{APPLIED}{}", request_id(id)?))?;
                }
                bump(TOTAL)?
            }
            (Some("get"), None, None) => read(TOTAL)?,
            (Some("times"), Some(id), None) => read(&format!("{APPLIED}{}", request_id(id)?))?,
            _ => return Err(format!("unknown command: {}", text.trim())),
        };
        Ok(Some(reply.to_string().into_bytes()))
    }

    fn handle_callback(
        _id: RequestId,
        _outcome: Result<Payload, RequestError>,
    ) -> Result<(), String> {
        Ok(())
    }
}

export!(CounterV1);
