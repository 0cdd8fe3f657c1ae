//! The `counter` example component.
//!
//! Commands (UTF-8 text, surrounding whitespace ignored):
//! - `inc`: adds one to the stored count (storage key `count`, decimal) and replies
//!   the new value in decimal;
//! - `inc ID`: the same, and also counts how many times this request was applied under
//!   `req/ID` (ID is 1 to 64 characters of `[A-Za-z0-9_.-]`), so a test can tell a request
//!   applied twice from two requests;
//! - `get`: replies the count (`0` if never set);
//! - `times ID`: replies how many times `inc ID` was applied (`0` if never);
//! - `tally`: replies one line `ID N` per recorded request id, sorted by id;
//! - anything else: `Err("unknown command: …")`.
//!
//! Upgrading `counter-v1` (which kept the count under `total` and request counts under
//! `applied/ID`) to this code moves them to `count` and `req/ID` in `migrate`; from any
//! other version the migration has nothing to do.

use airssys_sdk::prelude::*;

/// Storage key holding the count as decimal text.
const COUNT: &str = "count";
/// Prefix of the per-request application counts.
const REQ: &str = "req/";

/// Where `counter-v1` kept the count and the request counts.
const V1_TOTAL: &str = "total";
const V1_APPLIED: &str = "applied/";

/// A persistent counter.
struct Counter;

fn request_id(id: &str) -> Result<&str, String> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(id)
    } else {
        Err(format!("bad request id {id:?}"))
    }
}

fn bump(key: &str) -> Result<u64, String> {
    let n = storage::get_u64(key)?
        .unwrap_or(0)
        .checked_add(1)
        .ok_or("count overflow")?;
    storage::set_u64(key, n)?;
    Ok(n)
}

/// Moves `from` to `to` (adding to what `to` holds, so a half-done move cannot lose
/// counts; a failed migration applies nothing anyway).
fn move_count(from: &str, to: &str) -> Result<(), String> {
    if let Some(n) = storage::get_u64(from)? {
        let sum = storage::get_u64(to)?
            .unwrap_or(0)
            .checked_add(n)
            .ok_or("count overflow")?;
        storage::set_u64(to, sum)?;
        storage::delete(from);
    }
    Ok(())
}

impl Component for Counter {
    fn migrate(previous: PreviousVersion) -> Result<(), String> {
        let mut moved = 0;
        move_count(V1_TOTAL, COUNT)?;
        // Collected before any move: the moves change what a listing would see.
        let keys = storage::list_keys(V1_APPLIED);
        for key in keys {
            move_count(&key, &format!("{REQ}{}", &key[V1_APPLIED.len()..]))?;
            moved += 1;
        }
        log::info(format!(
            "migrated from {}: {moved} request counts moved",
            &previous.digest[..12.min(previous.digest.len())]
        ));
        Ok(())
    }

    fn handle_message(msg: Message) -> HandlerResult {
        let text = msg.text();
        let mut words = text.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("inc"), id, None) => {
                if let Some(id) = id {
                    bump(&format!("{REQ}{}", request_id(id)?))?;
                }
                let n = bump(COUNT)?;
                Ok(Some(n.to_string().into_bytes()))
            }
            (Some("get"), None, None) => {
                let n = storage::get_u64(COUNT)?.unwrap_or(0);
                Ok(Some(n.to_string().into_bytes()))
            }
            (Some("times"), Some(id), None) => {
                let key = format!("{REQ}{}", request_id(id)?);
                Ok(Some(
                    storage::get_u64(&key)?
                        .unwrap_or(0)
                        .to_string()
                        .into_bytes(),
                ))
            }
            (Some("tally"), None, None) => {
                let mut keys = storage::list_keys(REQ);
                keys.sort();
                let mut out = String::new();
                for key in keys {
                    let n = storage::get_u64(&key)?.unwrap_or(0);
                    out.push_str(&format!("{} {n}\n", &key[REQ.len()..]));
                }
                Ok(Some(out.into_bytes()))
            }
            _ => Err(format!("unknown command: {}", text.trim())),
        }
    }
}

airssys_sdk::export_component!(Counter);
