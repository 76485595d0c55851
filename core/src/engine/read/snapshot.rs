//! Taking a snapshot: the manifest and log tail a consistency level asks
//! for, then what the manifest lists and this process has not opened yet,
//! then the keys (and columns, and first code blocks) a read needs — at
//! most two waves of data requests.
//!
//! Every request runs with the collection's state unlocked; results are
//! merged in under the lock afterwards, so a cold query, a flush check and
//! other queries of one collection never wait on each other's I/O.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use futures::FutureExt;

use super::{IndexedSegment, Needs, Probe, Snapshot, Source};
use crate::cache::ReadStats;
use crate::engine::Floe;
use crate::engine::request::Consistency;
use crate::engine::state::{BaseView, Collection, ReadState, TailRecord, TailView};
use crate::error::{Error, Result};
use crate::log::{LogCursor, LogRecord, Lsn};
use crate::manifest::{DeleteFile, Manifest, SegmentEntry};
use crate::mvcc::{Newest, RowSetVisibility, Visibility};
use crate::segment::{RangeSource, conform, read_whole};

/// How long a remembered manifest serves reads before it is listed again
/// (a `strong` read adds the log's newer records to it).
const MANIFEST_TTL: Duration = Duration::from_secs(1);
/// How often a snapshot re-fetches what a concurrently installed manifest
/// added before it gives up (each round means the manifest moved again).
const MAX_ASSEMBLY_ROUNDS: usize = 8;
/// How long a read trusts that the catalog still names the incarnation it
/// serves: the longest an `eventual` read in one process can keep serving
/// a collection another process dropped. (Writes and strong reads notice
/// at once, through the log.)
const CATALOG_TTL: Duration = Duration::from_secs(5);
/// How long a read waits for a flush to commit a bulk import whose marker
/// is in its log tail.
const IMPORT_COMMIT_WAIT: Duration = Duration::from_secs(20);

impl Floe {
    /// A consistent view for one read: the manifest and log tail the
    /// consistency level asks for, and what `needs` says, fetched in at most
    /// two waves (open, then keys and codes).
    pub(crate) async fn snapshot(
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
        let source = cache.source(stats);
        let started = Instant::now();
        match consistency {
            Consistency::Strong => {
                // The log alone orders writes: the remembered manifest plus
                // every record after its checkpoint is the state at the
                // log's last LSN, whatever manifests were committed since.
                // So a strong read asks the log, and the manifest only as
                // an eventual read does (when the tail cannot be read from
                // the log any more, `refresh_tail` takes the newest one).
                let (manifest, last) = tokio::join!(self.refresh_manifest(c, false), async {
                    c.log().await?.last_lsn().await
                });
                manifest?;
                self.refresh_tail(c, last?).await?;
                self.await_imports(c).await?;
            }
            Consistency::AtLeast(lsn) => {
                self.refresh_manifest(c, false).await?;
                self.refresh_tail(c, lsn).await?;
                self.await_imports(c).await?;
                let upto = c.read_state().tail.upto;
                if upto < lsn {
                    return Err(Error::invalid(
                        "consistency.at_least_lsn",
                        format!(
                            "{lsn} is beyond the log's last LSN {upto}: use a token a write returned"
                        ),
                    ));
                }
            }
            Consistency::Eventual => self.refresh_manifest(c, false).await?,
        }
        stats.record("manifest+log", started.elapsed(), 0);
        let mut loaded = Loaded::default();
        for _ in 0..MAX_ASSEMBLY_ROUNDS {
            // One wave: what the manifest lists and this process has not
            // opened (indexed segments with an opening from the head need
            // no request), beside the keys and codes of the indexed
            // segments opened before. Segments opened by a read in this
            // wave get theirs in the next round.
            open_from_head(c).await;
            let (_, more) = futures::try_join!(
                open_sources(c, &source, stats),
                load_keys_and_codes(c, &source, stats, needs, &loaded)
            )?;
            loaded.probes.extend(more.probes);
            loaded.filtered.extend(more.filtered);
            // `None`: another read added an import's marker to the tail
            // meanwhile; its rows come with the flush that commits it.
            let assembled = {
                let mut state = c.read_state();
                if consistency != Consistency::Eventual && state.tail.holds_import() {
                    None
                } else {
                    Some(assemble(
                        c,
                        &mut state,
                        consistency,
                        needs,
                        &mut loaded,
                        &source,
                        stats,
                    )?)
                }
            };
            match assembled {
                None => self.await_imports(c).await?,
                Some(Some(snap)) => return Ok(snap),
                Some(None) => {}
            }
        }
        Err(Error::log(
            "snapshot",
            "the manifest kept changing while the read opened its files; retry",
        ))
    }

    /// [`Floe::snapshot`] of the collection's current incarnation: when `c`
    /// turns out to be dropped, the read moves to the name's new
    /// incarnation if it has the same configuration (see `reopen`).
    pub(crate) async fn snapshot_current(
        &self,
        c: &mut Arc<Collection>,
        since_ms: u64,
        consistency: Consistency,
        needs: Needs<'_>,
        stats: &Arc<ReadStats>,
    ) -> Result<Snapshot> {
        for _ in 0..2 {
            match self.snapshot(c, consistency, needs, stats).await {
                Err(Error::CollectionNotFound(_)) => {
                    *c = self.reopen(c, since_ms).await?;
                }
                Err(Error::SchemaChanged) => match self.upgrade(c).await? {
                    Some(fresh) => *c = fresh,
                    None => return Err(Error::SchemaChanged),
                },
                other => return other,
            }
        }
        self.snapshot(c, consistency, needs, stats).await
    }

    /// Makes the newest manifest current (`force`), or the remembered one
    /// if it was checked within [`MANIFEST_TTL`].
    pub(crate) async fn refresh_manifest(&self, c: &Collection, force: bool) -> Result<()> {
        if !force {
            let state = c.read_state();
            if state.checked.is_some_and(|t| t.elapsed() < MANIFEST_TTL) {
                // Another request may have installed a manifest with
                // attributes this (older) handle does not know.
                if c.lags(&state.manifest) {
                    return Err(Error::SchemaChanged);
                }
                return Ok(());
            }
        }
        let recheck_catalog = c
            .catalog_checked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
            >= CATALOG_TTL;
        // Both in one round trip.
        let (manifest, catalog) = tokio::join!(c.manifests.latest(), async {
            if recheck_catalog {
                Some(self.catalog.get(&c.config.name).await)
            } else {
                None
            }
        });
        match catalog {
            Some(Ok(entry)) if entry.incarnation == c.incarnation => {
                *c.catalog_checked.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
            }
            Some(Ok(_)) | Some(Err(Error::CollectionNotFound(_))) => {
                return Err(Error::CollectionNotFound(c.config.name.clone()));
            }
            Some(Err(e)) => return Err(e),
            None => {}
        }
        let manifest = manifest?;
        let mut state = c.read_state();
        state.checked = Some(Instant::now());
        state.install(manifest);
        if c.lags(&state.manifest) {
            return Err(Error::SchemaChanged);
        }
        Ok(())
    }

    /// Waits until no import marker is left in the tail: an import's rows
    /// are read from its segments once a flush lists them in the manifest
    /// (the marker itself holds none). The import job flushes right after
    /// appending its marker, and every flusher counts a marker as due, so
    /// this is about one flush's time. (Readers do not flush themselves:
    /// the query function may not write.)
    async fn await_imports(&self, c: &Collection) -> Result<()> {
        let deadline = Instant::now() + IMPORT_COMMIT_WAIT;
        let mut pause = Duration::from_millis(10);
        while c.read_state().tail.holds_import() {
            if Instant::now() >= deadline {
                return Err(Error::log(
                    "snapshot",
                    "a bulk import is being committed; retry in a moment",
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
            self.refresh_manifest(c, true).await?;
        }
        Ok(())
    }

    /// Fetches log records after the tail's end up to `target` (or the
    /// log's end), page by page.
    pub(crate) async fn refresh_tail(&self, c: &Collection, target: Lsn) -> Result<()> {
        let mut moved_to_newer_manifest = false;
        loop {
            let from = {
                let state = c.read_state();
                if state.tail.upto >= target {
                    return Ok(());
                }
                state.tail.upto + 1
            };
            let page = match LogCursor::new(c.log().await?.as_ref(), from, target)
                .next_page()
                .await
            {
                Ok(Some(page)) => page,
                Ok(None) => return Ok(()),
                // A flush moved the checkpoint past us: take the newer manifest.
                Err(Error::LsnTrimmed { .. }) if !moved_to_newer_manifest => {
                    moved_to_newer_manifest = true;
                    self.refresh_manifest(c, true).await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some(end) = page.last().map(|e| e.lsn) else {
                return Ok(());
            };
            let mut records = Vec::with_capacity(page.len());
            for entry in page {
                let record = LogRecord::decode(&entry.payload)?;
                let (batch, deleted) = record.rows_at(&c.config, entry.lsn)?;
                records.push(TailRecord {
                    lsn: entry.lsn,
                    bytes: entry.payload.len(),
                    rows: batch.num_rows(),
                    batch,
                    deleted,
                    import: matches!(record, LogRecord::Import(_)),
                });
            }
            c.read_state().tail.extend(records, end);
            // Another flush may trim what the next page wants: recover again.
            moved_to_newer_manifest = false;
        }
    }
}

/// Opens what the manifest lists and this process has not opened: index
/// headers and footers of indexed segments, whole small files. One wave.
async fn open_sources(
    c: &Collection,
    source: &Arc<dyn RangeSource>,
    stats: &Arc<ReadStats>,
) -> Result<()> {
    enum Opened {
        Indexed(Box<IndexedSegment>),
        Rows(String, RecordBatch),
        Deletes(String, RecordBatch),
    }
    let (segments, deletes): (Vec<SegmentEntry>, Vec<DeleteFile>) = {
        let state = c.read_state();
        let segments = state
            .manifest
            .segments
            .iter()
            .filter(|s| !state.segments.contains_key(&s.id) && !state.indexed.contains_key(&s.id))
            .cloned()
            .collect();
        let deletes = state
            .manifest
            .deletes
            .iter()
            .filter(|d| !state.deletes.contains_key(&d.path))
            .cloned()
            .collect();
        (segments, deletes)
    };
    if segments.is_empty() && deletes.is_empty() {
        return Ok(());
    }
    let mut work: Vec<futures::future::BoxFuture<'_, Result<Opened>>> = Vec::new();
    for s in segments {
        work.push(if s.index.is_some() {
            async move {
                let segment = IndexedSegment::open(source, &s).await?;
                Ok(Opened::Indexed(Box::new(segment)))
            }
            .boxed()
        } else {
            async move {
                let path = object_store::path::Path::from(s.data_path.as_str());
                let batch = read_whole(source, &path, s.size_bytes).await?;
                let batch = conform(batch, &c.schema, s.rows_lsn)?;
                Ok(Opened::Rows(s.id, batch))
            }
            .boxed()
        });
    }
    for d in deletes {
        work.push(
            async move {
                let path = object_store::path::Path::from(d.path.as_str());
                let batch = read_whole(source, &path, d.size_bytes).await?;
                Ok(Opened::Deletes(d.path, batch))
            }
            .boxed(),
        );
    }
    let opened = stats
        .phase("open", futures::future::try_join_all(work))
        .await?;
    let mut state = c.read_state();
    for o in opened {
        // A newer manifest may have dropped it meanwhile.
        match o {
            Opened::Indexed(seg) if state.lists_segment(&seg.entry.id) => {
                state.indexed.insert(seg.entry.id.clone(), Arc::from(seg));
            }
            Opened::Rows(id, batch) if state.lists_segment(&id) => {
                state.segments.insert(id, Arc::new(batch));
            }
            Opened::Deletes(path, batch) if state.lists_delete_file(&path) => {
                state.deletes.insert(path, Arc::new(batch));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Opens the indexed segments the collection's head holds openings for
/// (parsing only, with the state unlocked: no request).
async fn open_from_head(c: &Collection) {
    let work: Vec<(SegmentEntry, crate::manifest::Opening)> = {
        let mut state = c.read_state();
        if state.openings.is_empty() {
            return;
        }
        let openings = std::mem::take(&mut state.openings);
        openings
            .into_iter()
            .filter_map(|(id, opening)| {
                let entry = state.manifest.segment(&id)?;
                (entry.index.is_some() && !state.indexed.contains_key(&id))
                    .then(|| (entry.clone(), opening))
            })
            .collect()
    };
    let mut opened = Vec::new();
    for (entry, opening) in work {
        match IndexedSegment::from_opening(&entry, &opening) {
            Ok(segment) => opened.push(segment),
            // Read it from its files instead.
            Err(e) => {
                tracing::warn!(segment = %entry.id, error = %e, "opening from the head failed")
            }
        }
    }
    let mut state = c.read_state();
    for segment in opened {
        if state.lists_segment(&segment.entry.id) {
            state
                .indexed
                .insert(segment.entry.id.clone(), Arc::new(segment));
        }
    }
}

/// What one read loaded for itself, per indexed segment (not kept in the
/// collection's state: the decoded cache keeps what it has room for).
#[derive(Default)]
struct Loaded {
    /// Probe orders and first code blocks (`Needs::probe`).
    probes: HashMap<String, Probe>,
    /// The columns the read's filter names (`Needs::filter`); `None`
    /// where a vector query's filter has a kept mask.
    filtered: HashMap<String, Option<Arc<RecordBatch>>>,
}

/// Loads the keys of indexed segments that lack them, and what this read
/// needs of each indexed segment and has not `loaded` yet: the columns
/// its filter names and the first probed code blocks. One wave.
async fn load_keys_and_codes(
    c: &Collection,
    source: &Arc<dyn RangeSource>,
    stats: &Arc<ReadStats>,
    needs: Needs<'_>,
    loaded: &Loaded,
) -> Result<Loaded> {
    // (segment, whether it needs its keys, its filter's columns, a probe plan)
    let work: Vec<(Arc<IndexedSegment>, bool, bool, bool)> = {
        let state = c.read_state();
        state
            .manifest
            .segments
            .iter()
            .filter_map(|s| state.indexed.get(&s.id))
            .map(|seg| {
                let id = &seg.entry.id;
                (
                    Arc::clone(seg),
                    !state.keys.contains_key(id) && keys_needed(&state.manifest, needs, &seg.entry),
                    needs.filter.is_some() && !loaded.filtered.contains_key(id),
                    needs.probe.is_some() && !loaded.probes.contains_key(id),
                )
            })
            .filter(|(_, keys, columns, probe)| *keys || *columns || *probe)
            .collect()
    };
    if work.is_empty() {
        return Ok(Loaded::default());
    }
    let mut loads = Vec::new();
    let mut filters = Vec::new();
    let mut plans = Vec::new();
    let mut answered = HashMap::new();
    for (seg, want_keys, want_filtered, want_probe) in &work {
        if *want_keys {
            let seg = Arc::clone(seg);
            loads.push(async move {
                let keys = seg.read_keys(source).await?;
                Ok::<_, Error>((seg.entry.id.clone(), Arc::new(keys)))
            });
        }
        if let (true, Some(filter)) = (*want_filtered, needs.filter) {
            // A search with a kept mask reads no column (and one whose mask
            // is evicted meanwhile loads them itself).
            if needs.probe.is_some() && c.filter_masks.holds(&seg.entry.id, filter) {
                answered.insert(seg.entry.id.clone(), None);
            } else {
                let (seg, schema) = (Arc::clone(seg), &c.schema);
                filters.push(async move {
                    let batch = seg.whole_columns(source, &filter.columns(), schema).await?;
                    Ok::<_, Error>((seg.entry.id.clone(), Some(Arc::new(batch))))
                });
            }
        }
        if let (true, Some((q, knobs))) = (*want_probe, needs.probe) {
            let seg = Arc::clone(seg);
            plans.push(async move {
                let nprobe = seg.header.nprobe(&knobs);
                let mut order = seg.header.probe_order(&q.values, nprobe);
                let first = order.clusters(0..nprobe);
                let codes = seg.read_codes(source, &first).await?;
                let norms = seg.code_norms(source, &first, &codes);
                Ok::<_, Error>((
                    seg.entry.id.clone(),
                    Probe {
                        order,
                        codes,
                        norms,
                    },
                ))
            });
        }
    }
    let (keys, filtered, probes) = stats
        .phase("keys+codes", async {
            futures::try_join!(
                futures::future::try_join_all(loads),
                futures::future::try_join_all(filters),
                futures::future::try_join_all(plans)
            )
        })
        .await?;
    let mut state = c.read_state();
    for (id, keys) in keys {
        if state.lists_segment(&id) {
            state.keys.insert(id, keys);
        }
    }
    Ok(Loaded {
        probes: probes.into_iter().collect(),
        filtered: filtered.into_iter().chain(answered).collect(),
    })
}

/// Builds the snapshot from the state, if everything the current manifest
/// lists is loaded (`None`: a newer manifest arrived meanwhile; fetch what
/// it added and try again).
fn assemble(
    c: &Collection,
    state: &mut ReadState,
    consistency: Consistency,
    needs: Needs<'_>,
    loaded: &mut Loaded,
    source: &Arc<dyn RangeSource>,
    stats: &Arc<ReadStats>,
) -> Result<Option<Snapshot>> {
    // A manifest installed since this read checked it may list attributes
    // this handle does not know: its rows would lose them.
    if c.lags(&state.manifest) {
        return Err(Error::SchemaChanged);
    }
    let complete = state.manifest.segments.iter().all(|s| {
        state.segments.contains_key(&s.id)
            || (state.indexed.contains_key(&s.id)
                && (state.keys.contains_key(&s.id) || !keys_needed(&state.manifest, needs, s))
                && (needs.filter.is_none() || loaded.filtered.contains_key(&s.id)))
    }) && state
        .manifest
        .deletes
        .iter()
        .all(|d| state.deletes.contains_key(&d.path));
    if !complete {
        return Ok(None);
    }
    let BaseView {
        newest: base,
        masks,
        ..
    } = base_view(state, stats)?;
    let mut sources = Vec::new();
    let mut visibility = Vec::new();
    let mut source_probes = Vec::new();
    for s in &state.manifest.segments {
        let one = if let Some(batch) = state.segments.get(&s.id) {
            Source::Rows(Arc::clone(batch))
        } else if let Some(segment) = state.indexed.get(&s.id) {
            Source::Indexed {
                segment: Arc::clone(segment),
                keys: state.keys.get(&s.id).cloned(),
                filtered: loaded.filtered.get(&s.id).cloned().flatten(),
            }
        } else {
            return Err(Error::internal(
                "snapshot",
                format!("segment {} not loaded", s.id),
            ));
        };
        sources.push(one);
        visibility.push(RowSetVisibility {
            mask: masks.get(&s.id).cloned().flatten(),
            under_tail: true,
        });
        source_probes.push(loaded.probes.remove(&s.id));
    }
    let tail = if consistency == Consistency::Eventual {
        Arc::new(Newest::default())
    } else {
        let view = tail_view(c, state)?;
        sources.push(Source::Rows(view.rows));
        visibility.push(RowSetVisibility {
            mask: view.mask,
            under_tail: false,
        });
        source_probes.push(None);
        view.newest
    };
    let shadowed = Arc::new(Visibility::shadowed_lsns(&base, &tail));
    let lsn = if consistency == Consistency::Eventual {
        state.manifest.checkpoint_lsn
    } else {
        state.tail.upto.max(state.manifest.checkpoint_lsn)
    };
    Ok(Some(Snapshot {
        manifest: Arc::clone(&state.manifest),
        sources,
        row_sets: visibility,
        base,
        tail,
        shadowed,
        lsn,
        probes: source_probes,
        source: Arc::clone(source),
        stats: Arc::clone(stats),
        filter_masks: Arc::clone(&c.filter_masks),
        schema: Arc::clone(&c.schema),
    }))
}

/// Whether a read with `needs` needs the keys of indexed segment `s` in memory.
fn keys_needed(manifest: &Manifest, needs: Needs<'_>, s: &SegmentEntry) -> bool {
    !(needs.lazy_keys && hides_nothing(manifest, s))
}

/// Whether no row of another segment of `manifest` can be hidden by a row
/// of `s`: every other segment's rows are newer than all of `s`'s. (Delete
/// files hold no rows; the log tail is newer than every segment.) The rows
/// of such a segment are visible unless a newer event for their id exists,
/// so its keys are needed only to check its own rows.
fn hides_nothing(manifest: &Manifest, s: &SegmentEntry) -> bool {
    manifest
        .segments
        .iter()
        .all(|other| other.id == s.id || other.min_lsn > s.max_lsn)
}

/// The segments' newest-event map and clean flags for the current
/// manifest, from the keys loaded (a segment read without its keys hides
/// nothing, see [`hides_nothing`]); built once per manifest version and
/// set of loaded keys.
fn base_view(state: &mut ReadState, stats: &ReadStats) -> Result<BaseView> {
    let keyed = state.keys.len();
    if let Some(view) = &state.base
        && view.version == state.manifest.version
        && view.keyed == keyed
    {
        return Ok(view.clone());
    }
    let started = Instant::now();
    let view = BaseInputs::of(state).build()?;
    stats.record("visibility", started.elapsed(), 0);
    state.base = Some(view.clone());
    Ok(view)
}

/// What a base view is built from, taken from the state so that it can be
/// built with the state unlocked.
struct BaseInputs {
    manifest: Arc<Manifest>,
    /// Per segment of the manifest, its keys (when loaded).
    keys: Vec<(String, Arc<RecordBatch>)>,
    deletes: Vec<Arc<RecordBatch>>,
    keyed: usize,
}

impl BaseInputs {
    fn of(state: &ReadState) -> BaseInputs {
        BaseInputs {
            manifest: Arc::clone(&state.manifest),
            keys: state
                .manifest
                .segments
                .iter()
                .filter_map(|s| {
                    let batch = state
                        .segments
                        .get(&s.id)
                        .or_else(|| state.keys.get(&s.id))?;
                    Some((s.id.clone(), Arc::clone(batch)))
                })
                .collect(),
            deletes: state
                .manifest
                .deletes
                .iter()
                .filter_map(|d| state.deletes.get(&d.path).cloned())
                .collect(),
            keyed: state.keys.len(),
        }
    }

    fn build(&self) -> Result<BaseView> {
        let mut newest = Newest::default();
        for (_, batch) in &self.keys {
            newest.observe_rows(batch, false)?;
        }
        for batch in &self.deletes {
            newest.observe_rows(batch, true)?;
        }
        let mut masks = HashMap::new();
        for (id, batch) in &self.keys {
            masks.insert(id.clone(), newest.visible_mask_unless_all(batch)?);
        }
        Ok(BaseView {
            version: self.manifest.version,
            keyed: self.keyed,
            newest: Arc::new(newest),
            masks: Arc::new(masks),
        })
    }
}

/// Loads, off the query's path, the keys of the indexed segments a query
/// searched without them (see `Needs::lazy_keys`), and the base view with
/// them: later queries then check visibility in memory rather than read
/// their candidates' keys with their rows. One load per collection at a
/// time.
pub(super) fn load_keys_behind(c: &Arc<Collection>, snap: &Snapshot, source: Arc<dyn RangeSource>) {
    let lazy: Vec<Arc<IndexedSegment>> = snap
        .sources
        .iter()
        .filter_map(|s| match s {
            Source::Indexed {
                segment,
                keys: None,
                ..
            } => Some(Arc::clone(segment)),
            _ => None,
        })
        .collect();
    if lazy.is_empty()
        || c.loading_keys
            .swap(true, std::sync::atomic::Ordering::AcqRel)
    {
        return;
    }
    let c = Arc::clone(c);
    tokio::spawn(async move {
        let loaded = async {
            let mut batches = Vec::new();
            for seg in &lazy {
                batches.push((
                    seg.entry.id.clone(),
                    Arc::new(seg.read_keys(&source).await?),
                ));
            }
            let inputs = {
                let mut state = c.read_state();
                for (id, keys) in batches {
                    if state.lists_segment(&id) {
                        state.keys.insert(id, keys);
                    }
                }
                BaseInputs::of(&state)
            };
            let view = inputs.build()?;
            let mut state = c.read_state();
            if state.manifest.version == view.version && state.keys.len() == view.keyed {
                state.base = Some(view);
            }
            Ok::<_, Error>(())
        };
        if let Err(e) = loaded.await {
            tracing::debug!(collection = %c.config.name, error = %e, "keys not loaded behind a query");
        }
        c.loading_keys
            .store(false, std::sync::atomic::Ordering::Release);
    });
}

/// The tail's upserted rows, newest-event map and visible rows, built once
/// per change.
fn tail_view(c: &Collection, state: &mut ReadState) -> Result<TailView> {
    if let Some(view) = &state.tail.view {
        return Ok(view.clone());
    }
    let mut newest = Newest::default();
    let mut upserts = Vec::new();
    for r in &state.tail.records {
        newest.observe_rows(&r.batch, r.deleted)?;
        if !r.deleted {
            upserts.push(r.batch.clone());
        }
    }
    let rows = arrow::compute::concat_batches(&c.schema, &upserts)?;
    let view = TailView {
        mask: newest.visible_mask_unless_all(&rows)?,
        rows: Arc::new(rows),
        newest: Arc::new(newest),
    };
    state.tail.view = Some(view.clone());
    Ok(view)
}
