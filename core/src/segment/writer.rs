//! Writing a segment file.

use std::sync::Arc;

use arrow::array::{Array, RecordBatch, UInt64Array};
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use object_store::ObjectStore;
use object_store::path::Path;
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use super::schema::{COL_LSN, COL_VECTOR, check_batch};
use crate::error::{Error, Result};
use crate::storage::put_file;

/// Target size of a data page.
const PAGE_BYTES: usize = 64 * 1024;

/// How a segment file is laid out.
#[derive(Debug, Clone)]
pub struct SegmentWriteOptions {
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
}

impl Default for SegmentWriteOptions {
    fn default() -> Self {
        Self {
            row_group_rows: 8_192,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFile {
    /// Rows written.
    pub rows: u64,
    /// Size of the file.
    pub size_bytes: u64,
    /// Smallest `_lsn` in it.
    pub min_lsn: u64,
    /// Largest `_lsn` in it.
    pub max_lsn: u64,
    /// Bytes at the end of the file holding the footer and the page index:
    /// one suffix GET of this size opens the file for ranged reads.
    pub footer_bytes: u64,
}

/// Encodes the batches as one Parquet file in memory.
pub fn encode_segment(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    options: &SegmentWriteOptions,
) -> Result<(Bytes, SegmentFile)> {
    encode_batches(schema, batches.iter().cloned().map(Ok), options)
}

/// Encodes batches as they come (each is dropped once written, so a caller
/// can make them one at a time) as one Parquet file in memory.
pub fn encode_batches(
    schema: &SchemaRef,
    batches: impl Iterator<Item = Result<RecordBatch>>,
    options: &SegmentWriteOptions,
) -> Result<(Bytes, SegmentFile)> {
    let props = writer_properties(schema, options)?;

    let mut rows = 0u64;
    let mut min_lsn = u64::MAX;
    let mut max_lsn = 0u64;
    let mut buffer = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buffer, Arc::clone(schema), Some(props))?;
    for batch in batches {
        let batch = batch?;
        check_batch(schema, &batch)?;
        rows += batch.num_rows() as u64;
        let lsns = batch
            .column_by_name(COL_LSN)
            .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
            .ok_or_else(|| Error::invalid(COL_LSN, "missing or not u64"))?;
        if let Some(min) = arrow::compute::min(lsns) {
            min_lsn = min_lsn.min(min);
        }
        if let Some(max) = arrow::compute::max(lsns) {
            max_lsn = max_lsn.max(max);
        }
        writer.write(&batch)?;
    }
    if rows == 0 {
        return Err(Error::invalid("batch", "a segment needs at least one row"));
    }
    writer.close()?;
    let bytes = Bytes::from(buffer);
    let file = SegmentFile {
        rows,
        size_bytes: bytes.len() as u64,
        min_lsn,
        max_lsn,
        footer_bytes: footer_bytes(&bytes)?,
    };
    Ok((bytes, file))
}

/// How segment files are written: zstd pages with page statistics (for
/// the page index), but vectors raw (they compress poorly and are read
/// by byte range), in row groups of `options.row_group_rows`.
pub fn writer_properties(
    schema: &SchemaRef,
    options: &SegmentWriteOptions,
) -> Result<WriterProperties> {
    let mut props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(options.row_group_rows.max(1)))
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_statistics_enabled(EnabledStatistics::Page)
        // Small pages: a query reads the pages holding the rows it wants.
        .set_data_page_size_limit(PAGE_BYTES)
        .set_write_batch_size(128);
    // Float vectors barely compress and are read in ranges: store them plain.
    let parquet_schema = ArrowSchemaConverter::new().convert(schema)?;
    for column in parquet_schema.columns() {
        if column.path().parts().first().map(String::as_str) == Some(COL_VECTOR) {
            props = props
                .set_column_compression(column.path().clone(), Compression::UNCOMPRESSED)
                .set_column_dictionary_enabled(column.path().clone(), false)
                .set_column_statistics_enabled(column.path().clone(), EnabledStatistics::None);
        }
    }

    Ok(props.build())
}

/// How many bytes from the end hold the metadata and the page indexes
/// (which parquet writes just before the footer).
fn footer_bytes(file: &Bytes) -> Result<u64> {
    let metadata = ParquetMetaDataReader::new()
        .with_page_index_policy(PageIndexPolicy::Optional)
        .parse_and_finish(file)?;
    let len = file.len() as u64;
    let footer_len = file
        .len()
        .checked_sub(8)
        .map(|at| u32::from_le_bytes([file[at], file[at + 1], file[at + 2], file[at + 3]]))
        .ok_or_else(|| Error::corrupt("segment", "shorter than a footer"))?;
    let mut start = len - 8 - footer_len as u64;
    for group in metadata.row_groups() {
        for column in group.columns() {
            for offset in [column.column_index_offset(), column.offset_index_offset()]
                .into_iter()
                .flatten()
            {
                start = start.min(offset as u64);
            }
        }
    }
    Ok(len - start)
}

/// Encodes and uploads a segment, create-only: segment paths embed a unique
/// id, so an existing object means a bug or a replay, and is an error.
pub async fn write_segment(
    store: &dyn ObjectStore,
    path: &Path,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    options: &SegmentWriteOptions,
) -> Result<(SegmentFile, Bytes)> {
    let (bytes, file) = encode_segment(schema, batches, options)?;
    upload_segment(store, path, bytes, file).await
}

/// Uploads an encoded segment, create-only (see [`write_segment`]).
pub async fn upload_segment(
    store: &dyn ObjectStore,
    path: &Path,
    bytes: Bytes,
    file: SegmentFile,
) -> Result<(SegmentFile, Bytes)> {
    if !put_file(store, path, bytes.clone()).await? {
        return Err(Error::ObjectExists {
            path: path.to_string(),
        });
    }
    Ok((file, bytes))
}
