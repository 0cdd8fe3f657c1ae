//! One installed component: the state shared by all its activations on this node
//! (`ComponentShared`), the per-instance store data and host imports (`HostState`),
//! the actor that runs one message at a time as a transaction (`ComponentActor`), and the
//! pipeline its transactions commit through while it goes on (`CommitPipeline`).

mod actor;
mod host_state;
mod limiter;
mod pipeline;
mod shared;
mod transaction;

pub use actor::{ComponentActor, ComponentFactory, InstantiateError};
pub use host_state::{CallContext, HostState, Outgoing, MAX_PAYLOAD_BYTES};
pub use pipeline::CommitPipeline;
pub use shared::ComponentShared;
