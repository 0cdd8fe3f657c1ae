//! The envelope every message travels in, and its encoding (bincode 2 with a version
//! byte) for the outbox and, later, the wire.

use crate::api::Delivery;
use serde::{Deserialize, Serialize};

/// Encoding version of [`Envelope`]; the first byte of every encoded envelope.
pub const ENVELOPE_VERSION: u8 = 3;
/// The previous encoding (no sender incarnation), still read from outboxes it wrote.
const ENVELOPE_VERSION_2: u8 = 2;

/// Who sent a message, and where its reply goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Address {
    /// A component, by name.
    Component(String),
    /// A client of the admin API; replies go back through the node's waiting table.
    External,
}

impl Address {
    /// Key segment used for this address in the system keyspace. `@external` cannot
    /// clash with a component name (`@` is not allowed in names).
    pub fn key_segment(&self) -> &str {
        match self {
            Address::Component(name) => name,
            Address::External => "@external",
        }
    }
}

/// Why a request got no reply; mirrors the WIT `request-error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestErr {
    NotFound,
    Timeout,
    MailboxFull,
    Rejected(String),
    Trapped(String),
    Unavailable(String),
    /// An idempotency key came again with another payload (appended last: the stored
    /// encodings of the variants above are unchanged).
    KeyReused(String),
}

impl RequestErr {
    /// The error's name as users see it.
    pub fn name(&self) -> &'static str {
        match self {
            RequestErr::NotFound => "not-found",
            RequestErr::Timeout => "timeout",
            RequestErr::MailboxFull => "mailbox-full",
            RequestErr::Rejected(_) => "rejected",
            RequestErr::Trapped(_) => "trapped",
            RequestErr::Unavailable(_) => "unavailable",
            RequestErr::KeyReused(_) => "key-reused",
        }
    }
}

impl std::fmt::Display for RequestErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestErr::Rejected(t)
            | RequestErr::Trapped(t)
            | RequestErr::Unavailable(t)
            | RequestErr::KeyReused(t) => {
                write!(f, "{}: {t}", self.name())
            }
            _ => f.write_str(self.name()),
        }
    }
}

/// What a message carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// Fire-and-forget.
    Message { payload: Vec<u8> },
    /// A request; the reply goes to the envelope's `from` with the same id.
    Request {
        id: u64,
        payload: Vec<u8>,
        /// Wall-clock deadline, ms since the Unix epoch.
        deadline_ms: u64,
    },
    /// The answer to request `id` sent earlier by the envelope's `to`.
    Reply {
        id: u64,
        outcome: Result<Vec<u8>, RequestErr>,
    },
    /// An external client's request with an idempotency key: run once per key, its
    /// outcome stored with the handler's commit (appended last: the stored encodings of
    /// the variants above are unchanged).
    KeyedRequest {
        id: u64,
        payload: Vec<u8>,
        deadline_ms: u64,
        key: super::idempotency::RequestKey,
    },
}

impl Body {
    /// The id of a request (keyed or not): its sender waits for a reply under it.
    pub fn request_id(&self) -> Option<u64> {
        match self {
            Body::Request { id, .. } | Body::KeyedRequest { id, .. } => Some(*id),
            Body::Message { .. } | Body::Reply { .. } => None,
        }
    }
}

/// One message from `from` to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub from: Address,
    /// The incarnation of the sending component (0 for an external client): its receiver
    /// keeps its de-dup mark per incarnation, so a sender removed and installed again, whose
    /// numbering starts afresh, is never taken for a repeat of the one before.
    pub from_incarnation: u64,
    pub to: String,
    pub delivery: Delivery,
    /// For durable messages: the sender's sequence number (FIFO and de-duplication per
    /// sender and receiver). 0 for fast messages.
    pub seq: u64,
    /// The node whose outbox holds a durable message (0: this node). A receiver on
    /// another node acknowledges its consumption there.
    pub origin: u64,
    /// W3C `traceparent` of the span that sent it (empty when traces are not exported):
    /// each hop's span is its child, so a request across nodes is one trace.
    pub trace: String,
    pub body: Body,
}

/// [`Envelope`] as version 2 wrote it.
#[derive(Deserialize)]
struct EnvelopeV2 {
    from: Address,
    to: String,
    delivery: Delivery,
    seq: u64,
    origin: u64,
    trace: String,
    body: Body,
}

impl From<EnvelopeV2> for Envelope {
    fn from(v: EnvelopeV2) -> Envelope {
        Envelope {
            from: v.from,
            from_incarnation: 0,
            to: v.to,
            delivery: v.delivery,
            seq: v.seq,
            origin: v.origin,
            trace: v.trace,
            body: v.body,
        }
    }
}

fn decode_exact<T: serde::de::DeserializeOwned>(rest: &[u8]) -> Result<T, DecodeError> {
    let (value, used) = bincode::serde::decode_from_slice(rest, bincode_config())
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if used != rest.len() {
        return Err(DecodeError::Malformed(format!(
            "{} trailing bytes",
            rest.len() - used
        )));
    }
    Ok(value)
}

/// Why bytes do not decode to an envelope.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty envelope")]
    Empty,
    #[error("envelope version {0} is not supported (this node speaks {ENVELOPE_VERSION})")]
    Version(u8),
    #[error("malformed envelope: {0}")]
    Malformed(String),
}

fn bincode_config() -> impl bincode::config::Config {
    // A hard limit so a hostile length prefix inside cannot make us allocate gigabytes.
    bincode::config::standard().with_limit::<{ 80 << 20 }>()
}

impl Envelope {
    /// Where a durable envelope is stored until its receiver consumes it.
    pub fn outbox_key(&self) -> Vec<u8> {
        super::keys::outbox(&self.to, self.from.key_segment(), self.seq)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![ENVELOPE_VERSION];
        // Encoding plain owned data into a Vec cannot fail short of allocation failure.
        if let Err(e) = bincode::serde::encode_into_std_write(self, &mut out, bincode_config()) {
            tracing::error!("envelope encoding failed: {e}");
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
        let (&version, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
        match version {
            ENVELOPE_VERSION => decode_exact(rest),
            ENVELOPE_VERSION_2 => decode_exact::<EnvelopeV2>(rest).map(Envelope::from),
            other => Err(DecodeError::Version(other)),
        }
    }

    /// True when the receiver must consume this message in a commit.
    pub fn is_durable(&self) -> bool {
        self.delivery == Delivery::Durable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope {
            from: Address::Component("ping".into()),
            from_incarnation: 12,
            to: "counter".into(),
            delivery: Delivery::Durable,
            seq: 7,
            origin: 3,
            trace: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            body: Body::Request {
                id: 3,
                payload: b"get".to_vec(),
                deadline_ms: 1_700_000_000_000,
            },
        }
    }

    #[test]
    fn roundtrip() {
        let env = sample();
        assert_eq!(Envelope::decode(&env.encode()).unwrap(), env);
    }

    #[test]
    fn version_2_envelopes_still_decode_with_incarnation_0() {
        #[derive(Serialize)]
        struct V2<'a> {
            from: &'a Address,
            to: &'a str,
            delivery: Delivery,
            seq: u64,
            origin: u64,
            trace: &'a str,
            body: &'a Body,
        }
        let env = sample();
        let mut bytes = vec![ENVELOPE_VERSION_2];
        bincode::serde::encode_into_std_write(
            V2 {
                from: &env.from,
                to: &env.to,
                delivery: env.delivery,
                seq: env.seq,
                origin: env.origin,
                trace: &env.trace,
                body: &env.body,
            },
            &mut bytes,
            bincode_config(),
        )
        .unwrap();
        let old = Envelope::decode(&bytes).unwrap();
        assert_eq!(
            old,
            Envelope {
                from_incarnation: 0,
                ..env
            }
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(Envelope::decode(&[]), Err(DecodeError::Empty)));
        assert!(matches!(
            Envelope::decode(&[9, 1, 2]),
            Err(DecodeError::Version(9))
        ));
        let mut bytes = sample().encode();
        bytes.truncate(bytes.len() - 2);
        assert!(matches!(
            Envelope::decode(&bytes),
            Err(DecodeError::Malformed(_))
        ));
        // A huge claimed length must not allocate.
        let hostile = [
            ENVELOPE_VERSION,
            0,
            6,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
        ];
        assert!(Envelope::decode(&hostile).is_err());
        let mut trailing = sample().encode();
        trailing.push(0);
        assert!(matches!(
            Envelope::decode(&trailing),
            Err(DecodeError::Malformed(_))
        ));
    }
}
