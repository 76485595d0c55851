//! An indexed segment as a query sees it: the index header and the data
//! file's metadata in memory; codes, vectors and columns read on demand
//! through the read seam (the block cache).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt64Array};
use arrow::datatypes::{Schema, SchemaRef};
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
    /// Whether this process warmed it (see `warm.rs`).
    pub warm: super::warm::WarmState,
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
            warm: Default::default(),
        })
    }

    /// Where `part` of the index file is kept in the decoded cache.
    pub(crate) fn decoded_key(&self, part: Part) -> DecodedKey {
        DecodedKey {
            object: Arc::clone(&self.index_key),
            part,
        }
    }

    /// Where `part` of the data file is kept in the decoded cache.
    pub(crate) fn data_key(&self, part: Part) -> DecodedKey {
        DecodedKey {
            object: Arc::from(self.entry.data_path.as_str()),
            part,
        }
    }

    /// `part` of the index file if the decoded cache holds it (no read).
    fn decoded(&self, source: &Arc<dyn RangeSource>, part: Part) -> Option<Bytes> {
        match source.decoded()?.get(&self.decoded_key(part))? {
            Decoded::Bytes(bytes) => Some(bytes),
            Decoded::Array(_) => None,
        }
    }

    /// Cluster `c`'s code block if the decoded cache holds it (no read).
    pub(crate) fn decoded_codes(&self, source: &Arc<dyn RangeSource>, c: usize) -> Option<Bytes> {
        self.decoded(source, Part::Codes(c as u32))
    }

    /// The bytes of `parts` of the index file (each with where it is),
    /// in order: from the decoded cache where the source keeps one, the
    /// rest read in one wave and then kept there.
    async fn read_parts(
        &self,
        source: &Arc<dyn RangeSource>,
        parts: &[(Part, Range<u64>)],
    ) -> Result<Vec<Bytes>> {
        let mut out: Vec<Bytes> = Vec::with_capacity(parts.len());
        let mut missing = Vec::new();
        for (i, (part, _)) in parts.iter().enumerate() {
            match self.decoded(source, *part) {
                Some(bytes) => out.push(bytes),
                None => {
                    out.push(Bytes::new());
                    missing.push(i);
                }
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        let ranges: Vec<Range<u64>> = missing.iter().map(|i| parts[*i].1.clone()).collect();
        let read = source
            .read_ranges(&self.index_path, self.index_size, &ranges)
            .await?;
        for (i, bytes) in missing.into_iter().zip(read) {
            if let Some(decoded) = source.decoded() {
                // A copy: a slice of a cache block would keep the block alive.
                decoded.insert(
                    self.decoded_key(parts[i].0),
                    Decoded::Bytes(Bytes::copy_from_slice(&bytes)),
                );
            }
            out[i] = bytes;
        }
        Ok(out)
    }

    /// The code blocks of `clusters` (from the decoded cache or read, see
    /// [`IndexedSegment::read_parts`]).
    pub(crate) async fn read_codes(
        &self,
        source: &Arc<dyn RangeSource>,
        clusters: &[usize],
    ) -> Result<HashMap<usize, Bytes>> {
        let parts: Vec<(Part, Range<u64>)> = clusters
            .iter()
            .map(|c| (Part::Codes(*c as u32), self.header.codes_range(*c)))
            .collect();
        let blocks = self.read_parts(source, &parts).await?;
        Ok(clusters.iter().copied().zip(blocks).collect())
    }

    /// The norms of the codes of `clusters` (`codes` holds their blocks),
    /// kept in the decoded cache beside them: the integer kernel scores a
    /// code by one inner product given its norm. Computed once per cluster
    /// (its first scan pays one pass more). Empty when the metric needs
    /// none or there is no decoded cache to keep them in.
    pub(crate) fn code_norms(
        &self,
        source: &Arc<dyn RangeSource>,
        clusters: &[usize],
        codes: &HashMap<usize, Bytes>,
    ) -> HashMap<usize, Bytes> {
        // Computing them per query would cost more than the f32 kernel.
        let Some(decoded) = source.decoded().filter(|_| self.header.norm_len() > 0) else {
            return HashMap::new();
        };
        clusters
            .iter()
            .filter_map(|&c| {
                let part = Part::Norms(c as u32);
                if let Some(norms) = self.decoded(source, part) {
                    return Some((c, norms));
                }
                let norms = Bytes::from(self.header.code_norms(codes.get(&c)?));
                decoded.insert(self.decoded_key(part), Decoded::Bytes(norms.clone()));
                Some((c, norms))
            })
            .collect()
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

    /// The full-precision vectors of `rows`: cut from the blocks of the
    /// cache's memory tier where it holds them (warm-up loads them there);
    /// else from the decoded cache or read, see
    /// [`IndexedSegment::read_parts`] (kept one by one there: re-ranked
    /// rows are scattered, and a block would keep 64 KiB alive for each).
    /// Kept one by one only when not in memory, so the decoded cache does
    /// not fill with a million small parts its look-ups then wade through.
    pub(crate) async fn read_vectors(
        &self,
        source: &Arc<dyn RangeSource>,
        rows: &[u32],
    ) -> Result<Vec<Vec<f32>>> {
        let ranges: Vec<Range<u64>> = rows
            .iter()
            .map(|r| self.header.vector_range(*r as usize))
            .collect();
        let mut vectors = source.resident(&self.index_path, &ranges);
        if vectors.len() != ranges.len() {
            return Err(Error::internal("cache", "resident ranges miscounted"));
        }
        let missing: Vec<usize> = (0..rows.len()).filter(|i| vectors[*i].is_none()).collect();
        if !missing.is_empty() {
            let parts: Vec<(Part, Range<u64>)> = missing
                .iter()
                .map(|i| (Part::Vector(rows[*i]), ranges[*i].clone()))
                .collect();
            let read = self.read_parts(source, &parts).await?;
            for (i, bytes) in missing.into_iter().zip(read) {
                vectors[i] = Some(bytes);
            }
        }
        // Scattered over memory: all of them on their way before the first
        // is decoded (decoding one at a time waits on each in turn).
        for bytes in vectors.iter().flatten() {
            crate::vector::prefetch(bytes);
        }
        Ok(vectors
            .iter()
            .map(|b| b.as_deref().map(le_f32s).unwrap_or_default())
            .collect())
    }

    /// Loads the full-precision vectors into `cache`, as re-ranking
    /// reads them.
    pub(crate) async fn load_vectors(
        &self,
        cache: &crate::cache::BlockCache,
        stats: &Arc<crate::cache::ReadStats>,
    ) -> Result<()> {
        let section = self.header.vectors_section();
        cache
            .load(stats, &self.index_path, self.index_size, section)
            .await
    }

    /// The `id` and `_lsn` of every row.
    pub(crate) async fn read_keys(&self, source: &Arc<dyn RangeSource>) -> Result<RecordBatch> {
        let names = if self.data.schema().field_with_name(COL_LSN).is_ok() {
            &[COL_ID, COL_LSN][..]
        } else {
            &[COL_ID][..]
        };
        let batch = self.read_columns(source, names, None).await?;
        self.keys_of(&batch)
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

    /// Columns `names` of every row, typed as `schema` (the collection's)
    /// types them: an attribute added after the data file was written is
    /// all null. Each column comes from the decoded cache where it is kept;
    /// the rest are read in one wave and kept there (bounded and evicting:
    /// a column larger than a shard of it serves only this read).
    pub(crate) async fn whole_columns(
        &self,
        source: &Arc<dyn RangeSource>,
        names: &[&str],
        schema: &SchemaRef,
    ) -> Result<RecordBatch> {
        let rows = self.header.rows();
        let key = |field: usize| {
            self.data_key(Part::Column {
                column: field as u32,
            })
        };
        let mut found: HashMap<&str, ArrayRef> = HashMap::new();
        // (name, data-file field)
        let mut missing: Vec<(&str, usize)> = Vec::new();
        for name in names {
            let Ok(field) = self.data.schema().index_of(name) else {
                continue;
            };
            match source.decoded().and_then(|d| d.get(&key(field))) {
                Some(Decoded::Array(array)) => {
                    found.insert(name, array);
                }
                _ => missing.push((name, field)),
            }
        }
        if !missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(|(name, _)| *name).collect();
            // (In the file's order, not the names'.)
            let read = self.read_columns(source, &names, None).await?;
            for (name, field) in missing {
                let Some(array) = read.column_by_name(name) else {
                    return Err(Error::internal("read", format!("column {name:?} not read")));
                };
                if let Some(decoded) = source.decoded() {
                    decoded.insert(key(field), Decoded::Array(Arc::clone(array)));
                }
                found.insert(name, Arc::clone(array));
            }
        }
        let mut fields = Vec::with_capacity(names.len());
        let mut columns = Vec::with_capacity(names.len());
        for name in names {
            let field = schema.field_with_name(name)?;
            let column = match found.remove(name) {
                Some(column) => column,
                None => arrow::array::new_null_array(field.data_type(), rows),
            };
            if column.len() != rows {
                return Err(Error::corrupt(
                    self.entry.data_path.clone(),
                    format!(
                        "column {name:?} has {} rows, the index {rows}",
                        column.len()
                    ),
                ));
            }
            fields.push(field.clone());
            columns.push(column);
        }
        let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            columns,
            &options,
        )?)
    }

    /// `columns` of `rows` of the data file (all rows when `None`).
    async fn read_columns(
        &self,
        source: &Arc<dyn RangeSource>,
        columns: &[&str],
        rows: Option<&[Range<usize>]>,
    ) -> Result<RecordBatch> {
        self.data.read(source, Some(columns), rows).await
    }
}
