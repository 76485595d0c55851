//! The search side of the index: which clusters to probe, approximate
//! distances from 8-bit codes, the one probe-and-widen loop, and re-ranking
//! at full precision.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::ops::Range;

use super::rabitq::QueryBits;
use super::{IvfHeader, Quantizer, SearchKnobs};
use crate::catalog::Metric;
use crate::error::{Error, Result};
use crate::vector::{
    I16_DOT_LIMIT, QueryVector, dot, dot_i16_u8_rows, dot_u8_rows, l2_squared, weighted_l2_u8_rows,
};

/// Neighbours a calibration measures recall over: the default
/// `IvfParams::calibration_queries` × 10.
const CALIBRATED_NEIGHBOURS: f32 = 1000.0;

/// A query side in 16-bit integers, `q ≈ x / unit`, for
/// [`dot_i16_u8_rows`]: one step for every component, as fine as 16 bits
/// and `Σ|q| · 255` within 32 bits allow.
pub(crate) struct IntQuery {
    q: Vec<i16>,
    unit: f32,
}

/// Components that must keep this many steps (at the median magnitude of
/// those not zero, which are exact) for the integer kernel to rank codes as the f32 one does: with one
/// component's range far above the others' (a raw feature beside an
/// embedding; under L2 the ratio is squared) one step would round most
/// of them to nothing.
const STEPS_AT_MEDIAN: f32 = 64.0;

impl IntQuery {
    /// `None` where 16 bits cannot hold `x` finely enough (see
    /// [`STEPS_AT_MEDIAN`]) or it is not finite: the f32 kernels then.
    fn new(x: &[f32]) -> Option<IntQuery> {
        let mut magnitudes: Vec<f32> = x.iter().map(|v| v.abs()).filter(|v| *v != 0.0).collect();
        let largest = magnitudes.iter().fold(0f32, |m, v| m.max(*v));
        let sum: f32 = magnitudes.iter().sum();
        let limit = (I16_DOT_LIMIT - x.len() as i64) as f32;
        if !sum.is_finite() || limit <= 0.0 {
            return None;
        }
        if largest == 0.0 {
            return Some(IntQuery {
                q: vec![0; x.len()],
                unit: 0.0,
            });
        }
        // Rounding adds at most half a step a component: `limit` spares one.
        let unit = (largest / i16::MAX as f32).max(sum / limit);
        let mid = magnitudes.len() / 2;
        let (_, median, _) = magnitudes.select_nth_unstable_by(mid, f32::total_cmp);
        if !unit.is_normal() || *median < STEPS_AT_MEDIAN * unit {
            return None;
        }
        let top = i16::MAX as f32;
        Some(IntQuery {
            q: x.iter()
                .map(|v| (v / unit).round().clamp(-top, top) as i16)
                .collect(),
            unit,
        })
    }
}

/// The query side of the approximate distance, prepared once per query.
pub(crate) enum Prepared {
    /// `Σ w·(u − c)²`; `wide` is `w·u`, for runs scored with their codes'
    /// norms (`None`: see [`IntQuery::new`]), and `base` is `Σ w·u²`.
    L2 {
        u: Vec<f32>,
        w: Vec<f32>,
        wide: Option<IntQuery>,
        base: f32,
    },
    /// `bias + Σ v·c`.
    Dot {
        v: Vec<f32>,
        bias: f32,
        wide: Option<IntQuery>,
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
            Metric::L2 => {
                let u: Vec<f32> = q
                    .iter()
                    .zip(min)
                    .zip(scale)
                    .map(|((x, m), s)| (x - m) / s)
                    .collect();
                let w: Vec<f32> = scale.iter().map(|s| s * s).collect();
                let wu: Vec<f32> = u.iter().zip(&w).map(|(u, w)| u * w).collect();
                Prepared::L2 {
                    wide: IntQuery::new(&wu),
                    base: dot(&wu, &u),
                    u,
                    w,
                }
            }
            Metric::Ip | Metric::Cosine => {
                let v: Vec<f32> = q.iter().zip(scale).map(|(x, s)| x * s).collect();
                Prepared::Dot {
                    wide: IntQuery::new(&v),
                    bias: dot(q, min),
                    v,
                }
            }
        }
    }

    /// Bytes of the norm kept beside each code of a run scored as one
    /// ([`IvfHeader::code_norm`]): SQ8 under L2 only.
    pub(crate) fn norm_len(&self) -> usize {
        match (&self.quantizer, self.metric) {
            (Quantizer::Sq8 { .. }, Metric::L2) => 4,
            _ => 0,
        }
    }

    /// `Σ scale²·c²` of an SQ8 code `c`: the part of its L2 distance to
    /// any query that is the code's own, kept beside codes arranged in a
    /// run so the rest is one integer inner product.
    pub(crate) fn code_norm(&self, code: &[u8]) -> f32 {
        match &self.quantizer {
            Quantizer::Sq8 { scale, .. } => code
                .iter()
                .zip(scale)
                .map(|(c, s)| {
                    let x = *c as f32 * s;
                    x * x
                })
                .sum(),
            Quantizer::RaBitQ(_) => 0.0,
        }
    }

    /// [`IvfHeader::code_norm`] of each code of `codes`, one after another
    /// (nothing where [`IvfHeader::norm_len`] is 0).
    pub(crate) fn code_norms(&self, codes: &[u8]) -> Vec<u8> {
        if self.norm_len() == 0 {
            return Vec::new();
        }
        codes
            .chunks_exact(self.code_len().max(1))
            .flat_map(|code| self.code_norm(code).to_le_bytes())
            .collect()
    }

    /// The distance an inner product `ip` stands for (cosine: 1 − ip).
    fn dot_distance(&self, ip: f32) -> f32 {
        if self.metric == Metric::Cosine {
            1.0 - ip
        } else {
            -ip
        }
    }

    /// Approximate distances of `q` (prepared) to codes of cluster `c`
    /// (any cluster where codes are scored alike in all), with their norms
    /// where kept (else empty).
    fn approx(&self, prepared: &Prepared, c: usize, codes: &[u8], norms: &[u8], out: &mut [f32]) {
        if self.codes_span_clusters() {
            self.approx_run(prepared, codes, norms, out);
        } else {
            self.approx_rows(prepared, c, codes, out);
        }
    }

    /// Approximate distances of `q` (prepared) to codes of any clusters,
    /// each with its norm beside (`norms`, [`IvfHeader::norm_len`] bytes
    /// a code): the integer kernel where the metric allows.
    fn approx_run(&self, prepared: &Prepared, codes: &[u8], norms: &[u8], out: &mut [f32]) {
        match prepared {
            Prepared::L2 {
                wide: Some(wide),
                base,
                ..
            } if norms.len() >= 4 * out.len() => {
                dot_i16_u8_rows(&wide.q, codes, out);
                for (d, norm) in out.iter_mut().zip(norms.chunks_exact(4)) {
                    let norm = f32::from_le_bytes([norm[0], norm[1], norm[2], norm[3]]);
                    *d = base + norm - 2.0 * wide.unit * *d;
                }
            }
            Prepared::Dot {
                wide: Some(wide),
                bias,
                ..
            } => {
                dot_i16_u8_rows(&wide.q, codes, out);
                for d in out.iter_mut() {
                    *d = self.dot_distance(bias + wide.unit * *d);
                }
            }
            _ => self.approx_rows(prepared, 0, codes, out),
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
            Prepared::L2 { u, w, .. } => weighted_l2_u8_rows(u, w, codes, out),
            Prepared::Dot { v, bias, .. } => {
                dot_u8_rows(v, codes, out);
                for d in out.iter_mut() {
                    *d = self.dot_distance(bias + *d);
                }
            }
        }
    }

    /// Clusters by closeness of their centroid to `q`, the first `first`
    /// put in order (the rest as a search reaches them).
    pub(crate) fn probe_order(&self, q: &[f32], first: usize) -> ProbeOrder {
        let ranked = self
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
        let mut order = ProbeOrder { ranked, ordered: 0 };
        order.order_to(first);
        order
    }

    /// Starts a search for `q` that probes the clusters of `order` (every
    /// cluster, closest first: [`IvfHeader::probe_order`]) and keeps the
    /// best `candidates` rows by approximate distance.
    pub(crate) fn probe_loop(
        &self,
        q: &QueryVector,
        nprobe: usize,
        candidates: usize,
        order: ProbeOrder,
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
    /// approximate distance; `codes` are the cluster's codes and `norms`
    /// their norms (empty when not kept: the f32 kernel then), `scratch`
    /// holds their distances.
    #[allow(clippy::too_many_arguments)]
    fn scan(
        &self,
        prepared: &Prepared,
        c: usize,
        codes: &[u8],
        norms: &[u8],
        accept: &dyn Fn(usize) -> bool,
        pool: &mut CandidatePool,
        scratch: &mut Vec<f32>,
    ) {
        let start = self.offsets[c] as usize;
        scratch.clear();
        scratch.resize(codes.len() / self.code_len().max(1), 0.0);
        self.approx(prepared, c, codes, norms, scratch);
        for (i, d) in scratch.iter().enumerate() {
            // Asked only of rows that would enter the pool.
            let row = start + i;
            if pool.takes(*d) && accept(row) {
                pool.offer(*d, row as u32);
            }
        }
    }
}

/// Clusters by closeness of their centroid to a query, put in order only
/// as far as a search reads them: a search probes tens of a thousand
/// clusters, and sorting them all cost more than scoring the centroids.
#[derive(Clone, Debug, Default)]
pub(crate) struct ProbeOrder {
    /// (distance, cluster); `ranked[..ordered]` are the closest, in order.
    ranked: Vec<(f32, usize)>,
    ordered: usize,
}

impl ProbeOrder {
    /// Number of clusters.
    pub(crate) fn len(&self) -> usize {
        self.ranked.len()
    }

    /// The clusters ranked `range` by closeness, closest first.
    pub(crate) fn clusters(&mut self, range: Range<usize>) -> Vec<usize> {
        self.order_to(range.end);
        self.ranked
            .get(range.start.min(self.ordered)..range.end.min(self.ordered))
            .unwrap_or_default()
            .iter()
            .map(|(_, c)| *c)
            .collect()
    }

    /// The closest `n` clusters, in no particular order.
    pub(crate) fn nearest(&mut self, n: usize) -> Vec<usize> {
        self.split_at(n);
        self.ranked[..n.min(self.len())]
            .iter()
            .map(|(_, c)| *c)
            .collect()
    }

    /// The clusters ranked from `from` on, in no particular order.
    pub(crate) fn rest(&mut self, from: usize) -> Vec<usize> {
        self.split_at(from);
        self.ranked[from.min(self.len())..]
            .iter()
            .map(|(_, c)| *c)
            .collect()
    }

    /// Puts the closest `end` clusters in order.
    fn order_to(&mut self, end: usize) {
        let end = end.min(self.len());
        if end > self.ordered {
            let from = self.ordered;
            self.split_at(end);
            self.ranked[from..end].sort_unstable_by(closer);
            self.ordered = end;
        }
    }

    /// Makes `ranked[..at]` the closest `at` clusters (in no order past
    /// what is ordered).
    fn split_at(&mut self, at: usize) {
        let rest = &mut self.ranked[self.ordered..];
        let k = at.saturating_sub(self.ordered);
        if k > 0 && k < rest.len() {
            rest.select_nth_unstable_by(k - 1, closer);
        }
    }
}

/// Closer first; equally close clusters by number (the same order every time).
fn closer(a: &(f32, usize), b: &(f32, usize)) -> Ordering {
    a.0.total_cmp(&b.0).then(a.1.cmp(&b.1))
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
    order: ProbeOrder,
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
        let next = self.order.clusters(self.probed..end);
        self.probed = end;
        self.batch = (self.batch * 2).min(self.header.nlist());
        next
    }

    /// Scans cluster `c`, whose codes are `codes` (with their `norms`, see
    /// [`IvfHeader::code_norms`]; empty when not kept), offering the rows
    /// `accept` admits.
    pub(crate) fn scan(
        &mut self,
        c: usize,
        codes: &[u8],
        norms: &[u8],
        accept: &dyn Fn(usize) -> bool,
    ) {
        self.header.scan(
            &self.prepared,
            c,
            codes,
            norms,
            accept,
            &mut self.pool,
            &mut self.scratch,
        );
    }

    /// Offers those of `rows` (of any clusters) that `accept` admits by
    /// their approximate distance; `codes` are the rows' codes one after
    /// another. Only for codes scored alike in every cluster
    /// ([`IvfHeader::codes_span_clusters`]).
    pub(crate) fn scan_rows(
        &mut self,
        rows: &[u32],
        codes: &[u8],
        norms: &[u8],
        accept: &dyn Fn(usize) -> bool,
    ) -> Result<()> {
        if !self.header.codes_span_clusters() {
            return Err(Error::internal(
                "ivf search",
                "codes of many clusters scored as one run",
            ));
        }
        // Any cluster: the scoring does not depend on it.
        self.scan_listed(0, rows, codes, norms, accept);
        Ok(())
    }

    /// Offers those of `rows` (of cluster `c`) that `accept` admits by
    /// their approximate distance; `codes` are the rows' codes one after
    /// another (scanning nothing else), with their norms (or empty).
    pub(crate) fn scan_listed(
        &mut self,
        c: usize,
        rows: &[u32],
        codes: &[u8],
        norms: &[u8],
        accept: &dyn Fn(usize) -> bool,
    ) {
        let len = self.header.code_len().max(1);
        let rows = &rows[..rows.len().min(codes.len() / len)];
        self.scratch.clear();
        self.scratch.resize(rows.len(), 0.0);
        let codes = &codes[..rows.len() * len];
        self.header
            .approx(&self.prepared, c, codes, norms, &mut self.scratch);
        for (d, &row) in self.scratch.iter().zip(rows) {
            if self.pool.takes(*d) && accept(row as usize) {
                self.pool.offer(*d, row);
            }
        }
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

    /// Whether a row at approximate distance `d` would be kept now.
    fn takes(&self, d: f32) -> bool {
        self.heap.len() < self.capacity || self.heap.peek().is_some_and(|w| d < w.0)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_integer_query_is_fine_enough_or_not_made() {
        // Typical: every component kept finely, the sum within the kernel's bound.
        for dim in [16usize, 128, 1536, 16384] {
            let x: Vec<f32> = (0..dim)
                .map(|j| ((j * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let int = IntQuery::new(&x).expect("typical values");
            let sum: i64 = int.q.iter().map(|q| (*q as i64).abs()).sum();
            assert!(sum <= I16_DOT_LIMIT, "{dim}");
            for (x, q) in x.iter().zip(&int.q) {
                assert!((x - int.unit * *q as f32).abs() <= int.unit / 2.0 * 1.001);
            }
        }
        // One component a million times the rest (a 1000x range under L2):
        // they would round to nothing, so the f32 kernels score.
        let mut skewed = vec![1.0f32; 128];
        skewed[5] = 1e6;
        assert!(IntQuery::new(&skewed).is_none());
        // Zeros are exact: a sparse query keeps the integer kernel.
        let mut sparse = vec![0.0f32; 128];
        sparse[..8].copy_from_slice(&[3.0, -2.0, 1.5, 4.0, -1.0, 2.5, 0.5, -3.5]);
        assert!(IntQuery::new(&sparse).is_some());
        // Too small a step to be a normal float, or not finite: none.
        assert!(IntQuery::new(&vec![1e-40f32; 1536]).is_none());
        assert!(IntQuery::new(&[1.0, f32::INFINITY]).is_none());
        assert!(IntQuery::new(&[0.0; 4]).is_some_and(|q| q.unit == 0.0));
    }

    #[test]
    fn runs_with_norms_score_as_the_per_cluster_kernels_do() {
        let dim = 37; // not a multiple of 16: the kernel's tail too
        for metric in [Metric::L2, Metric::Ip, Metric::Cosine] {
            let header = IvfHeader::sq8_one_cluster(
                metric,
                (0..dim).map(|j| -1.0 - j as f32 / 50.0).collect(),
                (0..dim).map(|j| 0.004 + j as f32 / 9000.0).collect(),
                50,
            );
            let codes: Vec<u8> = (0..50 * dim).map(|i| (i * 131 % 256) as u8).collect();
            // Norms only where the metric has use for them.
            let norms: Vec<u8> = codes
                .chunks_exact(dim)
                .filter(|_| metric == Metric::L2)
                .flat_map(|c| header.code_norm(c).to_le_bytes())
                .collect();
            assert_eq!(norms.len(), 50 * header.norm_len());
            let mut q: Vec<f32> = (0..dim)
                .map(|j| ((j * 7 % 11) as f32 - 5.0) / 9.0)
                .collect();
            if metric == Metric::Cosine {
                crate::vector::normalize(&mut q);
            }
            let prepared = header.prepare(&q);
            let (mut want, mut got) = (vec![0f32; 50], vec![0f32; 50]);
            header.approx_rows(&prepared, 0, &codes, &mut want);
            header.approx_run(&prepared, &codes, &norms, &mut got);
            let spread = want.iter().fold(0f32, |m, d| m.max(d.abs()));
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-3 * spread,
                    "{metric:?}: {g} against {w}"
                );
            }
        }
    }

    /// Distances with ties, in a scrambled order.
    fn order() -> ProbeOrder {
        let ranked = (0..200usize).map(|c| (((c * 37) % 50) as f32, c)).collect();
        ProbeOrder { ranked, ordered: 0 }
    }

    #[test]
    fn clusters_come_in_the_order_a_full_sort_gives() {
        let mut all = order().ranked;
        all.sort_by(closer);
        let all: Vec<usize> = all.into_iter().map(|(_, c)| c).collect();
        // Batches as a widening search takes them, and a prefix asked again.
        let mut lazy = order();
        let mut got = Vec::new();
        for range in [0..3, 3..9, 9..21, 21..45, 45..200] {
            got.extend(lazy.clusters(range));
        }
        assert_eq!(got, all);
        assert_eq!(lazy.clusters(0..5), all[..5]);
        assert_eq!(lazy.clusters(190..400), all[190..]);

        // The nearest as a set.
        let mut lazy = order();
        let mut near = lazy.nearest(40);
        near.sort_unstable();
        let mut want = all[..40].to_vec();
        want.sort_unstable();
        assert_eq!(near, want);
        assert_eq!(lazy.clusters(0..50), all[..50]);

        // The rest past a prefix is exactly the other clusters.
        let mut lazy = order();
        assert_eq!(lazy.clusters(0..7), all[..7]);
        let mut rest = lazy.rest(30);
        rest.sort_unstable();
        let mut want = all[30..].to_vec();
        want.sort_unstable();
        assert_eq!(rest, want);
        assert_eq!(lazy.clusters(0..30), all[..30]);
        assert_eq!(lazy.rest(500), Vec::<usize>::new());
    }
}
