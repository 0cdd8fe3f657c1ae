//! Compiled code on disk: `<cache>/<sha256>-<engine hash>.cwasm`. A node compiles a
//! binary once; restarts and re-installs of the same binary load the cached code.

use super::EngineError;
use std::hash::{Hash, Hasher};
use std::path::Path;
use wasmtime::component::Component;

use super::validate::InvalidComponent;

/// Loads the cached compilation of `binary`, or compiles and caches it.
pub(super) fn load_or_compile(
    engine: &wasmtime::Engine,
    cache_dir: &Path,
    binary: &[u8],
    sha256: &str,
) -> Result<Component, EngineError> {
    let path = cache_dir.join(format!("{sha256}-{:016x}.cwasm", engine_hash(engine)));
    if path.exists() {
        // SAFETY: the file was written by this node from `Component::serialize` of the
        // same engine configuration (the engine hash is in its name), into the node's
        // private data directory. wasmtime also checks the header and refuses a file
        // from a different engine build.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => return Ok(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), "cached code unusable, recompiling: {e}");
            }
        }
    }
    let component = Component::new(engine, binary)
        .map_err(|e| InvalidComponent::new(format!("does not compile: {e:#}")))?;
    match component.serialize() {
        // Caching is an optimisation: a failed write costs a compile next time, nothing more.
        Ok(bytes) => {
            if let Err(e) = write_atomically(&path, &bytes) {
                tracing::warn!("compiled code not cached: {e}");
            }
        }
        Err(e) => tracing::warn!("cannot serialize compiled code, not caching: {e}"),
    }
    Ok(component)
}

fn engine_hash(engine: &wasmtime::Engine) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.finish()
}

/// Write to a temporary name and rename, so a crash never leaves a torn file under
/// the final name. The temporary name is unique: two compiles of one binary at once (a
/// background warm-up and an activation) each write their own file, and either rename wins.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), EngineError> {
    let tmp = path.with_extension(format!("cwasm.{:016x}.tmp", rand::random::<u64>()));
    let err = |e: std::io::Error| EngineError::Cache {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}
