//! Integration tests of `airssys-storage`: transactions, commits, fencing, quotas, usage,
//! component lifecycle, persistence and group commit.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use std::sync::Arc;

use airssys_storage::{
    CommitBatch, ComponentWrites, Fence, InFlightWrites, Placement, Storage, StorageError,
    StorageOptions, Txn, TxnLimits, WriteError,
};

fn open(dir: &Path) -> Storage {
    Storage::open(dir, StorageOptions::default()).unwrap()
}

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// Commits `pairs` to `component` through a transaction.
fn put(st: &Storage, component: &str, pairs: &[(&str, &str)]) {
    let mut t = st.begin(component, TxnLimits::default()).unwrap();
    for (k, v) in pairs {
        t.set(b(k), b(v)).unwrap();
    }
    st.commit(CommitBatch {
        components: vec![t.into_writes()],
        ..Default::default()
    })
    .unwrap();
}

/// Sum of key + value lengths actually stored, computed by scanning.
fn scanned_usage(st: &Storage, component: &str) -> u64 {
    st.keys_with_prefix(component, b"")
        .unwrap()
        .iter()
        .map(|k| (k.len() + st.get(component, k).unwrap().unwrap().len()) as u64)
        .sum()
}

#[test]
fn txn_reads_its_own_writes_before_commit() {
    let dir = tempfile::tempdir().unwrap();
    let st = open(dir.path());
    st.create_component("a").unwrap();
    put(&st, "a", &[("k", "old"), ("gone", "x")]);

    let mut t = st.begin("a", TxnLimits::default()).unwrap();
    assert_eq!(t.get(b"k").unwrap(), Some(b("old")));
    t.set(b("k"), b("new")).unwrap();
    t.delete(b"gone").unwrap();
    assert_eq!(t.get(b"k").unwrap(), Some(b("new")));
    assert_eq!(t.get(b"gone").unwrap(), None);
    // Not visible outside the transaction until committed.
    assert_eq!(st.get("a", b"k").unwrap(), Some(b("old")));
    assert_eq!(st.get("a", b"gone").unwrap(), Some(b("x")));

    st.commit(CommitBatch {
        components: vec![t.into_writes()],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(st.get("a", b"k").unwrap(), Some(b("new")));
    assert_eq!(st.get("a", b"gone").unwrap(), None);
}

#[test]
fn a_txn_begun_over_one_still_committing_sees_its_writes_and_usage() {
    let dir = tempfile::tempdir().unwrap();
    let st = open(dir.path());
    st.create_component("a").unwrap();
    put(&st, "a", &[("k", "old"), ("gone", "x"), ("kept", "y")]);
    let in_flight = Arc::new(InFlightWrites::new());
    let limits = TxnLimits {
        quota_bytes: 40,
        ..TxnLimits::default()
    };

    // The first transaction is handed to the committer but not applied yet.
    let mut first = st.begin_over("a", limits, in_flight.clone()).unwrap();
    first.set(b("k"), b("newer")).unwrap();
    first.delete(b"gone").unwrap();
    first.set(b("added"), b("z")).unwrap();
    let usage_after_first = first.usage_bytes();
    let first = first.into_writes();
    in_flight.record(1, &first, usage_after_first);

    let mut second = st.begin_over("a", limits, in_flight.clone()).unwrap();
    assert_eq!(second.usage_bytes(), usage_after_first);
    assert_eq!(second.get(b"k").unwrap(), Some(b("newer")));
    assert_eq!(second.get(b"gone").unwrap(), None);
    assert_eq!(second.get(b"kept").unwrap(), Some(b("y")));
    assert_eq!(
        second.list_keys(b"").unwrap(),
        vec![b("added"), b("k"), b("kept")]
    );
    // Usage counts the in-flight value being replaced: "newer" (k) is 6 bytes, not 4.
    second.set(b("k"), b("n")).unwrap();
    assert_eq!(second.usage_bytes(), usage_after_first - 4);
    // The quota counts what is in flight: 13 bytes in use, so 28 more are one too many
    // (counted from the store alone, 12 in use, they would fit).
    assert_eq!(second.usage_bytes(), 13);
    assert!(matches!(
        second.set(b("big"), vec![b'x'; 25]),
        Err(WriteError::QuotaExceeded { .. })
    ));

    // The first applies; the layer forgets it; the store now answers the same.
    st.commit(CommitBatch {
        components: vec![first],
        ..Default::default()
    })
    .unwrap();
    in_flight.applied_through(1);
    assert!(in_flight.is_empty());
    assert_eq!(second.get(b"gone").unwrap(), None);
    assert_eq!(second.get(b"added").unwrap(), Some(b("z")));
    let usage_after_second = second.usage_bytes();
    st.commit(CommitBatch {
        components: vec![second.into_writes()],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(st.usage_bytes("a").unwrap(), usage_after_second);
    assert_eq!(scanned_usage(&st, "a"), usage_after_second);
    assert_eq!(st.get("a", b"k").unwrap(), Some(b("n")));
}

#[test]
fn list_keys_merges_overlay_and_store() {
    let dir = tempfile::tempdir().unwrap();
    let st = open(dir.path());
    st.create_component("a").unwrap();
    put(
        &st,
        "a",
        &[("a1", "1"), ("a2", "2"), ("a3", "3"), ("b1", "1")],
    );

    let mut t = st.begin("a", TxnLimits::default()).unwrap();
    t.delete(b"a2").unwrap();
    t.set(b("a4"), b("4")).unwrap();
    t.set(b("a0"), b("0")).unwrap();
    t.set(b("b2"), b("2")).unwrap();
    t.set(b("a1"), b("overwritten")).unwrap();
    assert_eq!(
        t.list_keys(b"a").unwrap(),
        vec![b("a0"), b("a1"), b("a3"), b("a4")]
    );
    assert_eq!(
        t.list_keys(b"").unwrap(),
        vec![b("a0"), b("a1"), b("a3"), b("a4"), b("b1"), b("b2")]
    );
    assert_eq!(t.list_keys(b"c").unwrap(), Vec::<Vec<u8>>::new());
    // The store itself is unchanged.
    assert_eq!(
        st.keys_with_prefix("a", b"a").unwrap(),
        vec![b("a1"), b("a2"), b("a3")]
    );
}

/// Every key through pages of `limit`.
fn all_pages(t: &Txn, prefix: &[u8], limit: usize) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    loop {
        let page = t
            .list_keys_page(prefix, out.last().map(Vec::as_slice), limit)
            .unwrap();
        assert!(page.len() <= limit, "a page holds at most its limit");
        let last_page = page.len() < limit;
        out.extend(page);
        if last_page {
            return out;
        }
    }
}

#[test]
fn a_listing_in_pages_is_the_whole_listing() {
    let dir = tempfile::tempdir().unwrap();
    let st = open(dir.path());
    st.create_component("a").unwrap();
    put(
        &st,
        "a",
        &[
            ("a1", "1"),
            ("a2", "2"),
            ("a3", "3"),
            ("a5", "5"),
            ("b1", "1"),
        ],
    );
    let mut t = st.begin("a", TxnLimits::default()).unwrap();
    // Deletions at the start of a page must not make it come up short.
    t.delete(b"a1").unwrap();
    t.delete(b"a2").unwrap();
    t.set(b("a4"), b("4")).unwrap();
    t.set(b("a0"), b("0")).unwrap();
    t.set(b("b2"), b("2")).unwrap();
    for prefix in [b"a".as_slice(), b"", b"b", b"c"] {
        let whole = t.list_keys(prefix).unwrap();
        for limit in 1..=7 {
            assert_eq!(
                all_pages(&t, prefix, limit),
                whole,
                "prefix {prefix:?} limit {limit}"
            );
        }
    }
    assert_eq!(
        t.list_keys_page(b"a", Some(b"a0"), 2).unwrap(),
        vec![b("a3"), b("a4")]
    );
    assert!(t.list_keys_page(b"a", Some(b"zz"), 5).unwrap().is_empty());
    assert_eq!(
        t.list_keys_page(b"b", Some(b"a9"), 5).unwrap(),
        vec![b("b1"), b("b2")],
        "an `after` before the prefix starts at the prefix"
    );
}

#[test]
fn keys_with_prefix_handles_ff_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let st = open(dir.path());
    st.create_component("a").unwrap();
    let mut t = st.begin("a", TxnLimits::default()).unwrap();
    for k in [&b"\xff"[..], b"\xff\x00", b"\xff\xff", b"\xfe", b"\x00"] {
        t.set(k.to_vec(), b("v")).unwrap();
    }
    st.commit(CommitBatch {
        components: vec![t.into_writes()],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        st.keys_with_prefix("a", b"\xff").unwrap(),
        vec![b"\xff".to_vec(), b"\xff\x00".to_vec(), b"\xff\xff".to_vec()]
    );
    assert_eq!(st.keys_with_prefix("a", b"").unwrap().len(), 5);
}

#[test]
fn components_are_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let st = open(dir.path());
    st.create_component("x").unwrap();
    st.create_component("y").unwrap();
    put(&st, "x", &[("k", "from-x"), ("only-x", "1")]);
    put(&st, "y", &[("k", "from-y")]);
    assert_eq!(st.get("x", b"k").unwrap(), Some(b("from-x")));
    assert_eq!(st.get("y", b"k").unwrap(), Some(b("from-y")));
    assert_eq!(st.get("y", b"only-x").unwrap(), None);
    let t = st.begin("y", TxnLimits::default()).unwrap();
    assert_eq!(t.get(b"k").unwrap(), Some(b("from-y")));
    assert_eq!(t.list_keys(b"").unwrap(), vec![b("k")]);
    assert_eq!(st.usage_bytes("y").unwrap(), 7);
    assert_eq!(st.usage_bytes("x").unwrap(), 7 + 7);
}

#[test]
fn component_named_sys_or_default_does_not_touch_system_data() {
    let dir = tempfile::tempdir().unwrap();
    let st = open(dir.path());
    st.create_component("sys").unwrap();
    st.create_component("default").unwrap();
    st.commit(CommitBatch {
        sys: vec![(b("reg/a"), Some(b("node")))],
        ..Default::default()
    })
    .unwrap();
    put(&st, "sys", &[("reg/a", "component")]);
    assert_eq!(st.sys_get(b"reg/a").unwrap(), Some(b("node")));
    assert_eq!(st.get("sys", b"reg/a").unwrap(), Some(b("component")));
    assert_eq!(st.keys_with_prefix("default", b"").unwrap().len(), 0);
}

fn fenced_batch(generation: u64, node_id: u64) -> CommitBatch {
    CommitBatch {
        fence: Some(Fence {
            commit: 0,
            sequence: 0,
            peers: Vec::new(),
            component: "a".into(),
            node_id,
            generation,
        }),
        components: vec![ComponentWrites {
            component: "a".into(),
            writes: vec![(b("k"), Some(b("v")))],
            usage_delta: 2,
        }],
        sys: vec![(b("outbox/1"), Some(b("msg"))), (b("dedup/1"), None)],
    }
}

#[test]
fn stale_fence_writes_nothing_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let st = open(dir.path());
    st.create_component("a").unwrap();
    st.commit(CommitBatch {
        sys: vec![(b("dedup/1"), Some(b("seen")))],
        ..Default::default()
    })
    .unwrap();
    st.set_generation("a", 1, 3).unwrap();
    assert_eq!(
        st.placement("a").unwrap(),
        Some(Placement {
            node_id: 1,
            generation: 3
        })
    );

    assert_eq!(
        st.commit(fenced_batch(2, 1)),
        Err(StorageError::StaleGeneration {
            component: "a".into(),
            current: 3,
            got: 2
        })
    );
    assert_eq!(
        st.commit(fenced_batch(3, 2)),
        Err(StorageError::WrongNode {
            component: "a".into(),
            owner: 1,
            got: 2
        })
    );
    // Nothing of the refused batches landed: component write, sys put, sys delete, usage.
    assert_eq!(st.get("a", b"k").unwrap(), None);
    assert_eq!(st.sys_get(b"outbox/1").unwrap(), None);
    assert_eq!(st.sys_get(b"dedup/1").unwrap(), Some(b("seen")));
    assert_eq!(st.usage_bytes("a").unwrap(), 0);

    // The current fence commits everything together.
    st.commit(fenced_batch(3, 1)).unwrap();
    assert_eq!(st.get("a", b"k").unwrap(), Some(b("v")));
    assert_eq!(st.sys_get(b"outbox/1").unwrap(), Some(b("msg")));
    assert_eq!(st.sys_get(b"dedup/1").unwrap(), None);
    assert_eq!(st.usage_bytes("a").unwrap(), 2);

    // A move bumps the generation; the old one is now stale.
    st.set_generation("a", 2, 4).unwrap();
    assert!(matches!(
        st.commit(fenced_batch(3, 1)),
        Err(StorageError::StaleGeneration { current: 4, .. })
    ));
}

#[test]
fn placement_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let st = open(dir.path());
        st.create_component("a").unwrap();
        st.set_generation("a", 5, 7).unwrap();
    }
    let st = open(dir.path());
    assert_eq!(
        st.placement("a").unwrap(),
        Some(Placement {
            node_id: 5,
            generation: 7
        })
    );
    assert!(matches!(
        st.commit(fenced_batch(6, 5)),
        Err(StorageError::StaleGeneration { current: 7, .. })
    ));
    assert_eq!(
        st.set_generation("nope", 1, 1),
        Err(StorageError::UnknownComponent("nope".into()))
    );
}

#[test]
fn batch_naming_an_unknown_component_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let st = open(dir.path());
    st.create_component("a").unwrap();
    let batch = CommitBatch {
        fence: None,
        components: vec![
            ComponentWrites {
                component: "a".into(),
                writes: vec![(b("k"), Some(b("v")))],
                usage_delta: 2,
            },
            ComponentWrites {
                component: "ghost".into(),
                writes: vec![(b("k"), Some(b("v")))],
                usage_delta: 2,
            },
        ],
        sys: vec![(b("s"), Some(b("1")))],
    };
    assert_eq!(
        st.commit(batch),
        Err(StorageError::UnknownComponent("ghost".into()))
    );
    assert_eq!(st.get("a", b"k").unwrap(), None);
    assert_eq!(st.sys_get(b"s").unwrap(), None);
    assert_eq!(st.usage_bytes("a").unwrap(), 0);
}

#[test]
fn reserved_sys_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let st = open(dir.path());
    let batch = CommitBatch {
        sys: vec![
            (b("ok"), Some(b("1"))),
            (
                b"\xff\xffairssys-storage/usage/a".to_vec(),
                Some(vec![0; 8]),
            ),
        ],
        ..Default::default()
    };
    assert_eq!(st.commit(batch), Err(StorageError::ReservedKey));
    assert_eq!(st.sys_get(b"ok").unwrap(), None);
    assert_eq!(st.sys_get(b"\xff\xffx"), Err(StorageError::ReservedKey));
}

#[test]
fn sys_scan_returns_prefix_in_order_and_hides_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let st = open(dir.path());
    st.create_component("a").unwrap();
    st.set_generation("a", 1, 1).unwrap();
    st.commit(CommitBatch {
        sys: vec![
            (b("reg/b"), Some(b("2"))),
            (b("reg/a"), Some(b("1"))),
            (b("rex"), Some(b("x"))),
            (b"\xfe".to_vec(), Some(b("y"))),
        ],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        st.sys_scan_prefix(b"reg/").unwrap(),
        vec![(b("reg/a"), b("1")), (b("reg/b"), b("2"))]
    );
    let all = st.sys_scan_prefix(b"").unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.iter().all(|(k, _)| !k.starts_with(b"\xff\xff")));
}

#[test]
fn caps_and_quota_give_specific_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let st = open(dir.path());
    st.create_component("a").unwrap();
    let limits = TxnLimits {
        max_key_bytes: 4,
        max_value_bytes: 10,
        quota_bytes: 20,
    };
    let mut t = st.begin("a", limits).unwrap();
    assert_eq!(
        t.set(b("12345"), b("v")),
        Err(WriteError::KeyTooLarge { len: 5, max: 4 })
    );
    assert_eq!(
        t.set(b("k"), vec![0; 11]),
        Err(WriteError::ValueTooLarge { len: 11, max: 10 })
    );
    assert!(t.is_empty());
    assert_eq!(t.usage_delta(), 0);

    t.set(b("k1"), vec![1; 10]).unwrap(); // 12 bytes
    assert_eq!(
        t.set(b("k2"), vec![2; 9]), // 11 more: 23 > 20
        Err(WriteError::QuotaExceeded {
            quota: 20,
            would_use: 23
        })
    );
    assert_eq!(t.get(b"k2").unwrap(), None);
    assert_eq!(t.usage_delta(), 12);
    // Overwriting with a larger value counts only the difference: 12 -> 20 fits exactly.
    t.set(b("k1"), vec![1; 10]).unwrap();
    t.set(b("k2"), vec![2; 6]).unwrap();
    assert_eq!(t.usage_bytes(), 20);
    assert!(matches!(
        t.set(b("k3"), vec![]),
        Err(WriteError::QuotaExceeded { .. })
    ));
    st.commit(CommitBatch {
        components: vec![t.into_writes()],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(st.usage_bytes("a").unwrap(), 20);

    // The quota applies to committed usage too.
    let mut t = st.begin("a", limits).unwrap();
    assert!(matches!(
        t.set(b("k"), b("v")),
        Err(WriteError::QuotaExceeded { would_use: 22, .. })
    ));
    // Shrinking is always allowed, and frees room.
    t.delete(b"k2").unwrap();
    t.set(b("k"), b("v")).unwrap();
    assert_eq!(t.usage_bytes(), 14);
    // A lowered quota still lets a component shrink.
    let mut t = st
        .begin(
            "a",
            TxnLimits {
                quota_bytes: 5,
                ..limits
            },
        )
        .unwrap();
    t.set(b("k1"), b("v")).unwrap();
    assert_eq!(t.usage_bytes(), 3 + 8);
}

#[test]
fn usage_stays_exact_across_overwrite_delete_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let st = open(dir.path());
        st.create_component("a").unwrap();
        put(&st, "a", &[("one", "1"), ("two", "22"), ("three", "333")]);
        assert_eq!(st.usage_bytes("a").unwrap(), 4 + 5 + 8);

        let mut t = st.begin("a", TxnLimits::default()).unwrap();
        t.set(b("one"), b("1111111")).unwrap(); // +6
        t.set(b("one"), b("11")).unwrap(); // -5
        t.delete(b"two").unwrap(); // -5
        t.delete(b"absent").unwrap(); // nothing
        t.set(b("four"), b("4")).unwrap(); // +5
        t.delete(b"four").unwrap(); // -5
        t.set(b("five"), Vec::new()).unwrap(); // +4
        assert_eq!(t.usage_delta(), 6 - 5 - 5 + 5 - 5 + 4);
        st.commit(CommitBatch {
            components: vec![t.into_writes()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(st.usage_bytes("a").unwrap(), scanned_usage(&st, "a"));
        assert_eq!(st.usage_bytes("a").unwrap(), 17 + 6 - 5 - 5 + 5 - 5 + 4);
    }
    let st = open(dir.path());
    assert_eq!(st.usage_bytes("a").unwrap(), 17);
    assert_eq!(scanned_usage(&st, "a"), 17);
}

#[test]
fn drop_component_removes_data_and_recreate_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let st = open(dir.path());
    st.create_component("a").unwrap();
    st.create_component("keep").unwrap();
    put(&st, "a", &[("k", "v")]);
    put(&st, "keep", &[("k", "kept")]);
    st.set_generation("a", 1, 9).unwrap();

    assert!(st.drop_component("a").unwrap());
    assert!(!st.drop_component("a").unwrap());
    assert!(!st.has_component("a"));
    assert_eq!(
        st.get("a", b"k"),
        Err(StorageError::UnknownComponent("a".into()))
    );
    assert_eq!(
        st.usage_bytes("a"),
        Err(StorageError::UnknownComponent("a".into()))
    );
    assert!(matches!(
        st.begin("a", TxnLimits::default()),
        Err(StorageError::UnknownComponent(_))
    ));

    st.create_component("a").unwrap();
    assert_eq!(st.get("a", b"k").unwrap(), None);
    assert_eq!(st.keys_with_prefix("a", b"").unwrap().len(), 0);
    assert_eq!(st.usage_bytes("a").unwrap(), 0);
    assert_eq!(st.placement("a").unwrap(), None);
    assert_eq!(st.get("keep", b"k").unwrap(), Some(b("kept")));
    drop(st);

    // The drop is durable too.
    let st = open(dir.path());
    assert_eq!(st.get("a", b"k").unwrap(), None);
    assert_eq!(st.usage_bytes("a").unwrap(), 0);
    assert_eq!(st.placement("a").unwrap(), None);
}

#[test]
fn invalid_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let st = open(dir.path());
    for n in ["", "Upper", "-x", "a_b", &"a".repeat(64)] {
        assert_eq!(
            st.create_component(n),
            Err(StorageError::InvalidName(n.into()))
        );
    }
    assert_eq!(
        st.create_components(&["ok", "Bad"]),
        Err(StorageError::InvalidName("Bad".into()))
    );
    assert!(st.component_names().is_empty());
    assert_eq!(
        st.get("nope", b"k"),
        Err(StorageError::UnknownComponent("nope".into()))
    );
}

#[test]
fn data_persists_across_reopen_and_drop_really_closes() {
    let dir = tempfile::tempdir().unwrap();
    {
        let st = open(dir.path());
        st.create_component("b").unwrap();
        st.create_component("a").unwrap();
        let clone = st.clone();
        let t = clone.begin("a", TxnLimits::default()).unwrap();
        drop(st);
        drop(clone);
        // The transaction still holds the database: a second open must fail on RocksDB's lock.
        assert!(matches!(
            Storage::open(dir.path(), StorageOptions::default()),
            Err(StorageError::Rocks(_))
        ));
        let mut t = t;
        t.set(b("k"), b("v")).unwrap();
        let writes = t.into_writes();
        // `into_writes` consumed the transaction and its handle: the database is closed now.
        let st = open(dir.path());
        st.commit(CommitBatch {
            components: vec![writes],
            sys: vec![(b("reg/a"), Some(b("rec")))],
            ..Default::default()
        })
        .unwrap();
    }
    let st = open(dir.path());
    assert_eq!(st.component_names(), vec!["a".to_string(), "b".to_string()]);
    assert_eq!(st.get("a", b"k").unwrap(), Some(b("v")));
    assert_eq!(st.sys_get(b"reg/a").unwrap(), Some(b("rec")));
}

#[test]
fn bulk_creation_keeps_existing_data_and_open_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let st = open(dir.path());
    st.create_component("old").unwrap();
    put(&st, "old", &[("k", "v")]);
    st.set_generation("old", 1, 2).unwrap();
    let mut t = st.begin("old", TxnLimits::default()).unwrap();
    t.set(b("k2"), b("v2")).unwrap();

    let names: Vec<String> = (0..40).map(|i| format!("bulk-{i}")).collect();
    let mut refs: Vec<&str> = names.iter().map(String::as_str).collect();
    refs.push("old");
    refs.push("bulk-3");
    st.create_components(&refs).unwrap();
    assert_eq!(st.component_names().len(), 41);
    for n in &names {
        assert!(st.has_component(n));
        assert_eq!(st.usage_bytes(n).unwrap(), 0);
        assert!(st.keys_with_prefix(n, b"").unwrap().is_empty());
    }
    // The re-open did not disturb the existing component or the open transaction.
    assert_eq!(st.get("old", b"k").unwrap(), Some(b("v")));
    assert_eq!(t.get(b"k").unwrap(), Some(b("v")));
    st.commit(CommitBatch {
        fence: Some(Fence {
            commit: 0,
            sequence: 0,
            peers: Vec::new(),
            component: "old".into(),
            node_id: 1,
            generation: 2,
        }),
        components: vec![t.into_writes()],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(st.get("old", b"k2").unwrap(), Some(b("v2")));
    put(&st, "bulk-7", &[("x", "y")]);
    // A few at a time goes the single-creation way.
    st.create_components(&["few-1", "few-2"]).unwrap();
    assert!(st.has_component("few-2"));
    drop(st);

    let st = open(dir.path());
    assert_eq!(st.component_names().len(), 43);
    assert_eq!(st.get("bulk-7", b"x").unwrap(), Some(b("y")));
    assert_eq!(st.usage_bytes("old").unwrap(), 2 + 4);
}

#[test]
fn checkpoint_is_a_complete_copy() {
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("snap");
    {
        let st = open(&dir.path().join("db"));
        st.create_component("a").unwrap();
        put(&st, "a", &[("k", "v")]);
        st.set_generation("a", 3, 4).unwrap();
        st.commit(CommitBatch {
            sys: vec![(b("reg/a"), Some(b("r")))],
            ..Default::default()
        })
        .unwrap();
        st.checkpoint(&snap).unwrap();
        put(&st, "a", &[("later", "x")]);
    }
    let st = open(&snap);
    assert_eq!(st.get("a", b"k").unwrap(), Some(b("v")));
    assert_eq!(st.get("a", b"later").unwrap(), None);
    assert_eq!(st.usage_bytes("a").unwrap(), 2);
    assert_eq!(st.sys_get(b"reg/a").unwrap(), Some(b("r")));
    assert_eq!(
        st.placement("a").unwrap(),
        Some(Placement {
            node_id: 3,
            generation: 4
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_async_commits_all_land_and_a_stale_one_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let st = open(dir.path());
    let comps: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
    let refs: Vec<&str> = comps.iter().map(String::as_str).collect();
    st.create_components(&refs).unwrap();
    for c in &comps {
        st.set_generation(c, 1, 1).unwrap();
    }

    const TASKS: usize = 400;
    const STALE: usize = 137;
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let st = st.clone();
        tasks.push(tokio::spawn(async move {
            let comp = format!("c{}", i % 10);
            let key = format!("k{i:04}").into_bytes();
            let value = vec![b'v'; i % 17];
            let batch = CommitBatch {
                fence: Some(Fence {
                    commit: 0,
                    sequence: 0,
                    peers: Vec::new(),
                    component: comp.clone(),
                    node_id: 1,
                    generation: if i == STALE { 0 } else { 1 },
                }),
                components: vec![ComponentWrites {
                    component: comp,
                    usage_delta: (key.len() + value.len()) as i64,
                    writes: vec![(key, Some(value))],
                }],
                sys: vec![(format!("outbox/{i:04}").into_bytes(), Some(b("m")))],
            };
            (i, st.commit_async(batch).await)
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let (i, r) = t.await.unwrap();
        if i == STALE {
            assert_eq!(
                r,
                Err(StorageError::StaleGeneration {
                    component: format!("c{}", STALE % 10),
                    current: 1,
                    got: 0
                })
            );
        } else {
            r.unwrap();
            ok += 1;
        }
    }
    assert_eq!(ok, TASKS - 1);
    for i in 0..TASKS {
        let comp = format!("c{}", i % 10);
        let key = format!("k{i:04}").into_bytes();
        let got = st.get(&comp, &key).unwrap();
        let outbox = st.sys_get(format!("outbox/{i:04}").as_bytes()).unwrap();
        if i == STALE {
            assert_eq!(got, None);
            assert_eq!(outbox, None);
        } else {
            assert_eq!(got, Some(vec![b'v'; i % 17]));
            assert_eq!(outbox, Some(b("m")));
        }
    }
    for c in &comps {
        assert_eq!(st.usage_bytes(c).unwrap(), scanned_usage(&st, c));
    }
    let stats = st.commit_stats();
    assert_eq!(stats.batches, (TASKS - 1) as u64);
    assert!(stats.groups >= 1 && stats.groups <= stats.batches);

    // Dropping every clone right after async commits closes the database for a re-open.
    drop(st);
    let st = open(dir.path());
    assert_eq!(st.sys_scan_prefix(b"outbox/").unwrap().len(), TASKS - 1);
}

#[tokio::test]
async fn async_commit_of_same_component_applies_in_call_order() {
    let dir = tempfile::tempdir().unwrap();
    let st = open(dir.path());
    st.create_component("a").unwrap();
    let mut futs = Vec::new();
    for i in 0..50u32 {
        futs.push(st.commit_async(CommitBatch {
            components: vec![ComponentWrites {
                component: "a".into(),
                writes: vec![(b("k"), Some(i.to_string().into_bytes()))],
                usage_delta: match i {
                    0 => 2,
                    10 => 1,
                    _ => 0,
                },
            }],
            ..Default::default()
        }));
    }
    for f in futs {
        f.await.unwrap();
    }
    assert_eq!(st.get("a", b"k").unwrap(), Some(b("49")));
    assert_eq!(st.usage_bytes("a").unwrap(), 1 + 2);
}

/// A commit's usage is what its writes change in the store, whatever its `usage_delta`
/// claims (a commit comes from a peer: a made-up delta would take a component past its
/// quota). Several writes of one key in one commit are counted in order.
#[test]
fn usage_is_recomputed_from_the_writes_not_taken_from_the_claim() {
    let dir = tempfile::tempdir().unwrap();
    let st = open(dir.path());
    st.create_component("a").unwrap();
    let writes = |writes: Vec<(Vec<u8>, Option<Vec<u8>>)>, claim: i64| CommitBatch {
        components: vec![ComponentWrites {
            component: "a".into(),
            writes,
            usage_delta: claim,
        }],
        ..Default::default()
    };
    // 1 + 4 bytes, claimed as a huge release of space.
    st.commit(writes(vec![(b("k"), Some(b("vvvv")))], -1_000_000))
        .unwrap();
    assert_eq!(st.usage_bytes("a").unwrap(), 5);
    // Overwriting with a longer value counts the difference; a claim of 0 changes nothing.
    st.commit(writes(vec![(b("k"), Some(b("vvvvvvvv")))], 0))
        .unwrap();
    assert_eq!(st.usage_bytes("a").unwrap(), 9);
    // One batch carrying several transactions' writes (as a Raft entry's apply merges
    // them): a put, then a delete of the same key, then another key, each counted after
    // the one before.
    let mut merged = writes(vec![(b("k"), Some(b("v")))], 0);
    merged
        .components
        .push(writes(vec![(b("k"), None)], 77).components.remove(0));
    merged.components.push(
        writes(vec![(b("other"), Some(b("xy")))], -5)
            .components
            .remove(0),
    );
    st.commit(merged).unwrap();
    assert_eq!(st.usage_bytes("a").unwrap(), 7);
    // Deleting what is not there frees nothing.
    st.commit(writes(vec![(b("missing"), None)], -100)).unwrap();
    assert_eq!(st.usage_bytes("a").unwrap(), 7);
}
