//! Lloyd's k-means on a sample, for IVF centroids.

use rand::rngs::SmallRng;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};

use crate::vector::l2_squared;

/// Index and squared distance of the centroid nearest to `v`.
pub(super) fn nearest(centroids: &[f32], dim: usize, v: &[f32]) -> (usize, f32) {
    let mut best = (0, f32::INFINITY);
    for (c, centroid) in centroids.chunks_exact(dim).enumerate() {
        let d = l2_squared(v, centroid);
        if d < best.1 {
            best = (c, d);
        }
    }
    best
}

/// Assigns every vector to its nearest centroid, on all cores.
pub(super) fn assign(data: &[f32], dim: usize, centroids: &[f32]) -> Vec<u32> {
    let n = data.len() / dim;
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1)
        .min(16);
    let chunk = n.div_ceil(threads).max(1);
    let mut out = vec![0u32; n];
    std::thread::scope(|s| {
        for (part, slots) in out.chunks_mut(chunk).enumerate() {
            let start = part * chunk;
            s.spawn(move || {
                for (i, slot) in slots.iter_mut().enumerate() {
                    let row = start + i;
                    *slot = nearest(centroids, dim, &data[row * dim..(row + 1) * dim]).0 as u32;
                }
            });
        }
    });
    out
}

/// `k` centroids of `data` (row-major, `dim` wide): random initial points
/// from a sample of at most `sample_max` rows, `iterations` Lloyd rounds,
/// and an empty cluster re-seeded by splitting the largest one.
pub(crate) fn kmeans(
    data: &[f32],
    dim: usize,
    k: usize,
    iterations: usize,
    sample_max: usize,
    seed: u64,
) -> Vec<f32> {
    let n = data.len() / dim;
    let k = k.clamp(1, n.max(1));
    let mut rng = SmallRng::seed_from_u64(seed);
    let rows: Vec<usize> = if n > sample_max {
        sample(&mut rng, n, sample_max).into_vec()
    } else {
        (0..n).collect()
    };
    let train: Vec<f32> = rows
        .iter()
        .flat_map(|r| data[r * dim..(r + 1) * dim].iter().copied())
        .collect();
    let m = rows.len();
    let mut centroids: Vec<f32> = sample(&mut rng, m, k)
        .into_iter()
        .flat_map(|r| train[r * dim..(r + 1) * dim].iter().copied())
        .collect();
    for _ in 0..iterations {
        let labels = assign(&train, dim, &centroids);
        let mut sums = vec![0f64; k * dim];
        let mut counts = vec![0usize; k];
        for (row, label) in labels.iter().enumerate() {
            let c = *label as usize;
            counts[c] += 1;
            for d in 0..dim {
                sums[c * dim + d] += train[row * dim + d] as f64;
            }
        }
        for c in 0..k {
            if counts[c] > 0 {
                for d in 0..dim {
                    centroids[c * dim + d] = (sums[c * dim + d] / counts[c] as f64) as f32;
                }
            }
        }
        // Empty clusters take half of the largest one: a perturbed copy of
        // its centroid, so the next round splits it.
        for c in 0..k {
            if counts[c] == 0 {
                let largest = (0..k).max_by_key(|i| counts[*i]).unwrap_or(0);
                for d in 0..dim {
                    let v = centroids[largest * dim + d];
                    centroids[c * dim + d] = v + rng.random_range(-1e-3f32..1e-3) * (1.0 + v.abs());
                }
                counts[largest] /= 2;
                counts[c] = counts[largest];
            }
        }
    }
    centroids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_separated_clusters() {
        // Three tight blobs far apart: every blob gets its own centroid.
        let centres = [[0.0f32, 0.0], [10.0, 10.0], [-10.0, 10.0]];
        let mut rng = SmallRng::seed_from_u64(1);
        let data: Vec<f32> = (0..300)
            .flat_map(|i| {
                let c = centres[i % 3];
                [
                    c[0] + rng.random_range(-0.5..0.5),
                    c[1] + rng.random_range(-0.5..0.5),
                ]
            })
            .collect();
        let centroids = kmeans(&data, 2, 3, 20, 1000, 7);
        for c in centres {
            let (_, d) = nearest(&centroids, 2, &c);
            assert!(d < 0.5, "no centroid near {c:?}: {centroids:?}");
        }
        let labels = assign(&data, 2, &centroids);
        assert!(
            labels
                .chunks(3)
                .all(|l| l[0] != l[1] && l[1] != l[2] && l[0] != l[2])
        );
    }
}
