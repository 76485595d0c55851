//! Building the index: k-means over (a sample of) the vectors, SQ8
//! parameters, the cluster-ordered rewrite, and the recall calibration,
//! which runs the queries' own probe loop.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::probe::{default_rerank, rerank};
use super::{IvfHeader, IvfIndex, IvfParams};
use crate::catalog::Metric;
use crate::error::{Error, Result};
use crate::index::kmeans::{assign, kmeans};
use crate::vector::{QueryVector, dot, normalize};

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
    pub(super) fn search_rows(
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
}
