//! `Floe`: the operations every function calls — collections, writes,
//! flushes and reads — over an object store and a log provider.

mod maintenance;
mod read;

use read::{IndexedSegment, read_whole, row_ranges};

pub use maintenance::{
    COMPACT_AT_SEGMENTS, CompactReport, GcReport, IndexReport, parse_sealed_key,
};

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt64Array};
use arrow::datatypes::{Field, Schema, SchemaRef};
use bytes::Bytes;
use futures::{FutureExt, StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::{Map, Value};

use crate::cache::{BlockCache, CacheFootprint, ReadStats};
use crate::catalog::{Catalog, CollectionConfig};
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::index::{CandidatePool, EXACT_FILTER_ROWS, SearchKnobs, default_rerank, rerank};
use crate::log::{FileLogOptions, FileLogs, JetStreamLogs, Log, LogProvider, LogRecord, Lsn};
use crate::manifest::{
    Committed, DeleteFile, Fence, Manifest, ManifestStore, Operation, SegmentEntry,
};
use crate::rows::{self, Id, id_at, value_at};
use crate::search::{
    ExactSearch, Hit, Newest, QueryVector, SearchParams, Visibility, id_and_lsn, merge_top_k,
};
use crate::segment::{
    COL_ID, COL_LSN, COL_VECTOR, RowFilter, SegmentReader, SegmentWriteOptions, new_segment_id,
    segment_schema, write_segment,
};
use crate::storage::{CollectionPaths, open_object_store};
use crate::types::*;

/// How long a remembered manifest serves `eventual` and `at_least_lsn`
/// reads before it is listed again (`strong` always lists).
const MANIFEST_TTL: Duration = Duration::from_secs(1);
/// Smallest row group of a sealed segment.
const SEALED_ROW_GROUP_ROWS: usize = 131_072;
/// Records read from the log per request.
const LOG_PAGE: usize = 512;
/// Unreferenced files are deleted only when older than this.
pub const GC_GRACE: Duration = Duration::from_secs(600);

pub struct Floe {
    store: Arc<dyn ObjectStore>,
    logs: Arc<dyn LogProvider>,
    catalog: Catalog,
    settings: Settings,
    collections: Mutex<HashMap<String, Arc<Collection>>>,
    /// The read cache, opened on first read.
    cache: tokio::sync::OnceCell<Arc<BlockCache>>,
    /// Where object-created events go in-process (`floe serve`); on Lambda
    /// S3 notifications deliver them instead.
    events: Mutex<Option<tokio::sync::mpsc::UnboundedSender<String>>>,
}

impl std::fmt::Debug for Floe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Floe")
            .field("store", &self.store)
            .field("logs", &self.logs)
            .finish()
    }
}

/// One collection's handles and read caches.
struct Collection {
    config: CollectionConfig,
    schema: SchemaRef,
    log: Arc<dyn Log>,
    manifests: ManifestStore,
    paths: CollectionPaths,
    state: tokio::sync::Mutex<ReadState>,
    /// One flush at a time per process.
    flush_lock: tokio::sync::Mutex<()>,
    /// One compaction or index build at a time per process.
    maintenance_lock: tokio::sync::Mutex<()>,
    /// This process's compactor epoch, claimed on first use.
    compactor: tokio::sync::OnceCell<Fence>,
}

struct ReadState {
    manifest: Arc<Manifest>,
    checked: Option<Instant>,
    /// Unindexed segments, whole (they are small and searched exactly).
    segments: HashMap<String, Arc<RecordBatch>>,
    /// Indexed segments: index header and data-file metadata; codes,
    /// vectors and columns stay in the block cache.
    indexed: HashMap<String, Arc<IndexedSegment>>,
    /// `id` and `_lsn` of indexed segments (visibility).
    keys: HashMap<String, Arc<RecordBatch>>,
    /// Every column but the vector, of indexed segments: loaded for filters
    /// and scans only.
    columns: HashMap<String, Arc<RecordBatch>>,
    deletes: HashMap<String, Arc<RecordBatch>>,
    base: Option<BaseView>,
    tail: Tail,
}

/// The segments' newest-event map for one manifest version, and which
/// segments have no row hidden by it.
struct BaseView {
    version: u64,
    newest: Arc<Newest>,
    clean: Arc<HashMap<String, bool>>,
}

/// Log records after the manifest's checkpoint, decoded and kept
/// incrementally: only records after `upto` are ever fetched.
struct Tail {
    upto: Lsn,
    records: VecDeque<TailRecord>,
    /// When a record was first seen unflushed (drives age-based flushes).
    pending_since: Option<Instant>,
    view: Option<(Arc<RecordBatch>, Arc<Newest>)>,
}

struct TailRecord {
    lsn: Lsn,
    bytes: usize,
    rows: usize,
    /// Upserted rows with `_lsn`, or deleted ids with `_lsn`.
    batch: RecordBatch,
    deleted: bool,
}

/// One row set a read searches.
enum Source {
    /// Rows in memory: an unindexed segment or the log tail.
    Rows(Arc<RecordBatch>),
    /// An indexed segment: keys in memory, the rest through the cache.
    Indexed {
        segment: Arc<IndexedSegment>,
        keys: Arc<RecordBatch>,
        columns: Option<Arc<RecordBatch>>,
    },
}

impl Source {
    /// The batch with `id` and `_lsn` of every row.
    fn keys(&self) -> &RecordBatch {
        match self {
            Source::Rows(batch) => batch,
            Source::Indexed { keys, .. } => keys,
        }
    }

    /// The batch with every attribute of every row, if in memory.
    fn attributes(&self) -> Option<&RecordBatch> {
        match self {
            Source::Rows(batch) => Some(batch),
            Source::Indexed { columns, .. } => columns.as_deref(),
        }
    }
}

/// What a read needs loaded besides keys.
#[derive(Clone, Copy, Default)]
struct Needs<'a> {
    /// Every non-vector column of indexed segments (filters, scans).
    columns: bool,
    /// Prefetch the code blocks of the clusters this query probes first.
    probe: Option<(&'a QueryVector, SearchKnobs)>,
}

/// A consistent view for one read.
struct Snapshot {
    manifest: Arc<Manifest>,
    /// Segments, then the tail's upserts.
    sources: Vec<Source>,
    /// Sources none of whose rows the segments and delete files hide.
    clean: Vec<bool>,
    base: Arc<Newest>,
    tail: Arc<Newest>,
    lsn: Lsn,
    /// Per source: its probe order and the code blocks prefetched for
    /// `Needs::probe` (indexed sources of a vector query only).
    probes: Vec<Probe>,
}

/// Clusters of an indexed segment by closeness to the query, and the codes
/// of the first `nprobe` of them.
#[derive(Default)]
struct Probe {
    order: Vec<usize>,
    codes: HashMap<usize, Bytes>,
}

impl Snapshot {
    fn visibility(&self) -> Visibility<'_> {
        Visibility {
            base: &self.base,
            tail: &self.tail,
        }
    }
}

/// Rows of an indexed source fetched for re-ranking and output.
#[derive(Default)]
struct Fetched {
    /// Sorted row numbers.
    rows: Vec<u32>,
    vectors: Vec<Vec<f32>>,
    /// Requested attributes of `rows`, when not already in memory.
    attributes: Option<RecordBatch>,
}

impl Fetched {
    fn position(&self, row: usize) -> Option<usize> {
        self.rows.binary_search(&(row as u32)).ok()
    }
}

fn with_lsn(batch: &RecordBatch, lsn: Lsn) -> Result<RecordBatch> {
    let mut fields: Vec<Arc<Field>> = batch.schema().fields().iter().cloned().collect();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    // `_lsn` sits third, after id and vector, as in the segment schema.
    let at = if batch.column_by_name(COL_VECTOR).is_some() {
        2
    } else {
        1
    };
    fields.insert(
        at,
        Arc::new(Field::new(
            COL_LSN,
            arrow::datatypes::DataType::UInt64,
            false,
        )),
    );
    columns.insert(at, Arc::new(UInt64Array::from_value(lsn, batch.num_rows())));
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

fn delete_schema(config: &CollectionConfig) -> SchemaRef {
    let full = segment_schema(config);
    Arc::new(Schema::new(vec![
        full.field(0).clone(),
        Field::new(COL_LSN, arrow::datatypes::DataType::UInt64, false),
    ]))
}

impl Floe {
    /// Opens the store and the log the settings name.
    pub async fn open(settings: Settings) -> Result<Arc<Floe>> {
        settings.validate()?;
        let store = open_object_store(&settings.object_store_config())?;
        let logs: Arc<dyn LogProvider> = match &settings.nats {
            Some(nats) => Arc::new(JetStreamLogs::connect(nats.clone()).await?),
            None => Arc::new(FileLogs::new(settings.log_dir(), FileLogOptions::default())),
        };
        Ok(Self::new(store, logs, settings))
    }

    pub fn new(
        store: Arc<dyn ObjectStore>,
        logs: Arc<dyn LogProvider>,
        settings: Settings,
    ) -> Arc<Floe> {
        Arc::new(Floe {
            catalog: Catalog::new(Arc::clone(&store)),
            store,
            logs,
            settings,
            collections: Mutex::default(),
            cache: tokio::sync::OnceCell::new(),
            events: Mutex::default(),
        })
    }

    /// Receives this process's object-created events (keys of new sealed
    /// data files); without a subscriber they are dropped.
    pub fn subscribe_object_events(&self) -> tokio::sync::mpsc::UnboundedReceiver<String> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *self.events.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        rx
    }

    fn emit_object_created(&self, key: &str) {
        if let Some(tx) = self
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            let _ = tx.send(key.to_string());
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    async fn collection(&self, name: &str) -> Result<Arc<Collection>> {
        if let Some(c) = self
            .collections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Ok(Arc::clone(c));
        }
        let config = self.catalog.get(name).await?;
        let log = self.logs.open(name).await?;
        let collection = Arc::new(Collection {
            schema: segment_schema(&config),
            manifests: ManifestStore::new(Arc::clone(&self.store), name),
            paths: CollectionPaths::new(name),
            log,
            state: tokio::sync::Mutex::new(ReadState {
                manifest: Arc::new(Manifest::empty()),
                checked: None,
                segments: HashMap::new(),
                indexed: HashMap::new(),
                keys: HashMap::new(),
                columns: HashMap::new(),
                deletes: HashMap::new(),
                base: None,
                tail: Tail {
                    upto: 0,
                    records: VecDeque::new(),
                    pending_since: None,
                    view: None,
                },
            }),
            flush_lock: tokio::sync::Mutex::new(()),
            maintenance_lock: tokio::sync::Mutex::new(()),
            compactor: tokio::sync::OnceCell::new(),
            config,
        });
        let mut map = self.collections.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Arc::clone(
            map.entry(name.to_string()).or_insert(collection),
        ))
    }

    // ---- collections ------------------------------------------------------

    /// Creates a collection; `Ok(false)` when an identical one existed.
    pub async fn create_collection(
        &self,
        config: CollectionConfig,
    ) -> Result<(CollectionConfig, bool)> {
        config.validate()?;
        let existed = match self.catalog.get(&config.name).await {
            Ok(existing) if existing == config => true,
            Ok(_) => {
                return Err(Error::CollectionExists {
                    name: config.name.clone(),
                });
            }
            Err(Error::CollectionNotFound(_)) => false,
            Err(e) => return Err(e),
        };
        // The log first: a collection that exists can always be written.
        self.logs.open(&config.name).await?;
        let created = self.catalog.create(&config).await?;
        Ok((created, !existed))
    }

    pub async fn list_collections(&self) -> Result<Vec<String>> {
        self.catalog.list().await
    }

    pub async fn describe(&self, name: &str) -> Result<CollectionInfo> {
        let c = self.collection(name).await?;
        let stats = Arc::new(ReadStats::default());
        let snap = self
            .snapshot(&c, Consistency::Strong, Needs::default(), &stats)
            .await?;
        let (tail_records, tail_rows) = {
            let state = c.state.lock().await;
            (
                state.tail.records.len() as u64,
                state
                    .tail
                    .records
                    .iter()
                    .filter(|r| !r.deleted)
                    .map(|r| r.rows as u64)
                    .sum(),
            )
        };
        let m = &snap.manifest;
        Ok(CollectionInfo {
            config: c.config.clone(),
            stats: CollectionStats {
                rows: snap.visibility().live_count() as u64,
                segments: m.segments.len(),
                segment_rows: m.total_rows(),
                segment_bytes: m.total_bytes(),
                delete_files: m.deletes.len(),
                manifest_version: m.version,
                log_lsn: snap.lsn,
                checkpoint_lsn: m.checkpoint_lsn,
                unflushed_records: tail_records,
                unflushed_rows: tail_rows,
            },
        })
    }

    /// Deletes the collection's log and files; `collection.json` goes last,
    /// so an interrupted drop can be repeated.
    pub async fn drop_collection(&self, name: &str) -> Result<()> {
        self.catalog.get(name).await?;
        self.collections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        self.logs.delete(name).await?;
        let paths = CollectionPaths::new(name);
        let config = paths.config();
        let root = paths.root();
        let files: Vec<_> = self
            .store
            .list(Some(&root))
            .map_ok(|m| m.location)
            .try_filter(|p| futures::future::ready(*p != config))
            .try_collect()
            .await
            .map_err(|e| Error::store("list", &root, e))?;
        let stream = futures::stream::iter(files.into_iter().map(Ok)).boxed();
        self.store
            .delete_stream(stream)
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| Error::store("delete", &root, e))?;
        match self.store.delete(&config).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::store("delete", config, e)),
        }
    }

    // ---- writes -----------------------------------------------------------

    async fn append(
        &self,
        c: &Collection,
        record: LogRecord,
        request_id: Option<&str>,
    ) -> Result<WriteAck> {
        // Callers checked `request_id` before doing any work.
        let rows = record.num_rows();
        let payload = record.encode()?;
        let ack = c.log.append(payload, request_id).await?;
        Ok(WriteAck {
            lsn: ack.lsn,
            rows,
            duplicate: ack.duplicate,
        })
    }

    pub async fn upsert(&self, name: &str, request: UpsertRequest) -> Result<WriteAck> {
        let c = self.collection(name).await?;
        check_request_id(request.request_id.as_deref())?;
        let batch = match (&request.rows, &request.columns) {
            (Some(rows), None) => rows::rows_to_batch(&c.config, rows)?,
            (None, Some(columns)) => rows::columns_to_batch(&c.config, columns)?,
            _ => {
                return Err(Error::invalid(
                    "rows",
                    "send exactly one of \"rows\" and \"columns\"",
                ));
            }
        };
        self.append(&c, LogRecord::Upsert(batch), request.request_id.as_deref())
            .await
    }

    pub async fn delete(&self, name: &str, request: DeleteRequest) -> Result<WriteAck> {
        let c = self.collection(name).await?;
        check_request_id(request.request_id.as_deref())?;
        let ids = match (&request.ids, &request.filter) {
            (Some(ids), None) => rows::ids_to_array(&c.config, ids, "ids")?,
            (None, Some(text)) => {
                // Resolve the filter against everything acknowledged so far,
                // then delete those ids in one record.
                let filter = Filter::parse(text, &c.config)?;
                let stats = Arc::new(ReadStats::default());
                let needs = Needs {
                    columns: true,
                    probe: None,
                };
                let snap = self
                    .snapshot(&c, Consistency::Strong, needs, &stats)
                    .await?;
                let matches = scan_matches(&snap, Some(&filter))?;
                if matches.is_empty() {
                    return Ok(WriteAck {
                        lsn: snap.lsn,
                        rows: 0,
                        duplicate: false,
                    });
                }
                let ids: Vec<Id> = matches.into_iter().map(|(id, _, _)| id).collect();
                rows::ids_to_array(&c.config, &ids, "ids")?
            }
            _ => {
                return Err(Error::invalid(
                    "ids",
                    "send exactly one of \"ids\" and \"filter\"",
                ));
            }
        };
        self.append(&c, LogRecord::Delete(ids), request.request_id.as_deref())
            .await
    }

    // ---- flush ------------------------------------------------------------

    /// Turns the log tail past the checkpoint into a segment (and a delete
    /// file) and commits a manifest that moves the checkpoint. Safe to rerun
    /// and to race: a range already flushed is never flushed twice.
    pub async fn flush(&self, name: &str) -> Result<FlushReport> {
        let c = self.collection(name).await?;
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
            let last = c.log.last_lsn().await?;
            if last <= from {
                break;
            }
            let records = self.read_for_flush(&c, from, last).await?;
            let Some(to) = records.last().map(|(lsn, _)| *lsn) else {
                break;
            };
            let (segment, delete_file, rows, deletes, segment_batch) =
                self.write_flush_files(&c, &records).await?;
            let op = Operation::Flush {
                from_lsn: from,
                to_lsn: to,
                segment: segment.clone(),
                delete_file,
            };
            match c.manifests.commit(None, &op).await {
                Ok(Committed::New(m)) => {
                    report.checkpoint_lsn = m.checkpoint_lsn;
                    report.segments_written += usize::from(segment.is_some());
                    report.rows_flushed += rows;
                    report.deletes_flushed += deletes;
                    // Readers here see the flush at once, and keep what we
                    // just wrote instead of downloading it again.
                    let mut state = c.state.lock().await;
                    install_manifest(&mut state, m);
                    state.checked = Some(Instant::now());
                    if let (Some(seg), Some(batch)) = (segment, segment_batch) {
                        state.segments.insert(seg.id, Arc::new(batch));
                    }
                }
                // Someone else flushed this range; our files are garbage.
                Ok(Committed::AlreadyApplied(m)) => report.checkpoint_lsn = m.checkpoint_lsn,
                Err(Error::CommitConflict { .. }) if conflicts < 10 => conflicts += 1,
                Err(e) => return Err(e),
            }
        }
        if report.checkpoint_lsn > 0 {
            // Flushed records live in segments now; readers that still ask
            // for them get LsnTrimmed and move to the newer manifest.
            c.log.trim(report.checkpoint_lsn).await?;
        }
        Ok(report)
    }

    async fn read_for_flush(
        &self,
        c: &Collection,
        from: Lsn,
        last: Lsn,
    ) -> Result<Vec<(Lsn, LogRecord)>> {
        let limits = &self.settings.flush;
        let mut out = Vec::new();
        let (mut rows, mut bytes) = (0usize, 0usize);
        let mut next = from + 1;
        while next <= last
            && rows < limits.max_rows.max(1) * 2
            && bytes < limits.max_bytes.max(1) * 2
        {
            let page = c.log.read(next, LOG_PAGE).await?;
            let Some(end) = page.last().map(|e| e.lsn) else {
                break;
            };
            for entry in page.into_iter().filter(|e| e.lsn <= last) {
                bytes += entry.payload.len();
                let record = LogRecord::decode(&entry.payload)?;
                rows += record.num_rows();
                out.push((entry.lsn, record));
            }
            next = end + 1;
        }
        Ok(out)
    }

    #[allow(clippy::type_complexity)]
    async fn write_flush_files(
        &self,
        c: &Collection,
        records: &[(Lsn, LogRecord)],
    ) -> Result<(
        Option<SegmentEntry>,
        Option<DeleteFile>,
        u64,
        u64,
        Option<RecordBatch>,
    )> {
        // The newest event per id inside the range decides what survives.
        let mut newest: HashMap<Id, (Lsn, Option<(usize, usize)>)> = HashMap::new();
        for (r, (lsn, record)) in records.iter().enumerate() {
            match record {
                LogRecord::Upsert(batch) => {
                    let ids = batch.column(0);
                    for row in 0..batch.num_rows() {
                        newest.insert(id_at(ids.as_ref(), row), (*lsn, Some((r, row))));
                    }
                }
                LogRecord::Delete(ids) => {
                    for row in 0..ids.len() {
                        newest.insert(id_at(ids.as_ref(), row), (*lsn, None));
                    }
                }
            }
        }
        let mut kept = Vec::new();
        for (r, (lsn, record)) in records.iter().enumerate() {
            if let LogRecord::Upsert(batch) = record {
                let ids = batch.column(0);
                let mask: arrow::array::BooleanArray = (0..batch.num_rows())
                    .map(|row| {
                        Some(newest.get(&id_at(ids.as_ref(), row)) == Some(&(*lsn, Some((r, row)))))
                    })
                    .collect();
                let filtered = arrow::compute::filter_record_batch(batch, &mask)?;
                if filtered.num_rows() > 0 {
                    kept.push(with_lsn(&filtered, *lsn)?);
                }
            }
        }
        let mut tombstones: Vec<(Id, Lsn)> = newest
            .into_iter()
            .filter(|(_, (_, row))| row.is_none())
            .map(|(id, (lsn, _))| (id, lsn))
            .collect();
        tombstones.sort_unstable_by_key(|(_, lsn)| *lsn);

        let options = SegmentWriteOptions {
            row_group_rows: c.config.index.row_group_rows as usize,
        };
        let (segment, segment_batch, rows) = if kept.is_empty() {
            (None, None, 0)
        } else {
            let batch = arrow::compute::concat_batches(&c.schema, &kept)?;
            let id = new_segment_id();
            let entry = self
                .write_segment_entry(c, &id, c.paths.segment_data(&id), &batch, false)
                .await?;
            let rows = entry.rows;
            (Some(entry), Some(batch), rows)
        };
        let (delete_file, deletes) = if tombstones.is_empty() {
            (None, 0)
        } else {
            let ids: Vec<Id> = tombstones.iter().map(|(id, _)| id.clone()).collect();
            let schema = delete_schema(&c.config);
            let batch = RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    rows::ids_to_array(&c.config, &ids, "ids")?,
                    Arc::new(UInt64Array::from_iter_values(
                        tombstones.iter().map(|(_, lsn)| *lsn),
                    )),
                ],
            )?;
            let path = c.paths.delete_file(&new_segment_id());
            let (file, bytes) =
                write_segment(self.store.as_ref(), &path, &schema, &[batch], &options).await?;
            self.remember(&path, &bytes);
            let entry = DeleteFile {
                path: path.to_string(),
                rows: file.rows,
                size_bytes: file.size_bytes,
                min_lsn: file.min_lsn,
                max_lsn: file.max_lsn,
            };
            (Some(entry), file.rows)
        };
        Ok((segment, delete_file, rows, deletes, segment_batch))
    }

    /// Writes `batch` create-only at `path` as segment `id` and describes it.
    async fn write_segment_entry(
        &self,
        c: &Collection,
        id: &str,
        path: object_store::path::Path,
        batch: &RecordBatch,
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
        let (file, bytes) = write_segment(
            self.store.as_ref(),
            &path,
            &c.schema,
            std::slice::from_ref(batch),
            &options,
        )
        .await?;
        self.remember(&path, &bytes);
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
        })
    }

    /// Flushes when the tail is past a row, byte or age threshold.
    pub async fn flush_if_due(&self, name: &str) -> Result<Option<FlushReport>> {
        let c = self.collection(name).await?;
        let (rows, bytes, since) = {
            let mut state = c.state.lock().await;
            self.refresh_manifest(&c, &mut state, true).await?;
            let last = c.log.last_lsn().await?;
            self.refresh_tail(&c, &mut state, last).await?;
            let t = &state.tail;
            let rows: usize = t.records.iter().map(|r| r.rows).sum();
            let bytes: usize = t.records.iter().map(|r| r.bytes).sum();
            (rows, bytes, t.pending_since)
        };
        let f = &self.settings.flush;
        let due = rows >= f.max_rows
            || bytes >= f.max_bytes
            || since.is_some_and(|s| s.elapsed() >= f.max_age());
        if due {
            self.flush(name).await.map(Some)
        } else {
            Ok(None)
        }
    }

    /// Runs the indexer in this process until the task is dropped: on every
    /// tick it flushes and compacts what is due (and, less often, builds
    /// missing indexes and collects garbage); object-created events of new
    /// sealed files trigger index builds at once.
    pub fn spawn_background_indexer(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let floe = Arc::clone(self);
        let mut events = floe.subscribe_object_events();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(floe.settings.flush.poll_interval());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut rounds: u64 = 0;
            loop {
                tokio::select! {
                    Some(key) = events.recv() => {
                        match floe.on_object_created(&key).await {
                            Ok(Some(r)) => tracing::info!(segment = %r.segment, rows = r.rows, ms = r.build_ms, "index built"),
                            Ok(None) => {}
                            Err(e) => tracing::warn!(%key, error = %e, "index build failed"),
                        }
                    }
                    _ = tick.tick() => {
                        rounds += 1;
                        floe.maintain_all(rounds.is_multiple_of(120)).await;
                    }
                }
            }
        })
    }

    /// One round of the indexer over every collection; `thorough` adds the
    /// safety-net index builds and garbage collection.
    pub async fn maintain_all(&self, thorough: bool) {
        let names = match self.list_collections().await {
            Ok(names) => names,
            Err(e) => {
                tracing::warn!(error = %e, "indexer: listing collections failed");
                return;
            }
        };
        for name in names {
            if let Err(e) = self.maintain(&name, thorough).await
                && !matches!(e, Error::CollectionNotFound(_))
            {
                tracing::warn!(collection = %name, error = %e, "indexer round failed");
            }
        }
    }

    async fn maintain(&self, name: &str, thorough: bool) -> Result<()> {
        if let Some(r) = self.flush_if_due(name).await? {
            tracing::info!(collection = %name, checkpoint = r.checkpoint_lsn, rows = r.rows_flushed, "flushed");
        }
        if let Some(r) = self.compact_if_due(name).await? {
            tracing::info!(collection = %name, rows_in = r.rows_in, rows_out = r.rows_out, sealed = r.sealed.len(), "compacted");
        }
        if thorough {
            self.index_missing(name).await?;
            self.gc(name, GC_GRACE).await?;
        }
        Ok(())
    }

    // ---- reads ------------------------------------------------------------

    async fn refresh_manifest(
        &self,
        c: &Collection,
        state: &mut ReadState,
        force: bool,
    ) -> Result<()> {
        let fresh = state.checked.is_some_and(|t| t.elapsed() < MANIFEST_TTL);
        if fresh && !force {
            return Ok(());
        }
        let manifest = c.manifests.latest().await?;
        state.checked = Some(Instant::now());
        if manifest.version == state.manifest.version && state.base.is_some() {
            return Ok(());
        }
        install_manifest(state, manifest);
        Ok(())
    }

    /// Fetches log records after `tail.upto`, up to `target` (or the end).
    async fn refresh_tail(&self, c: &Collection, state: &mut ReadState, target: Lsn) -> Result<()> {
        while state.tail.upto < target {
            let page = match c.log.read(state.tail.upto + 1, LOG_PAGE).await {
                Ok(page) => page,
                Err(Error::LsnTrimmed { .. }) => {
                    // A flush moved the checkpoint past us: take the newer manifest.
                    self.refresh_manifest(c, state, true).await?;
                    if state.tail.upto >= target {
                        break;
                    }
                    c.log.read(state.tail.upto + 1, LOG_PAGE).await?
                }
                Err(e) => return Err(e),
            };
            let Some(end) = page.last().map(|e| e.lsn) else {
                break;
            };
            for entry in page {
                let (batch, deleted) = match LogRecord::decode(&entry.payload)? {
                    LogRecord::Upsert(b) => (with_lsn(&b, entry.lsn)?, false),
                    LogRecord::Delete(ids) => {
                        let schema = delete_schema(&c.config);
                        let lsns = Arc::new(UInt64Array::from_value(entry.lsn, ids.len()));
                        (RecordBatch::try_new(schema, vec![ids, lsns])?, true)
                    }
                };
                state.tail.records.push_back(TailRecord {
                    lsn: entry.lsn,
                    bytes: entry.payload.len(),
                    rows: batch.num_rows(),
                    batch,
                    deleted,
                });
            }
            state.tail.upto = end;
            state.tail.view = None;
            state.tail.pending_since.get_or_insert_with(Instant::now);
        }
        Ok(())
    }

    /// Reads a segment or delete file as one batch, straight from the store
    /// (maintenance: not through the query cache): every column, or the
    /// named ones (a projection: only their byte ranges are fetched).
    async fn read_file(
        &self,
        path: &str,
        size: u64,
        columns: Option<&[&str]>,
    ) -> Result<RecordBatch> {
        let reader = SegmentReader::open(
            Arc::clone(&self.store),
            object_store::path::Path::from(path),
            Some(size),
        )
        .await?;
        let schema = match columns {
            None => Arc::clone(reader.schema()),
            Some(names) => {
                let indices = names
                    .iter()
                    .map(|n| reader.schema().index_of(n))
                    .collect::<Result<Vec<_>, _>>()?;
                Arc::new(reader.schema().project(&indices)?)
            }
        };
        let batches = reader.read(columns, &RowFilter::All).await?;
        Ok(arrow::compute::concat_batches(&schema, &batches)?)
    }

    /// The block cache, opened on first use.
    async fn cache(&self) -> Result<&Arc<BlockCache>> {
        self.cache
            .get_or_try_init(|| async {
                BlockCache::open(
                    Arc::clone(&self.store),
                    &self.settings.cache,
                    self.settings.data_dir.join("cache"),
                )
                .await
                .map(Arc::new)
            })
            .await
    }

    /// Keeps a file this process just wrote in the read cache, if one is
    /// open (the indexer alone never opens one).
    fn remember(&self, path: &object_store::path::Path, bytes: &Bytes) {
        if let Some(cache) = self.cache.get() {
            cache.insert_object(path, bytes);
        }
    }

    /// What the cache holds now (nothing before the first read).
    pub fn cache_footprint(&self) -> CacheFootprint {
        self.cache.get().map(|c| c.footprint()).unwrap_or_default()
    }

    /// Flushes the disk tier of the cache (on shutdown).
    pub async fn close_cache(&self) -> Result<()> {
        match self.cache.get() {
            Some(cache) => cache.close().await,
            None => Ok(()),
        }
    }

    /// Opens what the manifest lists and this process has not seen: index
    /// headers and footers of indexed segments, whole small files. One wave.
    async fn open_sources(
        &self,
        state: &mut ReadState,
        cache: &Arc<BlockCache>,
        stats: &Arc<ReadStats>,
    ) -> Result<()> {
        enum Opened {
            Indexed(Box<IndexedSegment>),
            Rows(String, RecordBatch),
            Deletes(String, RecordBatch),
        }
        let mut work: Vec<futures::future::BoxFuture<'_, Result<Opened>>> = Vec::new();
        for s in &state.manifest.segments {
            if state.segments.contains_key(&s.id) || state.indexed.contains_key(&s.id) {
                continue;
            }
            let s = s.clone();
            work.push(if s.index.is_some() {
                async move {
                    let segment = IndexedSegment::open(cache, stats, &s).await?;
                    Ok(Opened::Indexed(Box::new(segment)))
                }
                .boxed()
            } else {
                async move {
                    let batch = read_whole(cache, stats, &s.data_path, s.size_bytes).await?;
                    Ok(Opened::Rows(s.id, batch))
                }
                .boxed()
            });
        }
        for d in &state.manifest.deletes {
            if !state.deletes.contains_key(&d.path) {
                let d = d.clone();
                work.push(
                    async move {
                        let batch = read_whole(cache, stats, &d.path, d.size_bytes).await?;
                        Ok(Opened::Deletes(d.path, batch))
                    }
                    .boxed(),
                );
            }
        }
        if work.is_empty() {
            return Ok(());
        }
        let opened = stats
            .phase("open", futures::future::try_join_all(work))
            .await?;
        for o in opened {
            match o {
                Opened::Indexed(seg) => {
                    state.indexed.insert(seg.entry.id.clone(), Arc::from(seg));
                }
                Opened::Rows(id, batch) => {
                    state.segments.insert(id, Arc::new(batch));
                }
                Opened::Deletes(path, batch) => {
                    state.deletes.insert(path, Arc::new(batch));
                }
            }
        }
        Ok(())
    }

    /// Loads the keys (and, if needed, all non-vector columns) of indexed
    /// segments that lack them, and prefetches the first probed code blocks
    /// of each indexed segment: one wave.
    async fn load_keys_and_codes(
        &self,
        state: &mut ReadState,
        cache: &Arc<BlockCache>,
        stats: &Arc<ReadStats>,
        needs: Needs<'_>,
    ) -> Result<HashMap<String, Probe>> {
        let segments: Vec<Arc<IndexedSegment>> = state
            .manifest
            .segments
            .iter()
            .filter_map(|s| state.indexed.get(&s.id).cloned())
            .collect();
        let mut loads = Vec::new();
        for seg in &segments {
            let want_columns = needs.columns && !state.columns.contains_key(&seg.entry.id);
            let want_keys = !state.keys.contains_key(&seg.entry.id);
            if !(want_columns || want_keys) {
                continue;
            }
            let names: Vec<String> = if want_columns {
                seg.data
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .filter(|n| n != COL_VECTOR)
                    .collect()
            } else {
                vec![COL_ID.to_string(), COL_LSN.to_string()]
            };
            let seg = Arc::clone(seg);
            loads.push(async move {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                let batch = seg.data.read(cache, stats, &names, None).await?;
                Ok::<_, Error>((seg.entry.id.clone(), want_columns, batch))
            });
        }
        let probes = segments.iter().filter_map(|seg| {
            let (q, knobs) = needs.probe?;
            let nprobe = seg.header.nprobe(&knobs);
            let order = seg.header.probe_order(&q.values, nprobe);
            Some(async move {
                let codes = read_codes(cache, stats, seg, &order[..nprobe]).await?;
                Ok::<_, Error>((seg.entry.id.clone(), Probe { order, codes }))
            })
        });
        let (loaded, probes) = stats
            .phase("keys+codes", async {
                futures::try_join!(
                    futures::future::try_join_all(loads),
                    futures::future::try_join_all(probes)
                )
            })
            .await?;
        for (id, all_columns, batch) in loaded {
            let keys = batch.project(&[
                batch.schema().index_of(COL_ID)?,
                batch.schema().index_of(COL_LSN)?,
            ])?;
            state.keys.insert(id.clone(), Arc::new(keys));
            if all_columns {
                state.columns.insert(id, Arc::new(batch));
            }
        }
        Ok(probes.into_iter().collect())
    }

    /// A consistent view for one read: the manifest and log tail the
    /// consistency level asks for, and what `needs` says, fetched in at most
    /// two waves (open, then keys and codes).
    async fn snapshot(
        &self,
        c: &Collection,
        consistency: Consistency,
        needs: Needs<'_>,
        stats: &Arc<ReadStats>,
    ) -> Result<Snapshot> {
        let started = Instant::now();
        let cache = self.cache().await?;
        if started.elapsed() > Duration::from_millis(1) {
            stats.record("cache open", started.elapsed(), 0);
        }
        let mut state = c.state.lock().await;
        let started = Instant::now();
        self.refresh_manifest(c, &mut state, consistency == Consistency::Strong)
            .await?;
        match consistency {
            Consistency::Strong => {
                let last = c.log.last_lsn().await?;
                self.refresh_tail(c, &mut state, last).await?;
            }
            Consistency::AtLeast(lsn) => {
                self.refresh_tail(c, &mut state, lsn).await?;
                if state.tail.upto < lsn {
                    return Err(Error::invalid(
                        "consistency.at_least_lsn",
                        format!(
                            "{lsn} is beyond the log's last LSN {}: use a token a write returned",
                            state.tail.upto
                        ),
                    ));
                }
            }
            Consistency::Eventual => {}
        }
        stats.record("manifest+log", started.elapsed(), 0);
        self.open_sources(&mut state, cache, stats).await?;
        let mut probes = self
            .load_keys_and_codes(&mut state, cache, stats, needs)
            .await?;
        let (base, clean) = match &state.base {
            Some(view) if view.version == state.manifest.version => {
                (Arc::clone(&view.newest), Arc::clone(&view.clean))
            }
            _ => {
                let started = Instant::now();
                let keys_of = |s: &SegmentEntry| {
                    state
                        .segments
                        .get(&s.id)
                        .or_else(|| state.keys.get(&s.id))
                        .cloned()
                };
                let mut newest = Newest::default();
                for s in &state.manifest.segments {
                    if let Some(batch) = keys_of(s) {
                        newest.observe_rows(&batch, false)?;
                    }
                }
                for d in &state.manifest.deletes {
                    if let Some(batch) = state.deletes.get(&d.path) {
                        newest.observe_rows(batch, true)?;
                    }
                }
                let mut clean = HashMap::new();
                for s in &state.manifest.segments {
                    if let Some(batch) = keys_of(s) {
                        let (ids, lsns) = id_and_lsn(&batch)?;
                        let all_visible = (0..batch.num_rows())
                            .all(|r| newest.get(ids, r) == Some((lsns.value(r), false)));
                        clean.insert(s.id.clone(), all_visible);
                    }
                }
                let (base, clean) = (Arc::new(newest), Arc::new(clean));
                stats.record("visibility", started.elapsed(), 0);
                state.base = Some(BaseView {
                    version: state.manifest.version,
                    newest: Arc::clone(&base),
                    clean: Arc::clone(&clean),
                });
                (base, clean)
            }
        };
        let mut sources = Vec::new();
        let mut clean_sources = Vec::new();
        let mut source_probes = Vec::new();
        for s in &state.manifest.segments {
            let source = if let Some(batch) = state.segments.get(&s.id) {
                Source::Rows(Arc::clone(batch))
            } else if let (Some(segment), Some(keys)) =
                (state.indexed.get(&s.id), state.keys.get(&s.id))
            {
                Source::Indexed {
                    segment: Arc::clone(segment),
                    keys: Arc::clone(keys),
                    columns: state.columns.get(&s.id).cloned(),
                }
            } else {
                continue;
            };
            sources.push(source);
            clean_sources.push(clean.get(&s.id).copied().unwrap_or(false));
            source_probes.push(probes.remove(&s.id).unwrap_or_default());
        }
        let (tail_rows, tail) = if consistency == Consistency::Eventual {
            (None, Arc::new(Newest::default()))
        } else {
            if state.tail.view.is_none() {
                let mut newest = Newest::default();
                let mut upserts = Vec::new();
                for r in &state.tail.records {
                    newest.observe_rows(&r.batch, r.deleted)?;
                    if !r.deleted {
                        upserts.push(r.batch.clone());
                    }
                }
                let rows = arrow::compute::concat_batches(&c.schema, &upserts)?;
                state.tail.view = Some((Arc::new(rows), Arc::new(newest)));
            }
            let (rows, newest) = state.tail.view.clone().unwrap_or_default_view(&c.schema);
            (Some(rows), newest)
        };
        if let Some(rows) = tail_rows {
            sources.push(Source::Rows(rows));
            clean_sources.push(false);
            source_probes.push(Probe::default());
        }
        let lsn = if consistency == Consistency::Eventual {
            state.manifest.checkpoint_lsn
        } else {
            state.tail.upto.max(state.manifest.checkpoint_lsn)
        };
        Ok(Snapshot {
            manifest: Arc::clone(&state.manifest),
            sources,
            clean: clean_sources,
            base,
            tail,
            lsn,
            probes: source_probes,
        })
    }

    pub async fn query(&self, name: &str, request: QueryRequest) -> Result<QueryResponse> {
        let started = Instant::now();
        let c = self.collection(name).await?;
        let opened = started.elapsed();
        let consistency = Consistency::parse(request.consistency.as_ref())?;
        let max_k = self.settings.limits.max_top_k;
        if request.top_k == 0 || request.top_k > max_k {
            return Err(Error::invalid(
                "top_k",
                format!("must be between 1 and {max_k}, got {}", request.top_k),
            ));
        }
        let filter = request
            .filter
            .as_deref()
            .map(|f| Filter::parse(f, &c.config))
            .transpose()?;
        let attributes = attribute_selection(&c.config, request.include_attributes.as_ref())?;
        let query = match &request.vector {
            Some(v) => {
                if request.cursor.is_some() {
                    return Err(Error::invalid(
                        "cursor",
                        "only filter-only queries (without a vector) are paginated",
                    ));
                }
                let dim = c.config.dimension as usize;
                if v.len() != dim {
                    return Err(Error::invalid(
                        "vector",
                        format!(
                            "expected {dim} components (the collection's dimension), got {}",
                            v.len()
                        ),
                    ));
                }
                let values: Vec<f32> = v.iter().map(|x| *x as f32).collect();
                if let Some(i) = values.iter().position(|x| !x.is_finite()) {
                    return Err(Error::invalid(
                        format!("vector[{i}]"),
                        "components must be finite 32-bit floats",
                    ));
                }
                Some(QueryVector::new(values, c.config.metric))
            }
            None => None,
        };
        if let Some(cursor) = &request.cursor {
            cursor.check(c.config.id_type, "cursor")?;
        }
        let knobs = search_knobs(&request)?;
        let stats = Arc::new(ReadStats::default());
        if opened > Duration::from_millis(1) {
            stats.record("collection config", opened, 0);
        }
        let cache = self.cache().await?;
        let needs = Needs {
            columns: filter.is_some() || query.is_none(),
            probe: query.as_ref().map(|q| (q, knobs)),
        };
        let snap = self.snapshot(&c, consistency, needs, &stats).await?;
        let k = request.top_k;
        let (results, next_cursor) = match &query {
            Some(q) => {
                let params = SearchParams {
                    query: q,
                    k,
                    filter: filter.as_ref(),
                    visibility: snap.visibility(),
                    clean: &snap.clean,
                };
                let mut candidates: Vec<Option<Vec<u32>>> = Vec::new();
                for (i, source) in snap.sources.iter().enumerate() {
                    candidates.push(match source {
                        Source::Rows(_) => None,
                        Source::Indexed {
                            segment,
                            keys,
                            columns,
                        } => Some(
                            indexed_candidates(
                                cache,
                                &stats,
                                i,
                                segment,
                                keys,
                                columns.as_deref(),
                                &snap.probes[i],
                                &params,
                                knobs,
                            )
                            .await?,
                        ),
                    });
                }
                let fetched =
                    fetch_rows(cache, &stats, &snap, &candidates, &attributes, true).await?;
                let search_started = Instant::now();
                let mut lists = Vec::new();
                for (i, source) in snap.sources.iter().enumerate() {
                    lists.push(match (source, &fetched[i]) {
                        (Source::Rows(batch), _) => ExactSearch(batch).search(i, &params)?,
                        (Source::Indexed { .. }, Some(f)) => rerank(
                            q,
                            &f.rows,
                            &|row| f.position(row as usize).map(|p| f.vectors[p].as_slice()),
                            k,
                        )?
                        .into_iter()
                        .map(|(distance, row)| Hit {
                            distance,
                            source: i,
                            row: row as usize,
                        })
                        .collect(),
                        (Source::Indexed { .. }, None) => Vec::new(),
                    });
                }
                let hits = merge_top_k(lists, k);
                let rows = hits
                    .iter()
                    .map(|h| {
                        materialize(
                            &snap,
                            &fetched,
                            h.source,
                            h.row,
                            Some(h.distance),
                            &attributes,
                            request.include_vector,
                        )
                    })
                    .collect();
                stats.record("search", search_started.elapsed(), 0);
                (rows, None)
            }
            None => {
                let mut matches = scan_matches(&snap, filter.as_ref())?;
                matches.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                let start = match &request.cursor {
                    Some(cursor) => matches.partition_point(|m| &m.0 <= cursor),
                    None => 0,
                };
                let page: Vec<_> = matches[start..].iter().take(k).collect();
                let more = matches.len() > start + page.len();
                let next = if more {
                    page.last().map(|m| m.0.clone())
                } else {
                    None
                };
                let wanted = rows_by_source(&snap, page.iter().map(|m| (m.1, m.2)));
                let fetched = fetch_rows(
                    cache,
                    &stats,
                    &snap,
                    &wanted,
                    &attributes,
                    request.include_vector,
                )
                .await?;
                let rows = page
                    .iter()
                    .map(|m| {
                        materialize(
                            &snap,
                            &fetched,
                            m.1,
                            m.2,
                            None,
                            &attributes,
                            request.include_vector,
                        )
                    })
                    .collect();
                (rows, next)
            }
        };
        let explain = request.explain.then(|| {
            stats.record("total", started.elapsed(), 0);
            stats.snapshot()
        });
        Ok(QueryResponse {
            results,
            next_cursor,
            lsn: snap.lsn,
            explain,
        })
    }

    /// Loads what a cold query would fetch first: index headers, data-file
    /// footers, keys, and every code block of every indexed segment.
    pub async fn warm(&self, name: &str) -> Result<WarmReport> {
        let c = self.collection(name).await?;
        let stats = Arc::new(ReadStats::default());
        let cache = self.cache().await?;
        // The newest manifest, not the eventual view (re-checked at most
        // once a second): warming right after an index build must see it.
        // Only the manifest: warm-up has no use for the log tail.
        self.refresh_manifest(&c, &mut *c.state.lock().await, true)
            .await?;
        let snap = self
            .snapshot(&c, Consistency::Eventual, Needs::default(), &stats)
            .await?;
        let mut indexed = 0;
        let mut codes = Vec::new();
        for source in &snap.sources {
            if let Source::Indexed { segment, .. } = source {
                indexed += 1;
                let all: Vec<usize> = (0..segment.header.nlist()).collect();
                let stats = &stats;
                codes.push(async move { read_codes(cache, stats, segment, &all).await });
            }
        }
        stats
            .phase("codes", futures::future::try_join_all(codes))
            .await?;
        Ok(WarmReport {
            indexed_segments: indexed,
            other_files: snap.sources.len() - indexed + snap.manifest.deletes.len(),
            stats: stats.snapshot(),
            cache: cache.footprint(),
        })
    }

    /// The visible version of one row, if any.
    pub async fn get_row(
        &self,
        name: &str,
        id_text: &str,
        consistency: Consistency,
    ) -> Result<Option<RowOut>> {
        let c = self.collection(name).await?;
        let id = Id::parse(id_text, c.config.id_type)?;
        let stats = Arc::new(ReadStats::default());
        let cache = self.cache().await?;
        let needs = Needs {
            columns: true,
            probe: None,
        };
        let snap = self.snapshot(&c, consistency, needs, &stats).await?;
        let all = attribute_selection(&c.config, None)?;
        for (source, s) in snap.sources.iter().enumerate() {
            let (ids, lsns) = id_and_lsn(s.keys())?;
            for row in 0..ids.len() {
                if id_at(ids, row) == id && snap.visibility().is_visible(ids, row, lsns.value(row))
                {
                    let wanted = rows_by_source(&snap, [(source, row)]);
                    let fetched = fetch_rows(cache, &stats, &snap, &wanted, &all, true).await?;
                    return Ok(Some(materialize(
                        &snap, &fetched, source, row, None, &all, true,
                    )));
                }
            }
        }
        Ok(None)
    }
}

/// Reads the code blocks of `clusters` of an indexed segment.
async fn read_codes(
    cache: &Arc<BlockCache>,
    stats: &Arc<ReadStats>,
    segment: &IndexedSegment,
    clusters: &[usize],
) -> Result<HashMap<usize, Bytes>> {
    let ranges: Vec<_> = clusters
        .iter()
        .map(|c| segment.header.codes_range(*c))
        .collect();
    let blocks = cache
        .read(stats, &segment.index_path, segment.index_size, &ranges)
        .await?;
    Ok(clusters.iter().copied().zip(blocks).collect())
}

/// The rows of an indexed segment to re-rank: the best candidates by
/// quantised distance among visible, matching rows of the probed clusters
/// (more clusters while too few pass), or every matching row when a filter
/// is selective enough for an exact search.
#[allow(clippy::too_many_arguments)]
async fn indexed_candidates(
    cache: &Arc<BlockCache>,
    stats: &Arc<ReadStats>,
    source: usize,
    segment: &IndexedSegment,
    keys: &RecordBatch,
    columns: Option<&RecordBatch>,
    probe: &Probe,
    params: &SearchParams<'_>,
    knobs: SearchKnobs,
) -> Result<Vec<u32>> {
    let header = &segment.header;
    let (ids, lsns) = id_and_lsn(keys)?;
    if ids.len() != header.rows() {
        return Err(Error::corrupt(
            "ivf index",
            format!(
                "covers {} rows, the segment has {}",
                header.rows(),
                ids.len()
            ),
        ));
    }
    let visible = params.visible_fn(source, ids, lsns);
    let mask = match (params.filter, columns) {
        (Some(filter), Some(columns)) => Some(filter.evaluate(columns)?),
        (Some(_), None) => {
            return Err(Error::corrupt("query", "filter columns were not loaded"));
        }
        _ => None,
    };
    if let Some(mask) = &mask {
        let matching = mask.iter().filter(|m| **m).count();
        if matching <= EXACT_FILTER_ROWS {
            // Selective: every matching row is re-ranked exactly.
            return Ok((0..header.rows())
                .filter(|r| mask[*r] && visible(*r))
                .map(|r| r as u32)
                .collect());
        }
    }
    let accept = |row: usize| mask.as_ref().is_none_or(|m| m[row]) && visible(row);
    let nprobe = header.nprobe(&knobs);
    let rerank_n = knobs.rerank.unwrap_or_else(|| default_rerank(params.k));
    let order = &probe.order;
    if order.len() != header.nlist() {
        return Err(Error::corrupt("query", "the probe order was not planned"));
    }
    let prepared = header.prepare(&params.query.values);
    let mut pool = CandidatePool::new(rerank_n.max(params.k));
    let mut probed = 0;
    let mut extra: HashMap<usize, Bytes> = HashMap::new();
    let mut batch = nprobe;
    while probed < order.len() && (probed < nprobe || !pool.is_full()) {
        let next: Vec<usize> = order[probed..(probed + batch).min(order.len())].to_vec();
        let missing: Vec<usize> = next
            .iter()
            .copied()
            .filter(|c| !probe.codes.contains_key(c))
            .collect();
        if !missing.is_empty() {
            // Too few candidates passed: widen the search (another wave).
            extra.extend(
                stats
                    .phase("widen", read_codes(cache, stats, segment, &missing))
                    .await?,
            );
        }
        for c in next {
            let codes = probe
                .codes
                .get(&c)
                .or_else(|| extra.get(&c))
                .ok_or_else(|| Error::corrupt("ivf index", format!("codes of cluster {c}")))?;
            header.scan(&prepared, c, codes, &accept, &mut pool);
            probed += 1;
        }
        batch = (batch * 2).min(header.nlist());
    }
    Ok(pool.rows())
}

/// Per source, the rows wanted from it (indexed sources only).
fn rows_by_source(
    snap: &Snapshot,
    rows: impl IntoIterator<Item = (usize, usize)>,
) -> Vec<Option<Vec<u32>>> {
    let mut out: Vec<Option<Vec<u32>>> = snap
        .sources
        .iter()
        .map(|s| matches!(s, Source::Indexed { .. }).then(Vec::new))
        .collect();
    for (source, row) in rows {
        if let Some(Some(list)) = out.get_mut(source) {
            list.push(row as u32);
        }
    }
    out
}

/// Fetches, in one wave, the vectors (when `vectors`) and the `attributes`
/// not in memory of the wanted rows of indexed sources.
async fn fetch_rows(
    cache: &Arc<BlockCache>,
    stats: &Arc<ReadStats>,
    snap: &Snapshot,
    wanted: &[Option<Vec<u32>>],
    attributes: &[String],
    vectors: bool,
) -> Result<Vec<Option<Fetched>>> {
    let work = snap
        .sources
        .iter()
        .zip(wanted)
        .map(|(source, rows)| async move {
            let (
                Source::Indexed {
                    segment, columns, ..
                },
                Some(rows),
            ) = (source, rows)
            else {
                return Ok::<_, Error>(None);
            };
            let mut rows = rows.clone();
            rows.sort_unstable();
            rows.dedup();
            let ranges: Vec<_> = rows
                .iter()
                .map(|r| segment.header.vector_range(*r as usize))
                .collect();
            let read_vectors = async {
                if !vectors || rows.is_empty() {
                    return Ok(Vec::new());
                }
                let bytes = cache
                    .read(stats, &segment.index_path, segment.index_size, &ranges)
                    .await?;
                Ok::<_, Error>(
                    bytes
                        .iter()
                        .map(|b| {
                            b.chunks_exact(4)
                                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                                .collect()
                        })
                        .collect(),
                )
            };
            let read_attributes = async {
                if columns.is_some() || attributes.is_empty() || rows.is_empty() {
                    return Ok(None);
                }
                let names: Vec<&str> = attributes.iter().map(String::as_str).collect();
                let ranges = row_ranges(&rows);
                Ok::<_, Error>(Some(
                    segment
                        .data
                        .read(cache, stats, &names, Some(&ranges))
                        .await?,
                ))
            };
            let (vectors, attributes) = futures::try_join!(read_vectors, read_attributes)?;
            Ok(Some(Fetched {
                rows,
                vectors,
                attributes,
            }))
        });
    stats
        .phase("rows", futures::future::try_join_all(work))
        .await
}

/// Makes `manifest` the read state's current one: drops cached files it no
/// longer lists and tail records its checkpoint now covers.
fn install_manifest(state: &mut ReadState, manifest: Manifest) {
    if manifest.version < state.manifest.version {
        return;
    }
    let live: std::collections::HashSet<&str> =
        manifest.segments.iter().map(|s| s.id.as_str()).collect();
    state.segments.retain(|id, _| live.contains(id.as_str()));
    state.indexed.retain(|id, _| live.contains(id.as_str()));
    state.keys.retain(|id, _| live.contains(id.as_str()));
    state.columns.retain(|id, _| live.contains(id.as_str()));
    let live_deletes: std::collections::HashSet<&str> =
        manifest.deletes.iter().map(|d| d.path.as_str()).collect();
    state
        .deletes
        .retain(|p, _| live_deletes.contains(p.as_str()));
    let checkpoint = manifest.checkpoint_lsn;
    let before = state.tail.records.len();
    state.tail.records.retain(|r| r.lsn > checkpoint);
    if state.tail.records.len() != before || state.tail.upto < checkpoint {
        state.tail.view = None;
    }
    state.tail.upto = state.tail.upto.max(checkpoint);
    if state.tail.records.is_empty() {
        state.tail.pending_since = None;
    }
    state.base = None;
    state.manifest = Arc::new(manifest);
}

trait DefaultView {
    fn unwrap_or_default_view(self, schema: &SchemaRef) -> (Arc<RecordBatch>, Arc<Newest>);
}

impl DefaultView for Option<(Arc<RecordBatch>, Arc<Newest>)> {
    fn unwrap_or_default_view(self, schema: &SchemaRef) -> (Arc<RecordBatch>, Arc<Newest>) {
        self.unwrap_or_else(|| {
            (
                Arc::new(RecordBatch::new_empty(Arc::clone(schema))),
                Arc::new(Newest::default()),
            )
        })
    }
}

/// The index search knobs a query asks for.
fn search_knobs(request: &QueryRequest) -> Result<SearchKnobs> {
    let mut knobs = SearchKnobs::default();
    if let Some(n) = request.nprobe {
        if !(1..=65_536).contains(&n) {
            return Err(Error::invalid("nprobe", "must be between 1 and 65536"));
        }
        knobs.nprobe = Some(n);
    }
    if let Some(r) = request.rerank {
        if !(1..=10_000).contains(&r) {
            return Err(Error::invalid("rerank", "must be between 1 and 10000"));
        }
        knobs.rerank = Some(r);
    }
    if let Some(t) = request.recall_target {
        if !(t > 0.0 && t <= 1.0) {
            return Err(Error::invalid("recall_target", "must be in (0, 1]"));
        }
        knobs.recall_target = t;
    }
    Ok(knobs)
}

/// Visible rows matching the filter: (id, source, row).
fn scan_matches(snap: &Snapshot, filter: Option<&Filter>) -> Result<Vec<(Id, usize, usize)>> {
    let mut out = Vec::new();
    for (source, s) in snap.sources.iter().enumerate() {
        let (ids, lsns) = id_and_lsn(s.keys())?;
        let mask = match filter {
            Some(f) => Some(
                f.evaluate(
                    s.attributes()
                        .ok_or_else(|| Error::corrupt("scan", "columns were not loaded"))?,
                )?,
            ),
            None => None,
        };
        for row in 0..ids.len() {
            if mask.as_ref().is_none_or(|m| m[row])
                && snap.visibility().is_visible(ids, row, lsns.value(row))
            {
                out.push((id_at(ids, row), source, row));
            }
        }
    }
    Ok(out)
}

/// Which attributes a response carries: all by default.
fn attribute_selection(config: &CollectionConfig, include: Option<&Value>) -> Result<Vec<String>> {
    let all = || config.attributes.iter().map(|a| a.name.clone()).collect();
    match include {
        None | Some(Value::Bool(true)) => Ok(all()),
        Some(Value::Bool(false)) => Ok(Vec::new()),
        Some(Value::Array(names)) => names
            .iter()
            .enumerate()
            .map(|(i, n)| match n.as_str() {
                Some(name) if config.attribute(name).is_some() => Ok(name.to_string()),
                _ => Err(Error::invalid(
                    format!("include_attributes[{i}]"),
                    format!("unknown attribute {n}"),
                )),
            })
            .collect(),
        Some(other) => Err(Error::invalid(
            "include_attributes",
            format!("expected true, false or a list of names, got {other}"),
        )),
    }
}

fn materialize(
    snap: &Snapshot,
    fetched: &[Option<Fetched>],
    source: usize,
    row: usize,
    distance: Option<f32>,
    attributes: &[String],
    include_vector: bool,
) -> RowOut {
    let s = &snap.sources[source];
    let fetched = fetched.get(source).and_then(Option::as_ref);
    let position = fetched.and_then(|f| f.position(row));
    let id = id_at(s.keys().column(0).as_ref(), row);
    // Where the attributes are: in memory, or among the fetched rows.
    let attribute_rows = match (s.attributes(), fetched.and_then(|f| f.attributes.as_ref())) {
        (Some(batch), _) => Some((batch, row)),
        (None, Some(batch)) => position.map(|p| (batch, p)),
        (None, None) => None,
    };
    let attrs = (!attributes.is_empty()).then(|| {
        let mut map = Map::new();
        if let Some((batch, at)) = attribute_rows {
            for name in attributes {
                if let Some(col) = batch.column_by_name(name) {
                    map.insert(name.clone(), value_at(col.as_ref(), at));
                }
            }
        }
        map
    });
    let vector = include_vector.then(|| match s {
        Source::Rows(batch) => batch
            .column_by_name(COL_VECTOR)
            .and_then(|c| c.as_fixed_size_list_opt())
            .map(|list| {
                let v = list.value(row);
                v.as_any()
                    .downcast_ref::<arrow::array::Float32Array>()
                    .map(|f| f.values().to_vec())
                    .unwrap_or_default()
            })
            .unwrap_or_default(),
        Source::Indexed { .. } => fetched
            .zip(position)
            .and_then(|(f, p)| f.vectors.get(p).cloned())
            .unwrap_or_default(),
    });
    RowOut {
        id,
        distance,
        attributes: attrs,
        vector,
    }
}
