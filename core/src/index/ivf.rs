//! IVF-SQ8: centroids, rows grouped by cluster, 8-bit codes, re-ranking.
//!
//! The data file of an indexed segment stores its rows cluster by cluster,
//! so cluster `c` is rows `offsets[c]..offsets[c+1]` there and one contiguous
//! block of codes in the index file:
//!
//! ```text
//! "FLOEIVF1" u32 format u8 metric [3]pad u32 dim u32 nlist u64 rows u32 ncal
//! ncal × (u32 nprobe, f32 recall@10)      calibration: recall by nprobe
//! nlist × dim f32                         centroids
//! (nlist + 1) × u32                       row offsets of the clusters
//! dim × f32 min, dim × f32 scale          SQ8 parameters
//! rows × dim u8                           codes, cluster-major
//! ```
//! Everything before the codes is the header: a cold query reads it once,
//! then only the code blocks of the clusters it probes.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Float32Type;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::kmeans::{assign, kmeans};
use crate::catalog::Metric;
use crate::error::{Error, Result};
use crate::kernels::{dot, dot_u8, l2_squared, weighted_l2_u8};
use crate::search::{
    ExactSearch, Hit, QueryVector, SearchParams, SegmentSearch, id_and_lsn, normalize,
};
use crate::segment::COL_VECTOR;

const MAGIC: &[u8; 8] = b"FLOEIVF1";
const FORMAT: u32 = 1;
/// Recall target of the default (automatic) search.
pub const DEFAULT_RECALL_TARGET: f32 = 0.95;
/// Below this many estimated matching rows, a filtered search scans the
/// matching rows exactly instead of probing more clusters.
const EXACT_FILTER_ROWS: usize = 20_000;

#[derive(Debug, Clone)]
pub struct IvfParams {
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
pub struct SearchKnobs {
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

#[derive(Debug, Clone, PartialEq)]
pub struct IvfIndex {
    pub metric: Metric,
    pub dim: usize,
    pub centroids: Vec<f32>,
    pub offsets: Vec<u32>,
    pub sq_min: Vec<f32>,
    pub sq_scale: Vec<f32>,
    pub codes: Vec<u8>,
    /// `(nprobe, recall@10)` measured at build time, nprobe ascending.
    pub calibration: Vec<(u32, f32)>,
}

/// The query side of the SQ8 distance, prepared once per query.
enum Prepared {
    L2 { u: Vec<f32>, w: Vec<f32> },
    Dot { v: Vec<f32>, bias: f32 },
}

impl IvfIndex {
    pub fn nlist(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn rows(&self) -> usize {
        self.offsets.last().copied().unwrap_or(0) as usize
    }

    /// Builds the index over `vectors` (row-major). Returns it with the row
    /// order of the clustered data file: `order[new_row] = old_row`.
    pub fn build(
        vectors: &[f32],
        dim: usize,
        metric: Metric,
        params: &IvfParams,
    ) -> Result<(IvfIndex, Vec<u32>)> {
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
            metric,
            dim,
            centroids,
            offsets,
            sq_min: lo,
            sq_scale: scale,
            codes,
            calibration: Vec::new(),
        };
        let clustered: Vec<f32> = order
            .iter()
            .flat_map(|r| {
                vectors[*r as usize * dim..(*r as usize + 1) * dim]
                    .iter()
                    .copied()
            })
            .collect();
        index.calibration = index.calibrate(&clustered, params);
        Ok((index, order))
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

    /// The smallest calibrated nprobe reaching `target` recall.
    pub fn nprobe_for(&self, target: f32) -> usize {
        self.calibration
            .iter()
            .find(|(_, recall)| *recall >= target)
            .or(self.calibration.last())
            .map(|(n, _)| *n as usize)
            .unwrap_or(self.nlist())
            .clamp(1, self.nlist())
    }

    fn prepare(&self, q: &[f32]) -> Prepared {
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

    fn approx(&self, prepared: &Prepared, row: usize) -> f32 {
        let code = &self.codes[row * self.dim..(row + 1) * self.dim];
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
    fn probe_order(&self, q: &[f32], first: usize) -> Vec<usize> {
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

    /// Top-k rows (by exact distance) among rows `accept` admits, probing
    /// `nprobe` clusters (more while fewer than `rerank` candidates pass).
    /// `vectors` are the clustered full-precision vectors.
    fn search_rows(
        &self,
        q: &QueryVector,
        k: usize,
        nprobe: usize,
        rerank: usize,
        vectors: &[f32],
        accept: &dyn Fn(usize) -> bool,
    ) -> Vec<(f32, u32)> {
        debug_assert_eq!(q.metric, self.metric);
        let prepared = self.prepare(&q.values);
        let pool = rerank.max(k);
        let mut heap: BinaryHeap<Candidate> = BinaryHeap::with_capacity(pool + 1);
        for (probed, c) in self.probe_order(&q.values, nprobe).into_iter().enumerate() {
            if probed >= nprobe && heap.len() >= pool {
                break;
            }
            for row in self.offsets[c] as usize..self.offsets[c + 1] as usize {
                if !accept(row) {
                    continue;
                }
                let d = self.approx(&prepared, row);
                if heap.len() < pool {
                    heap.push(Candidate(d, row as u32));
                } else if heap.peek().is_some_and(|w| d < w.0) {
                    heap.pop();
                    heap.push(Candidate(d, row as u32));
                }
            }
        }
        let mut exact_hits: Vec<(f32, u32)> = heap
            .into_iter()
            .map(|Candidate(_, row)| {
                let v = &vectors[row as usize * self.dim..(row as usize + 1) * self.dim];
                (q.distance(v), row)
            })
            .collect();
        exact_hits.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        exact_hits.truncate(k);
        exact_hits
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.codes.len() + self.centroids.len() * 4);
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
        for v in self.centroids.iter().chain(std::iter::empty()) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for o in &self.offsets {
            out.extend_from_slice(&o.to_le_bytes());
        }
        for v in self.sq_min.iter().chain(&self.sq_scale) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.codes);
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<IvfIndex> {
        let bad = |what: &str| Error::corrupt("ivf index", what);
        let mut r = Reader { bytes, pos: 0 };
        if r.take(8).ok_or_else(|| bad("too short"))? != MAGIC {
            return Err(bad("bad magic"));
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
        let codes = r
            .take(rows.checked_mul(dim).ok_or_else(|| bad("overflow"))?)
            .ok_or_else(|| bad("codes cut short"))?
            .to_vec();
        if r.pos != bytes.len() {
            return Err(bad("trailing bytes"));
        }
        Ok(IvfIndex {
            metric,
            dim,
            centroids,
            offsets,
            sq_min,
            sq_scale,
            codes,
            calibration,
        })
    }
}

fn default_rerank(k: usize) -> usize {
    (k * 10).max(100)
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

/// An indexed segment held in memory: its clustered rows and its index.
pub struct IvfSearch<'a> {
    pub index: &'a IvfIndex,
    pub batch: &'a RecordBatch,
    pub knobs: SearchKnobs,
}

impl SegmentSearch for IvfSearch<'_> {
    fn search(&self, source: usize, params: &SearchParams<'_>) -> Result<Vec<Hit>> {
        let batch = self.batch;
        let index = self.index;
        if batch.num_rows() != index.rows() {
            return Err(Error::corrupt(
                "ivf index",
                format!(
                    "covers {} rows, the segment has {}",
                    index.rows(),
                    batch.num_rows()
                ),
            ));
        }
        let (ids, lsns) = id_and_lsn(batch)?;
        let vectors = batch
            .column_by_name(COL_VECTOR)
            .and_then(|c| c.as_fixed_size_list_opt())
            .ok_or_else(|| Error::corrupt("segment", "no vector column"))?;
        let offset = vectors.offset() * index.dim;
        let values = &vectors.values().as_primitive::<Float32Type>().values()
            [offset..offset + batch.num_rows() * index.dim];
        let k = params.k;
        let rerank = self.knobs.rerank.unwrap_or_else(|| default_rerank(k));
        let nprobe = self
            .knobs
            .nprobe
            .unwrap_or_else(|| index.nprobe_for(self.knobs.recall_target))
            .clamp(1, index.nlist());
        // Already prepared for the metric (normalised for cosine).
        let q = params.query;

        let visible = params.visible_fn(source, ids, lsns);
        let hits = match params.filter {
            None => index.search_rows(q, k, nprobe, rerank, values, &visible),
            Some(filter) => {
                // Evaluate the filter on the probed clusters' rows only, and
                // estimate its selectivity there.
                let order = index.probe_order(&q.values, nprobe);
                let mut mask = vec![false; batch.num_rows()];
                let (mut scanned, mut passed) = (0usize, 0usize);
                for &c in order.iter().take(nprobe) {
                    let (start, end) = (index.offsets[c] as usize, index.offsets[c + 1] as usize);
                    if end > start {
                        let m = filter.evaluate(&batch.slice(start, end - start))?;
                        passed += m.iter().filter(|b| **b).count();
                        scanned += m.len();
                        mask[start..end].copy_from_slice(&m);
                    }
                }
                let estimate = (passed * batch.num_rows())
                    .checked_div(scanned)
                    .unwrap_or(0);
                if estimate <= EXACT_FILTER_ROWS {
                    // Selective: an exact scan of the matching rows keeps recall.
                    return ExactSearch(batch).search(source, params);
                }
                // Broad: probe (and widen) with the filter inside the scan.
                let full = filter.evaluate(batch)?;
                index.search_rows(q, k, nprobe, rerank, values, &|row| {
                    full[row] && visible(row)
                })
            }
        };
        Ok(hits
            .into_iter()
            .map(|(distance, row)| Hit {
                distance,
                source,
                row: row as usize,
            })
            .collect())
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
        let (index, order) = IvfIndex::build(&v, 8, Metric::L2, &IvfParams::default()).unwrap();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (0..500).collect::<Vec<u32>>(),
            "the order is a permutation"
        );
        let bytes = index.to_bytes();
        assert_eq!(IvfIndex::from_bytes(&bytes).unwrap(), index);
        assert!(IvfIndex::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(IvfIndex::from_bytes(&bad).is_err());
    }

    #[test]
    fn recall_is_calibrated_and_reached_for_every_metric() {
        for metric in [Metric::L2, Metric::Cosine, Metric::Ip] {
            let (n, dim) = (4000, 16);
            let v = data(n, dim, 2);
            let (index, order) = IvfIndex::build(&v, dim, metric, &IvfParams::default()).unwrap();
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
