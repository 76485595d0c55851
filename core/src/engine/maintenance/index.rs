//! Index builds: a sealed segment's rows rewritten cluster by cluster with
//! its IVF-SQ8 index beside them, swapped in with one manifest commit.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{AsArray, RecordBatch, UInt32Array};
use arrow::datatypes::Float32Type;
use serde::{Deserialize, Serialize};

use crate::engine::Floe;
use crate::engine::state::Collection;
use crate::error::{Error, Result};
use crate::index::{IvfIndex, IvfParams};
use crate::manifest::{IndexFile, Operation, SegmentEntry};
use crate::segment::{COL_VECTOR, indexed_data_schema, new_segment_id};
use crate::storage::{CollectionFile, parse_key, put_file};

/// Rows of a clustered rewrite taken and encoded at a time.
const REORDER_CHUNK_ROWS: usize = 65_536;

/// What an index build did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexReport {
    /// The sealed segment the indexed one replaced.
    pub replaced: String,
    /// The indexed segment.
    pub segment: String,
    /// Its rows.
    pub rows: u64,
    /// Its clusters.
    pub nlist: u32,
    /// Time from reading the segment to writing the index.
    pub build_ms: u64,
    /// Size of the index file.
    pub index_bytes: u64,
}

impl Floe {
    /// Builds the IVF index of a sealed segment: rewrites its rows cluster by
    /// cluster with the index beside them, and swaps the result in.
    /// `Ok(None)` when the segment is gone or already indexed.
    pub async fn build_index(&self, name: &str, segment_id: &str) -> Result<Option<IndexReport>> {
        self.on_current(name, |c| async move {
            self.build_index_in(&c, segment_id).await
        })
        .await
    }

    async fn build_index_in(
        &self,
        c: &Collection,
        segment_id: &str,
    ) -> Result<Option<IndexReport>> {
        let _one_at_a_time = c.maintenance_lock.lock().await;
        let manifest = c.manifests.latest().await?;
        let Some(segment) = manifest.segment(segment_id).cloned() else {
            return Ok(None);
        };
        if segment.index.is_some() {
            return Ok(None);
        }
        let fence = self.compactor_fence(c).await?;
        let started = Instant::now();
        let batch = self.read_segment(c, &segment).await?;
        let (entry, nlist) = self.write_indexed_segment(c, &batch, true).await?;
        let index_bytes = entry.index.as_ref().map_or(0, |i| i.size_bytes);
        let (rows, id) = (entry.rows, entry.id.clone());
        let op = Operation::Replace {
            remove: vec![segment_id.to_string()],
            add: vec![entry],
            drop_deletes: vec![],
            add_deletes: vec![],
            schema: c.added,
        };
        match self.commit_as_compactor(c, fence, &op).await {
            Ok(_) => {}
            // Someone else replaced the segment meanwhile: our files are garbage.
            Err(Error::CommitConflict { .. }) => return Ok(None),
            Err(e) => return Err(e),
        }
        crate::telemetry::maintenance("index_build", started.elapsed());
        Ok(Some(IndexReport {
            replaced: segment_id.to_string(),
            segment: id,
            rows,
            nlist,
            build_ms: started.elapsed().as_millis() as u64,
            index_bytes,
        }))
    }

    /// Writes `batch` as a new indexed segment: its IVF index, and its rows
    /// in cluster order beside it. Returns the entry and the index's nlist.
    ///
    /// Memory: besides `batch`, the index file (codes and vectors: 1.25×
    /// the vector bytes at most, uploaded and dropped first), then the
    /// encoded data file; the clustered rows are taken and encoded
    /// [`REORDER_CHUNK_ROWS`] at a time, never copied whole. Cosine adds a
    /// normalised copy of the vectors while the index is built.
    pub(super) async fn write_indexed_segment(
        &self,
        c: &Collection,
        batch: &RecordBatch,
        sealed: bool,
    ) -> Result<(SegmentEntry, u32)> {
        let dim = c.config.dimension as usize;
        let metric = c.config.metric;
        let params = IvfParams {
            codes: c.config.index.codes.unwrap_or_default(),
            ..IvfParams::default()
        };
        let rows = batch.num_rows();
        let list = batch
            .column_by_name(COL_VECTOR)
            .and_then(|c| c.as_fixed_size_list_opt())
            .ok_or_else(|| Error::corrupt("segment rows", "no vector column"))?;
        let start = arrow::array::Array::offset(list) * dim;
        let values = Arc::clone(list.values());
        let (nlist, header_len, order, bytes) = tokio::task::spawn_blocking(move || {
            let all = values.as_primitive::<Float32Type>().values();
            let vectors = all.get(start..start + rows * dim).ok_or_else(|| {
                Error::corrupt("segment rows", "the vector column is shorter than its rows")
            })?;
            let built = IvfIndex::build(vectors, dim, metric, &params)?;
            // The index file carries the vectors too, in cluster order, so a
            // query re-ranks with ranged reads of it alone.
            let bytes = bytes::Bytes::from(built.index.to_bytes(vectors, &built.order));
            let (nlist, header_len) = (built.index.nlist() as u32, built.index.header_len());
            Ok::<_, Error>((nlist, header_len, built.order, bytes))
        })
        .await
        .map_err(|e| Error::internal("index build", e))??;
        let id = new_segment_id();
        let index_path = c.paths.segment_index(&id);
        let index_bytes = bytes.len() as u64;
        if !put_file(self.store.as_ref(), &index_path, bytes.clone()).await? {
            return Err(Error::ObjectExists {
                path: index_path.to_string(),
            });
        }
        self.remember(&index_path, &bytes).await;
        drop(bytes);
        // The data file keeps every column but the vectors (the index file
        // has them, in the same order): one copy of each vector.
        let (schema, columns) = indexed_data_schema(&c.schema);
        let chunks = order.chunks(REORDER_CHUNK_ROWS).map(|rows| {
            let rows = UInt32Array::from(rows.to_vec());
            let taken = columns
                .iter()
                .map(|i| {
                    Ok(arrow::compute::take(
                        batch.column(*i).as_ref(),
                        &rows,
                        None,
                    )?)
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(RecordBatch::try_new(Arc::clone(&schema), taken)?)
        });
        let mut entry = self
            .write_segment_entry_from(c, &schema, &id, c.paths.segment_data(&id), chunks, sealed)
            .await?;
        entry.index = Some(IndexFile {
            path: index_path.to_string(),
            size_bytes: index_bytes,
            nlist,
            header_bytes: header_len,
        });
        Ok((entry, nlist))
    }

    /// Handles an object-created event (from S3, or delivered in-process by
    /// `floe serve`): a new sealed data file gets its index built; other
    /// keys need nothing.
    pub async fn on_object_created(&self, key: &str) -> Result<Option<IndexReport>> {
        let Some(parsed) = parse_key(key) else {
            return Ok(None);
        };
        let CollectionFile::SealedData(id) = parsed.file else {
            return Ok(None);
        };
        // A file of a dropped incarnation (or an event delivered late) is
        // ignored; one of an incarnation this process has not seen yet
        // replaces what it remembers.
        match self.collection(&parsed.collection).await {
            Ok(c) if c.incarnation == parsed.incarnation => {}
            Ok(c) => match self.catalog.get(&parsed.collection).await {
                Ok(entry) if entry.incarnation == parsed.incarnation => {
                    self.forget(&c.config.name, &c.incarnation)
                }
                Ok(_) | Err(Error::CollectionNotFound(_)) => return Ok(None),
                Err(e) => return Err(e),
            },
            Err(Error::CollectionNotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        }
        match self.build_index(&parsed.collection, &id).await {
            Err(Error::CollectionNotFound(_)) => Ok(None),
            other => other,
        }
    }

    /// The schedule's safety net: builds every missing index.
    pub async fn index_missing(&self, name: &str) -> Result<Vec<IndexReport>> {
        self.on_current(name, |c| async move {
            let m = c.manifests.latest().await?;
            let mut out = Vec::new();
            for s in m.segments.iter().filter(|s| s.sealed && s.index.is_none()) {
                if let Some(r) = self.build_index_in(&c, &s.id).await? {
                    out.push(r);
                }
            }
            Ok(out)
        })
        .await
    }
}
