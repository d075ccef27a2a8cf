//! FlyClient sampling (after Nervos CKB RFC 0044): which old headers a light
//! client should check, chosen in proportion to cumulative work so that a forger
//! must fake a large share of the work to escape the sample.
//!
//! Pure: given the tip id (the seed, so the prover cannot choose the sample
//! after the fact and anyone can recompute it) and the cumulative work per height,
//! it returns sorted distinct heights.

use alloc::vec::Vec;

use crate::{BlockId, U256};

/// BLAKE3 `derive_key` context of the sampling stream.
pub const CTX_SAMPLE: &str = "tpow 2026-11 flyclient sample";

/// Heights in `0..boundary` sampled by work: draw `r_i` uniform in
/// `[0, work_before(boundary))` from `blake3(seed, i)`, take the height whose
/// cumulative-work interval contains it. `total_work_at(h)` is the work of heights
/// `0..=h`, non-decreasing in `h`.
pub fn sample_heights(seed: &BlockId, boundary: u64, samples: usize, total_work_at: impl Fn(u64) -> U256) -> Vec<u64> {
    if boundary == 0 || samples == 0 {
        return Vec::new();
    }
    let total = total_work_at(boundary - 1);
    if total.is_zero() {
        return Vec::new();
    }
    let mut out: Vec<u64> = (0..samples as u64)
        .map(|i| {
            let mut h = blake3::Hasher::new_derive_key(CTX_SAMPLE);
            h.update(seed);
            h.update(&i.to_le_bytes());
            let r = U256::from_be_bytes(*h.finalize().as_bytes()) % total;
            // First height whose cumulative work exceeds r.
            let (mut lo, mut hi) = (0u64, boundary - 1);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if total_work_at(mid) > r {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            lo
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_bounded_and_work_weighted() {
        // Heights 0..100 with work 1 each, then 100..200 with work 9 each.
        let work = |h: u64| U256::from(if h < 100 { h + 1 } else { 100 + 9 * (h - 99) });
        let a = sample_heights(&[1; 32], 200, 50, work);
        assert_eq!(a, sample_heights(&[1; 32], 200, 50, work));
        assert_ne!(a, sample_heights(&[2; 32], 200, 50, work));
        assert!(a.iter().all(|&h| h < 200));
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        let heavy = a.iter().filter(|&&h| h >= 100).count();
        assert!(heavy * 2 > a.len(), "heavy half holds 90% of the work: {a:?}");
        assert!(sample_heights(&[1; 32], 0, 5, work).is_empty());
    }
}
