//! Lloyd's k-means on a sample, for IVF centroids.

use rand::rngs::SmallRng;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};

use super::on_all_cores;
use crate::vector::dot;

/// Index and squared distance of the centroid nearest to `v`.
#[cfg(test)]
fn nearest(centroids: &[f32], dim: usize, v: &[f32]) -> (usize, f32) {
    let mut best = (0, f32::INFINITY);
    for (c, centroid) in centroids.chunks_exact(dim).enumerate() {
        let d = crate::vector::l2_squared(v, centroid);
        if d < best.1 {
            best = (c, d);
        }
    }
    best
}

/// Rows per block of the assignment's matrix product: the block's
/// distances (rows × centroids × 4 bytes, ≤ 4 MiB at 4096 centroids) stay
/// in cache.
const ASSIGN_BLOCK_ROWS: usize = 256;

/// Assigns every vector to its nearest centroid, on all cores. The
/// distances of a block of rows to every centroid come from one matrix
/// product: ‖x − c‖² = ‖x‖² − 2·x·c + ‖c‖², and ‖x‖² does not change which
/// centroid is nearest.
pub(super) fn assign(data: &[f32], dim: usize, centroids: &[f32]) -> Vec<u32> {
    let n = data.len() / dim;
    let k = centroids.len() / dim;
    if n == 0 || k == 0 {
        return vec![0; n];
    }
    let norms: Vec<f32> = centroids.chunks_exact(dim).map(|c| dot(c, c)).collect();
    let firsts: Vec<usize> = (0..n).step_by(ASSIGN_BLOCK_ROWS).collect();
    on_all_cores(&firsts, |firsts, _| {
        let mut products = vec![0f32; ASSIGN_BLOCK_ROWS * k];
        let mut labels = Vec::with_capacity(firsts.len() * ASSIGN_BLOCK_ROWS);
        for &first in firsts {
            let last = (first + ASSIGN_BLOCK_ROWS).min(n);
            block_products(
                &data[first * dim..last * dim],
                dim,
                centroids,
                k,
                &mut products,
            );
            for row in products.chunks_exact(k).take(last - first) {
                let mut best = (0usize, f32::INFINITY);
                for (c, (p, norm)) in row.iter().zip(&norms).enumerate() {
                    let d = norm - 2.0 * p;
                    if d < best.1 {
                        best = (c, d);
                    }
                }
                labels.push(best.0 as u32);
            }
        }
        labels
    })
    .concat()
}

/// `out[i·k + j] = rows[i] · centroids[j]` for every row of the block.
fn block_products(rows: &[f32], dim: usize, centroids: &[f32], k: usize, out: &mut [f32]) {
    let m = rows.len() / dim;
    debug_assert!(out.len() >= m * k && centroids.len() == k * dim);
    // SAFETY: `rows` is m × dim row-major (strides dim, 1), `centroids` read
    // as its transpose is dim × k (strides 1, dim), `out` holds m × k
    // row-major (strides k, 1): every index the product touches is in bounds
    // of its slice, and `out` does not alias the inputs.
    unsafe {
        matrixmultiply::sgemm(
            m,
            dim,
            k,
            1.0,
            rows.as_ptr(),
            dim as isize,
            1,
            centroids.as_ptr(),
            1,
            dim as isize,
            0.0,
            out.as_mut_ptr(),
            k as isize,
            1,
        );
    }
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
    use crate::vector::l2_squared;

    #[test]
    fn blocked_assignment_matches_the_nearest_centroid() {
        let mut rng = SmallRng::seed_from_u64(3);
        for (n, dim, k) in [(1000, 16, 37), (700, 3, 5), (300, 128, 300), (5, 7, 1)] {
            let data: Vec<f32> = (0..n * dim).map(|_| rng.random_range(-1.0..1.0)).collect();
            let centroids: Vec<f32> = (0..k * dim).map(|_| rng.random_range(-1.0..1.0)).collect();
            let labels = assign(&data, dim, &centroids);
            for (row, label) in labels.iter().enumerate() {
                let v = &data[row * dim..(row + 1) * dim];
                let (best, d) = nearest(&centroids, dim, v);
                let mine = l2_squared(
                    v,
                    &centroids[*label as usize * dim..(*label as usize + 1) * dim],
                );
                // Equal, or a near-tie decided by rounding.
                assert!(
                    *label as usize == best || mine <= d * (1.0 + 1e-4) + 1e-6,
                    "{n} {dim} {k} row {row}"
                );
            }
        }
    }

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
