//! Vectors for FlyClient sampling (docs/PROTOCOL.md §16): levels, draw counts, draw
//! positions and sampled heights, in `tests/vectors/flyclient.json`, which the
//! independent Python reference (`tests/vectors/reference.py`) checks too.
//! Regenerate after an intended change: `TPOW_BLESS=1 cargo test -p tpow-core --test flyclient_vectors`.

use serde_json::{json, Value};
use tpow_core::flyclient::{draw_count, draw_position, levels, sample_heights, DEFAULT_SECURITY_BITS};
use tpow_core::U256;

fn path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors/flyclient.json")
}

fn u(s: &str) -> U256 {
    U256::from_str_radix(s, 10).expect("decimal")
}

fn seed(tag: u8) -> [u8; 32] {
    core::array::from_fn(|i| tag.wrapping_mul(31).wrapping_add(i as u8))
}

/// Cumulative work of a small chain whose per-header work varies (a difficulty
/// rise in the middle), so the binary search over cumulative work is exercised.
fn cumulative(n: u64) -> Vec<U256> {
    let mut acc = U256::ZERO;
    (0..n)
        .map(|h| {
            acc += U256::from(if h < n / 2 { 1_000 + h % 7 } else { 50_000 + 13 * h });
            acc
        })
        .collect()
}

fn build() -> Value {
    let draws_cases: Vec<Value> = [
        ("steady 100k, L=100", "100", "99901", 50u32),
        ("steady 1M, L=100", "100", "999901", 50),
        ("one level", "1000", "1", 50),
        ("A >= W", "5000", "5000", 50),
        ("mainnet-like work", "42949672960000", "4294967296000000000", 80),
        ("extreme span", "1", "115792089237316195423570985008687907853269984665640564039457584007913129639934", 50),
        ("nothing below", "100", "0", 50),
    ]
    .iter()
    .enumerate()
    .map(|(k, &(name, a, w, lambda))| {
        let (a_u, w_u) = (u(a), u(w));
        let j = levels(&a_u, &w_u);
        let s = seed(k as u8);
        let positions: Vec<String> =
            (0..12u64).filter_map(|i| draw_position(&s, i, &a_u, &w_u)).map(|p| p.to_string()).collect();
        json!({
            "name": name,
            "seed": hex::encode(s),
            "checked": a,
            "below": w,
            "security_bits": lambda,
            "levels": j,
            "draws": draw_count(j, lambda),
            "positions": positions,
        })
    })
    .collect();
    let cum = cumulative(300);
    let sample_cases: Vec<Value> = [(250u64, 0u8), (250, 1), (120, 2), (1, 3)]
        .iter()
        .map(|&(boundary, tag)| {
            let checked = cum[299] - cum[boundary as usize - 1];
            let below = cum[boundary as usize - 1];
            let draws = draw_count(levels(&checked, &below), DEFAULT_SECURITY_BITS);
            let s = seed(100 + tag);
            let heights = sample_heights(&s, boundary, &checked, draws, |h| cum[h as usize]);
            json!({
                "seed": hex::encode(s),
                "boundary": boundary,
                "checked": checked.to_string(),
                "draws": draws,
                "heights": heights,
            })
        })
        .collect();
    json!({
        "about": "FlyClient sampling, docs/PROTOCOL.md §16. `draw_cases`: levels J, draw count for λ, \
                  and the work positions of draws 0..12. `sample_cases`: heights sampled below `boundary` \
                  on the chain of 300 headers whose cumulative work is `cumulative` (decimal).",
        "cumulative": cum.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
        "draw_cases": draws_cases,
        "sample_cases": sample_cases,
    })
}

#[test]
fn flyclient_vectors_match() {
    let got = build();
    if std::env::var_os("TPOW_BLESS").is_some() {
        std::fs::write(path(), serde_json::to_string_pretty(&got).expect("json") + "\n").expect("write");
        return;
    }
    let text = std::fs::read_to_string(path()).expect("tests/vectors/flyclient.json (bless with TPOW_BLESS=1)");
    let want: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(want, got);
}

#[test]
fn steady_chain_of_100k_needs_347_draws() {
    // A = 100 headers of work w, W = 99,901 headers of work w: J = 10 for any w.
    for w in [1u64, 1_000, 1 << 40] {
        let (a, b) = (U256::from(100 * w), U256::from(99_901 * w));
        assert_eq!(levels(&a, &b), 10);
        assert_eq!(draw_count(levels(&a, &b), 50), 347);
    }
}
