//! Warm-up: what a cold query would fetch first, for every cluster.

use std::sync::Arc;

use super::{Needs, Source};
use crate::cache::ReadStats;
use crate::engine::Floe;
use crate::engine::request::{Consistency, WarmReport};
use crate::engine::state::Collection;
use crate::error::Result;

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
        let mut indexed = 0;
        let mut codes = Vec::new();
        for source in &snap.sources {
            if let Source::Indexed { segment, .. } = source {
                indexed += 1;
                let all: Vec<usize> = (0..segment.header.nlist()).collect();
                let source = &snap.source;
                codes.push(async move {
                    let read = segment.read_codes(source, &all).await?;
                    segment.code_norms(source, &all, &read);
                    Ok::<_, crate::error::Error>(())
                });
            }
        }
        stats
            .phase("codes", futures::future::try_join_all(codes))
            .await?;
        // Then the vectors a re-rank reads, while the cache has room for
        // them beside everything else (half of it): a query whose
        // candidates no query had before then reads them locally.
        let cache = self.cache().await?;
        let mut room = cache.room() / 2;
        let loading = async {
            for source in &snap.sources {
                if let Source::Indexed { segment, .. } = source {
                    let section = segment.header.vectors_section();
                    let bytes = section.end - section.start;
                    if bytes > room {
                        continue;
                    }
                    segment.load_vectors(cache, &stats).await?;
                    room -= bytes;
                }
            }
            Ok::<_, crate::error::Error>(())
        };
        stats.phase("vectors", loading).await?;
        Ok(WarmReport {
            indexed_segments: indexed,
            other_files: snap.sources.len() - indexed + snap.manifest.deletes.len(),
            stats: stats.snapshot(),
            cache: self.cache_footprint(),
        })
    }
}
