// Causal multi-head attention with AVX-512 VNNI, bit-identical to the scalar loop
// in `forward::attention` (reached through `Backend::attention`).
//
// Per head, the keys are packed like weights (16 keys per block, 4 channels per
// lane, offset by +128 as u8) so that `vpdpbusd` computes 16 scores at once from a
// broadcast of 4 query bytes; `128 · Σ q` is subtracted afterwards. The softmax runs
// on 16 lanes with the same integer steps, and the probabilities (0..=127, hence
// valid unsigned bytes) are broadcast 4 at a time against the values, packed
// transposed (16 channels per block, 4 keys per lane). All sums are exact integers.

// Included (`include!`) twice by matmul.rs: into `x86::attention` with the real
// intrinsics, and in the tests with their emulation; the including module provides
// the intrinsics and the `simd!` macro that adds the target features.

use alloc::vec;

use crate::forward::ops::{score_shift, POW2_FRAC, PROB_BITS};

simd! {
/// Writes `att[i * d + h * hd ..][..hd]` for every head `h` and `i` in `first..s`.
///
/// Callers guarantee avx512f/bw/vnni, `hd % 16 == 0`, `d % hd == 0`, `first < s`
/// and `q`, `k`, `v`, `att` at least `s * d` long.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn attention(
    hd: usize,
    d: usize,
    first: usize,
    s: usize,
    q: &[i8],
    k: &[i8],
    v: &[i8],
    att: &mut [i8],
) {
    debug_assert!(hd.is_multiple_of(16) && d.is_multiple_of(hd) && first < s);
    let n_heads = d / hd;
    let shift = _mm512_set1_epi32(score_shift(hd) as i32);
    // Keys padded to whole blocks of 16; 4-channel groups per key; 4-key groups.
    let sp = s.div_ceil(16) * 16;
    let cg = hd / 4;
    let ngroups = sp / 4;
    // Keys: [key block][channel group][16 keys x 4 channels], u8 = k + 128.
    let mut kp = vec![0u8; sp * hd];
    // Values: [channel block][key group][16 channels x 4 keys], i8.
    let mut vp = vec![0u8; sp * hd];
    let mut scores = vec![0i32; sp];
    let mut probs = vec![0u8; sp];
    let pow2 = _mm512_loadu_si512(POW2_FRAC.as_ptr().cast());
    let fifteen = _mm512_set1_epi32(15);
    let round_p = _mm512_set1_epi32(1 << 22);
    let p_max = _mm512_set1_epi32(127);
    let round_o = _mm512_set1_epi32(1 << (PROB_BITS - 1));
    let (lo, hi) = (_mm512_set1_epi32(-127), _mm512_set1_epi32(127));

    for h in 0..n_heads {
        let off = h * hd;
        for j in 0..s {
            let row = k.as_ptr().add(j * d + off);
            let dst = kp.as_mut_ptr().add((j / 16) * cg * 64 + (j % 16) * 4);
            for g in 0..cg {
                let w = row.add(g * 4).cast::<u32>().read_unaligned() ^ 0x8080_8080;
                dst.add(g * 64).cast::<u32>().write_unaligned(w);
            }
        }
        pack_values(v, d, off, hd, s, ngroups, &mut vp);

        for i in first..s {
            let qrow = q.as_ptr().add(i * d + off);
            let mut qsum = 0i32;
            for c in 0..hd {
                qsum += *qrow.add(c) as i32;
            }
            let corr = _mm512_set1_epi32(qsum * 128);
            let nb = i / 16 + 1;
            let last_lanes = i % 16 + 1;
            let last_mask: __mmask16 = ((1u32 << last_lanes) - 1) as u16;
            let mask_of = |jb: usize| if jb + 1 == nb { last_mask } else { 0xFFFF };

            // Scores s_j = q_i · k_j and their maximum over j <= i.
            let mut vmax = _mm512_set1_epi32(i32::MIN);
            for jb in 0..nb {
                let kb = kp.as_ptr().add(jb * cg * 64);
                let mut acc = _mm512_setzero_si512();
                for g in 0..cg {
                    let qb = _mm512_set1_epi32(qrow.add(g * 4).cast::<i32>().read_unaligned());
                    acc = _mm512_dpbusd_epi32(acc, _mm512_loadu_si512(kb.add(g * 64).cast()), qb);
                }
                let sc = _mm512_sub_epi32(acc, corr);
                _mm512_storeu_si512(scores.as_mut_ptr().add(jb * 16).cast(), sc);
                vmax = _mm512_mask_max_epi32(vmax, mask_of(jb), vmax, sc);
            }
            let vmax = _mm512_set1_epi32(_mm512_reduce_max_epi32(vmax));

            // w_j = exp2_weight((max - s_j) >> shift): t >= 0, and for t >= 256 the
            // shift t >> 4 >= 16 clears every table entry (< 2^16), as required.
            let mut vsum = _mm512_setzero_si512();
            for jb in 0..nb {
                let sc = _mm512_loadu_si512(scores.as_ptr().add(jb * 16).cast());
                let t = _mm512_srav_epi32(_mm512_sub_epi32(vmax, sc), shift);
                let frac = _mm512_permutexvar_epi32(_mm512_and_si512(t, fifteen), pow2);
                let w = _mm512_maskz_mov_epi32(
                    mask_of(jb),
                    _mm512_srlv_epi32(frac, _mm512_srli_epi32::<4>(t)),
                );
                _mm512_storeu_si512(scores.as_mut_ptr().add(jb * 16).cast(), w);
                vsum = _mm512_add_epi32(vsum, w);
            }
            let sum = _mm512_reduce_add_epi32(vsum);
            let r = _mm512_set1_epi32(((1u32 << 30) / sum as u32) as i32);
            // p_j = min((w_j · r + 2^22) >> 23, 127); masked lanes give 0.
            for jb in 0..nb {
                let w = _mm512_loadu_si512(scores.as_ptr().add(jb * 16).cast());
                let p =
                    _mm512_srai_epi32::<23>(_mm512_add_epi32(_mm512_mullo_epi32(w, r), round_p));
                let p = _mm512_min_epi32(p, p_max);
                _mm_storeu_si128(
                    probs.as_mut_ptr().add(jb * 16).cast(),
                    _mm512_cvtepi32_epi8(p),
                );
            }

            // att = clamp_i8(round_shift(Σ_j p_j · v_j, PROB_BITS)); keys past i have p = 0.
            let ng = (i + 1).div_ceil(4);
            let out = att.as_mut_ptr().add(i * d + off);
            for b in 0..hd / 16 {
                let vb = vp.as_ptr().add(b * ngroups * 64);
                let mut acc = _mm512_setzero_si512();
                for jg in 0..ng {
                    let pb = _mm512_set1_epi32(
                        probs.as_ptr().add(jg * 4).cast::<i32>().read_unaligned(),
                    );
                    acc = _mm512_dpbusd_epi32(acc, pb, _mm512_loadu_si512(vb.add(jg * 64).cast()));
                }
                let o = _mm512_srai_epi32::<{ PROB_BITS }>(_mm512_add_epi32(acc, round_o));
                let o = _mm512_max_epi32(_mm512_min_epi32(o, hi), lo);
                _mm_storeu_si128(out.add(b * 16).cast(), _mm512_cvtepi32_epi8(o));
            }
        }
    }
}

/// Packs head columns `off..off + hd` of the `s` value rows transposed:
/// `vp[(b * ngroups + j / 4) * 64 + c * 4 + j % 4] = v[j][off + 16 b + c]`.
unsafe fn pack_values(
    v: &[i8],
    d: usize,
    off: usize,
    hd: usize,
    s: usize,
    ngroups: usize,
    vp: &mut [u8],
) {
    let zero = _mm_setzero_si128();
    let row = |j: usize, b: usize| {
        if j < s {
            _mm_loadu_si128(v.as_ptr().add(j * d + off + b * 16).cast())
        } else {
            zero
        }
    };
    for b in 0..hd / 16 {
        for jg in 0..s.div_ceil(4) {
            let j = jg * 4;
            let (r0, r1, r2, r3) = (row(j, b), row(j + 1, b), row(j + 2, b), row(j + 3, b));
            // Interleave bytes of rows 0/1 and 2/3, then 16-bit pairs: 4 keys per channel.
            let a = _mm_unpacklo_epi8(r0, r1);
            let bb = _mm_unpackhi_epi8(r0, r1);
            let c = _mm_unpacklo_epi8(r2, r3);
            let e = _mm_unpackhi_epi8(r2, r3);
            let dst = vp.as_mut_ptr().add((b * ngroups + jg) * 64);
            _mm_storeu_si128(dst.cast(), _mm_unpacklo_epi16(a, c));
            _mm_storeu_si128(dst.add(16).cast(), _mm_unpackhi_epi16(a, c));
            _mm_storeu_si128(dst.add(32).cast(), _mm_unpacklo_epi16(bb, e));
            _mm_storeu_si128(dst.add(48).cast(), _mm_unpackhi_epi16(bb, e));
        }
    }
}
}
