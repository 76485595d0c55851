//! The one maintenance policy: what a round does to a collection, in which
//! order. `floe serve`'s background indexer runs it on a timer; the indexer
//! Lambda runs it on its schedule.

use std::sync::Arc;

use serde::Serialize;

use super::{CompactReport, GC_GRACE, IndexReport};
use crate::engine::Floe;
use crate::engine::request::FlushReport;
use crate::error::{Error, Result};
use crate::import::job::ImportStatus;

/// What one round did to one collection.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RoundReport {
    /// The flush, if one was due.
    pub flushed: Option<FlushReport>,
    /// Indexes built for segments whose event was lost (thorough rounds).
    pub indexed: Vec<IndexReport>,
    /// The compaction, if one was due.
    pub compacted: Option<CompactReport>,
    /// Objects garbage-collected (thorough rounds).
    pub garbage_deleted: usize,
}

/// Background rounds between thorough ones (index safety net and gc).
const THOROUGH_EVERY: u64 = 120;

/// How old an incarnation no catalog entry names must be before the sweep
/// removes its log and files: far longer than any create takes between
/// making its log and writing its catalog entry.
pub const ORPHAN_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

impl Floe {
    /// One round for one collection: flush what is due; in a `thorough`
    /// round, build the indexes still missing from segments sealed before
    /// it (the safety net for lost object-created events); compact what is
    /// due (the segments it seals are indexed by their own events, in
    /// parallel with the round); in a `thorough` round, collect garbage.
    pub async fn maintain(&self, name: &str, thorough: bool) -> Result<RoundReport> {
        let mut report = RoundReport::default();
        if let Some(r) = self.flush_if_due(name).await? {
            tracing::info!(collection = %name, checkpoint = r.checkpoint_lsn, rows = r.rows_flushed, "flushed");
            report.flushed = Some(r);
        }
        if thorough {
            report.indexed = self.index_missing(name).await?;
        }
        if let Some(r) = self.compact_if_due(name).await? {
            tracing::info!(collection = %name, rows_in = r.rows_in, rows_out = r.rows_out, sealed = r.sealed.len(), "compacted");
            report.compacted = Some(r);
        }
        if thorough {
            report.garbage_deleted = self.gc(name, GC_GRACE).await?.deleted;
        }
        Ok(report)
    }

    /// One round over every collection; failures are logged, and a
    /// collection dropped meanwhile is skipped.
    pub async fn maintain_all(self: &Arc<Self>, thorough: bool) {
        let names = match self.list_collections().await {
            Ok(names) => names,
            Err(e) => {
                tracing::warn!(error = %e, "indexer: listing collections failed");
                return;
            }
        };
        for name in &names {
            if let Err(e) = self.maintain(name, thorough).await
                && !matches!(e, Error::CollectionNotFound(_))
            {
                tracing::warn!(collection = %name, error = %e, "indexer round failed");
            }
        }
        if thorough {
            self.resume_all_imports(&names).await;
        }
        if thorough {
            match self.sweep_orphans(ORPHAN_GRACE).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(incarnations = n, "swept orphaned logs and files"),
                Err(e) => tracing::warn!(error = %e, "orphan sweep failed"),
            }
        }
    }

    /// Resumes the import jobs of `names` that lost their runner (in
    /// `floe serve` each in a task of its own; elsewhere here, one after
    /// the other). Failures are logged: a job is tried again next time.
    pub async fn resume_all_imports(self: &Arc<Self>, names: &[String]) -> Vec<ImportStatus> {
        let mut done = Vec::new();
        for name in names {
            match self.resume_imports(name).await {
                Ok(statuses) => done.extend(statuses),
                Err(Error::CollectionNotFound(_)) => {}
                Err(e) => tracing::warn!(collection = %name, error = %e, "resuming imports failed"),
            }
        }
        done
    }

    /// Runs the indexer in this process until `stop` resolves: a round on
    /// every tick (a thorough one every [`THOROUGH_EVERY`] ticks), and an
    /// index build for every object-created event of a new sealed file.
    /// `stop` is only heeded between rounds and builds, so a flush or
    /// compaction under way finishes (every step of one is safe to
    /// interrupt anyway: files are immutable and the manifest commit is
    /// atomic, so stopping cleanly only saves redoing work).
    pub fn spawn_background_indexer(
        self: &Arc<Self>,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let floe = Arc::clone(self);
        let mut events = floe.subscribe_object_events();
        tokio::spawn(async move {
            tokio::pin!(stop);
            let mut tick = tokio::time::interval(floe.settings.flush.poll_interval());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut rounds: u64 = 0;
            loop {
                tokio::select! {
                    biased;
                    () = &mut stop => break,
                    Some(key) = events.recv() => {
                        // An import runs beside the rounds, not in them.
                        if let Some((name, job)) = import_job_key(&key) {
                            let floe = Arc::clone(&floe);
                            tokio::spawn(async move {
                                if let Err(e) = floe.run_import(&name, &job).await {
                                    tracing::warn!(collection = %name, %job, error = %e, "import paused; a round will resume it");
                                }
                            });
                            continue;
                        }
                        match floe.on_object_created(&key).await {
                            Ok(Some(r)) => tracing::info!(segment = %r.segment, rows = r.rows, ms = r.build_ms, "index built"),
                            Ok(None) => {}
                            Err(e) => tracing::warn!(%key, error = %e, "index build failed"),
                        }
                    }
                    _ = tick.tick() => {
                        rounds += 1;
                        floe.maintain_all(rounds.is_multiple_of(THOROUGH_EVERY)).await;
                    }
                }
            }
        })
    }
}

/// `(collection, job)` of an import job's `job.json` key.
fn import_job_key(key: &str) -> Option<(String, String)> {
    match crate::storage::parse_key(key) {
        Some(crate::storage::CollectionKey {
            collection,
            file: crate::storage::CollectionFile::ImportJob(job),
            ..
        }) => Some((collection, job)),
        _ => None,
    }
}
