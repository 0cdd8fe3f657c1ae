//! Compiled code on disk: `<cache>/<sha256>-<engine hash>.cwasm`. A node compiles a
//! binary once; restarts and re-installs of the same binary load the cached code.
//!
//! Loading compiled code is unsafe (wasmtime maps it as machine code and trusts it), so
//! the node loads only files it wrote itself, for that binary and this engine:
//! - the digest in the name is computed here from the bytes, never taken from a caller
//!   (a registry entry's claim included), so it is always 64 hex digits;
//! - each file starts with an HMAC-SHA256 tag over the engine's compatibility hash, the
//!   binary's digest and the code, keyed by a secret the node made for its cache
//!   (`<cache>/cache.key`, readable by the node's user only). A file without a valid tag
//!   (copied in, torn, from an earlier build that wrote none) is compiled again and
//!   replaced.

use super::validate::InvalidComponent;
use super::EngineError;
use ring::hmac;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;

const KEY_FILE: &str = "cache.key";
const KEY_BYTES: usize = 32;
const TAG_BYTES: usize = 32;

/// The directory of compiled code and the key its files are tagged with.
#[derive(Clone)]
pub(super) struct CodeCache {
    dir: PathBuf,
    key: hmac::Key,
}

impl CodeCache {
    /// Opens (creating) the cache directory and its key.
    pub(super) fn open(dir: PathBuf) -> Result<CodeCache, EngineError> {
        let err = |path: &Path, e: std::io::Error| EngineError::Cache {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(&dir).map_err(|e| err(&dir, e))?;
        let key_path = dir.join(KEY_FILE);
        let secret = match std::fs::read(&key_path) {
            Ok(bytes) if bytes.len() == KEY_BYTES => bytes,
            // Missing or not ours: a new key (every cached file recompiles once).
            _ => {
                let bytes: [u8; KEY_BYTES] = rand::random();
                write_private(&key_path, &bytes).map_err(|e| err(&key_path, e))?;
                bytes.to_vec()
            }
        };
        Ok(CodeCache {
            dir,
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
        })
    }

    /// Whether compiled code for the binary with this SHA-256 (hex) is on disk: loading it
    /// takes milliseconds, compiling it may take seconds. (The file's tag is checked when
    /// it is loaded; one that fails is compiled again then.)
    pub(super) fn has(&self, engine: &wasmtime::Engine, digest: &str) -> bool {
        self.path(engine_hash(engine), digest).is_file()
    }

    fn path(&self, engine_hash: u64, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{engine_hash:016x}.cwasm"))
    }

    /// Loads the cached compilation of `binary`, or compiles and caches it.
    pub(super) fn load_or_compile(
        &self,
        engine: &wasmtime::Engine,
        binary: &[u8],
    ) -> Result<Component, EngineError> {
        let digest = hex::encode(Sha256::digest(binary));
        let engine_hash = engine_hash(engine);
        let path = self.path(engine_hash, &digest);
        if let Some(code) = self.read_tagged(&path, engine_hash, &digest) {
            // SAFETY: the tag proves this node wrote these bytes, from `Component::serialize`
            // of this binary on an engine with this compatibility hash; wasmtime also
            // checks the header and refuses code from a different engine build.
            match unsafe { Component::deserialize(engine, &code) } {
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
            Ok(code) => {
                let tag = self.tag(engine_hash, &digest, &code);
                if let Err(e) = write_atomically(&path, &[tag.as_ref(), &code]) {
                    tracing::warn!("compiled code not cached: {e}");
                }
            }
            Err(e) => tracing::warn!("cannot serialize compiled code, not caching: {e}"),
        }
        Ok(component)
    }

    /// The key a file's tag is made with: the node's key bound to this engine and binary,
    /// so a tag vouches for the code of exactly that pair.
    fn file_key(&self, engine_hash: u64, digest: &str) -> hmac::Key {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(&engine_hash.to_be_bytes());
        ctx.update(digest.as_bytes());
        hmac::Key::new(hmac::HMAC_SHA256, ctx.sign().as_ref())
    }

    fn tag(&self, engine_hash: u64, digest: &str, code: &[u8]) -> hmac::Tag {
        hmac::sign(&self.file_key(engine_hash, digest), code)
    }

    /// The code in `path` when its tag is this node's for `engine_hash` and `digest`.
    fn read_tagged(&self, path: &Path, engine_hash: u64, digest: &str) -> Option<Vec<u8>> {
        let mut bytes = std::fs::read(path).ok()?;
        if bytes.len() < TAG_BYTES {
            return None;
        }
        let code = bytes.split_off(TAG_BYTES);
        match hmac::verify(&self.file_key(engine_hash, digest), &code, &bytes) {
            Ok(()) => Some(code),
            Err(_) => {
                tracing::warn!(path = %path.display(), "cached code not written by this node; recompiling");
                None
            }
        }
    }
}

fn engine_hash(engine: &wasmtime::Engine) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.finish()
}

/// Writes the key readable by the node's user only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Write to a temporary name and rename, so a crash never leaves a torn file under
/// the final name. The temporary name is unique: two compiles of one binary at once (a
/// background warm-up and an activation) each write their own file, and either rename wins.
fn write_atomically(path: &Path, parts: &[&[u8]]) -> Result<(), EngineError> {
    let tmp = path.with_extension(format!("cwasm.{:016x}.tmp", rand::random::<u64>()));
    let err = |e: std::io::Error| EngineError::Cache {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    std::fs::write(&tmp, parts.concat()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn engine() -> wasmtime::Engine {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        wasmtime::Engine::new(&config).unwrap()
    }

    fn only_cwasm(dir: &Path) -> PathBuf {
        let files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        files[0].clone()
    }

    #[test]
    fn the_file_is_named_by_the_digest_of_the_bytes_and_tagged() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CodeCache::open(dir.path().to_path_buf()).unwrap();
        let binary = wat::parse_str("(component)").unwrap();
        cache.load_or_compile(&engine(), &binary).unwrap();
        let file = only_cwasm(dir.path());
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with(&hex::encode(Sha256::digest(&binary))),
            "{name}"
        );
        let engine = engine();
        let digest = hex::encode(Sha256::digest(&binary));
        assert!(cache
            .read_tagged(&file, engine_hash(&engine), &digest)
            .is_some());
        // The same bytes for another binary's digest do not pass.
        assert!(cache
            .read_tagged(&file, engine_hash(&engine), &"0".repeat(64))
            .is_none());
    }

    #[test]
    fn a_file_the_node_did_not_write_is_never_loaded_and_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CodeCache::open(dir.path().to_path_buf()).unwrap();
        let binary = wat::parse_str("(component)").unwrap();
        let engine = engine();
        cache.load_or_compile(&engine, &binary).unwrap();
        let file = only_cwasm(dir.path());
        let digest = hex::encode(Sha256::digest(&binary));
        // Someone drops real compiled code there, untagged (as an earlier build wrote it).
        let untagged = Component::new(&engine, &binary)
            .unwrap()
            .serialize()
            .unwrap();
        std::fs::write(&file, &untagged).unwrap();
        assert!(cache
            .read_tagged(&file, engine_hash(&engine), &digest)
            .is_none());
        // Loading recompiles and writes a tagged file again.
        cache.load_or_compile(&engine, &binary).unwrap();
        assert!(cache
            .read_tagged(&file, engine_hash(&engine), &digest)
            .is_some());
    }

    #[test]
    fn another_nodes_key_does_not_vouch_for_a_file() {
        let ours = tempfile::tempdir().unwrap();
        let theirs = tempfile::tempdir().unwrap();
        let binary = wat::parse_str("(component)").unwrap();
        let engine = engine();
        let their_cache = CodeCache::open(theirs.path().to_path_buf()).unwrap();
        their_cache.load_or_compile(&engine, &binary).unwrap();
        let theirs_file = only_cwasm(theirs.path());
        let our_cache = CodeCache::open(ours.path().to_path_buf()).unwrap();
        let ours_file = ours.path().join(theirs_file.file_name().unwrap());
        std::fs::copy(&theirs_file, &ours_file).unwrap();
        let digest = hex::encode(Sha256::digest(&binary));
        assert!(our_cache
            .read_tagged(&ours_file, engine_hash(&engine), &digest)
            .is_none());
    }

    #[test]
    fn the_key_survives_a_reopen_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let binary = wat::parse_str("(component)").unwrap();
        let engine = engine();
        CodeCache::open(dir.path().to_path_buf())
            .unwrap()
            .load_or_compile(&engine, &binary)
            .unwrap();
        let reopened = CodeCache::open(dir.path().to_path_buf()).unwrap();
        let digest = hex::encode(Sha256::digest(&binary));
        let file = only_cwasm(dir.path());
        assert!(reopened
            .read_tagged(&file, engine_hash(&engine), &digest)
            .is_some());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
    }
}
