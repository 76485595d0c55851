//! Flush: the log tail past the manifest's checkpoint becomes a segment
//! (the surviving upserts) and a delete file (the surviving deletes), and a
//! manifest commit moves the checkpoint.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use arrow::array::RecordBatch;

use crate::clock::now_ms;
use crate::engine::Floe;
use crate::engine::request::FlushReport;
use crate::engine::state::Collection;
use crate::error::{Error, Result};
use crate::log::{LogCursor, LogRecord, Lsn};
use crate::manifest::{Committed, DeleteFile, ImportedSegments, Operation, SegmentEntry};
use crate::mvcc::Newest;
use crate::segment::new_segment_id;

/// What a flush wrote for one log range, and the imported segments it adds.
struct FlushFiles {
    segment: Option<(SegmentEntry, RecordBatch)>,
    delete_file: Option<DeleteFile>,
    deletes: u64,
    imported: Vec<ImportedSegments>,
}

impl Floe {
    /// Turns the log tail past the checkpoint into a segment (and a delete
    /// file) and commits a manifest that moves the checkpoint. Safe to rerun
    /// and to race: a range already flushed is never flushed twice.
    pub async fn flush(&self, name: &str) -> Result<FlushReport> {
        self.on_current(name, |c| async move { self.flush_collection(&c).await })
            .await
    }

    pub(crate) async fn flush_collection(&self, c: &Collection) -> Result<FlushReport> {
        let started = std::time::Instant::now();
        let report = {
            let _one_at_a_time = c.flush_lock.lock().await;
            let mut report = FlushReport {
                checkpoint_lsn: 0,
                segments_written: 0,
                rows_flushed: 0,
                deletes_flushed: 0,
            };
            let mut conflicts = 0;
            loop {
                let manifest = c.manifests.latest().await?;
                report.checkpoint_lsn = manifest.checkpoint_lsn;
                let from = manifest.checkpoint_lsn;
                let last = c.log().await?.last_lsn().await?;
                if last <= from {
                    break;
                }
                let records = self.read_for_flush(c, from, last).await?;
                let Some(to) = records.last().map(|(lsn, _)| *lsn) else {
                    break;
                };
                let files = self.write_flush_files(c, &records).await?;
                let op = Operation::Flush {
                    from_lsn: from,
                    to_lsn: to,
                    segment: files.segment.as_ref().map(|(entry, _)| entry.clone()),
                    delete_file: files.delete_file,
                    imported: files.imported.clone(),
                    schema: c.added,
                };
                match c.manifests.commit(None, &op).await {
                    Ok(Committed::New(m)) => {
                        report.checkpoint_lsn = m.checkpoint_lsn;
                        report.deletes_flushed += files.deletes;
                        // Readers here see the flush at once, and keep what we
                        // just wrote instead of downloading it again.
                        let mut state = c.read_state();
                        state.install(m);
                        state.checked = Some(Instant::now());
                        report.rows_flushed += files
                            .imported
                            .iter()
                            .flat_map(|i| &i.segments)
                            .map(|s| s.rows)
                            .sum::<u64>();
                        if let Some((entry, batch)) = files.segment {
                            report.segments_written += 1;
                            report.rows_flushed += entry.rows;
                            // Unless a newer manifest (a compaction) already
                            // replaced it.
                            if state.lists_segment(&entry.id) {
                                state.segments.insert(entry.id, Arc::new(batch));
                            }
                        }
                    }
                    // Someone else flushed this range; our files are garbage.
                    Ok(Committed::AlreadyApplied(m)) => report.checkpoint_lsn = m.checkpoint_lsn,
                    Err(Error::CommitConflict { .. }) if conflicts < 10 => conflicts += 1,
                    Err(e) => return Err(e),
                }
            }
            report
        };
        if report.segments_written > 0 || report.deletes_flushed > 0 {
            crate::telemetry::maintenance("flush", started.elapsed());
        }
        self.trim_log(c).await;
        Ok(report)
    }

    /// Trims the log through the newest checkpoint committed at least one
    /// dedupe window ago (the manifest remembers when each was: see
    /// `Manifest::flushed_before`, so any process can do it, a short-lived
    /// one too). Flushed records live in segments, but the log keeps them
    /// for the window: a process that restarts rebuilds its request-id
    /// table from them (the file log) and checks a retry's digest against
    /// them (JetStream). Readers that still ask for trimmed records get
    /// `LsnTrimmed` and move to the newer manifest. Best effort: a failed
    /// trim is retried by the next round.
    pub(crate) async fn trim_log(&self, c: &Collection) {
        let manifest = Arc::clone(&c.read_state().manifest);
        let log = match c.log().await {
            Ok(log) => log,
            Err(e) => {
                tracing::warn!(collection = %c.config.name, error = %e, "trim skipped");
                return;
            }
        };
        let window_ms = log.duplicate_window().as_millis() as u64;
        let Some(through) = manifest.flushed_before(now_ms().saturating_sub(window_ms)) else {
            return;
        };
        if through <= c.trimmed.load(Ordering::Relaxed) {
            return;
        }
        match log.trim(through).await {
            Ok(()) => {
                c.trimmed.fetch_max(through, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(collection = %c.config.name, through, error = %e, "trimming the log failed");
            }
        }
    }

    /// Flushes when the tail is past a row, byte or age threshold.
    pub async fn flush_if_due(&self, name: &str) -> Result<Option<FlushReport>> {
        self.on_current(
            name,
            |c| async move { self.flush_if_due_collection(&c).await },
        )
        .await
    }

    async fn flush_if_due_collection(&self, c: &Collection) -> Result<Option<FlushReport>> {
        self.refresh_manifest(c, true).await?;
        self.trim_log(c).await;
        let last = c.log().await?.last_lsn().await?;
        self.refresh_tail(c, last).await?;
        let pending = c.read_state().tail.pending();
        crate::telemetry::unflushed(
            &c.config.name,
            pending.records as u64,
            pending.since.map(|s| s.elapsed()),
        );
        let f = &self.settings.flush;
        let due = pending.import
            || pending.rows >= f.max_rows
            || pending.bytes >= f.max_bytes
            || pending.since.is_some_and(|s| s.elapsed() >= f.max_age());
        if due {
            self.flush_collection(c).await.map(Some)
        } else {
            Ok(None)
        }
    }

    /// The records after `from`, up to `last`, within twice the flush limits.
    async fn read_for_flush(
        &self,
        c: &Collection,
        from: Lsn,
        last: Lsn,
    ) -> Result<Vec<(Lsn, LogRecord)>> {
        let limits = &self.settings.flush;
        let mut out = Vec::new();
        let (mut rows, mut bytes) = (0usize, 0usize);
        let mut cursor = LogCursor::new(c.log().await?.as_ref(), from + 1, last);
        while rows < limits.max_rows.max(1) * 2 && bytes < limits.max_bytes.max(1) * 2 {
            let Some(page) = cursor.next_page().await? else {
                break;
            };
            for entry in page {
                bytes += entry.payload.len();
                let record = LogRecord::decode(&entry.payload)?;
                rows += record.num_rows();
                out.push((entry.lsn, record));
            }
        }
        Ok(out)
    }

    /// Writes the rows and deletes that survive inside the range: per id,
    /// only its newest event there.
    async fn write_flush_files(
        &self,
        c: &Collection,
        records: &[(Lsn, LogRecord)],
    ) -> Result<FlushFiles> {
        let mut upserts = Vec::new();
        let mut newest = Newest::default();
        let mut imported = Vec::new();
        for (lsn, record) in records {
            // An import's rows are in its segments; later events in the
            // range supersede them as they would a segment's, by LSN.
            if let LogRecord::Import(marker) = record {
                imported.push(marker.at(*lsn));
                continue;
            }
            let (batch, deleted) = record.rows_at(&c.config, *lsn)?;
            newest.observe_rows(&batch, deleted)?;
            if !deleted {
                upserts.push(batch);
            }
        }
        let mut kept = Vec::new();
        for batch in &upserts {
            let filtered =
                arrow::compute::filter_record_batch(batch, &newest.visible_mask(batch)?)?;
            if filtered.num_rows() > 0 {
                kept.push(filtered);
            }
        }
        let segment = if kept.is_empty() {
            None
        } else {
            let batch = arrow::compute::concat_batches(&c.schema, &kept)?;
            let id = new_segment_id();
            let entry = self
                .write_segment_entry(c, &id, c.paths.segment_data(&id), &batch, false)
                .await?;
            Some((entry, batch))
        };
        let tombstones = newest.deletes();
        let (delete_file, deletes) = if tombstones.is_empty() {
            (None, 0)
        } else {
            let file = self.write_delete_file(c, &tombstones).await?;
            let rows = file.rows;
            (Some(file), rows)
        };
        Ok(FlushFiles {
            segment,
            delete_file,
            deletes,
            imported,
        })
    }
}
