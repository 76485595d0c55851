//! The visibility rule (MVCC), in one place.
//!
//! A row `(id, lsn)` is visible iff `lsn` is the newest event for `id`
//! across all segments, delete files and the log tail, and that event is an
//! upsert. Flushes (which rows of a log range survive), compaction (which
//! rows of merged segments survive) and snapshots (which rows a read sees)
//! all ask [`Newest`] and nothing else.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, UInt64Array};
use arrow::datatypes::UInt64Type;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::segment::{COL_ID, COL_LSN};

/// A fast, seeded hasher: these maps hold an entry per row of a collection
/// and are built on a cold query's path.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The newest event per id: `(lsn, deleted)`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Newest {
    u64s: FastMap<u64, (u64, bool)>,
    strings: FastMap<String, (u64, bool)>,
}

impl Newest {
    /// Records an event if it is newer than what is known for the id.
    pub(crate) fn observe(&mut self, ids: &dyn Array, row: usize, lsn: u64, deleted: bool) {
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
    pub(crate) fn observe_rows(&mut self, batch: &RecordBatch, deleted: bool) -> Result<()> {
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

    /// The rows of a batch (with `id` and `_lsn`) that are visible: their
    /// event is the newest for their id, and an upsert.
    pub(crate) fn visible_mask(&self, batch: &RecordBatch) -> Result<BooleanArray> {
        let (ids, lsns) = id_and_lsn(batch)?;
        Ok((0..batch.num_rows())
            .map(|r| Some(self.is_visible(ids, r, lsns.value(r))))
            .collect())
    }

    /// [`Newest::visible_mask`], or `None` when every row is visible.
    pub(crate) fn visible_mask_unless_all(
        &self,
        batch: &RecordBatch,
    ) -> Result<Option<Arc<BooleanArray>>> {
        let mask = self.visible_mask(batch)?;
        Ok((mask.true_count() != mask.len()).then(|| Arc::new(mask)))
    }

    /// Whether `(ids[row], lsn)` is the newest event for its id and an upsert.
    pub(crate) fn is_visible(&self, ids: &dyn Array, row: usize, lsn: u64) -> bool {
        is_newest_upsert(self.get(ids, row), lsn)
    }

    /// Ids whose newest event is a delete, with that event's LSN, oldest first.
    pub(crate) fn deletes(&self) -> Vec<(Id, u64)> {
        let mut out: Vec<(Id, u64)> = self
            .events()
            .filter(|(_, (_, deleted))| *deleted)
            .map(|(id, (lsn, _))| {
                let id = match id {
                    IdRef::U64(v) => Id::U64(v),
                    IdRef::Str(s) => Id::Str(s.to_string()),
                };
                (id, lsn)
            })
            .collect();
        out.sort_unstable_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        out
    }

    pub(crate) fn get(&self, ids: &dyn Array, row: usize) -> Option<(u64, bool)> {
        if let Some(a) = ids.as_any().downcast_ref::<UInt64Array>() {
            self.u64s.get(&a.value(row)).copied()
        } else {
            self.strings.get(ids.as_string::<i32>().value(row)).copied()
        }
    }

    /// The newest event of `id`.
    pub(crate) fn get_id(&self, id: &Id) -> Option<(u64, bool)> {
        match id {
            Id::U64(v) => self.u64s.get(v).copied(),
            Id::Str(s) => self.strings.get(s.as_str()).copied(),
        }
    }

    /// Ids whose newest event is an upsert.
    pub(crate) fn live_count(&self) -> usize {
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
pub(crate) struct Visibility<'a> {
    pub base: &'a Newest,
    pub tail: &'a Newest,
    /// LSNs of the segments' visible rows whose ids the tail has events
    /// for: only rows at one of these LSNs can be hidden by the tail.
    pub shadowed: &'a LsnSet,
}

/// A set of LSNs.
pub(crate) type LsnSet = std::collections::HashSet<u64, foldhash::fast::RandomState>;

/// What a row set's rows need to be visible.
#[derive(Debug, Clone, Default)]
pub(crate) struct RowSetVisibility {
    /// Which rows the segments and delete files (for the log tail: the
    /// tail itself) leave visible; `None` when all of them.
    pub mask: Option<Arc<BooleanArray>>,
    /// Whether the log tail's events can hide rows of it (every row set
    /// but the tail itself, whose rows are newer than any segment's).
    pub under_tail: bool,
}

impl Visibility<'_> {
    /// The version (LSN) of the visible row with this id; `None` if no row
    /// with it is visible.
    pub(crate) fn version_of(&self, id: &Id) -> Option<u64> {
        match self.tail.get_id(id).or_else(|| self.base.get_id(id)) {
            Some((lsn, false)) => Some(lsn),
            _ => None,
        }
    }

    pub(crate) fn newest(&self, ids: &dyn Array, row: usize) -> Option<(u64, bool)> {
        self.tail.get(ids, row).or_else(|| self.base.get(ids, row))
    }

    pub(crate) fn is_visible(&self, ids: &dyn Array, row: usize, lsn: u64) -> bool {
        is_newest_upsert(self.newest(ids, row), lsn)
    }

    /// The visibility test for the rows of one row set, as cheap as it can
    /// be made: a bit of its mask, and a lookup in the tail's map only for
    /// rows at an LSN the tail shadows (the whole rule for a set whose
    /// visibility is not known).
    pub(crate) fn row_test<'b>(
        &'b self,
        set: Option<&'b RowSetVisibility>,
        ids: &'b dyn Array,
        lsns: &'b UInt64Array,
    ) -> impl Fn(usize) -> bool + 'b {
        let check_tail = set.is_some_and(|s| s.under_tail) && !self.shadowed.is_empty();
        move |row| match set {
            Some(set) => {
                set.mask.as_ref().is_none_or(|m| m.value(row))
                    && !(check_tail
                        && self.shadowed.contains(&lsns.value(row))
                        && self.tail.get(ids, row).is_some())
            }
            None => self.is_visible(ids, row, lsns.value(row)),
        }
    }

    /// The LSNs of the segments' visible rows that the tail's events
    /// supersede (see [`Visibility::shadowed`]).
    pub(crate) fn shadowed_lsns(base: &Newest, tail: &Newest) -> LsnSet {
        tail.events()
            .filter_map(|(id, _)| match base.get_ref(id) {
                Some((lsn, false)) => Some(lsn),
                _ => None,
            })
            .collect()
    }

    /// Number of live ids.
    pub(crate) fn live_count(&self) -> usize {
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

/// The rule itself: a row at `lsn` is visible iff the newest event of its
/// id is an upsert at that LSN.
fn is_newest_upsert(newest: Option<(u64, bool)>, lsn: u64) -> bool {
    newest == Some((lsn, false))
}

/// The `id` and `_lsn` columns of a row set.
pub(crate) fn id_and_lsn(batch: &RecordBatch) -> Result<(&dyn Array, &UInt64Array)> {
    let ids = batch
        .column_by_name(COL_ID)
        .ok_or_else(|| Error::corrupt("row set", "no id column"))?;
    let lsns = batch
        .column_by_name(COL_LSN)
        .and_then(|c| c.as_primitive_opt::<UInt64Type>())
        .ok_or_else(|| Error::corrupt("row set", "no u64 _lsn column"))?;
    Ok((ids.as_ref(), lsns))
}
