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

mod maintenance;
mod read;
mod request;
mod state;
mod write;

pub(crate) use request::DeleteTarget;

pub use maintenance::{
    COMPACT_AT_SEGMENTS, CompactReport, GC_GRACE, GcReport, IndexReport, RoundReport,
};
pub use request::{
    Attribute, CollectionInfo, CollectionStats, Consistency, Delete, FlushReport, Query,
    QueryResult, Row, Upsert, WarmReport, WriteAck,
};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt};

use crate::cache::{BlockCache, CacheFootprint, ReadStats};
use crate::catalog::{Catalog, CollectionConfig};
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::log::{FileLogOptions, FileLogs, JetStreamLogs, LogProvider};
use crate::manifest::ManifestStore;
use crate::storage::{CollectionPaths, open_object_store};
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
        })
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
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

    /// The collection's handles, opened on first use.
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
        let manifests = ManifestStore::new(Arc::clone(&self.store), name);
        let collection = Arc::new(Collection::new(config, log, manifests));
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

    /// Names of every collection.
    pub async fn list_collections(&self) -> Result<Vec<String>> {
        self.catalog.list().await
    }

    /// The collection's configuration and statistics, as of the log's last LSN.
    pub async fn describe(&self, name: &str) -> Result<CollectionInfo> {
        let c = self.collection(name).await?;
        let stats = Arc::new(ReadStats::default());
        let snap = self
            .snapshot(&c, Consistency::Strong, Needs::default(), &stats)
            .await?;
        let pending = c.state.lock().await.tail.pending();
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
                unflushed_records: pending.records as u64,
                unflushed_rows: pending.upserted_rows as u64,
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
