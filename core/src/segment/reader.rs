//! The one Parquet reader, over a [`RangeSource`]: queries read through the
//! block cache by plan (which byte ranges a read needs is worked out from
//! the metadata first, all of them are fetched in one wave, then decoded
//! from the cache); maintenance reads straight from the store.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
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

use super::source::RangeSource;
use crate::cache::{Decoded, DecodedKey, Part};
use crate::error::{Error, Result};

/// Footer bytes fetched when the manifest does not say how many there are.
const FOOTER_GUESS: u64 = 64 * 1024;

/// An opened Parquet file: its metadata (with the page index) parsed,
/// ready for projected reads of selected rows.
#[derive(Debug, Clone)]
pub struct ParquetFile {
    path: Path,
    size: u64,
    metadata: ArrowReaderMetadata,
}

impl ParquetFile {
    /// Parses the footer and page index of the `size`-byte file at `path`:
    /// one read of its last `footer_bytes` (from the manifest; 0 when
    /// unknown, then a guess).
    pub async fn open(
        source: &Arc<dyn RangeSource>,
        path: Path,
        size: u64,
        footer_bytes: u64,
    ) -> Result<ParquetFile> {
        let hint = if footer_bytes > 0 {
            footer_bytes
        } else {
            FOOTER_GUESS
        };
        let fetch = SourceFile {
            source: Arc::clone(source),
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
        Self::with_metadata(path, size, metadata)
    }

    /// [`ParquetFile::open`] from the file's last bytes, already read
    /// (they must hold the footer and the page index).
    pub fn from_footer(path: Path, size: u64, footer: &Bytes) -> Result<ParquetFile> {
        let mut reader =
            ParquetMetaDataReader::new().with_page_index_policy(PageIndexPolicy::Optional);
        let parsed = reader
            .try_parse_sized(footer, size)
            .and_then(|()| reader.finish())
            .map_err(|e| Error::corrupt(path.to_string(), e))?;
        Self::with_metadata(path, size, parsed)
    }

    fn with_metadata(path: Path, size: u64, metadata: ParquetMetaData) -> Result<ParquetFile> {
        let metadata = ArrowReaderMetadata::try_new(
            Arc::new(metadata),
            ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional),
        )?;
        Ok(ParquetFile {
            path,
            size,
            metadata,
        })
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its Arrow schema.
    pub fn schema(&self) -> &SchemaRef {
        self.metadata.schema()
    }

    /// Its rows.
    pub fn num_rows(&self) -> usize {
        self.metadata.metadata().file_metadata().num_rows() as usize
    }

    /// Its row groups.
    pub fn num_row_groups(&self) -> usize {
        self.metadata.metadata().num_row_groups()
    }

    /// The names of every column but `except`.
    pub fn column_names_except(&self, except: &str) -> Vec<String> {
        self.schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| n != except)
            .collect()
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
        self.check_columns(columns)?;
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

    /// A column the file lacks is a damaged (or foreign) file.
    fn check_columns(&self, columns: &[&str]) -> Result<()> {
        match columns.iter().find(|n| self.schema().index_of(n).is_err()) {
            Some(name) => Err(Error::corrupt(
                self.path.to_string(),
                format!("no column {name:?}"),
            )),
            None => Ok(()),
        }
    }

    /// Reads `columns` (every column when `None`) of `rows` (file row
    /// numbers; all when `None`), in file order. A source that keeps reads
    /// gets every byte range [`ParquetFile::plan`] names in one wave first.
    pub async fn read(
        &self,
        source: &Arc<dyn RangeSource>,
        columns: Option<&[&str]>,
        rows: Option<&[Range<usize>]>,
    ) -> Result<RecordBatch> {
        let schema = Arc::clone(self.schema());
        let columns: Vec<&str> = match columns {
            Some(names) => names.to_vec(),
            None => schema.fields().iter().map(|f| f.name().as_str()).collect(),
        };
        self.check_columns(&columns)?;
        if source.keeps_reads() {
            let plan = self.plan(&columns, rows)?;
            source.read_ranges(&self.path, self.size, &plan).await?;
        }
        self.decode(source, &columns, rows).await
    }

    /// `columns` of `rows` (file row numbers; sorted and deduplicated
    /// here), as [`ParquetFile::read`] returns them, page by page through the
    /// source's decoded cache: the pages holding the rows are read and
    /// decoded whole once (the same bytes a read of the rows fetches) and
    /// kept decoded, so later reads of rows on them decode nothing. Files
    /// without a page index, nested columns and sources without a decoded
    /// cache take the plain read.
    pub async fn read_rows(
        &self,
        source: &Arc<dyn RangeSource>,
        columns: &[&str],
        rows: &[u32],
    ) -> Result<RecordBatch> {
        if !rows.is_sorted_by(|a, b| a < b) {
            let mut sorted = rows.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            return Box::pin(self.read_rows(source, columns, &sorted)).await;
        }
        let pages: Option<Vec<Vec<Range<usize>>>> = columns
            .iter()
            .map(|name| match self.leaves(&[name]).ok()?.as_slice() {
                [leaf] => self.page_rows(*leaf),
                _ => None,
            })
            .collect();
        let (Some(decoded), Some(pages), false) = (source.decoded(), pages, rows.is_empty()) else {
            return self
                .read(source, Some(columns), Some(&row_ranges(rows)))
                .await;
        };
        let object: Arc<str> = Arc::from(self.path.as_ref());
        let key = |column: usize, page: usize| DecodedKey {
            object: Arc::clone(&object),
            part: Part::Page {
                column: column as u32,
                page: page as u32,
            },
        };
        // Per column: the page of each row, and those pages decoded or to read.
        struct ColumnPages<'n> {
            name: &'n str,
            field: usize,
            page_of_row: Vec<usize>,
            found: HashMap<usize, arrow::array::ArrayRef>,
            missing: Vec<usize>,
        }
        let mut wanted = Vec::with_capacity(columns.len());
        for (name, pages) in columns.iter().zip(&pages) {
            let field = self.schema().index_of(name)?;
            let page_of_row: Vec<usize> = rows
                .iter()
                .map(|r| pages.partition_point(|p| p.end <= *r as usize))
                .collect();
            if page_of_row.iter().any(|p| *p >= pages.len()) {
                return Err(Error::corrupt(
                    self.path.to_string(),
                    format!(
                        "a row beyond the {} rows of column {name:?}",
                        self.num_rows()
                    ),
                ));
            }
            let mut on = page_of_row.clone();
            on.dedup();
            let mut found = HashMap::new();
            let mut missing = Vec::new();
            for page in on {
                match decoded.get(&key(field, page)) {
                    Some(Decoded::Array(array)) => {
                        found.insert(page, array);
                    }
                    _ => missing.push(page),
                }
            }
            wanted.push(ColumnPages {
                name,
                field,
                page_of_row,
                found,
                missing,
            });
        }
        // Every column's missing pages in one wave.
        let reads = wanted.iter().zip(&pages).map(|(column, pages)| async move {
            if column.missing.is_empty() {
                return Ok(None);
            }
            let spans: Vec<Range<usize>> =
                column.missing.iter().map(|p| pages[*p].clone()).collect();
            let name = [column.name];
            Ok::<_, Error>(Some(self.read(source, Some(&name), Some(&spans)).await?))
        });
        let read = futures::future::try_join_all(reads).await?;
        let mut out = Vec::with_capacity(columns.len());
        let mut fields = Vec::with_capacity(columns.len());
        for (mut column, (batch, pages)) in wanted.into_iter().zip(read.into_iter().zip(&pages)) {
            if let Some(batch) = batch {
                let mut at = 0;
                for &page in &column.missing {
                    let len = pages[page].len();
                    // Its own buffers: a slice would keep (and weigh) the
                    // whole read's.
                    let slice = batch.column(0).slice(at, len);
                    let array = arrow::compute::concat(&[slice.as_ref()])?;
                    at += len;
                    decoded.insert(key(column.field, page), Decoded::Array(Arc::clone(&array)));
                    column.found.insert(page, array);
                }
            }
            let order: Vec<usize> = column.found.keys().copied().collect();
            let position: HashMap<usize, usize> =
                order.iter().enumerate().map(|(i, p)| (*p, i)).collect();
            let arrays: Vec<&dyn arrow::array::Array> =
                order.iter().map(|p| column.found[p].as_ref()).collect();
            let indices: Vec<(usize, usize)> = rows
                .iter()
                .zip(&column.page_of_row)
                .map(|(r, page)| (position[page], *r as usize - pages[*page].start))
                .collect();
            out.push(arrow::compute::interleave(&arrays, &indices)?);
            fields.push(column.field);
        }
        Ok(RecordBatch::try_new(
            Arc::new(self.schema().project(&fields)?),
            out,
        )?)
    }

    /// The rows of each page of leaf column `leaf`, in file rows, across
    /// row groups; `None` without a page index.
    fn page_rows(&self, leaf: usize) -> Option<Vec<Range<usize>>> {
        let metadata = self.metadata.metadata();
        let index = metadata.page_index()?;
        let mut out = Vec::new();
        let mut first_row = 0usize;
        for (g, group) in metadata.row_groups().iter().enumerate() {
            let end = first_row + group.num_rows() as usize;
            let pages = index.offset_index(g, leaf)?.page_locations();
            for (i, page) in pages.iter().enumerate() {
                let from = first_row + page.first_row_index as usize;
                let to = pages
                    .get(i + 1)
                    .map(|next| first_row + next.first_row_index as usize)
                    .unwrap_or(end);
                out.push(from..to);
            }
            first_row = end;
        }
        Some(out)
    }

    /// Every row, every column, `batch_rows` at a time, one row group's
    /// column chunks read at once (a whole-file scan: imports).
    pub fn batches(
        &self,
        source: &Arc<dyn RangeSource>,
        batch_rows: usize,
    ) -> Result<futures::stream::BoxStream<'static, Result<RecordBatch>>> {
        let reader = SourceFile {
            source: Arc::clone(source),
            path: self.path.clone(),
            size: self.size,
            metadata: Some(Arc::clone(self.metadata.metadata())),
        };
        let stream =
            ParquetRecordBatchStreamBuilder::new_with_metadata(reader, self.metadata.clone())
                .with_batch_size(batch_rows.max(1))
                .build()?;
        Ok(stream.map_err(unwrap_external).boxed())
    }

    /// Decodes through the source (from what it keeps, or with ranged reads).
    async fn decode(
        &self,
        source: &Arc<dyn RangeSource>,
        columns: &[&str],
        rows: Option<&[Range<usize>]>,
    ) -> Result<RecordBatch> {
        let reader = SourceFile {
            source: Arc::clone(source),
            path: self.path.clone(),
            size: self.size,
            metadata: Some(Arc::clone(self.metadata.metadata())),
        };
        let mut builder =
            ParquetRecordBatchStreamBuilder::new_with_metadata(reader, self.metadata.clone());
        let mut indices = columns
            .iter()
            .map(|n| self.schema().index_of(n))
            .collect::<Result<Vec<_>, _>>()?;
        // The reader yields the columns in the file's order.
        indices.sort_unstable();
        indices.dedup();
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
pub async fn read_whole(
    source: &Arc<dyn RangeSource>,
    path: &Path,
    size: u64,
) -> Result<RecordBatch> {
    let whole = 0..size;
    let bytes = source
        .read_ranges(path, size, std::slice::from_ref(&whole))
        .await?
        .pop()
        .unwrap_or_default();
    decode_whole(bytes)
}

fn decode_whole(bytes: Bytes) -> Result<RecordBatch> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    let schema = Arc::clone(builder.schema());
    let batches = builder
        .with_batch_size(64 * 1024)
        .build()?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(arrow::compute::concat_batches(&schema, &batches)?)
}

/// Row numbers as sorted, merged ranges.
pub fn row_ranges(rows: &[u32]) -> Vec<Range<usize>> {
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

/// `AsyncFileReader` and `MetadataFetch` over a [`RangeSource`].
struct SourceFile {
    source: Arc<dyn RangeSource>,
    path: Path,
    size: u64,
    metadata: Option<Arc<ParquetMetaData>>,
}

impl SourceFile {
    async fn ranges(&self, ranges: Vec<Range<u64>>) -> parquet::errors::Result<Vec<Bytes>> {
        self.source
            .read_ranges(&self.path, self.size, &ranges)
            .await
            .map_err(|e| ParquetError::External(Box::new(e)))
    }
}

impl MetadataFetch for SourceFile {
    fn fetch(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move { Ok(self.ranges(vec![range]).await?.pop().unwrap_or_default()) }.boxed()
    }
}

impl AsyncFileReader for SourceFile {
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

/// Our own errors travel through parquet as `External`; take them back out so
/// callers see the object-store error kind (not found, unavailable).
fn unwrap_external(e: ParquetError) -> Error {
    match e {
        ParquetError::External(inner) => match inner.downcast::<Error>() {
            Ok(ours) => *ours,
            Err(other) => Error::Parquet(ParquetError::External(other)),
        },
        other => Error::Parquet(other),
    }
}
