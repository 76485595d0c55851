//! Distance kernels: AVX2+FMA on x86_64 when the CPU has it (detected at run
//! time), portable code otherwise (written with independent accumulators so
//! the compiler vectorises it, NEON included). Tested against plain scalar
//! reference loops.

/// Inner product of two f32 vectors of equal length.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
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
    if has_avx2_fma() {
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
    if has_avx2_fma() {
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
    if has_avx2_fma() {
        // SAFETY: as above.
        return unsafe { x86::weighted_l2_u8(u, w, c) };
    }
    portable::weighted_l2_u8(u, w, c)
}

/// Whether the AVX2+FMA kernels can run (detected once, then cached by std).
#[cfg(target_arch = "x86_64")]
#[inline]
fn has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// [`l2_squared`] of `q` against each `q.len()`-long row of `rows`, into `out`.
pub fn l2_squared_rows(q: &[f32], rows: &[f32], out: &mut [f32]) {
    debug_assert!(rows.len() >= out.len() * q.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA.
        return unsafe { x86::l2_squared_rows(q, rows, out) };
    }
    for (row, d) in rows.chunks_exact(q.len().max(1)).zip(out) {
        *d = portable::l2_squared(q, row);
    }
}

/// [`dot`] of `q` with each `q.len()`-long row of `rows`, into `out`.
pub fn dot_rows(q: &[f32], rows: &[f32], out: &mut [f32]) {
    debug_assert!(rows.len() >= out.len() * q.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: as above.
        return unsafe { x86::dot_rows(q, rows, out) };
    }
    for (row, d) in rows.chunks_exact(q.len().max(1)).zip(out) {
        *d = portable::dot(q, row);
    }
}

/// [`dot_u8`] of `v` with each `v.len()`-byte code of `codes`, into `out`.
pub fn dot_u8_rows(v: &[f32], codes: &[u8], out: &mut [f32]) {
    debug_assert!(codes.len() >= out.len() * v.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: as above.
        return unsafe { x86::dot_u8_rows(v, codes, out) };
    }
    for (code, d) in codes.chunks_exact(v.len().max(1)).zip(out) {
        *d = portable::dot_u8(v, code);
    }
}

/// [`weighted_l2_u8`] of `u`, `w` against each `u.len()`-byte code of
/// `codes`, into `out`.
pub fn weighted_l2_u8_rows(u: &[f32], w: &[f32], codes: &[u8], out: &mut [f32]) {
    debug_assert!(codes.len() >= out.len() * u.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: as above.
        return unsafe { x86::weighted_l2_u8_rows(u, w, codes, out) };
    }
    for (code, d) in codes.chunks_exact(u.len().max(1)).zip(out) {
        *d = portable::weighted_l2_u8(u, w, code);
    }
}

/// `Σ q[i] · c[i]` for 16-bit integer `q` and each `q.len()`-byte code
/// of `codes`, into `out` (as f32). The caller keeps `Σ |q[i]| · 255`
/// within `i32` ([`I16_DOT_LIMIT`]).
pub fn dot_i16_u8_rows(q: &[i16], codes: &[u8], out: &mut [f32]) {
    debug_assert!(codes.len() >= out.len() * q.len());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2.
        return unsafe { x86::dot_i16_u8_rows(q, codes, out) };
    }
    for (code, d) in codes.chunks_exact(q.len().max(1)).zip(out) {
        *d = portable::dot_i16_u8(q, code) as f32;
    }
}

/// The largest `Σ |q[i]|` [`dot_i16_u8_rows`] takes.
pub const I16_DOT_LIMIT: i64 = i32::MAX as i64 / 255;

mod portable {
    pub(super) fn dot_i16_u8(q: &[i16], c: &[u8]) -> i32 {
        q.iter().zip(c).map(|(q, c)| *q as i32 * *c as i32).sum()
    }

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

    /// `Σ f(i)` over lanes of 8, four independent accumulators (the FMA
    /// latency chain of one accumulator would bound a 128-d kernel), then
    /// the scalar tail `tail(j)` for the last `len % 8` components.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn accumulate(
        len: usize,
        step: impl Fn(usize, __m256) -> __m256,
        tail: impl Fn(usize) -> f32,
    ) -> f32 {
        let n8 = len / 8 * 8;
        let n32 = len / 32 * 32;
        let (mut s0, mut s1, mut s2, mut s3) = (
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
        );
        let mut i = 0;
        while i < n32 {
            s0 = step(i, s0);
            s1 = step(i + 8, s1);
            s2 = step(i + 16, s2);
            s3 = step(i + 24, s3);
            i += 32;
        }
        while i < n8 {
            s0 = step(i, s0);
            i += 8;
        }
        let mut sum = hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
        for j in n8..len {
            sum += tail(j);
        }
        sum
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
        let len = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        accumulate(
            len,
            // SAFETY: `accumulate` steps i + 8 <= len, within both slices.
            |i, s| unsafe {
                _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s)
            },
            |j| a[j] * b[j],
        )
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
        let len = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        accumulate(
            len,
            |i, s| {
                // SAFETY: as in `dot`.
                let d = unsafe {
                    _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)))
                };
                _mm256_fmadd_ps(d, d, s)
            },
            |j| (a[j] - b[j]) * (a[j] - b[j]),
        )
    }

    /// Eight bytes at `p` as eight f32s.
    ///
    /// # Safety
    /// `p` must point at 8 readable bytes.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load_u8x8(p: *const u8) -> __m256 {
        // SAFETY: the caller guarantees 8 readable bytes at p.
        unsafe { _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i))) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn dot_u8(v: &[f32], c: &[u8]) -> f32 {
        let len = v.len().min(c.len());
        let (pv, pc) = (v.as_ptr(), c.as_ptr());
        accumulate(
            len,
            // SAFETY: i + 8 <= len, within both slices.
            |i, s| unsafe { _mm256_fmadd_ps(_mm256_loadu_ps(pv.add(i)), load_u8x8(pc.add(i)), s) },
            |j| v[j] * c[j] as f32,
        )
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn weighted_l2_u8(u: &[f32], w: &[f32], c: &[u8]) -> f32 {
        let len = u.len().min(w.len()).min(c.len());
        let (pu, pw, pc) = (u.as_ptr(), w.as_ptr(), c.as_ptr());
        accumulate(
            len,
            |i, s| {
                // SAFETY: i + 8 <= len, within all three slices.
                unsafe {
                    let d = _mm256_sub_ps(_mm256_loadu_ps(pu.add(i)), load_u8x8(pc.add(i)));
                    _mm256_fmadd_ps(_mm256_mul_ps(d, d), _mm256_loadu_ps(pw.add(i)), s)
                }
            },
            |j| {
                let d = u[j] - c[j] as f32;
                w[j] * d * d
            },
        )
    }

    /// The per-row kernels over every `dim`-long row of a block: one
    /// feature check for the block, the kernel inlined into the loop.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn l2_squared_rows(q: &[f32], rows: &[f32], out: &mut [f32]) {
        for (row, d) in rows.chunks_exact(q.len().max(1)).zip(out) {
            *d = l2_squared(q, row);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn dot_rows(q: &[f32], rows: &[f32], out: &mut [f32]) {
        for (row, d) in rows.chunks_exact(q.len().max(1)).zip(out) {
            *d = dot(q, row);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn dot_u8_rows(v: &[f32], codes: &[u8], out: &mut [f32]) {
        for (code, d) in codes.chunks_exact(v.len().max(1)).zip(out) {
            *d = dot_u8(v, code);
        }
    }

    /// 16 dimensions a step: codes widened to 16 bits, pairs multiplied
    /// and summed into 32 bits (`vpmaddwd`): about three times fewer
    /// instructions than the f32 kernels per code.
    #[target_feature(enable = "avx2")]
    pub(super) fn dot_i16_u8_rows(q: &[i16], codes: &[u8], out: &mut [f32]) {
        let len = q.len();
        let n16 = len / 16 * 16;
        for (code, d) in codes.chunks_exact(len.max(1)).zip(out) {
            let (mut s0, mut s1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
            let (pq, pc) = (q.as_ptr(), code.as_ptr());
            let mut i = 0;
            // SAFETY: i + 16 <= n16 <= len, within both q and code.
            unsafe {
                let step = |i: usize| {
                    let c = _mm256_cvtepu8_epi16(_mm_loadu_si128(pc.add(i) as *const __m128i));
                    _mm256_madd_epi16(c, _mm256_loadu_si256(pq.add(i) as *const __m256i))
                };
                while i + 32 <= n16 {
                    s0 = _mm256_add_epi32(s0, step(i));
                    s1 = _mm256_add_epi32(s1, step(i + 16));
                    i += 32;
                }
                if i < n16 {
                    s0 = _mm256_add_epi32(s0, step(i));
                }
            }
            let s = _mm256_add_epi32(s0, s1);
            let x = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            let x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0b01_00_11_10));
            let x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0b10_11_00_01));
            let tail = super::portable::dot_i16_u8(&q[n16..], &code[n16..]);
            *d = (_mm_cvtsi128_si32(x) + tail) as f32;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn weighted_l2_u8_rows(u: &[f32], w: &[f32], codes: &[u8], out: &mut [f32]) {
        for (code, d) in codes.chunks_exact(u.len().max(1)).zip(out) {
            *d = weighted_l2_u8(u, w, code);
        }
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
            // The block kernels agree with the per-row ones.
            if len > 0 {
                let rows: Vec<f32> = a.iter().chain(&b).copied().collect();
                let codes: Vec<u8> = c.iter().chain(c.iter().rev()).copied().collect();
                let mut out = [0f32; 2];
                l2_squared_rows(&a, &rows, &mut out);
                assert_eq!(
                    out,
                    [l2_squared(&a, &a), l2_squared(&a, &b)],
                    "l2 rows {len}"
                );
                dot_rows(&a, &rows, &mut out);
                assert_eq!(out, [dot(&a, &a), dot(&a, &b)], "dot rows {len}");
                let back: Vec<u8> = c.iter().rev().copied().collect();
                dot_u8_rows(&a, &codes, &mut out);
                assert_eq!(
                    out,
                    [dot_u8(&a, &c), dot_u8(&a, &back)],
                    "dot_u8 rows {len}"
                );
                weighted_l2_u8_rows(&a, &w, &codes, &mut out);
                assert_eq!(
                    out,
                    [weighted_l2_u8(&a, &w, &c), weighted_l2_u8(&a, &w, &back)],
                    "wl2 rows {len}"
                );
            }
            // The integer kernel, exact, at the largest weights it takes.
            let q: Vec<i16> = (0..len)
                .map(|i| {
                    let limit = (I16_DOT_LIMIT / len.max(1) as i64).min(i16::MAX as i64);
                    (if i % 3 == 0 { -limit } else { limit }) as i16
                })
                .collect();
            let all_255 = vec![255u8; len];
            let mut one = [0f32; 1];
            for code in [&c, &all_255] {
                let want: i64 = q
                    .iter()
                    .zip(code.iter())
                    .map(|(q, c)| *q as i64 * *c as i64)
                    .sum();
                dot_i16_u8_rows(&q, code, &mut one);
                assert_eq!(one[0], want as f32, "i16 {len}");
                assert_eq!(
                    portable::dot_i16_u8(&q, code) as i64,
                    want,
                    "i16 portable {len}"
                );
            }
            // The portable path too, whatever this CPU has.
            assert!(close(portable::dot(&a, &b), dot_ref));
            assert!(close(portable::l2_squared(&a, &b), l2_ref));
            assert!(close(portable::dot_u8(&a, &c), dot_u8_ref));
            assert!(close(portable::weighted_l2_u8(&a, &w, &c), wl2_ref));
        }
    }
}
