//! Host bindings generated from `wit/airssys.wit`: exports are called asynchronously
//! (so a handler yields at each epoch tick), imports are synchronous and may trap
//! (an internal storage failure aborts the handler and rolls it back).

wasmtime::component::bindgen!({
    world: "component",
    path: "../wit",
    imports: { default: trappable },
    exports: { default: async },
});

/// The generated world type, under a name that does not clash with wasmtime's
/// `Component`.
pub use self::Component as Component_;
pub use airssys::component::types;
