//! Compaction: carries out what the policy ([`super::plan`]) says is due —
//! new rows merged and indexed, size tiers merged, segments with many dead
//! rows rewritten — each job one manifest commit; then delete files whose
//! tombstones hide no stored row any more are dropped, and the rest merged
//! once [`FANOUT`] of them pile up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use serde::{Deserialize, Serialize};

use super::plan::{FANOUT, Job, cut, index_inline, plan};
use crate::engine::Floe;
use crate::engine::state::Collection;
use crate::error::{Error, Result};
use crate::manifest::{Committed, DeleteFile, Fence, Manifest, Operation, Role, SegmentEntry};
use crate::mvcc::{Newest, id_and_lsn};
use crate::segment::{COL_ID, COL_LSN, conform, new_segment_id};

/// How often a background round counts dead rows (reading the keys of
/// segments it has not seen yet) to find segments and delete files worth
/// purging. A forced compaction always counts.
pub const PURGE_CHECK_EVERY: Duration = Duration::from_secs(30);

/// The columns that decide visibility.
const KEYS: [&str; 2] = [COL_ID, COL_LSN];

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompactReport {
    /// Segments rewritten (merged or purged).
    pub segments_in: usize,
    /// Rows read from them.
    pub rows_in: u64,
    /// Rows written (superseded and deleted ones dropped).
    pub rows_out: u64,
    /// New sealed segments: their `sealed.parquet` creation triggers the index build.
    pub sealed: Vec<String>,
    /// New unsealed segments written with their index.
    pub indexed: Vec<String>,
    /// New unsealed segments too small for an index.
    pub unsealed: Vec<String>,
    /// Segments rewritten alone because enough of their rows were dead.
    pub purged: usize,
    /// Delete files dropped (no stored row needs their tombstones, or
    /// merged into a new one).
    pub deletes_dropped: usize,
    /// Delete files written (the still-needed tombstones of merged ones).
    pub deletes_written: usize,
}

impl CompactReport {
    /// Whether it changed anything.
    pub fn is_empty(&self) -> bool {
        self.segments_in == 0 && self.deletes_dropped == 0
    }
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

    /// Carries out what the policy says is due; `None` when nothing was.
    /// Dead rows are counted every [`PURGE_CHECK_EVERY`].
    pub async fn compact_if_due(&self, name: &str) -> Result<Option<CompactReport>> {
        self.on_current(name, |c| async move {
            let report = self.compact_collection(&c, false).await?;
            Ok((!report.is_empty()).then_some(report))
        })
        .await
    }

    /// Merges every unsealed segment into as few as possible (sealing what
    /// reaches the seal size), rewrites segments with many dead rows, and
    /// drops or merges delete files — each step one manifest commit.
    pub async fn compact(&self, name: &str) -> Result<CompactReport> {
        self.on_current(
            name,
            |c| async move { self.compact_collection(&c, true).await },
        )
        .await
    }

    /// What is due, or with `force` every unsealed segment merged and dead
    /// rows counted now. A round with nothing due costs one manifest check.
    async fn compact_collection(&self, c: &Collection, force: bool) -> Result<CompactReport> {
        let _one_at_a_time = c.maintenance_lock.lock().await;
        let manifest = c.manifests.latest().await?;
        let purge = force
            || match *c.purge_checked.lock().unwrap_or_else(|p| p.into_inner()) {
                None => true,
                Some((v, at)) => v != manifest.version && at.elapsed() >= PURGE_CHECK_EVERY,
            };
        let dead = if purge {
            Some(self.dead_rows(c, &manifest).await?)
        } else {
            None
        };
        let jobs = plan(&manifest.segments, dead.as_ref(), &c.config, force);
        let mut report = CompactReport::default();
        if jobs.is_empty() && !purge {
            return Ok(report);
        }
        let started = Instant::now();
        let result = async {
            for job in &jobs {
                self.run_job(c, job, &mut report).await?;
            }
            if purge {
                self.tidy_deletes(c, &mut report).await?;
            }
            Ok::<_, Error>(())
        }
        .await;
        // Segments sealed by jobs that committed get their builds even if a
        // later step failed.
        for id in &report.sealed {
            self.emit_object_created(c.paths.segment_sealed(id).as_ref());
        }
        result?;
        if !jobs.is_empty() || report.deletes_dropped > 0 || report.deletes_written > 0 {
            crate::telemetry::maintenance("compaction", started.elapsed());
        }
        let live = c.manifests.latest().await?;
        if purge {
            *c.purge_checked.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((live.version, Instant::now()));
        }
        // Keys of files no manifest lists any more are not needed again.
        c.compactor_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|path, _| {
                live.segments.iter().any(|s| &s.data_path == path)
                    || live.deletes.iter().any(|d| &d.path == path)
            });
        Ok(report)
    }

    /// `id` and `_lsn` of each file `(key, size, rows_lsn)`, read once per
    /// process (a file with a `rows_lsn` has no `_lsn` column: see
    /// [`SegmentEntry::rows_lsn`]).
    async fn keys_of(
        &self,
        c: &Collection,
        files: &[KeyFile<'_>],
    ) -> Result<Vec<Arc<RecordBatch>>> {
        let missing: Vec<KeyFile<'_>> = {
            let known = c.compactor_keys.lock().unwrap_or_else(|p| p.into_inner());
            files
                .iter()
                .filter(|(path, _, _)| !known.contains_key(*path))
                .copied()
                .collect()
        };
        let read = futures::future::try_join_all(missing.iter().map(
            |(path, size, rows_lsn)| async move {
                let columns: &[&str] = if rows_lsn.is_some() {
                    &KEYS[..1]
                } else {
                    &KEYS
                };
                let keys = self.read_file(path, *size, Some(columns)).await?;
                let keys = conform(keys, &keys_schema(&c.schema)?, *rows_lsn)?;
                Ok::<_, Error>((path.to_string(), Arc::new(keys)))
            },
        ))
        .await?;
        let mut known = c.compactor_keys.lock().unwrap_or_else(|p| p.into_inner());
        known.extend(read);
        files
            .iter()
            .map(|(path, _, _)| {
                known.get(*path).cloned().ok_or_else(|| {
                    Error::internal("compaction", format!("keys of {path} not read"))
                })
            })
            .collect()
    }

    /// The newest event per id over every segment and delete file that
    /// holds an event at or after `oldest` (only those can hide its rows).
    async fn newest_since(&self, c: &Collection, m: &Manifest, oldest: u64) -> Result<Newest> {
        let segments = segment_files(m.segments.iter().filter(|s| s.max_lsn >= oldest));
        let deletes = delete_files(m.deletes.iter().filter(|d| d.max_lsn >= oldest));
        let (segments, deletes) =
            futures::try_join!(self.keys_of(c, &segments), self.keys_of(c, &deletes))?;
        let mut newest = Newest::default();
        for keys in &segments {
            newest.observe_rows(keys, false)?;
        }
        for keys in &deletes {
            newest.observe_rows(keys, true)?;
        }
        Ok(newest)
    }

    /// Dead (superseded or deleted) rows per segment.
    async fn dead_rows(&self, c: &Collection, m: &Manifest) -> Result<HashMap<String, u64>> {
        let newest = self.newest_since(c, m, 0).await?;
        let keys = self.keys_of(c, &segment_files(&m.segments)).await?;
        let mut dead = HashMap::new();
        for (s, keys) in m.segments.iter().zip(keys) {
            let visible = newest.visible_mask(&keys)?.true_count() as u64;
            dead.insert(s.id.clone(), keys.num_rows() as u64 - visible);
        }
        Ok(dead)
    }

    /// Rewrites a job's segments as one set of rows, without the dead ones:
    /// full sealed segments (indexed by their own build), then the rest as
    /// one segment, indexed here if it is big enough.
    async fn run_job(&self, c: &Collection, job: &Job, report: &mut CompactReport) -> Result<()> {
        let manifest = c.manifests.latest().await?;
        let inputs: Vec<SegmentEntry> = job
            .inputs
            .iter()
            .filter_map(|id| manifest.segment(id).cloned())
            .collect();
        if inputs.len() != job.inputs.len() || inputs.is_empty() {
            return Ok(()); // the manifest moved on; the next round plans again
        }
        let fence = self.compactor_fence(c).await?;
        let oldest = inputs.iter().map(|s| s.min_lsn).min().unwrap_or(0);
        let newest = self.newest_since(c, &manifest, oldest).await?;
        let mut kept = Vec::new();
        let (mut rows_in, mut bytes_in) = (0u64, 0u64);
        for s in &inputs {
            let batch = self.read_segment(c, s).await?;
            rows_in += batch.num_rows() as u64;
            bytes_in += s.row_bytes(c.config.dimension as usize);
            kept.push(arrow::compute::filter_record_batch(
                &batch,
                &newest.visible_mask(&batch)?,
            )?);
        }
        let merged = arrow::compute::concat_batches(&c.schema, &kept)?;
        drop(kept);
        let seal_at = c
            .config
            .index
            .seal_at_rows(bytes_in as f64 / rows_in.max(1) as f64);
        let (mut sealed, mut indexed, mut unsealed) = (Vec::new(), Vec::new(), Vec::new());
        let mut outputs = Vec::new();
        for (start, len, seal) in cut(merged.num_rows(), seal_at as usize) {
            let part = merged.slice(start, len);
            let entry = if seal {
                let id = new_segment_id();
                sealed.push(id.clone());
                self.write_segment_entry(c, &id, c.paths.segment_sealed(&id), &part, true)
                    .await?
            } else if index_inline(&c.config.index, len as u64) {
                let (entry, _) = self.write_indexed_segment(c, &part, false).await?;
                indexed.push(entry.id.clone());
                entry
            } else {
                let id = new_segment_id();
                unsealed.push(id.clone());
                self.write_segment_entry(c, &id, c.paths.segment_data(&id), &part, false)
                    .await?
            };
            outputs.push(entry);
        }
        let op = Operation::Replace {
            remove: inputs.iter().map(|s| s.id.clone()).collect(),
            add: outputs,
            drop_deletes: vec![],
            add_deletes: vec![],
            schema: c.added,
        };
        match self.commit_replace(c, fence, &op).await {
            Ok(()) => {}
            // An input was replaced meanwhile (another process's compaction
            // or build): this job's files are garbage; the next round plans again.
            Err(Error::CommitConflict { .. }) => return Ok(()),
            Err(e) => return Err(e),
        }
        tracing::debug!(collection = %c.config.name, reason = job.reason, rows_in, rows_out = merged.num_rows(), "compaction job");
        report.segments_in += inputs.len();
        report.rows_in += rows_in;
        report.rows_out += merged.num_rows() as u64;
        report.purged += usize::from(job.reason == super::plan::PURGE_REASON);
        report.sealed.extend(sealed);
        report.indexed.extend(indexed);
        report.unsealed.extend(unsealed);
        Ok(())
    }

    /// Drops delete files none of whose tombstones hides a stored row any
    /// more, and merges the rest into one once [`FANOUT`] of them exist (a
    /// cold query reads every delete file).
    async fn tidy_deletes(&self, c: &Collection, report: &mut CompactReport) -> Result<()> {
        let m = c.manifests.latest().await?;
        if m.deletes.is_empty() {
            return Ok(());
        }
        let (delete_files, segment_files) = (delete_files(&m.deletes), segment_files(&m.segments));
        let (deletes, segments) = futures::try_join!(
            self.keys_of(c, &delete_files),
            self.keys_of(c, &segment_files)
        )?;
        let mut tombstones = Newest::default();
        for keys in &deletes {
            tombstones.observe_rows(keys, true)?;
        }
        // The newest tombstone of each id that still hides a stored row.
        let mut hiding = Newest::default();
        for keys in &segments {
            let (ids, lsns) = id_and_lsn(keys)?;
            for row in 0..keys.num_rows() {
                if let Some((t, _)) = tombstones.get(ids, row)
                    && lsns.value(row) < t
                {
                    hiding.observe(ids, row, t, true);
                }
            }
        }
        let mut needed = Vec::new();
        let mut unneeded = Vec::new();
        for (d, keys) in m.deletes.iter().zip(&deletes) {
            let (ids, lsns) = id_and_lsn(keys)?;
            let hides = (0..keys.num_rows()).any(|row| {
                hiding
                    .get(ids, row)
                    .is_some_and(|(t, _)| t == lsns.value(row))
            });
            if hides {
                needed.push(d.path.clone());
            } else {
                unneeded.push(d.path.clone());
            }
        }
        let (drop_deletes, add_deletes) = if needed.len() >= FANOUT {
            let file = self.write_delete_file(c, &hiding.deletes()).await?;
            (
                unneeded.into_iter().chain(needed).collect::<Vec<_>>(),
                vec![file],
            )
        } else {
            (unneeded, vec![])
        };
        if drop_deletes.is_empty() {
            return Ok(());
        }
        let fence = self.compactor_fence(c).await?;
        report.deletes_dropped += drop_deletes.len();
        report.deletes_written += add_deletes.len();
        let op = Operation::Replace {
            remove: vec![],
            add: vec![],
            drop_deletes,
            add_deletes,
            schema: c.added,
        };
        self.commit_replace(c, fence, &op).await
    }

    async fn commit_replace(&self, c: &Collection, fence: Fence, op: &Operation) -> Result<()> {
        match self.commit_as_compactor(c, fence, op).await? {
            Committed::New(_) => Ok(()),
            Committed::AlreadyApplied(_) => Err(Error::internal(
                "compaction",
                "a replace cannot be already applied",
            )),
        }
    }
}

/// A file whose keys [`Floe::keys_of`] reads: its key, size and
/// [`SegmentEntry::rows_lsn`].
type KeyFile<'a> = (&'a str, u64, Option<u64>);

/// The schema of [`KEYS`] (`id` and `_lsn`) in a segment of `schema`.
fn keys_schema(schema: &SchemaRef) -> Result<SchemaRef> {
    Ok(Arc::new(schema.project(&[
        schema.index_of(COL_ID)?,
        schema.index_of(COL_LSN)?,
    ])?))
}

/// Segments' data files, as [`Floe::keys_of`] takes them.
fn segment_files<'a>(segments: impl IntoIterator<Item = &'a SegmentEntry>) -> Vec<KeyFile<'a>> {
    segments
        .into_iter()
        .map(|s| (s.data_path.as_str(), s.size_bytes, s.rows_lsn))
        .collect()
}

/// Delete files, as [`Floe::keys_of`] takes them.
fn delete_files<'a>(deletes: impl IntoIterator<Item = &'a DeleteFile>) -> Vec<KeyFile<'a>> {
    deletes
        .into_iter()
        .map(|d| (d.path.as_str(), d.size_bytes, None))
        .collect()
}
