//! The `account` example component: a balance that moves between accounts without
//! ever being created or lost.
//!
//! Commands (UTF-8 text, words separated by whitespace):
//! - `deposit N`: adds `N` to the balance, replies the new balance;
//! - `balance`: replies the balance (`0` initially);
//! - `transfer N TARGET`: if the balance is at least `N`, subtracts `N` and sends
//!   (durably, in the same handler, so both happen or neither) `deposit N` to
//!   `TARGET`, replying `ok`; otherwise replies `insufficient` and writes nothing.
//!
//! The balance is storage key `balance`, a decimal `u64`. Malformed input is an
//! `Err` with a message saying what was expected.

use airssys_sdk::prelude::*;

/// Storage key holding the balance as decimal text.
const BALANCE: &str = "balance";

/// One account.
struct Account;

impl Component for Account {
    fn handle_message(msg: Message) -> HandlerResult {
        let text = msg.text();
        let words: Vec<&str> = text.split_whitespace().collect();
        match words.as_slice() {
            ["deposit", n] => {
                let amount = parse_amount(n)?;
                let balance = balance()?
                    .checked_add(amount)
                    .ok_or("deposit would overflow the balance")?;
                storage::set_u64(BALANCE, balance)?;
                Ok(Some(balance.to_string().into_bytes()))
            }
            ["balance"] => Ok(Some(balance()?.to_string().into_bytes())),
            ["transfer", n, target] => {
                let amount = parse_amount(n)?;
                let balance = balance()?;
                if balance < amount {
                    return Ok(Some(b"insufficient".to_vec()));
                }
                storage::set_u64(BALANCE, balance - amount)?;
                send(target, format!("deposit {amount}"))?;
                Ok(Some(b"ok".to_vec()))
            }
            ["deposit", ..] => Err("usage: deposit N".to_string()),
            ["balance", ..] => Err("usage: balance".to_string()),
            ["transfer", ..] => Err("usage: transfer N TARGET".to_string()),
            _ => Err(format!(
                "unknown command: {} (expected deposit N, balance or transfer N TARGET)",
                text.trim()
            )),
        }
    }
}

/// The stored balance, 0 if never set.
fn balance() -> Result<u64, String> {
    Ok(storage::get_u64(BALANCE)?.unwrap_or(0))
}

/// Parses an amount: a decimal `u64`.
fn parse_amount(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .map_err(|_| format!("invalid amount (want a decimal u64): {s}"))
}

airssys_sdk::export_component!(Account);
