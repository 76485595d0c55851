//! Compaction: every unsealed segment merged, superseded and deleted rows
//! dropped, full `seal_rows` chunks written as sealed segments (whose
//! creation builds their index) and the rest as one unsealed segment.

use serde::{Deserialize, Serialize};

use crate::engine::Floe;
use crate::engine::state::Collection;
use crate::error::{Error, Result};
use crate::manifest::{Committed, Fence, Operation, Role, SegmentEntry};
use crate::mvcc::Newest;
use crate::segment::{COL_ID, COL_LSN, new_segment_id};

/// Compaction starts once this many unsealed segments exist (or they hold
/// `seal_rows` rows between them).
pub const COMPACT_AT_SEGMENTS: usize = 4;

/// The columns that decide visibility.
const KEYS: [&str; 2] = [COL_ID, COL_LSN];

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompactReport {
    /// Unsealed segments merged.
    pub segments_in: usize,
    /// Rows read from them.
    pub rows_in: u64,
    /// Rows written (superseded and deleted ones dropped).
    pub rows_out: u64,
    /// New sealed segments: their `sealed.parquet` creation triggers the index build.
    pub sealed: Vec<String>,
    /// The new unsealed segment, if rows remained.
    pub unsealed: Vec<String>,
    /// Delete files no segment needs any more.
    pub deletes_dropped: usize,
}

impl Floe {
    /// This process's compactor epoch, claimed on first use.
    pub(super) async fn compactor_fence(&self, c: &Collection) -> Result<Fence> {
        let known = *c.compactor.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(fence) = known {
            return Ok(fence);
        }
        // Callers hold the maintenance lock: one claim at a time here.
        let fence = c.manifests.claim(Role::Compactor).await?.0;
        *c.compactor.lock().unwrap_or_else(|p| p.into_inner()) = Some(fence);
        Ok(fence)
    }

    /// Commits a compactor's operation. Fenced (another process claimed
    /// the role since), the operation is abandoned and the next one claims
    /// a new epoch: an indexer that lost the role once is not out of work
    /// for good, while whatever it had under way can never land.
    pub(super) async fn commit_as_compactor(
        &self,
        c: &Collection,
        fence: Fence,
        op: &Operation,
    ) -> Result<Committed> {
        let result = c.manifests.commit(Some(fence), op).await;
        if let Err(Error::Fenced { .. }) = &result {
            let mut current = c.compactor.lock().unwrap_or_else(|p| p.into_inner());
            if *current == Some(fence) {
                *current = None;
            }
        }
        result
    }

    /// Compacts when enough small segments piled up.
    pub async fn compact_if_due(&self, name: &str) -> Result<Option<CompactReport>> {
        self.on_current(name, |c| async move {
            let m = c.manifests.latest().await?;
            let small: Vec<&SegmentEntry> = m.segments.iter().filter(|s| !s.sealed).collect();
            let rows: u64 = small.iter().map(|s| s.rows).sum();
            if small.len() >= COMPACT_AT_SEGMENTS || rows >= c.config.index.seal_rows {
                Ok(Some(self.compact_collection(&c).await?))
            } else {
                Ok(None)
            }
        })
        .await
    }

    /// Merges every unsealed segment, dropping superseded and deleted rows,
    /// into sealed segments of `seal_rows` rows plus at most one smaller one,
    /// and swaps them in with one manifest commit.
    pub async fn compact(&self, name: &str) -> Result<CompactReport> {
        self.on_current(name, |c| async move { self.compact_collection(&c).await })
            .await
    }

    async fn compact_collection(&self, c: &Collection) -> Result<CompactReport> {
        let _one_at_a_time = c.maintenance_lock.lock().await;
        let fence = self.compactor_fence(c).await?;
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
            let keys = self
                .read_file(&s.data_path, s.size_bytes, Some(&KEYS))
                .await?;
            newest.observe_rows(&keys, false)?;
        }
        for d in manifest.deletes.iter().filter(|d| d.max_lsn >= oldest) {
            let keys = self.read_file(&d.path, d.size_bytes, Some(&KEYS)).await?;
            newest.observe_rows(&keys, true)?;
        }
        let mut kept = Vec::new();
        for s in &inputs {
            let batch = self.read_file(&s.data_path, s.size_bytes, None).await?;
            report.rows_in += batch.num_rows() as u64;
            kept.push(arrow::compute::filter_record_batch(
                &batch,
                &newest.visible_mask(&batch)?,
            )?);
        }
        let merged = arrow::compute::concat_batches(&c.schema, &kept)?;
        report.rows_out = merged.num_rows() as u64;
        let seal = c.config.index.seal_rows.max(1) as usize;
        let mut outputs = Vec::new();
        let mut start = 0;
        while start < merged.num_rows() {
            let len = seal.min(merged.num_rows() - start);
            let part = merged.slice(start, len);
            let sealed = len >= seal;
            let id = new_segment_id();
            let path = if sealed {
                report.sealed.push(id.clone());
                c.paths.segment_sealed(&id)
            } else {
                report.unsealed.push(id.clone());
                c.paths.segment_data(&id)
            };
            outputs.push(
                self.write_segment_entry(c, &id, path, &part, sealed)
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
        match self.commit_as_compactor(c, fence, &op).await? {
            Committed::New(_) => {}
            Committed::AlreadyApplied(_) => {
                return Err(Error::internal(
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
}
