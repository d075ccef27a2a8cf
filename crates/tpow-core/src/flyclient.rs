//! FlyClient sampling (Bünz et al., 2019; Nervos CKB RFC 0044) under variable
//! difficulty: which old headers a light client checks, drawn from randomness the
//! *client* chooses, so that a forger cannot re-roll the sample.
//!
//! Positions are drawn in the *work* domain. Let `A` be the work of the last `L`
//! headers (checked fully by the client) and `W` the work of everything below them.
//! A draw picks a distance `d ∈ [A, A + W)` measured from the tip, log-uniformly
//! in dyadic levels: a level `j` uniform in `0..J`, where `J` is the smallest `J ≥ 1`
//! with `A·2^J ≥ A + W`, then `d` uniform in `[A·2^j, min(A·2^(j+1), A + W))`. The
//! sampled work position is `A + W − 1 − d ∈ [0, W)`, and the sampled header the one
//! whose cumulative-work interval holds it. This is FlyClient's density
//! `g(x) = 1/((x − 1) ln δ)` (with `δ = A/(A + W)`), discretised so that both sides
//! compute it with integers only: every interval `[x, 2x)` of distances inside
//! `[A, A + W)` gets probability at least `1/J` (exactly `1/J` unless it reaches the
//! truncated top level, which only has more). Hence a fork whose newest half of
//! claimed work is not backed by valid headers is hit by each draw with
//! probability `≥ 1/J`, however deep it is; see docs/PROTOCOL.md §16.
//!
//! Pure and integer-only (U256/U512): the node and the client must agree bit for
//! bit. Floats appear nowhere; the draw count is an integer formula.

use alloc::vec::Vec;

use crate::{BlockId, U256};

/// BLAKE3 `derive_key` context of the client-seeded draws.
pub const CTX_DRAW: &str = "tpow 2026-11 flyclient draw";

/// BLAKE3 `derive_key` context of the legacy tip-seeded sample (deprecated: the
/// tip's miner can grind it; kept only so older clients keep working).
pub const CTX_SAMPLE: &str = "tpow 2026-11 flyclient sample";

/// Default security level λ in bits: a forged chain escapes the sample with
/// probability at most `2^−λ` (CKB RFC 0044 uses 50).
pub const DEFAULT_SECURITY_BITS: u32 = 50;

/// Largest λ a node serves (more would only cost passes: 128 bits is beyond any
/// practical attack).
pub const MAX_SECURITY_BITS: u32 = 128;

/// Most draws one request may need. With λ = 50 this allows `J ≤ 59` levels, i.e. a
/// chain whose last `L` headers hold more than `2^−58` of the work; an honest chain
/// of ten million blocks at steady difficulty with `L = 100` has `J = 17` (590 draws).
pub const MAX_DRAWS: u64 = 2_048;

/// ln 2 rounded *up* to nine decimals, as a fraction: the draw count uses it so
/// that the integer rule never gives fewer draws than the real-valued bound.
const LN2_NUM: u64 = 693_147_181;
const LN2_DEN: u64 = 1_000_000_000;

/// `A + W`, saturating at `2^256 − 1` like all work sums (§9.3).
fn span(checked: &U256, below: &U256) -> U256 {
    checked.saturating_add(*below)
}

/// `x·2^k`, or `None` when it does not fit in 256 bits.
fn shl(x: &U256, k: u32) -> Option<U256> {
    let k = k as usize;
    if k >= 256 || x.leading_zeros() < k {
        return None;
    }
    Some(*x << k)
}

/// The number of dyadic levels `J` for the last-`L` work `checked = A` and the work
/// below them `below = W`: the smallest `J ≥ 1` with `A·2^J ≥ A + W`. `0` when
/// there is nothing to sample (`W = 0`) or no checked work (`A = 0`).
pub fn levels(checked: &U256, below: &U256) -> u32 {
    if checked.is_zero() || below.is_zero() {
        return 0;
    }
    let s = span(checked, below);
    let mut j = 1u32;
    while shl(checked, j).is_some_and(|v| v < s) {
        j += 1;
    }
    j
}

/// Draws needed for security `security_bits = λ` with `levels = J`: each draw hits a
/// forged fork with probability at least `1/J`, so `m` draws all miss with
/// probability `≤ (1 − 1/J)^m ≤ e^(−m/J)`, which is `≤ 2^−λ` once
/// `m ≥ J·λ·ln 2`. The rule: `m = ceil(J · λ · 693147181 / 10^9)` (ln 2 rounded up),
/// `0` when `J = 0`. For 100,000 headers at steady difficulty and `L = 100`,
/// `J = 10` and λ = 50 give 347 draws.
pub fn draw_count(levels: u32, security_bits: u32) -> u64 {
    let num = u128::from(levels) * u128::from(security_bits) * u128::from(LN2_NUM);
    let den = u128::from(LN2_DEN);
    u64::try_from(num.div_ceil(den)).unwrap_or(u64::MAX)
}

/// The work position of draw `i` for the client's `seed`, in `[0, below)`:
/// `X = XOF("tpow 2026-11 flyclient draw", seed ‖ LE64(i))[0..96]`,
/// level `j = BE256(X[0..32]) mod J`, distance
/// `d = A·2^j + BE512(X[32..96]) mod (min(A·2^(j+1), A+W) − A·2^j)`,
/// position `A + W − 1 − d`. `None` when `levels(checked, below) = 0`.
pub fn draw_position(seed: &[u8; 32], i: u64, checked: &U256, below: &U256) -> Option<U256> {
    let j_count = levels(checked, below);
    if j_count == 0 {
        return None;
    }
    let s = span(checked, below);
    let mut h = blake3::Hasher::new_derive_key(CTX_DRAW);
    h.update(seed);
    h.update(&i.to_le_bytes());
    let mut x = [0u8; 96];
    h.finalize_xof().fill(&mut x);
    let level_bytes: [u8; 32] = x[..32].try_into().ok()?;
    let j = (U256::from_be_bytes(level_bytes) % U256::from(j_count)).to::<u32>();
    // j < J, so A·2^j < A + W: it fits and the level is not empty.
    let lo = shl(checked, j)?;
    let hi = match shl(checked, j + 1) {
        Some(v) if v < s => v,
        _ => s,
    };
    let width = ruint::aliases::U512::from(hi - lo);
    let offset_bytes: [u8; 64] = x[32..].try_into().ok()?;
    let offset = ruint::aliases::U512::from_be_bytes(offset_bytes) % width;
    let d = lo + U256::from(offset);
    Some(s - U256::from(1u8) - d)
}

/// The first height in `0..boundary` whose cumulative work (`total_work_at(h)`,
/// work of heights `0..=h`, non-decreasing) exceeds `r`.
fn height_of(r: &U256, boundary: u64, total_work_at: &impl Fn(u64) -> U256) -> u64 {
    let (mut lo, mut hi) = (0u64, boundary - 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if total_work_at(mid) > *r {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// The node's side: heights in `0..boundary` hit by draws `0..draws` for the
/// client's `seed`, where `checked` is the work of the headers from `boundary` to
/// the tip and `total_work_at(h)` the cumulative work of heights `0..=h`. Sorted and
/// distinct (several draws may hit one header).
pub fn sample_heights(
    seed: &[u8; 32],
    boundary: u64,
    checked: &U256,
    draws: u64,
    total_work_at: impl Fn(u64) -> U256,
) -> Vec<u64> {
    if boundary == 0 {
        return Vec::new();
    }
    let below = total_work_at(boundary - 1);
    let mut out: Vec<u64> = (0..draws)
        .map_while(|i| draw_position(seed, i, checked, &below))
        .map(|r| height_of(&r, boundary, &total_work_at))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Legacy draw `i` of the tip-seeded sample: uniform in `[0, total)`.
/// Deprecated (grindable by the tip's miner, and too few draws on recent work);
/// served only to clients that send no seed.
pub fn legacy_draw(seed: &BlockId, i: u64, total: &U256) -> U256 {
    let mut h = blake3::Hasher::new_derive_key(CTX_SAMPLE);
    h.update(seed);
    h.update(&i.to_le_bytes());
    U256::from_be_bytes(*h.finalize().as_bytes()) % *total
}

/// Legacy tip-seeded sample, uniform over the work below `boundary`. Deprecated:
/// see [`legacy_draw`].
pub fn legacy_sample_heights(
    seed: &BlockId,
    boundary: u64,
    samples: usize,
    total_work_at: impl Fn(u64) -> U256,
) -> Vec<u64> {
    if boundary == 0 || samples == 0 {
        return Vec::new();
    }
    let total = total_work_at(boundary - 1);
    if total.is_zero() {
        return Vec::new();
    }
    let mut out: Vec<u64> =
        (0..samples as u64).map(|i| height_of(&legacy_draw(seed, i, &total), boundary, &total_work_at)).collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_draw_counts_follow_the_rule() {
        let u = |x: u64| U256::from(x);
        assert_eq!(levels(&u(100), &u(0)), 0);
        assert_eq!(levels(&u(0), &u(5)), 0);
        // A = 100, W = 99,900: A·2^10 = 102,400 ≥ 100,000 > A·2^9.
        assert_eq!(levels(&u(100), &u(99_900)), 10);
        assert_eq!(levels(&u(100), &u(100)), 1);
        assert_eq!(levels(&u(100), &u(101)), 2);
        assert_eq!(levels(&U256::from(1u8), &U256::MAX), 256);
        assert_eq!(draw_count(10, 50), 347);
        assert_eq!(draw_count(0, 50), 0);
        assert_eq!(draw_count(1, 1), 1);
    }

    #[test]
    fn draws_stay_in_range_and_weight_recent_work() {
        let (a, w) = (U256::from(100u8), U256::from(99_900u32));
        let mut newest_half_level = 0;
        for i in 0..2_000u64 {
            let p = draw_position(&[3; 32], i, &a, &w).expect("levels > 0");
            assert!(p < w);
            // Distance from the tip in [A, 2A): the level next to the checked part.
            if p >= w - a {
                newest_half_level += 1;
            }
        }
        // Level 0 has probability 1/10: the newest 0.1 % of the work gets ~200 of 2,000.
        assert!((140..260).contains(&newest_half_level), "{newest_half_level}");
        assert_eq!(draw_position(&[3; 32], 0, &a, &U256::ZERO), None);
        // Extreme values do not overflow.
        let p = draw_position(&[9; 32], 1, &U256::from(1u8), &U256::MAX).expect("levels");
        assert!(p < U256::MAX);
    }

    #[test]
    fn sample_heights_is_deterministic_and_bounded() {
        let work = |h: u64| U256::from(if h < 100 { h + 1 } else { 100 + 9 * (h - 99) });
        let checked = U256::from(50u8);
        let a = sample_heights(&[1; 32], 200, &checked, 60, work);
        assert_eq!(a, sample_heights(&[1; 32], 200, &checked, 60, work));
        assert_ne!(a, sample_heights(&[2; 32], 200, &checked, 60, work));
        assert!(a.iter().all(|&h| h < 200));
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert!(sample_heights(&[1; 32], 0, &checked, 5, work).is_empty());
        let legacy = legacy_sample_heights(&[1; 32], 200, 50, work);
        assert!(legacy.iter().all(|&h| h < 200) && !legacy.is_empty());
    }
}
