//! [`StorageOptions`] and the RocksDB options built from them.
//!
//! Everything that costs memory is shared across column families so that a node with 1,000
//! components stays cheap: one LRU block cache (index and filter blocks live in it too), one
//! `WriteBufferManager` budget for all memtables, small per-family write buffers with small
//! arena blocks (an idle family's memtable costs a few KiB, not megabytes).

use rocksdb::{BlockBasedOptions, Cache, LogLevel, Options, WriteBufferManager};

/// Tuning for one node's database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageOptions {
    /// Capacity of the LRU block cache shared by every column family (data, index and filter
    /// blocks). Default 64 MiB.
    pub block_cache_bytes: usize,
    /// Memtable budget shared by every column family (one `WriteBufferManager`); when the sum of
    /// all memtables passes it, the largest are flushed. Each family's own write buffer is
    /// `clamp(write_buffer_bytes / 8, 256 KiB, 4 MiB)`. Default 64 MiB.
    pub write_buffer_bytes: usize,
    /// Sync the WAL on every commit (durable across power loss). Default true.
    pub sync_writes: bool,
}

impl Default for StorageOptions {
    fn default() -> Self {
        Self {
            block_cache_bytes: 64 << 20,
            write_buffer_bytes: 64 << 20,
            sync_writes: true,
        }
    }
}

impl StorageOptions {
    /// The write buffer of one column family.
    pub(crate) fn per_cf_write_buffer(&self) -> usize {
        (self.write_buffer_bytes / 8).clamp(256 << 10, 4 << 20)
    }

    /// RocksDB options used both for the database and for every column family. The cache and
    /// write-buffer manager inside are reference counted, so every family built from these
    /// options shares them.
    pub(crate) fn rocks_options(&self) -> Options {
        let cache = Cache::new_lru_cache(self.block_cache_bytes);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        table.set_bloom_filter(10.0, false);

        let mut o = Options::default();
        o.create_if_missing(true);
        o.create_missing_column_families(true);
        o.set_block_based_table_factory(&table);
        o.set_write_buffer_manager(&WriteBufferManager::new_write_buffer_manager(
            self.write_buffer_bytes,
            false,
        ));
        let per_cf = self.per_cf_write_buffer();
        o.set_write_buffer_size(per_cf);
        o.set_max_write_buffer_number(2);
        // Memtables grow in 32 KiB steps: an idle family holds one small block at most.
        o.set_arena_block_size(32 << 10);
        // Bound the WAL so that families with a trickle of writes get flushed eventually.
        o.set_max_total_wal_size((self.write_buffer_bytes as u64).max(32 << 20) * 2);
        o.set_max_background_jobs(2);
        // Table readers are opened on demand; 1,000 families must not exhaust descriptors.
        o.set_max_open_files(512);
        // The info log would otherwise dump the options of every family at each open.
        o.set_log_level(LogLevel::Warn);
        o.set_keep_log_file_num(4);
        o.set_stats_dump_period_sec(0);
        o.set_stats_persist_period_sec(0);
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cf_buffer_is_clamped() {
        let mut o = StorageOptions::default();
        assert_eq!(o.per_cf_write_buffer(), 4 << 20);
        o.write_buffer_bytes = 1 << 20;
        assert_eq!(o.per_cf_write_buffer(), 256 << 10);
        o.write_buffer_bytes = 16 << 20;
        assert_eq!(o.per_cf_write_buffer(), 2 << 20);
    }

    #[test]
    fn defaults_are_durable() {
        assert!(StorageOptions::default().sync_writes);
    }
}
