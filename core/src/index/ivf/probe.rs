//! The search side of the index: which clusters to probe, approximate
//! distances from 8-bit codes, the one probe-and-widen loop, and re-ranking
//! at full precision.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::rabitq::QueryBits;
use super::{IvfHeader, Quantizer, SearchKnobs};
use crate::catalog::Metric;
use crate::error::{Error, Result};
use crate::vector::{QueryVector, dot, dot_u8_rows, l2_squared, weighted_l2_u8_rows};

/// Neighbours a calibration measures recall over: the default
/// `IvfParams::calibration_queries` × 10.
const CALIBRATED_NEIGHBOURS: f32 = 1000.0;

/// The query side of the approximate distance, prepared once per query.
pub(crate) enum Prepared {
    L2 {
        u: Vec<f32>,
        w: Vec<f32>,
    },
    Dot {
        v: Vec<f32>,
        bias: f32,
    },
    /// The rotated query and, for the inner products, its quantised side
    /// shared by every cluster (RaBitQ).
    Rotated {
        query: Vec<f32>,
        rotated: Vec<f32>,
        shared: Option<QueryBits>,
    },
}

impl IvfHeader {
    /// Clusters a search with `knobs` probes first.
    pub(crate) fn nprobe(&self, knobs: &SearchKnobs) -> usize {
        knobs
            .nprobe
            .unwrap_or_else(|| self.nprobe_for(knobs.recall_target))
            .clamp(1, self.nlist())
    }

    /// The smallest calibrated nprobe reaching `target` recall, with two
    /// standard errors of the calibration's estimate to spare (it measures
    /// about a thousand neighbours: a target is a promise, and real
    /// queries are not the sampled rows).
    pub(crate) fn nprobe_for(&self, target: f32) -> usize {
        let spare = 2.0
            * (target * (1.0 - target) / CALIBRATED_NEIGHBOURS)
                .max(0.0)
                .sqrt();
        let needed = (target + spare).min(1.0);
        self.calibration
            .iter()
            .find(|(_, recall)| *recall >= needed)
            .or(self.calibration.last())
            .map(|(n, _)| *n as usize)
            .unwrap_or(self.nlist())
            .clamp(1, self.nlist())
    }

    pub(crate) fn prepare(&self, q: &[f32]) -> Prepared {
        let (min, scale) = match &self.quantizer {
            Quantizer::Sq8 { min, scale } => (min, scale),
            Quantizer::RaBitQ(r) => {
                let rotated = r.rotate(q);
                let shared = r.shared(self.metric, &rotated);
                return Prepared::Rotated {
                    query: q.to_vec(),
                    rotated,
                    shared,
                };
            }
        };
        match self.metric {
            Metric::L2 => Prepared::L2 {
                u: q.iter()
                    .zip(min)
                    .zip(scale)
                    .map(|((x, m), s)| (x - m) / s)
                    .collect(),
                w: scale.iter().map(|s| s * s).collect(),
            },
            Metric::Ip | Metric::Cosine => Prepared::Dot {
                v: q.iter().zip(scale).map(|(x, s)| x * s).collect(),
                bias: dot(q, min),
            },
        }
    }

    /// Approximate distances of `q` (prepared) to every code of a block of
    /// rows of cluster `c`.
    fn approx_rows(&self, prepared: &Prepared, c: usize, codes: &[u8], out: &mut [f32]) {
        match prepared {
            Prepared::Rotated {
                query,
                rotated,
                shared,
            } => {
                if let Quantizer::RaBitQ(r) = &self.quantizer {
                    let centroid = &self.centroids[c * self.dim..(c + 1) * self.dim];
                    let sides = (query.as_slice(), rotated.as_slice());
                    let (bits, offset) =
                        r.for_cluster(self.metric, sides, shared.as_ref(), c, centroid);
                    r.distances(self.metric, &bits, offset, codes, out);
                }
            }
            Prepared::L2 { u, w } => weighted_l2_u8_rows(u, w, codes, out),
            Prepared::Dot { v, bias } => {
                dot_u8_rows(v, codes, out);
                let cosine = self.metric == Metric::Cosine;
                for d in out.iter_mut() {
                    let ip = bias + *d;
                    *d = if cosine { 1.0 - ip } else { -ip };
                }
            }
        }
    }

    /// Clusters by closeness of their centroid to `q`: the first `first`
    /// exactly ordered, the rest ordered only when a widening search needs them.
    pub(crate) fn probe_order(&self, q: &[f32], first: usize) -> Vec<usize> {
        let mut d: Vec<(f32, usize)> = self
            .centroids
            .chunks_exact(self.dim)
            .enumerate()
            .map(|(c, centroid)| {
                // Rows were assigned to their nearest centroid by L2; for
                // cosine (unit vectors) probing must follow the same rule,
                // as centroids of unit vectors are shorter than 1 and an
                // inner product would favour the longer, tighter ones.
                let dist = match self.metric {
                    Metric::L2 | Metric::Cosine => l2_squared(q, centroid),
                    Metric::Ip => -dot(q, centroid),
                };
                (dist, c)
            })
            .collect();
        let first = first.min(d.len());
        if first > 0 && first < d.len() {
            d.select_nth_unstable_by(first - 1, |a, b| a.0.total_cmp(&b.0));
        }
        d[..first].sort_by(|a, b| a.0.total_cmp(&b.0));
        d[first..].sort_by(|a, b| a.0.total_cmp(&b.0));
        d.into_iter().map(|(_, c)| c).collect()
    }

    /// Starts a search for `q` that probes the clusters of `order` (every
    /// cluster, closest first: [`IvfHeader::probe_order`]) and keeps the
    /// best `candidates` rows by approximate distance.
    pub(crate) fn probe_loop(
        &self,
        q: &QueryVector,
        nprobe: usize,
        candidates: usize,
        order: Vec<usize>,
    ) -> ProbeLoop<'_> {
        debug_assert_eq!(q.metric, self.metric);
        ProbeLoop {
            header: self,
            prepared: self.prepare(&q.values),
            pool: CandidatePool::new(candidates),
            nprobe: nprobe.clamp(1, self.nlist()),
            batch: nprobe.clamp(1, self.nlist()),
            probed: 0,
            order,
            scratch: Vec::new(),
        }
    }

    /// Adds the rows of cluster `c` that `accept` admits to `pool`, by
    /// approximate distance; `codes` are the cluster's codes, `scratch`
    /// holds their distances.
    fn scan(
        &self,
        prepared: &Prepared,
        c: usize,
        codes: &[u8],
        accept: &dyn Fn(usize) -> bool,
        pool: &mut CandidatePool,
        scratch: &mut Vec<f32>,
    ) {
        let start = self.offsets[c] as usize;
        scratch.clear();
        scratch.resize(codes.len() / self.code_len().max(1), 0.0);
        self.approx_rows(prepared, c, codes, scratch);
        for (i, d) in scratch.iter().enumerate() {
            let row = start + i;
            if accept(row) {
                pool.offer(*d, row as u32);
            }
        }
    }
}

/// The one probe-and-widen loop of an IVF search, run by queries (over
/// code blocks read through the cache) and by the recall calibration (over
/// codes in memory), so the calibration measures the search queries run.
///
/// It probes the first `nprobe` clusters of the order; while fewer rows
/// than the pool holds passed (a filter or deletes hid them) it widens by
/// batches that double in size, each one more wave for a cold query.
pub(crate) struct ProbeLoop<'h> {
    header: &'h IvfHeader,
    prepared: Prepared,
    pool: CandidatePool,
    order: Vec<usize>,
    nprobe: usize,
    probed: usize,
    batch: usize,
    scratch: Vec<f32>,
}

impl ProbeLoop<'_> {
    /// The clusters to scan next; empty once the search is done.
    pub(crate) fn next_clusters(&mut self) -> Vec<usize> {
        let done =
            self.probed >= self.order.len() || (self.probed >= self.nprobe && self.pool.is_full());
        if done {
            return Vec::new();
        }
        let end = (self.probed + self.batch).min(self.order.len());
        let next = self.order[self.probed..end].to_vec();
        self.probed = end;
        self.batch = (self.batch * 2).min(self.header.nlist());
        next
    }

    /// Scans cluster `c`, whose codes are `codes`, offering the rows
    /// `accept` admits.
    pub(crate) fn scan(&mut self, c: usize, codes: &[u8], accept: &dyn Fn(usize) -> bool) {
        self.header.scan(
            &self.prepared,
            c,
            codes,
            accept,
            &mut self.pool,
            &mut self.scratch,
        );
    }

    /// Offers those of `rows` (of cluster `c`) that `accept` admits by
    /// their approximate distance; `codes` are the rows' codes one after
    /// another (scanning nothing else).
    pub(crate) fn scan_listed(
        &mut self,
        c: usize,
        rows: &[u32],
        codes: &[u8],
        accept: &dyn Fn(usize) -> bool,
    ) {
        let len = self.header.code_len().max(1);
        let rows = &rows[..rows.len().min(codes.len() / len)];
        self.scratch.clear();
        self.scratch.resize(rows.len(), 0.0);
        self.header.approx_rows(
            &self.prepared,
            c,
            &codes[..rows.len() * len],
            &mut self.scratch,
        );
        for (d, &row) in self.scratch.iter().zip(rows) {
            if accept(row as usize) {
                self.pool.offer(*d, row);
            }
        }
    }

    /// Offers those of `rows` (of any clusters) that `accept` admits by
    /// their approximate distance; `codes` are the rows' codes one after
    /// another. Only for codes scored alike in every cluster
    /// ([`IvfHeader::codes_span_clusters`]).
    pub(crate) fn scan_rows(
        &mut self,
        rows: &[u32],
        codes: &[u8],
        accept: &dyn Fn(usize) -> bool,
    ) -> Result<()> {
        if !self.header.codes_span_clusters() {
            return Err(Error::internal(
                "ivf search",
                "codes of many clusters scored as one run",
            ));
        }
        // Any cluster: the scoring does not depend on it.
        self.scan_listed(0, rows, codes, accept);
        Ok(())
    }

    /// Whether the pool holds as many candidates as it keeps.
    pub(crate) fn is_full(&self) -> bool {
        self.pool.is_full()
    }

    /// The candidate rows found, ascending.
    pub(crate) fn candidates(&self) -> Vec<u32> {
        self.pool.rows()
    }
}

/// The best `capacity` candidates by approximate distance.
pub(super) struct CandidatePool {
    heap: BinaryHeap<Candidate>,
    capacity: usize,
}

impl CandidatePool {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            heap: BinaryHeap::with_capacity(capacity + 1),
            capacity: capacity.max(1),
        }
    }

    fn offer(&mut self, d: f32, row: u32) {
        if self.heap.len() < self.capacity {
            self.heap.push(Candidate(d, row));
        } else if self.heap.peek().is_some_and(|w| d < w.0) {
            self.heap.pop();
            self.heap.push(Candidate(d, row));
        }
    }

    pub(super) fn is_full(&self) -> bool {
        self.heap.len() >= self.capacity
    }

    /// Candidate rows, ascending.
    pub(super) fn rows(&self) -> Vec<u32> {
        let mut rows: Vec<u32> = self.heap.iter().map(|c| c.1).collect();
        rows.sort_unstable();
        rows
    }
}

/// Candidates under their exact distance, best `k` first.
pub(crate) fn rerank<'v>(
    q: &QueryVector,
    rows: &[u32],
    vector: &dyn Fn(u32) -> Option<&'v [f32]>,
    k: usize,
) -> Result<Vec<(f32, u32)>> {
    let mut hits = rows
        .iter()
        .map(|row| {
            vector(*row)
                .map(|v| (q.distance(v), *row))
                .ok_or_else(|| Error::corrupt("ivf index", format!("no vector for row {row}")))
        })
        .collect::<Result<Vec<_>>>()?;
    hits.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    hits.truncate(k);
    Ok(hits)
}

impl IvfHeader {
    /// How many candidates a top-`k` search re-ranks by default. A 1-bit
    /// code's estimate is coarser than an 8-bit one's, but its error
    /// shrinks as 1/√dim: below 256 dimensions RaBitQ re-ranks twice as
    /// many (at 128-d, recall stopped at 0.967 with the same number); from
    /// 256 on, as many (at 384-d both reached the same recall, and twice
    /// as many cost a cold query a third round trip when a small cluster
    /// could not fill the pool).
    pub(crate) fn default_rerank(&self, k: usize) -> usize {
        let sq8 = (k * 10).max(100);
        match self.quantizer {
            Quantizer::RaBitQ(_) if self.dim < 256 => 2 * sq8,
            _ => sq8,
        }
    }
}

#[derive(PartialEq)]
struct Candidate(f32, u32);
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}
