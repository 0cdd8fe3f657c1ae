//! The `ping` example component: sends requests to others and remembers the answer.
//!
//! Commands (UTF-8 text, words separated by whitespace):
//! - `ping TARGET [TIMEOUT_MS]`: sends the durable request `get` to `TARGET`
//!   (timeout 2000 ms unless given), clears `last`, replies `sent <request-id>`;
//! - `ping-fast TARGET [TIMEOUT_MS]`: the same with fast delivery;
//! - `last`: replies what the latest callback stored (`none` if nothing yet);
//! - `send TARGET TEXT`: sends `TEXT` (the rest of the payload) fire-and-forget,
//!   durably, and replies `ok`;
//! - `blast N TARGET [fast|durable] [TEXT]`: sends `N` fire-and-forget messages `TEXT`
//!   (default `blast`) to `TARGET` (durable unless `fast`) in this one handler and
//!   replies `ok` (the throughput benchmark's workload; the host caps a handler at
//!   1,024 messages).
//!
//! The callback stores under key `last` the reply text, or the error's name
//! (`timeout`, `not-found`, `mailbox-full`), or `name: text` for errors that carry
//! text (`rejected: …`, `trapped: …`, `unavailable: …`). If the host refuses a
//! `ping` at the call (a send error, so no callback will come), `last` gets the send
//! error's name too and the reply is `send-failed <name>`.

use airssys_sdk::prelude::*;

/// Storage key holding the latest outcome.
const LAST: &str = "last";
/// Timeout of a `ping` that names none.
const DEFAULT_TIMEOUT_MS: u32 = 2000;

/// Sends requests and records what comes back.
struct Ping;

impl Component for Ping {
    fn handle_message(msg: Message) -> HandlerResult {
        let text = msg.text();
        let text = text.trim();
        let (cmd, rest) = split_word(text);
        match cmd {
            "ping" => ping(rest, Delivery::Durable),
            "ping-fast" => ping(rest, Delivery::Fast),
            "last" => Ok(Some(storage::get(LAST).unwrap_or_else(|| b"none".to_vec()))),
            "send" => {
                let (target, body) = split_word(rest);
                if target.is_empty() {
                    return Err("usage: send TARGET TEXT".to_string());
                }
                send(target, body)?;
                Ok(Some(b"ok".to_vec()))
            }
            "blast" => blast(rest),
            _ => Err(format!("unknown command: {text}")),
        }
    }

    fn handle_callback(
        _id: RequestId,
        outcome: Result<Vec<u8>, RequestError>,
    ) -> Result<(), String> {
        match outcome {
            Ok(reply) => storage::set(LAST, reply)?,
            Err(e) => storage::set_string(LAST, &e.describe())?,
        }
        Ok(())
    }
}

/// `ping TARGET [TIMEOUT_MS]` with the given delivery.
fn ping(args: &str, delivery: Delivery) -> HandlerResult {
    let mut words = args.split_whitespace();
    let (Some(target), timeout, None) = (words.next(), words.next(), words.next()) else {
        return Err("usage: ping TARGET [TIMEOUT_MS]".to_string());
    };
    let timeout_ms = match timeout {
        None => DEFAULT_TIMEOUT_MS,
        Some(t) => t
            .parse::<u32>()
            .map_err(|_| format!("invalid timeout (want milliseconds as u32): {t}"))?,
    };
    match request_with(target, "get", timeout_ms, delivery) {
        Ok(id) => {
            storage::delete(LAST);
            Ok(Some(format!("sent {id}").into_bytes()))
        }
        Err(e) => {
            // No callback will follow: record the refusal as the outcome.
            storage::set_string(LAST, &e.describe())?;
            Ok(Some(format!("send-failed {}", e.describe()).into_bytes()))
        }
    }
}

/// `blast N TARGET [fast|durable] [TEXT]`.
fn blast(args: &str) -> HandlerResult {
    let (n, rest) = split_word(args);
    let (target, rest) = split_word(rest);
    if n.is_empty() || target.is_empty() {
        return Err("usage: blast N TARGET [fast|durable] [TEXT]".to_string());
    }
    let n: u32 = n
        .parse()
        .map_err(|_| format!("invalid count (want a decimal u32): {n}"))?;
    let (delivery, text) = match split_word(rest) {
        ("fast", text) => (Delivery::Fast, text),
        ("durable", text) => (Delivery::Durable, text),
        _ => (Delivery::Durable, rest),
    };
    let text = if text.is_empty() { "blast" } else { text };
    for _ in 0..n {
        send_with(target, text, delivery)?;
    }
    Ok(Some(b"ok".to_vec()))
}

/// Splits off the first whitespace-separated word; the rest is trimmed at the start.
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

airssys_sdk::export_component!(Ping);
