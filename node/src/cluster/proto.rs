//! What nodes say to each other's node layer, in bincode: calls to a component's owner
//! (describe, list, send, request; one QUIC call each) and lane messages (envelopes, many
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
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum AppAnswer {
    Info(Result<ComponentInfo, ApiError>),
    List(Vec<ComponentInfo>),
    Sent(Result<(), ApiError>),
    Reply(Result<Vec<u8>, ApiError>),
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
        let answer = AppAnswer::Reply(Err(ApiError::new(crate::api::ErrorKind::Timeout, "late")));
        assert_eq!(AppAnswer::decode(&answer.encode()).unwrap(), answer);
        assert!(AppCall::decode(&[9, 9, 9]).is_err());
        assert!(AppAnswer::decode(b"{\"List\":[]}").is_err());
    }
}
