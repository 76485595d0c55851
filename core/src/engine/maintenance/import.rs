//! Bulk import jobs. A job reads its files and checks them row by row
//! (`crate::import`), writes the good rows straight to segment files under
//! `imports/<job>/` (without `_lsn`: they have none yet), then appends one
//! marker record to the log. The marker's LSN is every imported row's
//! version, and the flush that covers the marker adds the segments to the
//! manifest — so the import is ordered among the writes like one upsert,
//! and reads see all of it or none of it. Until that flush, a read whose
//! log tail holds the marker waits for it (see `snapshot`).
//!
//! A job is resumable: after each part (a segment of about a sealed
//! segment's rows) it writes `part-<k>.json`, where the next part starts
//! and the counts so far; a runner that dies is replaced by a maintenance
//! round once its status has not moved for [`IMPORT_LEASE`], and picks up
//! after the last part. Whether the marker was appended is learnt from the
//! manifest (committed imports) and from the log after the position the
//! job noted before appending, so a marker is never appended twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, RecordBatch};
use bytes::Bytes;
use futures::StreamExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::AsyncArrowWriter;
use serde::{Deserialize, Serialize};

use super::SEALED_ROW_GROUP_ROWS;
use crate::clock::now_ms;
use crate::engine::Floe;
use crate::engine::export::write_error;
use crate::engine::state::Collection;
use crate::error::{Error, ErrorKind, Result};
use crate::id::Id;
use crate::import::job::{
    ImportFiles, ImportJob, ImportRequest, ImportState, ImportStatus, check_job_id, new_job_id,
};
use crate::import::{Format, ImportFile, ReadOptions, drop_repeated_ids, resolve_in};
use crate::log::{AppendOptions, ImportMarker, LogCursor, LogRecord, Lsn, RequestKey, digest};
use crate::manifest::SegmentEntry;
use crate::segment::{COL_ID, SegmentWriteOptions, upsert_schema, writer_properties};
use crate::storage::{get_json, put_create};

/// A job whose status has not moved for this long has lost its runner: a
/// maintenance round resumes it.
pub const IMPORT_LEASE: Duration = Duration::from_secs(60);
/// The runner writes its status at least this often while it reads.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// Top-level prefixes of Floe's own files: never an import's source.
const INTERNAL_PREFIXES: [&str; 5] = ["collections", "catalog", "dropping", "keys", "heads"];
/// Bytes of vectors per batch read from a file.
const READ_BATCH_VECTOR_BYTES: usize = 8 << 20;

/// Where a job stands after writing part `part`: its segment, the file
/// and row the next part starts at, and the counts so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PartRecord {
    part: u32,
    entry: SegmentEntry,
    next_file: usize,
    next_row: u64,
    status: ImportStatus,
}

/// A job marked running in this process until dropped.
struct Running<'a> {
    floe: &'a Floe,
    key: String,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.floe.imports_running().remove(&self.key);
    }
}

/// One run of a job: the job, and which run this is.
struct Run<'a> {
    job: &'a ImportJob,
    run: u32,
}

/// A part being written.
struct PartWriter {
    writer: AsyncArrowWriter<BufWriter>,
    path: Path,
    rows: usize,
}

impl PartWriter {
    async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer
            .write(batch)
            .await
            .map_err(|e| write_error(&self.path, e))?;
        self.rows += batch.num_rows();
        Ok(())
    }
}

impl Floe {
    /// Accepts an import of `request.source` into `name` and returns its
    /// status (`queued`): the job runs in the background (`floe serve`'s
    /// indexer, or the indexer function on the creation of its
    /// `job.json`). The same `job_id` with the same request is answered
    /// with the job as it is; with another request, `ImportExists`.
    /// Sources under `exports/` (other collections' rows) need
    /// `may_read_exports` (an admin key for every collection); Floe's own
    /// files are never a source.
    pub async fn start_import(
        &self,
        name: &str,
        request: ImportRequest,
        may_read_exports: bool,
    ) -> Result<ImportStatus> {
        request.check()?;
        for (field, key) in std::iter::once(("source", &request.source))
            .chain(request.ids.iter().map(|ids| ("ids", ids)))
        {
            let key = self.store_key(field, key)?;
            let top = key.split('/').next().unwrap_or_default();
            if INTERNAL_PREFIXES.contains(&top) {
                return Err(Error::invalid(
                    field,
                    format!("{key}: Floe's own files cannot be imported"),
                ));
            }
            if top == "exports" && !may_read_exports {
                return Err(Error::Forbidden(format!(
                    "{field}: importing from exports/ (other collections' rows) needs an admin key for every collection"
                )));
            }
        }
        let c = self.collection(name).await?;
        let job_id = request.job_id.clone().unwrap_or_else(new_job_id);
        let request = ImportRequest {
            job_id: Some(job_id.clone()),
            ..request
        };
        // A source that names no file, or files the server cannot read,
        // is a 400 now rather than a failed job later.
        self.import_files(&request).await?;
        let now = now_ms();
        let job = ImportJob {
            job_id: job_id.clone(),
            nonce: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            request,
            created_at_ms: now,
        };
        let path = c.paths.import_file(&job_id, "job.json");
        let body = serde_json::to_vec(&job).map_err(|e| Error::internal("import", e))?;
        if !put_create(self.store.as_ref(), &path, Bytes::from(body)).await? {
            let existing: ImportJob = get_json(self.store.as_ref(), &path).await?;
            if existing.request != job.request {
                return Err(Error::ImportExists {
                    job: job_id,
                    detail: "send a new job_id for another import".into(),
                });
            }
            return self.import_status_in(&c, &job_id).await;
        }
        let status = ImportStatus::queued(&job_id, &job.request.source, now);
        // Create-only: a runner that started at once may have written its own.
        let body = serde_json::to_vec(&status).map_err(|e| Error::internal("import", e))?;
        put_create(
            self.store.as_ref(),
            &c.paths.import_file(&job_id, "status.json"),
            Bytes::from(body),
        )
        .await?;
        self.emit_object_created(path.as_ref());
        Ok(status)
    }

    /// The status of import `job_id` of `name`.
    pub async fn import_status(&self, name: &str, job_id: &str) -> Result<ImportStatus> {
        check_job_id(job_id)?;
        let c = self.collection(name).await?;
        self.import_status_in(&c, job_id).await
    }

    async fn import_status_in(&self, c: &Collection, job_id: &str) -> Result<ImportStatus> {
        let path = c.paths.import_file(job_id, "status.json");
        match get_json(self.store.as_ref(), &path).await {
            Ok(status) => Ok(status),
            Err(e) if e.is_not_found() => {
                // Accepted, status not written yet.
                let job = self.import_job(c, job_id).await?;
                Ok(ImportStatus::queued(
                    job_id,
                    &job.request.source,
                    job.created_at_ms,
                ))
            }
            Err(e) => Err(e),
        }
    }

    async fn import_job(&self, c: &Collection, job_id: &str) -> Result<ImportJob> {
        let path = c.paths.import_file(job_id, "job.json");
        match get_json(self.store.as_ref(), &path).await {
            Err(e) if e.is_not_found() => Err(Error::ImportNotFound(job_id.to_string())),
            other => other,
        }
    }

    /// Runs (or resumes) import `job_id` of `name` to its end and returns
    /// its status. A job already running in this process, or ended, is
    /// only reported. Bad input ends the job `failed`; a store or log
    /// failure leaves it for a later run to resume.
    pub async fn run_import(&self, name: &str, job_id: &str) -> Result<ImportStatus> {
        check_job_id(job_id)?;
        let c = self.collection(name).await?;
        // Files may hold attributes added since this process opened it.
        let c = self.upgrade(&c).await?.unwrap_or(c);
        let key = format!("{name}/{}/{job_id}", c.incarnation);
        if !self.imports_running().insert(key.clone()) {
            return self.import_status_in(&c, job_id).await;
        }
        // Removed however the run ends: a run cancelled mid-way (its task
        // aborted) must not keep the job from being resumed here.
        let _running = Running { floe: self, key };
        self.run_import_in(&c, job_id).await
    }

    fn imports_running(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.imports.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn run_import_in(&self, c: &Collection, job_id: &str) -> Result<ImportStatus> {
        let job = self.import_job(c, job_id).await?;
        let mut status = self.import_status_in(c, job_id).await?;
        if status.state.ended() {
            return Ok(status);
        }
        let Some(run) = self.claim_import_run(c, job_id).await? else {
            // Another runner claimed it at the same moment.
            return Ok(status);
        };
        let run = &Run { job: &job, run };
        if status.state < ImportState::Committing {
            let staged = match self.stage_import(c, run, &mut status).await {
                Ok(staged) => staged,
                Err(e) if gives_up(&e) => {
                    status.error = Some(e.to_string());
                    None
                }
                Err(e) => return Err(e),
            };
            match staged {
                Some(segments) if !segments.is_empty() => {
                    self.commit_import(c, run, &mut status, segments).await?;
                }
                Some(_) => status.state = ImportState::Done,
                None => {
                    // Never once a marker may be in the log: a runner that
                    // took over may be committing.
                    let stored = self.import_status_in(c, job_id).await?;
                    if stored.state >= ImportState::Committing || stored.lsn.is_some() {
                        return Err(Error::log(
                            "import",
                            "the job is being committed by another runner",
                        ));
                    }
                    self.check_still_ours(c, run).await?;
                    status.state = ImportState::Failed;
                }
            }
        } else {
            let parts = self.import_parts(c, job_id).await?;
            let segments = parts.into_iter().map(|p| p.entry).collect();
            self.commit_import(c, run, &mut status, segments).await?;
        }
        status.finished_at_ms = Some(now_ms());
        self.write_import_status(c, run, &mut status).await?;
        // After the status: the garbage collector removes a failed job's
        // parts (and a done job's unreferenced ones) once this is old.
        self.store
            .put(
                &c.paths.import_file(job_id, "ended"),
                PutPayload::from_static(b""),
            )
            .await
            .map_err(|e| Error::store("put", job_id, e))?;
        if status.state == ImportState::Done {
            self.index_imported(c, &job).await;
        }
        tracing::info!(collection = %c.config.name, job = job_id, state = ?status.state, rows = status.rows_imported, rejected = status.rows_rejected, "import ended");
        Ok(status)
    }

    /// Claims the next run of the job (`run-<n>`, create-only): `None`
    /// when another runner claimed it first. A runner whose run is no
    /// longer the newest stops at its next step.
    async fn claim_import_run(&self, c: &Collection, job_id: &str) -> Result<Option<u32>> {
        let newest = self
            .job_files(c, job_id)
            .await?
            .iter()
            .filter_map(|m| {
                m.location
                    .filename()?
                    .strip_prefix("run-")?
                    .parse::<u32>()
                    .ok()
            })
            .max()
            .unwrap_or(0);
        let run = newest + 1;
        let path = c.paths.import_file(job_id, &format!("run-{run:05}"));
        let claimed = put_create(self.store.as_ref(), &path, Bytes::new()).await?;
        Ok(claimed.then_some(run))
    }

    /// Fails when a later run has claimed the job (this runner stalled
    /// past the lease and was replaced), or the job ended meanwhile.
    async fn check_still_ours(&self, c: &Collection, run: &Run<'_>) -> Result<()> {
        let job = &run.job.job_id;
        let next = c.paths.import_file(job, &format!("run-{:05}", run.run + 1));
        let ended = c.paths.import_file(job, "ended");
        let (next_run, ended_at) = tokio::join!(self.store.head(&next), self.store.head(&ended));
        for (path, found) in [(next, next_run), (ended, ended_at)] {
            match found {
                Err(object_store::Error::NotFound { .. }) => {}
                Ok(_) => {
                    return Err(Error::log(
                        "import",
                        "another runner took the job over; this one stops",
                    ));
                }
                Err(e) => return Err(Error::store("head", path, e)),
            }
        }
        Ok(())
    }

    /// Reads every file, writing parts; `Some(segments)` to commit, or
    /// `None` when bad rows fail the job (nothing is imported).
    async fn stage_import(
        &self,
        c: &Collection,
        run: &Run<'_>,
        status: &mut ImportStatus,
    ) -> Result<Option<Vec<SegmentEntry>>> {
        let job = run.job;
        let request = &job.request;
        let files = self.frozen_import_files(c, job).await?;
        let dim = c.config.dimension as usize;
        let options = ReadOptions {
            columns: request.columns(),
            batch_rows: (READ_BATCH_VECTOR_BYTES / (4 * dim.max(1))).max(256),
            npy_ids: match &request.ids {
                Some(key) => Some(self.import_ids_file(key).await?),
                None => None,
            },
            id_offset: request.id_offset.unwrap_or(0),
        };
        let part_rows = c.config.index.seal_at_rows((4 * dim + 16) as f64) as usize;
        // Resume after the last part written.
        let parts = self.import_parts(c, &job.job_id).await?;
        let mut segments: Vec<SegmentEntry> = parts.iter().map(|p| p.entry.clone()).collect();
        let mut seen: HashMap<Id, u64> = HashMap::new();
        for p in &parts {
            let ids = self
                .read_file(&p.entry.data_path, p.entry.size_bytes, Some(&[COL_ID]))
                .await?;
            let ids = ids.column(0);
            for r in 0..ids.len() {
                seen.insert(crate::id::id_at(ids.as_ref(), r), r as u64);
            }
        }
        let (mut next_file, mut next_row) = (0, 0);
        if let Some(last) = parts.last() {
            (next_file, next_row) = (last.next_file, last.next_row);
            *status = ImportStatus {
                created_at_ms: status.created_at_ms,
                ..last.status.clone()
            };
        }
        status.state = ImportState::Running;
        status.files = files.len() as u64;
        self.write_import_status(c, run, status).await?;
        let failing = |s: &ImportStatus| s.rows_rejected > 0 && !request.skip_bad_rows;
        // The part being written: rows stream out as they are checked, so
        // reading the files and uploading overlap and memory stays at a
        // row group.
        let mut part: Option<PartWriter> = None;
        let mut beat = std::time::Instant::now();
        for (i, file) in files.iter().enumerate().skip(next_file) {
            let lines = file.format == Format::JsonLines;
            let mut batches = file.batches(&c.config, &options).await?;
            let mut end = 0u64;
            while let Some(checked) = batches.next().await {
                let mut checked = checked?;
                let last = checked
                    .rows
                    .last()
                    .copied()
                    .max(checked.errors.last().map(|e| e.row));
                end = last.map_or(end, |r| r + 1);
                if i == next_file && next_row > 0 {
                    // Rows of the resumed file that earlier parts hold.
                    checked = skip_rows_before(checked, next_row)?;
                }
                let checked = drop_repeated_ids(checked, &mut seen, &options.columns.id, lines)?;
                status.rows_read += (checked.rows.len() + checked.errors.len()) as u64;
                status.reject(&file.name, checked.errors);
                if failing(status) {
                    // Nothing will be written: only count what is bad (an
                    // unfinished upload is abandoned).
                    part = None;
                    if beat.elapsed() >= HEARTBEAT {
                        self.write_import_status(c, run, status).await?;
                        beat = std::time::Instant::now();
                    }
                    continue;
                }
                status.rows_imported += checked.batch.num_rows() as u64;
                if checked.batch.num_rows() == 0 {
                    continue;
                }
                let writer = match part.as_mut() {
                    Some(writer) => writer,
                    None => part.insert(self.open_import_part(c, run, segments.len())?),
                };
                writer.write(&checked.batch).await?;
                if let Some(full) = part.take_if(|w| w.rows >= part_rows) {
                    let entry = self
                        .finish_import_part(c, run, status, segments.len(), full, (i, end), true)
                        .await?;
                    segments.push(entry);
                    beat = std::time::Instant::now();
                } else if beat.elapsed() >= HEARTBEAT {
                    self.write_import_status(c, run, status).await?;
                    beat = std::time::Instant::now();
                }
            }
            status.files_done = i as u64 + 1;
        }
        if failing(status) {
            status.error = Some(format!(
                "{} bad rows: nothing was imported (set skip_bad_rows to import the good ones)",
                status.rows_rejected
            ));
            return Ok(None);
        }
        if let Some(last) = part.take() {
            let sealed = last.rows >= part_rows;
            let at = (files.len(), 0);
            let entry = self
                .finish_import_part(c, run, status, segments.len(), last, at, sealed)
                .await?;
            segments.push(entry);
        }
        Ok(Some(segments))
    }

    /// Starts part `k`'s Parquet file: a multipart upload.
    fn open_import_part(&self, c: &Collection, run: &Run<'_>, k: usize) -> Result<PartWriter> {
        // Named by the run too: a superseded run finishing its upload late
        // never overwrites the file another run recorded.
        let job = run.job;
        let path = c.paths.import_file(&job.job_id, &job.part_file(k, run.run));
        let schema = upsert_schema(&c.config);
        let options = SegmentWriteOptions {
            row_group_rows: (c.config.index.row_group_rows as usize).max(SEALED_ROW_GROUP_ROWS),
        };
        let props = writer_properties(&schema, &options)?;
        let sink = BufWriter::new(Arc::clone(&self.store), path.clone());
        Ok(PartWriter {
            writer: AsyncArrowWriter::try_new(sink, schema, Some(props))?,
            path,
            rows: 0,
        })
    }

    /// Completes part `k` (its upload, then its record) and returns its
    /// segment.
    #[allow(clippy::too_many_arguments)]
    async fn finish_import_part(
        &self,
        c: &Collection,
        run: &Run<'_>,
        status: &mut ImportStatus,
        k: usize,
        mut part: PartWriter,
        (next_file, next_row): (usize, u64),
        sealed: bool,
    ) -> Result<SegmentEntry> {
        let job = run.job;
        self.check_still_ours(c, run).await?;
        let path = part.path.clone();
        let metadata = part
            .writer
            .finish()
            .await
            .map_err(|e| write_error(&path, e))?;
        let size = part.writer.bytes_written() as u64;
        // The page indexes sit right before the footer: a reader fetches
        // both with one ranged read.
        let index_start = metadata
            .row_groups()
            .iter()
            .flat_map(|g| g.columns())
            .flat_map(|col| [col.column_index_offset(), col.offset_index_offset()])
            .flatten()
            .map(|o| o as u64)
            .min();
        let rows = part.rows as u64;
        let entry = SegmentEntry {
            id: job.part_segment(k),
            data_path: path.to_string(),
            rows,
            size_bytes: size,
            min_lsn: 0,
            max_lsn: 0,
            // A full part is a sealed segment's worth: indexed by its own
            // build, never merged (which would hold parts in memory).
            sealed,
            index: None,
            footer_bytes: index_start.map_or(0, |start| size.saturating_sub(start)),
            rows_lsn: None,
        };
        status.segments = k as u64 + 1;
        let record = PartRecord {
            part: k as u32,
            entry: entry.clone(),
            next_file,
            next_row,
            status: status.clone(),
        };
        let body = serde_json::to_vec(&record).map_err(|e| Error::internal("import", e))?;
        let at = c
            .paths
            .import_file(&job.job_id, &format!("part-{k:05}.json"));
        self.store
            .put(&at, PutPayload::from(body))
            .await
            .map_err(|e| Error::store("put", &at, e))?;
        self.write_import_status(c, run, status).await?;
        Ok(entry)
    }

    /// Appends the job's marker (unless an earlier run did) and flushes
    /// until the manifest holds its segments. Should two runners append
    /// it, the flush adds the segments of the first only (see
    /// `Operation::Flush`).
    async fn commit_import(
        &self,
        c: &Collection,
        run: &Run<'_>,
        status: &mut ImportStatus,
        segments: Vec<SegmentEntry>,
    ) -> Result<()> {
        let job = run.job;
        let log = c.log().await?;
        let lsn = match self.committed_import(c, job, status).await? {
            Some(lsn) => lsn,
            None => {
                self.check_still_ours(c, run).await?;
                status.state = ImportState::Committing;
                status.log_before = Some(log.last_lsn().await?);
                self.write_import_status(c, run, status).await?;
                let record = LogRecord::Import(ImportMarker {
                    job: job.key(),
                    segments,
                });
                let payload = record.encode()?;
                let id = format!("floe-import:{}", job.key());
                let key = RequestKey {
                    id: &id,
                    digest: digest(&[b"import", job.key().as_bytes()]),
                };
                log.append(payload, AppendOptions::request(Some(key)))
                    .await?
                    .lsn
            }
        };
        status.state = ImportState::Committing;
        status.lsn = Some(lsn);
        self.write_import_status(c, run, status).await?;
        while c.manifests.latest().await?.checkpoint_lsn < lsn {
            // By name: a flush that finds attributes added since this run
            // began is redone with them.
            self.flush(&c.config.name).await?;
        }
        status.state = ImportState::Done;
        Ok(())
    }

    /// The LSN of the job's marker if a run appended it: the status
    /// another run wrote says so once it knows, the manifest remembers
    /// committed imports, and the log holds the rest after the position
    /// a run noted before appending (records trimmed since were flushed,
    /// so the manifest knows them).
    async fn committed_import(
        &self,
        c: &Collection,
        job: &ImportJob,
        status: &ImportStatus,
    ) -> Result<Option<Lsn>> {
        let stored = self.import_status_in(c, &job.job_id).await?;
        if let Some(lsn) = stored.lsn.or(status.lsn) {
            return Ok(Some(lsn));
        }
        let key = job.key();
        let log = c.log().await?;
        let (first, last) = (log.first_lsn().await?, log.last_lsn().await?);
        // Read the manifest after the log's bounds: a trim after them only
        // removes records that this manifest's checkpoint covers.
        let manifest = c.manifests.latest().await?;
        if let Some(lsn) = manifest.imports.get(&key) {
            return Ok(Some(*lsn));
        }
        let Some(before) = stored.log_before.or(status.log_before) else {
            return Ok(None);
        };
        let from = (before + 1).max(first).max(manifest.checkpoint_lsn + 1);
        let mut cursor = LogCursor::new(log.as_ref(), from, last);
        loop {
            let page = match cursor.next_page().await {
                Ok(Some(page)) => page,
                Ok(None) => return Ok(None),
                // Trimmed meanwhile: the flush that allowed it is in the manifest.
                Err(Error::LsnTrimmed { .. }) => {
                    let manifest = c.manifests.latest().await?;
                    return Ok(manifest.imports.get(&key).copied());
                }
                Err(e) => return Err(e),
            };
            for entry in page {
                if let Ok(LogRecord::Import(marker)) = LogRecord::decode(&entry.payload)
                    && marker.job == key
                {
                    return Ok(Some(entry.lsn));
                }
            }
        }
    }

    /// Builds the indexes of the job's sealed segments: in `floe serve`
    /// by their events (its indexer, in parallel); elsewhere here.
    async fn index_imported(&self, c: &Collection, job: &ImportJob) {
        let Ok(manifest) = c.manifests.latest().await else {
            return;
        };
        let prefix = format!("{}-{}-", job.job_id, job.nonce);
        let sealed: Vec<String> = manifest
            .segments
            .iter()
            .filter(|s| s.sealed && s.index.is_none() && s.id.starts_with(&prefix))
            .map(|s| s.id.clone())
            .collect();
        for id in sealed {
            if self.has_event_subscriber() {
                self.emit_object_created(c.paths.segment_sealed(&id).as_ref());
            } else if let Err(e) = self.build_index(&c.config.name, &id).await {
                tracing::warn!(segment = %id, error = %e, "index build of an imported segment failed");
            }
        }
    }

    /// The files in the job's directory.
    async fn job_files(
        &self,
        c: &Collection,
        job_id: &str,
    ) -> Result<Vec<object_store::ObjectMeta>> {
        let dir = c.paths.import_file(job_id, "");
        let listed = self
            .store
            .list_with_delimiter(Some(&dir))
            .await
            .map_err(|e| Error::store("list", &dir, e))?;
        Ok(listed.objects)
    }

    /// The job's part records, in order.
    async fn import_parts(&self, c: &Collection, job_id: &str) -> Result<Vec<PartRecord>> {
        let mut names: Vec<Path> = self
            .job_files(c, job_id)
            .await?
            .into_iter()
            .map(|m| m.location)
            .filter(|p| {
                p.filename()
                    .is_some_and(|n| n.starts_with("part-") && n.ends_with(".json"))
            })
            .collect();
        names.sort();
        let mut parts = Vec::with_capacity(names.len());
        for (k, path) in names.iter().enumerate() {
            let part: PartRecord = get_json(self.store.as_ref(), path).await?;
            if part.part as usize != k {
                return Err(Error::corrupt(path.to_string(), "parts are not contiguous"));
            }
            parts.push(part);
        }
        Ok(parts)
    }

    /// The files the job reads: listed once and kept in `files.json`, so
    /// a resumed job reads the same files in the same order (a file added
    /// to the source meanwhile is not read; one that changed size fails
    /// the job).
    async fn frozen_import_files(
        &self,
        c: &Collection,
        job: &ImportJob,
    ) -> Result<Vec<ImportFile>> {
        let path = c.paths.import_file(&job.job_id, "files.json");
        let format = job.request.format()?;
        for _ in 0..2 {
            match get_json::<ImportFiles>(self.store.as_ref(), &path).await {
                Ok(frozen) => {
                    let mut files = Vec::with_capacity(frozen.files.len());
                    for (key, size) in &frozen.files {
                        let found = resolve_in(Arc::clone(&self.store), key, format)
                            .await
                            .map_err(as_source_error)?;
                        match &found[..] {
                            [file] if file.size == *size => files.push(file.clone()),
                            _ => {
                                return Err(Error::invalid(
                                    "source",
                                    format!("{key} changed while the import ran"),
                                ));
                            }
                        }
                    }
                    return Ok(files);
                }
                Err(e) if e.is_not_found() => {
                    let files = self.import_files(&job.request).await?;
                    let frozen = ImportFiles {
                        files: files
                            .iter()
                            .map(|f| (f.key().to_string(), f.size))
                            .collect(),
                    };
                    let body =
                        serde_json::to_vec(&frozen).map_err(|e| Error::internal("import", e))?;
                    if put_create(self.store.as_ref(), &path, Bytes::from(body)).await? {
                        return Ok(files);
                    }
                    // Another run listed them first: read its list.
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::internal(
            "import",
            "files.json is neither readable nor writable",
        ))
    }

    /// The files a request names, in the store.
    async fn import_files(&self, request: &ImportRequest) -> Result<Vec<ImportFile>> {
        let key = self.store_key("source", &request.source)?;
        let files = resolve_in(Arc::clone(&self.store), &key, request.format()?)
            .await
            .map_err(as_source_error)?;
        if request.ids.is_some() && (files.len() != 1 || files[0].format != Format::Npy) {
            return Err(Error::invalid(
                "ids",
                "ids go with a source of one .npy file of vectors",
            ));
        }
        Ok(files)
    }

    async fn import_ids_file(&self, ids: &str) -> Result<ImportFile> {
        let key = self.store_key("ids", ids)?;
        let mut files = resolve_in(Arc::clone(&self.store), &key, Some(Format::Npy))
            .await
            .map_err(|e| match e {
                Error::Invalid { message, .. } => Error::invalid("ids", message),
                other => other,
            })?;
        match (files.pop(), files.is_empty()) {
            (Some(file), true) => Ok(file),
            _ => Err(Error::invalid("ids", "name one file")),
        }
    }

    /// `text` as a key in the store: a relative key, or an `s3://` URL
    /// under the store's own bucket and prefix (the server reads nothing
    /// else).
    fn store_key(&self, field: &str, text: &str) -> Result<String> {
        if !text.contains("://") {
            return Ok(text.to_string());
        }
        let store = self.settings.object_store_config().url;
        let root = format!("{}/", store.trim_end_matches('/'));
        text.strip_prefix(&root).map(str::to_string).ok_or_else(|| {
            Error::invalid(
                field,
                format!(
                    "{text}: the server imports files of its own store only ({root}…); \
                         copy them there, or give a key relative to it"
                ),
            )
        })
    }

    /// Writes the job's status, unless a later run took the job over (a
    /// stalled runner must not overwrite the status of the one that
    /// replaced it).
    async fn write_import_status(
        &self,
        c: &Collection,
        run: &Run<'_>,
        status: &mut ImportStatus,
    ) -> Result<()> {
        self.check_still_ours(c, run).await?;
        status.updated_at_ms = now_ms();
        let path = c.paths.import_file(&status.job_id, "status.json");
        let body = serde_json::to_vec(status).map_err(|e| Error::internal("import", e))?;
        self.store
            .put(&path, PutPayload::from(body))
            .await
            .map_err(|e| Error::store("put", &path, e))?;
        Ok(())
    }

    /// Resumes the imports of `name` that lost their runner (or whose
    /// start event was lost): in `floe serve` each in a task of its own,
    /// elsewhere one after the other, here. A job that fails again stays
    /// for the next round.
    pub async fn resume_imports(self: &Arc<Self>, name: &str) -> Result<Vec<ImportStatus>> {
        let c = self.collection(name).await?;
        let dir = c.paths.imports_dir();
        let listed = self
            .store
            .list_with_delimiter(Some(&dir))
            .await
            .map_err(|e| Error::store("list", &dir, e))?;
        let mut done = Vec::new();
        for job_dir in listed.common_prefixes {
            let Some(job_id) = job_dir.filename().map(str::to_string) else {
                continue;
            };
            let ended = self
                .store
                .head(&c.paths.import_file(&job_id, "ended"))
                .await
                .is_ok();
            if ended {
                continue;
            }
            let status = match self.import_status_in(&c, &job_id).await {
                Ok(s) => s,
                Err(Error::ImportNotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let idle = now_ms().saturating_sub(status.updated_at_ms);
            if status.state.ended() || idle < IMPORT_LEASE.as_millis() as u64 {
                continue;
            }
            tracing::info!(collection = %name, job = %job_id, "resuming an import");
            if self.has_event_subscriber() {
                let (floe, name) = (Arc::clone(self), name.to_string());
                tokio::spawn(async move {
                    if let Err(e) = floe.run_import(&name, &job_id).await {
                        tracing::warn!(collection = %name, job = %job_id, error = %e, "import failed; it will be resumed");
                    }
                });
            } else {
                match self.run_import(name, &job_id).await {
                    Ok(status) => done.push(status),
                    Err(e) => {
                        tracing::warn!(collection = %name, job = %job_id, error = %e, "import failed; it will be resumed");
                    }
                }
            }
        }
        Ok(done)
    }
}

/// Whether an error ends the job (bad input, missing files, a bug) rather
/// than pausing it for a later run (the store or log unavailable).
fn gives_up(e: &Error) -> bool {
    match e {
        Error::CollectionNotFound(_) | Error::ImportNotFound(_) => false,
        // Bad files and files gone; not a failed upload or a bug (those
        // pause the job for a later run).
        other => matches!(other.kind(), ErrorKind::BadRequest | ErrorKind::NotFound),
    }
}

/// Errors about the files, as errors of the request's `source`.
fn as_source_error(e: Error) -> Error {
    match e {
        Error::Invalid { field, message } if field == "file" => Error::invalid("source", message),
        other => other,
    }
}

/// The rows of `checked` from file row `first` on.
fn skip_rows_before(checked: crate::import::Checked, first: u64) -> Result<crate::import::Checked> {
    let keep: Vec<bool> = checked.rows.iter().map(|r| *r >= first).collect();
    let mask = arrow::array::BooleanArray::from(keep);
    let batch = arrow::compute::filter_record_batch(&checked.batch, &mask)?;
    Ok(crate::import::Checked {
        batch,
        rows: checked.rows.into_iter().filter(|r| *r >= first).collect(),
        errors: checked
            .errors
            .into_iter()
            .filter(|e| e.row >= first)
            .collect(),
    })
}
