//! The read cache: bytes of immutable objects (segments, index files,
//! delete files) in fixed-size blocks, held in memory and on local disk by a
//! foyer hybrid cache.
//!
//! A block is `(object path, block number)`: any byte range maps to the
//! blocks covering it, so ranges of different sizes share entries. Objects
//! are immutable (their paths embed unique ids), so nothing is ever
//! invalidated. A read looks every block up, groups the missing ones into
//! runs of adjacent blocks and fetches each run with one ranged GET, all runs
//! of all files of a read in parallel. Concurrent reads of the same block
//! share one fetch (foyer's `get_or_fetch` coalesces them). The disk tier
//! checksums every entry; a damaged entry reads as a miss and is refetched.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use foyer::{
    BlockEngineConfig, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder,
    HybridCachePolicy, RecoverMode, S3FifoConfig, Source,
};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::segment::RangeSource;

mod decoded;

pub use decoded::{Decoded, DecodedCache, DecodedKey, Part};

/// Cache sizes and where the disk tier lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    /// Memory tier, MiB.
    pub memory_mb: usize,
    /// Disk tier, MiB; 0 turns the disk tier off.
    pub disk_mb: usize,
    /// Directory of the disk tier; `<data_dir>/cache` when unset (on Lambda,
    /// a directory under `/tmp`).
    pub disk_dir: Option<PathBuf>,
    /// Block size, KiB: the unit of caching and of ranged reads.
    pub block_kib: usize,
    /// Decoded parts (cluster codes, attribute pages, filtered columns)
    /// in memory, MiB, on top of `memory_mb`; 0 keeps none.
    pub decoded_mb: usize,
    /// Warm each indexed segment in the background after the first
    /// vector query that opens it (what `POST …/warm` loads), so later
    /// queries read nothing from the object store whichever rows they
    /// meet. Off: a process is warm only for what it was asked.
    pub auto_warm: bool,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            memory_mb: 512,
            disk_mb: 4096,
            disk_dir: None,
            block_kib: 64,
            decoded_mb: 512,
            auto_warm: true,
        }
    }
}

impl CacheSettings {
    /// Checks the sizes.
    pub fn validate(&self) -> Result<()> {
        if self.memory_mb == 0 {
            return Err(Error::invalid("cache.memory_mb", "must be positive"));
        }
        if self.disk_mb != 0 && self.disk_mb < 64 {
            return Err(Error::invalid(
                "cache.disk_mb",
                "must be 0 (no disk tier) or at least 64",
            ));
        }
        if !(4..=16 * 1024).contains(&self.block_kib) || !self.block_kib.is_power_of_two() {
            return Err(Error::invalid(
                "cache.block_kib",
                "must be a power of two between 4 and 16384",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BlockKey {
    path: String,
    block: u64,
}

/// A [`BlockKey`] borrowed, to look a block up without building one:
/// hashed as a `BlockKey` is.
#[derive(Hash)]
struct BlockKeyRef<'a> {
    path: &'a str,
    block: u64,
}

impl equivalent::Equivalent<BlockKey> for BlockKeyRef<'_> {
    fn equivalent(&self, key: &BlockKey) -> bool {
        self.block == key.block && self.path == key.path
    }
}

impl foyer::Code for BlockKey {
    fn encode(&self, writer: &mut impl std::io::Write) -> foyer::Result<()> {
        let path = self.path.as_bytes();
        writer
            .write_all(&(path.len() as u32).to_le_bytes())
            .and_then(|_| writer.write_all(path))
            .and_then(|_| writer.write_all(&self.block.to_le_bytes()))
            .map_err(foyer::Error::io_error)
    }

    fn decode(reader: &mut impl std::io::Read) -> foyer::Result<Self> {
        let mut len = [0u8; 4];
        reader
            .read_exact(&mut len)
            .map_err(foyer::Error::io_error)?;
        let mut path = vec![0u8; u32::from_le_bytes(len) as usize];
        reader
            .read_exact(&mut path)
            .map_err(foyer::Error::io_error)?;
        let mut block = [0u8; 8];
        reader
            .read_exact(&mut block)
            .map_err(foyer::Error::io_error)?;
        let path = String::from_utf8(path).map_err(|e| {
            foyer::Error::io_error(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })?;
        Ok(BlockKey {
            path,
            block: u64::from_le_bytes(block),
        })
    }

    fn estimated_size(&self) -> usize {
        4 + self.path.len() + 8
    }
}

/// What one query (or warm-up) cost, collected while it runs.
#[derive(Debug, Default)]
pub struct ReadStats {
    requests: AtomicU64,
    bytes: AtomicU64,
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    fetched_blocks: AtomicU64,
    round_trips: AtomicU64,
    /// Steps in flight, and the request count when the first of them began.
    wave: Mutex<(u64, u64)>,
    phases: Mutex<Vec<Phase>>,
}

/// One step of a query and how long it took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// What the step did.
    pub name: String,
    /// How long it took, milliseconds.
    pub ms: f64,
    /// Object-store requests this step sent.
    pub requests: u64,
}

/// The figures a query reports with `"explain": true`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueryStats {
    /// Object-store GETs sent for data (segments, indexes, delete files).
    pub requests: u64,
    /// Bytes those requests fetched.
    pub bytes_fetched: u64,
    /// Sequential waves of object-store requests for data; the manifest and
    /// the collection config are not counted here.
    pub round_trips: u64,
    /// Blocks found in the memory tier.
    pub memory_hits: u64,
    /// Blocks found in the disk tier.
    pub disk_hits: u64,
    /// Blocks fetched from the object store.
    pub misses: u64,
    /// Each step, in order.
    pub phases: Vec<Phase>,
}

impl ReadStats {
    /// The figures so far.
    pub fn snapshot(&self) -> QueryStats {
        QueryStats {
            requests: self.requests.load(Ordering::Relaxed),
            bytes_fetched: self.bytes.load(Ordering::Relaxed),
            round_trips: self.round_trips.load(Ordering::Relaxed),
            memory_hits: self.memory_hits.load(Ordering::Relaxed),
            disk_hits: self.disk_hits.load(Ordering::Relaxed),
            misses: self.fetched_blocks.load(Ordering::Relaxed),
            phases: self
                .phases
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Notes a step that did no reads (CPU work, the whole query).
    pub fn record(&self, name: &str, took: std::time::Duration, requests: u64) {
        self.phases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Phase {
                name: name.to_string(),
                ms: took.as_secs_f64() * 1e3,
                requests,
            });
    }

    /// Runs one step of a plan. Every read inside it is issued together,
    /// and steps that run side by side make one wave: if any of their reads
    /// went to the object store, the wave is one round trip. (A step's
    /// `requests` counts every request made while it ran, its neighbours'
    /// too.)
    pub async fn phase<T>(&self, name: &str, work: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let before = self.requests.load(Ordering::Relaxed);
        let step = Step::begin(self, before);
        let out = work.await;
        drop(step);
        let now = self.requests.load(Ordering::Relaxed);
        self.record(name, started.elapsed(), now - before);
        out
    }
}

/// A step in flight; ends its wave when the last step of it ends (also
/// when its future is dropped half-way).
struct Step<'a>(&'a ReadStats);

impl<'a> Step<'a> {
    fn begin(stats: &'a ReadStats, requests: u64) -> Self {
        let mut wave = stats.wave.lock().unwrap_or_else(|p| p.into_inner());
        if wave.0 == 0 {
            wave.1 = requests;
        }
        wave.0 += 1;
        Step(stats)
    }
}

impl Drop for Step<'_> {
    fn drop(&mut self) {
        let now = self.0.requests.load(Ordering::Relaxed);
        let mut wave = self.0.wave.lock().unwrap_or_else(|p| p.into_inner());
        wave.0 = wave.0.saturating_sub(1);
        if wave.0 == 0 && now > wave.1 {
            self.0.round_trips.fetch_add(1, Ordering::Relaxed);
        }
    }
}

type Fetch = Shared<BoxFuture<'static, std::result::Result<Bytes, Arc<Error>>>>;

/// The block cache in front of the object store.
pub struct BlockCache {
    cache: HybridCache<BlockKey, Bytes>,
    decoded: DecodedCache,
    store: Arc<dyn ObjectStore>,
    block: u64,
    disk_capacity: u64,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache")
            .field("block", &self.block)
            .field("hybrid", &self.cache.is_hybrid())
            .finish()
    }
}

/// How much the cache holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheFootprint {
    /// Bytes in the memory tier.
    pub memory_bytes: u64,
    /// Size of the memory tier.
    pub memory_capacity: u64,
    /// Size of the disk tier (0: none).
    pub disk_capacity: u64,
    /// Bytes written to the disk tier since start (entries plus headers).
    pub disk_written: u64,
    /// Bytes in the decoded cache.
    pub decoded_bytes: u64,
    /// Size of the decoded cache.
    pub decoded_capacity: u64,
}

/// Bytes waiting to be written to the disk tier beyond which it drops new
/// entries (foyer's default, set here because [`BlockCache::insert_object`]
/// paces itself by it).
const DISK_QUEUE_BYTES: u64 = 16 * 1024 * 1024;

impl BlockCache {
    /// Opens the cache; the disk tier (if any) keeps what an earlier process
    /// left there (entries are checked on read).
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        settings: &CacheSettings,
        default_dir: PathBuf,
    ) -> Result<BlockCache> {
        settings.validate()?;
        let builder = HybridCacheBuilder::new()
            .with_name("floe")
            .with_policy(HybridCachePolicy::WriteOnInsertion)
            .memory(settings.memory_mb * 1024 * 1024)
            // S3-FIFO: a hit bumps a counter under a shared lock. (LRU, the
            // default, relinks the entry under the shard's write lock on
            // every hit and again on release: a warm re-rank's hundred
            // look-ups each took it twice, and queries at once queued on it.)
            .with_eviction_config(S3FifoConfig::default())
            .with_weighter(|key: &BlockKey, value: &Bytes| key.path.len() + value.len() + 16)
            .storage();
        let builder = if settings.disk_mb > 0 {
            let dir = settings.disk_dir.clone().unwrap_or(default_dir);
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::cache("open", format!("{}: {e}", dir.display())))?;
            // A new directory (every new Lambda container's /tmp) has nothing
            // to recover: skip reading every block's header at open.
            let fresh = std::fs::read_dir(&dir)
                .map(|mut entries| entries.next().is_none())
                .unwrap_or(false);
            let device = FsDeviceBuilder::new(&dir)
                .with_capacity(settings.disk_mb * 1024 * 1024)
                .build()
                .map_err(|e| Error::cache("open", format!("{}: {e}", dir.display())))?;
            builder
                .with_engine_config(
                    BlockEngineConfig::new(device)
                        .with_block_size(4 * 1024 * 1024)
                        .with_buffer_pool_size(DISK_QUEUE_BYTES as usize)
                        .with_submit_queue_size_threshold(DISK_QUEUE_BYTES as usize),
                )
                .with_recover_mode(if fresh {
                    RecoverMode::None
                } else {
                    RecoverMode::Quiet
                })
        } else {
            builder
        };
        let cache = builder.build().await.map_err(|e| Error::cache("open", e))?;
        Ok(BlockCache {
            cache,
            decoded: DecodedCache::new(settings.decoded_mb * 1024 * 1024),
            store,
            block: settings.block_kib as u64 * 1024,
            disk_capacity: settings.disk_mb as u64 * 1024 * 1024,
        })
    }

    /// The block size: the unit of caching and of ranged reads.
    pub fn block_bytes(&self) -> u64 {
        self.block
    }

    /// What the cache holds.
    pub fn footprint(&self) -> CacheFootprint {
        CacheFootprint {
            memory_bytes: self.cache.memory().usage() as u64,
            memory_capacity: self.cache.memory().capacity() as u64,
            disk_capacity: self.disk_capacity,
            disk_written: self.cache.statistics().disk_write_bytes() as u64,
            decoded_bytes: self.decoded.usage() as u64,
            decoded_capacity: self.decoded.capacity() as u64,
        }
    }

    /// Waits for pending disk writes and closes the disk tier.
    pub async fn close(&self) -> Result<()> {
        self.cache
            .close()
            .await
            .map_err(|e| Error::cache("close", e))
    }

    /// Keeps the bytes of an object this process just wrote, so reading it
    /// back costs nothing. A large object (an index file) waits for the
    /// disk tier now and then: the disk tier drops what arrives while more
    /// than [`DISK_QUEUE_BYTES`] wait to be written, so without the pauses
    /// it would keep only the first few MiB, and the rest of the file,
    /// once out of the memory tier, would be fetched again.
    pub async fn insert_object(&self, path: &Path, bytes: &Bytes) {
        let n = bytes.len() as u64;
        let queued_per_block = self.queued_per_block(path);
        let (mut block, mut queued) = (0, 0);
        while block * self.block < n {
            let start = block * self.block;
            let end = (start + self.block).min(n);
            if queued + queued_per_block > DISK_QUEUE_BYTES / 2 {
                self.cache.storage().wait().await;
                queued = 0;
            }
            self.cache.insert(
                BlockKey {
                    path: path.to_string(),
                    block,
                },
                // A copy: a slice would keep the whole file alive while
                // any block of it is cached.
                Bytes::copy_from_slice(&bytes[start as usize..end as usize]),
            );
            queued += queued_per_block;
            block += 1;
        }
    }

    /// What one block of `path` takes in the disk tier's write queue: the
    /// entry (block, key, header) rounded up to 4 KiB pages.
    fn queued_per_block(&self, path: &Path) -> u64 {
        (self.block + path.as_ref().len() as u64 + 64).next_multiple_of(4096)
    }

    /// Reads `range` of the object at `path` (`size` bytes long) into the
    /// cache, a few MiB at a time, waiting for the disk tier in between so
    /// that it keeps all of it (see [`BlockCache::insert_object`]).
    pub async fn load(
        &self,
        stats: &Arc<ReadStats>,
        path: &Path,
        size: u64,
        range: Range<u64>,
    ) -> Result<()> {
        // Whole blocks, as many as half the queue holds.
        let step = (DISK_QUEUE_BYTES / 2 / self.queued_per_block(path)).max(1) * self.block;
        let mut at = range.start;
        while at < range.end {
            let end = ((at / self.block) * self.block + step).min(range.end);
            let chunk = at..end;
            self.read(stats, path, size, std::slice::from_ref(&chunk))
                .await?;
            self.cache.storage().wait().await;
            at = end;
        }
        Ok(())
    }

    /// Bytes the cache can keep without evicting what it loaded: the disk
    /// tier's, or the memory tier's without one.
    pub fn room(&self) -> u64 {
        if self.disk_capacity > 0 {
            self.disk_capacity
        } else {
            self.cache.memory().capacity() as u64
        }
    }

    /// The bytes of `ranges` of the object at `path` (`size` bytes long).
    pub async fn read(
        &self,
        stats: &Arc<ReadStats>,
        path: &Path,
        size: u64,
        ranges: &[Range<u64>],
    ) -> Result<Vec<Bytes>> {
        for r in ranges {
            if r.start > r.end || r.end > size {
                return Err(Error::corrupt(
                    path.to_string(),
                    format!("range {r:?} outside an object of {size} bytes"),
                ));
            }
        }
        let mut wanted: Vec<u64> = ranges
            .iter()
            .filter(|r| r.end > r.start)
            .flat_map(|r| r.start / self.block..=(r.end - 1) / self.block)
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let blocks = self.blocks(stats, path, size, &wanted).await?;
        ranges
            .iter()
            .map(|r| assemble(&blocks, self.block, r))
            .collect()
    }

    /// The bytes of each of `ranges` of the object at `path` whose blocks
    /// are all in the memory tier (else `None`): no read, no wait.
    pub fn resident(
        &self,
        stats: &ReadStats,
        path: &Path,
        ranges: &[Range<u64>],
    ) -> Vec<Option<Bytes>> {
        let memory = self.cache.memory();
        // Each block looked up once (and counted once, as a read counts it).
        let mut found: HashMap<u64, Option<Bytes>> = HashMap::new();
        let out = ranges
            .iter()
            .map(|r| {
                if r.end <= r.start {
                    return None;
                }
                let mut blocks = BTreeMap::new();
                for block in r.start / self.block..=(r.end - 1) / self.block {
                    let bytes = found.entry(block).or_insert_with(|| {
                        let key = BlockKeyRef {
                            path: path.as_ref(),
                            block,
                        };
                        memory.get(&key).map(|e| e.value().clone())
                    });
                    blocks.insert(block, bytes.clone()?);
                }
                assemble(&blocks, self.block, r).ok()
            })
            .collect();
        let hits = Hits {
            memory: found.values().filter(|b| b.is_some()).count() as u64,
            disk: 0,
        };
        hits.record(stats);
        out
    }

    /// The cache as the read seam of one query (or warm-up), whose reads
    /// are counted in `stats`.
    pub fn source(self: &Arc<Self>, stats: &Arc<ReadStats>) -> Arc<dyn RangeSource> {
        Arc::new(CachedSource {
            cache: Arc::clone(self),
            stats: Arc::clone(stats),
        })
    }

    async fn blocks(
        &self,
        stats: &Arc<ReadStats>,
        path: &Path,
        size: u64,
        wanted: &[u64],
    ) -> Result<BTreeMap<u64, Bytes>> {
        let key = |block| BlockKey {
            path: path.to_string(),
            block,
        };
        let looked_up =
            futures::future::join_all(wanted.iter().map(|b| self.cache.get(&key(*b)))).await;
        let mut found = BTreeMap::new();
        let mut missing = Vec::new();
        let mut hits = Hits::default();
        for (block, entry) in wanted.iter().zip(looked_up) {
            match entry {
                Ok(Some(entry)) => {
                    hits.count(entry.source());
                    found.insert(*block, entry.value().clone());
                }
                // A disk-tier read error is a miss: the object store has it.
                Ok(None) | Err(_) => missing.push(*block),
            }
        }
        // One GET per run of adjacent missing blocks.
        let mut runs: Vec<Range<u64>> = Vec::new();
        for b in missing {
            match runs.last_mut() {
                Some(run) if run.end == b => run.end = b + 1,
                _ => runs.push(b..b + 1),
            }
        }
        let mut fetches = Vec::new();
        for run in runs {
            let bytes = run.start * self.block..(run.end * self.block).min(size);
            let fetch = self.fetch(stats, path, bytes.clone());
            for block in run {
                let (fetch, waiter) = (fetch.clone(), fetch.clone());
                let offset = (block * self.block - bytes.start) as usize;
                let len = ((block + 1) * self.block).min(size) - block * self.block;
                let entry = self.cache.get_or_fetch(&key(block), move || {
                    fetch.map(move |r| match r {
                        Ok(b) => Ok::<_, anyhow::Error>(b.slice(offset..offset + len as usize)),
                        Err(e) => Err(anyhow::anyhow!(e.to_string())),
                    })
                });
                fetches.push(async move { (block, entry.await, waiter) });
            }
        }
        for (block, entry, fetch) in futures::future::join_all(fetches).await {
            match entry {
                Ok(entry) => {
                    hits.count(entry.source());
                    found.insert(block, entry.value().clone());
                }
                // Our typed error (not found, unavailable) rather than foyer's.
                Err(e) => {
                    hits.record(stats);
                    return Err(match fetch.await {
                        Err(ours) => Error::Shared(ours),
                        Ok(_) => Error::cache("read", format!("{path}: {e}")),
                    });
                }
            }
        }
        hits.record(stats);
        Ok(found)
    }

    fn fetch(&self, stats: &Arc<ReadStats>, path: &Path, range: Range<u64>) -> Fetch {
        let store = Arc::clone(&self.store);
        let stats = Arc::clone(stats);
        let path = path.clone();
        let blocks = (range.end - range.start).div_ceil(self.block);
        async move {
            stats.requests.fetch_add(1, Ordering::Relaxed);
            let bytes = store
                .get_range(&path, range.clone())
                .await
                .map_err(|e| Arc::new(Error::store("get", &path, e)))?;
            if bytes.len() as u64 != range.end - range.start {
                return Err(Arc::new(Error::corrupt(
                    path.to_string(),
                    format!("asked for {range:?}, got {} bytes", bytes.len()),
                )));
            }
            stats.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            stats.fetched_blocks.fetch_add(blocks, Ordering::Relaxed);
            crate::telemetry::cache_blocks("object_store", blocks);
            Ok(bytes)
        }
        .boxed()
        .shared()
    }
}

/// [`BlockCache`] behind the [`RangeSource`] seam, for one query.
#[derive(Debug)]
struct CachedSource {
    cache: Arc<BlockCache>,
    stats: Arc<ReadStats>,
}

impl RangeSource for CachedSource {
    fn read_ranges<'a>(
        &'a self,
        path: &'a Path,
        size: u64,
        ranges: &'a [Range<u64>],
    ) -> BoxFuture<'a, Result<Vec<Bytes>>> {
        self.cache.read(&self.stats, path, size, ranges).boxed()
    }

    fn keeps_reads(&self) -> bool {
        true
    }

    fn resident(&self, path: &Path, ranges: &[Range<u64>]) -> Vec<Option<Bytes>> {
        self.cache.resident(&self.stats, path, ranges)
    }

    fn decoded(&self) -> Option<&DecodedCache> {
        Some(&self.cache.decoded)
    }
}

/// Blocks one read found in each tier, recorded once per read: a metric
/// with labels costs a registry look-up each time it is touched.
#[derive(Default)]
struct Hits {
    memory: u64,
    disk: u64,
}

impl Hits {
    fn count(&mut self, source: Source) {
        match source {
            Source::Memory => self.memory += 1,
            Source::Disk => self.disk += 1,
            // Fetched: counted by the fetch.
            Source::Outer => {}
        }
    }

    fn record(&self, stats: &ReadStats) {
        stats.memory_hits.fetch_add(self.memory, Ordering::Relaxed);
        stats.disk_hits.fetch_add(self.disk, Ordering::Relaxed);
        crate::telemetry::cache_blocks("memory", self.memory);
        crate::telemetry::cache_blocks("disk", self.disk);
    }
}

/// Cuts `range` out of the blocks holding it (a slice when one block does).
fn assemble(blocks: &BTreeMap<u64, Bytes>, block: u64, range: &Range<u64>) -> Result<Bytes> {
    if range.end == range.start {
        return Ok(Bytes::new());
    }
    let (first, last) = (range.start / block, (range.end - 1) / block);
    let part = |b: u64| {
        blocks
            .get(&b)
            .ok_or_else(|| Error::internal("cache", format!("block {b} missing after a read")))
    };
    let cut = |b: u64, bytes: &Bytes| -> Result<Bytes> {
        let start = range.start.max(b * block) - b * block;
        let end = range.end.min((b + 1) * block) - b * block;
        if end as usize > bytes.len() {
            return Err(Error::internal("cache", format!("block {b} is short")));
        }
        Ok(bytes.slice(start as usize..end as usize))
    };
    if first == last {
        return cut(first, part(first)?);
    }
    let mut out = BytesMut::with_capacity((range.end - range.start) as usize);
    for b in first..=last {
        out.extend_from_slice(&cut(b, part(b)?)?);
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::CountingStore;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    /// A cache of 16 MiB in memory (and 64 MiB on disk with `disk`) over
    /// a store holding `data` at `path`.
    async fn cache_over(
        path: &str,
        data: &Bytes,
        disk: Option<&std::path::Path>,
    ) -> (BlockCache, CountingStore) {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        inner
            .put(&Path::from(path), data.clone().into())
            .await
            .unwrap();
        let counting = CountingStore::new(inner);
        let settings = CacheSettings {
            memory_mb: 16,
            disk_mb: if disk.is_some() { 64 } else { 0 },
            disk_dir: disk.map(|d| d.to_path_buf()),
            block_kib: 64,
            decoded_mb: 512,
            auto_warm: false,
        };
        let cache = BlockCache::open(Arc::new(counting.clone()), &settings, "unused".into())
            .await
            .unwrap();
        (cache, counting)
    }

    /// 300,000 bytes at "a/b".
    async fn setup(disk: Option<&std::path::Path>) -> (BlockCache, CountingStore, Bytes) {
        let data: Bytes = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (cache, counting) = cache_over("a/b", &data, disk).await;
        (cache, counting, data)
    }

    #[tokio::test]
    async fn resident_ranges_come_only_from_blocks_in_memory() {
        let (cache, counting, data) = setup(None).await;
        let stats = Arc::new(ReadStats::default());
        let path = Path::from("a/b");
        // Blocks 1 and 2 in memory; 0 and 3 not.
        let blocks_1_and_2 = 70_000..140_000;
        cache
            .read(&stats, &path, data.len() as u64, &[blocks_1_and_2])
            .await
            .unwrap();
        let before = counting.stats().gets;
        let quiet = ReadStats::default();
        let ranges = [
            65_536..65_600,
            131_000..132_000, // across blocks 1 and 2
            65_000..66_000,   // across blocks 0 and 1
            200_000..200_010,
            5..5,
        ];
        let got = cache.resident(&quiet, &path, &ranges);
        let want = [true, true, false, false, false];
        for ((r, b), want) in ranges.iter().zip(&got).zip(want) {
            assert_eq!(b.is_some(), want, "{r:?}");
            if let Some(b) = b {
                assert_eq!(b, &data.slice(r.start as usize..r.end as usize));
            }
        }
        assert_eq!(counting.stats().gets, before, "nothing is read");
        // Blocks 1 and 2, each counted once.
        assert_eq!(quiet.snapshot().memory_hits, 2);
    }

    #[tokio::test]
    async fn ranges_are_fetched_in_runs_once_and_then_served_from_memory() {
        let (cache, counting, data) = setup(None).await;
        let stats = Arc::new(ReadStats::default());
        let path = Path::from("a/b");
        let ranges = [10..20, 70_000..140_000, 299_990..300_000];
        let got = cache
            .read(&stats, &path, data.len() as u64, &ranges)
            .await
            .unwrap();
        for (r, b) in ranges.iter().zip(&got) {
            assert_eq!(b, &data.slice(r.start as usize..r.end as usize));
        }
        // Blocks 0–2 and 4: two runs, two GETs.
        assert_eq!(counting.stats().gets, 2);
        assert_eq!(stats.snapshot().requests, 2);
        let again = Arc::new(ReadStats::default());
        cache
            .read(&again, &path, data.len() as u64, &ranges)
            .await
            .unwrap();
        assert_eq!(counting.stats().gets, 2);
        let s = again.snapshot();
        assert_eq!((s.requests, s.memory_hits), (0, 4));
        let past_the_end = 5..11;
        assert!(
            cache
                .read(&again, &path, 10, std::slice::from_ref(&past_the_end))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn concurrent_reads_of_one_block_share_a_fetch() {
        let (cache, counting, data) = setup(None).await;
        let path = Path::from("a/b");
        let reads = (0..8).map(|_| {
            let stats = Arc::new(ReadStats::default());
            let cache = &cache;
            let path = &path;
            async move {
                let first = 0..1000;
                cache
                    .read(&stats, path, 300_000, std::slice::from_ref(&first))
                    .await
            }
        });
        for got in futures::future::join_all(reads).await {
            assert_eq!(got.unwrap(), vec![data.slice(0..1000)]);
        }
        assert_eq!(counting.stats().gets, 1);
    }

    /// 40 MiB at "big", with a disk tier in `dir`.
    async fn big(dir: &std::path::Path) -> (BlockCache, CountingStore, Bytes) {
        let data: Bytes = (0..40u32 << 20).map(|i| (i % 253) as u8).collect();
        let (cache, counting) = cache_over("big", &data, Some(dir)).await;
        (cache, counting, data)
    }

    /// Reads all of "big"; returns what it fetched from the store.
    async fn fetched_reading_big(cache: &BlockCache, data: &Bytes) -> u64 {
        let stats = Arc::new(ReadStats::default());
        let whole = 0..data.len() as u64;
        let got = cache
            .read(&stats, &Path::from("big"), whole.end, &[whole])
            .await
            .unwrap();
        assert!(got[0] == *data);
        stats.snapshot().misses
    }

    #[tokio::test]
    async fn a_large_object_written_or_loaded_is_kept_whole_by_the_disk_tier() {
        // Written by this process: more than the memory tier holds, more
        // than the disk tier queues at once.
        let dir = tempfile::tempdir().unwrap();
        let (cache, counting, data) = big(dir.path()).await;
        cache.insert_object(&Path::from("big"), &data).await;
        cache.cache.storage().wait().await;
        assert_eq!(fetched_reading_big(&cache, &data).await, 0);
        assert_eq!(counting.stats().gets, 0);
        // Loaded from the store (warm-up): fetched once, then all local.
        let dir = tempfile::tempdir().unwrap();
        let (cache, counting, data) = big(dir.path()).await;
        let stats = Arc::new(ReadStats::default());
        let whole = 0..data.len() as u64;
        cache
            .load(&stats, &Path::from("big"), whole.end, whole)
            .await
            .unwrap();
        let gets = counting.stats().gets;
        assert_eq!(fetched_reading_big(&cache, &data).await, 0);
        assert_eq!(counting.stats().gets, gets);
    }

    async fn read_all(cache: &BlockCache, stats: &Arc<ReadStats>, path: &Path) -> Bytes {
        let whole = 0..300_000;
        let mut out = cache
            .read(stats, path, 300_000, std::slice::from_ref(&whole))
            .await
            .unwrap();
        out.pop().unwrap()
    }

    #[tokio::test]
    async fn a_damaged_disk_entry_is_refetched_never_returned() {
        let dir = tempfile::tempdir().unwrap();
        let path = Path::from("a/b");
        {
            let (cache, _, _) = setup(Some(dir.path())).await;
            let stats = Arc::new(ReadStats::default());
            read_all(&cache, &stats, &path).await;
            cache.close().await.unwrap();
        }
        // Flip one byte inside the cached copy of block 1 (bytes 65536..),
        // found by its content; the entry headers stay intact.
        let block1: Vec<u8> = (65_536..65_536 + 64u32).map(|i| (i % 251) as u8).collect();
        let mut damaged = 0;
        for file in std::fs::read_dir(dir.path()).unwrap() {
            let file = file.unwrap().path();
            let mut bytes = std::fs::read(&file).unwrap();
            if let Some(at) = bytes
                .windows(block1.len())
                .position(|w| w == block1.as_slice())
            {
                bytes[at + 1000] ^= 0xff;
                std::fs::write(&file, bytes).unwrap();
                damaged += 1;
            }
        }
        assert_eq!(damaged, 1, "the disk tier should hold block 1 once");
        let (cache, counting, data) = setup(Some(dir.path())).await;
        let stats = Arc::new(ReadStats::default());
        let got = read_all(&cache, &stats, &path).await;
        assert_eq!(got, data, "the damaged block must not be returned");
        let s = stats.snapshot();
        assert_eq!(
            counting.stats().gets,
            1,
            "only the damaged block is refetched"
        );
        assert_eq!((s.disk_hits, s.misses), (4, 1));
    }
}
