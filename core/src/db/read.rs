//! Reading segment files through the block cache, by plan: which byte
//! ranges a read needs is worked out from metadata first, then all of them
//! are fetched in one wave, then decoded from the cache.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, TryStreamExt};
use object_store::path::Path;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
};
use parquet::arrow::async_reader::{
    AsyncFileReader, MetadataFetch, ParquetRecordBatchStreamBuilder,
};
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};

use crate::cache::{BlockCache, ReadStats};
use crate::error::{Error, Result};
use crate::index::IvfHeader;
use crate::manifest::SegmentEntry;
use crate::segment::unwrap_external;

/// Footer bytes fetched when the manifest does not say how many there are.
const FOOTER_GUESS: u64 = 64 * 1024;

/// A parquet file opened through the cache: its metadata (with the page
/// index) parsed, ready for planned reads.
#[derive(Debug, Clone)]
pub(crate) struct CachedParquet {
    pub path: Path,
    pub size: u64,
    pub metadata: ArrowReaderMetadata,
}

/// An indexed segment as a query sees it: the index header and the data
/// file's metadata; codes, vectors and columns are read on demand.
#[derive(Debug)]
pub(crate) struct IndexedSegment {
    pub entry: SegmentEntry,
    pub header: IvfHeader,
    pub index_path: Path,
    pub index_size: u64,
    pub data: CachedParquet,
}

impl IndexedSegment {
    /// Reads the index header and the data file's footer (in parallel).
    pub async fn open(
        cache: &Arc<BlockCache>,
        stats: &Arc<ReadStats>,
        entry: &SegmentEntry,
    ) -> Result<IndexedSegment> {
        let index = entry
            .index
            .as_ref()
            .ok_or_else(|| Error::corrupt("segment", format!("{} has no index", entry.id)))?;
        let index_path = Path::from(index.path.as_str());
        let header_range = 0..index.header_bytes.min(index.size_bytes);
        let (header, data) = futures::try_join!(
            cache.read(
                stats,
                &index_path,
                index.size_bytes,
                std::slice::from_ref(&header_range)
            ),
            CachedParquet::open(cache, stats, entry),
        )?;
        let header = IvfHeader::parse(header.first().map(|b| b.as_ref()).unwrap_or(&[]))?;
        if header.file_len() != index.size_bytes || header.rows() as u64 != entry.rows {
            return Err(Error::corrupt(
                index.path.clone(),
                "the index does not match its manifest entry",
            ));
        }
        Ok(IndexedSegment {
            entry: entry.clone(),
            header,
            index_path,
            index_size: index.size_bytes,
            data,
        })
    }
}

impl CachedParquet {
    /// Parses the footer and page index, fetched with one suffix read when
    /// the manifest knows their size.
    pub async fn open(
        cache: &Arc<BlockCache>,
        stats: &Arc<ReadStats>,
        entry: &SegmentEntry,
    ) -> Result<CachedParquet> {
        let path = Path::from(entry.data_path.as_str());
        let size = entry.size_bytes;
        let hint = if entry.footer_bytes > 0 {
            entry.footer_bytes
        } else {
            FOOTER_GUESS
        };
        let fetch = CachedFile {
            cache: Arc::clone(cache),
            stats: Arc::clone(stats),
            path: path.clone(),
            size,
            metadata: None,
        };
        let metadata = ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Optional)
            .with_prefetch_hint(Some(hint.min(size) as usize))
            .load_and_finish(fetch, size)
            .await
            .map_err(unwrap_external)?;
        let metadata = ArrowReaderMetadata::try_new(
            Arc::new(metadata),
            ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional),
        )?;
        Ok(CachedParquet {
            path,
            size,
            metadata,
        })
    }

    pub fn schema(&self) -> &SchemaRef {
        self.metadata.schema()
    }

    pub fn num_rows(&self) -> usize {
        self.metadata.metadata().file_metadata().num_rows() as usize
    }

    /// The byte ranges holding `columns` of `rows` (all rows when `None`):
    /// only the pages with selected rows, plus dictionary pages.
    pub fn plan(&self, columns: &[&str], rows: Option<&[Range<usize>]>) -> Result<Vec<Range<u64>>> {
        let metadata = self.metadata.metadata();
        let leaves = self.leaves(columns)?;
        let page_index = metadata.page_index();
        let mut out = Vec::new();
        let mut first_row = 0usize;
        for (g, group) in metadata.row_groups().iter().enumerate() {
            let group_rows = first_row..first_row + group.num_rows() as usize;
            first_row = group_rows.end;
            let overlaps = |r: &Range<usize>| r.start < group_rows.end && group_rows.start < r.end;
            if let Some(rows) = rows
                && !rows.iter().any(overlaps)
            {
                continue;
            }
            for &leaf in &leaves {
                let chunk = group.column(leaf);
                let (start, len) = chunk.byte_range();
                let pages = page_index
                    .and_then(|p| p.offset_index(g, leaf))
                    .map(|o| o.page_locations());
                let (Some(rows), Some(pages)) = (rows, pages) else {
                    out.push(start..start + len);
                    continue;
                };
                if let Some(first) = pages.first()
                    && first.offset as u64 > start
                {
                    // The dictionary page sits before the first data page.
                    out.push(start..first.offset as u64);
                }
                for (i, page) in pages.iter().enumerate() {
                    let from = group_rows.start + page.first_row_index as usize;
                    let to = pages
                        .get(i + 1)
                        .map(|next| group_rows.start + next.first_row_index as usize)
                        .unwrap_or(group_rows.end);
                    if rows.iter().any(|r| r.start < to && from < r.end) {
                        let at = page.offset as u64;
                        out.push(at..at + page.compressed_page_size as u64);
                    }
                }
            }
        }
        Ok(out)
    }

    fn leaves(&self, columns: &[&str]) -> Result<Vec<usize>> {
        let descr = self.metadata.metadata().file_metadata().schema_descr();
        for name in columns {
            if self.schema().index_of(name).is_err() {
                return Err(Error::corrupt(
                    self.path.to_string(),
                    format!("no column {name:?}"),
                ));
            }
        }
        Ok((0..descr.num_columns())
            .filter(|i| {
                descr
                    .column(*i)
                    .path()
                    .parts()
                    .first()
                    .is_some_and(|root| columns.contains(&root.as_str()))
            })
            .collect())
    }

    /// Fetches what [`CachedParquet::plan`] names (one wave), then decodes
    /// `columns` of `rows` from the cache. Rows come back in file order.
    pub async fn read(
        &self,
        cache: &Arc<BlockCache>,
        stats: &Arc<ReadStats>,
        columns: &[&str],
        rows: Option<&[Range<usize>]>,
    ) -> Result<RecordBatch> {
        let plan = self.plan(columns, rows)?;
        cache.read(stats, &self.path, self.size, &plan).await?;
        self.decode(cache, stats, columns, rows).await
    }

    /// Decodes from the cache; anything the plan missed is fetched here.
    pub async fn decode(
        &self,
        cache: &Arc<BlockCache>,
        stats: &Arc<ReadStats>,
        columns: &[&str],
        rows: Option<&[Range<usize>]>,
    ) -> Result<RecordBatch> {
        let reader = CachedFile {
            cache: Arc::clone(cache),
            stats: Arc::clone(stats),
            path: self.path.clone(),
            size: self.size,
            metadata: Some(Arc::clone(self.metadata.metadata())),
        };
        let mut builder =
            ParquetRecordBatchStreamBuilder::new_with_metadata(reader, self.metadata.clone());
        let indices = columns
            .iter()
            .map(|n| self.schema().index_of(n))
            .collect::<Result<Vec<_>, _>>()?;
        let projected = Arc::new(self.schema().project(&indices)?);
        let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
        builder = builder.with_projection(mask);
        if let Some(rows) = rows {
            let total = self.num_rows();
            if let Some(bad) = rows.iter().find(|r| r.end > total || r.start > r.end) {
                return Err(Error::corrupt(
                    self.path.to_string(),
                    format!("row range {bad:?} outside 0..{total}"),
                ));
            }
            builder = builder.with_row_selection(RowSelection::from_consecutive_ranges(
                rows.iter().cloned(),
                total,
            ));
        }
        let batches: Vec<RecordBatch> = builder
            .with_batch_size(64 * 1024)
            .build()?
            .try_collect()
            .await
            .map_err(unwrap_external)?;
        Ok(arrow::compute::concat_batches(&projected, &batches)?)
    }
}

/// A whole small file (unindexed segment, delete file) read with one GET
/// and decoded in memory.
pub(crate) async fn read_whole(
    cache: &Arc<BlockCache>,
    stats: &Arc<ReadStats>,
    path: &str,
    size: u64,
) -> Result<RecordBatch> {
    let bytes = cache.read_all(stats, &Path::from(path), size).await?;
    decode_whole(bytes)
}

pub(crate) fn decode_whole(bytes: Bytes) -> Result<RecordBatch> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    let schema = Arc::clone(builder.schema());
    let batches = builder
        .with_batch_size(64 * 1024)
        .build()?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(arrow::compute::concat_batches(&schema, &batches)?)
}

/// Row numbers as sorted, merged ranges.
pub(crate) fn row_ranges(rows: &[u32]) -> Vec<Range<usize>> {
    let mut sorted = rows.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<Range<usize>> = Vec::new();
    for r in sorted {
        let r = r as usize;
        match out.last_mut() {
            Some(last) if last.end == r => last.end = r + 1,
            _ => out.push(r..r + 1),
        }
    }
    out
}

/// `AsyncFileReader` and `MetadataFetch` over the block cache.
struct CachedFile {
    cache: Arc<BlockCache>,
    stats: Arc<ReadStats>,
    path: Path,
    size: u64,
    metadata: Option<Arc<ParquetMetaData>>,
}

impl CachedFile {
    async fn ranges(&self, ranges: Vec<Range<u64>>) -> parquet::errors::Result<Vec<Bytes>> {
        self.cache
            .read(&self.stats, &self.path, self.size, &ranges)
            .await
            .map_err(|e| ParquetError::External(Box::new(e)))
    }
}

impl MetadataFetch for CachedFile {
    fn fetch(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move { Ok(self.ranges(vec![range]).await?.pop().unwrap_or_default()) }.boxed()
    }
}

impl AsyncFileReader for CachedFile {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move { Ok(self.ranges(vec![range]).await?.pop().unwrap_or_default()) }.boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move { self.ranges(ranges).await }.boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            self.metadata
                .clone()
                .ok_or_else(|| ParquetError::General("metadata not loaded".into()))
        }
        .boxed()
    }
}
