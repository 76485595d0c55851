//! IVF-SQ8: centroids, rows grouped by cluster, 8-bit codes, re-ranking.
//!
//! The data file of an indexed segment stores its rows cluster by cluster,
//! so cluster `c` is rows `offsets[c]..offsets[c+1]` there and one contiguous
//! block of codes (and of full-precision vectors) in the index file:
//!
//! ```text
//! "FLOEIVF2" u32 format u8 metric [3]pad u32 dim u32 nlist u64 rows u32 ncal
//! ncal × (u32 nprobe, f32 recall@10)      calibration: recall by nprobe
//! nlist × dim f32                         centroids
//! (nlist + 1) × u32                       row offsets of the clusters
//! dim × f32 min, dim × f32 scale          SQ8 parameters
//! rows × dim u8                           codes, cluster-major
//! rows × dim f32                          vectors, cluster-major (re-rank)
//! ```
//! Everything before the codes is the header ([`IvfHeader`]): a cold query
//! reads it once, then only the code blocks of the clusters it probes, then
//! only the vectors of the candidates it re-ranks.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::kmeans::{assign, kmeans};
use crate::catalog::Metric;
use crate::error::{Error, Result};
use crate::vector::{QueryVector, dot, dot_u8, l2_squared, normalize, weighted_l2_u8};

const MAGIC: &[u8; 8] = b"FLOEIVF2";
const FORMAT: u32 = 2;
/// Bytes before the calibration table.
const FIXED_HEADER: usize = 36;
/// Recall target of the default (automatic) search.
pub(super) const DEFAULT_RECALL_TARGET: f32 = 0.95;
/// Below this many estimated matching rows, a filtered search scans the
/// matching rows exactly instead of probing more clusters.
pub(crate) const EXACT_FILTER_ROWS: usize = 20_000;

#[derive(Debug, Clone)]
pub(crate) struct IvfParams {
    /// Clusters; default `√rows` clamped to 1…4096.
    pub nlist: Option<usize>,
    pub iterations: usize,
    /// Rows k-means trains on.
    pub train_sample: usize,
    /// Queries used to calibrate recall by nprobe.
    pub calibration_queries: usize,
    pub seed: u64,
}

impl Default for IvfParams {
    fn default() -> Self {
        Self {
            nlist: None,
            iterations: 10,
            train_sample: 100_000,
            calibration_queries: 64,
            seed: 42,
        }
    }
}

/// How hard a search looks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SearchKnobs {
    /// Clusters to probe; `None` picks from `recall_target`.
    pub nprobe: Option<usize>,
    /// Candidates re-ranked with full-precision vectors.
    pub rerank: Option<usize>,
    pub recall_target: f32,
}

impl Default for SearchKnobs {
    fn default() -> Self {
        Self {
            nprobe: None,
            rerank: None,
            recall_target: DEFAULT_RECALL_TARGET,
        }
    }
}

/// Everything a search needs before it touches codes or vectors.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct IvfHeader {
    pub metric: Metric,
    pub dim: usize,
    pub centroids: Vec<f32>,
    pub offsets: Vec<u32>,
    pub sq_min: Vec<f32>,
    pub sq_scale: Vec<f32>,
    /// `(nprobe, recall@10)` measured at build time, nprobe ascending.
    pub calibration: Vec<(u32, f32)>,
}

/// A built index: the header and all codes, in memory.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct IvfIndex {
    pub header: IvfHeader,
    pub codes: Vec<u8>,
}

impl std::ops::Deref for IvfIndex {
    type Target = IvfHeader;
    fn deref(&self) -> &IvfHeader {
        &self.header
    }
}

/// The query side of the SQ8 distance, prepared once per query.
pub(crate) enum Prepared {
    L2 { u: Vec<f32>, w: Vec<f32> },
    Dot { v: Vec<f32>, bias: f32 },
}

impl IvfHeader {
    pub(crate) fn nlist(&self) -> usize {
        self.offsets.len() - 1
    }

    pub(crate) fn rows(&self) -> usize {
        self.offsets.last().copied().unwrap_or(0) as usize
    }

    /// Clusters a search with `knobs` probes first.
    pub(crate) fn nprobe(&self, knobs: &SearchKnobs) -> usize {
        knobs
            .nprobe
            .unwrap_or_else(|| self.nprobe_for(knobs.recall_target))
            .clamp(1, self.nlist())
    }

    /// The smallest calibrated nprobe reaching `target` recall.
    pub(crate) fn nprobe_for(&self, target: f32) -> usize {
        self.calibration
            .iter()
            .find(|(_, recall)| *recall >= target)
            .or(self.calibration.last())
            .map(|(n, _)| *n as usize)
            .unwrap_or(self.nlist())
            .clamp(1, self.nlist())
    }

    pub(crate) fn prepare(&self, q: &[f32]) -> Prepared {
        match self.metric {
            Metric::L2 => Prepared::L2 {
                u: q.iter()
                    .zip(&self.sq_min)
                    .zip(&self.sq_scale)
                    .map(|((x, m), s)| (x - m) / s)
                    .collect(),
                w: self.sq_scale.iter().map(|s| s * s).collect(),
            },
            Metric::Ip | Metric::Cosine => Prepared::Dot {
                v: q.iter().zip(&self.sq_scale).map(|(x, s)| x * s).collect(),
                bias: dot(q, &self.sq_min),
            },
        }
    }

    fn approx(&self, prepared: &Prepared, code: &[u8]) -> f32 {
        match prepared {
            Prepared::L2 { u, w } => weighted_l2_u8(u, w, code),
            Prepared::Dot { v, bias } => {
                let ip = bias + dot_u8(v, code);
                if self.metric == Metric::Cosine {
                    1.0 - ip
                } else {
                    -ip
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
        }
    }

    /// Adds the rows of cluster `c` that `accept` admits to `pool`, by
    /// approximate distance; `codes` are the cluster's codes.
    fn scan(
        &self,
        prepared: &Prepared,
        c: usize,
        codes: &[u8],
        accept: &dyn Fn(usize) -> bool,
        pool: &mut CandidatePool,
    ) {
        let start = self.offsets[c] as usize;
        for (i, code) in codes.chunks_exact(self.dim).enumerate() {
            let row = start + i;
            if accept(row) {
                pool.offer(self.approx(prepared, code), row as u32);
            }
        }
    }

    /// Bytes of the header: everything before the codes.
    pub(crate) fn header_len(&self) -> u64 {
        header_len(self.dim, self.nlist(), self.calibration.len())
    }

    /// Where cluster `c`'s codes are in the index file.
    pub(crate) fn codes_range(&self, c: usize) -> std::ops::Range<u64> {
        let (dim, h) = (self.dim as u64, self.header_len());
        h + self.offsets[c] as u64 * dim..h + self.offsets[c + 1] as u64 * dim
    }

    /// Where row `row`'s full-precision vector is in the index file.
    pub(crate) fn vector_range(&self, row: usize) -> std::ops::Range<u64> {
        let (dim, rows) = (self.dim as u64, self.rows() as u64);
        let start = self.header_len() + rows * dim + row as u64 * dim * 4;
        start..start + dim * 4
    }

    /// Size of the whole index file.
    pub(crate) fn file_len(&self) -> u64 {
        self.header_len() + self.rows() as u64 * self.dim as u64 * 5
    }

    /// Parses a header (the first [`IvfHeader::header_len`] bytes; more is
    /// ignored).
    pub(crate) fn parse(bytes: &[u8]) -> Result<IvfHeader> {
        let bad = |what: &str| Error::corrupt("ivf index", what);
        let mut r = Reader { bytes, pos: 0 };
        if r.take(8).ok_or_else(|| bad("too short"))? != MAGIC {
            return Err(bad("bad magic (an index of an older format: rebuild it)"));
        }
        let format = r.u32().ok_or_else(|| bad("too short"))?;
        if format != FORMAT {
            return Err(bad("unknown format"));
        }
        let metric = match r.take(4).ok_or_else(|| bad("too short"))?[0] {
            0 => Metric::L2,
            1 => Metric::Cosine,
            2 => Metric::Ip,
            _ => return Err(bad("unknown metric")),
        };
        let dim = r.u32().ok_or_else(|| bad("too short"))? as usize;
        let nlist = r.u32().ok_or_else(|| bad("too short"))? as usize;
        let rows = r.u64().ok_or_else(|| bad("too short"))? as usize;
        let ncal = r.u32().ok_or_else(|| bad("too short"))? as usize;
        if dim == 0 || nlist == 0 || ncal > 64 {
            return Err(bad("bad header"));
        }
        let mut calibration = Vec::with_capacity(ncal);
        for _ in 0..ncal {
            calibration.push((
                r.u32().ok_or_else(|| bad("too short"))?,
                r.f32().ok_or_else(|| bad("too short"))?,
            ));
        }
        let centroids = r
            .f32s(nlist.checked_mul(dim).ok_or_else(|| bad("overflow"))?)
            .ok_or_else(|| bad("too short"))?;
        let offsets: Vec<u32> = (0..=nlist)
            .map(|_| r.u32())
            .collect::<Option<_>>()
            .ok_or_else(|| bad("too short"))?;
        let sq_min = r.f32s(dim).ok_or_else(|| bad("too short"))?;
        let sq_scale = r.f32s(dim).ok_or_else(|| bad("too short"))?;
        if offsets.windows(2).any(|w| w[0] > w[1]) || offsets.last().copied() != Some(rows as u32) {
            return Err(bad("bad cluster offsets"));
        }
        Ok(IvfHeader {
            metric,
            dim,
            centroids,
            offsets,
            sq_min,
            sq_scale,
            calibration,
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        out.push(match self.metric {
            Metric::L2 => 0,
            Metric::Cosine => 1,
            Metric::Ip => 2,
        });
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(&(self.dim as u32).to_le_bytes());
        out.extend_from_slice(&(self.nlist() as u32).to_le_bytes());
        out.extend_from_slice(&(self.rows() as u64).to_le_bytes());
        out.extend_from_slice(&(self.calibration.len() as u32).to_le_bytes());
        for (n, r) in &self.calibration {
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(&r.to_le_bytes());
        }
        for v in &self.centroids {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for o in &self.offsets {
            out.extend_from_slice(&o.to_le_bytes());
        }
        for v in self.sq_min.iter().chain(&self.sq_scale) {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

fn header_len(dim: usize, nlist: usize, ncal: usize) -> u64 {
    (FIXED_HEADER + ncal * 8 + nlist * dim * 4 + (nlist + 1) * 4 + dim * 8) as u64
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
        self.header
            .scan(&self.prepared, c, codes, accept, &mut self.pool);
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

/// How many candidates are re-ranked for a top-`k` search by default.
pub(crate) fn default_rerank(k: usize) -> usize {
    (k * 10).max(100)
}

/// What [`IvfIndex::build`] makes.
#[derive(Debug)]
pub(crate) struct BuiltIndex {
    pub index: IvfIndex,
    /// The row order of the clustered data file: `order[new_row] = old_row`.
    pub order: Vec<u32>,
    /// The vectors in that order (row-major), as the index file stores them.
    pub clustered: Vec<f32>,
}

impl IvfIndex {
    /// Builds the index over `vectors` (row-major).
    pub(crate) fn build(
        vectors: &[f32],
        dim: usize,
        metric: Metric,
        params: &IvfParams,
    ) -> Result<BuiltIndex> {
        if dim == 0 || !vectors.len().is_multiple_of(dim) || vectors.is_empty() {
            return Err(Error::invalid(
                "vectors",
                "need at least one vector of the given dimension",
            ));
        }
        let n = vectors.len() / dim;
        // Cosine works on unit vectors: cluster and quantise those.
        let mut space = vectors.to_vec();
        if metric == Metric::Cosine {
            space.chunks_exact_mut(dim).for_each(normalize);
        }
        let nlist = params
            .nlist
            .unwrap_or_else(|| (n as f64).sqrt().round() as usize)
            .clamp(1, 4096.min(n));
        let centroids = kmeans(
            &space,
            dim,
            nlist,
            params.iterations,
            params.train_sample.max(nlist),
            params.seed,
        );
        let labels = assign(&space, dim, &centroids);
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_by_key(|r| labels[*r as usize]);
        let mut offsets = vec![0u32; nlist + 1];
        for label in &labels {
            offsets[*label as usize + 1] += 1;
        }
        for c in 0..nlist {
            offsets[c + 1] += offsets[c];
        }
        let (mut lo, mut hi) = (vec![f32::INFINITY; dim], vec![f32::NEG_INFINITY; dim]);
        for v in space.chunks_exact(dim) {
            for d in 0..dim {
                lo[d] = lo[d].min(v[d]);
                hi[d] = hi[d].max(v[d]);
            }
        }
        let scale: Vec<f32> = lo
            .iter()
            .zip(&hi)
            .map(|(l, h)| if h > l { (h - l) / 255.0 } else { 1.0 })
            .collect();
        let mut codes = Vec::with_capacity(n * dim);
        for &row in &order {
            let v = &space[row as usize * dim..(row as usize + 1) * dim];
            for d in 0..dim {
                codes.push(((v[d] - lo[d]) / scale[d]).round().clamp(0.0, 255.0) as u8);
            }
        }
        let mut index = IvfIndex {
            header: IvfHeader {
                metric,
                dim,
                centroids,
                offsets,
                sq_min: lo,
                sq_scale: scale,
                calibration: Vec::new(),
            },
            codes,
        };
        let clustered: Vec<f32> = order
            .iter()
            .flat_map(|r| {
                vectors[*r as usize * dim..(*r as usize + 1) * dim]
                    .iter()
                    .copied()
            })
            .collect();
        index.header.calibration = index.calibrate(&clustered, params);
        Ok(BuiltIndex {
            index,
            order,
            clustered,
        })
    }

    /// Recall@10 by nprobe on queries near sampled rows, against exact search.
    fn calibrate(&self, vectors: &[f32], params: &IvfParams) -> Vec<(u32, f32)> {
        let (n, dim, k) = (self.rows(), self.dim, 10);
        let mut rng = SmallRng::seed_from_u64(params.seed ^ 0x5eed);
        let spread: f32 = {
            let v = &vectors[..dim.min(vectors.len())];
            (dot(v, v) / dim as f32).sqrt().max(1e-3)
        };
        // Queries between the data: the midpoint of two random rows plus
        // noise, harder than near-duplicates of stored rows.
        let queries: Vec<QueryVector> = (0..params.calibration_queries.min(n))
            .map(|_| {
                let (a, b) = (rng.random_range(0..n), rng.random_range(0..n));
                let values = (0..dim)
                    .map(|d| {
                        0.5 * (vectors[a * dim + d] + vectors[b * dim + d])
                            + rng.random_range(-0.1f32..0.1) * spread
                    })
                    .collect();
                QueryVector::new(values, self.metric)
            })
            .collect();
        let truth: Vec<Vec<u32>> = queries
            .iter()
            .map(|q| {
                let mut all: Vec<(f32, u32)> = (0..n)
                    .map(|r| (q.distance(&vectors[r * dim..(r + 1) * dim]), r as u32))
                    .collect();
                let k = k.min(n);
                all.select_nth_unstable_by(k.saturating_sub(1), |a, b| a.0.total_cmp(&b.0));
                all[..k].iter().map(|(_, r)| *r).collect()
            })
            .collect();
        let mut out = Vec::new();
        let mut nprobe = 1;
        loop {
            let nprobe_now = nprobe.min(self.nlist());
            let mut found = 0usize;
            let mut total = 0usize;
            for (q, want) in queries.iter().zip(&truth) {
                let got = self.search_rows(q, k, nprobe_now, default_rerank(k), vectors, &|_| true);
                total += want.len();
                found += got.iter().filter(|(_, r)| want.contains(r)).count();
            }
            let recall = if total == 0 {
                1.0
            } else {
                found as f32 / total as f32
            };
            out.push((nprobe_now as u32, recall));
            if nprobe_now >= self.nlist() || recall >= 0.999 {
                break;
            }
            nprobe *= 2;
        }
        out
    }

    /// Top-k rows (by exact distance) among rows `accept` admits, by the
    /// query's own [`ProbeLoop`]. `vectors` are the clustered full-precision
    /// vectors.
    fn search_rows(
        &self,
        q: &QueryVector,
        k: usize,
        nprobe: usize,
        rerank_n: usize,
        vectors: &[f32],
        accept: &dyn Fn(usize) -> bool,
    ) -> Vec<(f32, u32)> {
        let order = self.probe_order(&q.values, nprobe);
        let mut probe = self.probe_loop(q, nprobe, rerank_n.max(k), order);
        loop {
            let next = probe.next_clusters();
            if next.is_empty() {
                break;
            }
            for c in next {
                let codes = &self.codes
                    [self.offsets[c] as usize * self.dim..self.offsets[c + 1] as usize * self.dim];
                probe.scan(c, codes, accept);
            }
        }
        let dim = self.dim;
        rerank(
            q,
            &probe.candidates(),
            &|row| vectors.get(row as usize * dim..(row as usize + 1) * dim),
            k,
        )
        .unwrap_or_default()
    }

    /// The index file: header, codes, then `vectors` (the clustered
    /// full-precision vectors, row-major).
    pub(crate) fn to_bytes(&self, vectors: &[f32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.file_len() as usize);
        self.header.write(&mut out);
        out.extend_from_slice(&self.codes);
        for v in vectors {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Parses a whole index file: the index and its vectors.
    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<(IvfIndex, Vec<f32>)> {
        let header = IvfHeader::parse(bytes)?;
        if bytes.len() as u64 != header.file_len() {
            return Err(Error::corrupt(
                "ivf index",
                format!("{} bytes, expected {}", bytes.len(), header.file_len()),
            ));
        }
        let h = header.header_len() as usize;
        let n = header.rows() * header.dim;
        let codes = bytes[h..h + n].to_vec();
        let vectors = bytes[h + n..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok((IvfIndex { header, codes }, vectors))
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

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn f32(&mut self) -> Option<f32> {
        self.u32().map(f32::from_bits)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }
    fn f32s(&mut self, n: usize) -> Option<Vec<f32>> {
        let b = self.take(n.checked_mul(4)?)?;
        Some(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let centres: Vec<Vec<f32>> = (0..20)
            .map(|_| (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect())
            .collect();
        (0..n)
            .flat_map(|i| {
                centres[i % 20]
                    .iter()
                    .map(|x| x + rng.random_range(-0.2f32..0.2))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn round_trips_through_bytes_and_rejects_damage() {
        let v = data(500, 8, 1);
        let BuiltIndex {
            index,
            order,
            clustered: built,
        } = IvfIndex::build(&v, 8, Metric::L2, &IvfParams::default()).unwrap();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (0..500).collect::<Vec<u32>>(),
            "the order is a permutation"
        );
        let clustered: Vec<f32> = order
            .iter()
            .flat_map(|r| v[*r as usize * 8..(*r as usize + 1) * 8].to_vec())
            .collect();
        assert_eq!(built, clustered, "the vectors in the order of the rows");
        let bytes = index.to_bytes(&clustered);
        assert_eq!(bytes.len() as u64, index.file_len());
        let (back, vectors) = IvfIndex::from_bytes(&bytes).unwrap();
        assert_eq!((back, vectors), (index.clone(), clustered));
        let header = IvfHeader::parse(&bytes[..index.header_len() as usize]).unwrap();
        assert_eq!(header, index.header);
        let c = 3;
        let codes =
            &bytes[header.codes_range(c).start as usize..header.codes_range(c).end as usize];
        let first = header.offsets[c] as usize;
        assert_eq!(
            codes,
            &index.codes[first * 8..header.offsets[c + 1] as usize * 8]
        );
        assert!(IvfIndex::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        assert!(IvfHeader::parse(&bytes[..index.header_len() as usize - 1]).is_err());
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(IvfIndex::from_bytes(&bad).is_err());
    }

    #[test]
    fn recall_is_calibrated_and_reached_for_every_metric() {
        for metric in [Metric::L2, Metric::Cosine, Metric::Ip] {
            let (n, dim) = (4000, 16);
            let v = data(n, dim, 2);
            let BuiltIndex { index, order, .. } =
                IvfIndex::build(&v, dim, metric, &IvfParams::default()).unwrap();
            let clustered: Vec<f32> = order
                .iter()
                .flat_map(|r| v[*r as usize * dim..(*r as usize + 1) * dim].to_vec())
                .collect();
            assert!(
                index.calibration.windows(2).all(|w| w[0].0 < w[1].0),
                "{:?}",
                index.calibration
            );
            let nprobe = index.nprobe_for(0.95);
            let mut rng = SmallRng::seed_from_u64(9);
            let (mut found, mut total) = (0, 0);
            for _ in 0..50 {
                // A stored row moved further than the blobs' own spread.
                let r = rng.random_range(0..n);
                let q: Vec<f32> = (0..dim)
                    .map(|d| v[r * dim + d] + rng.random_range(-0.4f32..0.4))
                    .collect();
                let q = QueryVector::new(q, metric);
                let mut all: Vec<(f32, u32)> = (0..n)
                    .map(|r| (q.distance(&clustered[r * dim..(r + 1) * dim]), r as u32))
                    .collect();
                all.sort_by(|a, b| a.0.total_cmp(&b.0));
                let want: Vec<u32> = all[..10].iter().map(|x| x.1).collect();
                let got = index.search_rows(&q, 10, nprobe, 100, &clustered, &|_| true);
                found += got.iter().filter(|(_, r)| want.contains(r)).count();
                total += 10;
            }
            let recall = found as f32 / total as f32;
            assert!(
                recall >= 0.9,
                "{metric:?}: recall {recall} at nprobe {nprobe} ({:?})",
                index.calibration
            );
        }
    }
}
