//! Building the index: k-means over (a sample of) the vectors, SQ8
//! parameters, the cluster-ordered rewrite, and the recall calibration,
//! which runs the queries' own probe loop.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::probe::rerank;
use super::rabitq::RaBitQ;
use super::{IvfHeader, IvfIndex, IvfParams, Quantizer};
use crate::catalog::{CodeKind, Metric};
use crate::error::{Error, Result};
use crate::index::kmeans::{assign, kmeans};
use crate::index::on_all_cores;
use crate::vector::{QueryVector, normalize};

/// What [`IvfIndex::build`] makes.
#[derive(Debug)]
pub(crate) struct BuiltIndex {
    pub index: IvfIndex,
    /// The row order of the clustered data file: `order[new_row] = old_row`.
    pub order: Vec<u32>,
}

impl IvfIndex {
    /// Builds the index over `vectors` (row-major). Besides the codes, it
    /// allocates 8 bytes per row (labels and order), a training sample and,
    /// for cosine only, a normalised copy of the vectors.
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
        let space: std::borrow::Cow<'_, [f32]> = if metric == Metric::Cosine {
            let mut unit = vectors.to_vec();
            unit.chunks_exact_mut(dim).for_each(normalize);
            unit.into()
        } else {
            vectors.into()
        };
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
        drop(labels);
        for c in 0..nlist {
            offsets[c + 1] += offsets[c];
        }
        let (quantizer, codes) = match params.codes {
            CodeKind::Sq8 => sq8_codes(&space, dim, &order),
            CodeKind::Rabitq => {
                let q = RaBitQ::new(params.seed, dim, nlist);
                let mut codes = Vec::with_capacity(n * q.code_len());
                let mut c = 0;
                for (i, &row) in order.iter().enumerate() {
                    while offsets[c + 1] as usize <= i {
                        c += 1;
                    }
                    let v = &space[row as usize * dim..(row as usize + 1) * dim];
                    q.encode(v, c, &centroids, &mut codes);
                }
                (Quantizer::RaBitQ(q), codes)
            }
        };
        let mut index = IvfIndex {
            header: IvfHeader {
                metric,
                dim,
                centroids,
                offsets,
                quantizer,
                calibration: Vec::new(),
            },
            codes,
        };
        drop(space);
        index.header.calibration = index.calibrate(vectors, &order, params);
        Ok(BuiltIndex { index, order })
    }

    /// Recall@10 by nprobe, against exact search, on sampled rows searched
    /// as held-out queries (leave one out: each query's own row is not an
    /// answer). Row `r` of the index is `vectors` row `order[r]`.
    fn calibrate(&self, vectors: &[f32], order: &[u32], params: &IvfParams) -> Vec<(u32, f32)> {
        let (n, dim, k) = (self.rows(), self.dim, 10);
        let row = |r: u32| {
            let at = order[r as usize] as usize * dim;
            vectors.get(at..at + dim)
        };
        let mut rng = SmallRng::seed_from_u64(params.seed ^ 0x5eed);
        // Queries from the data's own distribution, as real queries are:
        // index rows, each excluded from its own answers.
        let held_out: Vec<u32> = (0..params.calibration_queries.min(n))
            .map(|_| rng.random_range(0..n) as u32)
            .collect();
        let queries: Vec<QueryVector> = held_out
            .iter()
            .filter_map(|r| row(*r).map(|v| QueryVector::new(v.to_vec(), self.metric)))
            .collect();
        let truth = exact_top_k(&queries, vectors, dim, k, order, &held_out);
        // Where in each query's probe order the clusters of its true
        // neighbours come: a search at nprobe p can find at most those
        // ranked below p, so once they are (nearly) all covered, probing
        // more finds nothing more and calibration stops there — the
        // largest nprobes cost the most to measure.
        let mut ranks: Vec<usize> = on_all_cores(&queries, |qs, at| {
            let mut out = Vec::new();
            for (q, want) in qs.iter().zip(&truth[at..]) {
                let order = self
                    .probe_order(&q.values, self.nlist())
                    .clusters(0..self.nlist());
                let mut rank = vec![0usize; self.nlist()];
                for (i, c) in order.iter().enumerate() {
                    rank[*c] = i;
                }
                for r in want {
                    let c = self.offsets.partition_point(|o| *o as usize <= *r as usize) - 1;
                    out.push(rank[c.min(self.nlist() - 1)]);
                }
            }
            out
        })
        .into_iter()
        .flatten()
        .collect();
        ranks.sort_unstable();
        let coverage =
            |p: usize| ranks.partition_point(|r| *r < p) as f32 / ranks.len().max(1) as f32;
        // As queries score codes: with their norms (kept beside them; a
        // process without a decoded cache scores with the f32 kernel,
        // the same distances to within rounding).
        let norms = self.code_norms(&self.codes);
        let mut out = Vec::new();
        let mut nprobe = 1;
        loop {
            let nprobe_now = nprobe.min(self.nlist());
            let found: usize = on_all_cores(&queries, |qs, at| {
                qs.iter()
                    .zip(&truth[at..])
                    .zip(&held_out[at..])
                    .map(|((q, want), own)| {
                        let others = |r: usize| r != *own as usize;
                        let rerank = self.default_rerank(k);
                        self.search_rows(q, k, nprobe_now, rerank, &row, &others, &norms)
                            .iter()
                            .filter(|(_, r)| want.contains(r))
                            .count()
                    })
                    .sum::<usize>()
            })
            .into_iter()
            .sum();
            let total: usize = truth.iter().map(Vec::len).sum();
            let recall = if total == 0 {
                1.0
            } else {
                found as f32 / total as f32
            };
            out.push((nprobe_now as u32, recall));
            if nprobe_now >= self.nlist() || recall >= 0.999 || coverage(nprobe_now) >= 0.999 {
                break;
            }
            // Steps of about 1.5× (1, 2, 3, 5, 8, 12, 18, 27, …): a
            // recall target lands on an nprobe at most ~1.5× the cheapest
            // one reaching it, not up to 2×.
            nprobe = (nprobe * 3).div_ceil(2).max(nprobe + 1);
        }
        out
    }

    /// Top-k rows (by exact distance) among rows `accept` admits, by the
    /// query's own [`ProbeLoop`]. `vector` gives the full-precision vector
    /// of an index row; `norms` are [`IvfHeader::code_norms`] of all codes.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn search_rows<'v>(
        &self,
        q: &QueryVector,
        k: usize,
        nprobe: usize,
        rerank_n: usize,
        vector: &dyn Fn(u32) -> Option<&'v [f32]>,
        accept: &dyn Fn(usize) -> bool,
        norms: &[u8],
    ) -> Vec<(f32, u32)> {
        let order = self.probe_order(&q.values, nprobe);
        let mut probe = self.probe_loop(q, nprobe, rerank_n.max(k), order);
        loop {
            let next = probe.next_clusters();
            if next.is_empty() {
                break;
            }
            for c in next {
                let (len, norm_len) = (self.code_len(), self.norm_len());
                let (from, to) = (self.offsets[c] as usize, self.offsets[c + 1] as usize);
                let norms = norms
                    .get(from * norm_len..to * norm_len)
                    .unwrap_or_default();
                probe.scan(c, &self.codes[from * len..to * len], norms, accept);
            }
        }
        rerank(q, &probe.candidates(), vector, k).unwrap_or_default()
    }
}

/// SQ8 codes of `space`'s rows in `order`: each dimension's range over
/// the segment in 255 steps.
fn sq8_codes(space: &[f32], dim: usize, order: &[u32]) -> (Quantizer, Vec<u8>) {
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
    let mut codes = Vec::with_capacity(order.len() * dim);
    for &row in order {
        let v = &space[row as usize * dim..(row as usize + 1) * dim];
        for d in 0..dim {
            codes.push(((v[d] - lo[d]) / scale[d]).round().clamp(0.0, 255.0) as u8);
        }
    }
    (Quantizer::Sq8 { min: lo, scale }, codes)
}

/// The exact top-`k` index rows for each query but its own index row
/// (`own`, one per query). Each core takes a share of the queries and
/// streams the vectors once for all of them, block by block (in storage
/// order: index row `i` is `vectors` row `order[i]`).
fn exact_top_k(
    queries: &[QueryVector],
    vectors: &[f32],
    dim: usize,
    k: usize,
    order: &[u32],
    own: &[u32],
) -> Vec<Vec<u32>> {
    const BLOCK_ROWS: usize = 1024;
    let mut position = vec![0u32; order.len()];
    for (i, r) in order.iter().enumerate() {
        position[*r as usize] = i as u32;
    }
    on_all_cores(queries, |qs, at| {
        // Per query: the k best so far, worst on top.
        let mut best: Vec<std::collections::BinaryHeap<(OrdF32, u32)>> =
            vec![std::collections::BinaryHeap::with_capacity(k + 1); qs.len()];
        let mut distances = vec![0f32; BLOCK_ROWS];
        for (b, block) in vectors.chunks(BLOCK_ROWS * dim).enumerate() {
            for ((q, heap), own) in qs.iter().zip(best.iter_mut()).zip(&own[at..]) {
                let distances = &mut distances[..block.len() / dim];
                q.distances(block, distances);
                for (i, d) in distances.iter().enumerate() {
                    let r = b * BLOCK_ROWS + i;
                    if order[*own as usize] as usize == r {
                        continue;
                    }
                    let d = OrdF32(*d);
                    if heap.len() < k {
                        heap.push((d, (b * BLOCK_ROWS + i) as u32));
                    } else if heap.peek().is_some_and(|w| d < w.0) {
                        heap.pop();
                        heap.push((d, (b * BLOCK_ROWS + i) as u32));
                    }
                }
            }
        }
        best.into_iter()
            .map(|h| h.into_iter().map(|(_, r)| position[r as usize]).collect())
            .collect::<Vec<Vec<u32>>>()
    })
    .into_iter()
    .flatten()
    .collect()
}

/// An f32 ordered by `total_cmp`, for heaps.
#[derive(Clone, Copy, PartialEq)]
struct OrdF32(f32);
impl Eq for OrdF32 {}
impl PartialOrd for OrdF32 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrdF32 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}
