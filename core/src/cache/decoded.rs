//! The decoded cache: parts of immutable objects in the form a query uses
//! them (a cluster's codes as one contiguous buffer, an attribute page or
//! a filtered column as an Arrow array), in memory, bounded and evicting,
//! in front of the block cache.
//!
//! The block cache holds bytes in fixed blocks; a query that reads from it
//! copies every part spanning blocks into one buffer and decodes every
//! Parquet page it touches, each time. A warm query finds those parts here
//! instead and does no copying or decoding it did before. Cold reads fetch
//! exactly the bytes they fetched before: a part is kept only once a query
//! has read it.

use std::sync::Arc;

use arrow::array::ArrayRef;
use bytes::Bytes;
use foyer::{Cache, CacheBuilder, CacheProperties, S3FifoConfig};

/// Which part of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// The codes of one cluster of an index file.
    Codes(u32),
    /// The norms of the codes of one cluster of an index file
    /// ([`crate::index::IvfHeader`]'s `code_norm`, SQ8 under L2), computed
    /// when the codes are kept.
    Norms(u32),
    /// One row's full-precision vector in an index file (re-ranked rows
    /// are scattered: a block of the block cache would keep 64 KiB alive
    /// for each).
    Vector(u32),
    /// One data page of one column of a Parquet file.
    Page {
        /// The schema's field index.
        column: u32,
        /// Pages counted across row groups.
        page: u32,
    },
    /// One whole column of a Parquet file, for filters.
    Column {
        /// The schema's field index.
        column: u32,
    },
    /// One column of a Parquet file sorted by value, for filter lookups.
    Sorted {
        /// The schema's field index.
        column: u32,
    },
    /// Codes of an index file, its rows in the order of one data-file
    /// column's sorted values ([`Part::Sorted`]), a chunk of them: the
    /// rows a lookup finds are then one contiguous run of codes.
    SortedCodes {
        /// The data file's field index.
        column: u32,
        /// Which chunk of sorted positions.
        chunk: u32,
    },
}

/// A part of an object, by the object's path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DecodedKey {
    /// The object's path.
    pub object: Arc<str>,
    /// Which part of it.
    pub part: Part,
}

/// A decoded part.
#[derive(Debug, Clone)]
pub enum Decoded {
    /// Raw bytes, contiguous.
    Bytes(Bytes),
    /// Decoded values.
    Array(ArrayRef),
}

impl Decoded {
    fn weight(&self) -> usize {
        match self {
            Decoded::Bytes(b) => b.len(),
            Decoded::Array(a) => a.get_array_memory_size(),
        }
    }
}

/// Lock shards; each holds a share of the capacity.
const SHARDS: usize = 8;

/// The decoded parts, in memory.
pub struct DecodedCache {
    cache: Cache<DecodedKey, Decoded, foyer::DefaultHasher, CacheProperties>,
}

impl std::fmt::Debug for DecodedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedCache")
            .field("usage", &self.cache.usage())
            .field("capacity", &self.cache.capacity())
            .finish()
    }
}

impl DecodedCache {
    /// A cache of at most `bytes` (0 keeps nothing).
    pub fn new(bytes: usize) -> DecodedCache {
        DecodedCache {
            cache: CacheBuilder::new(bytes.max(1))
                .with_shards(SHARDS)
                // A hit under a shared lock (see the block cache's memory tier).
                .with_eviction_config(S3FifoConfig::default())
                // The key, the value and the cache's own entry (about 64 bytes):
                // small parts (a re-ranked vector) are mostly overhead.
                .with_weighter(|k: &DecodedKey, v: &Decoded| k.object.len() + 96 + v.weight())
                .build(),
        }
    }

    /// The part, if kept.
    pub fn get(&self, key: &DecodedKey) -> Option<Decoded> {
        self.cache.get(key).map(|e| e.value().clone())
    }

    /// Keeps `value` unless it alone is larger than a shard of the cache
    /// (it would flush the shard and overrun the capacity). The caller
    /// passes a value that owns its memory, not a view of a larger buffer:
    /// the weight is what the value keeps alive.
    pub fn insert(&self, key: DecodedKey, value: Decoded) {
        if self.fits(value.weight()) {
            self.cache.insert(key, value);
        }
    }

    /// Whether a value of `bytes` would be kept.
    pub fn fits(&self, bytes: usize) -> bool {
        bytes < self.cache.capacity() / SHARDS
    }

    /// Bytes held.
    pub fn usage(&self) -> usize {
        self.cache.usage()
    }

    /// Bytes it may hold.
    pub fn capacity(&self) -> usize {
        self.cache.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_parts_within_its_capacity() {
        let cache = DecodedCache::new(8 * 64 * 1024);
        let key = |c| DecodedKey {
            object: Arc::from("a/index.ivf"),
            part: Part::Codes(c),
        };
        cache.insert(key(1), Decoded::Bytes(Bytes::from(vec![7u8; 1000])));
        match cache.get(&key(1)) {
            Some(Decoded::Bytes(b)) => assert_eq!(b.len(), 1000),
            other => panic!("{other:?}"),
        }
        assert!(cache.get(&key(2)).is_none());
        // Far more than fits: the cache evicts and stays within bounds.
        for c in 0..500 {
            cache.insert(key(c), Decoded::Bytes(Bytes::from(vec![0u8; 1000])));
        }
        assert!(cache.usage() <= cache.capacity(), "{cache:?}");
        // A part larger than a shard is not kept at all.
        cache.insert(key(9999), Decoded::Bytes(Bytes::from(vec![0u8; 100_000])));
        assert!(cache.get(&key(9999)).is_none());
    }
}
