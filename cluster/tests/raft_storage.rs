//! openraft's own storage test suite run against our Raft log (`LogStore`, whose `append`
//! returns before its fsync and serves entries from memory until then) and state machine,
//! both on a real RocksDB in a temporary directory.
#![allow(clippy::unwrap_used)]

use airssys_cluster::raft::log_store::LogStore;
use airssys_cluster::raft::state_machine::StateMachine;
use airssys_cluster::raft::types::TypeConfig;
use airssys_storage::{Storage, StorageOptions};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use std::sync::Arc;

struct OnRocksDb;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for OnRocksDb {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), StorageOptions::default()).unwrap();
        let log = LogStore::open(storage.clone())?;
        let sm = StateMachine::open(
            storage,
            Arc::new(|_: &Storage, _: &str, _: u64| Default::default()),
        )?;
        Ok((dir, log, sm))
    }
}

#[test]
fn the_log_and_state_machine_pass_openrafts_storage_suite() {
    Suite::test_all(OnRocksDb).unwrap();
}
