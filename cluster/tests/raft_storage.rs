//! openraft's own storage test suite run against our Raft log (`LogStore`, whose `append`
//! returns before its fsync and serves entries from memory until then) and state machine,
//! both on a real RocksDB in a temporary directory.
#![allow(clippy::unwrap_used)]

use airssys_cluster::raft::log_store::LogStore;
use airssys_cluster::raft::state_machine::StateMachine;
use airssys_cluster::raft::types::TypeConfig;
use airssys_cluster::{Keyspace, RemovalPlan};
use airssys_storage::{Storage, StorageOptions};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use std::sync::Arc;

struct OnRocksDb;

/// Keyspace rules for a state machine with no messaging records.
struct NoMessaging;

impl Keyspace for NoMessaging {
    fn removal_plan(&self, _: &Storage, _: &str, _: u64) -> RemovalPlan {
        RemovalPlan::default()
    }
    fn commit_may_write(&self, _: &str, _: &[u8], _: bool) -> bool {
        false
    }
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for OnRocksDb {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), StorageOptions::default()).unwrap();
        let log = LogStore::open(storage.clone())?;
        let sm = StateMachine::open(storage, Arc::new(NoMessaging))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn the_log_and_state_machine_pass_openrafts_storage_suite() {
    Suite::test_all(OnRocksDb).unwrap();
}

/// A store left behind by a removal that a crash interrupted (the registry no longer holds
/// the component) is dropped when the state machine opens, before anything is applied, so a
/// later install of the name starts empty; a registered component's store is kept.
#[test]
fn opening_the_state_machine_drops_stores_the_registry_does_not_hold() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    storage.create_component("orphan").unwrap();
    assert!(storage.has_component("orphan"));
    let _sm = StateMachine::open(storage.clone(), Arc::new(NoMessaging)).unwrap();
    assert!(!storage.has_component("orphan"));
}
