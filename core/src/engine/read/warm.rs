//! Warm-up: what a cold query would fetch first, for every cluster —
//! asked for (`POST …/warm`), or behind the first vector query that opens
//! an indexed segment (`cache.auto_warm`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use super::{IndexedSegment, Needs, Snapshot, Source};
use crate::cache::{BlockCache, ReadStats};
use crate::engine::Floe;
use crate::engine::request::{Consistency, WarmReport};
use crate::engine::state::Collection;
use crate::error::Result;

/// Codes read per step of a warm-up: bounded, so a segment's warm-up
/// neither holds all its codes at once nor keeps a runtime thread busy
/// computing their norms for long.
const CODES_PER_STEP: u64 = 32 << 20;

/// Where an indexed segment's warm-up stands in this process.
#[derive(Debug, Default)]
pub(crate) struct WarmState(AtomicU8);

const COLD: u8 = 0;
const WARMING: u8 = 1;
const WARM: u8 = 2;

impl WarmState {
    /// Claims the segment's warm-up: false if it ran or is running. Asked
    /// after every vector query: a read first, so that queries on other
    /// cores do not take the flag's cache line once it is settled.
    fn claim(&self) -> bool {
        self.0.load(Ordering::Acquire) == COLD
            && self
                .0
                .compare_exchange(COLD, WARMING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    fn set(&self, state: u8) {
        self.0.store(state, Ordering::Release);
    }

    /// Whether a warm-up of the segment finished (what it loaded may
    /// have been evicted since).
    pub(crate) fn is_warm(&self) -> bool {
        self.0.load(Ordering::Acquire) == WARM
    }
}

impl Floe {
    /// Loads index headers, data-file footers, keys, and every code block
    /// of every indexed segment; then their full-precision vectors while
    /// they take at most half of the cache (its disk tier, or its memory
    /// tier without one).
    pub async fn warm(&self, name: &str) -> Result<WarmReport> {
        self.on_current(name, |c| async move { self.warm_collection(&c).await })
            .await
    }

    async fn warm_collection(&self, c: &Collection) -> Result<WarmReport> {
        let stats = Arc::new(ReadStats::default());
        // The newest manifest, not the eventual view (re-checked at most
        // once a second): warming right after an index build must see it.
        // Only the manifest: warm-up has no use for the log tail.
        self.refresh_manifest(c, true).await?;
        let snap = self
            .snapshot(c, Consistency::Eventual, Needs::default(), &stats)
            .await?;
        let segments: Vec<Arc<IndexedSegment>> = indexed(&snap).cloned().collect();
        let cache = self.cache().await?;
        warm_segments(&segments, cache, &snap.source, &stats).await?;
        for segment in &segments {
            segment.warm.set(WARM);
        }
        Ok(WarmReport {
            indexed_segments: segments.len(),
            other_files: snap.sources.len() - segments.len() + snap.manifest.deletes.len(),
            stats: stats.snapshot(),
            cache: self.cache_footprint(),
        })
    }

    /// Warms, in the background, the indexed segments of `snap` no
    /// warm-up has claimed yet: one warm-up at a time per process, so a
    /// server opening many collections loads them in turn.
    pub(super) async fn warm_behind(&self, c: &Collection, snap: &Snapshot) {
        if !self.settings.cache.auto_warm {
            return;
        }
        let claimed: Vec<Arc<IndexedSegment>> =
            indexed(snap).filter(|s| s.warm.claim()).cloned().collect();
        if claimed.is_empty() {
            return;
        }
        let Ok(cache) = self.cache().await else {
            for segment in &claimed {
                segment.warm.set(COLD);
            }
            return;
        };
        let cache = Arc::clone(cache);
        let turn = Arc::clone(&self.warm_turn);
        let name = c.config.name.clone();
        let task = tokio::spawn(async move {
            let Ok(_turn) = turn.acquire_owned().await else {
                return;
            };
            // Its reads count in stats of their own, not a query's.
            let stats = Arc::new(ReadStats::default());
            let source = cache.source(&stats);
            let warmed = warm_segments(&claimed, &cache, &source, &stats).await;
            // A failed warm-up is tried again behind a later query.
            let state = if warmed.is_ok() { WARM } else { COLD };
            for segment in &claimed {
                segment.warm.set(state);
            }
            match warmed {
                Ok(()) => {
                    tracing::debug!(collection = %name, segments = claimed.len(), stats = ?stats.snapshot(), "warmed behind a query")
                }
                Err(e) => {
                    tracing::warn!(collection = %name, error = %e, "warm-up behind a query failed")
                }
            }
        });
        let mut tasks = self.warm_tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(task.abort_handle());
    }
}

impl Snapshot {
    /// Its indexed segments this process has warmed.
    pub(crate) fn warm_segments(&self) -> usize {
        indexed(self).filter(|s| s.warm.is_warm()).count()
    }
}

/// The indexed segments of `snap`.
fn indexed(snap: &Snapshot) -> impl Iterator<Item = &Arc<IndexedSegment>> {
    snap.sources.iter().filter_map(|s| match s {
        Source::Indexed { segment, .. } => Some(segment),
        _ => None,
    })
}

/// Every cluster's codes (and their norms) of `segments`, then their
/// vectors while those take at most half of the cache.
async fn warm_segments(
    segments: &[Arc<IndexedSegment>],
    cache: &BlockCache,
    source: &Arc<dyn crate::segment::RangeSource>,
    stats: &Arc<ReadStats>,
) -> Result<()> {
    let codes = segments.iter().map(|segment| async move {
        let nlist = segment.header.nlist();
        let mut from = 0;
        while from < nlist {
            let mut bytes = 0;
            let mut to = from;
            while to < nlist && (to == from || bytes < CODES_PER_STEP) {
                let range = segment.header.codes_range(to);
                bytes += range.end - range.start;
                to += 1;
            }
            let step: Vec<usize> = (from..to).collect();
            let read = segment.read_codes(source, &step).await?;
            segment.code_norms(source, &step, &read);
            from = to;
        }
        Ok::<_, crate::error::Error>(())
    });
    stats
        .phase("codes", futures::future::try_join_all(codes))
        .await?;
    // Then the vectors a re-rank reads, while the cache has room for
    // them beside everything else (half of it): a query whose candidates
    // no query had before then reads them locally.
    let mut room = cache.room() / 2;
    let loading = async {
        for segment in segments {
            let section = segment.header.vectors_section();
            let bytes = section.end - section.start;
            if bytes > room {
                continue;
            }
            segment.load_vectors(cache, stats).await?;
            room -= bytes;
        }
        Ok::<_, crate::error::Error>(())
    };
    stats.phase("vectors", loading).await
}
