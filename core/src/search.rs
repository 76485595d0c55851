//! Exact search over in-memory row sets, and the visibility rule (MVCC).
//!
//! A row `(id, lsn)` is visible iff `lsn` is the newest event for `id`
//! across all segments, delete files and the log tail, and that event is an
//! upsert. Row sets in memory are searched by [`ExactSearch`] (indexed
//! segments by the IVF index, through the cache) and the top-k lists merged.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use arrow::array::{Array, AsArray, RecordBatch, UInt64Array};
use arrow::datatypes::{Float32Type, UInt64Type};

use crate::catalog::Metric;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::segment::{COL_ID, COL_LSN, COL_VECTOR};

/// A fast, seeded hasher: these maps hold an entry per row of a collection
/// and are built on a cold query's path.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The newest event per id: `(lsn, deleted)`.
#[derive(Debug, Default, Clone)]
pub struct Newest {
    u64s: FastMap<u64, (u64, bool)>,
    strings: FastMap<String, (u64, bool)>,
}

impl Newest {
    /// Records an event if it is newer than what is known for the id.
    pub fn observe(&mut self, ids: &dyn Array, row: usize, lsn: u64, deleted: bool) {
        let slot = if let Some(a) = ids.as_any().downcast_ref::<UInt64Array>() {
            self.u64s.entry(a.value(row)).or_insert((0, true))
        } else {
            let s = ids.as_string::<i32>().value(row);
            match self.strings.get_mut(s) {
                Some(slot) => slot,
                None => self.strings.entry(s.to_string()).or_insert((0, true)),
            }
        };
        if lsn >= slot.0 {
            *slot = (lsn, deleted);
        }
    }

    /// Records every row of a batch with an `id` and `_lsn` column.
    pub fn observe_rows(&mut self, batch: &RecordBatch, deleted: bool) -> Result<()> {
        let (ids, lsns) = id_and_lsn(batch)?;
        if ids.as_any().is::<UInt64Array>() {
            self.u64s.reserve(batch.num_rows());
        } else {
            self.strings.reserve(batch.num_rows());
        }
        for row in 0..batch.num_rows() {
            self.observe(ids, row, lsns.value(row), deleted);
        }
        Ok(())
    }

    pub fn get(&self, ids: &dyn Array, row: usize) -> Option<(u64, bool)> {
        if let Some(a) = ids.as_any().downcast_ref::<UInt64Array>() {
            self.u64s.get(&a.value(row)).copied()
        } else {
            self.strings.get(ids.as_string::<i32>().value(row)).copied()
        }
    }

    pub fn len(&self) -> usize {
        self.u64s.len() + self.strings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ids whose newest event is an upsert.
    pub fn live_count(&self) -> usize {
        self.u64s
            .values()
            .chain(self.strings.values())
            .filter(|(_, deleted)| !deleted)
            .count()
    }

    /// Visits every (id column value, event) pair: used to overlay a tail.
    fn events(&self) -> impl Iterator<Item = (IdRef<'_>, (u64, bool))> {
        self.u64s
            .iter()
            .map(|(k, v)| (IdRef::U64(*k), *v))
            .chain(self.strings.iter().map(|(k, v)| (IdRef::Str(k), *v)))
    }

    fn get_ref(&self, id: IdRef<'_>) -> Option<(u64, bool)> {
        match id {
            IdRef::U64(v) => self.u64s.get(&v).copied(),
            IdRef::Str(s) => self.strings.get(s).copied(),
        }
    }
}

#[derive(Clone, Copy)]
enum IdRef<'a> {
    U64(u64),
    Str(&'a str),
}

/// The visibility of rows: the segments' newest events, overlaid by the
/// (small, per-query) log tail's.
#[derive(Debug, Clone, Copy)]
pub struct Visibility<'a> {
    pub base: &'a Newest,
    pub tail: &'a Newest,
}

impl Visibility<'_> {
    pub fn newest(&self, ids: &dyn Array, row: usize) -> Option<(u64, bool)> {
        self.tail.get(ids, row).or_else(|| self.base.get(ids, row))
    }

    pub fn is_visible(&self, ids: &dyn Array, row: usize, lsn: u64) -> bool {
        self.newest(ids, row) == Some((lsn, false))
    }

    /// Number of live ids.
    pub fn live_count(&self) -> usize {
        let mut count = self.base.live_count() as i64;
        for (id, (_, deleted)) in self.tail.events() {
            if let Some((_, false)) = self.base.get_ref(id) {
                count -= 1;
            }
            if !deleted {
                count += 1;
            }
        }
        count.max(0) as usize
    }
}

pub fn id_and_lsn(batch: &RecordBatch) -> Result<(&dyn Array, &UInt64Array)> {
    let ids = batch
        .column_by_name(COL_ID)
        .ok_or_else(|| Error::corrupt("row set", "no id column"))?;
    let lsns = batch
        .column_by_name(COL_LSN)
        .and_then(|c| c.as_primitive_opt::<UInt64Type>())
        .ok_or_else(|| Error::corrupt("row set", "no u64 _lsn column"))?;
    Ok((ids.as_ref(), lsns))
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = dot(v, v).sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// A query vector prepared for a metric (normalised for cosine).
#[derive(Debug, Clone)]
pub struct QueryVector {
    pub values: Vec<f32>,
    pub metric: Metric,
}

impl QueryVector {
    pub fn new(mut values: Vec<f32>, metric: Metric) -> Self {
        if metric == Metric::Cosine {
            normalize(&mut values);
        }
        Self { values, metric }
    }

    /// Distance to `v`: smaller is closer for every metric.
    pub fn distance(&self, v: &[f32]) -> f32 {
        match self.metric {
            Metric::L2 => l2_squared(&self.values, v),
            Metric::Ip => -dot(&self.values, v),
            Metric::Cosine => {
                let norm = dot(v, v).sqrt();
                if norm == 0.0 {
                    1.0
                } else {
                    1.0 - dot(&self.values, v) / norm
                }
            }
        }
    }
}

pub use crate::kernels::{dot, l2_squared};

/// A search result inside one row set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub distance: f32,
    /// Which row set (segment) the hit comes from.
    pub source: usize,
    pub row: usize,
}

impl Eq for Hit {}

impl Ord for Hit {
    /// By distance, then source and row, so results are deterministic.
    fn cmp(&self, other: &Self) -> Ordering {
        self.distance
            .total_cmp(&other.distance)
            .then(self.source.cmp(&other.source))
            .then(self.row.cmp(&other.row))
    }
}

impl PartialOrd for Hit {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// What a segment search needs to know.
pub struct SearchParams<'a> {
    pub query: &'a QueryVector,
    pub k: usize,
    pub filter: Option<&'a Filter>,
    pub visibility: Visibility<'a>,
    /// Per source: no row of it is hidden by the segments and delete files,
    /// so only the log tail can hide its rows.
    pub clean: &'a [bool],
}

impl SearchParams<'_> {
    /// The visibility test for rows of `source`, as cheap as it can be made:
    /// none at all for a clean source while the tail is empty.
    pub fn visible_fn<'b>(
        &'b self,
        source: usize,
        ids: &'b dyn Array,
        lsns: &'b UInt64Array,
    ) -> impl Fn(usize) -> bool + 'b {
        let clean = self.clean.get(source).copied().unwrap_or(false);
        let tail_empty = self.visibility.tail.is_empty();
        move |row| {
            if clean {
                tail_empty || self.visibility.tail.get(ids, row).is_none()
            } else {
                self.visibility.is_visible(ids, row, lsns.value(row))
            }
        }
    }
}

/// Brute force over a row set held in memory.
pub struct ExactSearch<'a>(pub &'a RecordBatch);

impl ExactSearch<'_> {
    /// Top-k visible, matching rows of the set, which is source `source`.
    pub fn search(&self, source: usize, params: &SearchParams<'_>) -> Result<Vec<Hit>> {
        let batch = self.0;
        let (ids, lsns) = id_and_lsn(batch)?;
        let vectors = batch
            .column_by_name(COL_VECTOR)
            .and_then(|c| c.as_fixed_size_list_opt())
            .ok_or_else(|| Error::corrupt("row set", "no vector column"))?;
        let dim = vectors.value_length() as usize;
        let values = vectors.values().as_primitive::<Float32Type>().values();
        let mask = match params.filter {
            Some(f) => Some(f.evaluate(batch)?),
            None => None,
        };
        let mut heap = BinaryHeap::with_capacity(params.k + 1);
        for row in 0..batch.num_rows() {
            if mask.as_ref().is_some_and(|m| !m[row])
                || !params.visibility.is_visible(ids, row, lsns.value(row))
            {
                continue;
            }
            let offset = (vectors.offset() + row) * dim;
            let distance = params.query.distance(&values[offset..offset + dim]);
            let hit = Hit {
                distance,
                source,
                row,
            };
            if heap.len() < params.k {
                heap.push(hit);
            } else if heap.peek().is_some_and(|worst| hit < *worst) {
                heap.pop();
                heap.push(hit);
            }
        }
        Ok(heap.into_sorted_vec())
    }
}

/// Merges per-segment top-k lists into the global top-k.
pub fn merge_top_k(lists: Vec<Vec<Hit>>, k: usize) -> Vec<Hit> {
    let mut all: Vec<Hit> = lists.into_iter().flatten().collect();
    all.sort_unstable();
    all.truncate(k);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_match_scalar_reference() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let dot_ref: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let l2_ref: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
        assert!((dot(&a, &b) - dot_ref).abs() < 1e-4);
        assert!((l2_squared(&a, &b) - l2_ref).abs() < 1e-4);
        let q = QueryVector::new(a.clone(), Metric::Cosine);
        let cos_ref = dot_ref / (dot(&a, &a).sqrt() * dot(&b, &b).sqrt());
        assert!((q.distance(&b) - (1.0 - cos_ref)).abs() < 1e-5);
        assert_eq!(
            QueryVector::new(a.clone(), Metric::Ip).distance(&b),
            -dot(&a, &b)
        );
    }
}
