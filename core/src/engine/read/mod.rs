//! The read path: a consistent snapshot (manifest, opened files, log tail),
//! then a vector search or a filtered scan over its row sets, then the rows
//! materialised from memory or fetched through the cache.
//!
//! A query walks: [`snapshot`] → [`search`] (indexed segments: the IVF probe
//! loop; row sets in memory: [`exact`]) or [`scan`] → [`materialize`].

mod exact;
mod indexed;
mod masks;
mod materialize;
mod scan;
mod search;
mod snapshot;
mod sorted;
mod sorted_codes;
mod warm;

pub(crate) use indexed::IndexedSegment;
pub(crate) use masks::FilterMasks;
pub(crate) use scan::{rows_at, scan_matches, visible_rows};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use bytes::Bytes;

use super::Floe;
use super::request::{Query, QueryResult};
use crate::cache::ReadStats;
use crate::catalog::CollectionConfig;
use crate::error::Result;
use crate::filter::Filter;
use crate::index::ProbeOrder;
use crate::index::SearchKnobs;
use crate::log::Lsn;
use crate::manifest::Manifest;
use crate::mvcc::{LsnSet, Newest, RowSetVisibility, Visibility};
use crate::segment::RangeSource;
use crate::vector::QueryVector;

/// One row set a read searches.
pub(crate) enum Source {
    /// Rows in memory: an unindexed segment or the log tail.
    Rows(Arc<RecordBatch>),
    /// An indexed segment: keys in memory (`None`: a vector query reads
    /// its candidates' keys with their rows, see [`Needs::lazy_keys`]), the
    /// columns the read's filter names (see [`Needs::filter`]; `None` for
    /// a vector query whose filter's mask was kept), the rest through the
    /// cache.
    Indexed {
        segment: Arc<IndexedSegment>,
        keys: Option<Arc<RecordBatch>>,
        filtered: Option<Arc<RecordBatch>>,
    },
}

impl Source {
    /// The batch with `id` and `_lsn` of every row, if in memory.
    fn keys(&self) -> Option<&RecordBatch> {
        match self {
            Source::Rows(batch) => Some(batch),
            Source::Indexed { keys, .. } => keys.as_deref(),
        }
    }

    /// [`Source::keys`] for reads that asked for every key.
    fn all_keys(&self) -> Result<&RecordBatch> {
        self.keys()
            .ok_or_else(|| crate::error::Error::internal("read", "keys were not loaded"))
    }

    /// The batch a filter is evaluated on: every row, with (at least) the
    /// columns the read's filter names.
    fn filtered(&self) -> Option<&RecordBatch> {
        match self {
            Source::Rows(batch) => Some(batch),
            Source::Indexed { filtered, .. } => filtered.as_deref(),
        }
    }
}

/// What a read needs loaded besides keys.
#[derive(Clone, Copy, Default)]
pub(crate) struct Needs<'a> {
    /// The filter the read evaluates: the columns it names are loaded,
    /// whole, for every indexed segment (through the decoded cache, for
    /// this read only), but those a vector query's kept mask answers.
    pub filter: Option<&'a Filter>,
    /// Prefetch the code blocks of the clusters this query probes first.
    pub probe: Option<(&'a QueryVector, SearchKnobs)>,
    /// Leave the keys of an indexed segment unloaded when no other row
    /// set's visibility depends on them (every other segment is newer): a
    /// vector query without a filter then reads its candidates' keys with
    /// their rows and checks them there. A cold query skips a whole-segment
    /// read and the per-id map of its rows.
    pub lazy_keys: bool,
}

/// A consistent view for one read.
pub(crate) struct Snapshot {
    pub manifest: Arc<Manifest>,
    /// Segments, then the tail's upserts.
    pub sources: Vec<Source>,
    /// Per source: which of its rows are visible.
    pub row_sets: Vec<RowSetVisibility>,
    pub base: Arc<Newest>,
    pub tail: Arc<Newest>,
    /// See [`Visibility::shadowed`].
    pub shadowed: Arc<LsnSet>,
    pub lsn: Lsn,
    /// Per source: its probe order and the code blocks prefetched for
    /// `Needs::probe` (indexed sources of a vector query only).
    pub probes: Vec<Option<Probe>>,
    /// Where this read's bytes come from (the cache, counting in its stats).
    pub source: Arc<dyn RangeSource>,
    pub stats: Arc<ReadStats>,
    /// The collection's evaluated filters of indexed segments.
    pub filter_masks: Arc<FilterMasks>,
    /// The collection's rows' columns (types for the columns a search
    /// loads itself).
    pub schema: arrow::datatypes::SchemaRef,
}

impl Snapshot {
    pub(crate) fn visibility(&self) -> Visibility<'_> {
        Visibility {
            base: &self.base,
            tail: &self.tail,
            shadowed: &self.shadowed,
        }
    }
}

/// Clusters of an indexed segment by closeness to the query, and the codes
/// of the first `nprobe` of them.
#[derive(Default)]
pub(crate) struct Probe {
    pub order: ProbeOrder,
    pub codes: HashMap<usize, Bytes>,
    /// The norms of `codes` (see `IndexedSegment::code_norms`).
    pub norms: HashMap<usize, Bytes>,
}

impl Floe {
    /// Runs a query against the collection; `check` builds it from the
    /// request, checked against the collection's configuration.
    pub async fn query(
        &self,
        name: &str,
        check: impl Fn(&CollectionConfig) -> Result<Query>,
    ) -> Result<QueryResult> {
        let started = Instant::now();
        let since = crate::clock::now_ms();
        // A fresh process opens its cache while it reads the collection's
        // head and catalog entry.
        let (c, _) = tokio::join!(self.collection_to_read(name), self.cache());
        let c = c?;
        let opened = started.elapsed();
        let (mut c, query) = self.check_on_newest(c, check).await?;
        let query = &query;
        let stats = Arc::new(ReadStats::default());
        if opened > Duration::from_millis(1) {
            stats.record("collection config", opened, 0);
        }
        let needs = Needs {
            filter: query.filter.as_ref(),
            probe: query.vector.as_ref().map(|q| (q, query.knobs)),
            lazy_keys: query.vector.is_some() && query.filter.is_none(),
        };
        let mut snap = self
            .snapshot_current(&mut c, since, query.consistency, needs, &stats)
            .await?;
        let (rows, next_cursor) = match &query.vector {
            Some(q) => match search::search(&snap, query, q).await? {
                Some(rows) => {
                    // Its reads count in stats of their own, not this query's.
                    let source = self.cache().await?.source(&Arc::new(ReadStats::default()));
                    snapshot::load_keys_behind(&c, &snap, source);
                    (rows, None)
                }
                // A candidate of a segment read without its keys was
                // hidden by a newer row: search again with every key.
                None => {
                    let needs = Needs {
                        lazy_keys: false,
                        ..needs
                    };
                    snap = self
                        .snapshot_current(&mut c, since, query.consistency, needs, &stats)
                        .await?;
                    let rows = search::search(&snap, query, q).await?.ok_or_else(|| {
                        crate::error::Error::internal("query", "keys missing after loading them")
                    })?;
                    (rows, None)
                }
            },
            None => scan::scan_page(&snap, query).await?,
        };
        if query.vector.is_some() {
            self.warm_behind(&c, &snap).await;
        }
        let explain = query.explain.then(|| {
            stats.record("total", started.elapsed(), 0);
            stats.snapshot()
        });
        Ok(QueryResult {
            rows,
            next_cursor,
            lsn: snap.lsn,
            explain,
        })
    }
}
