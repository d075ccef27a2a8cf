//! Compact proof-of-work targets ("nBits") and the work a target represents.
//!
//! Headers store the target in Bitcoin's 32-bit compact form rather than as a
//! full 256-bit integer. The encoding is lossy, so consensus compares the
//! *compact* value a header carries with the compact value the difficulty
//! algorithm produces; decoding and encoding therefore have to be exactly
//! Bitcoin's `SetCompact` / `GetCompact`, including their rounding and their
//! rejection rules, or nodes would disagree about which headers are valid.

use crate::U256;
use thiserror::Error;

/// Why a compact target does not decode to a usable target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Error)]
pub enum TargetError {
    /// The sign bit (bit 23) is set and the mantissa is nonzero. Bitcoin
    /// treats such values as negative numbers; no hash can be below them.
    #[error("compact target is negative")]
    Negative,
    /// The exponent shifts nonzero mantissa bits past bit 255.
    #[error("compact target overflows 256 bits")]
    Overflow,
    /// The target decodes to zero. Only a hash of exactly zero would meet it,
    /// and the work of such a block is undefined, so it is never valid.
    #[error("compact target is zero")]
    Zero,
}

/// A target in Bitcoin's compact "nBits" encoding.
///
/// Bits 24..31 hold the size of the number in bytes, bits 0..22 the top
/// bytes of the number (the mantissa), and bit 23 is a sign bit that is never
/// set by [`CompactTarget::from_target`]. Many different `u32` values decode to
/// the same target; only the value produced by `from_target` is canonical, and
/// that is the one consensus compares against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CompactTarget(pub u32);

/// Bit 23 of the compact form: Bitcoin's sign bit.
const SIGN_BIT: u32 = 0x0080_0000;
/// Bits 0..22 of the compact form: the mantissa.
const MANTISSA_MASK: u32 = 0x007f_ffff;

impl CompactTarget {
    /// Decodes the compact form into a full target (Bitcoin's `SetCompact`),
    /// rejecting every value that Bitcoin flags as negative or overflowing,
    /// and zero.
    ///
    /// The checks happen in that order so that an encoding which is both
    /// "negative" and zero (sign bit set, zero mantissa) reports `Zero`, as in
    /// Bitcoin, where such a value is not considered negative.
    pub fn to_target(self) -> Result<U256, TargetError> {
        let size = self.0 >> 24;
        let word = self.0 & MANTISSA_MASK;

        if word != 0 && self.0 & SIGN_BIT != 0 {
            return Err(TargetError::Negative);
        }
        // Same overflow rule as Bitcoin: the mantissa has up to 3 significant
        // bytes, so depending on how many of them are nonzero the number may
        // use at most 34, 33 or 32 bytes.
        if word != 0 && (size > 34 || (word > 0xff && size > 33) || (word > 0xffff && size > 32)) {
            return Err(TargetError::Overflow);
        }

        let target = if size <= 3 {
            // `size <= 3` so the shift is at most 24 and cannot overflow a u32.
            U256::from(word >> (8 * (3 - size)))
        } else {
            // The overflow check above guarantees no set bit is shifted out:
            // size <= 34 makes the shift at most 248 bits.
            U256::from(word) << (8 * (size - 3)) as usize
        };
        if target.is_zero() {
            return Err(TargetError::Zero);
        }
        Ok(target)
    }

    /// Encodes a target in compact form (Bitcoin's `GetCompact`).
    ///
    /// Keeps the top 3 significant bytes and rounds down (truncates) the
    /// rest, so the decoded value is never larger than `target`: a miner can
    /// never gain easier work through the encoding. If the top mantissa byte
    /// would have bit 7 set (which would read as the sign bit) the mantissa is
    /// shifted down one byte and the size incremented instead, so the result
    /// never has the sign bit set. Zero encodes as `0`.
    pub fn from_target(target: U256) -> CompactTarget {
        // At most 32, so everything below fits in u32 without overflow.
        let mut size = target.bit_len().div_ceil(8) as u32;
        let mut compact: u32 = if size <= 3 {
            // The value fits in 24 bits here.
            let low = target.as_limbs()[0] as u32;
            low << (8 * (3 - size))
        } else {
            let shifted = target >> (8 * (size - 3)) as usize;
            // After the shift at most 24 bits remain.
            shifted.as_limbs()[0] as u32
        };
        if compact & SIGN_BIT != 0 {
            compact >>= 8;
            size += 1;
        }
        CompactTarget(compact | (size << 24))
    }
}

/// The expected number of hashes needed to find a hash `<= target`,
/// `floor(2^256 / (target + 1))`.
///
/// Chain selection sums this over headers, so it must be exact and identical
/// on every node. 2^256 does not fit in a U256, hence the identity
/// `2^256 / (t + 1) = (2^256 - t - 1) / (t + 1) + 1 = !t / (t + 1) + 1`.
///
/// Edge cases, chosen so the function never panics: `target == U256::MAX`
/// gives 1 (every hash meets it); `target == 0`, which a valid header can
/// never carry, gives `U256::MAX` (the true value, 2^256, is not
/// representable).
pub fn block_work(target: U256) -> U256 {
    if target.is_zero() {
        return U256::MAX;
    }
    if target == U256::MAX {
        return U256::from(1u8);
    }
    // `target + 1` cannot overflow (target < MAX) and is nonzero, and the
    // quotient is at most 2^255 - 1, so `+ 1` cannot overflow either.
    (!target / (target + U256::from(1u8))) + U256::from(1u8)
}

/// Whether a proof-of-work hash meets `target`.
///
/// The hash is read as a big-endian integer, so its first byte is the most
/// significant: this is the convention the rest of the chain (mining, block
/// explorers) uses when it prints a hash and counts its leading zeros.
pub fn hash_meets_target(hash: &[u8; 32], target: &U256) -> bool {
    U256::from_be_bytes(*hash) <= *target
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn u256_hex(s: &str) -> U256 {
        U256::from_str_radix(s, 16).unwrap()
    }

    #[test]
    fn bitcoin_genesis_target() {
        let t = CompactTarget(0x1d00ffff).to_target().unwrap();
        assert_eq!(t, u256_hex("00000000ffff0000000000000000000000000000000000000000000000000000"));
        assert_eq!(CompactTarget::from_target(t), CompactTarget(0x1d00ffff));
        // Genesis-chain max target minus 1: rounding down keeps the top 3 bytes.
        let t = u256_hex("00000000fffeffffffffffffffffffffffffffffffffffffffffffffffffffff");
        assert_eq!(CompactTarget::from_target(t), CompactTarget(0x1d00fffe));
    }

    #[test]
    fn known_bitcoin_values() {
        // Block 32256, the first difficulty change on Bitcoin.
        let t = CompactTarget(0x1d00d86a).to_target().unwrap();
        assert_eq!(t, u256_hex("00000000d86a0000000000000000000000000000000000000000000000000000"));
        assert_eq!(CompactTarget::from_target(t), CompactTarget(0x1d00d86a));
        // A modern mainnet value.
        let t = CompactTarget(0x17034219).to_target().unwrap();
        assert_eq!(t, u256_hex("0000000000000000000342190000000000000000000000000000000000000000"));
        assert_eq!(CompactTarget::from_target(t), CompactTarget(0x17034219));
        // Regtest limit.
        let t = CompactTarget(0x207fffff).to_target().unwrap();
        assert_eq!(t, u256_hex("7fffff0000000000000000000000000000000000000000000000000000000000"));
        assert_eq!(CompactTarget::from_target(t), CompactTarget(0x207fffff));
    }

    #[test]
    fn bitcoin_core_set_compact_cases() {
        // Small sizes drop low mantissa bytes.
        assert_eq!(CompactTarget(0x01123456).to_target(), Ok(U256::from(0x12u8)));
        assert_eq!(CompactTarget(0x02123456).to_target(), Ok(U256::from(0x1234u16)));
        assert_eq!(CompactTarget(0x03123456).to_target(), Ok(U256::from(0x123456u32)));
        assert_eq!(CompactTarget(0x04123456).to_target(), Ok(U256::from(0x12345600u32)));
        assert_eq!(CompactTarget(0x05009234).to_target(), Ok(U256::from(0x92340000u32)));
        // GetCompact of small values; 0x80 needs the extra byte.
        assert_eq!(CompactTarget::from_target(U256::from(0x12u8)), CompactTarget(0x01120000));
        assert_eq!(CompactTarget::from_target(U256::from(0x80u8)), CompactTarget(0x02008000));
        assert_eq!(CompactTarget::from_target(U256::from(0x1234u16)), CompactTarget(0x02123400));
        assert_eq!(CompactTarget::from_target(U256::from(0x92340000u32)), CompactTarget(0x05009234));
        assert_eq!(CompactTarget::from_target(U256::ZERO), CompactTarget(0));
        assert_eq!(CompactTarget::from_target(U256::MAX), CompactTarget(0x2100ffff));
        assert_eq!(
            CompactTarget(0x2100ffff).to_target(),
            Ok(u256_hex("ffff000000000000000000000000000000000000000000000000000000000000"))
        );
    }

    #[test]
    fn rejects_negative_overflow_zero() {
        assert_eq!(CompactTarget(0x04923456).to_target(), Err(TargetError::Negative));
        assert_eq!(CompactTarget(0x01fedcba).to_target(), Err(TargetError::Negative));
        // Sign bit with zero mantissa is zero, not negative.
        assert_eq!(CompactTarget(0x04800000).to_target(), Err(TargetError::Zero));
        assert_eq!(CompactTarget(0).to_target(), Err(TargetError::Zero));
        assert_eq!(CompactTarget(0x00123456).to_target(), Err(TargetError::Zero));
        assert_eq!(CompactTarget(0x01003456).to_target(), Err(TargetError::Zero));
        assert_eq!(CompactTarget(0xff123456).to_target(), Err(TargetError::Overflow));
        assert_eq!(CompactTarget(0x23000001).to_target(), Err(TargetError::Overflow));
        assert_eq!(CompactTarget(0x22000100).to_target(), Err(TargetError::Overflow));
        assert_eq!(CompactTarget(0x21010000).to_target(), Err(TargetError::Overflow));
        // The largest values that still fit.
        assert!(CompactTarget(0x220000ff).to_target().is_ok());
        assert!(CompactTarget(0x2100ffff).to_target().is_ok());
        assert!(CompactTarget(0x207fffff).to_target().is_ok());
        // Zero mantissa with a huge exponent is zero, not overflow.
        assert_eq!(CompactTarget(0xff000000).to_target(), Err(TargetError::Zero));
    }

    #[test]
    fn work_values() {
        assert_eq!(block_work(U256::MAX), U256::from(1u8));
        assert_eq!(block_work(U256::ZERO), U256::MAX);
        assert_eq!(block_work(U256::from(1u8)), U256::from(1u8) << 255);
        assert_eq!(block_work(U256::MAX >> 1), U256::from(2u8));
        // Bitcoin's genesis block: 0x0100010001 hashes.
        let t = CompactTarget(0x1d00ffff).to_target().unwrap();
        assert_eq!(block_work(t), U256::from(0x0100010001u64));
    }

    #[test]
    fn hash_is_big_endian() {
        let target = U256::from(0x0100u16);
        let mut h = [0u8; 32];
        h[30] = 1;
        assert!(hash_meets_target(&h, &target));
        h[31] = 1;
        assert!(!hash_meets_target(&h, &target));
        let mut h = [0u8; 32];
        h[0] = 1;
        assert!(!hash_meets_target(&h, &target));
        assert!(hash_meets_target(&[0xff; 32], &U256::MAX));
        assert!(hash_meets_target(&[0; 32], &U256::ZERO));
    }

    /// Canonical encodings, i.e. exactly the outputs of `from_target` for
    /// nonzero targets: sizes 1 and 2 carry 1 or 2 significant bytes with the
    /// rest zero; larger sizes need a mantissa of at least 0x8000 (otherwise a
    /// smaller size would have been used) and must fit in 256 bits.
    fn canonical() -> impl Strategy<Value = u32> {
        prop_oneof![
            (1u32..=0x7f).prop_map(|v| 0x0100_0000 | (v << 16)),
            (0x80u32..=0x7fff).prop_map(|v| 0x0200_0000 | (v << 8)),
            (3u32..=32, 0x8000u32..=0x7f_ffff).prop_map(|(e, m)| (e << 24) | m),
            (0x8000u32..=0xffff).prop_map(|m| (33 << 24) | m),
        ]
    }

    fn is_canonical(c: u32) -> bool {
        let (e, m) = (c >> 24, c & 0x00ff_ffff);
        match e {
            1 => m & 0xffff == 0 && (1..=0x7f).contains(&(m >> 16)),
            2 => m & 0xff == 0 && (0x80..=0x7fff).contains(&(m >> 8)),
            3..=32 => (0x8000..=0x7f_ffff).contains(&m),
            33 => (0x8000..=0xffff).contains(&m),
            _ => false,
        }
    }

    fn any_u256() -> impl Strategy<Value = U256> {
        (any::<[u64; 4]>(), 0usize..256).prop_map(|(l, s)| U256::from_limbs(l) >> s)
    }

    proptest! {
        #[test]
        fn canonical_round_trip(c in canonical()) {
            let t = CompactTarget(c).to_target().unwrap();
            prop_assert_eq!(CompactTarget::from_target(t), CompactTarget(c));
        }

        #[test]
        fn round_trip_iff_canonical(c in any::<u32>()) {
            if let Ok(t) = CompactTarget(c).to_target() {
                let back = CompactTarget::from_target(t);
                prop_assert_eq!(back == CompactTarget(c), is_canonical(c));
                prop_assert_eq!(back.to_target(), Ok(t));
            } else {
                prop_assert!(!is_canonical(c));
            }
        }

        #[test]
        fn encoding_rounds_down(t in any_u256()) {
            let c = CompactTarget::from_target(t);
            prop_assert_eq!(c.0 & SIGN_BIT, 0);
            if t.is_zero() {
                prop_assert_eq!(c, CompactTarget(0));
            } else {
                prop_assert!(is_canonical(c.0));
                let r = c.to_target().unwrap();
                prop_assert!(r <= t);
                if t >= U256::from(1u64 << 23) {
                    // Relative error below 2^-15: the mantissa keeps >= 16 bits.
                    // (Below 2^23 all bits fit in the mantissa.)
                    prop_assert!((t - r) << 15 < t);
                } else {
                    prop_assert_eq!(r, t);
                }
            }
        }

        #[test]
        fn work_is_floor_division(t in any_u256()) {
            let w = block_work(t);
            if t.is_zero() {
                prop_assert_eq!(w, U256::MAX);
            } else if t == U256::MAX {
                prop_assert_eq!(w, U256::from(1u8));
            } else {
                // w * (t + 1) <= 2^256 < (w + 1) * (t + 1), checked in 512 bits.
                type U512 = ruint::Uint<512, 8>;
                let wide = |x: U256| {
                    let l = x.as_limbs();
                    U512::from_limbs([l[0], l[1], l[2], l[3], 0, 0, 0, 0])
                };
                let t1 = wide(t) + U512::from(1u8);
                let two256 = U512::from(1u8) << 256;
                prop_assert!(wide(w) * t1 <= two256);
                prop_assert!((wide(w) + U512::from(1u8)) * t1 > two256);
            }
        }

        #[test]
        fn meets_target_matches_integer_order(h in any::<[u8; 32]>(), t in any_u256()) {
            prop_assert_eq!(hash_meets_target(&h, &t), U256::from_be_bytes(h) <= t);
            prop_assert!(hash_meets_target(&h, &U256::from_be_bytes(h)));
        }
    }
}
