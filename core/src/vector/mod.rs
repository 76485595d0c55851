//! Vectors: the distance kernels and a query vector prepared for a metric.

mod kernels;

pub use kernels::{
    I16_DOT_LIMIT, dot, dot_i16_u8_rows, dot_rows, dot_u8, dot_u8_rows, l2_squared,
    l2_squared_rows, weighted_l2_u8, weighted_l2_u8_rows,
};

use crate::catalog::Metric;

/// Asks the CPU to start loading `bytes` into its caches (a hint; nothing
/// on CPUs without one): many scattered reads then wait for memory
/// together rather than one after another.
pub fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: SSE is part of x86_64; a prefetch reads nothing.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = dot(v, v).sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// A query vector prepared for a metric (normalised for cosine).
#[derive(Debug, Clone)]
pub struct QueryVector {
    /// The components (unit length for cosine).
    pub values: Vec<f32>,
    /// The metric distances are measured by.
    pub metric: Metric,
}

impl QueryVector {
    /// Prepares `values` for `metric`.
    pub fn new(mut values: Vec<f32>, metric: Metric) -> Self {
        if metric == Metric::Cosine {
            normalize(&mut values);
        }
        Self { values, metric }
    }

    /// Distance to `v`: smaller is closer for every metric.
    pub fn distance(&self, v: &[f32]) -> f32 {
        match self.metric {
            Metric::L2 => l2_squared(&self.values, v),
            Metric::Ip => -dot(&self.values, v),
            Metric::Cosine => {
                let norm = dot(v, v).sqrt();
                if norm == 0.0 {
                    1.0
                } else {
                    1.0 - dot(&self.values, v) / norm
                }
            }
        }
    }
}

impl QueryVector {
    /// [`QueryVector::distance`] to each row of `rows` (row-major, of the
    /// query's dimension), into `out`: the block kernels, one feature check.
    pub fn distances(&self, rows: &[f32], out: &mut [f32]) {
        match self.metric {
            Metric::L2 => l2_squared_rows(&self.values, rows, out),
            Metric::Ip => {
                dot_rows(&self.values, rows, out);
                out.iter_mut().for_each(|d| *d = -*d);
            }
            Metric::Cosine => {
                dot_rows(&self.values, rows, out);
                let dim = self.values.len().max(1);
                for (d, v) in out.iter_mut().zip(rows.chunks_exact(dim)) {
                    let norm = dot(v, v).sqrt();
                    *d = if norm == 0.0 { 1.0 } else { 1.0 - *d / norm };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_match_scalar_reference() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let dot_ref: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let l2_ref: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
        assert!((dot(&a, &b) - dot_ref).abs() < 1e-4);
        assert!((l2_squared(&a, &b) - l2_ref).abs() < 1e-4);
        let q = QueryVector::new(a.clone(), Metric::Cosine);
        let cos_ref = dot_ref / (dot(&a, &a).sqrt() * dot(&b, &b).sqrt());
        assert!((q.distance(&b) - (1.0 - cos_ref)).abs() < 1e-5);
        assert_eq!(
            QueryVector::new(a.clone(), Metric::Ip).distance(&b),
            -dot(&a, &b)
        );
        // The block form agrees with the per-row one, for every metric.
        let rows: Vec<f32> = b.iter().chain(&a).chain(&vec![0.0; 37]).copied().collect();
        for metric in [Metric::L2, Metric::Ip, Metric::Cosine] {
            let q = QueryVector::new(a.clone(), metric);
            let mut out = [0f32; 3];
            q.distances(&rows, &mut out);
            for (i, d) in out.iter().enumerate() {
                let want = q.distance(&rows[i * 37..(i + 1) * 37]);
                assert!((d - want).abs() < 1e-5, "{metric:?} row {i}: {d} vs {want}");
            }
        }
    }
}
