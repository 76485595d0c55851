//! Distance kernels: AVX2+FMA on x86_64 when the CPU has it (detected at run
//! time), portable code otherwise (written with independent accumulators so
//! the compiler vectorises it, NEON included). Tested against plain scalar
//! reference loops.

/// Inner product of two f32 vectors of equal length.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA (checked above).
        return unsafe { x86::dot(a, b) };
    }
    portable::dot(a, b)
}

/// Squared Euclidean distance.
#[inline]
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: as above.
        return unsafe { x86::l2_squared(a, b) };
    }
    portable::l2_squared(a, b)
}

/// `Σ v[i] · c[i]` for 8-bit codes `c` (the SQ8 inner-product kernel).
#[inline]
pub fn dot_u8(v: &[f32], c: &[u8]) -> f32 {
    debug_assert_eq!(v.len(), c.len());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: as above.
        return unsafe { x86::dot_u8(v, c) };
    }
    portable::dot_u8(v, c)
}

/// `Σ w[i] · (u[i] − c[i])²` for 8-bit codes (the SQ8 L2 kernel).
#[inline]
pub fn weighted_l2_u8(u: &[f32], w: &[f32], c: &[u8]) -> f32 {
    debug_assert!(u.len() == c.len() && w.len() == c.len());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: as above.
        return unsafe { x86::weighted_l2_u8(u, w, c) };
    }
    portable::weighted_l2_u8(u, w, c)
}

mod portable {
    pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0f32; 8];
        let n = a.len() / 8 * 8;
        for i in (0..n).step_by(8) {
            for j in 0..8 {
                acc[j] += a[i + j] * b[i + j];
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for i in n..a.len() {
            sum += a[i] * b[i];
        }
        sum
    }

    pub(super) fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0f32; 8];
        let n = a.len() / 8 * 8;
        for i in (0..n).step_by(8) {
            for j in 0..8 {
                let d = a[i + j] - b[i + j];
                acc[j] += d * d;
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for i in n..a.len() {
            let d = a[i] - b[i];
            sum += d * d;
        }
        sum
    }

    pub(super) fn dot_u8(v: &[f32], c: &[u8]) -> f32 {
        let mut acc = [0f32; 8];
        let n = v.len() / 8 * 8;
        for i in (0..n).step_by(8) {
            for j in 0..8 {
                acc[j] += v[i + j] * c[i + j] as f32;
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for i in n..v.len() {
            sum += v[i] * c[i] as f32;
        }
        sum
    }

    pub(super) fn weighted_l2_u8(u: &[f32], w: &[f32], c: &[u8]) -> f32 {
        let mut acc = [0f32; 8];
        let n = u.len() / 8 * 8;
        for i in (0..n).step_by(8) {
            for j in 0..8 {
                let d = u[i + j] - c[i + j] as f32;
                acc[j] += w[i + j] * d * d;
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for i in n..u.len() {
            let d = u[i] - c[i] as f32;
            sum += w[i] * d * d;
        }
        sum
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let hi = _mm256_extractf128_ps(v, 1);
        let lo = _mm256_castps256_ps128(v);
        let s = _mm_add_ps(hi, lo);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len() / 16 * 16;
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut i = 0;
        while i < n {
            // SAFETY: i + 16 <= n <= len of both slices.
            unsafe {
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
                s1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 8)),
                    _mm256_loadu_ps(pb.add(i + 8)),
                    s1,
                );
            }
            i += 16;
        }
        let mut sum = hsum(_mm256_add_ps(s0, s1));
        for j in n..a.len() {
            sum += a[j] * b[j];
        }
        sum
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len() / 16 * 16;
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut i = 0;
        while i < n {
            // SAFETY: i + 16 <= n <= len of both slices.
            unsafe {
                let d0 = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
                let d1 = _mm256_sub_ps(
                    _mm256_loadu_ps(pa.add(i + 8)),
                    _mm256_loadu_ps(pb.add(i + 8)),
                );
                s0 = _mm256_fmadd_ps(d0, d0, s0);
                s1 = _mm256_fmadd_ps(d1, d1, s1);
            }
            i += 16;
        }
        let mut sum = hsum(_mm256_add_ps(s0, s1));
        for j in n..a.len() {
            let d = a[j] - b[j];
            sum += d * d;
        }
        sum
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn load_u8x8(p: *const u8) -> __m256 {
        // SAFETY: the caller guarantees 8 readable bytes at p.
        unsafe { _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i))) }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_u8(v: &[f32], c: &[u8]) -> f32 {
        let n = v.len() / 8 * 8;
        let mut s = _mm256_setzero_ps();
        let mut i = 0;
        while i < n {
            // SAFETY: i + 8 <= n <= len of both slices.
            unsafe {
                s = _mm256_fmadd_ps(
                    _mm256_loadu_ps(v.as_ptr().add(i)),
                    load_u8x8(c.as_ptr().add(i)),
                    s,
                );
            }
            i += 8;
        }
        let mut sum = hsum(s);
        for j in n..v.len() {
            sum += v[j] * c[j] as f32;
        }
        sum
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn weighted_l2_u8(u: &[f32], w: &[f32], c: &[u8]) -> f32 {
        let n = u.len() / 8 * 8;
        let mut s = _mm256_setzero_ps();
        let mut i = 0;
        while i < n {
            // SAFETY: i + 8 <= n <= len of all three slices.
            unsafe {
                let d = _mm256_sub_ps(
                    _mm256_loadu_ps(u.as_ptr().add(i)),
                    load_u8x8(c.as_ptr().add(i)),
                );
                s = _mm256_fmadd_ps(_mm256_mul_ps(d, d), _mm256_loadu_ps(w.as_ptr().add(i)), s);
            }
            i += 8;
        }
        let mut sum = hsum(s);
        for j in n..u.len() {
            let d = u[j] - c[j] as f32;
            sum += w[j] * d * d;
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() <= 1e-3 * (1.0 + b.abs())
    }

    #[test]
    fn kernels_match_scalar_reference_for_all_lengths() {
        for len in [0usize, 1, 3, 7, 8, 9, 15, 16, 17, 31, 128, 130, 384] {
            let a: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
                .collect();
            let b: Vec<f32> = (0..len)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 13.0)
                .collect();
            let c: Vec<u8> = (0..len).map(|i| (i * 91 % 256) as u8).collect();
            let dot_ref: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            let l2_ref: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
            let dot_u8_ref: f32 = a.iter().zip(&c).map(|(x, y)| x * *y as f32).sum();
            let wl2_ref: f32 = a
                .iter()
                .zip(&b)
                .zip(&c)
                .map(|((u, w), y)| w.abs() * (u - *y as f32).powi(2))
                .sum();
            let w: Vec<f32> = b.iter().map(|x| x.abs()).collect();
            assert!(close(dot(&a, &b), dot_ref), "dot {len}");
            assert!(close(l2_squared(&a, &b), l2_ref), "l2 {len}");
            assert!(close(dot_u8(&a, &c), dot_u8_ref), "dot_u8 {len}");
            assert!(close(weighted_l2_u8(&a, &w, &c), wl2_ref), "wl2 {len}");
            // The portable path too, whatever this CPU has.
            assert!(close(portable::dot(&a, &b), dot_ref));
            assert!(close(portable::l2_squared(&a, &b), l2_ref));
            assert!(close(portable::dot_u8(&a, &c), dot_u8_ref));
            assert!(close(portable::weighted_l2_u8(&a, &w, &c), wl2_ref));
        }
    }
}
