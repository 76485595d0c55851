//! What a log payload means: one upsert batch or one delete batch, each an
//! Arrow IPC stream behind a one-byte kind tag and a format version; or a
//! bulk import's marker (JSON), which orders its segments among the writes.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt64Array};
use arrow::datatypes::{Field, Schema};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use bytes::Bytes;

use serde::{Deserialize, Serialize};

use super::Lsn;
use crate::catalog::CollectionConfig;
use crate::error::{Error, Result};
use crate::manifest::{ImportedSegments, SegmentEntry};
use crate::segment::{conform, delete_schema, segment_schema, with_lsn};

const FORMAT: u8 = 1;
const KIND_UPSERT: u8 = 1;
const KIND_DELETE: u8 = 2;
const KIND_IMPORT: u8 = 3;

/// One write. Upsert rows carry `id`, `vector` and attributes but no LSN:
/// the log assigns it.
#[derive(Debug, Clone, PartialEq)]
pub enum LogRecord {
    /// Rows to upsert, in the collection's upsert schema.
    Upsert(RecordBatch),
    /// The ids to delete (u64 or string, per the collection's id type).
    Delete(ArrayRef),
    /// A bulk import's segments, already in the store: their rows are
    /// written at this record's LSN, and the flush that covers it adds them
    /// to the manifest.
    Import(ImportMarker),
}

/// What a bulk import commits: its segments (each without `_lsn`: see
/// [`SegmentEntry::rows_lsn`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportMarker {
    /// The import job.
    pub job: String,
    /// Its segments, as the manifest will list them.
    pub segments: Vec<SegmentEntry>,
}

impl ImportMarker {
    /// The segments as written at `lsn`, as a flush commits them.
    pub(crate) fn at(&self, lsn: Lsn) -> ImportedSegments {
        let segments = self
            .segments
            .iter()
            .map(|s| SegmentEntry {
                min_lsn: lsn,
                max_lsn: lsn,
                rows_lsn: Some(lsn),
                ..s.clone()
            })
            .collect();
        ImportedSegments {
            job: self.job.clone(),
            lsn,
            segments,
        }
    }
}

impl LogRecord {
    /// The record's rows as written at `lsn`, with their `_lsn` column:
    /// upserted rows in the collection's segment schema (null columns for
    /// attributes added after the record was written), or deleted ids in
    /// the delete file's schema; and whether they are deletes. An import
    /// marker has none: its rows are in its segments.
    pub(crate) fn rows_at(
        &self,
        config: &CollectionConfig,
        lsn: Lsn,
    ) -> Result<(RecordBatch, bool)> {
        match self {
            LogRecord::Upsert(batch) => Ok((
                conform(with_lsn(batch, lsn)?, &segment_schema(config), None)?,
                false,
            )),
            LogRecord::Delete(ids) => {
                let lsns = Arc::new(UInt64Array::from_value(lsn, ids.len()));
                let batch =
                    RecordBatch::try_new(delete_schema(config), vec![Arc::clone(ids), lsns])?;
                Ok((batch, true))
            }
            LogRecord::Import(_) => Ok((RecordBatch::new_empty(segment_schema(config)), false)),
        }
    }

    /// The record's bytes.
    pub fn encode(&self) -> Result<Bytes> {
        let (kind, batch) = match self {
            LogRecord::Import(marker) => {
                let mut out = vec![FORMAT, KIND_IMPORT];
                serde_json::to_writer(&mut out, marker)
                    .map_err(|e| Error::internal("import marker", e))?;
                return Ok(Bytes::from(out));
            }
            LogRecord::Upsert(batch) => (KIND_UPSERT, batch.clone()),
            LogRecord::Delete(ids) => {
                let schema = Schema::new(vec![Field::new("id", ids.data_type().clone(), false)]);
                (
                    KIND_DELETE,
                    RecordBatch::try_new(Arc::new(schema), vec![Arc::clone(ids)])?,
                )
            }
        };
        let mut out = vec![FORMAT, kind];
        let mut writer = StreamWriter::try_new(&mut out, &batch.schema())?;
        writer.write(&batch)?;
        writer.finish()?;
        drop(writer);
        Ok(Bytes::from(out))
    }

    /// A record from its bytes.
    pub fn decode(payload: &[u8]) -> Result<Self> {
        let [format, kind, ipc @ ..] = payload else {
            return Err(Error::corrupt("log record", "shorter than its header"));
        };
        if *format != FORMAT {
            return Err(Error::corrupt(
                "log record",
                format!("unknown format {format}"),
            ));
        }
        if *kind == KIND_IMPORT {
            let marker =
                serde_json::from_slice(ipc).map_err(|e| Error::corrupt("import marker", e))?;
            return Ok(LogRecord::Import(marker));
        }
        let mut reader = StreamReader::try_new(ipc, None)?;
        let batch = reader
            .next()
            .ok_or_else(|| Error::corrupt("log record", "no batch"))??;
        if reader.next().is_some() {
            return Err(Error::corrupt("log record", "more than one batch"));
        }
        match *kind {
            KIND_UPSERT => Ok(LogRecord::Upsert(batch)),
            KIND_DELETE if batch.num_columns() == 1 => {
                Ok(LogRecord::Delete(Arc::clone(batch.column(0))))
            }
            other => Err(Error::corrupt(
                "log record",
                format!("unknown kind {other}"),
            )),
        }
    }

    /// Rows upserted or ids deleted (an import marker's rows are counted
    /// in its segments, not here: they are never in memory).
    pub fn num_rows(&self) -> usize {
        match self {
            LogRecord::Upsert(batch) => batch.num_rows(),
            LogRecord::Delete(ids) => ids.len(),
            LogRecord::Import(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{FixedSizeListArray, Float32Array, StringArray, UInt64Array};
    use arrow::datatypes::DataType;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let vectors = FixedSizeListArray::try_new(
            Arc::clone(&item),
            2,
            Arc::new(Float32Array::from(vec![1.0, 2.0, 3.0, 4.0])),
            None,
        )
        .unwrap();
        let schema = Schema::new(vec![
            Field::new("id", DataType::UInt64, false),
            Field::new("vector", DataType::FixedSizeList(item, 2), false),
        ]);
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(UInt64Array::from(vec![1, 2])), Arc::new(vectors)],
        )
        .unwrap();
        for record in [
            LogRecord::Upsert(batch),
            LogRecord::Delete(Arc::new(StringArray::from(vec!["a", "b", "c"]))),
            LogRecord::Import(ImportMarker {
                job: "j1".into(),
                segments: vec![],
            }),
        ] {
            let bytes = record.encode().unwrap();
            assert_eq!(LogRecord::decode(&bytes).unwrap(), record);
        }
        assert!(LogRecord::decode(b"").is_err());
        assert!(LogRecord::decode(&[9, 1, 0]).is_err());
        assert!(LogRecord::decode(&[1, 1, 0, 0, 0]).is_err());
    }
}
