//! This crate's own records in the `sys` column family: per-component usage and placement,
//! under a reserved prefix (`0xFF 0xFF`) that [`Storage::commit`](crate::Storage::commit) refuses
//! to let the node write and that [`Storage::sys_scan_prefix`](crate::Storage::sys_scan_prefix)
//! hides.

use crate::{Placement, StorageError};

/// Every metadata key starts with this.
pub(crate) const RESERVED_PREFIX: &[u8] = b"\xff\xffairssys-storage/";
const USAGE: &[u8] = b"usage/";
const PLACEMENT: &[u8] = b"placement/";

pub(crate) fn is_reserved(key: &[u8]) -> bool {
    key.starts_with(&RESERVED_PREFIX[..2])
}

pub(crate) fn usage_key(component: &str) -> Vec<u8> {
    [RESERVED_PREFIX, USAGE, component.as_bytes()].concat()
}

pub(crate) fn placement_key(component: &str) -> Vec<u8> {
    [RESERVED_PREFIX, PLACEMENT, component.as_bytes()].concat()
}

/// A decoded metadata record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MetaRecord {
    Usage(String, u64),
    Placement(String, Placement),
}

fn corrupt(key: &[u8], reason: &str) -> StorageError {
    StorageError::CorruptMetadata {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.to_string(),
    }
}

fn u64_at(value: &[u8], at: usize, key: &[u8]) -> Result<u64, StorageError> {
    value
        .get(at..at + 8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| corrupt(key, "value too short"))
}

pub(crate) fn encode_usage(usage: u64) -> [u8; 8] {
    usage.to_le_bytes()
}

pub(crate) fn encode_placement(p: Placement) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&p.node_id.to_le_bytes());
    out[8..].copy_from_slice(&p.generation.to_le_bytes());
    out
}

/// Decodes one `(key, value)` found under [`RESERVED_PREFIX`].
pub(crate) fn decode(key: &[u8], value: &[u8]) -> Result<MetaRecord, StorageError> {
    let rest = key
        .strip_prefix(RESERVED_PREFIX)
        .ok_or_else(|| corrupt(key, "not a metadata key"))?;
    let name = |suffix: &[u8]| {
        std::str::from_utf8(suffix)
            .map(str::to_string)
            .map_err(|_| corrupt(key, "component name is not utf-8"))
    };
    if let Some(c) = rest.strip_prefix(USAGE) {
        Ok(MetaRecord::Usage(name(c)?, u64_at(value, 0, key)?))
    } else if let Some(c) = rest.strip_prefix(PLACEMENT) {
        Ok(MetaRecord::Placement(
            name(c)?,
            Placement {
                node_id: u64_at(value, 0, key)?,
                generation: u64_at(value, 8, key)?,
            },
        ))
    } else {
        Err(corrupt(key, "unknown metadata kind"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let k = usage_key("a-1");
        assert!(is_reserved(&k));
        assert_eq!(
            decode(&k, &encode_usage(42)),
            Ok(MetaRecord::Usage("a-1".into(), 42))
        );
        let p = Placement {
            node_id: 7,
            generation: 9,
        };
        let k = placement_key("b");
        assert_eq!(
            decode(&k, &encode_placement(p)),
            Ok(MetaRecord::Placement("b".into(), p))
        );
    }

    #[test]
    fn short_values_are_corrupt_not_panics() {
        assert!(matches!(
            decode(&usage_key("a"), b"123"),
            Err(StorageError::CorruptMetadata { .. })
        ));
        assert!(matches!(
            decode(&placement_key("a"), &[0u8; 12]),
            Err(StorageError::CorruptMetadata { .. })
        ));
    }

    #[test]
    fn ordinary_keys_are_not_reserved() {
        assert!(!is_reserved(b"registry/a"));
        assert!(!is_reserved(b"\xff"));
        assert!(is_reserved(b"\xff\xff"));
    }
}
