//! The integer building blocks of the forward pass.
//!
//! Each function here is a consensus rule: docs/PROTOCOL.md gives the same
//! definitions, and the WGSL kernels mirror them line by line. All arithmetic stays
//! inside i32 for every input the forward pass can produce (the bounds are noted
//! per function), so there is no wrapping, and no 64-bit type is ever needed.

/// Residual stream values are clamped to this magnitude, so a square fits in 2^30.
pub const RESIDUAL_MAX: i32 = 32767;
/// Activations fed to matrix products are clamped to ±127 (symmetric int8).
pub const ACT_MAX: i32 = 127;
/// RMS of a normalised activation vector is 2^NORM_RMS_LOG2 = 32.
pub const NORM_RMS_LOG2: u32 = 5;
/// Embeddings are scaled by 2^EMBED_SHIFT when they enter the residual stream.
pub const EMBED_SHIFT: u32 = 2;
/// Attention probabilities are fixed point with this many fraction bits (Q7).
pub const PROB_BITS: u32 = 7;

/// `round(2^15 * 2^(-f/16))` for f in 0..16: the fractional part of the base-2
/// exponential used by the softmax. These 16 integers *are* the definition.
pub const POW2_FRAC: [i32; 16] =
    [32768, 31379, 30048, 28774, 27554, 26386, 25268, 24196, 23170, 22188, 21247, 20347, 19484, 18658, 17867, 17109];

/// `(v + 2^(s-1)) >> s` with an arithmetic shift: rounds to nearest, halves up.
/// Requires 1 <= s <= 30 and no overflow of the addition (callers' bounds).
#[inline(always)]
pub fn round_shift(v: i32, s: u32) -> i32 {
    (v + (1 << (s - 1))) >> s
}

/// Clamps to the symmetric int8 range.
#[inline(always)]
pub fn clamp_i8(v: i32) -> i8 {
    v.clamp(-ACT_MAX, ACT_MAX) as i8
}

/// Floor of the square root, bit by bit (shifts, adds and compares only).
pub fn isqrt(n: u32) -> u32 {
    let mut rem = n;
    let mut root = 0u32;
    let mut bit = 1u32 << 30;
    while bit > rem {
        bit >>= 2;
    }
    while bit != 0 {
        if rem >= root + bit {
            rem -= root + bit;
            root = (root >> 1) + bit;
        } else {
            root >>= 1;
        }
        bit >>= 2;
    }
    root
}

/// Number of significant bits (0 for 0).
#[inline(always)]
pub fn bit_length(n: u32) -> u32 {
    32 - n.leading_zeros()
}

/// Integer RMS normalisation of one residual row into int8 with RMS ≈ 32.
///
/// `ms = Σ (x_i² >> log2 d)` (each |x_i| <= 32767, so x_i² < 2^30 and the sum of d
/// terms, each < 2^30 / d, stays below 2^30); `r = max(isqrt(ms), 1)`;
/// `b = bit_length(r)`; `inv = 2^(b+14) / r` (unsigned floor division; inv lies in
/// (2^14, 2^15]); `y_i = clamp_i8(round_shift(x_i * inv, b + 9))`.
pub fn rms_norm(x: &[i32], y: &mut [i8]) {
    debug_assert!(x.len().is_power_of_two());
    let log2_d = x.len().trailing_zeros();
    let mut ms = 0u32;
    for &v in x {
        ms += ((v * v) as u32) >> log2_d;
    }
    let r = isqrt(ms).max(1);
    let b = bit_length(r);
    let inv = ((1u32 << (b + 14)) / r) as i32;
    let s = b + 14 - NORM_RMS_LOG2;
    for (o, &v) in y.iter_mut().zip(x) {
        *o = clamp_i8(round_shift(v * inv, s));
    }
}

/// Shift that brings a product of `cols` int8 inputs (RMS 32) by uniform int8
/// weights (RMS ≈ 74) back to an int8 activation of RMS ≈ 32-37.
pub fn act_shift(cols: usize) -> u32 {
    (cols.trailing_zeros() + 12) / 2
}

/// Shift that turns a sublayer's output product into a residual update of RMS ≈ 2^9-2^10.
pub fn residual_shift(cols: usize) -> u32 {
    cols.trailing_zeros() / 2 + 2
}

/// Shift from a query-key dot product to softmax exponent steps (1/16 octave).
pub fn score_shift(head_dim: usize) -> u32 {
    (head_dim.trailing_zeros() + 12) / 2
}

/// Unnormalised softmax weight of a score `t` steps below the maximum:
/// `POW2_FRAC[t & 15] >> (t >> 4)`, zero from t = 256 on.
#[inline(always)]
pub fn exp2_weight(t: i32) -> i32 {
    if t >= 256 {
        0
    } else {
        POW2_FRAC[(t & 15) as usize] >> (t >> 4)
    }
}

/// The MLP nonlinearity on int8 (scale 1/32): an integer GELU.
///
/// With `t = clamp(v, -80, 80)`, `a = 80 - |t|`, `e = 4096 - (a² · 4096) / 6400`
/// (floor), `L = sign(t) · e` approximates 4096·erf(v / (32·√2)) by a quadratic, and
/// `gelu(v) = round_shift(v · (4096 + L), 13)`.
pub const fn gelu_i8(v: i32) -> i8 {
    let t = if v < -80 {
        -80
    } else if v > 80 {
        80
    } else {
        v
    };
    let a = 80 - if t < 0 { -t } else { t };
    let e = 4096 - (a * a * 4096) / 6400;
    let l = if t < 0 {
        -e
    } else if t > 0 {
        e
    } else {
        0
    };
    ((v * (4096 + l) + (1 << 12)) >> 13) as i8
}

/// [`gelu_i8`] tabulated for every int8 input: `GELU_TABLE[v + 128]`.
pub const GELU_TABLE: [i8; 256] = {
    let mut t = [0i8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = gelu_i8(i as i32 - 128);
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isqrt_is_floor_sqrt() {
        for n in (0u32..100_000).chain([(1 << 30) - 1, 1 << 30, u32::MAX / 4]) {
            let r = isqrt(n) as u64;
            assert!(r * r <= n as u64 && (r + 1) * (r + 1) > n as u64, "n={n}");
        }
    }

    #[test]
    fn pow2_table_matches_its_definition() {
        // The table is the definition; this only guards against a typo.
        for (f, &v) in POW2_FRAC.iter().enumerate() {
            let exact = 32768.0 * 2f64.powf(-(f as f64) / 16.0);
            assert!((v as f64 - exact).abs() <= 0.5, "f={f}");
        }
    }

    #[test]
    fn gelu_shape() {
        assert_eq!(gelu_i8(0), 0);
        assert_eq!(gelu_i8(127), 127);
        assert_eq!(gelu_i8(-128), 0);
        // Monotone on the positive side, small negative dip, like GELU.
        for v in 0..127 {
            assert!(gelu_i8(v) <= gelu_i8(v + 1));
        }
        assert!((-128..0).all(|v| gelu_i8(v) <= 0 && gelu_i8(v) >= -8));
        assert_eq!(GELU_TABLE[128 + 32], gelu_i8(32));
    }

    #[test]
    fn rms_norm_hits_target_rms() {
        for scale in [1i32, 7, 100, 3000, 32767] {
            let x: alloc::vec::Vec<i32> = (0..256).map(|i| ((i * 37 % 101) - 50) * scale / 50).collect();
            let mut y = [0i8; 256];
            rms_norm(&x, &mut y);
            // Signs always survive.
            assert!(x.iter().zip(&y).all(|(&a, &b)| a.signum() == (b as i32).signum()));
            if scale >= 100 {
                let ms: i64 = y.iter().map(|&v| (v as i64) * (v as i64)).sum::<i64>() / 256;
                assert!((900..=1200).contains(&ms), "scale={scale} ms={ms}");
            }
            // Below |x| = 16 every x² >> 8 is 0: the norm saturates by design (the
            // residual stream never gets that small; see PROTOCOL.md §6).
        }
    }
}
