//! Backup and restore through the path the binary runs (a one-node cluster): the backup
//! streamed by `AdminBackend::backup` while a client keeps incrementing, loaded into a new
//! node's data directory, and that node started: every component answers with its state as
//! of the backup (an exact prefix of the increments, none doubled), new installs get fresh
//! generations, and a changed or cut file is refused.
#![allow(clippy::unwrap_used)]

mod common;

use airssys_cluster::backup::{self, format::FormatError, BackupError};
use airssys_node::api::AdminBackend;
use airssys_node::cluster::ClusterHost;
use airssys_storage::{Storage, StorageOptions};
use common::{ask, eventually, install};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

async fn take_backup(node: &ClusterHost) -> Vec<u8> {
    let mut chunks = node.backup().await.unwrap();
    let mut file = Vec::new();
    while let Some(chunk) = chunks.recv().await {
        file.extend_from_slice(&chunk.unwrap());
    }
    file
}

fn restore_into(dir: &std::path::Path, file: &[u8]) -> Result<backup::RestoreSummary, BackupError> {
    let storage = Storage::open(&dir.join("db"), StorageOptions::default()).unwrap();
    backup::restore(file, &storage, 1, &mut |_| {})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_an_exact_prefix_of_the_increments() {
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(common::open(dir.path()).await);
    install(&node, "busy", "counter").await;
    install(&node, "idle", "counter").await;
    install(&node, "echo", "echo").await;
    for i in 0..7 {
        ask(&node, "idle", &format!("inc i{i}")).await.unwrap();
    }
    let before = node.describe("busy").await.unwrap();

    // One client increments `busy` with ids r0, r1, … in order while the backup is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let client = {
        let (node, stop, acked) = (node.clone(), stop.clone(), acked.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) || i < 20 {
                ask(&node, "busy", &format!("inc r{i}")).await.unwrap();
                i += 1;
                acked.store(i, Ordering::Relaxed);
            }
            i
        })
    };
    while acked.load(Ordering::Relaxed) < 10 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let acked_before = acked.load(Ordering::Relaxed);
    let file = take_backup(&node).await;
    let sent_by_end = acked.load(Ordering::Relaxed) + 1;
    stop.store(true, Ordering::Relaxed);
    let total = client.await.unwrap();
    assert_eq!(ask(&node, "busy", "get").await.unwrap(), total.to_string());
    node.shutdown().await;
    drop(node);

    let summary = backup::verify(file.as_slice()).unwrap();
    assert_eq!(summary.components, 3);
    assert!(summary.header.index > 0);
    assert_eq!(summary.bytes, file.len() as u64);

    let restored_dir = tempfile::tempdir().unwrap();
    let loaded = restore_into(restored_dir.path(), &file).unwrap();
    assert_eq!(loaded.components, 3);
    let restored = common::open(restored_dir.path()).await;
    // It bootstraps its own cluster, then runs what the registry gives it.
    eventually(Duration::from_secs(30), || async {
        ask(&restored, "idle", "get").await.ok()
    })
    .await;
    assert_eq!(ask(&restored, "idle", "get").await.unwrap(), "7");
    assert_eq!(ask(&restored, "echo", "hi").await.unwrap(), "hi");
    // `busy` holds exactly the increments r0..rN applied by the backup's index: a prefix.
    let n: u64 = ask(&restored, "busy", "get")
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (acked_before..=sent_by_end).contains(&n),
        "{n} not within [{acked_before}, {sent_by_end}]"
    );
    for i in 0..n.min(total) {
        assert_eq!(
            ask(&restored, "busy", &format!("times r{i}"))
                .await
                .unwrap(),
            "1",
            "r{i}"
        );
    }
    for i in n..total {
        assert_eq!(
            ask(&restored, "busy", &format!("times r{i}"))
                .await
                .unwrap(),
            "0",
            "r{i}"
        );
    }
    // Everything runs on the new node, one generation past the backed-up one; a new install
    // gets a generation none of the old cluster's had.
    let busy = restored.describe("busy").await.unwrap();
    assert_eq!(busy.generation, before.generation + 1);
    install(&restored, "fresh", "echo").await;
    let fresh = restored.describe("fresh").await.unwrap();
    assert!(fresh.generation > summary.header.index, "{fresh:?}");
    // It goes on counting from there.
    assert_eq!(
        ask(&restored, "busy", "inc again").await.unwrap(),
        (n + 1).to_string()
    );
    restored.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_or_cut_backup_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::open(dir.path()).await;
    install(&node, "c", "counter").await;
    ask(&node, "c", "inc").await.unwrap();
    let file = take_backup(&node).await;
    node.shutdown().await;

    // One byte changed in the middle: the checksum says so.
    let mut changed = file.clone();
    let at = changed.len() / 2;
    changed[at] ^= 0x01;
    let err = restore_into(tempfile::tempdir().unwrap().path(), &changed).unwrap_err();
    assert!(
        matches!(
            err,
            BackupError::Format(FormatError::ChecksumMismatch { .. })
                | BackupError::Format(FormatError::Corrupt { .. })
        ),
        "{err}"
    );
    // Cut short: truncated, naming where.
    let err = backup::verify(&file[..file.len() - 40]).unwrap_err();
    assert!(
        matches!(err, BackupError::Format(FormatError::Truncated { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("truncated"), "{err}");
    // Not a backup at all.
    let err = backup::verify(&b"\0asm\x01\0\0\0 a wasm file"[..]).unwrap_err();
    assert!(
        matches!(err, BackupError::Format(FormatError::NotABackup)),
        "{err}"
    );
}

async fn take_export(node: &ClusterHost, name: &str) -> Vec<u8> {
    let mut chunks = node.export(name).await.unwrap();
    let mut file = Vec::new();
    while let Some(chunk) = chunks.recv().await {
        file.extend_from_slice(&chunk.unwrap());
    }
    file
}

async fn import(
    node: &ClusterHost,
    name: &str,
    file: &[u8],
    replace: bool,
) -> Result<airssys_node::api::ComponentInfo, airssys_node::api::ApiError> {
    node.import(airssys_node::api::ImportRequest {
        name: name.into(),
        file: file.to_vec(),
        replace,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_imports_as_a_copy_and_over_a_component_as_one_transaction() {
    use airssys_node::api::ErrorKind;
    let dir = tempfile::tempdir().unwrap();
    let node = common::open(dir.path()).await;
    install(&node, "c", "counter").await;
    for i in 0..3 {
        ask(&node, "c", &format!("inc x{i}")).await.unwrap();
    }
    let original = node.describe("c").await.unwrap();
    let file = take_export(&node, "c").await;
    let summary = backup::verify(file.as_slice()).unwrap();
    assert_eq!(summary.components, 1);

    // A copy under a new name: the same code, limits and data.
    let copy = import(&node, "copy", &file, false).await.unwrap();
    assert_eq!(copy.sha256, original.sha256);
    assert_eq!(copy.limits, original.limits);
    assert_eq!(ask(&node, "copy", "get").await.unwrap(), "3");
    assert_eq!(ask(&node, "copy", "times x1").await.unwrap(), "1");
    // The copy goes its own way; the original is untouched.
    ask(&node, "copy", "inc y").await.unwrap();
    assert_eq!(ask(&node, "c", "get").await.unwrap(), "3");

    // Over an existing one only with `replace`: then its store is the export's, whole
    // (what it wrote since is gone), in one step of its generation.
    let refused = import(&node, "copy", &file, false).await.unwrap_err();
    assert_eq!(refused.error, ErrorKind::AlreadyExists, "{refused}");
    let before = node.describe("copy").await.unwrap();
    let replaced = import(&node, "copy", &file, true).await.unwrap();
    assert_eq!(replaced.generation, before.generation + 1);
    assert_eq!(ask(&node, "copy", "get").await.unwrap(), "3");
    assert_eq!(ask(&node, "copy", "times y").await.unwrap(), "0");
    assert_eq!(replaced.previous, None, "the same code: no code history");

    // Over a component running other code: code and data switch together.
    install(&node, "old", "counter_v1").await;
    ask(&node, "old", "inc").await.unwrap();
    let v1 = node.describe("old").await.unwrap();
    let switched = import(&node, "old", &file, true).await.unwrap();
    assert_eq!(switched.sha256, original.sha256);
    assert_eq!(switched.previous.unwrap().sha256, v1.sha256);
    assert_eq!(ask(&node, "old", "get").await.unwrap(), "3");
    assert!(ask(&node, "old", "tally").await.unwrap().contains("x0 1"));

    // Bad input: a whole-cluster backup, garbage, a cut file, an unknown export name.
    let cluster = take_backup(&node).await;
    let err = import(&node, "z", &cluster, false).await.unwrap_err();
    assert_eq!(err.error, ErrorKind::BadRequest, "{err}");
    assert!(err.message.contains("backup restore"), "{err}");
    let err = import(&node, "z", b"garbage", false).await.unwrap_err();
    assert_eq!(err.error, ErrorKind::BadRequest, "{err}");
    let err = import(&node, "z", &file[..file.len() - 1], false)
        .await
        .unwrap_err();
    assert!(err.message.contains("truncated"), "{err}");
    assert!(node.describe("z").await.is_err(), "nothing was installed");
    let err = node.export("nope").await.unwrap_err();
    assert_eq!(err.error, ErrorKind::NotFound, "{err}");
    node.shutdown().await;
}
