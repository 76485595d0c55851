//! The read seam: "these byte ranges of this immutable object". The plain
//! object store implements it (maintenance reads files once, straight from
//! the store) and so does the block cache (queries), so the one Parquet
//! reader and the index reads work over either.

use std::fmt::Debug;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::ObjectStore;
use object_store::path::Path;

use crate::cache::DecodedCache;
use crate::error::{Error, Result};

/// Byte ranges of immutable objects (their size is known from a manifest).
pub trait RangeSource: Send + Sync + Debug {
    /// The bytes of `ranges` of the object at `path`, `size` bytes long.
    fn read_ranges<'a>(
        &'a self,
        path: &'a Path,
        size: u64,
        ranges: &'a [Range<u64>],
    ) -> BoxFuture<'a, Result<Vec<Bytes>>>;

    /// Whether what is read stays here: a reader can then fetch everything
    /// a read needs in one wave first and decode from here after.
    fn keeps_reads(&self) -> bool;

    /// The bytes of each of `ranges` of the object at `path` that are in
    /// memory here (else `None`): no read, no wait.
    fn resident(&self, _path: &Path, ranges: &[Range<u64>]) -> Vec<Option<Bytes>> {
        vec![None; ranges.len()]
    }

    /// Where decoded parts of objects are kept between reads, if anywhere.
    fn decoded(&self) -> Option<&DecodedCache> {
        None
    }
}

/// Ranged GETs straight to the object store.
#[derive(Debug, Clone)]
pub struct StoreSource(pub Arc<dyn ObjectStore>);

impl RangeSource for StoreSource {
    fn read_ranges<'a>(
        &'a self,
        path: &'a Path,
        _size: u64,
        ranges: &'a [Range<u64>],
    ) -> BoxFuture<'a, Result<Vec<Bytes>>> {
        async move {
            self.0
                .get_ranges(path, ranges)
                .await
                .map_err(|e| Error::store("get", path, e))
        }
        .boxed()
    }

    fn keeps_reads(&self) -> bool {
        false
    }
}
