//! What the indexer does: flush the log tail into segments, compact small
//! segments into sealed ones, build the IVF index of sealed segments, and
//! collect garbage — each in its own module, run in one order by
//! [`round`], which `floe serve`'s background task and the indexer Lambda
//! both call.

mod compact;
mod flush;
mod gc;
mod import;
mod index;
mod plan;
mod round;

pub use compact::{CompactReport, PURGE_CHECK_EVERY};
pub use gc::{GC_GRACE, GcReport};
pub use import::IMPORT_LEASE;
pub use index::IndexReport;
pub use plan::{FANOUT, PURGE_DEAD_FRACTION};
pub use round::{ORPHAN_GRACE, RoundReport};

use std::sync::Arc;

use arrow::array::{ArrayRef, FixedSizeListArray, Float32Array, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use bytes::Bytes;
use object_store::ObjectStoreExt;
use object_store::path::Path;

use super::Floe;
use super::state::Collection;
use crate::error::{Error, Result};
use crate::id::{self, Id};
use crate::index::{le_f32s, vectors_range};
use crate::manifest::{DeleteFile, SegmentEntry};
use crate::segment::{
    COL_VECTOR, ParquetFile, RangeSource, SegmentWriteOptions, StoreSource, conform, delete_schema,
    encode_batches, new_segment_id, upload_segment, write_segment,
};

/// Smallest row group of a sealed segment.
const SEALED_ROW_GROUP_ROWS: usize = 131_072;

impl Floe {
    /// Reads a segment or delete file as one batch, straight from the store
    /// (maintenance reads each file once: not through the query cache):
    /// every column, or the named ones (only their byte ranges are fetched).
    async fn read_file(
        &self,
        path: &str,
        size: u64,
        columns: Option<&[&str]>,
    ) -> Result<RecordBatch> {
        let source: Arc<dyn RangeSource> = Arc::new(StoreSource(Arc::clone(&self.store)));
        let file = ParquetFile::open(&source, Path::from(path), size, 0).await?;
        file.read(&source, columns, None).await
    }

    /// Every row of segment `s` in the collection's schema. An indexed
    /// segment's data file does not repeat the vectors: they come from its
    /// index file, in the same (cluster) order, with one ranged read.
    async fn read_segment(&self, c: &Collection, s: &SegmentEntry) -> Result<RecordBatch> {
        let batch = self.read_file(&s.data_path, s.size_bytes, None).await?;
        if batch.column_by_name(COL_VECTOR).is_some() {
            return conform(batch, &c.schema, s.rows_lsn);
        }
        let index = s.index.as_ref().ok_or_else(|| {
            Error::corrupt(s.data_path.clone(), "no vector column and no index file")
        })?;
        let dim = c.config.dimension as usize;
        let range = vectors_range(index.size_bytes, s.rows, dim as u64, 0..s.rows);
        let path = Path::from(index.path.as_str());
        let bytes = self
            .store
            .get_range(&path, range)
            .await
            .map_err(|e| Error::store("get", &path, e))?;
        let values = Float32Array::from(le_f32s(&bytes));
        if values.len() != batch.num_rows() * dim {
            return Err(Error::corrupt(
                index.path.clone(),
                "its vectors do not match the data file's rows",
            ));
        }
        let field = c.schema.field_with_name(COL_VECTOR)?;
        let DataType::FixedSizeList(item, _) = field.data_type() else {
            return Err(Error::internal(
                "segment schema",
                format!("vector is {}", field.data_type()),
            ));
        };
        let vectors =
            FixedSizeListArray::try_new(Arc::clone(item), dim as i32, Arc::new(values), None)?;
        // The data file's columns and the vectors, then in the collection's
        // schema as any segment's rows are (added attributes null).
        let mut fields: Vec<_> = batch.schema().fields().iter().cloned().collect();
        fields.push(Arc::new(field.clone()));
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(vectors) as ArrayRef);
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
        conform(batch, &c.schema, s.rows_lsn)
    }

    /// Writes `batch` create-only at `path` as segment `id` and describes it.
    async fn write_segment_entry(
        &self,
        c: &Collection,
        id: &str,
        path: Path,
        batch: &RecordBatch,
        sealed: bool,
    ) -> Result<SegmentEntry> {
        let batches = std::iter::once(Ok(batch.clone()));
        self.write_segment_entry_from(c, &c.schema, id, path, batches, sealed)
            .await
    }

    /// [`Floe::write_segment_entry`] of batches (of `schema`) made one at a time.
    async fn write_segment_entry_from(
        &self,
        c: &Collection,
        schema: &SchemaRef,
        id: &str,
        path: Path,
        batches: impl Iterator<Item = Result<RecordBatch>>,
        sealed: bool,
    ) -> Result<SegmentEntry> {
        // Sealed segments get large row groups: a cold query reads their
        // keys column chunk by column chunk, one GET per row group.
        let row_group_rows = c.config.index.row_group_rows as usize;
        let options = SegmentWriteOptions {
            row_group_rows: if sealed {
                row_group_rows.max(SEALED_ROW_GROUP_ROWS)
            } else {
                row_group_rows
            },
        };
        let (bytes, file) = encode_batches(schema, batches, &options)?;
        let (file, bytes) = upload_segment(self.store.as_ref(), &path, bytes, file).await?;
        self.remember(&path, &bytes).await;
        Ok(SegmentEntry {
            id: id.to_string(),
            data_path: path.to_string(),
            rows: file.rows,
            size_bytes: file.size_bytes,
            min_lsn: file.min_lsn,
            max_lsn: file.max_lsn,
            sealed,
            index: None,
            footer_bytes: file.footer_bytes,
            rows_lsn: None,
        })
    }

    /// Writes tombstones `(id, lsn)` as a new delete file and describes it.
    async fn write_delete_file(
        &self,
        c: &Collection,
        tombstones: &[(Id, u64)],
    ) -> Result<DeleteFile> {
        let ids: Vec<Id> = tombstones.iter().map(|(id, _)| id.clone()).collect();
        let schema = delete_schema(&c.config);
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                id::ids_to_array(&c.config, &ids, "ids")?,
                Arc::new(UInt64Array::from_iter_values(
                    tombstones.iter().map(|(_, lsn)| *lsn),
                )),
            ],
        )?;
        let path = c.paths.delete_file(&new_segment_id());
        let options = SegmentWriteOptions {
            row_group_rows: c.config.index.row_group_rows as usize,
        };
        let (file, bytes) =
            write_segment(self.store.as_ref(), &path, &schema, &[batch], &options).await?;
        self.remember(&path, &bytes).await;
        Ok(DeleteFile {
            path: path.to_string(),
            rows: file.rows,
            size_bytes: file.size_bytes,
            min_lsn: file.min_lsn,
            max_lsn: file.max_lsn,
        })
    }

    /// Keeps a file this process just wrote in the read cache, if one is
    /// open (the indexer alone never opens one).
    async fn remember(&self, path: &Path, bytes: &Bytes) {
        if let Some(cache) = self.cache.get() {
            cache.insert_object(path, bytes).await;
        }
    }
}
