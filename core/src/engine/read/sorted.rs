//! Sorted columns: the rows of an indexed segment ordered by one
//! attribute's value, so the rows a comparison, an `in` list or a bare
//! bool can match are a binary search away instead of a pass over every
//! row. A filter asked for the first time then finds its rows by lookups
//! ([`find`]); the filter's own rule ([`Filter::evaluate`]) still decides
//! every row where the lookups only bound them.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StructArray, UInt32Array};
use arrow::compute::{SortOptions, sort_to_indices, take};
use arrow::datatypes::{DataType, Field, Float64Type};

use super::IndexedSegment;
use super::sorted_codes::{self, SortedCodes};
use crate::cache::{Decoded, DecodedKey, Part};
use crate::error::{Error, Result};
use crate::filter::{CmpOp, Filter, Literal, compare};
use crate::segment::RangeSource;

/// The sorted columns of one indexed segment: kept in the decoded cache
/// (bounded, evicting), sorted off the query path when a filter needed
/// them and found none.
pub(crate) struct SortedColumns<'a> {
    pub source: &'a Arc<dyn RangeSource>,
    pub segment: &'a Arc<IndexedSegment>,
    /// Every row of the columns the filter names.
    pub columns: &'a Arc<RecordBatch>,
}

/// Columns being sorted now, and sorted columns whose codes are being
/// arranged ([`sorted_codes`]), by their decoded-cache key.
pub(crate) type Sorting = Arc<Mutex<HashSet<DecodedKey>>>;

impl SortedColumns<'_> {
    fn key(&self, name: &str) -> Option<DecodedKey> {
        Some(self.segment.data_key(Part::Sorted {
            column: self.field(name)? as u32,
        }))
    }

    /// The data file's field index of attribute `name`.
    fn field(&self, name: &str) -> Option<usize> {
        self.segment.data.schema().index_of(name).ok()
    }

    /// The codes of `ranges` of the positions of column `name` sorted,
    /// in that order, if kept (see [`sorted_codes`]).
    pub(crate) fn codes(&self, name: &str, ranges: &[Range<usize>]) -> Option<SortedCodes> {
        SortedCodes::get(
            self.source,
            self.segment,
            self.field(name)?,
            self.get(name)?,
            ranges,
        )
    }

    /// Arranges, on a blocking thread, the codes of column `name` sorted
    /// when they may be kept and are not (or not all) kept, nor being
    /// arranged.
    pub(crate) fn codes_later(&self, name: &str, sorting: &Sorting) {
        let (Some(field), Some(column), Some(key)) =
            (self.field(name), self.get(name), self.key(name))
        else {
            return;
        };
        // (A process not warmed keeps few clusters' codes: a first look
        // spares it a thread that would find one missing.)
        let last = self.segment.header.nlist().saturating_sub(1);
        if [0, last]
            .iter()
            .any(|c| self.segment.decoded_codes(self.source, *c).is_none())
            || !sorted_codes::wanted(self.source, self.segment, field, &column)
        {
            return;
        }
        let Some(arranging) = InFlight::start(sorting, codes_key(self.segment, key.part)) else {
            return;
        };
        let (source, segment) = (Arc::clone(self.source), Arc::clone(self.segment));
        tokio::task::spawn_blocking(move || {
            // No longer in flight however this ends.
            let _done = arranging;
            sorted_codes::build(&source, &segment, field, &column);
        });
    }

    /// Column `name` sorted, if kept.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<SortedColumn>> {
        match self.source.decoded()?.get(&self.key(name)?)? {
            Decoded::Array(array) => SortedColumn::from_array(&array).map(Arc::new),
            Decoded::Bytes(_) => None,
        }
    }

    /// Sorts, on a blocking thread, the columns `filter` would look up
    /// that are not kept yet (and not being sorted, and small enough to
    /// be kept): a later filter over them is a lookup.
    pub(crate) fn sort_later(&self, filter: &Filter, sorting: &Sorting) {
        let Some(decoded) = self.source.decoded() else {
            return;
        };
        let mut names = Vec::new();
        lookup_columns(filter, &mut names);
        for name in names {
            let (Some(key), Some(column)) = (self.key(&name), self.columns.column_by_name(&name))
            else {
                continue;
            };
            let bytes = column.get_array_memory_size() + 4 * column.len();
            if !SortedColumn::sortable(column.data_type())
                || !decoded.fits(bytes)
                || decoded.get(&key).is_some()
            {
                continue;
            }
            let Some(sorting_it) = InFlight::start(sorting, key.clone()) else {
                continue;
            };
            let (source, column, segment) = (
                Arc::clone(self.source),
                Arc::clone(column),
                Arc::clone(self.segment),
            );
            let field = self.field(&name);
            tokio::task::spawn_blocking(move || {
                // No longer in flight however this ends (a panic too).
                let _done = sorting_it;
                match SortedColumn::build(column.as_ref()) {
                    Ok(sorted) => {
                        if let Some(decoded) = source.decoded() {
                            decoded.insert(key.clone(), Decoded::Array(sorted.to_array()));
                        }
                        // Its codes too, while the clusters' are at hand
                        // (unless a search started arranging them).
                        if let Some(field) = field
                            && sorted_codes::wanted(&source, &segment, field, &sorted)
                            && let Some(_arranging) =
                                InFlight::start(&_done.sorting, codes_key(&segment, key.part))
                        {
                            sorted_codes::build(&source, &segment, field, &sorted);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "sorting a column for filters failed"),
                }
            });
        }
    }
}

/// A column being sorted (or its codes arranged); dropped when done.
struct InFlight {
    sorting: Sorting,
    key: DecodedKey,
}

impl InFlight {
    /// Marks `key` in flight; `None` when it already is.
    fn start(sorting: &Sorting, key: DecodedKey) -> Option<InFlight> {
        let fresh = sorting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone());
        fresh.then(|| InFlight {
            sorting: Arc::clone(sorting),
            key,
        })
    }
}

/// The in-flight mark of arranging the codes of a sorted column (`part`,
/// its [`Part::Sorted`]): under the index file's name, as the sort is
/// under the data file's.
fn codes_key(segment: &IndexedSegment, part: Part) -> DecodedKey {
    segment.decoded_key(part)
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.sorting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

/// One column's comparable values (not null, not NaN: those match no
/// comparison), ascending, and the row of each.
#[derive(Debug, Clone)]
pub(crate) struct SortedColumn {
    values: ArrayRef,
    rows: UInt32Array,
}

const VALUE: &str = "value";
const ROW: &str = "row";

impl SortedColumn {
    /// Whether a column of this type can be sorted for lookups.
    pub(crate) fn sortable(ty: &DataType) -> bool {
        matches!(
            ty,
            DataType::Int64
                | DataType::UInt64
                | DataType::Float64
                | DataType::Utf8
                | DataType::Boolean
        )
    }

    /// Sorts `column` (one value a row).
    pub(crate) fn build(column: &dyn Array) -> Result<SortedColumn> {
        if !Self::sortable(column.data_type()) {
            return Err(Error::internal(
                "sorted column",
                format!("cannot sort {}", column.data_type()),
            ));
        }
        let options = SortOptions {
            descending: false,
            nulls_first: false,
        };
        let order = sort_to_indices(column, Some(options), None)?;
        let order = order.slice(0, column.len() - column.null_count());
        let values = take(column, &order, None)?;
        // Equal values in row order, so every sort of a column puts each
        // row at the same position (codes kept by position rely on it).
        let order = ties_by_row(values.as_ref(), order)?;
        // Floats sort in IEEE total order: NaNs of either sign sit at the
        // two ends, and no comparison matches them.
        let (start, end) = match values.data_type() {
            DataType::Float64 => {
                let v = values.as_primitive::<Float64Type>().values();
                let start = v.iter().take_while(|x| x.is_nan()).count();
                let end = v.len() - v[start..].iter().rev().take_while(|x| x.is_nan()).count();
                (start, end)
            }
            _ => (0, values.len()),
        };
        Ok(SortedColumn {
            values: values.slice(start, end - start),
            rows: order.slice(start, end - start),
        })
    }

    /// Rows with a comparable value.
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    /// The row at each position.
    pub(crate) fn rows(&self) -> &[u32] {
        self.rows.values()
    }

    /// The rows at `ranges` of positions, in the column's order (not row
    /// order), copied out.
    pub(crate) fn rows_at(&self, ranges: &[Range<usize>]) -> Vec<u32> {
        ranges
            .iter()
            .flat_map(|r| self.rows()[r.clone()].iter().copied())
            .collect()
    }

    /// Whether both are the same column (one kept array).
    fn same(&self, other: &SortedColumn) -> bool {
        Arc::ptr_eq(&self.values, &other.values)
    }

    /// As one array, to keep in the decoded cache.
    pub(crate) fn to_array(&self) -> ArrayRef {
        Arc::new(StructArray::from(vec![
            (
                Arc::new(Field::new(VALUE, self.values.data_type().clone(), false)),
                Arc::clone(&self.values),
            ),
            (
                Arc::new(Field::new(ROW, DataType::UInt32, false)),
                Arc::new(self.rows.clone()) as ArrayRef,
            ),
        ]))
    }

    /// Back from [`SortedColumn::to_array`] (`None`: another array).
    pub(crate) fn from_array(array: &ArrayRef) -> Option<SortedColumn> {
        let parts = array.as_struct_opt()?;
        Some(SortedColumn {
            values: Arc::clone(parts.column_by_name(VALUE)?),
            rows: parts.column_by_name(ROW)?.as_primitive_opt()?.clone(),
        })
    }

    /// Positions (in sorted order) whose value `op lit` holds; `None` when
    /// the literal does not compare with this column's values.
    fn positions(&self, op: CmpOp, lit: &Literal) -> Option<Vec<Range<usize>>> {
        let n = self.values.len();
        let order = |i: usize| compare(self.values.as_ref(), i, lit);
        if n > 0 {
            order(0)?;
        }
        // Values ascend, so "less than lit" and "not greater" are prefixes.
        let below = partition_point(n, |i| order(i) == Some(std::cmp::Ordering::Less));
        let upto = partition_point(n, |i| order(i) != Some(std::cmp::Ordering::Greater));
        let one = |r: Range<usize>| Some(std::iter::once(r).collect());
        match op {
            CmpOp::Eq => one(below..upto),
            CmpOp::Ne => Some(vec![0..below, upto..n]),
            CmpOp::Lt => one(0..below),
            CmpOp::Le => one(0..upto),
            CmpOp::Gt => one(upto..n),
            CmpOp::Ge => one(below..n),
        }
    }
}

/// `order` with each run of equal `values` (sorted) in ascending row order.
/// Only rows move, not values: right because `Equal` here means the same
/// value (floats compare in total order, as the sort does).
fn ties_by_row(values: &dyn Array, order: UInt32Array) -> Result<UInt32Array> {
    let same = arrow::array::make_comparator(values, values, SortOptions::default())?;
    let mut rows = order.values().to_vec();
    let mut start = 0;
    for i in 1..=rows.len() {
        if i == rows.len() || same(i - 1, i) != std::cmp::Ordering::Equal {
            if i - start > 1 {
                rows[start..i].sort_unstable();
            }
            start = i;
        }
    }
    Ok(UInt32Array::from(rows))
}

/// The first `i` in `0..n` where `pred` fails (it holds on a prefix).
fn partition_point(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Ascending, disjoint, non-empty ranges.
fn normalize(mut ranges: Vec<Range<usize>>) -> Vec<Range<usize>> {
    ranges.retain(|r| r.start < r.end);
    ranges.sort_unstable_by_key(|r| r.start);
    let mut out: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// Both sets of positions (each [`normalize`]d).
fn intersect(a: &[Range<usize>], b: &[Range<usize>]) -> Vec<Range<usize>> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        let (start, end) = (a[i].start.max(b[j].start), a[i].end.min(b[j].end));
        if start < end {
            out.push(start..end);
        }
        if a[i].end < b[j].end {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Sorts row numbers ascending: thousands of them (what a lookup finds)
/// in three counting passes of 11 bits, a few times faster than a
/// comparison sort; few by comparison.
pub(crate) fn sort_rows(rows: &mut Vec<u32>) {
    const BITS: u32 = 11;
    const BUCKETS: usize = 1 << BITS;
    if rows.len() < 2 * BUCKETS {
        rows.sort_unstable();
        return;
    }
    let mut out = vec![0u32; rows.len()];
    for pass in 0..32u32.div_ceil(BITS) {
        let digit = |r: u32| ((r >> (pass * BITS)) as usize) & (BUCKETS - 1);
        let mut next = [0usize; BUCKETS];
        for &r in rows.iter() {
            next[digit(r)] += 1;
        }
        let mut at = 0;
        for n in next.iter_mut() {
            (*n, at) = (at, at + *n);
        }
        for &r in rows.iter() {
            let d = digit(r);
            out[next[d]] = r;
            next[d] += 1;
        }
        std::mem::swap(rows, &mut out);
    }
}

/// The rows a filter can match, as sorted columns find them.
#[derive(Debug)]
pub(crate) enum Found {
    /// Positions in one sorted column (attribute `name`): exactly the
    /// matching rows.
    Positions {
        name: String,
        column: Arc<SortedColumn>,
        ranges: Vec<Range<usize>>,
    },
    /// Rows matching any part.
    Any(Vec<Found>),
    /// Rows matching every part; `complete` when the parts are all of the
    /// filter (else parts no sorted column answers also apply).
    All { parts: Vec<Found>, complete: bool },
}

impl Found {
    /// How many rows at most (exactly, for positions in one column).
    pub(crate) fn count(&self) -> usize {
        match self {
            Found::Positions { ranges, .. } => ranges.iter().map(|r| r.len()).sum(),
            Found::Any(parts) => parts.iter().map(Found::count).sum(),
            Found::All { parts, .. } => parts.iter().map(Found::count).min().unwrap_or(0),
        }
    }

    /// The attribute, its sorted column and the positions in it, when they
    /// are exactly the matching rows.
    pub(crate) fn single_column(&self) -> Option<(&str, &SortedColumn, &[Range<usize>])> {
        match self {
            Found::Positions {
                name,
                column,
                ranges,
            } => Some((name, column, ranges)),
            Found::Any(parts)
            | Found::All {
                parts,
                complete: true,
            } if parts.len() == 1 => parts[0].single_column(),
            _ => None,
        }
    }

    /// Whether [`Found::rows`] are exactly the filter's rows (else a
    /// superset, to be checked by the filter itself).
    pub(crate) fn exact(&self) -> bool {
        match self {
            Found::Positions { .. } => true,
            Found::Any(parts) => parts.iter().all(Found::exact),
            Found::All { parts, complete } => {
                *complete && parts.len() == 1 && parts.iter().all(Found::exact)
            }
        }
    }

    /// The rows, ascending (a superset of the matching rows unless
    /// [`Found::exact`]; for `All`, those of its smallest part).
    pub(crate) fn rows(&self) -> Vec<u32> {
        match self {
            Found::Positions { column, ranges, .. } => {
                let mut rows = column.rows_at(ranges);
                sort_rows(&mut rows);
                rows
            }
            Found::Any(parts) => {
                let mut rows: Vec<u32> = parts.iter().flat_map(Found::rows).collect();
                sort_rows(&mut rows);
                rows.dedup();
                rows
            }
            Found::All { parts, .. } => parts
                .iter()
                .min_by_key(|p| p.count())
                .map(Found::rows)
                .unwrap_or_default(),
        }
    }
}

/// The rows `filter` can match, found in sorted columns (`sorted(name)`:
/// that column's, if one is at hand); `None` when they cannot bound them
/// (a `not`, `like`, `array_contains`, or a column not sorted).
pub(crate) fn find(
    filter: &Filter,
    sorted: &dyn Fn(&str) -> Option<Arc<SortedColumn>>,
) -> Option<Found> {
    let positions = |name: &str, column: Arc<SortedColumn>, ranges: Option<Vec<Range<usize>>>| {
        Some(Found::Positions {
            name: name.to_string(),
            column,
            ranges: normalize(ranges?),
        })
    };
    match filter {
        Filter::Cmp { column, op, value } => {
            let col = sorted(column)?;
            let ranges = col.positions(*op, value);
            positions(column, col, ranges)
        }
        Filter::In {
            column,
            values,
            negated: false,
        } => {
            let col = sorted(column)?;
            let mut ranges = Vec::new();
            for v in values {
                ranges.extend(col.positions(CmpOp::Eq, v)?);
            }
            positions(column, col, Some(ranges))
        }
        Filter::IsTrue { column } => {
            let col = sorted(column)?;
            let ranges = col.positions(CmpOp::Eq, &Literal::Bool(true));
            positions(column, col, ranges)
        }
        Filter::Or(parts) => {
            let mut found: Vec<Found> = Vec::new();
            for part in parts {
                match find(part, sorted)? {
                    // `a == 1 or a == 2`: one set of positions, so rows
                    // matching both are counted once.
                    Found::Positions {
                        name,
                        column,
                        ranges,
                    } => match same_column(&mut found, &column) {
                        Some(r) => {
                            r.extend(ranges);
                            *r = normalize(std::mem::take(r));
                        }
                        None => found.push(Found::Positions {
                            name,
                            column,
                            ranges,
                        }),
                    },
                    other => found.push(other),
                }
            }
            Some(Found::Any(found))
        }
        Filter::And(parts) => {
            let mut found: Vec<Found> = Vec::new();
            let mut complete = true;
            for part in parts {
                match find(part, sorted) {
                    // Two bounds on one column (`a >= 1 and a < 9`) are one
                    // exact set of positions.
                    Some(Found::Positions {
                        name,
                        column,
                        ranges,
                    }) => match same_column(&mut found, &column) {
                        Some(r) => *r = intersect(r, &ranges),
                        None => found.push(Found::Positions {
                            name,
                            column,
                            ranges,
                        }),
                    },
                    Some(other) => found.push(other),
                    None => complete = false,
                }
            }
            (!found.is_empty()).then_some(Found::All {
                parts: found,
                complete,
            })
        }
        Filter::In { negated: true, .. }
        | Filter::Not(_)
        | Filter::Like { .. }
        | Filter::ArrayContains { .. } => None,
    }
}

/// The ranges of the positions in `found` of `column`, if some.
fn same_column<'f>(
    found: &'f mut [Found],
    column: &SortedColumn,
) -> Option<&'f mut Vec<Range<usize>>> {
    found.iter_mut().find_map(|f| match f {
        Found::Positions {
            column: c, ranges, ..
        } if c.same(column) => Some(ranges),
        _ => None,
    })
}

/// Adds the columns whose sorted form [`find`] would use for `filter`
/// to `out`; false when `find` cannot answer `filter` whatever is sorted
/// (then an `or` around it gains nothing from sorting its other parts).
fn lookup_columns(filter: &Filter, out: &mut Vec<String>) -> bool {
    match filter {
        Filter::Cmp { column, .. }
        | Filter::In {
            column,
            negated: false,
            ..
        }
        | Filter::IsTrue { column } => {
            if !out.contains(column) {
                out.push(column.clone());
            }
            true
        }
        Filter::And(parts) => {
            let mut any = false;
            for p in parts {
                any |= lookup_columns(p, out);
            }
            any
        }
        Filter::Or(parts) => {
            let mut mine = out.clone();
            if !parts.iter().all(|p| lookup_columns(p, &mut mine)) {
                return false;
            }
            *out = mine;
            true
        }
        Filter::In { negated: true, .. }
        | Filter::Not(_)
        | Filter::Like { .. }
        | Filter::ArrayContains { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{AttributeType, CollectionConfig};
    use arrow::array::{BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
    use std::collections::HashMap;

    fn config() -> CollectionConfig {
        CollectionConfig::for_tests(&[
            ("n", AttributeType::I64),
            ("x", AttributeType::F64),
            ("s", AttributeType::String),
            ("b", AttributeType::Bool),
        ])
    }

    /// 500 rows with nulls, NaNs, repeats and both zero signs.
    fn batch() -> RecordBatch {
        let n = 500;
        let ints: Int64Array = (0..n)
            .map(|i| (i % 11 != 3).then_some((i * 37 % 23) - 11))
            .collect();
        let floats: Float64Array = (0..n)
            .map(|i| match i % 13 {
                0 => None,
                1 => Some(f64::NAN),
                2 => Some(-f64::NAN),
                3 => Some(-0.0),
                4 => Some(0.0),
                _ => Some(((i * 7) % 19) as f64 - 9.5),
            })
            .collect();
        let strings: StringArray = (0..n)
            .map(|i| (i % 7 != 0).then(|| ["a", "ab", "b", "", "zz"][i as usize % 5]))
            .collect();
        let bools: BooleanArray = (0..n).map(|i| (i % 5 != 0).then_some(i % 3 == 0)).collect();
        RecordBatch::try_from_iter([
            ("n", Arc::new(ints) as ArrayRef),
            ("x", Arc::new(floats) as ArrayRef),
            ("s", Arc::new(strings) as ArrayRef),
            ("b", Arc::new(bools) as ArrayRef),
        ])
        .unwrap()
    }

    #[test]
    fn lookups_agree_with_the_filter_on_every_row() {
        let batch = batch();
        let sorted: HashMap<String, Arc<SortedColumn>> = ["n", "x", "s", "b"]
            .iter()
            .map(|c| {
                let col = batch.column_by_name(c).unwrap();
                let s = SortedColumn::build(col.as_ref()).unwrap();
                // A round trip through the decoded cache's form.
                let s = SortedColumn::from_array(&s.to_array()).unwrap();
                (c.to_string(), Arc::new(s))
            })
            .collect();
        let lookup = |c: &str| sorted.get(c).cloned();
        let filters = [
            "n == 4",
            "n != 4",
            "n < -3",
            "n <= -3",
            "n > 5",
            "n >= 5",
            "n >= -2 and n < 7",
            "n > 100",
            "n in [1, 5, 5, -11]",
            "x == 0",
            "x < 0",
            "x >= -1.5 and x <= 2",
            "x != 0.5",
            "x > 3",
            "s == 'ab'",
            "s < 'b'",
            "s >= 'a' and s < 'b'",
            "s in ['zz', '']",
            "b",
            "b == false",
            "n == 4 or s == 'b'",
            "n < 0 and x > 0",
            "n < 0 and s like 'a%'",
            "(n == 1 or n == 2) and b",
        ];
        for text in filters {
            let filter = Filter::parse(text, &config()).unwrap();
            let truth: Vec<u32> = filter
                .evaluate(&batch)
                .unwrap()
                .set_indices()
                .map(|r| r as u32)
                .collect();
            let found = find(&filter, &lookup).unwrap_or_else(|| panic!("{text}: no lookup"));
            let rows = found.rows();
            assert!(
                rows.windows(2).all(|w| w[0] < w[1]),
                "{text}: not ascending"
            );
            if found.exact() {
                assert_eq!(rows, truth, "{text}");
            } else {
                assert!(truth.iter().all(|r| rows.contains(r)), "{text}: lost a row");
            }
            assert!(found.count() >= rows.len(), "{text}");
            if let Found::Positions { .. } = found {
                assert_eq!(found.count(), truth.len(), "{text}");
            }
        }
        for text in ["not n == 1", "s like 'a%'", "n not in [1]"] {
            let filter = Filter::parse(text, &config()).unwrap();
            assert!(find(&filter, &lookup).is_none(), "{text}");
        }
        let partial = Filter::parse("n < 0 and s like 'a%'", &config()).unwrap();
        assert!(!find(&partial, &lookup).unwrap().exact());
        // Overlapping parts of an `or` on one column count each row once.
        let overlap = Filter::parse("n >= 0 or n in [1, 2] or n < 5", &config()).unwrap();
        let truth = overlap.evaluate(&batch).unwrap().count_set_bits();
        assert_eq!(find(&overlap, &lookup).unwrap().count(), truth);
        // Exact positions in one column name it, through `and` and `or`.
        for (text, column) in [
            ("n == 4", Some("n")),
            ("n >= -2 and n < 7", Some("n")),
            ("n == 1 or n == 2", Some("n")),
            ("x > 3", Some("x")),
            ("n == 4 or s == 'b'", None),
            ("n < 0 and s like 'a%'", None),
        ] {
            let filter = Filter::parse(text, &config()).unwrap();
            let found = find(&filter, &lookup).unwrap();
            assert_eq!(found.single_column().map(|(c, ..)| c), column, "{text}");
        }
    }

    #[test]
    fn equal_values_sit_in_row_order() {
        let batch = batch();
        for c in ["n", "x", "s", "b"] {
            let col = batch.column_by_name(c).unwrap();
            let sorted = SortedColumn::build(col.as_ref()).unwrap();
            let same = arrow::array::make_comparator(
                sorted.values.as_ref(),
                sorted.values.as_ref(),
                SortOptions::default(),
            )
            .unwrap();
            let rows = sorted.rows();
            for i in 1..rows.len() {
                match same(i - 1, i) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => assert!(rows[i - 1] < rows[i], "{c} at {i}"),
                    std::cmp::Ordering::Greater => panic!("{c}: not ascending at {i}"),
                }
            }
        }
    }

    #[test]
    fn only_columns_a_lookup_can_use_are_sorted() {
        let names = |text: &str| {
            let mut out = Vec::new();
            lookup_columns(&Filter::parse(text, &config()).unwrap(), &mut out);
            out
        };
        assert_eq!(names("n == 1 and s like 'a%'"), ["n"]);
        assert!(names("n == 1 or s like 'a%'").is_empty());
        assert_eq!(names("(n == 1 or x > 2) and not b"), ["n", "x"]);
        assert_eq!(names("n == 1 or n == 2 or s == 'a'"), ["n", "s"]);
    }

    #[test]
    fn row_numbers_sort_as_a_comparison_sort_does() {
        for n in [0usize, 5, 4095, 4096, 50_000] {
            let mut x = 0x9e37_79b9u32;
            let mut rows: Vec<u32> = (0..n)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    // Repeats, and values over every bit.
                    if i % 7 == 0 { u32::MAX - (x % 3) } else { x }
                })
                .collect();
            let mut expected = rows.clone();
            expected.sort_unstable();
            sort_rows(&mut rows);
            assert_eq!(rows, expected, "{n}");
        }
    }

    #[test]
    fn nulls_and_nans_are_left_out() {
        let batch = batch();
        let x = batch.column_by_name("x").unwrap();
        let sorted = SortedColumn::build(x.as_ref()).unwrap();
        let nan = x.as_primitive::<Float64Type>().values().iter();
        let comparable = nan.zip(0..).filter(|(v, i)| !v.is_nan() && x.is_valid(*i));
        assert_eq!(sorted.len(), comparable.count());
    }
}
