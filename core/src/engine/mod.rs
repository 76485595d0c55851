//! The engine: `Floe`, the operations every function calls — collections,
//! writes, reads at three consistency levels, and maintenance — over an
//! object store and a log provider.
//!
//! | module | what it owns |
//! |---|---|
//! | `mod.rs` | opening, the collection registry, the cache's lifecycle, in-process object events |
//! | `request` | checked requests and typed results |
//! | `state` | a collection's handles and what this process keeps of it |
//! | `write` | upserts and deletes: one log record each |
//! | `read/` | snapshots, vector search, scans, materialising rows, warm-up |
//! | `maintenance/` | flush, compaction, index builds, gc, and the round that runs them |

mod export;
mod maintenance;
mod read;
mod request;
mod state;
mod write;

pub(crate) use request::DeleteTarget;

pub use export::{ExportReport, ExportedFile};
pub use maintenance::{
    CompactReport, FANOUT, GC_GRACE, GcReport, IMPORT_LEASE, IndexReport, ORPHAN_GRACE,
    PURGE_CHECK_EVERY, PURGE_DEAD_FRACTION, RoundReport,
};
pub use request::{
    Attribute, CollectionInfo, CollectionStats, Condition, Consistency, Delete, FlushReport, Patch,
    Query, QueryResult, Row, Upsert, WarmReport, WriteAck,
};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::cache::{BlockCache, CacheFootprint, ReadStats};
use crate::catalog::{AttributeDef, Catalog, CatalogEntry, CollectionConfig};
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::log::{FileLogOptions, FileLogs, JetStreamLogs, LogId, LogProvider};
use crate::manifest::{ManifestStore, Operation};
use crate::storage::{
    CollectionPaths, drop_marker, drop_markers, open_object_store, parse_drop_marker,
};
use read::Needs;
use state::Collection;

/// The engine: every operation of every function, over one object store and one log provider.
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
    /// One export at a time per process: each holds a row group of its
    /// part in memory; others wait their turn.
    exports: tokio::sync::Semaphore,
    /// One warm-up behind queries at a time per process.
    warm_turn: Arc<tokio::sync::Semaphore>,
    /// Warm-ups behind queries, stopped when the engine is dropped.
    warm_tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Import jobs running in this process (`name/incarnation/job`).
    imports: Mutex<std::collections::HashSet<String>>,
}

impl Drop for Floe {
    fn drop(&mut self) {
        let tasks = self.warm_tasks.get_mut().unwrap_or_else(|p| p.into_inner());
        for task in tasks.drain(..) {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Floe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Floe")
            .field("store", &self.store)
            .field("logs", &self.logs)
            .finish()
    }
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

    /// An engine over the given store and logs (tests and benchmarks plug in decorated ones).
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
            exports: tokio::sync::Semaphore::new(1),
            warm_turn: Arc::new(tokio::sync::Semaphore::new(1)),
            warm_tasks: Mutex::default(),
            imports: Mutex::default(),
        })
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The object store it runs on.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Receives this process's object-created events (keys of new sealed
    /// data files); without a subscriber they are dropped.
    pub fn subscribe_object_events(&self) -> tokio::sync::mpsc::UnboundedReceiver<String> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *self.events.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        rx
    }

    /// Whether this process has an in-process indexer (`floe serve`) to
    /// hand object-created events and background work to.
    fn has_event_subscriber(&self) -> bool {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
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

    /// The collection's current incarnation, opened on first use (one
    /// catalog read; the log is opened when first needed).
    async fn collection(&self, name: &str) -> Result<Arc<Collection>> {
        if let Some(c) = self.known_collection(name) {
            return Ok(c);
        }
        let entry = self.catalog.get(name).await?;
        Ok(self.remember_collection(entry, None))
    }

    /// [`Floe::collection`] for a read: a process that has not opened the
    /// collection reads its head beside the catalog entry, in one round
    /// trip, and starts from the manifest and segment openings in it.
    async fn collection_to_read(&self, name: &str) -> Result<Arc<Collection>> {
        if let Some(c) = self.known_collection(name) {
            return Ok(c);
        }
        let (entry, head) = tokio::join!(
            self.catalog.get(name),
            crate::manifest::Head::read(self.store.as_ref(), name)
        );
        let entry = entry?;
        let head = head.filter(|h| h.incarnation == entry.incarnation);
        Ok(self.remember_collection(entry, head))
    }

    fn known_collection(&self, name: &str) -> Option<Arc<Collection>> {
        self.collections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// The handle of `entry`'s incarnation, unless another request made one
    /// meanwhile.
    fn remember_collection(
        &self,
        entry: CatalogEntry,
        head: Option<crate::manifest::Head>,
    ) -> Arc<Collection> {
        let name = entry.config.name.clone();
        let manifests = ManifestStore::new(Arc::clone(&self.store), &name, &entry.incarnation);
        let added = head
            .as_ref()
            .map(|h| h.manifest.added_attributes.clone())
            .unwrap_or_default();
        let mut collection = Collection::new(
            entry,
            &added,
            Arc::clone(&self.logs),
            manifests,
            self.settings.search.exact_filter_rows,
        );
        if let Some(head) = head {
            collection.adopt_head(head);
        }
        let mut map = self.collections.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(name).or_insert(Arc::new(collection)))
    }

    /// `c` with the attributes the newest manifest added since `c` was
    /// opened, now the one this process serves; `None` when `c` knows
    /// them all.
    async fn upgrade(&self, c: &Collection) -> Result<Option<Arc<Collection>>> {
        let manifest = c.manifests.latest().await?;
        if !c.lags(&manifest) {
            return Ok(None);
        }
        let name = &c.config.name;
        let fresh = Arc::new(Collection::new(
            c.entry.clone(),
            &manifest.added_attributes,
            Arc::clone(&self.logs),
            ManifestStore::new(Arc::clone(&self.store), name, &c.incarnation),
            self.settings.search.exact_filter_rows,
        ));
        let mut map = self.collections.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(name.as_str()) {
            // Another request upgraded it as far already.
            Some(known) if known.incarnation == c.incarnation && known.added >= fresh.added => {
                Ok(Some(Arc::clone(known)))
            }
            Some(known) if known.incarnation == c.incarnation => {
                map.insert(name.clone(), Arc::clone(&fresh));
                Ok(Some(fresh))
            }
            // Forgotten (dropped) or replaced meanwhile: serve this request,
            // keep the map as it is.
            _ => Ok(Some(fresh)),
        }
    }

    /// Runs `op` on `c`, and once more on its upgrade when `op` finds
    /// that attributes were added (`Error::SchemaChanged`).
    pub(crate) async fn on_newest_schema<T, F, Fut>(&self, c: Arc<Collection>, op: F) -> Result<T>
    where
        F: Fn(Arc<Collection>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        match op(Arc::clone(&c)).await {
            Err(Error::SchemaChanged) => match self.upgrade(&c).await? {
                Some(fresh) => op(fresh).await,
                None => Err(Error::SchemaChanged),
            },
            other => other,
        }
    }

    /// `check` of a request against `c`'s configuration; when it fails,
    /// once more against the newest attributes if some were added since
    /// `c` was opened (a request may name an attribute another process
    /// added). Returns the collection it passed against.
    pub(crate) async fn check_on_newest<T>(
        &self,
        c: Arc<Collection>,
        check: impl Fn(&CollectionConfig) -> Result<T>,
    ) -> Result<(Arc<Collection>, T)> {
        match check(&c.config) {
            Ok(request) => Ok((c, request)),
            Err(e @ Error::Invalid { .. }) => match self.upgrade(&c).await? {
                Some(fresh) => {
                    let request = check(&fresh.config)?;
                    Ok((fresh, request))
                }
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Forgets incarnation `incarnation` of `name` if it is still the one
    /// this process serves, so that the next request reads the catalog again.
    fn forget(&self, name: &str, incarnation: &str) {
        let mut map = self.collections.lock().unwrap_or_else(|p| p.into_inner());
        if map
            .get(name)
            .is_some_and(|known| known.incarnation == incarnation)
        {
            map.remove(name);
        }
    }

    /// After an operation on `stale` found its incarnation dropped (by
    /// another process, or a drop this one raced): the name's current
    /// incarnation, read from the catalog again. `CollectionNotFound` when
    /// the name is gone; `Unavailable` when the catalog still names the
    /// incarnation whose log is missing (a log service hiccup, or a lost
    /// log: never silently a 404 for a listed collection).
    async fn current_after_drop(&self, stale: &Collection) -> Result<Arc<Collection>> {
        self.forget(&stale.config.name, &stale.incarnation);
        let name = &stale.config.name;
        let fresh = self.collection(name).await?;
        if fresh.incarnation == stale.incarnation {
            tracing::warn!(collection = %name, incarnation = %stale.incarnation, "the catalog names an incarnation whose log is missing");
            return Err(Error::log(
                "open",
                format!("the log of collection {name:?} is missing; retry"),
            ));
        }
        Ok(fresh)
    }

    /// [`Floe::current_after_drop`], for a request that started at
    /// `since_ms` and was checked against `stale`'s configuration. It may
    /// go on in the new incarnation only if that one existed before the
    /// request began (this process had not noticed an older drop) and has
    /// the same configuration. A request that raced the drop gets 404:
    /// it vanishes with the collection it was sent to, and a collection
    /// created again meanwhile starts empty.
    async fn reopen(&self, stale: &Collection, since_ms: u64) -> Result<Arc<Collection>> {
        let fresh = self.current_after_drop(stale).await?;
        if fresh.config == stale.config && fresh.created_at_ms <= since_ms {
            Ok(fresh)
        } else {
            Err(Error::CollectionNotFound(stale.config.name.clone()))
        }
    }

    /// Runs `op` on the name's collection; when it finds the incarnation
    /// this process remembered dropped, once more on the current one.
    pub(crate) async fn on_current<T, F, Fut>(&self, name: &str, op: F) -> Result<T>
    where
        F: Fn(Arc<Collection>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let c = self.collection(name).await?;
        match self.on_newest_schema(Arc::clone(&c), &op).await {
            Err(Error::CollectionNotFound(_)) => {
                let fresh = self.current_after_drop(&c).await?;
                self.on_newest_schema(fresh, &op).await
            }
            other => other,
        }
    }

    // ---- collections ------------------------------------------------------

    /// Creates a collection; `Ok(false)` when an identical one existed.
    ///
    /// A new incarnation's log is created before its catalog entry, so a
    /// collection that exists can always be written; a create that loses
    /// the race for the name removes the log it made.
    pub async fn create_collection(
        &self,
        config: CollectionConfig,
    ) -> Result<(CollectionConfig, bool)> {
        config.validate()?;
        match self.catalog.get(&config.name).await {
            Ok(existing) if existing.config == config => return Ok((existing.config, false)),
            Ok(_) => {
                return Err(Error::CollectionExists {
                    name: config.name.clone(),
                });
            }
            Err(Error::CollectionNotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let entry = CatalogEntry::mint(config);
        let id = LogId {
            collection: entry.name(),
            incarnation: &entry.incarnation,
        };
        self.logs.create(id).await?;
        let (existing, _) = self.catalog.create(&entry).await?;
        if existing.incarnation == entry.incarnation {
            // Ours landed (a retried put may have found it there).
            return Ok((existing.config, true));
        }
        // Another create won the name: this incarnation never existed.
        // (A failed put leaves its log to the orphan sweep: it may have landed.)
        if let Err(e) = self.logs.delete(id).await {
            tracing::warn!(collection = %entry.name(), error = %e, "removing the log of a lost create failed; the orphan sweep will");
        }
        Ok((existing.config, false))
    }

    /// Adds nullable attributes to collection `name`, after those it has,
    /// and returns its configuration: rows written before have none
    /// (null), and filters on them match nothing there. One manifest
    /// commit; other processes learn it from the manifest (a request
    /// naming an attribute they do not know yet makes them look). Adding
    /// an attribute that exists with the same type does nothing.
    pub async fn add_attributes(
        &self,
        name: &str,
        attributes: &[AttributeDef],
    ) -> Result<CollectionConfig> {
        if attributes.is_empty() {
            return Err(Error::invalid("attributes", "name at least one attribute"));
        }
        let c = self.collection(name).await?;
        // The newest attributes first: the checks below are against them.
        let c = self.upgrade(&c).await?.unwrap_or(c);
        let mut config = c.config.clone();
        let mut new = Vec::new();
        for (i, attr) in attributes.iter().enumerate() {
            match config.attribute(&attr.name) {
                Some(existing) if existing == attr => {}
                Some(existing) => {
                    return Err(Error::invalid(
                        format!("attributes[{i}].type"),
                        format!(
                            "{:?} exists with type {:?}; attributes cannot change type",
                            attr.name, existing.ty
                        ),
                    ));
                }
                None => {
                    config.attributes.push(attr.clone());
                    new.push(attr.clone());
                }
            }
        }
        // Names and duplicates, naming the request's fields; then the
        // attribute limit, as at create.
        CollectionConfig {
            attributes: attributes.to_vec(),
            ..c.config.clone()
        }
        .validate()?;
        config.validate()?;
        if new.is_empty() {
            return Ok(c.config.clone());
        }
        c.manifests
            .commit(None, &Operation::AddAttributes(new))
            .await?;
        let c = self.upgrade(&c).await?.unwrap_or(c);
        Ok(c.config.clone())
    }

    /// Names of every collection: exactly those `describe` finds.
    pub async fn list_collections(&self) -> Result<Vec<String>> {
        self.catalog.list().await
    }

    /// The collection's configuration and statistics, as of the log's last LSN.
    pub async fn describe(&self, name: &str) -> Result<CollectionInfo> {
        let since = crate::clock::now_ms();
        let mut c = self.collection(name).await?;
        // Segment figures from the newest manifest, not the one reads
        // remember; a dropped incarnation moves to the name's current one
        // as a snapshot would.
        let mut tries = 0;
        loop {
            tries += 1;
            match self.refresh_manifest(&c, true).await {
                Ok(()) => break,
                Err(Error::CollectionNotFound(_)) if tries < 3 => {
                    c = self.reopen(&c, since).await?;
                }
                Err(Error::SchemaChanged) if tries < 3 => {
                    if let Some(fresh) = self.upgrade(&c).await? {
                        c = fresh;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let stats = Arc::new(ReadStats::default());
        let snap = self
            .snapshot_current(&mut c, since, Consistency::Strong, Needs::default(), &stats)
            .await?;
        let pending = c.read_state().tail.pending();
        let m = &snap.manifest;
        Ok(CollectionInfo {
            config: c.config.clone(),
            incarnation: c.incarnation.clone(),
            stats: CollectionStats {
                rows: snap.visibility().live_count() as u64,
                segments: m.segments.len(),
                segment_rows: m.total_rows(),
                segment_bytes: m.total_bytes(),
                indexed_segments: m.segments.iter().filter(|s| s.index.is_some()).count(),
                indexed_rows: m
                    .segments
                    .iter()
                    .filter(|s| s.index.is_some())
                    .map(|s| s.rows)
                    .sum(),
                index_bytes: m
                    .segments
                    .iter()
                    .filter_map(|s| s.index.as_ref())
                    .map(|i| i.size_bytes)
                    .sum(),
                warm_segments: snap.warm_segments(),
                delete_files: m.deletes.len(),
                manifest_version: m.version,
                log_lsn: snap.lsn,
                checkpoint_lsn: m.checkpoint_lsn,
                unflushed_records: pending.records as u64,
                unflushed_rows: pending.upserted_rows as u64,
            },
        })
    }

    /// Drops the collection. A drop marker is written, then the name is
    /// fenced (its catalog entry goes, so no request can open it again),
    /// then the log is deleted (so no write through a handle opened earlier
    /// can be acknowledged after this returns), then the incarnation's
    /// files, then the marker. The name is free at once. If any step fails,
    /// the error says to retry, and the retry (or the orphan sweep)
    /// finishes the drop the marker records; a drop of a name with no
    /// catalog entry and no unfinished drop is a 404.
    pub async fn drop_collection(&self, name: &str) -> Result<()> {
        match self.catalog.get(name).await {
            Ok(entry) => {
                let marker = drop_marker(name, &entry.incarnation);
                self.store
                    .put(&marker, PutPayload::from_static(b""))
                    .await
                    .map_err(|e| Error::store("put", &marker, e))?;
                self.catalog.remove(name).await?;
                self.forget(name, &entry.incarnation);
                self.finish_drop(name, &entry.incarnation).await
            }
            Err(Error::CollectionNotFound(_)) => {
                let unfinished = self.unfinished_drops(Some(name)).await?;
                if unfinished.is_empty() {
                    return Err(Error::CollectionNotFound(name.to_string()));
                }
                for (name, incarnation) in unfinished {
                    self.finish_drop(&name, &incarnation).await?;
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The drops decided (marker written) and not finished, of one name or all.
    async fn unfinished_drops(&self, name: Option<&str>) -> Result<Vec<(String, String)>> {
        let root = drop_markers(name);
        let markers: Vec<_> = self
            .store
            .list(Some(&root))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(|e| Error::store("list", &root, e))?;
        Ok(markers.iter().filter_map(parse_drop_marker).collect())
    }

    /// The steps of a drop after the name is fenced: the log, the files, the marker.
    async fn finish_drop(&self, name: &str, incarnation: &str) -> Result<()> {
        self.logs
            .delete(LogId {
                collection: name,
                incarnation,
            })
            .await?;
        self.delete_prefix(&CollectionPaths::new(name, incarnation).root())
            .await?;
        crate::manifest::remove_head(self.store.as_ref(), name, incarnation).await?;
        let marker = drop_marker(name, incarnation);
        match self.store.delete(&marker).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::store("delete", &marker, e)),
        }
    }

    /// Deletes every object under `root`.
    async fn delete_prefix(&self, root: &object_store::path::Path) -> Result<()> {
        let files: Vec<_> = self
            .store
            .list(Some(root))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(|e| Error::store("list", root, e))?;
        let stream = futures::stream::iter(files.into_iter().map(Ok)).boxed();
        let mut deleted = self.store.delete_stream(stream);
        while let Some(result) = deleted.next().await {
            match result {
                // Someone else (a racing drop or sweep) was faster.
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(Error::store("delete", root, e)),
            }
        }
        Ok(())
    }

    /// Removes what no catalog entry owns any more and is older than
    /// `grace`: logs and files of incarnations whose drop or create was
    /// interrupted, or written by a process that had not yet noticed a
    /// drop. Returns how many incarnations were swept.
    pub async fn sweep_orphans(&self, grace: std::time::Duration) -> Result<usize> {
        let live: std::collections::HashSet<(String, String)> = {
            let mut live = std::collections::HashSet::new();
            for name in self.catalog.list().await? {
                match self.catalog.get(&name).await {
                    Ok(entry) => {
                        live.insert((name, entry.incarnation));
                    }
                    Err(Error::CollectionNotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            live
        };
        let old_enough = |incarnation: &str| {
            crate::catalog::incarnation_time_ms(incarnation).is_some_and(|t| {
                crate::clock::now_ms().saturating_sub(t) >= grace.as_millis() as u64
            })
        };
        let mut swept = 0;
        // Drops that were decided: nothing can use those incarnations.
        for (collection, incarnation) in self.unfinished_drops(None).await? {
            self.finish_drop(&collection, &incarnation).await?;
            swept += 1;
        }
        for (collection, incarnation) in self.logs.list().await? {
            if !live.contains(&(collection.clone(), incarnation.clone()))
                && old_enough(&incarnation)
            {
                self.logs
                    .delete(LogId {
                        collection: &collection,
                        incarnation: &incarnation,
                    })
                    .await?;
                swept += 1;
            }
        }
        for name_dir in self.subdirs(&CollectionPaths::collections_root()).await? {
            let Some(name) = name_dir.filename().map(str::to_string) else {
                continue;
            };
            for dir in self.subdirs(&name_dir).await? {
                let Some(incarnation) = dir.filename().map(str::to_string) else {
                    continue;
                };
                if !live.contains(&(name.clone(), incarnation.clone())) && old_enough(&incarnation)
                {
                    self.delete_prefix(&dir).await?;
                    swept += 1;
                }
            }
        }
        Ok(swept)
    }

    /// The "directories" right under `prefix`.
    async fn subdirs(
        &self,
        prefix: &object_store::path::Path,
    ) -> Result<Vec<object_store::path::Path>> {
        self.store
            .list_with_delimiter(Some(prefix))
            .await
            .map(|listing| listing.common_prefixes)
            .map_err(|e| Error::store("list", prefix, e))
    }

    /// Whether the log and the object store answer (readiness).
    pub async fn ready(&self) -> (Result<()>, Result<()>) {
        tokio::join!(self.logs.ping(), self.catalog.ping())
    }

    // ---- the cache --------------------------------------------------------

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
}
