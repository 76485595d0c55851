//! A vector query over a snapshot: indexed segments by the IVF probe loop
//! (candidates by their compact codes, re-ranked at full precision), row sets
//! in memory exactly, and the per-source lists merged into the top k.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::exact::{ExactSearch, Hit, SearchParams, merge_top_k};
use super::indexed::IndexedSegment;
use super::masks::{Mask, Matches, Selected};
use super::materialize::{fetch_rows, materialize};
use super::sorted::SortedColumns;
use super::{Snapshot, Source};
use crate::engine::request::{Query, Row};
use crate::error::{Error, Result};
use crate::index::{IvfHeader, ProbeOrder, rerank};
use crate::mvcc::id_and_lsn;
use crate::vector::QueryVector;

/// The top `query.top_k` visible rows matching the filter, closest first;
/// `None` when a candidate of a segment read without its keys turned out
/// hidden (search again with [`super::Needs::lazy_keys`] off).
pub(super) async fn search(
    snap: &Snapshot,
    query: &Query,
    q: &QueryVector,
) -> Result<Option<Vec<Row>>> {
    let k = query.top_k;
    let params = SearchParams {
        query: q,
        k,
        filter: query.filter.as_ref(),
        visibility: snap.visibility(),
        row_sets: &snap.row_sets,
    };
    let mut candidates: Vec<Option<Vec<u32>>> = Vec::new();
    for (i, source) in snap.sources.iter().enumerate() {
        candidates.push(match source {
            Source::Rows(_) => None,
            Source::Indexed { .. } => Some(indexed_candidates(snap, i, &params, query).await?),
        });
    }
    let fetched = fetch_rows(snap, &candidates, &query.attributes, true).await?;
    let started = Instant::now();
    let mut lists = Vec::new();
    for (i, source) in snap.sources.iter().enumerate() {
        lists.push(match (source, &fetched[i]) {
            (Source::Rows(batch), _) => ExactSearch(batch).search(i, &params)?,
            (Source::Indexed { .. }, Some(f)) => rerank(
                q,
                &match f.visible_rows(&params.visibility)? {
                    // A newer event hid a candidate: this search would
                    // re-rank fewer than a keyed one. Search again with the
                    // keys (then kept for later queries).
                    Some(rows) if rows.len() < f.rows.len() => return Ok(None),
                    _ => f.rows.clone(),
                },
                &|row| f.position(row as usize).map(|p| f.vectors[p].as_slice()),
                k,
            )?
            .into_iter()
            .map(|(distance, row)| Hit {
                distance,
                source: i,
                row: row as usize,
            })
            .collect(),
            (Source::Indexed { .. }, None) => Vec::new(),
        });
    }
    let rows = merge_top_k(lists, k)
        .iter()
        .map(|h| {
            materialize(
                snap,
                &fetched,
                h.source,
                h.row,
                Some(h.distance),
                &query.attributes,
                query.include_vector,
            )
        })
        .collect::<Result<_>>()?;
    snap.stats.record("search", started.elapsed(), 0);
    Ok(Some(rows))
}

/// The rows of an indexed segment to re-rank: the best candidates by
/// quantised distance among visible, matching rows of the probed clusters
/// (more clusters while too few pass), or every matching row when a filter
/// is selective enough for an exact search.
async fn indexed_candidates(
    snap: &Snapshot,
    source: usize,
    params: &SearchParams<'_>,
    query: &Query,
) -> Result<Vec<u32>> {
    let Source::Indexed {
        segment,
        keys,
        filtered,
    } = &snap.sources[source]
    else {
        return Err(Error::internal("query", "not an indexed source"));
    };
    let planned = snap.probes[source].as_ref();
    let header = &segment.header;
    let keys = match keys {
        Some(keys) => Some(id_and_lsn(keys)?),
        None => None,
    };
    // The keys loaded must cover the index's rows (the filter's columns
    // were checked as they were loaded).
    if let Some((ids, _)) = keys
        && ids.len() != header.rows()
    {
        return Err(Error::corrupt(
            "ivf index",
            format!(
                "covers {} rows, the segment's keys {}",
                header.rows(),
                ids.len()
            ),
        ));
    }
    // Without keys, candidates are checked once their keys are read.
    let test = keys.map(|(ids, lsns)| params.visible_fn(source, ids, lsns));
    let visible = |row: usize| test.as_ref().is_none_or(|t| t(row));
    // The filter's columns, unless its kept mask answers: the snapshot
    // left them unloaded when it was kept then.
    let mut kept = None;
    let columns = match (filtered, params.filter) {
        (Some(columns), _) => Some(Arc::clone(columns)),
        (None, Some(filter)) => match snap.filter_masks.kept_for(&segment.entry.id, filter) {
            Some(matches) => {
                kept = Some(matches);
                None
            }
            // Evicted since: loaded here.
            None => Some(Arc::new(
                segment
                    .whole_columns(&snap.source, &filter.columns(), &snap.schema)
                    .await?,
            )),
        },
        (None, None) => None,
    };
    let sorted = columns.as_ref().map(|columns| SortedColumns {
        source: &snap.source,
        segment,
        columns,
    });
    let matches = match (params.filter, &sorted, kept) {
        (Some(_), _, Some((matches, how))) => {
            snap.stats.record(how, Duration::ZERO, 0);
            Some(matches)
        }
        (Some(filter), Some(sorted), None) => {
            let started = Instant::now();
            let (matches, how) = snap
                .filter_masks
                .matches(&segment.entry.id, filter, sorted)?;
            snap.stats.record(how, started.elapsed(), 0);
            Some(matches)
        }
        (Some(_), None, None) => {
            return Err(Error::internal("query", "filter columns were not loaded"));
        }
        (None, ..) => None,
    };
    let knobs = query.knobs;
    let nprobe = header.nprobe(&knobs);
    let rerank_n = knobs
        .rerank
        .unwrap_or_else(|| header.default_rerank(params.k));
    // A segment opened after the first wave was planned has no probe yet.
    let (mut order, codes, norms) = match planned {
        Some(p) => (p.order.clone(), Some(&p.codes), Some(&p.norms)),
        None => (header.probe_order(&params.query.values, nprobe), None, None),
    };
    let kept = match &matches {
        Some(Matches::Kept { mask, .. }) => Some(mask.as_ref()),
        _ => None,
    };
    let new = matches!(matches, Some(Matches::Kept { new: true, .. }));
    if let (Some(Mask::Listed(selected)), Some(sorted), true) = (kept, &sorted, new)
        && let Some((name, ranges)) = &selected.runs
    {
        // A filter asked for the first time, found by a lookup in one
        // sorted column: every matching row scored, from their codes in
        // that column's order (contiguous runs) when kept. Below, its
        // matching rows' codes would be gathered one random read at a
        // time; a repeated filter scores the nearest clusters' rows from
        // the codes kept with its mask as searches gathered them (fewer
        // rows than every matching one when a filter matches many).
        // Without arranged codes, as below, while they are arranged for
        // the next search.
        match sorted.codes(name, ranges) {
            Some(codes) => {
                let started = Instant::now();
                let mut probe = header.probe_loop(
                    params.query,
                    1,
                    rerank_n.max(params.k),
                    ProbeOrder::default(),
                );
                for (rows, codes, norms) in codes.runs(ranges) {
                    probe.scan_rows(rows, codes, norms, &visible)?;
                }
                snap.stats.record("sorted codes", started.elapsed(), 0);
                return Ok(probe.candidates());
            }
            None => sorted.codes_later(name, snap.filter_masks.sorting()),
        }
    }
    if let Some(Mask::Listed(selected)) = kept {
        // Selective: approximate distances of just the matching rows of the
        // closest clusters, as many clusters as hold (on average) the rows
        // an unfiltered search at `nprobe` scores; then farther ones while
        // too few candidates passed. The best are re-ranked at full
        // precision as in any search. The matching rows' codes are read
        // once per cluster and kept with the filter's mask, together, so a
        // repeated filter scores them as one contiguous run. (Reading every
        // matching row's vector instead touches most vector blocks once a
        // filter keeps a row per block; scanning whole clusters scores
        // mostly rows that fail.)
        let rows = header.rows().max(1);
        let clusters = (nprobe * rows)
            .div_ceil(selected.len().max(1))
            .clamp(nprobe, header.nlist());
        let in_cluster = |c: usize| selected.within(header.offsets[c], header.offsets[c + 1]);
        let mut probe = header.probe_loop(
            params.query,
            1,
            rerank_n.max(params.k),
            ProbeOrder::default(),
        );
        let mut scanning = Duration::ZERO;
        // Each wave is scanned whole: its clusters in no particular order.
        let waves = [order.nearest(clusters), order.rest(clusters)];
        for (wave, clusters) in waves.into_iter().enumerate() {
            if wave > 0 && probe.is_full() {
                break;
            }
            let clusters: Vec<usize> = clusters
                .iter()
                .copied()
                .filter(|c| !in_cluster(*c).is_empty())
                .collect();
            let codes = listed_codes(snap, segment, selected, &clusters).await?;
            let started = Instant::now();
            for (c, kept) in clusters.iter().zip(&codes) {
                let rows = in_cluster(*c);
                let (codes, norms) =
                    kept.split_at((rows.len() * header.code_len()).min(kept.len()));
                probe.scan_listed(*c, rows, codes, norms, &visible);
            }
            scanning += started.elapsed();
        }
        snap.stats.record("code scan", scanning, 0);
        return Ok(probe.candidates());
    }
    // A filter evaluated by cluster: on the rows of each cluster scored.
    let by_cluster = match (&matches, params.filter, columns.as_ref()) {
        (Some(Matches::ByCluster), Some(filter), Some(columns)) => Some((filter, columns)),
        _ => None,
    };
    let mut probe = header.probe_loop(params.query, nprobe, rerank_n.max(params.k), order);
    let mut fetched: HashMap<usize, Bytes> = HashMap::new();
    let mut fetched_norms: HashMap<usize, Bytes> = HashMap::new();
    let (mut scanning, mut filtering) = (Duration::ZERO, Duration::ZERO);
    loop {
        let next = probe.next_clusters();
        if next.is_empty() {
            break;
        }
        let missing: Vec<usize> = next
            .iter()
            .copied()
            .filter(|c| codes.is_none_or(|codes| !codes.contains_key(c)))
            .collect();
        if !missing.is_empty() {
            // Too few candidates passed: widen the search (another wave).
            let read = snap
                .stats
                .phase("widen", segment.read_codes(&snap.source, &missing))
                .await?;
            fetched_norms.extend(segment.code_norms(&snap.source, &missing, &read));
            fetched.extend(read);
        }
        let started = Instant::now();
        for c in next {
            let block = codes
                .and_then(|codes| codes.get(&c))
                .or_else(|| fetched.get(&c))
                .ok_or_else(|| Error::internal("query", format!("codes of cluster {c}")))?;
            let first = header.offsets[c] as usize;
            let cluster = match by_cluster {
                Some((filter, columns)) => {
                    let started = Instant::now();
                    let len = header.offsets[c + 1] as usize - first;
                    let bits = filter.evaluate(&columns.slice(first, len))?;
                    filtering += started.elapsed();
                    Some(bits)
                }
                None => None,
            };
            let accept = |row: usize| {
                (match (kept, &cluster) {
                    (Some(Mask::Bits(bits)), _) => bits.value(row),
                    (_, Some(bits)) => bits.value(row - first),
                    _ => true,
                }) && visible(row)
            };
            let block_norms = norms
                .and_then(|n| n.get(&c))
                .or_else(|| fetched_norms.get(&c))
                .map(|n| n.as_ref())
                .unwrap_or_default();
            probe.scan(c, block, block_norms, &accept);
        }
        scanning += started.elapsed();
    }
    if by_cluster.is_some() {
        snap.stats.record("filter by cluster", filtering, 0);
    }
    snap.stats.record("code scan", scanning - filtering, 0);
    Ok(probe.candidates())
}

/// The codes of `selected`'s rows in each of `clusters`, in order, each
/// cluster's followed by their norms ([`IvfHeader::code_norms`]): kept
/// with the filter's mask; else copied out of the cluster's code block in
/// the decoded cache (an unfiltered search probed it); else read, a range
/// per run of rows, in one wave. What was not kept is kept then.
async fn listed_codes(
    snap: &Snapshot,
    segment: &IndexedSegment,
    selected: &Selected,
    clusters: &[usize],
) -> Result<Vec<Bytes>> {
    let header = &segment.header;
    let in_cluster = |c: usize| selected.within(header.offsets[c], header.offsets[c + 1]);
    let len = header.code_len();
    let mut codes = selected.codes_of(clusters);
    let mut missing: Vec<usize> = (0..clusters.len())
        .filter(|i| codes[*i].is_none())
        .collect();
    let copying = Instant::now();
    // Copied into one buffer (a selective filter has a row or two in each
    // of hundreds of clusters), kept under one lock.
    // Sized exactly: the kept codes are counted by their length.
    let wanted: usize = missing
        .iter()
        .map(|&i| in_cluster(clusters[i]).len() * len)
        .sum();
    let mut gathered: Vec<u8> = Vec::with_capacity(wanted);
    let mut spans: Vec<(usize, Range<usize>)> = Vec::new();
    missing.retain(|&i| {
        let c = clusters[i];
        let Some(block) = segment.decoded_codes(&snap.source, c) else {
            return true;
        };
        let first = header.offsets[c] as usize;
        let start = gathered.len();
        for &row in in_cluster(c) {
            let at = (row as usize - first) * len;
            match block.get(at..at + len) {
                Some(code) => gathered.extend_from_slice(code),
                None => {
                    gathered.truncate(start);
                    return true;
                }
            }
        }
        spans.push((i, start..gathered.len()));
        false
    });
    if !spans.is_empty() {
        let with_norms = with_norms(
            header,
            &gathered,
            spans.iter().map(|(i, span)| (clusters[*i], span.clone())),
        );
        let kept = selected.keep_codes(with_norms);
        for ((i, _), bytes) in spans.iter().zip(kept) {
            codes[*i] = Some(bytes);
        }
        snap.stats.record("filtered codes", copying.elapsed(), 0);
    }
    if !missing.is_empty() {
        // Ascending clusters hold ascending rows.
        missing.sort_unstable_by_key(|i| clusters[*i]);
        let rows: Vec<u32> = missing
            .iter()
            .flat_map(|i| in_cluster(clusters[*i]).iter().copied())
            .collect();
        let read = snap
            .stats
            .phase(
                "filtered codes",
                segment.read_row_codes(&snap.source, &rows),
            )
            .await?;
        let mut at = 0;
        let mut spans = Vec::with_capacity(missing.len());
        for &i in &missing {
            let bytes = in_cluster(clusters[i]).len() * len;
            if at + bytes > read.len() {
                return Err(Error::internal("query", "short read of matching codes"));
            }
            spans.push((clusters[i], at..at + bytes));
            at += bytes;
        }
        let spans = with_norms(header, &read, spans);
        for (i, bytes) in missing.into_iter().zip(selected.keep_codes(spans)) {
            codes[i] = Some(bytes);
        }
    }
    codes
        .into_iter()
        .map(|c| c.ok_or_else(|| Error::internal("query", "matching codes missing")))
        .collect()
}

/// Each `(cluster, span of codes)` of `codes` as one buffer: the codes
/// followed by their norms, computed once here so that every later scan
/// of them is the integer kernel's (none where the codes need no norms).
fn with_norms(
    header: &IvfHeader,
    codes: &[u8],
    spans: impl IntoIterator<Item = (usize, Range<usize>)>,
) -> Vec<(usize, Bytes)> {
    let spans: Vec<(usize, Range<usize>)> = spans.into_iter().collect();
    let norm_len = header.norm_len();
    let code_len = header.code_len().max(1);
    let total: usize = spans
        .iter()
        .map(|(_, s)| s.len() + s.len() / code_len * norm_len)
        .sum();
    // One buffer for all: a selective filter has a row or two in each of
    // hundreds of clusters.
    let mut joined = Vec::with_capacity(total);
    let mut at = Vec::with_capacity(spans.len());
    for (c, span) in &spans {
        let start = joined.len();
        let span = codes.get(span.clone()).unwrap_or_default();
        joined.extend_from_slice(span);
        joined.extend_from_slice(&header.code_norms(span));
        at.push((*c, start..joined.len()));
    }
    let joined = Bytes::from(joined);
    at.into_iter()
        .map(|(c, range)| (c, joined.slice(range)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Metric;

    #[test]
    fn listed_codes_are_kept_with_their_norms_where_the_metric_needs_them() {
        let dim = 3;
        for (metric, norm_len) in [(Metric::L2, 4), (Metric::Ip, 0)] {
            let header =
                IvfHeader::sq8_one_cluster(metric, vec![0.0; dim], vec![0.5, 1.0, 2.0], 10);
            let codes: Vec<u8> = (0..10 * dim as u8).collect();
            let kept = with_norms(&header, &codes, [(4, 0..3), (7, 6..12)]);
            assert_eq!(kept.len(), 2);
            for ((c, bytes), span) in kept.iter().zip([0..3, 6..12]) {
                let (code, norms) = bytes.split_at(span.len());
                assert_eq!(code, &codes[span.clone()], "cluster {c}");
                assert_eq!(norms.len(), span.len() / dim * norm_len);
                assert_eq!(norms, header.code_norms(code).as_slice());
            }
            // The first code (0, 1, 2) scaled: 0² + 1² + 4².
            if norm_len > 0 {
                assert_eq!(&kept[0].1[3..7], 17f32.to_le_bytes().as_slice());
            }
        }
    }
}
