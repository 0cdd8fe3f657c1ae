//! The wasmtime side of a node: one `Engine` per node with the component model, async
//! calls, the pooling allocator, epoch interruption (handler deadlines) and fuel; the
//! `Linker` with WASI (deny-by-default) and the airssys imports; compilation with an
//! on-disk cache; and validation of a binary against the airssys world.
//!
//! Generic over the store's data `T`: the engine does not know the component layer's host
//! state (`component::HostState`); that layer names the engine it runs on
//! (`component::NodeEngine`) and links its imports when it builds one.

pub mod bindings;
mod cache;
pub mod log_budget;
pub(crate) mod log_pipe;
mod validate;

pub use validate::InvalidComponent;

use crate::engine::bindings::ComponentPre;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances. A handler deadline is checked at each tick, and a
/// running handler yields to the scheduler at each tick so one busy component cannot
/// starve the others.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

pub use crate::caps::POOL_MAX_MEMORY_BYTES;
/// The native call stack a handler may use (deep recursion traps past it, named in the
/// error; the node's own threads are never at risk).
pub const MAX_WASM_STACK_BYTES: usize = 512 << 10;

/// Errors of engine set-up and compilation.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("wasmtime engine set-up failed: {0}")]
    Setup(String),
    #[error(transparent)]
    Invalid(#[from] InvalidComponent),
    #[error("compiled-code cache at {path}: {message}")]
    Cache { path: PathBuf, message: String },
}

/// A compiled, validated component ready to instantiate.
pub struct Prepared<T: 'static> {
    pub pre: ComponentPre<T>,
    pub sha256: String,
    /// Where its `lifecycle.migrate` export is (`None`: it has none, as every component
    /// built against 0.1.0; an upgrade to it has nothing to migrate).
    pub migrate: Option<bindings::lifecycle::GuestIndices>,
}

// By hand: a derive would ask `T: Clone` of the store data.
impl<T: 'static> Clone for Prepared<T> {
    fn clone(&self) -> Self {
        Prepared {
            pre: self.pre.clone(),
            sha256: self.sha256.clone(),
            migrate: self.migrate.clone(),
        }
    }
}

/// The node's wasmtime engine, linker and compile cache.
pub struct WasmEngine<T: 'static> {
    engine: wasmtime::Engine,
    linker: Arc<Linker<T>>,
    cache: cache::CodeCache,
    ticker_stop: Arc<AtomicBool>,
}

impl<T: 'static> Clone for WasmEngine<T> {
    fn clone(&self) -> Self {
        WasmEngine {
            engine: self.engine.clone(),
            linker: self.linker.clone(),
            cache: self.cache.clone(),
            ticker_stop: self.ticker_stop.clone(),
        }
    }
}

/// Adds the host's imports (WASI, airssys) to a linker; the component layer supplies it.
pub type LinkImports<T> = fn(&mut Linker<T>) -> Result<(), EngineError>;

/// Most core instances one component instance may create.
pub const MAX_CORE_INSTANCES_PER_COMPONENT: usize = 64;
/// Most linear memories one component instance may create (all share its memory cap).
pub const MAX_MEMORIES_PER_COMPONENT: usize = 8;
/// Most tables one component instance may create.
pub const MAX_TABLES_PER_COMPONENT: usize = 64;

impl<T: 'static> WasmEngine<T> {
    /// Builds the engine; `cache_dir` holds compiled code keyed by binary sha256 and
    /// engine compatibility hash; `link_imports` adds what components may import.
    pub fn new(
        cache_dir: PathBuf,
        instance_pool: u32,
        link_imports: LinkImports<T>,
    ) -> Result<WasmEngine<T>, EngineError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.consume_fuel(true);
        config.max_wasm_stack(MAX_WASM_STACK_BYTES);
        let mut pool = PoolingAllocationConfig::default();
        // A Rust component has one memory and a few core instances and tables (its
        // main module plus wit-component shims).
        let slots = instance_pool.max(1);
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(4))
            .total_memories(slots)
            .total_tables(slots.saturating_mul(4))
            .total_stacks(slots)
            .max_memory_size(POOL_MAX_MEMORY_BYTES)
            // One component cannot take many slots from everyone.
            .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT as u32)
            .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT as u32)
            .max_tables_per_component(MAX_TABLES_PER_COMPONENT as u32);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine =
            wasmtime::Engine::new(&config).map_err(|e| EngineError::Setup(e.to_string()))?;

        let mut linker = Linker::new(&engine);
        link_imports(&mut linker)?;

        let cache = cache::CodeCache::open(cache_dir)?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.clone(), ticker_stop.clone());
        Ok(WasmEngine {
            engine,
            linker: Arc::new(linker),
            cache,
            ticker_stop,
        })
    }

    pub fn engine(&self) -> &wasmtime::Engine {
        &self.engine
    }

    /// Validates and compiles `binary` (or loads its cached compilation) and links it.
    /// Blocking: compilation of a large component takes seconds; call from a blocking
    /// thread.
    pub fn prepare(&self, binary: &[u8], sha256: &str) -> Result<Prepared<T>, EngineError> {
        validate::check_is_component(binary)?;
        let component = self.cache.load_or_compile(&self.engine, binary)?;
        self.link(component, sha256)
    }

    /// Whether the binary with this SHA-256 (hex) is compiled already: [`Self::prepare`]
    /// then only loads it.
    pub fn is_compiled(&self, sha256: &str) -> bool {
        self.cache.has(&self.engine, sha256)
    }

    fn link(&self, component: Component, sha256: &str) -> Result<Prepared<T>, EngineError> {
        validate::check_imports(&self.engine, &component)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| InvalidComponent::new(format!("cannot link: {e:#}")))?;
        let migrate = validate::migrate_export(&component, &pre)?;
        let pre = ComponentPre::new(pre)
            .map_err(|e| InvalidComponent::new(format!("wrong exports: {e:#}")))?;
        Ok(Prepared {
            pre,
            sha256: sha256.to_string(),
            migrate,
        })
    }
}

impl<T: 'static> Drop for WasmEngine<T> {
    fn drop(&mut self) {
        // The ticker holds its own engine clone; stop it when the last handle goes.
        if Arc::strong_count(&self.ticker_stop) == 1 {
            self.ticker_stop.store(true, Ordering::Relaxed);
        }
    }
}

fn spawn_epoch_ticker(engine: wasmtime::Engine, stop: Arc<AtomicBool>) {
    let spawned = std::thread::Builder::new()
        .name("airssys-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the epoch ticker thread, deadlines will not fire: {e}");
    }
}
