//! Component names and how they map onto column-family names.

use crate::StorageError;

/// Column family of the node's system records and this crate's metadata.
pub(crate) const SYS_CF: &str = "sys";
/// Prefix of every component column family, so no component name can collide with `sys` or
/// RocksDB's `default`.
pub(crate) const COMPONENT_CF_PREFIX: &str = "c/";

/// What is wrong with `name` as a component name (`[a-z0-9][a-z0-9-]{0,62}`), or `None`
/// when it is valid. The one statement of the rule: the admin API, the host calls and the
/// store all ask here.
pub fn name_problem(name: &str) -> Option<String> {
    let bytes = name.as_bytes();
    let Some(&first) = bytes.first() else {
        return Some("a component name cannot be empty".into());
    };
    if bytes.len() > 63 {
        return Some(format!(
            "component name is {} characters long; at most 63 are allowed",
            bytes.len()
        ));
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Some(format!(
            "component name {name:?} must start with a lowercase letter or a digit"
        ));
    }
    name.chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        .map(|bad| {
            format!("component name {name:?} contains {bad:?}; only a-z, 0-9 and '-' are allowed")
        })
}

/// Whether `name` is a valid component name: `[a-z0-9][a-z0-9-]{0,62}`.
pub fn is_valid_name(name: &str) -> bool {
    name_problem(name).is_none()
}

/// Checks a component name, returning [`StorageError::InvalidName`] when it is not
/// `[a-z0-9][a-z0-9-]{0,62}`.
pub fn validate_name(name: &str) -> Result<(), StorageError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(StorageError::InvalidName(name.to_string()))
    }
}

/// The column family holding `component`'s data.
pub(crate) fn cf_name(component: &str) -> String {
    format!("{COMPONENT_CF_PREFIX}{component}")
}

/// The component a column family belongs to, if it is a component column family with a valid name.
pub(crate) fn component_of_cf(cf: &str) -> Option<&str> {
    cf.strip_prefix(COMPONENT_CF_PREFIX)
        .filter(|n| is_valid_name(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names() {
        for n in ["a", "0", "counter", "acct-1", "a-", &"a".repeat(63)] {
            assert!(is_valid_name(n), "{n}");
            assert!(validate_name(n).is_ok());
        }
    }

    #[test]
    fn rejects_invalid_names() {
        for n in [
            "",
            "-a",
            "A",
            "a_b",
            "a.b",
            "a/b",
            "é",
            &"a".repeat(64),
            " a",
        ] {
            assert!(!is_valid_name(n), "{n:?}");
            assert_eq!(
                validate_name(n),
                Err(StorageError::InvalidName(n.to_string()))
            );
        }
    }

    #[test]
    fn cf_names_round_trip_and_never_collide_with_sys() {
        assert_eq!(component_of_cf(&cf_name("sys")), Some("sys"));
        assert_eq!(component_of_cf(&cf_name("default")), Some("default"));
        assert_ne!(cf_name("sys"), SYS_CF);
        assert_eq!(component_of_cf(SYS_CF), None);
        assert_eq!(component_of_cf("default"), None);
        assert_eq!(component_of_cf("c/Bad"), None);
    }
}
