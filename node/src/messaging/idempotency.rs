//! Idempotency keys: what an external request's key means, how its outcome is stored
//! with the handler's commit, and how a repeat of the key is judged.
//!
//! A keyed request's outcome (the reply, or the handler's error) is written in the same
//! commit as the handler's effects, under `ik/<component>/<key>`, with an expiry index
//! `ix/<component>/<expires:be64><key>` so the oldest records can be pruned in key order.
//! A later request with the same key is answered from the record without running the
//! handler; with another payload it is refused (`key-reused`). Keys come from the client
//! (`Idempotency-Key`, kept [`CLIENT_RETENTION_MS`]) or from the node that forwards a
//! request to the component's owner (kept [`FORWARD_RETENTION_MS`], only long enough for
//! that node to send the request again to a new owner after a failover).
//!
//! Plain data and pure decisions; the actor reads and writes the records at its edge.

use super::envelope::RequestErr;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How long a client's key is remembered: a day, as long as a client may reasonably
/// retry (Stripe and Restate keep theirs a day too).
pub const CLIENT_RETENTION_MS: u64 = 24 * 60 * 60 * 1000;
/// How long a key the forwarding node chose is remembered: it only needs to outlive the
/// request's own deadline and a failover.
pub const FORWARD_RETENTION_MS: u64 = 10 * 60 * 1000;
/// Longest key a client may choose.
pub const MAX_KEY_LEN: usize = 128;
/// At most this many expired records are pruned by one commit (the rest by later ones).
pub const PRUNE_BATCH: usize = 64;
/// Prefix of the keys forwarding nodes choose (a client's key may not start with it).
const FORWARD_PREFIX: &str = "~fwd:";

/// The key a request carries, and who chose it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestKey {
    pub key: String,
    /// Chosen by the client (kept a day, recorded even when the handler commits nothing)
    /// rather than by a forwarding node.
    pub client: bool,
}

impl RequestKey {
    /// A client's key, checked.
    pub fn from_client(key: &str) -> Result<RequestKey, String> {
        validate_client_key(key)?;
        Ok(RequestKey {
            key: key.to_string(),
            client: true,
        })
    }

    /// A key for one forwarded request, unique to the forwarding node and the moment.
    pub fn for_forwarding(node: u64) -> RequestKey {
        RequestKey {
            key: format!("{FORWARD_PREFIX}{node}:{:032x}", rand::random::<u128>()),
            client: false,
        }
    }

    /// Checks a key that came from a peer: a client's by the client rule, a forwarding
    /// node's by its own shape.
    pub fn check(&self) -> Result<(), String> {
        if self.client {
            return validate_client_key(&self.key);
        }
        match self.key.strip_prefix(FORWARD_PREFIX) {
            Some(rest) if !rest.is_empty() && validate_client_key(rest).is_ok() => Ok(()),
            _ => Err(format!("{:?} is not a forwarding key", self.key)),
        }
    }

    /// How long its record is kept.
    pub fn retention_ms(&self) -> u64 {
        if self.client {
            CLIENT_RETENTION_MS
        } else {
            FORWARD_RETENTION_MS
        }
    }
}

/// A client key: 1 to [`MAX_KEY_LEN`] characters of `A-Z a-z 0-9 . _ : -` (what fits an
/// HTTP header and a storage key unchanged), not starting with `~`.
pub fn validate_client_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(format!(
            "an idempotency key has 1 to {MAX_KEY_LEN} characters; this one has {}",
            key.len()
        ));
    }
    if let Some(bad) = key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(format!(
            "an idempotency key may hold letters, digits and . _ : - only; {bad:?} is not allowed"
        ));
    }
    Ok(())
}

/// SHA-256 of a request's payload: what a repeat must match.
pub fn digest(payload: &[u8]) -> [u8; 32] {
    Sha256::digest(payload).into()
}

/// What a repeat of a keyed durable send must match: its payload, in a domain of its own
/// so that a request under the same key and payload is `key-reused`, not answered with
/// the send's empty outcome.
pub fn send_digest(payload: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(b"airssys-send\0");
    hash.update(payload);
    hash.finalize().into()
}

/// The outcome a keyed send records: accepted (committed to the receiver's queue).
pub const SENT: Result<Vec<u8>, RequestErr> = Ok(Vec::new());

/// A stored outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub digest: [u8; 32],
    pub outcome: Result<Vec<u8>, RequestErr>,
    pub expires_ms: u64,
}

const RECORD_VERSION: u8 = 1;

fn config() -> impl bincode::config::Config {
    // Bounded: a record holds at most one reply (capped at the payload cap).
    bincode::config::standard().with_limit::<{ 80 << 20 }>()
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![RECORD_VERSION];
        if let Err(e) = bincode::serde::encode_into_std_write(self, &mut out, config()) {
            tracing::error!("idempotency record encoding failed: {e}");
        }
        out
    }

    /// `None` for bytes no build wrote (treated as no record: the request runs).
    pub fn decode(bytes: &[u8]) -> Option<Record> {
        let (&version, rest) = bytes.split_first()?;
        if version != RECORD_VERSION {
            return None;
        }
        let (record, used): (Record, usize) =
            bincode::serde::decode_from_slice(rest, config()).ok()?;
        (used == rest.len()).then_some(record)
    }
}

/// What to do with a keyed request, given the record found under its key.
#[derive(Debug, PartialEq, Eq)]
pub enum Judgement {
    /// No live record: run the handler and record its outcome.
    Run,
    /// The same request again: answer what the first attempt answered.
    Repeat(Result<Vec<u8>, RequestErr>),
    /// The key was used for another payload.
    Reused,
}

/// Judges a keyed request with payload digest `digest` at time `now_ms`. An expired
/// record (not pruned yet) counts as none.
pub fn judge(found: Option<&Record>, digest: &[u8; 32], now_ms: u64) -> Judgement {
    match found {
        Some(r) if r.expires_ms > now_ms => {
            if &r.digest == digest {
                Judgement::Repeat(r.outcome.clone())
            } else {
                Judgement::Reused
            }
        }
        _ => Judgement::Run,
    }
}

/// The error a reused key gets.
pub fn reused(key: &str) -> RequestErr {
    RequestErr::KeyReused(format!(
        "idempotency key {key:?} was used before with another payload; use a new key for a new request"
    ))
}

/// What a keyed request's transaction writes besides its effects: the record (when the
/// key is the client's, or the transaction commits anything anyway) and the pruning of
/// expired records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToRecord {
    pub key: RequestKey,
    pub digest: [u8; 32],
    /// When the handler began (the record expires its retention after that).
    pub at_ms: u64,
    /// Expired records (expiry, key) this transaction deletes.
    pub expired: Vec<(u64, String)>,
}

/// Whether an outcome is the request's own (kept for its repeats): a reply, or the
/// handler's error. `unavailable` and the like say the handler did not run to an end,
/// so a repeat must run it.
pub fn is_final(outcome: &Result<Vec<u8>, RequestErr>) -> bool {
    matches!(
        outcome,
        Ok(_) | Err(RequestErr::Rejected(_) | RequestErr::Trapped(_))
    )
}

impl ToRecord {
    pub fn record(&self, outcome: Result<Vec<u8>, RequestErr>) -> Record {
        Record {
            digest: self.digest,
            outcome,
            expires_ms: self.at_ms.saturating_add(self.key.retention_ms()),
        }
    }
}

/// The storage writes that keep `record` under `key` for component `name` and prune the
/// `expired` records (expiry, key) with it: what a keyed commit adds to its batch.
pub fn record_writes(
    name: &str,
    key: &str,
    record: &Record,
    expired: &[(u64, String)],
) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let mut writes = vec![
        (super::keys::idem(name, key), Some(record.encode())),
        (
            super::keys::idem_expiry(name, record.expires_ms, key),
            Some(Vec::new()),
        ),
    ];
    for (expires, old) in expired {
        if old != key {
            writes.push((super::keys::idem(name, old), None));
        }
        writes.push((super::keys::idem_expiry(name, *expires, old), None));
    }
    writes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_gets_the_first_outcome_and_another_payload_is_refused() {
        let first = digest(b"inc");
        let record = Record {
            digest: first,
            outcome: Ok(b"7".to_vec()),
            expires_ms: 1_000,
        };
        assert_eq!(
            judge(Some(&record), &first, 999),
            Judgement::Repeat(Ok(b"7".to_vec()))
        );
        assert_eq!(
            judge(Some(&record), &digest(b"dec"), 999),
            Judgement::Reused
        );
        // Expired, pruned or never written: the request runs.
        assert_eq!(judge(Some(&record), &first, 1_000), Judgement::Run);
        assert_eq!(judge(None, &first, 0), Judgement::Run);
    }

    #[test]
    fn a_handler_error_is_an_outcome_too() {
        let to = ToRecord {
            key: RequestKey::from_client("k-1").expect("valid"),
            digest: digest(b"x"),
            at_ms: 5,
            expired: Vec::new(),
        };
        let rec = to.record(Err(RequestErr::Rejected("no".into())));
        assert_eq!(rec.expires_ms, 5 + CLIENT_RETENTION_MS);
        assert_eq!(Record::decode(&rec.encode()), Some(rec.clone()));
        assert_eq!(
            judge(Some(&rec), &digest(b"x"), 6),
            Judgement::Repeat(Err(RequestErr::Rejected("no".into())))
        );
        assert!(is_final(&Ok(Vec::new())));
        assert!(is_final(&Err(RequestErr::Trapped("t".into()))));
        assert!(!is_final(&Err(RequestErr::Unavailable("u".into()))));
        assert!(!is_final(&Err(RequestErr::Timeout)));
    }

    #[test]
    fn a_send_and_a_request_under_one_key_are_different_payloads() {
        assert_ne!(send_digest(b"inc"), digest(b"inc"));
        assert_eq!(send_digest(b"inc"), send_digest(b"inc"));
        let record = Record {
            digest: send_digest(b"inc"),
            outcome: SENT,
            expires_ms: 10,
        };
        assert_eq!(judge(Some(&record), &digest(b"inc"), 1), Judgement::Reused);
        assert_eq!(
            judge(Some(&record), &send_digest(b"inc"), 1),
            Judgement::Repeat(SENT)
        );
    }

    #[test]
    fn records_that_do_not_decode_are_none() {
        assert_eq!(Record::decode(b""), None);
        assert_eq!(Record::decode(&[9, 1, 2]), None);
        let mut bytes = Record {
            digest: [0; 32],
            outcome: Ok(Vec::new()),
            expires_ms: 1,
        }
        .encode();
        bytes.push(0);
        assert_eq!(Record::decode(&bytes), None, "trailing bytes");
    }

    #[test]
    fn client_keys_are_checked_and_forwarding_keys_kept_apart() {
        assert!(RequestKey::from_client("order-42:retry.1_a").is_ok());
        for bad in ["", "a/b", "héllo", "~fwd:1:x", "a b"] {
            assert!(RequestKey::from_client(bad).is_err(), "{bad:?}");
        }
        assert!(RequestKey::from_client(&"k".repeat(MAX_KEY_LEN)).is_ok());
        assert!(RequestKey::from_client(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
        let a = RequestKey::for_forwarding(3);
        let b = RequestKey::for_forwarding(3);
        assert_ne!(a.key, b.key);
        assert!(!a.client && a.key.starts_with("~fwd:3:"));
        assert!(a.check().is_ok());
        let forged = RequestKey {
            key: "~fwd:1/x".into(),
            client: false,
        };
        assert!(forged.check().is_err());
        let unmarked = RequestKey {
            key: "plain".into(),
            client: false,
        };
        assert!(unmarked.check().is_err());
        assert_eq!(a.retention_ms(), FORWARD_RETENTION_MS);
    }
}
