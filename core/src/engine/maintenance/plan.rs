//! The compaction policy: which segments to rewrite together, from the
//! manifest and the dead rows each segment holds. Pure, so the policy is
//! tested without storage.
//!
//! Segments live in three states:
//! - **unindexed** (what flushes write): searched exactly. Once they hold
//!   `index_min_rows` rows between them, or [`FANOUT`] of them pile up,
//!   they are merged into one segment, indexed if it is big enough — so a
//!   collection is served by an index seconds after its rows are flushed.
//! - **indexed, unsealed**: grouped in size tiers (each [`FANOUT`]× the one
//!   below). [`FANOUT`] segments in one tier merge into one of the next,
//!   so a row is rewritten about once per tier, log_4(seal / flush size)
//!   times in all, instead of once per flush.
//! - **sealed** (`seal_bytes` reached): never merged again, only rewritten
//!   alone once [`PURGE_DEAD_FRACTION`] of its rows are dead.

use std::collections::{HashMap, HashSet};

use crate::catalog::{CollectionConfig, IndexParams};
use crate::manifest::SegmentEntry;

/// Segments merged at once (and the count of unindexed segments that
/// forces a merge however small they are).
pub const FANOUT: usize = 4;
/// A segment is rewritten alone once this share of its rows is dead
/// (superseded or deleted): storage stays within ~1/(1-f) of live data.
pub const PURGE_DEAD_FRACTION: f64 = 0.2;
/// The reason of a job that rewrites one segment for its dead rows.
pub(super) const PURGE_REASON: &str = "purge dead rows";
/// Sizes below this are one tier.
const TIER_BASE_BYTES: u64 = 1 << 20;

/// One rewrite: these segments (by id) become one merged set of rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Job {
    /// Segment ids, oldest rows first.
    pub inputs: Vec<String>,
    /// Why (for logs and reports).
    pub reason: &'static str,
}

/// The size tier of a segment of `bytes`.
fn tier(bytes: u64) -> u32 {
    let mut t = 0;
    let mut size = TIER_BASE_BYTES;
    while bytes >= size.saturating_mul(FANOUT as u64) && size < u64::MAX / FANOUT as u64 {
        size *= FANOUT as u64;
        t += 1;
    }
    t
}

/// What is due for a collection of `config`. `dead` gives dead rows per
/// segment id, when known; `force` merges every unsealed segment into as
/// few as possible.
pub(super) fn plan(
    segments: &[SegmentEntry],
    dead: Option<&HashMap<String, u64>>,
    config: &CollectionConfig,
    force: bool,
) -> Vec<Job> {
    let (params, dim) = (&config.index, config.dimension as usize);
    let mut jobs = Vec::new();
    let mut taken: HashSet<&str> = HashSet::new();
    let by_lsn = |mut v: Vec<&SegmentEntry>| {
        v.sort_by_key(|s| s.min_lsn);
        v.iter().map(|s| s.id.clone()).collect::<Vec<_>>()
    };
    let unsealed: Vec<&SegmentEntry> = segments.iter().filter(|s| !s.sealed).collect();
    // Every unsealed segment merges together when forced (unless there is
    // nothing to improve: one indexed segment with no dead rows), or once
    // they hold a sealed segment's worth of rows.
    let merge_all = if force {
        let settled = unsealed.len() == 1
            && unsealed[0].index.is_some()
            && dead.is_some_and(|d| d.get(&unsealed[0].id).copied().unwrap_or(0) == 0);
        (!unsealed.is_empty() && !settled).then_some("forced")
    } else {
        reaches_seal(&unsealed, params, dim).then_some("seal")
    };
    if let Some(reason) = merge_all {
        taken.extend(unsealed.iter().map(|s| s.id.as_str()));
        jobs.push(Job {
            inputs: by_lsn(unsealed),
            reason,
        });
    } else if !force {
        let unindexed: Vec<&SegmentEntry> = unsealed
            .iter()
            .copied()
            .filter(|s| s.index.is_none())
            .collect();
        let rows: u64 = unindexed.iter().map(|s| s.rows).sum();
        if rows >= params.index_min_rows || unindexed.len() >= FANOUT {
            taken.extend(unindexed.iter().map(|s| s.id.as_str()));
            jobs.push(Job {
                inputs: by_lsn(unindexed),
                reason: "index new rows",
            });
        }
        let mut tiers: HashMap<u32, Vec<&SegmentEntry>> = HashMap::new();
        for s in unsealed.iter().filter(|s| s.index.is_some()) {
            tiers.entry(tier(s.row_bytes(dim))).or_default().push(s);
        }
        let mut tiers: Vec<_> = tiers.into_iter().collect();
        tiers.sort_by_key(|(t, _)| *t);
        for (_, group) in tiers {
            if group.len() >= FANOUT {
                taken.extend(group.iter().map(|s| s.id.as_str()));
                jobs.push(Job {
                    inputs: by_lsn(group),
                    reason: "merge a tier",
                });
            }
        }
    }
    if let Some(dead) = dead {
        for s in segments {
            // A sealed segment still waiting for its build is left to it.
            let waiting = s.sealed && s.index.is_none();
            let d = dead.get(&s.id).copied().unwrap_or(0);
            if !waiting
                && !taken.contains(s.id.as_str())
                && d > 0
                && d as f64 >= PURGE_DEAD_FRACTION * s.rows as f64
            {
                jobs.push(Job {
                    inputs: vec![s.id.clone()],
                    reason: PURGE_REASON,
                });
            }
        }
    }
    jobs
}

/// Whether `segments` hold enough rows between them for a sealed segment.
fn reaches_seal(segments: &[&SegmentEntry], params: &IndexParams, dim: usize) -> bool {
    let rows: u64 = segments.iter().map(|s| s.rows).sum();
    let bytes: u64 = segments.iter().map(|s| s.row_bytes(dim)).sum();
    rows > 0 && rows >= params.seal_at_rows(bytes as f64 / rows as f64)
}

/// How a merge's rows are cut: full sealed segments of `seal_at` rows,
/// the rest in one unsealed segment. Returns `(start, len, sealed)`.
pub(super) fn cut(rows: usize, seal_at: usize) -> Vec<(usize, usize, bool)> {
    let seal_at = seal_at.max(1);
    let mut out = Vec::new();
    let mut start = 0;
    while start < rows {
        let len = seal_at.min(rows - start);
        out.push((start, len, len >= seal_at));
        start += len;
    }
    out
}

/// Whether a merge output of `rows` rows gets an index built with it.
pub(super) fn index_inline(params: &IndexParams, rows: u64) -> bool {
    rows >= params.index_min_rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::IndexFile;

    fn seg(id: &str, rows: u64, bytes: u64, indexed: bool, sealed: bool, lsn: u64) -> SegmentEntry {
        SegmentEntry {
            id: id.into(),
            data_path: format!("{id}.parquet"),
            rows,
            size_bytes: bytes,
            min_lsn: lsn,
            max_lsn: lsn,
            sealed,
            index: indexed.then(|| IndexFile {
                path: format!("{id}.ivf"),
                size_bytes: 1,
                nlist: 1,
                header_bytes: 1,
            }),
            footer_bytes: 0,
            rows_lsn: None,
        }
    }

    /// A collection of `dim` dimensions (0: row bytes are data file bytes).
    fn config(p: &IndexParams, dim: u32) -> CollectionConfig {
        CollectionConfig {
            name: "c".into(),
            dimension: dim,
            metric: crate::catalog::Metric::L2,
            id_type: crate::catalog::IdType::U64,
            attributes: Vec::new(),
            index: p.clone(),
        }
    }

    #[test]
    fn a_segment_merged_unsealed_is_not_due_for_a_seal_once_indexed() {
        // 1M x 128-d: 520 bytes a row in a flush segment's data file; once
        // merged and indexed, 8 in the data file, 512 of vectors and 128
        // of codes in the index file.
        let p = IndexParams::default();
        let (rows, dim) = (1_000_000u64, 128u32);
        let flushed: Vec<_> = (0..4)
            .map(|i| seg(&format!("f{i}"), rows / 4, rows / 4 * 520, false, false, i))
            .collect();
        let c = config(&p, dim);
        assert_eq!(
            ids(&plan(&flushed, None, &c, false)),
            [["f0", "f1", "f2", "f3"]]
        );
        assert!(!reaches_seal(
            &flushed.iter().collect::<Vec<_>>(),
            &p,
            dim as usize
        ));
        let mut merged = seg("m", rows, rows * 8, true, false, 0);
        if let Some(index) = merged.index.as_mut() {
            index.size_bytes = rows * (512 + 128);
        }
        assert!(plan(&[merged], None, &c, false).is_empty());
    }

    fn ids(jobs: &[Job]) -> Vec<Vec<&str>> {
        jobs.iter()
            .map(|j| j.inputs.iter().map(String::as_str).collect())
            .collect()
    }

    #[test]
    fn small_unindexed_segments_wait_until_enough_rows_or_segments() {
        let p = IndexParams::default();
        let two = [
            seg("a", 100, 1000, false, false, 1),
            seg("b", 100, 1000, false, false, 2),
        ];
        assert!(plan(&two, None, &config(&p, 0), false).is_empty());
        let four: Vec<_> = (0..4)
            .map(|i| seg(&format!("s{i}"), 10, 100, false, false, 10 - i))
            .collect();
        assert_eq!(
            ids(&plan(&four, None, &config(&p, 0), false)),
            [["s3", "s2", "s1", "s0"]],
            "all of them, oldest first"
        );
        let big = [seg("a", p.index_min_rows, 1 << 20, false, false, 1)];
        assert_eq!(ids(&plan(&big, None, &config(&p, 0), false)), [["a"]]);
    }

    #[test]
    fn unsealed_rows_enough_for_a_seal_are_merged_together() {
        let p = IndexParams {
            seal_rows: Some(400),
            ..IndexParams::default()
        };
        let one = [seg("a", 1000, 10_000, false, false, 1)];
        assert_eq!(ids(&plan(&one, None, &config(&p, 0), false)), [["a"]]);
        let p = IndexParams {
            seal_bytes: 1 << 20,
            ..IndexParams::default()
        };
        let mixed = [
            seg("big", 20_000, 600 << 10, true, false, 1),
            seg("new", 5_000, 500 << 10, false, false, 2),
            seg("done", 50_000, 2 << 20, true, true, 0),
        ];
        assert_eq!(
            ids(&plan(&mixed, None, &config(&p, 0), false)),
            [["big", "new"]]
        );
    }

    #[test]
    fn indexed_segments_merge_by_tier() {
        let p = IndexParams::default();
        let mb = 1u64 << 20;
        let mut s: Vec<_> = (0..3)
            .map(|i| seg(&format!("t{i}"), 20_000, 5 * mb, true, false, i))
            .collect();
        s.push(seg("big", 80_000, 20 * mb, true, false, 9));
        assert!(
            plan(&s, None, &config(&p, 0), false).is_empty(),
            "three per tier wait"
        );
        s.push(seg("t3", 20_000, 6 * mb, true, false, 3));
        assert_eq!(
            ids(&plan(&s, None, &config(&p, 0), false)),
            [["t0", "t1", "t2", "t3"]]
        );
        assert_eq!(tier(0), 0);
        assert_eq!(tier(4 * mb - 1), 0);
        assert_eq!(tier(4 * mb), 1);
        assert_eq!(tier(16 * mb), 2);
    }

    #[test]
    fn dead_segments_are_purged_alone_and_sealed_ones_never_merge() {
        let p = IndexParams::default();
        let s: Vec<_> = (0..5)
            .map(|i| seg(&format!("s{i}"), 1000, 1 << 30, true, true, i))
            .collect();
        assert!(
            plan(&s, None, &config(&p, 0), true).is_empty(),
            "sealed: nothing to force"
        );
        let dead: HashMap<String, u64> = [("s1".to_string(), 199), ("s2".to_string(), 200)].into();
        assert_eq!(ids(&plan(&s, Some(&dead), &config(&p, 0), false)), [["s2"]]);
        let waiting = [seg("w", 1000, 1 << 30, false, true, 1)];
        let dead: HashMap<String, u64> = [("w".to_string(), 900)].into();
        assert!(plan(&waiting, Some(&dead), &config(&p, 0), false).is_empty());
    }

    #[test]
    fn cuts_full_sealed_chunks_and_one_remainder() {
        assert_eq!(
            cut(1000, 400),
            [(0, 400, true), (400, 400, true), (800, 200, false)]
        );
        assert_eq!(cut(10, 400), [(0, 10, false)]);
        assert!(cut(0, 5).is_empty());
    }
}
