//! What nodes say to each other's node layer, in bincode: calls to a component's owner
//! (describe, list, send, request, upgrade; one QUIC call each) and lane messages (envelopes, many
//! and ordered). A garbled or hostile body is an error, never a panic.

use crate::api::{ApiError, ComponentInfo, Delivery};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum AppCall {
    Describe {
        name: String,
    },
    List,
    Send {
        name: String,
        payload: Vec<u8>,
        delivery: Delivery,
        /// `traceparent` of the caller's span (empty: none).
        trace: String,
    },
    Request {
        name: String,
        payload: Vec<u8>,
        timeout_ms: u64,
        delivery: Delivery,
        trace: String,
    },
    /// Switch the component to new code (the owner runs its migration).
    Upgrade(Box<super::upgrade::UpgradeCall>),
    /// A request with an idempotency key (the client's, or one the forwarding node chose
    /// so that it may send the request again to a new owner). Appended last: the other
    /// calls keep their encoding.
    KeyedRequest {
        name: String,
        payload: Vec<u8>,
        timeout_ms: u64,
        delivery: Delivery,
        trace: String,
        key: crate::messaging::idempotency::RequestKey,
    },
    /// A durable send with an idempotency key (the client's, or the forwarding node's):
    /// accepted once per key, so the forwarding node may send it again to a new owner.
    /// Appended last, like `KeyedRequest`.
    KeyedSend {
        name: String,
        payload: Vec<u8>,
        delivery: Delivery,
        trace: String,
        key: crate::messaging::idempotency::RequestKey,
    },
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum AppAnswer {
    /// Boxed: a component's description is much larger than the other answers.
    Info(Box<Result<ComponentInfo, ApiError>>),
    List(Vec<ComponentInfo>),
    Sent(Result<(), ApiError>),
    Reply(Result<Vec<u8>, ApiError>),
    /// The generation the component runs at after its upgrade.
    Upgraded(Result<u64, ApiError>),
}

/// One frame on a lane.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LaneMsg {
    /// An encoded [`crate::messaging::Envelope`]. (Consumption needs no acknowledgement:
    /// the receiver's commit deletes the outbox entry on every node.)
    Deliver(Vec<u8>),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ 80 << 20 }>()
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, config()).unwrap_or_default()
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    bincode::serde::decode_from_slice(bytes, config())
        .map(|(m, _)| m)
        .map_err(|e| e.to_string())
}

macro_rules! bincode_codec {
    ($($t:ty),*) => {$(
        impl $t {
            pub fn encode(&self) -> Vec<u8> {
                encode(self)
            }

            pub fn decode(bytes: &[u8]) -> Result<$t, String> {
                decode(bytes)
            }
        }
    )*};
}

bincode_codec!(AppCall, AppAnswer, LaneMsg);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_messages_roundtrip_and_garbage_is_an_error() {
        let m = LaneMsg::Deliver(vec![1, 2, 3]);
        assert_eq!(LaneMsg::decode(&m.encode()).unwrap(), m);
        assert!(LaneMsg::decode(&[200, 1, 2, 3]).is_err());
        assert!(LaneMsg::decode(&[]).is_err());
    }

    #[test]
    fn owner_calls_and_answers_roundtrip_and_garbage_is_an_error() {
        let call = AppCall::Request {
            name: "c".into(),
            payload: vec![0, 255],
            timeout_ms: 3,
            delivery: Delivery::Durable,
            trace: String::new(),
        };
        assert_eq!(AppCall::decode(&call.encode()).unwrap(), call);
        let keyed = AppCall::KeyedSend {
            name: "c".into(),
            payload: vec![1],
            delivery: Delivery::Durable,
            trace: String::new(),
            key: crate::messaging::idempotency::RequestKey::for_forwarding(4),
        };
        assert_eq!(AppCall::decode(&keyed.encode()).unwrap(), keyed);
        let answer = AppAnswer::Reply(Err(ApiError::new(crate::api::ErrorKind::Timeout, "late")));
        assert_eq!(AppAnswer::decode(&answer.encode()).unwrap(), answer);
        // Every description crosses, with its optional fields empty or set (a field skipped
        // when empty would leave bincode reading the next one in its place).
        let info = ComponentInfo {
            name: "c".into(),
            sha256: "ab".repeat(32),
            size_bytes: 10,
            limits: crate::config::DEFAULT_LIMITS,
            node_id: 2,
            generation: 7,
            state: crate::api::ComponentState::Failed {
                reason: "limits".into(),
                error: Some(crate::api::ErrorKind::InvalidComponent),
            },
            mailbox_depth: 0,
            storage_bytes: 0,
            restarts: 0,
            installed_at_ms: 1,
            log_lines_dropped: 0,
            upgraded_at_ms: None,
            previous: None,
        };
        let upgraded = ComponentInfo {
            upgraded_at_ms: Some(5),
            previous: Some(crate::api::PreviousVersion {
                sha256: "cd".repeat(32),
                size_bytes: 9,
                limits: crate::config::DEFAULT_LIMITS,
                since_ms: 1,
            }),
            ..info.clone()
        };
        for i in [info, upgraded] {
            let answer = AppAnswer::Info(Box::new(Ok(i.clone())));
            assert_eq!(AppAnswer::decode(&answer.encode()).unwrap(), answer);
            let list = AppAnswer::List(vec![i.clone(), i]);
            assert_eq!(AppAnswer::decode(&list.encode()).unwrap(), list);
        }
        assert!(AppCall::decode(&[9, 9, 9]).is_err());
        assert!(AppAnswer::decode(b"{\"List\":[]}").is_err());
    }
}
