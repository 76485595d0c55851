//! RaBitQ codes (Gao and Long, SIGMOD 2024): a row's residual from its
//! centroid, randomly rotated, kept as one bit per dimension plus two
//! factors. A query's distance to a row is estimated without bias from bit
//! counts against the query quantised to 4 bits (four bit planes), so a row
//! costs a few `popcnt`s instead of a multiply-add per dimension. The
//! estimate is unbiased but for the query's rounding to 4 bits, which adds
//! a small bias.
//!
//! The rotation is a randomised Hadamard transform (three rounds of random
//! signs and a fast Walsh–Hadamard transform) over the dimensions padded to
//! a power of two: orthonormal, derived from a seed in the header, and
//! applied in `P log P` operations.
//!
//! A code, `P / 8 + 8` bytes: `P` bits (`P / 64` little-endian u64 words,
//! bit `i` set when rotated residual coordinate `i` is positive), the
//! residual's norm `‖o − c‖` (f32), and `⟨x̄, o'⟩` (f32), the inner product of
//! the unit rotated residual with its own ±1/√P quantisation.

use std::borrow::Cow;
use std::sync::OnceLock;

use crate::catalog::Metric;

const ROUNDS: usize = 3;
/// Bits the query side is quantised to (four bit planes).
const QUERY_BITS: usize = 4;

/// The rotation of RaBitQ codes of one index, and the centroids rotated
/// as searches first need them (a cold open rotates none).
#[derive(Debug, Clone)]
pub(crate) struct RaBitQ {
    pub seed: u64,
    dim: usize,
    /// Dimensions padded to a power of two (at least 64: whole words).
    padded: usize,
    /// `ROUNDS × padded` random signs.
    signs: Vec<f32>,
    /// Centroid `c` rotated, once an L2 search probed it.
    rotated_centroids: Vec<OnceLock<Vec<f32>>>,
}

impl PartialEq for RaBitQ {
    fn eq(&self, other: &Self) -> bool {
        // The rest derives from these.
        (self.seed, self.dim) == (other.seed, other.dim)
    }
}

/// The query side of the estimate: the vector the residuals are
/// multiplied with (`q − c` for L2, so per cluster; `q` for the inner
/// products, shared by all clusters), quantised to 4 bits.
#[derive(Debug, Clone)]
pub(crate) struct QueryBits {
    /// `QUERY_BITS` bit planes of the quantised query, `padded / 64` words each.
    planes: Vec<u64>,
    low: f32,
    step: f32,
    /// Σ of the (unquantised) coordinates.
    sum: f32,
}

impl RaBitQ {
    /// The codes' parameters for `nlist` clusters of `dim` dimensions,
    /// from `seed`: sign `i` (of `ROUNDS × P`, round by round) is −1 when
    /// the top bit of the `i`-th SplitMix64 output from `seed` is set (a
    /// generator fixed here, not a library's, so files stay readable).
    pub(crate) fn new(seed: u64, dim: usize, nlist: usize) -> RaBitQ {
        let padded = dim.next_power_of_two().max(64);
        let mut state = seed;
        let signs = (0..ROUNDS * padded)
            .map(|_| {
                if splitmix64(&mut state) >> 63 == 1 {
                    -1.0
                } else {
                    1.0
                }
            })
            .collect();
        RaBitQ {
            seed,
            dim,
            padded,
            signs,
            rotated_centroids: (0..nlist).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Bytes of one row's code.
    pub(crate) fn code_len(&self) -> usize {
        self.padded / 8 + 8
    }

    /// `x` padded with zeros and rotated.
    pub(crate) fn rotate(&self, x: &[f32]) -> Vec<f32> {
        let p = self.padded;
        let mut y = vec![0f32; p];
        y[..x.len().min(p)].copy_from_slice(&x[..x.len().min(p)]);
        let scale = 1.0 / (p as f32).sqrt();
        for round in self.signs.chunks_exact(p) {
            for (v, s) in y.iter_mut().zip(round) {
                *v *= s;
            }
            fwht(&mut y);
            for v in y.iter_mut() {
                *v *= scale;
            }
        }
        y
    }

    /// Appends the code of `row` (in cluster `c`) to `out`.
    pub(crate) fn encode(&self, row: &[f32], c: usize, centroids: &[f32], out: &mut Vec<u8>) {
        let dim = row.len();
        let residual: Vec<f32> = row
            .iter()
            .zip(&centroids[c * dim..(c + 1) * dim])
            .map(|(x, m)| x - m)
            .collect();
        let rotated = self.rotate(&residual);
        let norm = rotated.iter().map(|v| v * v).sum::<f32>().sqrt();
        let mut words = vec![0u64; self.padded / 64];
        for (i, v) in rotated.iter().enumerate() {
            if *v > 0.0 {
                words[i / 64] |= 1 << (i % 64);
            }
        }
        // ⟨x̄, o'⟩ with x̄ = ±1/√P and o' the unit residual: Σ|o'ᵢ| / √P.
        let own = if norm > 0.0 {
            rotated.iter().map(|v| v.abs()).sum::<f32>() / norm / (self.padded as f32).sqrt()
        } else {
            1.0
        };
        for w in words {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&norm.to_le_bytes());
        out.extend_from_slice(&own.to_le_bytes());
    }

    /// The query side shared by every cluster (`None` for L2, whose side
    /// depends on the cluster): `rotated` is the rotated query.
    pub(crate) fn shared(&self, metric: Metric, rotated: &[f32]) -> Option<QueryBits> {
        (metric != Metric::L2).then(|| self.quantise(rotated))
    }

    /// The query side for cluster `c` (whose centroid is `centroid`) and
    /// the metric's offset there: ‖q − c‖² for L2 (estimating
    /// ⟨o − c, q − c⟩), ⟨c, q⟩ for the inner products (estimating
    /// ⟨o − c, q⟩, with `shared` as the side). `q` is the query, `rotated`
    /// the query rotated.
    pub(crate) fn for_cluster<'s>(
        &self,
        metric: Metric,
        (q, rotated): (&[f32], &[f32]),
        shared: Option<&'s QueryBits>,
        c: usize,
        centroid: &[f32],
    ) -> (Cow<'s, QueryBits>, f32) {
        match metric {
            Metric::Ip | Metric::Cosine => {
                let offset = q.iter().zip(centroid).map(|(x, m)| x * m).sum();
                match shared {
                    Some(bits) => (Cow::Borrowed(bits), offset),
                    None => (Cow::Owned(self.quantise(rotated)), offset),
                }
            }
            Metric::L2 => {
                let centroid = self
                    .rotated_centroids
                    .get(c)
                    .map(|r| r.get_or_init(|| self.rotate(centroid)).as_slice())
                    .unwrap_or(&[]);
                let v: Vec<f32> = rotated.iter().zip(centroid).map(|(q, m)| q - m).collect();
                let norm2 = v.iter().map(|x| x * x).sum();
                (Cow::Owned(self.quantise(&v)), norm2)
            }
        }
    }

    fn quantise(&self, v: &[f32]) -> QueryBits {
        let low = v.iter().copied().fold(f32::INFINITY, f32::min);
        let high = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let levels = ((1 << QUERY_BITS) - 1) as f32;
        let step = if high > low {
            (high - low) / levels
        } else {
            1.0
        };
        let words = self.padded / 64;
        let mut planes = vec![0u64; QUERY_BITS * words];
        for (i, x) in v.iter().enumerate() {
            let u = ((x - low) / step).round().clamp(0.0, levels) as u32;
            for (bit, plane) in planes.chunks_exact_mut(words).enumerate() {
                if u >> bit & 1 == 1 {
                    plane[i / 64] |= 1 << (i % 64);
                }
            }
        }
        QueryBits {
            planes,
            low,
            step,
            sum: v.iter().sum(),
        }
    }

    /// Estimated distances of the query (`bits` and `offset` from
    /// [`RaBitQ::for_cluster`] for the rows' cluster) to each code of
    /// `codes`, into `out`, in the metric's terms (squared L2, `1 − cos`,
    /// `−ip`).
    pub(crate) fn distances(
        &self,
        metric: Metric,
        bits: &QueryBits,
        offset: f32,
        codes: &[u8],
        out: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: the CPU has POPCNT.
            return unsafe { distances_popcnt(self, metric, bits, offset, codes, out) };
        }
        distances_portable(self, metric, bits, offset, codes, out);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
unsafe fn distances_popcnt(
    q: &RaBitQ,
    metric: Metric,
    bits: &QueryBits,
    offset: f32,
    codes: &[u8],
    out: &mut [f32],
) {
    distances_portable(q, metric, bits, offset, codes, out)
}

#[inline(always)]
fn distances_portable(
    q: &RaBitQ,
    metric: Metric,
    cq: &QueryBits,
    offset: f32,
    codes: &[u8],
    out: &mut [f32],
) {
    let words = q.padded / 64;
    let root = (q.padded as f32).sqrt();
    for (code, d) in codes.chunks_exact(q.code_len()).zip(out) {
        let word = |k: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&code[k * 8..k * 8 + 8]);
            u64::from_le_bytes(b)
        };
        let (mut ones, mut weighted) = (0u32, 0u32);
        for k in 0..words {
            let w = word(k);
            ones += w.count_ones();
            for bit in 0..QUERY_BITS {
                weighted += (w & cq.planes[bit * words + k]).count_ones() << bit;
            }
        }
        let tail = &code[words * 8..];
        let norm = f32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        let own = f32::from_le_bytes([tail[4], tail[5], tail[6], tail[7]]);
        // Σ over set bits of the query's coordinates, then ⟨x̄, v⟩ with
        // x̄ = (2b − 1)/√P, then the unbiased estimate of ⟨unit residual, v⟩.
        let selected = cq.step * weighted as f32 + cq.low * ones as f32;
        let estimate = (2.0 * selected - cq.sum) / root / own;
        *d = match metric {
            Metric::L2 => norm * norm + offset - 2.0 * norm * estimate,
            Metric::Cosine => 1.0 - (offset + norm * estimate),
            Metric::Ip => -(offset + norm * estimate),
        };
    }
}

/// SplitMix64 (Steele, Lea and Flood 2014): the next output from `state`.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The fast Walsh–Hadamard transform, unnormalised, in place
/// (`x.len()` a power of two).
fn fwht(x: &mut [f32]) {
    let mut h = 1;
    while h < x.len() {
        for block in x.chunks_exact_mut(2 * h) {
            let (a, b) = block.split_at_mut(h);
            for (u, v) in a.iter_mut().zip(b.iter_mut()) {
                let (s, t) = (*u + *v, *u - *v);
                *u = s;
                *v = t;
            }
        }
        h *= 2;
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn the_rotation_keeps_lengths_and_inner_products() {
        let q = RaBitQ::new(7, 5, 1);
        let (a, b) = ([1.0, -2.0, 0.5, 3.0, 0.0], [0.3, 0.1, -1.0, 2.0, 4.0]);
        let (ra, rb) = (q.rotate(&a), q.rotate(&b));
        let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(u, v)| u * v).sum::<f32>();
        assert!((dot(&ra, &ra) - dot(&a, &a)).abs() < 1e-4);
        assert!((dot(&ra, &rb) - dot(&a, &b)).abs() < 1e-4);
    }

    #[test]
    fn estimates_track_true_distances() {
        let (dim, n) = (96, 400);
        let mut rng = SmallRng::seed_from_u64(3);
        let centroid: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
        let rows: Vec<Vec<f32>> = (0..n)
            .map(|_| {
                centroid
                    .iter()
                    .map(|m| m + rng.random_range(-0.5..0.5))
                    .collect()
            })
            .collect();
        let query: Vec<f32> = centroid
            .iter()
            .map(|m| m + rng.random_range(-0.5..0.5))
            .collect();
        for metric in [Metric::L2, Metric::Ip] {
            let q = RaBitQ::new(11, dim, 1);
            let mut codes = Vec::new();
            for r in &rows {
                q.encode(r, 0, &centroid, &mut codes);
            }
            assert_eq!(codes.len(), n * q.code_len());
            let rotated = q.rotate(&query);
            let shared = q.shared(metric, &rotated);
            let (bits, offset) =
                q.for_cluster(metric, (&query, &rotated), shared.as_ref(), 0, &centroid);
            let mut est = vec![0f32; n];
            q.distances(metric, &bits, offset, &codes, &mut est);
            let truth: Vec<f32> = rows
                .iter()
                .map(|r| match metric {
                    Metric::L2 => r.iter().zip(&query).map(|(a, b)| (a - b) * (a - b)).sum(),
                    _ => -r.iter().zip(&query).map(|(a, b)| a * b).sum::<f32>(),
                })
                .collect();
            // Unbiased and close: the mean error is small against the
            // spread of the true distances, and the estimate ranks well.
            let mean_err = est.iter().zip(&truth).map(|(e, t)| e - t).sum::<f32>() / n as f32;
            let spread = {
                let m = truth.iter().sum::<f32>() / n as f32;
                (truth.iter().map(|t| (t - m) * (t - m)).sum::<f32>() / n as f32).sqrt()
            };
            assert!(
                mean_err.abs() < 0.2 * spread,
                "{metric:?}: {mean_err} vs {spread}"
            );
            let best = |v: &[f32]| {
                let mut i: Vec<usize> = (0..n).collect();
                i.sort_by(|a, b| v[*a].total_cmp(&v[*b]));
                i
            };
            let (by_est, by_truth) = (best(&est), best(&truth));
            let top10: Vec<usize> = by_truth[..10].to_vec();
            let found = by_est[..60].iter().filter(|i| top10.contains(i)).count();
            assert!(
                found >= 9,
                "{metric:?}: {found} of the true top 10 in the best 60"
            );
        }
    }
}
