//! Reading segment files with ranged requests.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, RowSelection};
use parquet::arrow::async_reader::{
    AsyncFileReader, MetadataFetch, MetadataSuffixFetch, ParquetRecordBatchStreamBuilder,
};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use crate::error::{Error, Result};

/// Footer bytes fetched in the first request: enough for the metadata of a
/// typical segment, so opening one is a single ranged GET.
const FOOTER_PREFETCH: usize = 64 * 1024;

/// `AsyncFileReader` over any `ObjectStore`: every read is a ranged GET
/// (parquet 60 deprecated its own object_store reader, so we keep this seam,
/// which is also where a block cache plugs in).
#[derive(Debug, Clone)]
pub struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: Option<u64>,
}

impl ObjectReader {
    /// `size` (known from the manifest) saves nothing in requests but lets
    /// the footer be fetched with a plain range instead of a suffix range.
    pub fn new(store: Arc<dyn ObjectStore>, path: Path, size: Option<u64>) -> Self {
        Self { store, path, size }
    }

    fn store_error(&self, op: &'static str, e: object_store::Error) -> ParquetError {
        ParquetError::External(Box::new(Error::store(op, &self.path, e)))
    }
}

impl MetadataSuffixFetch for &mut ObjectReader {
    fn fetch_suffix(&mut self, suffix: usize) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            let options = GetOptions {
                range: Some(GetRange::Suffix(suffix as u64)),
                ..Default::default()
            };
            let result = self
                .store
                .get_opts(&self.path, options)
                .await
                .map_err(|e| self.store_error("get", e))?;
            result.bytes().await.map_err(|e| self.store_error("get", e))
        }
        .boxed()
    }
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(|e| self.store_error("get", e))
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(|e| self.store_error("get", e))
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let reader = ParquetMetaDataReader::new().with_prefetch_hint(Some(FOOTER_PREFETCH));
            let metadata = match self.size {
                Some(size) => reader.load_and_finish(Fetch(self), size).await?,
                None => reader.load_via_suffix_and_finish(self).await?,
            };
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// Adapts the reader to `MetadataFetch` for the known-size path.
struct Fetch<'a>(&'a mut ObjectReader);

impl MetadataFetch for Fetch<'_> {
    fn fetch(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.0.get_bytes(range)
    }
}

/// Which rows to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RowFilter {
    #[default]
    All,
    /// Whole row groups, by index.
    RowGroups(Vec<usize>),
    /// Row ranges (file row numbers), sorted and non-overlapping.
    Ranges(Vec<Range<usize>>),
}

/// An opened segment: footer parsed, ready for projected, selective reads.
#[derive(Debug, Clone)]
pub struct SegmentReader {
    reader: ObjectReader,
    metadata: ArrowReaderMetadata,
}

impl SegmentReader {
    /// Fetches and parses the footer (one ranged GET for typical segments).
    pub async fn open(store: Arc<dyn ObjectStore>, path: Path, size: Option<u64>) -> Result<Self> {
        let mut reader = ObjectReader::new(store, path, size);
        let metadata = ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::new())
            .await
            .map_err(unwrap_external)?;
        Ok(Self { reader, metadata })
    }

    pub fn schema(&self) -> &SchemaRef {
        self.metadata.schema()
    }

    pub fn num_rows(&self) -> u64 {
        self.metadata.metadata().file_metadata().num_rows() as u64
    }

    pub fn num_row_groups(&self) -> usize {
        self.metadata.metadata().num_row_groups()
    }

    /// Reads `columns` (all when `None`) of the selected rows.
    pub async fn read(
        &self,
        columns: Option<&[&str]>,
        rows: &RowFilter,
    ) -> Result<Vec<RecordBatch>> {
        let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(
            self.reader.clone(),
            self.metadata.clone(),
        );
        if let Some(columns) = columns {
            let schema = self.metadata.schema();
            let mut indices = Vec::with_capacity(columns.len());
            for name in columns {
                let index = schema
                    .index_of(name)
                    .map_err(|_| Error::invalid("columns", format!("no column {name:?}")))?;
                indices.push(index);
            }
            let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
            builder = builder.with_projection(mask);
        }
        match rows {
            RowFilter::All => {}
            RowFilter::RowGroups(groups) => {
                if let Some(bad) = groups.iter().find(|g| **g >= self.num_row_groups()) {
                    return Err(Error::invalid("row_groups", format!("no row group {bad}")));
                }
                builder = builder.with_row_groups(groups.clone());
            }
            RowFilter::Ranges(ranges) => {
                let total = self.num_rows() as usize;
                if let Some(bad) = ranges.iter().find(|r| r.end > total || r.start > r.end) {
                    return Err(Error::invalid(
                        "rows",
                        format!("range {bad:?} outside 0..{total}"),
                    ));
                }
                let selection =
                    RowSelection::from_consecutive_ranges(ranges.iter().cloned(), total);
                builder = builder.with_row_selection(selection);
            }
        }
        let stream = builder.build()?;
        stream.try_collect().await.map_err(unwrap_external)
    }
}

/// Our own errors travel through parquet as `External`; take them back out so
/// callers see the object-store error kind (not found, unavailable).
pub(crate) fn unwrap_external(e: ParquetError) -> Error {
    match e {
        ParquetError::External(inner) => match inner.downcast::<Error>() {
            Ok(ours) => *ours,
            Err(other) => Error::Parquet(ParquetError::External(other)),
        },
        other => Error::Parquet(other),
    }
}
