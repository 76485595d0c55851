//! Reads without a vector: filter-only queries (a scan in id order, one
//! page per request) and the lookup of one row by id.

use std::collections::HashMap;
use std::sync::Arc;

use super::materialize::{fetch_rows, materialize, rows_by_source};
use super::{Needs, Snapshot};
use crate::cache::ReadStats;
use crate::engine::Floe;
use crate::engine::request::{Consistency, Query, Row};
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::id::{Id, id_at};
use crate::mvcc::id_and_lsn;

/// Visible rows matching the filter: (id, source, row).
pub(crate) fn scan_matches(
    snap: &Snapshot,
    filter: Option<&Filter>,
) -> Result<Vec<(Id, usize, usize)>> {
    let mut out = Vec::new();
    let visibility = snap.visibility();
    for (source, s) in snap.sources.iter().enumerate() {
        let (ids, lsns) = id_and_lsn(s.all_keys()?)?;
        let mask = match filter {
            Some(f) => Some(
                f.evaluate(
                    s.filtered()
                        .ok_or_else(|| Error::internal("scan", "columns were not loaded"))?,
                )?,
            ),
            None => None,
        };
        for row in 0..ids.len() {
            if mask.as_ref().is_none_or(|m| m.value(row))
                && visibility.is_visible(ids, row, lsns.value(row))
            {
                out.push((id_at(ids, row), source, row));
            }
        }
    }
    Ok(out)
}

/// One page of a filter-only query, in id order, and the next cursor.
pub(super) async fn scan_page(snap: &Snapshot, query: &Query) -> Result<(Vec<Row>, Option<Id>)> {
    let mut matches = scan_matches(snap, query.filter.as_ref())?;
    matches.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let start = match &query.cursor {
        Some(cursor) => matches.partition_point(|m| &m.0 <= cursor),
        None => 0,
    };
    let page: Vec<_> = matches[start..].iter().take(query.top_k).collect();
    let more = matches.len() > start + page.len();
    let next = if more {
        page.last().map(|m| m.0.clone())
    } else {
        None
    };
    let wanted = rows_by_source(snap, page.iter().map(|m| (m.1, m.2)));
    let fetched = fetch_rows(snap, &wanted, &query.attributes, query.include_vector).await?;
    let rows = page
        .iter()
        .map(|m| {
            materialize(
                snap,
                &fetched,
                m.1,
                m.2,
                None,
                &query.attributes,
                query.include_vector,
            )
        })
        .collect::<Result<_>>()?;
    Ok((rows, next))
}

/// The visible row of each id (vector and every attribute), `None` for an
/// id with no visible row; one pass over the snapshot's keys.
pub(crate) async fn visible_rows(
    snap: &Snapshot,
    wanted: &[Id],
    attributes: &[String],
) -> Result<Vec<Option<Row>>> {
    let index: HashMap<&Id, usize> = wanted.iter().enumerate().map(|(i, id)| (id, i)).collect();
    let mut found: Vec<Option<(usize, usize)>> = vec![None; wanted.len()];
    let visibility = snap.visibility();
    for (source, s) in snap.sources.iter().enumerate() {
        let (ids, lsns) = id_and_lsn(s.all_keys()?)?;
        for row in 0..ids.len() {
            if let Some(&i) = index.get(&id_at(ids, row))
                && visibility.is_visible(ids, row, lsns.value(row))
            {
                found[i] = Some((source, row));
            }
        }
    }
    let places: Vec<(usize, usize)> = found.iter().flatten().copied().collect();
    let mut rows = rows_at(snap, &places, attributes).await?.into_iter();
    Ok(found.iter().map(|f| f.and_then(|_| rows.next())).collect())
}

/// The rows at `(source, row)` places of the snapshot, with their vectors
/// and `attributes`, in the order given.
pub(crate) async fn rows_at(
    snap: &Snapshot,
    places: &[(usize, usize)],
    attributes: &[String],
) -> Result<Vec<Row>> {
    let wanted = rows_by_source(snap, places.iter().copied());
    let fetched = fetch_rows(snap, &wanted, attributes, true).await?;
    places
        .iter()
        .map(|&(source, row)| materialize(snap, &fetched, source, row, None, attributes, true))
        .collect()
}

impl Floe {
    /// The visible version of one row, with its vector and every attribute;
    /// `id` is the id as text (a URL path segment).
    pub async fn get_row(
        &self,
        name: &str,
        id: &str,
        consistency: Consistency,
    ) -> Result<Option<Row>> {
        let since = crate::clock::now_ms();
        let mut c = self.collection(name).await?;
        let id = Id::parse(id, c.config.id_type)?;
        let stats = Arc::new(ReadStats::default());
        let snap = self
            .snapshot_current(&mut c, since, consistency, Needs::default(), &stats)
            .await?;
        let all: Vec<String> = c.config.attributes.iter().map(|a| a.name.clone()).collect();
        Ok(visible_rows(&snap, &[id], &all).await?.pop().flatten())
    }
}
