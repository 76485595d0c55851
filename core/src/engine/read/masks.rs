//! Evaluated filters of indexed segments, reused across queries: a segment
//! never changes, so a filter's result on it never does. Repeated filters
//! (a tenant, a category) then cost a lookup instead of a pass over every
//! row of the segment.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::error::Result;
use crate::filter::Filter;

/// Bytes of masks kept per collection (one byte a row).
const KEPT_BYTES: usize = 32 * 1024 * 1024;

/// Which rows of a segment a filter matches.
#[derive(Debug)]
pub(crate) struct Mask {
    pub rows: Vec<bool>,
    /// The matching rows, ascending, when at most `exact_rows` of the
    /// [`FilterMasks`] (setting `search.exact_filter_rows`).
    pub selected: Option<Vec<u32>>,
}

impl Mask {
    /// What it holds in memory: a byte a row, four per listed row.
    fn bytes(&self) -> usize {
        self.rows.len() + self.selected.as_ref().map_or(0, |s| s.len() * 4)
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
        evaluate: impl FnOnce() -> Result<Vec<bool>>,
    ) -> Result<Arc<Mask>> {
        let key = format!("{filter:?}");
        {
            let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(at) = kept.iter().position(|(s, f, _)| s == segment && *f == key)
                && let Some(hit) = kept.remove(at)
            {
                let mask = Arc::clone(&hit.2);
                kept.push_back(hit);
                return Ok(mask);
            }
        }
        let rows = evaluate()?;
        let matching = rows.iter().filter(|m| **m).count();
        let selected = (matching <= self.exact_rows).then(|| {
            rows.iter()
                .enumerate()
                .filter(|(_, m)| **m)
                .map(|(r, _)| r as u32)
                .collect()
        });
        let mask = Arc::new(Mask { rows, selected });
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.push_back((segment.to_string(), key, Arc::clone(&mask)));
        let mut bytes: usize = kept.iter().map(|(_, _, m)| m.bytes()).sum();
        while bytes > KEPT_BYTES && kept.len() > 1 {
            if let Some((_, _, old)) = kept.pop_front() {
                bytes -= old.bytes();
            }
        }
        Ok(mask)
    }
}
