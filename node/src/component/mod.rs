//! One installed component: the state shared by all its activations on this node
//! (`ComponentShared`), the per-instance store data and host imports (`HostState`),
//! the actor that runs one message at a time as a transaction (`ComponentActor`), and the
//! pipeline its transactions commit through while it goes on (`CommitPipeline`, which
//! knows of the component only its `CommitTarget`), the caps of component storage, and
//! the switch to new code at an upgrade (`upgrade`), and the idempotency records its
//! handlers see (`recent_keys`).

mod actor;
mod caps;
mod host_state;
mod limiter;
mod pipeline;
mod recent_keys;
mod shared;
mod transaction;
mod upgrade;

pub use actor::{ComponentActor, ComponentFactory, InstantiateError};
pub use host_state::{CallContext, HostState, Outgoing, MAX_PAYLOAD_BYTES};
pub use pipeline::CommitPipeline;
pub use shared::ComponentShared;
pub use upgrade::{Code, ProposeUpgrade, UpgradeOrder};

use crate::engine::{EngineError, WasmEngine};
use std::path::PathBuf;

/// The engine components run on: its stores hold a [`HostState`].
pub type NodeEngine = WasmEngine<HostState>;
/// A component compiled and linked for [`NodeEngine`].
pub type Prepared = crate::engine::Prepared<HostState>;

/// Builds the node's engine with the host's imports: WASI (deny-by-default, as the host
/// state builds it) and the airssys interfaces [`HostState`] implements.
pub fn new_engine(cache_dir: PathBuf, instance_pool: u32) -> Result<NodeEngine, EngineError> {
    WasmEngine::new(cache_dir, instance_pool, |linker| {
        wasmtime_wasi::p2::add_to_linker_async(linker)
            .map_err(|e| EngineError::Setup(format!("linking WASI: {e}")))?;
        crate::engine::bindings::Component_::add_to_linker::<
            HostState,
            wasmtime::component::HasSelf<HostState>,
        >(linker, |s| s)
        .map_err(|e| EngineError::Setup(format!("linking airssys imports: {e}")))
    })
}
