//! Host bindings generated from `wit/airssys.wit` (`airssys:component@0.1.1`): exports are
//! called asynchronously (so a handler yields at each epoch tick), imports are synchronous
//! and may trap (an internal storage failure aborts the handler and rolls it back).
//!
//! The host binds the world `base` (0.1.0's world), which every component has: a component
//! built against 0.1.0 is matched by semver. The `lifecycle` export, new in 0.1.1, is bound
//! apart ([`lifecycle`]) and looked up per component, since older ones lack it.

wasmtime::component::bindgen!({
    world: "base",
    path: "../wit",
    imports: { default: trappable },
    exports: { default: async },
});

/// The generated world type, under a name that does not clash with wasmtime's
/// `Component`.
pub use self::Base as Component_;
pub use self::BasePre as ComponentPre;
pub use airssys::component::types;

/// The `lifecycle` interface (0.1.1): `migrate`, run when a component's code is upgraded.
pub mod lifecycle {
    wasmtime::component::bindgen!({
        world: "component",
        path: "../wit",
        imports: { default: trappable },
        exports: { default: async },
    });

    pub use self::airssys::component::types::PreviousVersion;
    pub use self::exports::airssys::component::lifecycle::{Guest, GuestIndices};
}
