//! Numbers as people read them.

use tpow_core::target::block_work;
use tpow_core::U256;

/// A target from its 64 hex digits (big-endian).
pub fn parse_target(hex_str: &str) -> Option<U256> {
    let bytes: [u8; 32] = hex::decode(hex_str).ok()?.try_into().ok()?;
    Some(U256::from_be_bytes(bytes))
}

/// Difficulty as the expected number of attempts (forward passes) per block.
pub fn difficulty(target: &U256) -> f64 {
    u256_to_f64(&block_work(*target))
}

/// A U256 as a float (rounded; only for display and charts).
pub fn u256_to_f64(v: &U256) -> f64 {
    v.as_limbs().iter().rev().fold(0.0, |acc, &limb| acc * 18_446_744_073_709_551_616.0 + limb as f64)
}

/// `1234567` → `1.23 M`; small numbers stay whole.
pub fn si(v: f64) -> String {
    const UNITS: [(f64, &str); 5] = [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
    if !v.is_finite() {
        return "–".into();
    }
    for (scale, unit) in UNITS {
        if v.abs() >= scale {
            return format!("{:.2} {unit}", v / scale);
        }
    }
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Attempts per second as a hashrate.
pub fn hashrate(per_sec: f64) -> String {
    let n = si(per_sec);
    // `1.20 k` + `H/s` reads `1.20 kH/s`; a bare number needs its own space.
    if n.contains(' ') {
        format!("{n}H/s")
    } else {
        format!("{n} H/s")
    }
}

/// A duration in milliseconds, compact (`850 ms`, `2.3 s`, `4 min`).
pub fn duration_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0} µs", ms * 1000.0)
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else if ms < 60_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        format!("{:.0} min", ms / 60_000.0)
    }
}

/// The first 12 hex digits of an id.
pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn difficulty_is_expected_attempts() {
        let t = U256::MAX / U256::from(4000u32);
        let d = difficulty(&t);
        assert!((d - 4000.0).abs() <= 1.0, "{d}");
        assert_eq!(parse_target(&hex::encode(t.to_be_bytes::<32>())), Some(t));
        assert_eq!(parse_target("abc"), None);
        assert_eq!(u256_to_f64(&(U256::from(1u8) << 200)), 2f64.powi(200));
    }

    #[test]
    fn formats() {
        assert_eq!(si(999.0), "999");
        assert_eq!(si(1234567.0), "1.23 M");
        assert_eq!(hashrate(2500.0), "2.50 kH/s");
        assert_eq!(hashrate(8.0), "8 H/s");
        assert_eq!(duration_ms(0.25), "250 µs");
        assert_eq!(duration_ms(1500.0), "1.5 s");
        assert_eq!(short_id("0123456789abcdef"), "0123456789ab");
        assert_eq!(short_id("ab"), "ab");
    }
}
