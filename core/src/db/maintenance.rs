//! What the indexer does besides flushing: compaction of small segments into
//! sealed ones, IVF index builds (triggered by the sealed file's
//! object-created event), and garbage collection after a grace period.

use std::collections::HashSet;

use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch, UInt32Array};
use arrow::datatypes::Float32Type;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

use super::{Collection, Floe};
use crate::error::{Error, Result};
use crate::index::{IvfIndex, IvfParams};
use crate::manifest::{Committed, Fence, IndexFile, Operation, Role, SegmentEntry};
use crate::search::Newest;
use crate::segment::{COL_VECTOR, new_segment_id};
use crate::storage::{CollectionPaths, put_create};

/// Compaction starts once this many unsealed segments exist (or they hold
/// `seal_rows` rows between them).
pub const COMPACT_AT_SEGMENTS: usize = 4;

/// The columns that decide visibility.
const KEYS: [&str; 2] = [crate::segment::COL_ID, crate::segment::COL_LSN];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompactReport {
    pub segments_in: usize,
    pub rows_in: u64,
    pub rows_out: u64,
    /// New sealed segments: their `sealed.parquet` creation triggers the index build.
    pub sealed: Vec<String>,
    pub unsealed: Vec<String>,
    pub deletes_dropped: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexReport {
    pub replaced: String,
    pub segment: String,
    pub rows: u64,
    pub nlist: u32,
    pub build_ms: u64,
    pub index_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GcReport {
    pub deleted: usize,
}

/// `collections/<name>/segments/<id>/sealed.parquet` (after any prefix).
pub fn parse_sealed_key(key: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = key.split('/').collect();
    let at = parts.iter().rposition(|p| *p == "collections")?;
    match &parts[at..] {
        [_, name, "segments", id, "sealed.parquet"] => Some((name.to_string(), id.to_string())),
        _ => None,
    }
}

impl Floe {
    async fn compactor_fence(&self, c: &Collection) -> Result<Fence> {
        c.compactor
            .get_or_try_init(|| async {
                Ok::<_, Error>(c.manifests.claim(Role::Compactor).await?.0)
            })
            .await
            .copied()
    }

    /// Compacts when enough small segments piled up.
    pub async fn compact_if_due(&self, name: &str) -> Result<Option<CompactReport>> {
        let c = self.collection(name).await?;
        let m = c.manifests.latest().await?;
        let small: Vec<&SegmentEntry> = m.segments.iter().filter(|s| !s.sealed).collect();
        let rows: u64 = small.iter().map(|s| s.rows).sum();
        if small.len() >= COMPACT_AT_SEGMENTS || rows >= c.config.index.seal_rows {
            Ok(Some(self.compact(name).await?))
        } else {
            Ok(None)
        }
    }

    /// Merges every unsealed segment, dropping superseded and deleted rows,
    /// into sealed segments of `seal_rows` rows plus at most one smaller one,
    /// and swaps them in with one manifest commit.
    pub async fn compact(&self, name: &str) -> Result<CompactReport> {
        let c = self.collection(name).await?;
        let _one_at_a_time = c.maintenance_lock.lock().await;
        let fence = self.compactor_fence(&c).await?;
        let manifest = c.manifests.latest().await?;
        let mut inputs: Vec<SegmentEntry> = manifest
            .segments
            .iter()
            .filter(|s| !s.sealed)
            .cloned()
            .collect();
        inputs.sort_by_key(|s| s.min_lsn);
        let mut report = CompactReport {
            segments_in: inputs.len(),
            ..Default::default()
        };
        if inputs.is_empty() {
            return Ok(report);
        }
        // The newest event per id decides what survives. Only files holding
        // an event newer than the oldest input row can hide one, and only
        // their id and _lsn columns are needed.
        let oldest = inputs.iter().map(|s| s.min_lsn).min().unwrap_or(0);
        let mut newest = Newest::default();
        for s in manifest.segments.iter().filter(|s| s.max_lsn >= oldest) {
            newest.observe_rows(
                &self
                    .read_file(&s.data_path, s.size_bytes, Some(&KEYS))
                    .await?,
                false,
            )?;
        }
        for d in manifest.deletes.iter().filter(|d| d.max_lsn >= oldest) {
            newest.observe_rows(
                &self.read_file(&d.path, d.size_bytes, Some(&KEYS)).await?,
                true,
            )?;
        }
        let mut kept = Vec::new();
        for s in &inputs {
            let batch = self.read_file(&s.data_path, s.size_bytes, None).await?;
            report.rows_in += batch.num_rows() as u64;
            let (ids, lsns) = crate::search::id_and_lsn(&batch)?;
            let mask: arrow::array::BooleanArray = (0..batch.num_rows())
                .map(|r| Some(newest.get(ids, r) == Some((lsns.value(r), false))))
                .collect();
            kept.push(arrow::compute::filter_record_batch(&batch, &mask)?);
        }
        let merged = arrow::compute::concat_batches(&c.schema, &kept)?;
        report.rows_out = merged.num_rows() as u64;
        let seal = c.config.index.seal_rows.max(1) as usize;
        let mut outputs = Vec::new();
        let mut start = 0;
        while start < merged.num_rows() {
            let len = if merged.num_rows() - start >= seal {
                seal
            } else {
                merged.num_rows() - start
            };
            let part = merged.slice(start, len);
            let sealed = len >= seal;
            let id = new_segment_id();
            let path = if sealed {
                c.paths.segment_sealed(&id)
            } else {
                c.paths.segment_data(&id)
            };
            if sealed {
                report.sealed.push(id.clone())
            } else {
                report.unsealed.push(id.clone())
            }
            outputs.push(
                self.write_segment_entry(&c, &id, path, &part, sealed)
                    .await?,
            );
            start += len;
        }
        let removed: Vec<String> = inputs.iter().map(|s| s.id.clone()).collect();
        // A delete file the merge applied can go once no other segment is
        // old enough to hold a row it hides.
        let drop_deletes: Vec<String> = manifest
            .deletes
            .iter()
            .filter(|d| {
                manifest
                    .segments
                    .iter()
                    .all(|s| removed.contains(&s.id) || s.min_lsn >= d.max_lsn)
            })
            .map(|d| d.path.clone())
            .collect();
        report.deletes_dropped = drop_deletes.len();
        let op = Operation::Replace {
            remove: removed,
            add: outputs,
            drop_deletes,
        };
        match c.manifests.commit(Some(fence), &op).await? {
            Committed::New(_) => {}
            Committed::AlreadyApplied(_) => {
                return Err(Error::corrupt(
                    "compaction",
                    "a replace cannot be already applied",
                ));
            }
        }
        for id in &report.sealed {
            self.emit_object_created(c.paths.segment_sealed(id).as_ref());
        }
        Ok(report)
    }

    /// Builds the IVF index of a sealed segment: rewrites its rows cluster by
    /// cluster with the index beside them, and swaps the result in.
    /// `Ok(None)` when the segment is gone or already indexed.
    pub async fn build_index(&self, name: &str, segment_id: &str) -> Result<Option<IndexReport>> {
        let c = self.collection(name).await?;
        let _one_at_a_time = c.maintenance_lock.lock().await;
        let manifest = c.manifests.latest().await?;
        let Some(segment) = manifest.segment(segment_id).cloned() else {
            return Ok(None);
        };
        if segment.index.is_some() {
            return Ok(None);
        }
        let fence = self.compactor_fence(&c).await?;
        let started = Instant::now();
        let batch = self
            .read_file(&segment.data_path, segment.size_bytes, None)
            .await?;
        let dim = c.config.dimension as usize;
        let metric = c.config.metric;
        let vectors: Vec<f32> = {
            let list = batch
                .column_by_name(COL_VECTOR)
                .and_then(|c| c.as_fixed_size_list_opt())
                .ok_or_else(|| Error::corrupt("segment", "no vector column"))?;
            let offset = arrow::array::Array::offset(list) * dim;
            list.values().as_primitive::<Float32Type>().values()
                [offset..offset + batch.num_rows() * dim]
                .to_vec()
        };
        let (index, order, bytes) = tokio::task::spawn_blocking(move || {
            let built = IvfIndex::build(&vectors, dim, metric, &IvfParams::default())?;
            // The index file carries the vectors too, in cluster order, so a
            // query re-ranks with ranged reads of it alone.
            let bytes = bytes::Bytes::from(built.index.to_bytes(&built.clustered));
            Ok::<_, Error>((built.index, built.order, bytes))
        })
        .await
        .map_err(|e| Error::corrupt("index build", e))??;
        let clustered: RecordBatch =
            arrow::compute::take_record_batch(&batch, &UInt32Array::from(order))?;
        let id = new_segment_id();
        let mut entry = self
            .write_segment_entry(&c, &id, c.paths.segment_data(&id), &clustered, true)
            .await?;
        let index_path = c.paths.segment_index(&id);
        let index_bytes = bytes.len() as u64;
        if !put_create(self.store.as_ref(), &index_path, bytes.clone()).await? {
            return Err(Error::ObjectExists {
                path: index_path.to_string(),
            });
        }
        self.remember(&index_path, &bytes);
        entry.index = Some(IndexFile {
            path: index_path.to_string(),
            size_bytes: index_bytes,
            nlist: index.nlist() as u32,
            header_bytes: index.header_len(),
        });
        let rows = entry.rows;
        let op = Operation::Replace {
            remove: vec![segment_id.to_string()],
            add: vec![entry],
            drop_deletes: vec![],
        };
        match c.manifests.commit(Some(fence), &op).await {
            Ok(_) => {}
            // Someone else replaced the segment meanwhile: our files are garbage.
            Err(Error::CommitConflict { .. }) => return Ok(None),
            Err(e) => return Err(e),
        }
        Ok(Some(IndexReport {
            replaced: segment_id.to_string(),
            segment: id,
            rows,
            nlist: index.nlist() as u32,
            build_ms: started.elapsed().as_millis() as u64,
            index_bytes,
        }))
    }

    /// Handles an object-created event (from S3, or delivered in-process by
    /// `floe serve`): a new sealed data file gets its index built.
    pub async fn on_object_created(&self, key: &str) -> Result<Option<IndexReport>> {
        match parse_sealed_key(key) {
            Some((name, id)) => match self.build_index(&name, &id).await {
                Err(Error::CollectionNotFound(_)) => Ok(None),
                other => other,
            },
            None => Ok(None),
        }
    }

    /// The schedule's safety net: builds every missing index.
    pub async fn index_missing(&self, name: &str) -> Result<Vec<IndexReport>> {
        let c = self.collection(name).await?;
        let m = c.manifests.latest().await?;
        let mut out = Vec::new();
        for s in m.segments.iter().filter(|s| s.sealed && s.index.is_none()) {
            if let Some(r) = self.build_index(name, &s.id).await? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Deletes files no manifest needs: objects the newest manifest does not
    /// reference, and older manifests, once they are older than `grace` (a
    /// query still reading an older manifest finishes well within it).
    pub async fn gc(&self, name: &str, grace: Duration) -> Result<GcReport> {
        let c = self.collection(name).await?;
        let manifest = c.manifests.latest().await?;
        let paths = CollectionPaths::new(name);
        let mut keep: HashSet<String> = HashSet::new();
        keep.insert(paths.config().to_string());
        keep.insert(paths.latest_manifest_hint().to_string());
        keep.insert(paths.manifest(manifest.version).to_string());
        for s in &manifest.segments {
            keep.insert(s.data_path.clone());
            if let Some(i) = &s.index {
                keep.insert(i.path.clone());
            }
        }
        for d in &manifest.deletes {
            keep.insert(d.path.clone());
        }
        let cutoff =
            chrono::Utc::now() - chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        let root = paths.root();
        let doomed: Vec<object_store::path::Path> = self
            .store
            .list(Some(&root))
            .try_filter(|m| {
                futures::future::ready(
                    !keep.contains(m.location.as_ref()) && m.last_modified < cutoff,
                )
            })
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(|e| Error::store("list", &root, e))?;
        for path in &doomed {
            match self.store.delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(Error::store("delete", path, e)),
            }
        }
        Ok(GcReport {
            deleted: doomed.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::parse_sealed_key;

    #[test]
    fn sealed_keys_are_recognised() {
        assert_eq!(
            parse_sealed_key("pre/fix/collections/docs/segments/0193/sealed.parquet"),
            Some(("docs".into(), "0193".into()))
        );
        assert_eq!(
            parse_sealed_key("collections/docs/segments/0193/data.parquet"),
            None
        );
        assert_eq!(parse_sealed_key("collections/docs/manifests/1.json"), None);
    }
}
