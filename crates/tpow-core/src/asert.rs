//! Difficulty adjustment: ASERT, exactly Bitcoin Cash's `aserti3-2d`.
//!
//! ASERT ("absolutely scheduled exponentially rising targets") sets each
//! block's target from a single fixed anchor block: the target doubles for
//! every half-life the chain is behind its ideal schedule and halves for every
//! half-life it is ahead. Because the formula is *absolute* (a function of the
//! anchor and the parent only, never of the previous target) rounding errors
//! cannot accumulate, and every node derives the same value from the header
//! chain alone.
//!
//! The integer algorithm below is a transcription of the published
//! `aserti3-2d` specification (16-bit fixed-point exponent, cubic
//! approximation of `2^x` on `[0, 1)`), so its outputs match Bitcoin Cash's
//! for the same inputs. The only differences are the units (this chain's
//! timestamps are unix **milliseconds**) and that out-of-range inputs
//! saturate instead of tripping assertions, because consensus code must not
//! panic on anything a peer can send.

use crate::target::CompactTarget;
use crate::U256;

/// Chain-wide ASERT parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AsertParams {
    /// The intended spacing between blocks, in milliseconds.
    pub ideal_block_time_ms: u64,
    /// How long the chain must be off schedule for the target to double or
    /// halve, in milliseconds. `0` is treated as `1` so the division cannot
    /// fail.
    pub half_life_ms: u64,
    /// The easiest target ever allowed ("pow limit"); results are clamped to
    /// it.
    ///
    /// Bitcoin Cash's 256-bit arithmetic multiplies the anchor target by a
    /// 17-bit factor, so it needs `max_target < 2^239`; keep to that bound so
    /// the behaviour is the audited one. (This implementation uses a wider
    /// intermediate, so a larger value does not overflow or panic either.)
    pub max_target: U256,
}

/// The anchor block that the whole schedule is measured from.
///
/// For this chain the anchor is genesis: `height = 0`,
/// `parent_timestamp_ms = genesis timestamp - ideal block time` (genesis has
/// no parent, so the one it would have had on schedule is used), and
/// `target` = the genesis target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AsertAnchor {
    /// Height of the anchor block.
    pub height: u64,
    /// Timestamp of the anchor block's parent, in unix milliseconds. The
    /// parent's time is used (not the anchor's own) so that the anchor's
    /// miner cannot shift the whole schedule by lying about its timestamp.
    pub parent_timestamp_ms: u64,
    /// The anchor block's target. Clamped to `max_target` before use.
    pub target: U256,
}

/// 1.0 in the 16-bit fixed-point format of the exponent.
const RADIX_BITS: u32 = 16;

/// Bound on `|exponent|` (in 16.16 fixed point). Any exponent beyond ±400
/// doublings already drives every target to 1 or to `max_target` (a 256-bit
/// target can be shifted at most 256 + 17 bits before it saturates), so
/// clamping there changes no result but keeps all shift amounts small.
const EXPONENT_LIMIT: i128 = 400 << RADIX_BITS;

/// A 320-bit integer: wide enough for a 256-bit target times the 17-bit
/// factor, so the product can never wrap whatever `max_target` is.
type U320 = ruint::Uint<320, 5>;

fn widen(x: U256) -> U320 {
    let l = x.as_limbs();
    U320::from_limbs([l[0], l[1], l[2], l[3], 0])
}

/// Narrows a value known to be below 2^256.
fn narrow(x: U320) -> U256 {
    let l = x.as_limbs();
    U256::from_limbs([l[0], l[1], l[2], l[3]])
}

/// The target of the block at height `parent_height + 1`, whose parent has
/// timestamp `parent_timestamp_ms`.
///
/// Always returns a value in `[1, max(params.max_target, 1)]` and never panics, whatever the inputs: timestamps
/// before the anchor, heights below it, and `u64::MAX` everywhere are all
/// handled by signed, saturating arithmetic.
pub fn next_target(params: &AsertParams, anchor: &AsertAnchor, parent_height: u64, parent_timestamp_ms: u64) -> U256 {
    let max_target = params.max_target;

    // All inputs are u64, so the differences fit in i128 exactly. Only the
    // schedule product (up to 2^128) and the fixed-point scaling can leave
    // the i128 range; they saturate, which is harmless because any value that
    // large is far beyond EXPONENT_LIMIT anyway.
    let time_delta = i128::from(parent_timestamp_ms) - i128::from(anchor.parent_timestamp_ms);
    let height_delta = i128::from(parent_height) - i128::from(anchor.height);
    // The anchor's parent is where the schedule starts, so the parent of the
    // block being computed is `height_delta + 1` ideal intervals after it.
    let scheduled = i128::from(params.ideal_block_time_ms).saturating_mul(height_delta + 1);
    let half_life = i128::from(params.half_life_ms.max(1));
    // Rust's `/` truncates toward zero, as C++'s does in the reference code.
    let exponent = (time_delta.saturating_sub(scheduled).saturating_mul(1 << RADIX_BITS) / half_life)
        .clamp(-EXPONENT_LIMIT, EXPONENT_LIMIT);

    // Arithmetic shift: floor division, so `frac` is always in [0, 65536)
    // and `2^exponent = 2^shifts * 2^(frac / 65536)`.
    let shifts = (exponent >> RADIX_BITS) as i64; // within ±400 after the clamp
    let frac = (exponent & 0xffff) as u128;

    // 2^(frac/65536) in 16.16 fixed point, by the spec's cubic polynomial.
    // u128 so no intermediate can overflow (in the spec's u64 they just fit).
    let factor: u128 = 65536
        + ((195_766_423_245_049 * frac + 971_821_376 * frac * frac + 5_127 * frac * frac * frac + (1 << 47)) >> 48);

    let anchor_target = if anchor.target > max_target { max_target } else { anchor.target };
    // < 2^256 * 2^17, so it fits in 320 bits.
    let next = widen(anchor_target) * U320::from(factor);

    // Undo the 16 fractional bits of `factor` together with the integer part.
    let shifts = shifts - i64::from(RADIX_BITS);
    let next = if shifts <= 0 {
        let right = shifts.unsigned_abs() as usize; // at most 416
        if right >= 320 {
            Some(U320::ZERO)
        } else {
            Some(next >> right)
        }
    } else {
        let left = shifts as usize; // at most 384
                                    // The reference shifts a 256-bit number and falls back to the limit
                                    // when set bits would be shifted out; that is exactly when the true
                                    // result needs more than 256 bits (never for zero, which has no
                                    // set bits to lose).
        if !next.is_zero() && next.bit_len() + left > 256 {
            None
        } else {
            Some(next << left)
        }
    };

    // The reference maps 0 to 1 and then clamps to the limit; clamping first
    // gives the same result for every `max_target >= 1` and still returns a
    // meetable target if a chain were misconfigured with a zero limit.
    let next = match next {
        Some(n) if n <= widen(max_target) => narrow(n),
        _ => max_target,
    };
    if next.is_zero() {
        // A zero target would be unmeetable; 1 is the hardest real target.
        return U256::from(1u8);
    }
    next
}

/// The compact form of [`next_target`], which is what a header must carry:
/// header validity is an exact equality on this value.
pub fn next_compact(
    params: &AsertParams,
    anchor: &AsertAnchor,
    parent_height: u64,
    parent_timestamp_ms: u64,
) -> CompactTarget {
    CompactTarget::from_target(next_target(params, anchor, parent_height, parent_timestamp_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const IDEAL: u64 = 10_000;
    const HALF_LIFE: u64 = 3_600_000;

    fn params() -> AsertParams {
        AsertParams {
            ideal_block_time_ms: IDEAL,
            half_life_ms: HALF_LIFE,
            max_target: (U256::from(1u8) << 236) - U256::from(1u8),
        }
    }

    fn anchor() -> AsertAnchor {
        AsertAnchor {
            height: 0,
            parent_timestamp_ms: 1_800_000_000_000 - IDEAL,
            target: U256::from(0xabcdefu32) << 200,
        }
    }

    /// The timestamp a block at `height` would have on the ideal schedule.
    fn on_schedule(a: &AsertAnchor, height: u64) -> u64 {
        a.parent_timestamp_ms + IDEAL * (height - a.height + 1)
    }

    #[test]
    fn on_schedule_keeps_target() {
        let (p, a) = (params(), anchor());
        for h in [0u64, 1, 2, 17, 1000, 1_000_000] {
            assert_eq!(next_target(&p, &a, h, on_schedule(&a, h)), a.target);
            assert_eq!(next_compact(&p, &a, h, on_schedule(&a, h)), CompactTarget::from_target(a.target));
        }
    }

    #[test]
    fn half_life_doubles_and_halves() {
        let (p, a) = (params(), anchor());
        let h = 500;
        let ts = on_schedule(&a, h);
        // Blocks came too fast: one half-life ahead of schedule, target halves.
        assert_eq!(next_target(&p, &a, h, ts - HALF_LIFE), a.target >> 1);
        // Too slow: one half-life behind, target doubles.
        assert_eq!(next_target(&p, &a, h, ts + HALF_LIFE), a.target << 1);
        assert_eq!(next_target(&p, &a, h, ts + 3 * HALF_LIFE), a.target << 3);
        assert_eq!(next_target(&p, &a, h, ts - 5 * HALF_LIFE), a.target >> 5);
        // Same statements on the compact form the header carries.
        assert_eq!(next_compact(&p, &a, h, ts + HALF_LIFE), CompactTarget::from_target(a.target << 1));
        assert_eq!(next_compact(&p, &a, h, ts - HALF_LIFE), CompactTarget::from_target(a.target >> 1));
    }

    #[test]
    fn fractional_exponent_is_close_to_exp2() {
        let (p, a) = (params(), anchor());
        let ts = on_schedule(&a, 0) + HALF_LIFE / 2;
        let got = next_target(&p, &a, 0, ts);
        // target * sqrt(2), to within the 16-bit fixed-point factor (~1e-4).
        let expect_lo = a.target * U256::from(1_414_000u32) / U256::from(1_000_000u32);
        let expect_hi = a.target * U256::from(1_414_300u32) / U256::from(1_000_000u32);
        assert!(got > expect_lo && got < expect_hi);
    }

    #[test]
    fn timestamp_before_anchor_parent() {
        let (p, a) = (params(), anchor());
        let t = next_target(&p, &a, 0, a.parent_timestamp_ms - HALF_LIFE + IDEAL);
        assert_eq!(t, a.target >> 1);
        assert_eq!(next_target(&p, &a, 0, 0), U256::from(1u8));
    }

    #[test]
    fn clamps() {
        let (p, a) = (params(), anchor());
        assert_eq!(next_target(&p, &a, 0, u64::MAX), p.max_target);
        assert_eq!(next_target(&p, &a, u64::MAX, 0), U256::from(1u8));
        assert_eq!(next_target(&p, &a, u64::MAX, u64::MAX), U256::from(1u8));
        // Anchor above the limit is clamped first.
        let big = AsertAnchor { target: U256::MAX, ..a };
        assert_eq!(next_target(&p, &big, 0, on_schedule(&a, 0)), p.max_target);
        // A zero anchor target still yields the minimum valid target.
        let zero = AsertAnchor { target: U256::ZERO, ..a };
        assert_eq!(next_target(&p, &zero, 0, u64::MAX), U256::from(1u8));
    }

    #[test]
    fn degenerate_params_do_not_panic() {
        let a = anchor();
        for max_target in [U256::ZERO, U256::from(1u8), U256::MAX] {
            for (ideal, half) in [(0, 0), (u64::MAX, 0), (0, u64::MAX), (u64::MAX, u64::MAX)] {
                let p = AsertParams { ideal_block_time_ms: ideal, half_life_ms: half, max_target };
                for (h, ts) in [(0, 0), (u64::MAX, 0), (0, u64::MAX), (u64::MAX, u64::MAX)] {
                    let t = next_target(&p, &a, h, ts);
                    assert!(t >= U256::from(1u8));
                    assert!(t <= max_target.max(U256::from(1u8)));
                }
            }
        }
        // Full-width limit: overflowing results saturate at U256::MAX.
        let p = AsertParams { max_target: U256::MAX, ..params() };
        let a = AsertAnchor { target: U256::MAX, ..a };
        assert_eq!(next_target(&p, &a, 0, on_schedule(&a, 0)), U256::MAX);
        assert_eq!(next_target(&p, &a, 0, on_schedule(&a, 0) - HALF_LIFE), U256::MAX >> 1);
    }

    fn any_params() -> impl Strategy<Value = AsertParams> {
        (1u64..=u64::MAX, 1u64..=u64::MAX, any::<[u64; 4]>(), 17usize..256).prop_map(|(ideal, half, l, s)| {
            AsertParams { ideal_block_time_ms: ideal, half_life_ms: half, max_target: U256::from_limbs(l) >> s }
        })
    }

    fn any_anchor() -> impl Strategy<Value = AsertAnchor> {
        (any::<u64>(), any::<u64>(), any::<[u64; 4]>(), 0usize..256).prop_map(|(height, ts, l, s)| AsertAnchor {
            height,
            parent_timestamp_ms: ts,
            target: U256::from_limbs(l) >> s,
        })
    }

    /// Realistic ranges, where monotonicity is not just saturation.
    fn near() -> impl Strategy<Value = (AsertAnchor, u64, u64, u64)> {
        (
            1u64..=1_000_000,
            0u64..=1_000_000_000_000,
            1u32..=u32::MAX,
            0u64..=10_000_000,
            0u64..=10_000_000_000,
            0u64..=100_000,
        )
            .prop_map(|(h0, t0, tgt, dh, dt, extra)| {
                let a = AsertAnchor { height: h0, parent_timestamp_ms: t0, target: U256::from(tgt) << 190 };
                (a, h0 + dh, t0 + dt, extra)
            })
    }

    proptest! {
        #[test]
        fn result_in_range(p in any_params(), a in any_anchor(), h in any::<u64>(), ts in any::<u64>()) {
            let t = next_target(&p, &a, h, ts);
            prop_assert!(t >= U256::from(1u8));
            prop_assert!(t <= p.max_target.max(U256::from(1u8)));
        }

        #[test]
        fn later_timestamp_never_harder((a, h, ts, extra) in near()) {
            let p = params();
            let t1 = next_target(&p, &a, h, ts);
            let t2 = next_target(&p, &a, h, ts + extra);
            prop_assert!(t2 >= t1);
            prop_assert!(CompactTarget::from_target(t2).to_target().unwrap()
                >= CompactTarget::from_target(t1).to_target().unwrap());
        }

        #[test]
        fn greater_height_never_easier((a, h, ts, extra) in near()) {
            let p = params();
            let t1 = next_target(&p, &a, h, ts);
            let t2 = next_target(&p, &a, h + extra, ts);
            prop_assert!(t2 <= t1);
        }

        #[test]
        fn monotone_for_extreme_inputs(p in any_params(), a in any_anchor(),
                                       h1 in any::<u64>(), h2 in any::<u64>(),
                                       t1 in any::<u64>(), t2 in any::<u64>()) {
            let (hl, hh) = (h1.min(h2), h1.max(h2));
            let (tl, th) = (t1.min(t2), t1.max(t2));
            prop_assert!(next_target(&p, &a, hl, th) >= next_target(&p, &a, hl, tl));
            prop_assert!(next_target(&p, &a, hh, tl) <= next_target(&p, &a, hl, tl));
        }

        #[test]
        fn on_schedule_is_identity((a, h, _ts, _e) in near()) {
            let p = params();
            let ts = a.parent_timestamp_ms + IDEAL * (h - a.height + 1);
            prop_assert_eq!(next_target(&p, &a, h, ts), a.target);
        }
    }
}
