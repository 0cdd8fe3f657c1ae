//! How a batch changes its components' usage (sum of key + value lengths), computed from the
//! sizes of what is stored, never from the writer's claim. Pure: the stored size of a key comes
//! from a caller-supplied lookup, so RocksDB stays in [`apply`](super::apply).

use std::collections::HashMap;

use super::batch::ComponentWrites;
use crate::StorageError;

/// A component's key, within one group's apply.
pub(crate) type ComponentKey<'b> = (&'b str, &'b [u8]);

/// `base + delta`, clamped to `0..=u64::MAX`.
pub(crate) fn apply_delta(component: &str, base: u64, delta: i64) -> u64 {
    let next = i128::from(base) + i128::from(delta);
    if next < 0 {
        tracing::warn!(
            component,
            base,
            delta,
            "usage delta would go below zero; clamped"
        );
    }
    u64::try_from(next.max(0)).unwrap_or(u64::MAX)
}

/// Bytes a stored pair counts for in its component's usage: key plus value.
pub(crate) fn pair_bytes(key: &[u8], value: Option<usize>) -> Option<u64> {
    value.map(|v| (key.len() + v) as u64)
}

/// The change of usage `cw`'s writes make, from what is stored (`stored` gives the length of
/// a key's stored value, `None` when absent) and what earlier batches of this group write (in
/// `written`), never from the batch's own claim: a commit comes from a peer, and a made-up
/// delta would let a component past its quota. Each written key's size after this batch goes
/// into `staged_sizes` (this batch's, kept apart until it is accepted). `stored` is asked only
/// for keys neither map knows.
pub(crate) fn usage_change<'b>(
    cw: &'b ComponentWrites,
    written: &HashMap<ComponentKey<'b>, Option<u64>>,
    staged_sizes: &mut HashMap<ComponentKey<'b>, Option<u64>>,
    mut stored: impl FnMut(&[u8]) -> Result<Option<usize>, StorageError>,
) -> Result<i64, StorageError> {
    let name = cw.component.as_str();
    let mut change: i128 = 0;
    for (k, v) in &cw.writes {
        let key = (name, k.as_slice());
        let before = match staged_sizes.get(&key).or_else(|| written.get(&key)) {
            Some(size) => *size,
            None => pair_bytes(k, stored(k)?),
        };
        let after = pair_bytes(k, v.as_ref().map(Vec::len));
        change += i128::from(after.unwrap_or(0)) - i128::from(before.unwrap_or(0));
        staged_sizes.insert(key, after);
    }
    Ok(i64::try_from(change).unwrap_or(if change < 0 { i64::MIN } else { i64::MAX }))
}

/// The usage `name` starts this batch's writes from: what this batch already staged for it,
/// else what earlier batches of the group left (`new_usage`), else the recorded `usage`.
/// Unknown everywhere: the component does not exist.
pub(crate) fn base_usage(
    name: &str,
    staged: &[(&str, u64)],
    new_usage: &HashMap<&str, u64>,
    usage: &HashMap<String, u64>,
) -> Result<u64, StorageError> {
    match staged.iter().find(|(n, _)| *n == name) {
        Some((_, u)) => Ok(*u),
        None => match new_usage.get(name).or_else(|| usage.get(name)) {
            Some(u) => Ok(*u),
            None => Err(StorageError::UnknownComponent(name.to_string())),
        },
    }
}

/// Records `next` as `name`'s usage staged by this batch.
pub(crate) fn stage_usage<'b>(staged: &mut Vec<(&'b str, u64)>, name: &'b str, next: u64) {
    match staged.iter_mut().find(|(n, _)| *n == name) {
        Some(slot) => slot.1 = next,
        None => staged.push((name, next)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn writes(component: &str, w: &[(&[u8], Option<&[u8]>)]) -> ComponentWrites {
        ComponentWrites {
            component: component.into(),
            writes: w
                .iter()
                .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
                .collect(),
            // A lie: it must not count.
            usage_delta: 1_000_000,
        }
    }

    /// A store holding `k1 -> 3 bytes` and nothing else; counts lookups.
    fn store(reads: &Cell<u32>) -> impl FnMut(&[u8]) -> Result<Option<usize>, StorageError> + '_ {
        move |k| {
            reads.set(reads.get() + 1);
            Ok((k == b"k1").then_some(3))
        }
    }

    #[test]
    fn delta_is_clamped() {
        assert_eq!(apply_delta("c", 10, -3), 7);
        assert_eq!(apply_delta("c", 10, 5), 15);
        assert_eq!(apply_delta("c", 3, -10), 0);
        assert_eq!(apply_delta("c", u64::MAX, 1), u64::MAX);
        assert_eq!(apply_delta("c", 0, i64::MIN), 0);
    }

    #[test]
    fn a_pair_counts_key_plus_value_and_nothing_when_absent() {
        assert_eq!(pair_bytes(b"key", Some(4)), Some(7));
        assert_eq!(pair_bytes(b"key", Some(0)), Some(3));
        assert_eq!(pair_bytes(b"key", None), None);
    }

    #[test]
    fn change_comes_from_stored_sizes_not_the_claim() {
        let reads = Cell::new(0);
        let cw = writes(
            "c",
            &[
                (b"k1", Some(b"v")),   // 2+3 -> 2+1: -2
                (b"k2", Some(b"vvv")), // new: +5
                (b"k3", None),         // absent, deleted: 0
            ],
        );
        let mut staged = HashMap::new();
        let change = usage_change(&cw, &HashMap::new(), &mut staged, store(&reads));
        assert_eq!(change, Ok(3));
        assert_eq!(reads.get(), 3);
        assert_eq!(staged.get(&("c", &b"k1"[..])), Some(&Some(3)));
        assert_eq!(staged.get(&("c", &b"k3"[..])), Some(&None));
    }

    #[test]
    fn deleting_a_stored_key_frees_key_and_value() {
        let reads = Cell::new(0);
        let cw = writes("c", &[(b"k1", None)]);
        let change = usage_change(&cw, &HashMap::new(), &mut HashMap::new(), store(&reads));
        assert_eq!(change, Ok(-5));
    }

    #[test]
    fn a_key_written_twice_in_a_batch_counts_from_its_first_write() {
        let reads = Cell::new(0);
        let cw = writes("c", &[(b"k2", Some(b"1234")), (b"k2", Some(b"1"))]);
        let change = usage_change(&cw, &HashMap::new(), &mut HashMap::new(), store(&reads));
        // +6, then 6 -> 3.
        assert_eq!(change, Ok(3));
        assert_eq!(reads.get(), 1);
    }

    #[test]
    fn an_earlier_batch_of_the_group_wins_over_the_store() {
        let reads = Cell::new(0);
        let cw = writes("c", &[(b"k1", None)]);
        // An earlier batch already deleted k1: deleting it again frees nothing.
        let written = HashMap::from([(("c", &b"k1"[..]), None)]);
        let change = usage_change(&cw, &written, &mut HashMap::new(), store(&reads));
        assert_eq!(change, Ok(0));
        assert_eq!(reads.get(), 0);
    }

    #[test]
    fn same_key_of_another_component_is_another_key() {
        let reads = Cell::new(0);
        let cw = writes("d", &[(b"k1", None)]);
        let written = HashMap::from([(("c", &b"k1"[..]), None)]);
        let change = usage_change(&cw, &written, &mut HashMap::new(), store(&reads));
        assert_eq!(change, Ok(-5));
        assert_eq!(reads.get(), 1);
    }

    #[test]
    fn a_failed_lookup_fails_the_change() {
        let cw = writes("c", &[(b"k", None)]);
        let change = usage_change(&cw, &HashMap::new(), &mut HashMap::new(), |_| {
            Err(StorageError::Closed("gone".into()))
        });
        assert_eq!(change, Err(StorageError::Closed("gone".into())));
    }

    #[test]
    fn base_usage_prefers_this_batch_then_the_group_then_the_record() {
        let usage = HashMap::from([("a".to_string(), 1), ("b".to_string(), 2)]);
        let new_usage = HashMap::from([("b", 20)]);
        let staged = [("a", 100)];
        assert_eq!(base_usage("a", &staged, &new_usage, &usage), Ok(100));
        assert_eq!(base_usage("b", &staged, &new_usage, &usage), Ok(20));
        assert_eq!(base_usage("b", &[], &HashMap::new(), &usage), Ok(2));
        assert_eq!(
            base_usage("x", &staged, &new_usage, &usage),
            Err(StorageError::UnknownComponent("x".into()))
        );
    }

    #[test]
    fn staging_a_component_twice_keeps_one_entry() {
        let mut staged = Vec::new();
        stage_usage(&mut staged, "a", 5);
        stage_usage(&mut staged, "b", 1);
        stage_usage(&mut staged, "a", 7);
        assert_eq!(staged, [("a", 7), ("b", 1)]);
    }
}
