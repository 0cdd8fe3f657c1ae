//! The per-component memory cap, remembering when it was hit so a trap that follows can
//! be reported as `out of memory` rather than a bare `unreachable`.

use wasmtime::ResourceLimiter;

pub(crate) struct MemoryCap {
    max_bytes: usize,
    pub(crate) hit: bool,
}

impl MemoryCap {
    pub(crate) fn new(max_bytes: usize) -> Self {
        MemoryCap {
            max_bytes,
            hit: false,
        }
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million entries is far beyond any real
        // component and keeps a hostile one from eating host memory.
        Ok(desired <= 1_000_000)
    }
}
