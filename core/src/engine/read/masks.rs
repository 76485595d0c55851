//! Evaluated filters of indexed segments, reused across queries: a segment
//! never changes, so a filter's result on it never does. Repeated filters
//! (a tenant, a category) then cost a lookup instead of a pass over every
//! row of the segment.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow::buffer::BooleanBuffer;
use bytes::Bytes;

use crate::error::Result;
use crate::filter::Filter;

/// Bytes of masks kept per collection (a bit a row, plus what a selective
/// mask lists).
const KEPT_BYTES: usize = 32 * 1024 * 1024;

/// Which rows of a segment a filter matches.
#[derive(Debug)]
pub(crate) struct Mask {
    pub rows: BooleanBuffer,
    /// The matching rows, when at most `exact_rows` of the [`FilterMasks`]
    /// match (setting `search.exact_filter_rows`).
    pub selected: Option<Selected>,
}

impl Mask {
    /// What it holds in memory: a bit a row, four bytes per listed row,
    /// and the listed rows' codes read so far.
    fn bytes(&self) -> usize {
        self.rows.len().div_ceil(8)
            + self.selected.as_ref().map_or(0, |s| {
                s.rows.len() * 4 + s.code_bytes.load(Ordering::Relaxed)
            })
    }
}

/// The few rows a selective filter matches, and their codes copied
/// together cluster by cluster as searches read them: a later search with
/// the same filter scores a cluster's matching rows from one contiguous
/// block instead of a random read per row in the whole cluster's codes.
#[derive(Debug)]
pub(crate) struct Selected {
    /// Ascending (so each cluster's are one run: rows are stored by cluster).
    pub rows: Vec<u32>,
    /// Cluster → the codes of its listed rows, in row order.
    codes: Mutex<HashMap<usize, Bytes>>,
    code_bytes: AtomicUsize,
}

impl Selected {
    fn new(rows: Vec<u32>) -> Self {
        Self {
            rows,
            codes: Mutex::default(),
            code_bytes: AtomicUsize::new(0),
        }
    }

    /// The listed rows in `from..to` (one cluster's rows).
    pub(crate) fn within(&self, from: u32, to: u32) -> &[u32] {
        let start = self.rows.partition_point(|r| *r < from);
        let end = self.rows.partition_point(|r| *r < to);
        &self.rows[start..end]
    }

    /// The codes kept for each of `clusters` (`None`: not read yet).
    pub(crate) fn codes_of(&self, clusters: &[usize]) -> Vec<Option<Bytes>> {
        let codes = self.codes.lock().unwrap_or_else(|p| p.into_inner());
        clusters.iter().map(|c| codes.get(c).cloned()).collect()
    }

    /// Keeps the codes of cluster `c`'s listed rows, unless a search
    /// racing this one kept them first; returns the kept ones.
    pub(crate) fn keep_codes(&self, c: usize, codes: Bytes) -> Bytes {
        let mut kept = self.codes.lock().unwrap_or_else(|p| p.into_inner());
        kept.entry(c)
            .or_insert_with(|| {
                self.code_bytes.fetch_add(codes.len(), Ordering::Relaxed);
                codes
            })
            .clone()
    }
}

/// The most recently used masks of one collection's segments.
pub(crate) struct FilterMasks {
    /// `(segment id, filter, mask)`, least recently used first.
    kept: Mutex<VecDeque<(String, String, Arc<Mask>)>>,
    /// Up to this many matching rows, a mask lists them (`selected`).
    exact_rows: usize,
}

impl FilterMasks {
    /// Masks listing their rows when at most `exact_rows` match.
    pub(crate) fn new(exact_rows: usize) -> Self {
        Self {
            kept: Mutex::default(),
            exact_rows,
        }
    }

    /// The mask of `filter` on segment `segment`: kept, or `evaluate`d and
    /// kept. The lock is not held while evaluating.
    pub(crate) fn get_or_evaluate(
        &self,
        segment: &str,
        filter: &Filter,
        evaluate: impl FnOnce() -> Result<BooleanBuffer>,
    ) -> Result<Arc<Mask>> {
        let key = format!("{filter:?}");
        {
            let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(at) = kept.iter().position(|(s, f, _)| s == segment && *f == key)
                && let Some(hit) = kept.remove(at)
            {
                let mask = Arc::clone(&hit.2);
                kept.push_back(hit);
                // Kept masks grow as searches keep their rows' codes.
                evict(&mut kept);
                return Ok(mask);
            }
        }
        let rows = evaluate()?;
        let selected = (rows.count_set_bits() <= self.exact_rows)
            .then(|| Selected::new(rows.set_indices().map(|r| r as u32).collect()));
        let mask = Arc::new(Mask { rows, selected });
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.push_back((segment.to_string(), key, Arc::clone(&mask)));
        evict(&mut kept);
        Ok(mask)
    }
}

/// Drops the least recently used masks while they hold more than
/// `KEPT_BYTES` (the newest stays, whatever its size).
fn evict(kept: &mut VecDeque<(String, String, Arc<Mask>)>) {
    let mut bytes: usize = kept.iter().map(|(_, _, m)| m.bytes()).sum();
    while bytes > KEPT_BYTES && kept.len() > 1 {
        if let Some((_, _, old)) = kept.pop_front() {
            bytes -= old.bytes();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{AttributeDef, AttributeType, CollectionConfig, IdType, Metric};

    fn filter(text: &str) -> Filter {
        let config = CollectionConfig {
            name: "t".into(),
            dimension: 2,
            metric: Metric::L2,
            id_type: IdType::U64,
            attributes: vec![AttributeDef {
                name: "year".into(),
                ty: AttributeType::I64,
            }],
            index: Default::default(),
        };
        Filter::parse(text, &config).unwrap()
    }

    /// A mask matching rows 0..10 of 1,000.
    fn few() -> Result<BooleanBuffer> {
        Ok(BooleanBuffer::collect_bool(1000, |r| r < 10))
    }

    #[test]
    fn kept_masks_stay_within_their_bytes_as_they_keep_codes() {
        let masks = FilterMasks::new(100);
        let a = masks
            .get_or_evaluate("s1", &filter("year == 1"), few)
            .unwrap();
        let selected = a.selected.as_ref().expect("10 rows are listed");
        assert_eq!(selected.rows, (0..10).collect::<Vec<u32>>());
        assert_eq!(selected.within(3, 7), &[3, 4, 5, 6]);
        // Two searches fill the same cluster: the first copy is kept.
        let first = selected.keep_codes(0, Bytes::from(vec![1u8; 20 * 1024 * 1024]));
        let second = selected.keep_codes(0, Bytes::from(vec![2u8; 20 * 1024 * 1024]));
        assert_eq!((first[0], second[0]), (1, 1));
        let b = masks
            .get_or_evaluate("s2", &filter("year == 1"), few)
            .unwrap();
        // A hit on `a` makes it the newest, then `b` grows past the bound:
        // the next use evicts `a` (the least recently used), not `b`.
        masks
            .get_or_evaluate("s1", &filter("year == 1"), || panic!("kept"))
            .unwrap();
        let grown = b.selected.as_ref().expect("listed");
        grown.keep_codes(1, Bytes::from(vec![3u8; 20 * 1024 * 1024]));
        masks
            .get_or_evaluate("s2", &filter("year == 1"), || panic!("kept"))
            .unwrap();
        let mut evaluated = false;
        masks
            .get_or_evaluate("s1", &filter("year == 1"), || {
                evaluated = true;
                few()
            })
            .unwrap();
        assert!(evaluated, "the grown masks overran 32 MiB: the older went");
    }
}
