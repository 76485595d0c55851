//! Exact search over row sets held in memory (unindexed segments, the log
//! tail), and the merge of per-source top-k lists.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use arrow::array::{Array, AsArray, RecordBatch, UInt64Array};
use arrow::datatypes::Float32Type;

use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::mvcc::{RowSetVisibility, Visibility, id_and_lsn};
use crate::segment::COL_VECTOR;
use crate::vector::QueryVector;

/// A search result inside one row set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Hit {
    pub(crate) distance: f32,
    /// Which row set (segment) the hit comes from.
    pub(crate) source: usize,
    pub(crate) row: usize,
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
pub(crate) struct SearchParams<'a> {
    pub(crate) query: &'a QueryVector,
    pub(crate) k: usize,
    pub(crate) filter: Option<&'a Filter>,
    pub(crate) visibility: Visibility<'a>,
    /// Per source: which of its rows are visible.
    pub(crate) row_sets: &'a [RowSetVisibility],
}

impl SearchParams<'_> {
    /// The visibility test for rows of `source`.
    pub(crate) fn visible_fn<'b>(
        &'b self,
        source: usize,
        ids: &'b dyn Array,
        lsns: &'b UInt64Array,
    ) -> impl Fn(usize) -> bool + 'b {
        self.visibility
            .row_test(self.row_sets.get(source), ids, lsns)
    }
}

/// Rows scored per call of the distance kernels.
const BLOCK_ROWS: usize = 1024;

/// Brute force over a row set held in memory.
pub(crate) struct ExactSearch<'a>(pub &'a RecordBatch);

impl ExactSearch<'_> {
    /// Top-k visible, matching rows of the set, which is source `source`:
    /// distances a block of contiguous vectors at a time, and the filter
    /// and visibility asked only of rows that would enter the top k.
    pub(crate) fn search(&self, source: usize, params: &SearchParams<'_>) -> Result<Vec<Hit>> {
        let batch = self.0;
        let (ids, lsns) = id_and_lsn(batch)?;
        let vectors = batch
            .column_by_name(COL_VECTOR)
            .and_then(|c| c.as_fixed_size_list_opt())
            .ok_or_else(|| Error::corrupt("row set", "no vector column"))?;
        let dim = vectors.value_length() as usize;
        let values = vectors.values().as_primitive::<Float32Type>().values();
        let first = vectors.offset() * dim;
        let mask = match params.filter {
            Some(f) => Some(f.evaluate(batch)?),
            None => None,
        };
        let visible = params.visible_fn(source, ids, lsns);
        let k = params.k.max(1);
        let mut heap = BinaryHeap::with_capacity(k + 1);
        let mut distances = vec![0f32; BLOCK_ROWS];
        let rows = batch.num_rows();
        let mut start = 0;
        while start < rows {
            let end = (start + BLOCK_ROWS).min(rows);
            let block = &mut distances[..end - start];
            params
                .query
                .distances(&values[first + start * dim..first + end * dim], block);
            for (i, distance) in block.iter().enumerate() {
                let row = start + i;
                let full = heap.len() >= k;
                if full
                    && heap
                        .peek()
                        .is_some_and(|worst: &Hit| *distance >= worst.distance)
                {
                    continue;
                }
                if mask.as_ref().is_some_and(|m| !m.value(row)) || !visible(row) {
                    continue;
                }
                heap.push(Hit {
                    distance: *distance,
                    source,
                    row,
                });
                if heap.len() > k {
                    heap.pop();
                }
            }
            start = end;
        }
        Ok(heap.into_sorted_vec())
    }
}

/// Merges per-segment top-k lists into the global top-k.
pub(crate) fn merge_top_k(lists: Vec<Vec<Hit>>, k: usize) -> Vec<Hit> {
    let mut all: Vec<Hit> = lists.into_iter().flatten().collect();
    all.sort_unstable();
    all.truncate(k);
    all
}
