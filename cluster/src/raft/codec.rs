//! How Raft records are stored: bincode 2 (serde) values under `raft/…` keys of the
//! node's system keyspace.

use serde::de::DeserializeOwned;
use serde::Serialize;

pub const LOG_PREFIX: &[u8] = b"raft/log/";
pub const VOTE_KEY: &[u8] = b"raft/vote";
pub const COMMITTED_KEY: &[u8] = b"raft/committed";
pub const PURGED_KEY: &[u8] = b"raft/purged";
pub const SM_META_KEY: &[u8] = b"raft/sm/meta";
pub const SM_COMPONENT_PREFIX: &[u8] = b"raft/sm/c/";
pub const SM_VERSIONS_PREFIX: &[u8] = b"raft/sm/v/";
/// Added to an entry's index to make an install's generation (u64 LE; absent: 0). A node
/// restored from a backup starts a new log at index 1; its base is the backup's index, so a
/// generation is never given twice under one name across the restore.
pub const SM_GENERATION_BASE_KEY: &[u8] = b"raft/sm/base";
pub const BINARY_PREFIX: &[u8] = b"raft/bin/";
pub const SNAPSHOT_KEY: &[u8] = b"raft/snap";

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| e.to_string())
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    bincode::serde::decode_from_slice(bytes, config())
        .map(|(v, _)| v)
        .map_err(|e| e.to_string())
}

pub fn log_key(index: u64) -> Vec<u8> {
    [LOG_PREFIX, &index.to_be_bytes()].concat()
}

pub fn component_key(name: &str) -> Vec<u8> {
    [SM_COMPONENT_PREFIX, name.as_bytes()].concat()
}

pub fn versions_key(name: &str) -> Vec<u8> {
    [SM_VERSIONS_PREFIX, name.as_bytes()].concat()
}

pub fn binary_key(sha256: &str) -> Vec<u8> {
    [BINARY_PREFIX, sha256.as_bytes()].concat()
}

/// The first key after every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::{Command, ComponentSpec, NodeInfo, TypeConfig};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership, Vote};
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn raft_records_roundtrip_through_bincode() {
        let log_id = LogId::new(CommittedLeaderId::new(3, 1), 42);
        let mut nodes = BTreeMap::new();
        nodes.insert(
            1u64,
            NodeInfo {
                peer_addr: "127.0.0.1:1".into(),
                admin_addr: "127.0.0.1:2".into(),
            },
        );
        let membership = Membership::new(vec![BTreeSet::from([1u64])], nodes);
        let entries: Vec<Entry<TypeConfig>> = vec![
            Entry {
                log_id,
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id,
                payload: EntryPayload::Membership(membership),
            },
            Entry {
                log_id,
                payload: EntryPayload::Normal(Command::Install {
                    spec: ComponentSpec {
                        name: "counter".into(),
                        sha256: "ab".into(),
                        size_bytes: 3,
                        config: b"{}".to_vec(),
                        installed_at_ms: 9,
                    },
                    owner: 2,
                    binary: vec![1, 2, 3],
                }),
            },
        ];
        for entry in entries {
            let back: Entry<TypeConfig> = decode(&encode(&entry).unwrap()).unwrap();
            assert_eq!(back, entry);
        }
        let vote = Vote::new_committed(4, 2);
        assert_eq!(decode::<Vote<u64>>(&encode(&vote).unwrap()).unwrap(), vote);
    }

    #[test]
    fn log_keys_sort_by_index() {
        assert!(log_key(2) < log_key(10));
        assert!(log_key(u64::MAX) < prefix_end(LOG_PREFIX));
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
    }
}
