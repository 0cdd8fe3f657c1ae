//! What nodes say to each other's node layer: admin calls forwarded to a component's
//! owner (JSON, small and rare) and lane messages (bincode: envelopes, many
//! and ordered).

use crate::api::{ApiError, ComponentInfo, Delivery};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
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
        #[serde(default)]
        trace: String,
    },
    Request {
        name: String,
        payload: Vec<u8>,
        timeout_ms: u64,
        delivery: Delivery,
        #[serde(default)]
        trace: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
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

impl LaneMsg {
    pub fn encode(&self) -> Vec<u8> {
        bincode::serde::encode_to_vec(self, config()).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<LaneMsg, String> {
        bincode::serde::decode_from_slice(bytes, config())
            .map(|(m, _)| m)
            .map_err(|e| e.to_string())
    }
}

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
}
