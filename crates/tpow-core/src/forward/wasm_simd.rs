//! WebAssembly SIMD kernels: the matrix products and attention with 128-bit `simd128`
//! instructions, and optionally the matrix products with relaxed SIMD's
//! `i32x4.relaxed_dot_i8x16_i7x16_add_s`.
//!
//! A wasm module has no run-time feature detection: an instruction the engine does
//! not know makes the whole module fail validation. So these kernels are chosen at
//! compile time (`-C target-feature=+simd128`, plus `+relaxed-simd` for the relaxed
//! one), and the page loads the build its browser validates, with the portable
//! build as the fallback. Both return exactly the scalar loop's bits; the arguments
//! follow.
//!
//! The matrix kernels read the row-major weights (`Matrix::data`) directly: no
//! packed layout (`Backend::pack` gives the row-major form, which holds nothing), so
//! nothing to misread and nothing to build. A packed copy (the
//! AVX2 layout, 16 outputs × 2 inputs per 32 bytes) ran the forward pass no faster
//! in V8 (9.7 against 9.8 ms for mainnet), while laying it out cost 6 ms of a
//! 25 ms header verification (derivation + pass), the derivation being paid per
//! header by a light client.
//!
//! - simd128: a tile of [`ROWS`] input rows × 4 outputs keeps 4 · ROWS i32x4
//!   accumulators; per 8 inputs, `v128.load8x8_s` sign-extends 8 weights of each
//!   output and 8 activations of each row to i16, and `i32x4.dot_i16x8_s` adds the
//!   products pairwise into i32 lanes: the products are exact, and a pair sum is at
//!   most 2 · 128² = 2^15 in magnitude, inside i32 (the instruction wraps only for
//!   2 · (-2^15)²). At the end each accumulator's 4 lanes are added (a transpose of
//!   4 vectors), so each output is its sum in a different order: the same integer,
//!   since no partial sum leaves i32 (|sum| <= k · 128² <= 2^26 for k <= 4096).
//!   Exact for every int8 weight and activation.
//! - relaxed SIMD: `i32x4.relaxed_dot_i8x16_i7x16_add_s(a, b, c)` adds to each i32
//!   lane of `c` the 4 products of signed bytes of `a` by bytes of `b`. The spec
//!   lets an engine read `b`'s bytes as signed or unsigned, and sum the product
//!   pairs in saturating i16 first (x86 without VNNI: `pmaddubsw`, `pmaddwd`,
//!   `paddd`) or not (Arm `sdot`, x86 `vpdpbusd`/`vpdpbssd`). All those readings
//!   agree when every byte of `b` lies in 0..=127 and no pair sum leaves i16: then
//!   `b` reads the same signed and unsigned, and with `a` in [-128, 127] a pair sum
//!   lies in [-2 · 128 · 127, 2 · 127 · 127] = [-32512, 32258]. So the weights go in
//!   `a` (any int8), and the activations in `b` split into their two 7-bit halves
//!   `x⁺ = max(x, 0)` and `x⁻ = max(-x, 0)`, computed per call (`x = x⁺ - x⁻`):
//!   `Σ w · x = Σ w · x⁺ - Σ w · x⁻`, two accumulators per output, each below
//!   k · 128 · 127 < 2^31 in magnitude. The split needs `-x <= 127`, true of every
//!   activation but -128; the forward pass only feeds [-127, 127] (clamped
//!   projections and the GELU table), and the kernel runs the simd128 one for an
//!   input holding -128. Node.js 20's V8 11.3 (relaxed SIMD behind a flag, before it
//!   shipped) returned wrong sums for this code, Chromium 156 exact ones: a page
//!   should run a known-answer check before trusting a relaxed build.
//!
//!   It is not always faster. Per 16 products it takes 2 relaxed dots (additions
//!   included) where simd128 takes 2 `dot_i16x8_s` and 2 adds on sign-extending
//!   loads; Arm `sdot` and x86 `vpdpbusd` run a relaxed dot as one instruction, but
//!   an x86 engine without (AVX-)VNNI expands it into 3, and there the forward pass
//!   measured about 2x slower than with simd128 (docs/BENCHMARKS.md).
//!
//! Attention runs per head as two matrix products with a packed simd128 tile (scores
//! `Q_h · K_hᵀ` with the keys packed like weights, then `P · V_h` with `V_hᵀ`
//! packed like weights and the Q7 probabilities as activations) around the scalar
//! softmax (integer steps identical to `forward::attention_scalar`; it is a small
//! share of the work, and wasm has no per-lane variable shifts).

use alloc::vec;
#[cfg(target_feature = "relaxed-simd")]
use alloc::vec::Vec;
use core::arch::wasm32::*;

use crate::model::Matrix;

/// Input rows per simd128 register tile (× 4 outputs: `4 · ROWS` accumulators, plus
/// 4 weight vectors and 1 activation vector: V8 on x86_64 has 16 registers).
const ROWS: usize = 2;

/// `w` takes the row-major kernels: whole tiles of 4 outputs and of `cols_step`
/// inputs, and `data` of the stated shape.
fn rows_ok(w: &Matrix, cols_step: usize) -> bool {
    w.rows.is_multiple_of(4) && w.cols.is_multiple_of(cols_step) && w.rows > 0 && w.data.len() == w.rows * w.cols
}

/// `w` takes [`matmul_simd128`].
pub(super) fn simd128_ok(w: &Matrix) -> bool {
    rows_ok(w, 8)
}

/// `out[r * w.rows + j] = Σ_k x[r * w.cols + k] · w[j][k]` with the simd128 tile,
/// from the row-major weights. Callers check [`simd128_ok`]; lengths are checked here.
pub(super) fn matmul_simd128(x: &[i8], rows: usize, w: &Matrix, out: &mut [i32]) {
    let (n, k) = (w.rows, w.cols);
    assert!(simd128_ok(w) && x.len() >= rows * k && out.len() >= rows * n);
    let (xp, wp, op) = (x.as_ptr(), w.data.as_ptr(), out.as_mut_ptr());
    for j in (0..n).step_by(4) {
        let mut r = 0;
        while r < rows {
            let rr = (rows - r).min(ROWS);
            // SAFETY: outputs j..j + 4 <= n have k weights each; rows r..r + rr <= rows
            // of x hold k values and of out n >= j + 4 values (lengths asserted above).
            unsafe {
                match rr {
                    1 => block_rows::<1>(xp.add(r * k), k, wp.add(j * k), op.add(r * n + j), n),
                    _ => block_rows::<ROWS>(xp.add(r * k), k, wp.add(j * k), op.add(r * n + j), n),
                }
            }
            r += rr;
        }
    }
}

/// `out[r * n + c] = Σ_{kk < k} x[r * k + kk] · w[c * k + kk]` for `R` rows and 4
/// outputs `c`. Callers guarantee `k % 8 == 0`, `R` rows of `k` values at `x`, 4
/// rows of `k` weights at `w` and 4 writable values at each `out + r · n`.
#[inline(always)]
unsafe fn block_rows<const R: usize>(x: *const i8, k: usize, w: *const i8, out: *mut i32, n: usize) {
    let mut acc = [[i32x4_splat(0); 4]; R];
    let mut kk = 0;
    while kk < k {
        // SAFETY: kk + 8 <= k values in each row (contract).
        unsafe {
            let wv = [0, 1, 2, 3].map(|c| i16x8_load_extend_i8x8(w.add(c * k + kk)));
            for (r, ar) in acc.iter_mut().enumerate() {
                let xv = i16x8_load_extend_i8x8(x.add(r * k + kk));
                for (a, &wc) in ar.iter_mut().zip(&wv) {
                    *a = i32x4_add(*a, i32x4_dot_i16x8(wc, xv));
                }
            }
        }
        kk += 8;
    }
    for (r, ar) in acc.into_iter().enumerate() {
        // SAFETY: 4 writable values per row (contract); wasm stores need no alignment.
        unsafe { v128_store(out.add(r * n).cast(), lane_sums(ar)) };
    }
}

/// Lane `c` of the result is the (wrapping) sum of the 4 lanes of `v[c]`.
#[inline(always)]
fn lane_sums([a, b, c, d]: [v128; 4]) -> v128 {
    // [a0+a2, b0+b2, a1+a3, b1+b3] and the same for c, d; then the halves.
    let ab = i32x4_add(i32x4_shuffle::<0, 4, 1, 5>(a, b), i32x4_shuffle::<2, 6, 3, 7>(a, b));
    let cd = i32x4_add(i32x4_shuffle::<0, 4, 1, 5>(c, d), i32x4_shuffle::<2, 6, 3, 7>(c, d));
    i32x4_add(i32x4_shuffle::<0, 1, 4, 5>(ab, cd), i32x4_shuffle::<2, 3, 6, 7>(ab, cd))
}

/// `w` takes [`matmul_relaxed`].
#[cfg(target_feature = "relaxed-simd")]
pub(super) fn relaxed_ok(w: &Matrix) -> bool {
    rows_ok(w, 16)
}

/// [`matmul_simd128`] with the relaxed-SIMD dot product (the module docs prove it
/// exact). Callers check [`relaxed_ok`]; lengths are checked here. Runs the simd128
/// kernel when an activation is -128, whose negation is no 7-bit byte.
#[cfg(target_feature = "relaxed-simd")]
pub(super) fn matmul_relaxed(x: &[i8], rows: usize, w: &Matrix, out: &mut [i32]) {
    let (n, k) = (w.rows, w.cols);
    assert!(relaxed_ok(w) && x.len() >= rows * k && out.len() >= rows * n);
    let x = &x[..rows * k];
    if x.contains(&i8::MIN) {
        // relaxed_ok implies simd128_ok (whole tiles of 4 outputs and 16 inputs).
        return matmul_simd128(x, rows, w, out);
    }
    // The 7-bit halves x⁺ and x⁻ (every byte in 0..=127).
    let xpos: Vec<i8> = x.iter().map(|&v| v.max(0)).collect();
    let xneg: Vec<i8> = x.iter().map(|&v| (-v).max(0)).collect();
    let (pp, np, wp, op) = (xpos.as_ptr(), xneg.as_ptr(), w.data.as_ptr(), out.as_mut_ptr());
    for j in (0..n).step_by(4) {
        for r in 0..rows {
            // SAFETY: outputs j..j + 4 <= n have k weights each; row r < rows of xpos
            // and xneg holds k values and of out n >= j + 4 (lengths asserted above).
            unsafe { block_relaxed(pp.add(r * k), np.add(r * k), k, wp.add(j * k), op.add(r * n + j)) };
        }
    }
}

/// One row's `Σ w · x⁺ - Σ w · x⁻` for the 4 outputs at `w` (row stride `k`, `k % 16
/// == 0`), into `out[..4]`. `xp` and `xn` hold `k` bytes in 0..=127 (the 7-bit
/// operand); one row per tile, as 8 accumulators fill the registers.
#[cfg(target_feature = "relaxed-simd")]
#[inline(always)]
unsafe fn block_relaxed(xp: *const i8, xn: *const i8, k: usize, w: *const i8, out: *mut i32) {
    let mut pos = [i32x4_splat(0); 4];
    let mut neg = [i32x4_splat(0); 4];
    let mut kk = 0;
    while kk < k {
        // SAFETY: kk + 16 <= k values in each row (contract).
        unsafe {
            let a = v128_load(xp.add(kk).cast());
            let b = v128_load(xn.add(kk).cast());
            for (c, (p, q)) in pos.iter_mut().zip(neg.iter_mut()).enumerate() {
                let wv = v128_load(w.add(c * k + kk).cast());
                // Weights signed in the first operand, the 7-bit halves in the second.
                *p = i32x4_relaxed_dot_i8x16_i7x16_add(wv, a, *p);
                *q = i32x4_relaxed_dot_i8x16_i7x16_add(wv, b, *q);
            }
        }
        kk += 16;
    }
    let diff = [0, 1, 2, 3].map(|c| i32x4_sub(pos[c], neg[c]));
    // SAFETY: 4 writable values (contract).
    unsafe { v128_store(out.cast(), lane_sums(diff)) };
}

// The attention kernel's tile, on operands it packs itself (`pack_pairs16`, the
// AVX2 weight layout, shared with the AVX2 attention): blocks of 16 outputs of
// `k / 2` groups of 32 bytes, group `kp` holding `w[16 nb + j][2 kp]` and
// `w[16 nb + j][2 kp + 1]` for each output `j` in turn; 2 activations (as i16) are
// broadcast against 4 outputs × 2 inputs sign-extended by `v128.load8x8_s`, and
// `i32x4.dot_i16x8_s` adds each output's 2 products into its lane (exact, as above).
// The per-head operands are packed once per pass, so this costs no derivation time.

/// [`block`] for `rr` (1..=[`ROWS`]) rows; same contract.
#[inline]
unsafe fn tile(rr: usize, x: *const i16, xs: usize, k: usize, wp: *const i8, out: *mut i32, n: usize) {
    const _: () = assert!(ROWS >= 1 && ROWS <= 4);
    // SAFETY: forwarded contract.
    unsafe {
        match rr {
            1 => block::<1>(x, xs, k, wp, out, n),
            2 if ROWS >= 2 => block::<2>(x, xs, k, wp, out, n),
            3 if ROWS >= 3 => block::<3>(x, xs, k, wp, out, n),
            _ => block::<ROWS>(x, xs, k, wp, out, n),
        }
    }
}

/// `out[r * n + j] = Σ_{kk < k} x[r * xs + kk] · w[j][kk]` for `R` input rows (as
/// i16, row stride `xs`) and the 16 outputs `j` of the packed block at `wp`
/// (group stride 32 bytes). Callers guarantee `k % 2 == 0`, `R` rows of `k` values
/// at `x`, `16 · k` bytes at `wp`, and 16 writable values at `out + r · n` per row.
#[inline(always)]
unsafe fn block<const R: usize>(x: *const i16, xs: usize, k: usize, wp: *const i8, out: *mut i32, n: usize) {
    let mut acc = [[i32x4_splat(0); 4]; R];
    let mut kk = 0;
    while kk < k {
        // SAFETY: group `kk / 2` is 32 bytes inside the block; `x` rows hold `kk + 1`.
        unsafe {
            let g = wp.add(kk * 16);
            let w = [
                i16x8_load_extend_i8x8(g),
                i16x8_load_extend_i8x8(g.add(8)),
                i16x8_load_extend_i8x8(g.add(16)),
                i16x8_load_extend_i8x8(g.add(24)),
            ];
            for (r, ar) in acc.iter_mut().enumerate() {
                let xb = v128_load32_splat(x.add(r * xs + kk).cast());
                for (a, &wc) in ar.iter_mut().zip(&w) {
                    *a = i32x4_add(*a, i32x4_dot_i16x8(wc, xb));
                }
            }
        }
        kk += 2;
    }
    for (r, ar) in acc.iter().enumerate() {
        for (c, &a) in ar.iter().enumerate() {
            // SAFETY: 16 writable values per row (contract); wasm stores need no alignment.
            unsafe { v128_store(out.add(r * n + c * 4).cast(), a) };
        }
    }
}

/// Causal attention for the query positions `first..s` (see `Backend::attention`),
/// bit-identical to `forward::attention_scalar` for any int8 inputs. Per head, the
/// keys are packed for [`block`] (keys as outputs) for the scores, and `V_hᵀ`
/// too (channels as outputs, keys as inputs) for `P · V`; the softmax is
/// the scalar loop's.
///
/// Callers guarantee `hd % 16 == 0`, `d % hd == 0`, `first < s` and `q`, `k`, `v`,
/// `att` at least `s * d` long (asserted).
#[allow(clippy::too_many_arguments)]
pub(super) fn attention(hd: usize, d: usize, first: usize, s: usize, q: &[i8], k: &[i8], v: &[i8], att: &mut [i8]) {
    use crate::forward::ops::{clamp_i8, exp2_weight, round_shift, score_shift, PROB_BITS};
    assert!(hd.is_multiple_of(16) && d.is_multiple_of(hd) && first < s);
    assert!(q.len() >= s * d && k.len() >= s * d && v.len() >= s * d && att.len() >= s * d);
    let n_heads = d / hd;
    let sh = score_shift(hd);
    // Keys padded to whole packed blocks of 16 (padding keys and values are 0).
    let sp = s.div_ceil(16) * 16;
    let nq = s - first;
    let mut kp = vec![0i8; sp * hd]; // K_h: sp x hd, simd128 layout
    let mut vp = vec![0i8; hd * sp]; // V_hᵀ: hd x sp, simd128 layout
    let mut q16 = vec![0i16; nq * hd];
    let mut sc = vec![0i32; ROWS * sp];
    let mut p16 = vec![0i16; ROWS * sp];
    let mut acc = vec![0i32; ROWS * hd];
    for h in 0..n_heads {
        let off = h * hd;
        // kp[(j / 16) * 16 * hd + (c / 2) * 32 + (j % 16) * 2 + c % 2] = k[j][off + c].
        super::pack_pairs16(&k[off..], d, s, hd, &mut kp);
        // vp[(c / 16) * 16 * sp + (j / 2) * 32 + (c % 16) * 2 + j % 2] = v[j][off + c];
        // keys past s stay 0.
        for j in 0..s {
            let row = &v[j * d + off..][..hd];
            for (c, &x) in row.iter().enumerate() {
                vp[(c / 16) * 16 * sp + (j / 2) * 32 + (c % 16) * 2 + j % 2] = x;
            }
        }
        for (t, i) in (first..s).enumerate() {
            for (dst, &x) in q16[t * hd..][..hd].iter_mut().zip(&q[i * d + off..][..hd]) {
                *dst = x as i16;
            }
        }
        let mut i0 = first;
        while i0 < s {
            let rr = (s - i0).min(ROWS);
            let last = i0 + rr - 1;
            let qp = &q16[(i0 - first) * hd..][..rr * hd];
            // Scores of keys 0..=last, 16 keys per block (later keys are ignored).
            for kb in 0..(last + 1).div_ceil(16) {
                // SAFETY: key block `kb < sp / 16` is 16 · hd bytes of `kp`; `qp` holds
                // `rr` rows of `hd`; `sc` holds `rr <= ROWS` rows of `sp >= 16 (kb + 1)`.
                unsafe {
                    tile(rr, qp.as_ptr(), hd, hd, kp.as_ptr().add(kb * 16 * hd), sc.as_mut_ptr().add(kb * 16), sp)
                };
            }
            // Keys in pairs for the tile: klen is even, <= sp; p is 0 past the query.
            let klen = (last + 1).div_ceil(2) * 2;
            for r in 0..rr {
                let n = i0 + r + 1;
                let (scores, p) = (&mut sc[r * sp..][..n], &mut p16[r * sp..][..klen]);
                let max = scores.iter().copied().max().unwrap_or(0);
                let mut sum = 0i32;
                for sj in scores.iter_mut() {
                    *sj = exp2_weight((max - *sj) >> sh);
                    sum += *sj;
                }
                let rcp = ((1u32 << 30) / sum as u32) as i32;
                for (pj, &w) in p.iter_mut().zip(scores.iter()) {
                    *pj = ((w * rcp + (1 << 22)) >> 23).min(127) as i16;
                }
                p[n..].fill(0);
            }
            for b in 0..hd / 16 {
                // SAFETY: channel block `b` of `vp` is 16 · sp bytes, read for `klen <= sp`
                // keys; `p16` holds `rr` rows of stride `sp`; `acc` rows of `hd >= 16 (b + 1)`.
                unsafe {
                    tile(rr, p16.as_ptr(), sp, klen, vp.as_ptr().add(b * 16 * sp), acc.as_mut_ptr().add(b * 16), hd)
                };
            }
            for r in 0..rr {
                let out = &mut att[(i0 + r) * d + off..][..hd];
                for (o, &a) in out.iter_mut().zip(&acc[r * hd..][..hd]) {
                    *o = clamp_i8(round_shift(a, PROB_BITS));
                }
            }
            i0 += rr;
        }
    }
}
