//! The per-component memory cap, remembering when it was hit so a trap that follows can
//! be reported as `out of memory` rather than a bare `unreachable`.
//!
//! The cap is for the whole component instance: every linear memory of every core instance
//! in it counts against the same budget (a component made of many core modules cannot get
//! the cap once per memory), and the number of core instances, memories and tables is
//! bounded too.

use crate::engine::{
    MAX_CORE_INSTANCES_PER_COMPONENT as MAX_INSTANCES, MAX_MEMORIES_PER_COMPONENT as MAX_MEMORIES,
    MAX_TABLES_PER_COMPONENT as MAX_TABLES,
};
use wasmtime::ResourceLimiter;
/// Largest table (function references): far beyond any real component.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

pub(crate) struct MemoryCap {
    max_bytes: usize,
    /// Bytes of all linear memories of the instance so far.
    used_bytes: usize,
    pub(crate) hit: bool,
    /// The most memory a refused growth asked for (what the component would have used).
    pub(crate) wanted_bytes: usize,
}

impl MemoryCap {
    pub(crate) fn new(max_bytes: usize) -> Self {
        MemoryCap {
            max_bytes,
            used_bytes: 0,
            hit: false,
            wanted_bytes: 0,
        }
    }

    /// Whether one memory may grow from `current` to `desired` bytes (a new memory grows
    /// from 0), counting every memory of the instance; records the growth when it may.
    fn grow(&mut self, current: usize, desired: usize) -> bool {
        let after = self
            .used_bytes
            .saturating_sub(current)
            .saturating_add(desired);
        if after > self.max_bytes {
            self.hit = true;
            self.wanted_bytes = self.wanted_bytes.max(after);
            return false;
        }
        self.used_bytes = after;
        true
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(current, desired))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_memory_of_the_instance_counts_against_one_cap() {
        let mut cap = MemoryCap::new(100);
        assert!(cap.grow(0, 60), "a first memory of 60");
        assert!(!cap.grow(0, 60), "a second memory of 60 would make 120");
        assert!(cap.hit);
        assert!(cap.grow(0, 40), "a second memory of 40 fits");
        assert!(
            cap.grow(60, 50),
            "the first shrinks its share when it is counted again"
        );
        assert!(!cap.grow(40, 51));
        assert!(cap.grow(40, 50), "exactly the cap");
    }
}
