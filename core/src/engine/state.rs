//! A collection's handles and what this process keeps of it between reads:
//! the newest manifest seen, opened files, and the decoded log tail.
//!
//! The state sits behind one lock per collection that is only ever held
//! for in-memory work: every object-store or log request happens with the
//! lock released, and its result is merged in afterwards.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::datatypes::SchemaRef;

use super::read::{FilterMasks, IndexedSegment};
use crate::catalog::{AttributeDef, CatalogEntry, CollectionConfig};
use crate::error::Result;
use crate::log::{Log, LogId, LogProvider, Lsn};
use crate::manifest::{Fence, Manifest, ManifestStore};
use crate::mvcc::Newest;
use crate::storage::CollectionPaths;

/// One incarnation of a collection: its handles and read state.
pub(crate) struct Collection {
    /// The catalog's configuration with the manifest's added attributes.
    pub config: CollectionConfig,
    /// How many of its attributes were added after the create (the
    /// manifest's `added_attributes` this process knows).
    pub added: usize,
    /// The catalog entry it was opened from.
    pub entry: CatalogEntry,
    pub incarnation: String,
    /// When the incarnation was created (catalog entry).
    pub created_at_ms: u64,
    pub schema: SchemaRef,
    logs: Arc<dyn LogProvider>,
    /// Opened on first use: eventual reads never touch the log.
    log: tokio::sync::OnceCell<Arc<dyn Log>>,
    pub manifests: ManifestStore,
    pub paths: CollectionPaths,
    /// Held only for short work in memory, never across an await: a
    /// plain mutex, so that a contended lock does not hand the waiting
    /// query to another worker's queue (with an async mutex, four clients
    /// on two cores left them idle a third of the time).
    state: Mutex<ReadState>,
    /// One flush at a time per process.
    pub flush_lock: tokio::sync::Mutex<()>,
    /// One compaction or index build at a time per process.
    pub maintenance_lock: tokio::sync::Mutex<()>,
    /// This process's compactor epoch, claimed on first use and again
    /// after another process fenced it.
    pub compactor: Mutex<Option<Fence>>,
    /// When the catalog last named this incarnation (reads re-check it
    /// now and then, to notice a drop made by another process).
    pub catalog_checked: Mutex<Instant>,
    /// Through which LSN this process last trimmed the log.
    pub trimmed: AtomicU64,
    /// `id` and `_lsn` of segment and delete files (by key), as the
    /// compactor read them: files are immutable, so each is read once.
    pub compactor_keys: Mutex<HashMap<String, Arc<RecordBatch>>>,
    /// The manifest version whose dead rows the compactor last counted, and when.
    pub purge_checked: Mutex<Option<(u64, Instant)>>,
    /// Filters evaluated on indexed segments, for the next query.
    pub filter_masks: Arc<FilterMasks>,
    /// Whether keys skipped by a query are being loaded behind it.
    pub loading_keys: std::sync::atomic::AtomicBool,
}

impl Collection {
    pub(crate) fn new(
        entry: CatalogEntry,
        added: &[AttributeDef],
        logs: Arc<dyn LogProvider>,
        manifests: ManifestStore,
        exact_filter_rows: usize,
    ) -> Collection {
        let mut config = entry.config.clone();
        config.attributes.extend(added.iter().cloned());
        Collection {
            added: added.len(),
            entry: entry.clone(),
            schema: crate::segment::segment_schema(&config),
            paths: CollectionPaths::new(&config.name, &entry.incarnation),
            incarnation: entry.incarnation.clone(),
            created_at_ms: entry.created_at_ms,
            logs,
            log: tokio::sync::OnceCell::new(),
            manifests,
            state: Mutex::new(ReadState::default()),
            flush_lock: tokio::sync::Mutex::new(()),
            maintenance_lock: tokio::sync::Mutex::new(()),
            compactor: Mutex::new(None),
            catalog_checked: Mutex::new(Instant::now()),
            trimmed: AtomicU64::new(0),
            compactor_keys: Mutex::new(HashMap::new()),
            purge_checked: Mutex::new(None),
            filter_masks: Arc::new(FilterMasks::new(exact_filter_rows)),
            loading_keys: std::sync::atomic::AtomicBool::new(false),
            config,
        }
    }

    /// Starts from a head's manifest (as if just checked) and keeps its
    /// openings for the segments it opens.
    pub(crate) fn adopt_head(&mut self, head: crate::manifest::Head) {
        // Only this process's reads start from it: commits and checks
        // list the manifests (a head may lag behind versions that GC has
        // since deleted, so its version proves nothing about the next).
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        state.install(head.manifest);
        state.checked = Some(Instant::now());
        state.openings = head.openings;
    }

    /// Its read state, locked (for work in memory only: the guard cannot
    /// be held across an await of a spawned task).
    pub(crate) fn read_state(&self) -> std::sync::MutexGuard<'_, ReadState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `manifest` lists attributes added since this handle was
    /// opened (its rows would lose them: the operation is redone on the
    /// upgraded collection).
    pub(crate) fn lags(&self, manifest: &Manifest) -> bool {
        manifest.added_attributes.len() > self.added
    }

    /// The incarnation's log, opened on first use; `CollectionNotFound`
    /// once it was dropped.
    pub(crate) async fn log(&self) -> Result<&Arc<dyn Log>> {
        self.log
            .get_or_try_init(|| {
                self.logs.open(LogId {
                    collection: &self.config.name,
                    incarnation: &self.incarnation,
                })
            })
            .await
    }
}

/// What this process keeps of a collection between reads.
pub(crate) struct ReadState {
    pub manifest: Arc<Manifest>,
    pub checked: Option<Instant>,
    /// Unindexed segments, whole (they are small and searched exactly).
    pub segments: HashMap<String, Arc<RecordBatch>>,
    /// Indexed segments: index header and data-file metadata; codes,
    /// vectors and columns stay in the block cache.
    pub indexed: HashMap<String, Arc<IndexedSegment>>,
    /// `id` and `_lsn` of indexed segments (visibility).
    pub keys: HashMap<String, Arc<RecordBatch>>,
    pub deletes: HashMap<String, Arc<RecordBatch>>,
    /// What opening indexed segments reads, from the collection's head:
    /// used (and dropped) when they are opened.
    pub openings: HashMap<String, crate::manifest::Opening>,
    pub base: Option<BaseView>,
    pub tail: Tail,
}

impl Default for ReadState {
    fn default() -> Self {
        ReadState {
            manifest: Arc::new(Manifest::empty()),
            checked: None,
            segments: HashMap::new(),
            indexed: HashMap::new(),
            keys: HashMap::new(),
            deletes: HashMap::new(),
            openings: HashMap::new(),
            base: None,
            tail: Tail::default(),
        }
    }
}

/// The segments' newest-event map for one manifest version, and per
/// segment which of its rows it leaves visible (`None`: all of them).
#[derive(Clone)]
pub(crate) struct BaseView {
    pub version: u64,
    /// How many indexed segments' keys it was built from.
    pub keyed: usize,
    pub newest: Arc<Newest>,
    pub masks: Arc<HashMap<String, Option<Arc<BooleanArray>>>>,
}

/// The tail's upserted rows, its newest-event map, and which of those rows
/// it leaves visible (`None`: all of them).
#[derive(Clone)]
pub(crate) struct TailView {
    pub rows: Arc<RecordBatch>,
    pub newest: Arc<Newest>,
    pub mask: Option<Arc<BooleanArray>>,
}

/// Log records after the manifest's checkpoint, decoded and kept
/// incrementally: only records after `upto` are ever fetched. Records are
/// contiguous: every LSN in `(checkpoint, upto]` is here.
#[derive(Default)]
pub(crate) struct Tail {
    pub upto: Lsn,
    pub records: VecDeque<TailRecord>,
    /// When a record was first seen unflushed (drives age-based flushes).
    pub pending_since: Option<Instant>,
    /// The upserted rows and newest-event map of `records`, built on use.
    pub view: Option<TailView>,
}

pub(crate) struct TailRecord {
    pub lsn: Lsn,
    pub bytes: usize,
    pub rows: usize,
    /// Upserted rows with `_lsn`, or deleted ids with `_lsn`.
    pub batch: RecordBatch,
    pub deleted: bool,
    /// A bulk import's marker: no rows here, its segments are read once a
    /// flush has put them in the manifest.
    pub import: bool,
}

impl Tail {
    /// Adds records read from the log starting right after an earlier
    /// `upto`: those this tail already has (another reader was faster, or a
    /// newer checkpoint covers them) are skipped.
    pub(crate) fn extend(&mut self, records: Vec<TailRecord>, end: Lsn) {
        let mut added = false;
        for record in records {
            if record.lsn > self.upto {
                self.upto = record.lsn;
                self.records.push_back(record);
                added = true;
            }
        }
        self.upto = self.upto.max(end);
        if added {
            self.view = None;
            self.pending_since.get_or_insert_with(Instant::now);
        }
    }

    /// Whether an import's marker is among the records: its rows are only
    /// readable once a flush commits it.
    pub(crate) fn holds_import(&self) -> bool {
        self.records.iter().any(|r| r.import)
    }

    /// What is not yet flushed.
    pub(crate) fn pending(&self) -> Pending {
        let mut p = Pending {
            records: self.records.len(),
            since: self.pending_since,
            ..Pending::default()
        };
        for r in &self.records {
            p.rows += r.rows;
            p.bytes += r.bytes;
            p.import |= r.import;
            if !r.deleted {
                p.upserted_rows += r.rows;
            }
        }
        p
    }
}

/// The log tail's unflushed records, as describe reports them and flush
/// thresholds test them.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Pending {
    pub records: usize,
    /// Upserted rows and deleted ids.
    pub rows: usize,
    pub upserted_rows: usize,
    pub bytes: usize,
    /// When the oldest of them was first seen.
    pub since: Option<Instant>,
    /// An import's marker is among them: its rows are only readable once
    /// a flush commits it.
    pub import: bool,
}

impl ReadState {
    /// Makes `manifest` the current one if it is newer: drops opened files
    /// it no longer lists and tail records its checkpoint now covers.
    pub(crate) fn install(&mut self, manifest: Manifest) {
        if manifest.version <= self.manifest.version && self.manifest.version > 0 {
            return;
        }
        let live: HashSet<&str> = manifest.segments.iter().map(|s| s.id.as_str()).collect();
        self.segments.retain(|id, _| live.contains(id.as_str()));
        self.openings.retain(|id, _| live.contains(id.as_str()));
        self.indexed.retain(|id, _| live.contains(id.as_str()));
        self.keys.retain(|id, _| live.contains(id.as_str()));
        let live_deletes: HashSet<&str> =
            manifest.deletes.iter().map(|d| d.path.as_str()).collect();
        self.deletes
            .retain(|p, _| live_deletes.contains(p.as_str()));
        let checkpoint = manifest.checkpoint_lsn;
        let before = self.tail.records.len();
        self.tail.records.retain(|r| r.lsn > checkpoint);
        if self.tail.records.len() != before || self.tail.upto < checkpoint {
            self.tail.view = None;
        }
        self.tail.upto = self.tail.upto.max(checkpoint);
        if self.tail.records.is_empty() {
            self.tail.pending_since = None;
        }
        if self
            .base
            .as_ref()
            .is_some_and(|b| b.version != manifest.version)
        {
            self.base = None;
        }
        self.manifest = Arc::new(manifest);
    }

    /// Whether the manifest lists segment `id` / delete file `path`.
    pub(crate) fn lists_segment(&self, id: &str) -> bool {
        self.manifest.segment(id).is_some()
    }

    pub(crate) fn lists_delete_file(&self, path: &str) -> bool {
        self.manifest.deletes.iter().any(|d| d.path == path)
    }
}
