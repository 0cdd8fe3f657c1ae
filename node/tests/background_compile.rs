//! A node whose compiled-code cache is empty (new, wiped, or after an upgrade of airssys)
//! starts without compiling first: what it owns waits as `compiling` while its binary
//! compiles in the background, then starts from the fresh cache and answers with its
//! state intact.
#![allow(clippy::unwrap_used)]

mod common;

use airssys_node::api::{AdminBackend, ComponentState};
use std::time::Duration;

fn cached_code(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(dir.join("compiled")) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_cache_is_compiled_in_the_background_and_the_component_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let host = common::open(dir.path()).await;
    common::install(&host, "counter", "counter").await;
    assert_eq!(
        common::ask(&host, "counter", "inc").await.unwrap().trim(),
        "1"
    );
    host.shutdown().await;
    drop(host);

    let data = common::config(dir.path()).data_dir;
    let cached = cached_code(&data);
    assert!(!cached.is_empty(), "no compiled code in {}", data.display());
    for file in cached {
        std::fs::remove_file(file).unwrap();
    }

    let host = common::open(dir.path()).await;
    // While it waits, it is `compiling` (or already running, if the compile was quick);
    // never failed, never missing.
    let state = host.describe("counter").await.unwrap().state;
    assert!(
        matches!(
            state,
            ComponentState::Compiling { .. } | ComponentState::Running | ComponentState::Starting
        ),
        "{state:?}"
    );
    let count = common::eventually(Duration::from_secs(60), || async {
        common::ask(&host, "counter", "get").await.ok()
    })
    .await;
    assert_eq!(count.trim(), "1", "the count survived the recompile");
    assert_eq!(
        host.describe("counter").await.unwrap().state,
        ComponentState::Running
    );
    assert!(
        !cached_code(&data).is_empty(),
        "the background compile did not fill the cache"
    );
    host.shutdown().await;
}
