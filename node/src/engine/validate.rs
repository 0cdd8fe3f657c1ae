//! Install-time checks: the bytes are a component (not a core module, not garbage), and
//! it imports nothing beyond the airssys interfaces and WASI 0.2 (which the node links
//! with an empty, deny-by-default context).

use wasmtime::component::Component;

/// Why a binary cannot be installed; reported to the user as `invalid-component`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid component: {reason}")]
pub struct InvalidComponent {
    pub reason: String,
}

impl InvalidComponent {
    pub fn new(reason: impl Into<String>) -> Self {
        InvalidComponent {
            reason: reason.into(),
        }
    }
}

const WASM_MAGIC: [u8; 4] = *b"\0asm";
/// Layer field of the preamble: 0x0001 for core modules, 0x0001 + layer for
/// components (version 0x0d, layer 0x01).
const CORE_MODULE_VERSION: [u8; 4] = [1, 0, 0, 0];

/// Cheap first look at the header so users get a clear message for the common
/// mistakes (a core module, a text file, an empty upload).
pub(super) fn check_is_component(binary: &[u8]) -> Result<(), InvalidComponent> {
    if binary.is_empty() {
        return Err(InvalidComponent::new("the binary is empty"));
    }
    if binary.len() < 8 || binary[0..4] != WASM_MAGIC {
        return Err(InvalidComponent::new(
            "not a WebAssembly binary (no \\0asm header)",
        ));
    }
    if binary[4..8] == CORE_MODULE_VERSION {
        return Err(InvalidComponent::new(
            "this is a core WebAssembly module, not a component: build for wasm32-wasip2 \
             (or wrap it with `wasm-tools component new`)",
        ));
    }
    Ok(())
}

/// Interfaces a component may import. WASI 0.2 is linked with an empty context (no
/// files, no environment, no sockets), so importing it grants nothing.
fn import_allowed(name: &str) -> bool {
    name.starts_with("airssys:component/") || name.starts_with("wasi:")
}

/// Names the first import the node does not provide.
pub(super) fn check_imports(
    engine: &wasmtime::Engine,
    component: &Component,
) -> Result<(), InvalidComponent> {
    let ty = component.component_type();
    let bad: Vec<&str> = ty
        .imports(engine)
        .map(|(name, _)| name)
        .filter(|name| !import_allowed(name))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(InvalidComponent::new(format!(
            "imports what this host does not provide: {}",
            bad.join(", ")
        )))
    }
}

/// The name of the interface that holds `migrate`, at the version this host speaks (an
/// export of a semver-compatible version is found under it).
pub(super) const LIFECYCLE_EXPORT: &str = "airssys:component/lifecycle@0.1.1";

/// Where the component's `migrate` export is, when it has one. One that exports the
/// lifecycle interface with another shape is refused: the host could never call it.
pub(super) fn migrate_export<T>(
    component: &Component,
    pre: &wasmtime::component::InstancePre<T>,
) -> Result<Option<super::bindings::lifecycle::GuestIndices>, InvalidComponent> {
    if component.get_export_index(None, LIFECYCLE_EXPORT).is_none() {
        return Ok(None);
    }
    super::bindings::lifecycle::GuestIndices::new(pre)
        .map(Some)
        .map_err(|e| {
            InvalidComponent::new(format!(
                "its {LIFECYCLE_EXPORT} export does not match the contract: {e:#}"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks_name_the_mistake() {
        assert!(check_is_component(b"")
            .unwrap_err()
            .reason
            .contains("empty"));
        assert!(check_is_component(b"hello world")
            .unwrap_err()
            .reason
            .contains("not a WebAssembly binary"));
        let core = [0u8, b'a', b's', b'm', 1, 0, 0, 0];
        assert!(check_is_component(&core)
            .unwrap_err()
            .reason
            .contains("core WebAssembly module"));
        let component = [0u8, b'a', b's', b'm', 0x0d, 0, 1, 0];
        assert!(check_is_component(&component).is_ok());
    }

    #[test]
    fn only_airssys_and_wasi_imports_are_allowed() {
        assert!(import_allowed("airssys:component/host@0.1.0"));
        assert!(import_allowed("wasi:cli/environment@0.2.3"));
        assert!(!import_allowed("evil:net/socket"));
        assert!(!import_allowed("airssys:other/thing"));
    }
}
