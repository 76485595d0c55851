//! An indexed segment as a query sees it: the index header and the data
//! file's metadata in memory; codes, vectors and columns read on demand
//! through the read seam (the block cache).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt64Array};
use bytes::Bytes;
use object_store::path::Path;

use crate::cache::{Decoded, DecodedKey, Part};
use crate::error::{Error, Result};
use crate::index::{IvfHeader, le_f32s};
use crate::manifest::{Opening, SegmentEntry};
use crate::segment::{COL_ID, COL_LSN, ParquetFile, RangeSource};

#[derive(Debug)]
pub(crate) struct IndexedSegment {
    pub entry: SegmentEntry,
    pub header: IvfHeader,
    index_path: Path,
    /// `index_path`, shared by the decoded cache's keys.
    index_key: Arc<str>,
    index_size: u64,
    pub data: ParquetFile,
}

impl IndexedSegment {
    /// Reads the index header and the data file's footer (in parallel).
    pub(crate) async fn open(
        source: &Arc<dyn RangeSource>,
        entry: &SegmentEntry,
    ) -> Result<IndexedSegment> {
        let index = entry.index.as_ref().ok_or_else(|| {
            Error::internal("segment", format!("{} is opened as indexed", entry.id))
        })?;
        let index_path = Path::from(index.path.as_str());
        let header_range = 0..index.header_bytes.min(index.size_bytes);
        let (header, data) = futures::try_join!(
            source.read_ranges(
                &index_path,
                index.size_bytes,
                std::slice::from_ref(&header_range)
            ),
            ParquetFile::open(
                source,
                Path::from(entry.data_path.as_str()),
                entry.size_bytes,
                entry.footer_bytes
            ),
        )?;
        Self::assemble(
            entry,
            header.first().map(|b| b.as_ref()).unwrap_or(&[]),
            data,
        )
    }

    /// Opens it from bytes already read (a collection head's opening).
    pub(crate) fn from_opening(entry: &SegmentEntry, opening: &Opening) -> Result<IndexedSegment> {
        let data = ParquetFile::from_footer(
            Path::from(entry.data_path.as_str()),
            entry.size_bytes,
            &opening.footer,
        )?;
        Self::assemble(entry, &opening.header, data)
    }

    fn assemble(entry: &SegmentEntry, header: &[u8], data: ParquetFile) -> Result<IndexedSegment> {
        let index = entry.index.as_ref().ok_or_else(|| {
            Error::internal("segment", format!("{} is opened as indexed", entry.id))
        })?;
        let index_path = Path::from(index.path.as_str());
        let header = IvfHeader::parse(header)?;
        if header.file_len() != index.size_bytes || header.rows() as u64 != entry.rows {
            return Err(Error::corrupt(
                index.path.clone(),
                "the index does not match its manifest entry",
            ));
        }
        Ok(IndexedSegment {
            entry: entry.clone(),
            header,
            index_key: Arc::from(index_path.as_ref()),
            index_path,
            index_size: index.size_bytes,
            data,
        })
    }

    fn codes_key(&self, c: usize) -> DecodedKey {
        DecodedKey {
            object: Arc::clone(&self.index_key),
            part: Part::Codes(c as u32),
        }
    }

    /// Cluster `c`'s code block if the decoded cache holds it (no read).
    pub(crate) fn decoded_codes(&self, source: &Arc<dyn RangeSource>, c: usize) -> Option<Bytes> {
        match source.decoded()?.get(&self.codes_key(c))? {
            Decoded::Bytes(codes) => Some(codes),
            Decoded::Array(_) => None,
        }
    }

    /// The code blocks of `clusters`: from the decoded cache where the
    /// source keeps one, the rest read (and then kept there) in one wave.
    pub(crate) async fn read_codes(
        &self,
        source: &Arc<dyn RangeSource>,
        clusters: &[usize],
    ) -> Result<HashMap<usize, Bytes>> {
        let key = |c: usize| self.codes_key(c);
        let mut out = HashMap::with_capacity(clusters.len());
        let mut missing = Vec::new();
        for &c in clusters {
            match self.decoded_codes(source, c) {
                Some(codes) => {
                    out.insert(c, codes);
                }
                None => missing.push(c),
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        let ranges: Vec<_> = missing
            .iter()
            .map(|c| self.header.codes_range(*c))
            .collect();
        let blocks = source
            .read_ranges(&self.index_path, self.index_size, &ranges)
            .await?;
        for (c, codes) in missing.into_iter().zip(blocks) {
            if let Some(decoded) = source.decoded() {
                // A copy: a slice of a cache block would keep the block alive.
                decoded.insert(key(c), Decoded::Bytes(Bytes::copy_from_slice(&codes)));
            }
            out.insert(c, codes);
        }
        Ok(out)
    }

    /// The codes of `rows` (ascending), one after another in a buffer of
    /// their own (not a slice pinning cache blocks); runs of consecutive
    /// rows are read as one range.
    pub(crate) async fn read_row_codes(
        &self,
        source: &Arc<dyn RangeSource>,
        rows: &[u32],
    ) -> Result<Bytes> {
        let mut ranges: Vec<Range<u64>> = Vec::new();
        for &row in rows {
            let code = self.header.row_codes_range(row as usize);
            match ranges.last_mut() {
                Some(last) if last.end == code.start => last.end = code.end,
                _ => ranges.push(code),
            }
        }
        let parts = source
            .read_ranges(&self.index_path, self.index_size, &ranges)
            .await?;
        let mut out = Vec::with_capacity(rows.len() * self.header.code_len());
        for part in parts {
            out.extend_from_slice(&part);
        }
        Ok(Bytes::from(out))
    }

    /// The full-precision vectors of `rows`: from the decoded cache where
    /// the source keeps one, the rest from the index file (and then kept).
    pub(crate) async fn read_vectors(
        &self,
        source: &Arc<dyn RangeSource>,
        rows: &[u32],
    ) -> Result<Vec<Vec<f32>>> {
        let key = |row: u32| DecodedKey {
            object: Arc::clone(&self.index_key),
            part: Part::Vector(row),
        };
        let mut out: Vec<Vec<f32>> = Vec::with_capacity(rows.len());
        let mut missing = Vec::new();
        for (i, &row) in rows.iter().enumerate() {
            match source.decoded().and_then(|d| d.get(&key(row))) {
                Some(Decoded::Bytes(bytes)) => out.push(le_f32s(&bytes)),
                _ => {
                    out.push(Vec::new());
                    missing.push(i);
                }
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        let ranges: Vec<Range<u64>> = missing
            .iter()
            .map(|i| self.header.vector_range(rows[*i] as usize))
            .collect();
        let bytes = source
            .read_ranges(&self.index_path, self.index_size, &ranges)
            .await?;
        for (i, bytes) in missing.into_iter().zip(bytes) {
            out[i] = le_f32s(&bytes);
            if let Some(decoded) = source.decoded() {
                // A copy, as for codes: a slice would keep its block alive.
                decoded.insert(key(rows[i]), Decoded::Bytes(Bytes::copy_from_slice(&bytes)));
            }
        }
        Ok(out)
    }

    /// The `id` and `_lsn` columns of rows read from its data file (a bulk
    /// import's file may have no `_lsn`: every row is at `rows_lsn`).
    pub(crate) fn keys_of(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let schema = batch.schema();
        let id = schema.index_of(COL_ID)?;
        match (schema.index_of(COL_LSN), self.entry.rows_lsn) {
            (Ok(lsn), _) => Ok(batch.project(&[id, lsn])?),
            (Err(_), Some(lsn)) => Ok(RecordBatch::try_from_iter([
                (COL_ID, Arc::clone(batch.column(id))),
                (
                    COL_LSN,
                    Arc::new(UInt64Array::from(vec![lsn; batch.num_rows()])) as ArrayRef,
                ),
            ])?),
            (Err(e), None) => Err(e.into()),
        }
    }

    /// `columns` of `rows` of the data file (all rows when `None`).
    pub(crate) async fn read_columns(
        &self,
        source: &Arc<dyn RangeSource>,
        columns: &[&str],
        rows: Option<&[Range<usize>]>,
    ) -> Result<RecordBatch> {
        self.data.read(source, Some(columns), rows).await
    }
}
