//! Which rows of an indexed segment a filter matches, kept across
//! queries: a segment never changes, so a filter's result on it never
//! does. Repeated filters (a tenant, a category) then cost a lookup
//! instead of a pass over every row of the segment; new ones are found in
//! sorted columns where they can be ([`super::sorted`]).

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use arrow::array::{RecordBatch, UInt32Array};
use arrow::buffer::BooleanBuffer;
use arrow::compute::take_record_batch;
use bytes::Bytes;

use super::sorted::{SortedColumns, Sorting, find, sort_rows};
use crate::error::Result;
use crate::filter::Filter;

/// Bytes of masks kept per collection (a bit a row, plus what a selective
/// mask lists).
const KEPT_BYTES: usize = 32 * 1024 * 1024;

/// Which rows of a segment a filter matches.
#[derive(Debug)]
pub(crate) enum Mask {
    /// A bit a row.
    Bits(BooleanBuffer),
    /// The matching rows, when at most `exact_rows` of the [`FilterMasks`]
    /// match (setting `search.exact_filter_rows`).
    Listed(Selected),
}

impl Mask {
    /// What it holds in memory: a bit a row, or four bytes per listed row
    /// and the listed rows' codes read so far.
    fn bytes(&self) -> usize {
        match self {
            Mask::Bits(bits) => bits.len().div_ceil(8),
            Mask::Listed(s) => {
                s.len() * 4
                    + s.code_bytes.load(Ordering::Relaxed)
                    + s.runs.as_ref().map_or(0, |(_, r)| r.len() * 16)
            }
        }
    }
}

/// How a search learns which rows a filter matches.
#[derive(Debug)]
pub(crate) enum Matches {
    /// A kept mask; `new` when this search made it (a filter asked for
    /// the first time).
    Kept { mask: Arc<Mask>, new: bool },
    /// Too many to list, as sorted columns tell: the filter is evaluated
    /// on the rows of each cluster a search scores (a pass over every row
    /// of the segment would cost more than the search).
    ByCluster,
}

/// The few rows a selective filter matches, and their codes copied
/// together cluster by cluster as searches read them: a later search with
/// the same filter scores a cluster's matching rows from one contiguous
/// block instead of a random read per row in the whole cluster's codes.
#[derive(Debug)]
pub(crate) struct Selected {
    /// Ascending (so each cluster's are one run: rows are stored by
    /// cluster); sorted from `unordered` when first asked.
    rows: OnceLock<Vec<u32>>,
    /// The rows in a sorted column's order, until put in row order: a new
    /// filter scored from codes in that order ([`super::sorted_codes`])
    /// never needs them in row order, a repeated one does.
    unordered: Mutex<Option<Vec<u32>>>,
    count: usize,
    /// The same rows as positions in one sorted column (its attribute's
    /// name and ranges of positions), when a lookup found them exactly:
    /// their codes may be kept in that order ([`super::sorted_codes`]).
    pub runs: Option<(String, Vec<Range<usize>>)>,
    /// Cluster → the codes of its listed rows, in row order.
    codes: Mutex<HashMap<usize, Bytes>>,
    code_bytes: AtomicUsize,
}

impl Selected {
    fn new(rows: Vec<u32>, runs: Option<(String, Vec<Range<usize>>)>) -> Self {
        Self {
            count: rows.len(),
            rows: OnceLock::from(rows),
            unordered: Mutex::new(None),
            runs,
            codes: Mutex::default(),
            code_bytes: AtomicUsize::new(0),
        }
    }

    /// `unordered`, the rows at positions `runs` of one sorted column, put
    /// in row order when first asked.
    fn positions(unordered: Vec<u32>, runs: (String, Vec<Range<usize>>)) -> Self {
        Self {
            count: unordered.len(),
            rows: OnceLock::new(),
            unordered: Mutex::new(Some(unordered)),
            runs: Some(runs),
            codes: Mutex::default(),
            code_bytes: AtomicUsize::new(0),
        }
    }

    /// How many rows are listed.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// The listed rows, ascending.
    pub(crate) fn rows(&self) -> &[u32] {
        self.rows.get_or_init(|| {
            let mut unordered = self.unordered.lock().unwrap_or_else(|p| p.into_inner());
            let mut rows = unordered.take().unwrap_or_default();
            sort_rows(&mut rows);
            rows
        })
    }

    /// The listed rows in `from..to` (one cluster's rows).
    pub(crate) fn within(&self, from: u32, to: u32) -> &[u32] {
        let rows = self.rows();
        let start = rows.partition_point(|r| *r < from);
        let end = rows.partition_point(|r| *r < to);
        &rows[start..end]
    }

    /// The codes kept for each of `clusters` (`None`: not read yet).
    pub(crate) fn codes_of(&self, clusters: &[usize]) -> Vec<Option<Bytes>> {
        let codes = self.codes.lock().unwrap_or_else(|p| p.into_inner());
        clusters.iter().map(|c| codes.get(c).cloned()).collect()
    }

    /// Keeps the codes of each cluster's listed rows, `(cluster, codes)`,
    /// unless a search racing this one kept them first; returns the kept
    /// ones, in order.
    pub(crate) fn keep_codes(&self, codes: impl IntoIterator<Item = (usize, Bytes)>) -> Vec<Bytes> {
        // Collected before the lock is taken: the iterator runs no code
        // under it.
        let codes: Vec<(usize, Bytes)> = codes.into_iter().collect();
        let mut kept = self.codes.lock().unwrap_or_else(|p| p.into_inner());
        codes
            .into_iter()
            .map(|(c, codes)| {
                kept.entry(c)
                    .or_insert_with(|| {
                        self.code_bytes.fetch_add(codes.len(), Ordering::Relaxed);
                        codes
                    })
                    .clone()
            })
            .collect()
    }
}

/// The most recently used masks of one collection's segments.
pub(crate) struct FilterMasks {
    kept: Mutex<Kept>,
    /// Up to this many matching rows, a mask lists them (`selected`).
    exact_rows: usize,
    sorting: Sorting,
}

impl FilterMasks {
    /// Masks listing their rows when at most `exact_rows` match.
    pub(crate) fn new(exact_rows: usize) -> Self {
        Self {
            kept: Mutex::default(),
            exact_rows,
            sorting: Sorting::default(),
        }
    }

    /// Which rows of segment `segment` match `filter`: a kept mask; else
    /// the rows sorted columns find (checked by the filter where they
    /// only bound them), listed when few; else by cluster when sorted
    /// columns tell they are many; else `filter` evaluated on every row
    /// (and its columns sorted meanwhile for the next new filter). Masks
    /// made are kept; no lock is held while making one. Also says which
    /// way it went (a phase of `explain`).
    pub(crate) fn matches(
        &self,
        segment: &str,
        filter: &Filter,
        sorted: &SortedColumns<'_>,
    ) -> Result<(Matches, &'static str)> {
        let key = format!("{filter:?}");
        if let Some(kept) = self.kept_matches(segment, &key) {
            return Ok(kept);
        }
        let mut how = "filter (sorted columns)";
        let mask = match find(filter, &|c| sorted.get(c)) {
            Some(found) if found.count() <= self.exact_rows => {
                match found.single_column() {
                    // (Positions in one column are exactly the matches.)
                    Some((name, column, ranges)) => Mask::Listed(Selected::positions(
                        column.rows_at(ranges),
                        (name.to_string(), ranges.to_vec()),
                    )),
                    None if found.exact() => Mask::Listed(Selected::new(found.rows(), None)),
                    None => {
                        let rows = matching(filter, sorted.columns, found.rows())?;
                        Mask::Listed(Selected::new(rows, None))
                    }
                }
            }
            Some(found) if found.exact() => return Ok((Matches::ByCluster, how)),
            _ => {
                how = "filter (every row)";
                sorted.sort_later(filter, &self.sorting);
                self.mask(filter.evaluate(sorted.columns)?)
            }
        };
        let mask = self.keep(segment, key, mask);
        Ok((Matches::Kept { mask, new: true }, how))
    }

    /// [`FilterMasks::matches`] when a mask is kept for `filter` on
    /// segment `segment` (which then needs no columns).
    pub(crate) fn kept_for(
        &self,
        segment: &str,
        filter: &Filter,
    ) -> Option<(Matches, &'static str)> {
        self.kept_matches(segment, &format!("{filter:?}"))
    }

    fn kept_matches(&self, segment: &str, key: &str) -> Option<(Matches, &'static str)> {
        let mask = self.kept(segment, key)?;
        Some((Matches::Kept { mask, new: false }, "filter (kept)"))
    }

    /// Whether a mask is kept for `filter` on segment `segment` (its
    /// columns are then not needed), leaving the order of use as it is.
    pub(crate) fn holds(&self, segment: &str, filter: &Filter) -> bool {
        let key = format!("{filter:?}");
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.iter().any(|(s, f, _)| s == segment && *f == key)
    }

    /// What is being sorted or arranged now (see [`SortedColumns`]).
    pub(crate) fn sorting(&self) -> &Sorting {
        &self.sorting
    }

    /// The mask kept for `(segment, filter key)`, now the most recently
    /// used.
    fn kept(&self, segment: &str, key: &str) -> Option<Arc<Mask>> {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let at = kept.iter().position(|(s, f, _)| s == segment && f == key)?;
        let hit = kept.remove(at)?;
        let mask = Arc::clone(&hit.2);
        kept.push_back(hit);
        // Kept masks grow as searches keep their rows' codes.
        evict(kept);
        Some(mask)
    }

    /// Listed when few match.
    fn mask(&self, bits: BooleanBuffer) -> Mask {
        if bits.count_set_bits() <= self.exact_rows {
            Mask::Listed(Selected::new(
                bits.set_indices().map(|r| r as u32).collect(),
                None,
            ))
        } else {
            Mask::Bits(bits)
        }
    }

    fn keep(&self, segment: &str, key: String, mask: Mask) -> Arc<Mask> {
        let mask = Arc::new(mask);
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.push_back((segment.to_string(), key, Arc::clone(&mask)));
        evict(kept);
        mask
    }
}

/// Those of `rows` (ascending) that `filter` matches in `columns`.
fn matching(filter: &Filter, columns: &RecordBatch, rows: Vec<u32>) -> Result<Vec<u32>> {
    // Only the filter's own columns are gathered.
    let schema = columns.schema();
    let read: Vec<usize> = filter
        .columns()
        .iter()
        .filter_map(|c| schema.index_of(c).ok())
        .collect();
    let taken = take_record_batch(&columns.project(&read)?, &UInt32Array::from(rows.clone()))?;
    let bits = filter.evaluate(&taken)?;
    Ok(bits.set_indices().map(|i| rows[i]).collect())
}

/// Kept masks, least recently used first: `(segment id, filter, mask)`.
type Kept = VecDeque<(String, String, Arc<Mask>)>;

/// Takes out the least recently used masks while they hold more than
/// `KEPT_BYTES` (the newest stays, whatever its size), then releases the
/// lock and frees them off the query's path.
fn evict(mut kept: MutexGuard<'_, Kept>) {
    let mut bytes: usize = kept.iter().map(|(_, _, m)| m.bytes()).sum();
    let mut evicted = Vec::new();
    while bytes > KEPT_BYTES && kept.len() > 1 {
        if let Some((_, _, old)) = kept.pop_front() {
            // A mask may have grown since the sum (codes are kept without
            // this lock).
            bytes = bytes.saturating_sub(old.bytes());
            evicted.push(old);
        }
    }
    drop(kept);
    drop_later(evicted);
}

/// Frees evicted masks off the query's path (a selective filter's mask
/// holds its codes in hundreds of buffers), on a blocking thread when
/// inside a runtime.
fn drop_later(evicted: Vec<Arc<Mask>>) {
    if evicted.is_empty() {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(move || drop(evicted))),
        Err(_) => drop(evicted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mask matching rows 0..10 of 1,000.
    fn few() -> BooleanBuffer {
        BooleanBuffer::collect_bool(1000, |r| r < 10)
    }

    fn listed(mask: &Mask) -> &Selected {
        match mask {
            Mask::Listed(s) => s,
            Mask::Bits(_) => panic!("10 rows are listed"),
        }
    }

    #[test]
    fn rows_found_in_a_sorted_column_come_in_row_order_when_asked() {
        let rows: Vec<u32> = (0..5000u32).map(|i| (i * 7919) % 5003).collect();
        let all = 0..5000;
        let selected = Selected::positions(rows.clone(), ("a".into(), vec![all]));
        assert_eq!(selected.len(), 5000);
        let mut want = rows;
        want.sort_unstable();
        assert_eq!(selected.rows(), want);
        assert_eq!(
            selected.within(10, 20).len(),
            want.iter().filter(|r| (10..20).contains(*r)).count()
        );
    }

    #[test]
    fn kept_masks_stay_within_their_bytes_as_they_keep_codes() {
        let masks = FilterMasks::new(100);
        assert!(matches!(
            masks.mask(BooleanBuffer::new_set(1000)),
            Mask::Bits(_)
        ));
        let a = masks.keep("s1", "f".into(), masks.mask(few()));
        let selected = listed(&a);
        assert_eq!(selected.rows(), (0..10).collect::<Vec<u32>>());
        assert_eq!(selected.within(3, 7), &[3, 4, 5, 6]);
        // Two searches fill the same cluster: the first copy is kept.
        let keep = |c, byte| {
            let codes = Bytes::from(vec![byte; 20 * 1024 * 1024]);
            selected.keep_codes([(c, codes)]).remove(0)
        };
        let first = keep(0, 1u8);
        let second = keep(0, 2u8);
        assert_eq!((first[0], second[0]), (1, 1));
        let b = masks.keep("s2", "f".into(), masks.mask(few()));
        // A hit on `a` makes it the newest, then `b` grows past the bound:
        // the next use evicts `a` (the least recently used), not `b`.
        assert!(masks.kept("s1", "f").is_some());
        listed(&b).keep_codes([(1, Bytes::from(vec![3u8; 20 * 1024 * 1024]))]);
        assert!(masks.kept("s2", "f").is_some());
        assert!(
            masks.kept("s1", "f").is_none(),
            "the grown masks overran 32 MiB: the older went"
        );
    }
}
