//! The conformance suite (tests/vectors/README.md): generates and checks the
//! section vector files `tests/vectors/{targets,asert,mmr,header,body,puzzle,forward,chain}.json`
//! and checks Bitcoin Cash's published ASERT runs (`asert_bch.json`).
//!
//! Every expected value comes from tpow-core through the same dispatcher the CLI
//! (`examples/conformance.rs`) uses; the independent check is
//! `tests/vectors/conformance.py -- python3 tests/vectors/reference.py --serve`.
//! The forward-pass vectors also carry how often each clamp and guard fired,
//! counted by the instrumented re-implementation below (whose output must equal
//! tpow-core's). Regenerate only on a deliberate consensus change:
//! `TPOW_BLESS=1 cargo test -p tpow-core --test conformance`.

mod conformance_dispatch;

use std::path::PathBuf;

use conformance_dispatch::{handle, u256_hex, Reply, FORMAT};
use serde_json::{json, Map, Value};
use tpow_core::chain::{genesis_header, next_bits, PowInput};
use tpow_core::forward::ops::{
    act_shift, exp2_weight, isqrt, residual_shift, score_shift, GELU_TABLE, NORM_RMS_LOG2, RESIDUAL_MAX,
};
use tpow_core::header::Header;
use tpow_core::mmr::{MmrNode, MmrProof};
use tpow_core::model::ConformanceGain;
use tpow_core::puzzle::pow_hash;
use tpow_core::target::hash_meets_target;
use tpow_core::target::CompactTarget;
use tpow_core::{BlockId, HeaderChain, ModelCache};
use tpow_core::{ChainParams, Model, ModelSpec, U256};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors")
}

/// A case whose expectation is whatever tpow-core answers.
fn case(name: impl Into<String>, op: &str, input: Value) -> Value {
    let name = name.into();
    match handle(op, &input) {
        Reply::Output(expect) => json!({"name": name, "op": op, "input": input, "expect": expect}),
        Reply::Error(e) => json!({"name": name, "op": op, "input": input, "error": e}),
        other => panic!("{name}: {other:?}"),
    }
}

/// A table case: `base` plus one row of `input_fields` per request; each row
/// carries its expected `expect_fields` after the inputs.
fn table(name: &str, op: &str, base: Value, input_fields: &[&str], rows: Vec<Vec<Value>>, expect: &[&str]) -> Value {
    let mut out_rows = Vec::new();
    for row in rows {
        let mut input = base.clone();
        for (f, v) in input_fields.iter().zip(&row) {
            input[*f] = v.clone();
        }
        let Reply::Output(o) = handle(op, &input) else { panic!("{name}: {row:?}") };
        let mut r = row.clone();
        r.extend(expect.iter().map(|f| o[*f].clone()));
        out_rows.push(Value::Array(r));
    }
    json!({"name": name, "op": op, "input": base,
           "table": {"input_fields": input_fields, "expect_fields": expect, "rows": out_rows}})
}

fn file(section: &str, comment: &str, cases: Vec<Value>) -> Value {
    json!({"format": FORMAT, "section": section, "comment": comment, "cases": cases})
}

/// Pretty JSON with every array of scalars on one line (tables stay compact).
fn render(v: &Value, indent: usize, out: &mut String) {
    let pad = |n: usize| "  ".repeat(n);
    match v {
        Value::Array(a) if a.iter().all(|x| !x.is_array() && !x.is_object()) => {
            out.push_str(&serde_json::to_string(v).unwrap());
        }
        Value::Array(a) if a.iter().all(|x| x.as_array().is_some_and(|r| r.iter().all(|y| !y.is_object()))) => {
            // Rows of a table (or MMR nodes): one per line.
            out.push_str("[\n");
            for (i, x) in a.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                out.push_str(&serde_json::to_string(x).unwrap());
                out.push_str(if i + 1 < a.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(indent));
            out.push(']');
        }
        Value::Array(a) => {
            out.push_str("[\n");
            for (i, x) in a.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                render(x, indent + 1, out);
                out.push_str(if i + 1 < a.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(indent));
            out.push(']');
        }
        Value::Object(m) if !m.is_empty() => {
            out.push_str("{\n");
            for (i, (k, x)) in m.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                out.push_str(&serde_json::to_string(k).unwrap());
                out.push_str(": ");
                render(x, indent + 1, out);
                out.push_str(if i + 1 < m.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(indent));
            out.push('}');
        }
        _ => out.push_str(&serde_json::to_string(v).unwrap()),
    }
}

fn bless_or_check(name: &str, got: Value) {
    let path = dir().join(name);
    if std::env::var_os("TPOW_BLESS").is_some() {
        let mut s = String::new();
        render(&got, 0, &mut s);
        std::fs::write(&path, s + "\n").unwrap();
        return;
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let want: Value = serde_json::from_str(&text).unwrap();
    let (wc, gc) = (want["cases"].as_array().unwrap(), got["cases"].as_array().unwrap());
    assert_eq!(wc.len(), gc.len(), "{name}: case count");
    for (w, g) in wc.iter().zip(gc) {
        assert_eq!(w, g, "{name}: case {}", w["name"]);
    }
    assert_eq!(want, got, "{name}");
}

/// Deterministic pseudo-random numbers for case inputs (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn u256(&mut self) -> U256 {
        let x = U256::from_limbs([self.next(), self.next(), self.next(), self.next()]);
        x >> (self.next() % 256) as usize
    }
}

fn h(x: U256) -> Value {
    Value::String(u256_hex(x))
}

fn pow2(k: usize) -> U256 {
    U256::from(1u8) << k
}

// ---------------------------------------------------------------------------
// §9 targets and work

fn targets() -> Value {
    let mut cases = Vec::new();
    let mut rng = Rng(9);
    let decode: Vec<u32> = vec![
        0x1d00ffff, 0x17034219, 0x207fffff, 0x2100ffff, 0x220000ff, 0x22000001, 0x01123456, 0x02123456, 0x03123456,
        0x04123456, 0x05009234, 0x01010000, 0x1f10624d, 0x1e400000, 0x02008000, 0x04001234, 0x0300ffff, 0x20800000,
        // rejections, in §9.1 order
        0x04923456, 0x01fedcba, 0x00800001, 0x21800001, 0x04800000, 0x00000000, 0x00123456, 0x01003456, 0x02000056,
        0x23000000, 0xff000000, 0xff123456, 0x23000001, 0x22000100, 0x21010000, 0x22010000, 0xff800001,
    ];
    for c in decode.into_iter().chain((0..24).map(|_| rng.next() as u32)) {
        cases.push(case(format!("decode {c:#010x}"), "compact_decode", json!({"bits": c})));
    }
    let mut enc: Vec<U256> = [0u64, 1, 0x12, 0x7f, 0x80, 0xff, 0x1234, 0x7fff, 0x8000, 0x123456, 0x7fffff, 0x800000]
        .iter()
        .map(|&x| U256::from(x))
        .collect();
    enc.extend([
        U256::from(0x92340000u64),
        U256::from(0xffffu64) << 208,
        (U256::from(0xffffu64) << 208) - U256::from(1u8),
        pow2(255),
        U256::MAX,
        pow2(224) - U256::from(1u8),
        U256::MAX / U256::from(4000u32),
        pow2(238),
        pow2(252),
        pow2(240),
    ]);
    enc.extend((0..24).map(|_| rng.u256()));
    for t in enc {
        cases.push(case(format!("encode {}", u256_hex(t)), "compact_encode", json!({"target": h(t)})));
    }
    let mut work: Vec<U256> = vec![
        U256::ZERO,
        U256::from(1u8),
        U256::from(2u8),
        U256::MAX,
        U256::MAX >> 1,
        pow2(255),
        U256::from(0xffffu64) << 208,
        CompactTarget(0x1f10624d).to_target().unwrap(),
        pow2(238),
        pow2(224) - U256::from(1u8),
    ];
    work.extend((0..16).map(|_| rng.u256()));
    for t in work {
        cases.push(case(format!("work {}", u256_hex(t)), "work", json!({"target": h(t)})));
    }
    let t = U256::from(0x0100u16) << 200;
    let meets = [
        ("hash = target passes (≤, not <)", t, t),
        ("hash = target + 1 fails", t + U256::from(1u8), t),
        ("hash = target - 1 passes", t - U256::from(1u8), t),
        ("hash 0, target 0", U256::ZERO, U256::ZERO),
        ("hash 1, target 0", U256::from(1u8), U256::ZERO),
        ("all-ones hash, max target", U256::MAX, U256::MAX),
        ("big-endian: last byte 1 vs target 0x100", U256::from(1u8), U256::from(0x100u16)),
        ("big-endian: first byte 1 vs target 0x100", pow2(248), U256::from(0x100u16)),
    ];
    for (name, hash, target) in meets {
        cases.push(case(name, "meets_target", json!({"hash": h(hash), "target": h(target)})));
    }
    file("§9 compact targets and work; §7 target comparison", "compact_decode errors: Negative, Overflow, Zero", cases)
}

// ---------------------------------------------------------------------------
// §10 ASERT

fn asert_input(p: &ChainParams) -> Value {
    json!({
        "ideal_block_time_ms": p.asert.ideal_block_time_ms,
        "half_life_ms": p.asert.half_life_ms,
        "max_target": h(p.asert.max_target),
        "anchor_height": 0,
        "anchor_parent_timestamp_ms": p.genesis_timestamp_ms - p.asert.ideal_block_time_ms,
        "anchor_target": h(p.genesis_bits.to_target().unwrap()),
    })
}

fn asert() -> Value {
    let mut cases = Vec::new();
    for p in [ChainParams::devnet(), ChainParams::mainnet()] {
        let (ideal, half) = (p.asert.ideal_block_time_ms, p.asert.half_life_ms);
        let anchor_pts = p.genesis_timestamp_ms - ideal;
        let mut rows = Vec::new();
        for hgt in [0u64, 1, 2, 17, 1000, 100_000, 10_000_000] {
            let on = anchor_pts + ideal * (hgt + 1);
            for dt in
                [0i64, 1, -1, 7, -7, 1000, -1000, half as i64 / 2, -(half as i64) / 2, half as i64, -(half as i64)]
            {
                rows.push(vec![json!(hgt), json!(on.checked_add_signed(dt).unwrap())]);
            }
            for k in [2i64, 3, -2, -5, 17, -17, 300, -300] {
                let t = on as i128 + k as i128 * half as i128 + 12_345;
                rows.push(vec![json!(hgt), json!(t.clamp(0, u64::MAX as i128) as u64)]);
            }
        }
        for (hgt, t) in
            [(0, 0), (0, u64::MAX), (u64::MAX, 0), (u64::MAX, u64::MAX), (5, p.genesis_timestamp_ms), (1, 1)]
        {
            rows.push(vec![json!(hgt), json!(t)]);
        }
        cases.push(table(
            &format!("{} parameters (explicit)", p.name()),
            "asert",
            asert_input(&p),
            &["parent_height", "parent_timestamp_ms"],
            rows.clone(),
            &["target", "bits"],
        ));
        cases.push(table(
            &format!("{} next_bits", p.name()),
            "next_bits",
            json!({"chain": p.name()}),
            &["parent_height", "parent_timestamp_ms"],
            rows,
            &["bits"],
        ));
    }
    // The Rust unit tests' parameters, degenerate and extreme ones.
    let unit = json!({
        "ideal_block_time_ms": 10_000, "half_life_ms": 3_600_000,
        "max_target": h(pow2(236) - U256::from(1u8)), "anchor_height": 0,
        "anchor_parent_timestamp_ms": 1_800_000_000_000u64 - 10_000,
        "anchor_target": h(U256::from(0xabcdefu32) << 200),
    });
    let mut rows = Vec::new();
    let on = 1_800_000_000_000u64 - 10_000 + 10_000 * 501;
    for k in [0i64, 1, 3, -1, -5, 1, -1] {
        rows.push(vec![json!(500), json!(on.checked_add_signed(k * 3_600_000).unwrap())]);
    }
    for dt in [1i64, -1, 54_931, -54_931, 1_800_000, -1_800_000, 3_599_999, -3_599_999, 3_600_001, -3_600_001] {
        rows.push(vec![json!(500), json!(on.checked_add_signed(dt).unwrap())]);
    }
    cases.push(table(
        "unit-test parameters",
        "asert",
        unit.clone(),
        &["parent_height", "parent_timestamp_ms"],
        rows,
        &["target", "bits"],
    ));
    let mut rng = Rng(10);
    let mut odd = Vec::new();
    for (ideal, half, max_t, at) in [
        (0u64, 0u64, U256::MAX, U256::MAX),
        (u64::MAX, 0, U256::from(1u8), U256::from(5u8)),
        (1, u64::MAX, U256::MAX, U256::ZERO),
        (600_000, 172_800_000, U256::MAX, U256::MAX),
        (600_000, 172_800_000, pow2(252), pow2(255)),
        (2_000, 60_000, pow2(252), U256::ZERO),
        (7, 13, pow2(100), U256::from(3u8)),
    ] {
        for (ph, pt) in
            [(0u64, 0u64), (1, 3), (3, 1), (0, 1_000_000), (1_000_000, 0), (u64::MAX, u64::MAX), (0, u64::MAX)]
        {
            odd.push(json!({
                "ideal_block_time_ms": ideal, "half_life_ms": half, "max_target": h(max_t),
                "anchor_height": 0, "anchor_parent_timestamp_ms": 0, "anchor_target": h(at),
                "parent_height": ph, "parent_timestamp_ms": pt,
            }));
        }
    }
    for _ in 0..40 {
        let ideal = 1 + rng.next() % 1_000_000;
        let half = 1 + rng.next() % 100_000_000;
        let ah = rng.next() % 1_000_000;
        let apts = rng.next() % 2_000_000_000_000;
        odd.push(json!({
            "ideal_block_time_ms": ideal, "half_life_ms": half, "max_target": h(rng.u256()),
            "anchor_height": ah, "anchor_parent_timestamp_ms": apts, "anchor_target": h(rng.u256()),
            "parent_height": ah + rng.next() % 10_000, "parent_timestamp_ms": apts + rng.next() % (20_000 * ideal),
        }));
    }
    for (i, input) in odd.into_iter().enumerate() {
        cases.push(case(format!("extreme/random {i}"), "asert", input));
    }
    file(
        "§10 difficulty adjustment (ASERT)",
        "tpow's own parameters (devnet, mainnet), the asert.rs unit-test parameters, degenerate and random inputs. \
         Bitcoin Cash's published aserti3-2d runs are in asert_bch.json.",
        cases,
    )
}

// ---------------------------------------------------------------------------
// §11 MMR

fn leaf(i: u64) -> MmrNode {
    MmrNode { hash: *blake3::hash(format!("tpow mmr leaf {i}").as_bytes()).as_bytes(), work: U256::from(1000 + 7 * i) }
}

fn node_v(n: &MmrNode) -> Value {
    json!([hex::encode(n.hash), u256_hex(n.work)])
}

fn mmr() -> Value {
    let mut cases = Vec::new();
    let leaves: Vec<MmrNode> = (0..33).map(leaf).collect();
    let lv: Vec<Value> = leaves.iter().map(node_v).collect();
    cases.push(case("roots of 0..=33 leaves", "mmr", json!({"leaves": lv})));
    // Work near 2^256: merges saturate.
    let big: Vec<Value> = [pow2(255), pow2(255), U256::MAX - U256::from(5u8), U256::from(7u8), pow2(254)]
        .iter()
        .enumerate()
        .map(|(i, &w)| node_v(&MmrNode { work: w, ..leaf(100 + i as u64) }))
        .collect();
    cases.push(case("saturating work", "mmr", json!({"leaves": big})));
    let mut rows = Vec::new();
    for n in 1..=33u64 {
        for i in 0..n {
            if n <= 16 || i % 5 == 0 || i + 1 == n {
                rows.push(vec![json!(i), json!(n)]);
            }
        }
    }
    cases.push(table("proofs", "mmr_proof", json!({"leaves": lv}), &["leaf_index", "leaf_count"], rows, &["proof"]));
    cases.push(case("proof: index = count", "mmr_proof", json!({"leaves": lv, "leaf_index": 5, "leaf_count": 5})));
    cases.push(case("proof: count > leaves", "mmr_proof", json!({"leaves": lv, "leaf_index": 0, "leaf_count": 34})));

    // Verification: good proofs, then tampered ones.
    let root = |n: u64| {
        let Reply::Output(o) = handle("mmr", &json!({"leaves": lv[..n as usize]})) else { panic!() };
        o["roots"][n as usize].clone()
    };
    let proof = |i: u64, n: u64| {
        let Reply::Output(o) = handle("mmr_proof", &json!({"leaves": lv, "leaf_index": i, "leaf_count": n})) else {
            panic!()
        };
        MmrProof::decode(&hex::decode(o["proof"].as_str().unwrap()).unwrap()).unwrap()
    };
    let verify = |name: String, p: &MmrProof, n: u64, l: &MmrNode| {
        case(name, "mmr_verify", json!({"proof": hex::encode(p.encode()), "root": root(n), "leaf": node_v(l)}))
    };
    for (i, n) in
        [(0u64, 1u64), (0, 2), (1, 2), (2, 3), (5, 7), (6, 7), (0, 8), (7, 8), (12, 13), (20, 33), (32, 33), (31, 32)]
    {
        let p = proof(i, n);
        cases.push(verify(format!("good {i} of {n}"), &p, n, &leaves[i as usize]));
        cases.push(verify(format!("{i} of {n}: other leaf"), &p, n, &leaves[(i as usize + 1) % 33]));
        cases.push(verify(
            format!("{i} of {n}: leaf work + 1"),
            &p,
            n,
            &MmrNode { work: leaves[i as usize].work + U256::from(1u8), ..leaves[i as usize] },
        ));
        if !p.siblings.is_empty() {
            let mut t = p.clone();
            t.siblings[0].hash[0] ^= 1;
            cases.push(verify(format!("{i} of {n}: sibling hash flipped"), &t, n, &leaves[i as usize]));
            let mut t = p.clone();
            let last = t.siblings.len() - 1;
            t.siblings[last].work += U256::from(1u8);
            cases.push(verify(format!("{i} of {n}: top sibling work + 1"), &t, n, &leaves[i as usize]));
            let mut t = p.clone();
            t.siblings.pop();
            cases.push(verify(format!("{i} of {n}: sibling missing"), &t, n, &leaves[i as usize]));
            let mut t = p.clone();
            t.leaf_index ^= 1;
            cases.push(verify(format!("{i} of {n}: index of the sibling"), &t, n, &leaves[i as usize]));
        }
        if p.peaks.len() >= 2 {
            let mut t = p.clone();
            t.peaks.swap(0, 1);
            cases.push(verify(format!("{i} of {n}: peaks swapped"), &t, n, &leaves[i as usize]));
        }
        let mut t = p.clone();
        t.peaks.push(leaves[0]);
        cases.push(verify(format!("{i} of {n}: extra peak"), &t, n, &leaves[i as usize]));
        let mut t = p.clone();
        t.leaf_count += 1;
        cases.push(verify(format!("{i} of {n}: leaf_count + 1"), &t, n, &leaves[i as usize]));
        let mut t = p.clone();
        t.leaf_index = n;
        cases.push(verify(format!("{i} of {n}: index = count"), &t, n, &leaves[i as usize]));
    }
    let p = proof(5, 7);
    let enc = p.encode();
    let r7 = root(7);
    let raw = |name: &str, bytes: Vec<u8>| {
        case(name, "mmr_verify", json!({"proof": hex::encode(bytes), "root": r7, "leaf": node_v(&leaves[5])}))
    };
    cases.push(raw("truncated by one byte", enc[..enc.len() - 1].to_vec()));
    cases.push(raw("empty", Vec::new()));
    cases.push(raw("only the leaf count", enc[..8].to_vec()));
    let mut t = enc.clone();
    t.push(0);
    cases.push(raw("trailing byte", t));
    let mut t = enc[..16].to_vec();
    t.push(65);
    cases.push(raw("65 siblings", t));
    let mut t = enc[..16].to_vec();
    t.push(64);
    cases.push(raw("64 siblings, truncated", t));
    let mut t = enc[..16].to_vec();
    t.extend([0, 65]);
    cases.push(raw("65 peaks", t));
    file(
        "§11 header MMR",
        "Leaves: hash = BLAKE3(\"tpow mmr leaf {i}\") (plain hash, a test convenience), work = 1000 + 7i. \
         mmr_verify errors: Truncated, TrailingBytes, TooManyItems (decoding), then LeafIndexOutOfRange, \
         WrongSiblingCount, WrongPeakCount, RootMismatch.",
        cases,
    )
}

// ---------------------------------------------------------------------------
// §8 header, §15 body

fn sample_header() -> Header {
    let mut b = [0u8; 192];
    for (i, x) in b.iter_mut().enumerate() {
        *x = (i as u32 * 29 + 3) as u8;
    }
    b[0..4].copy_from_slice(&1u32.to_le_bytes());
    b[52..56].copy_from_slice(&0x1e40_0000u32.to_le_bytes());
    Header::decode(&b).unwrap()
}

fn header() -> Value {
    let mut cases = Vec::new();
    let mut hd = |name: &str, b: Vec<u8>| cases.push(case(name, "header_decode", json!({"header": hex::encode(b)})));
    let g = tpow_core::chain::genesis_header(&ChainParams::devnet()).encode();
    hd("devnet genesis", g.to_vec());
    hd("mainnet genesis", tpow_core::chain::genesis_header(&ChainParams::mainnet()).encode().to_vec());
    let s = sample_header().encode();
    hd("every field distinct", s.to_vec());
    let mut m = s;
    m[152..160].copy_from_slice(&u64::MAX.to_le_bytes());
    m[4..12].copy_from_slice(&u64::MAX.to_le_bytes());
    hd("u64::MAX height and nonce", m.to_vec());
    hd("empty", Vec::new());
    hd("191 bytes", s[..191].to_vec());
    let mut long = s.to_vec();
    long.push(0);
    hd("193 bytes", long);
    let with = |f: &dyn Fn(&mut [u8; 192])| {
        let mut b = s;
        f(&mut b);
        b.to_vec()
    };
    hd("version 0", with(&|b| b[0..4].copy_from_slice(&0u32.to_le_bytes())));
    hd("version 2", with(&|b| b[0..4].copy_from_slice(&2u32.to_le_bytes())));
    hd("version 0x01000000", with(&|b| b[0..4].copy_from_slice(&0x0100_0000u32.to_le_bytes())));
    hd("bits negative", with(&|b| b[52..56].copy_from_slice(&0x0492_3456u32.to_le_bytes())));
    hd("bits overflow", with(&|b| b[52..56].copy_from_slice(&0x2101_0000u32.to_le_bytes())));
    hd("bits zero", with(&|b| b[52..56].copy_from_slice(&0u32.to_le_bytes())));
    hd("bits non-canonical but valid", with(&|b| b[52..56].copy_from_slice(&0x0400_1234u32.to_le_bytes())));
    hd(
        "version 2 and bits zero: Version first",
        with(&|b| {
            b[0..4].copy_from_slice(&2u32.to_le_bytes());
            b[52..56].copy_from_slice(&0u32.to_le_bytes());
        }),
    );
    let mut short = with(&|b| b[0..4].copy_from_slice(&2u32.to_le_bytes()));
    short.pop();
    hd("191 bytes and version 2: Length first", short);
    file(
        "§8 header encoding and block id",
        "header_decode errors, in order: Length, Version, then §9.1's Negative, Overflow, Zero",
        cases,
    )
}

fn body() -> Value {
    use tpow_core::body::Body;
    let mut cases = Vec::new();
    let key = [0x5au8; 32];
    let good = Body::coinbase_only(1_048_576, key);
    let enc = good.encode();
    let mut bd = |name: &str, b: &[u8]| cases.push(case(name, "body_decode", json!({"body": hex::encode(b)})));
    bd("coinbase at the first halving", &enc);
    bd("coinbase height 0", &Body::coinbase_only(0, [0; 32]).encode());
    bd("empty", &[]);
    bd("version 0 only", &[0]);
    bd("version 1 only", &[1]);
    let mut v2 = enc.clone();
    v2[0] = 2;
    bd("version 2", &v2);
    bd("52 bytes", &enc[..52]);
    let mut long = enc.clone();
    long.push(0);
    bd("54 bytes", &long);
    let mut txs = enc.clone();
    txs[52] = 1;
    bd("tx_count 2^24", &txs);
    let mut txs_long = txs.clone();
    txs_long.push(0);
    bd("tx_count 2^24 and 54 bytes: Length first", &txs_long);
    let mut v2_short = v2.clone();
    v2_short.pop();
    bd("version 2 and 52 bytes: Version first", &v2_short);

    let header_for = |b: &Body| Header {
        height: b.coinbase.height,
        miner_key: b.coinbase.miner_key,
        body_root: b.root(),
        ..sample_header()
    };
    let mut bc = |name: &str, hd: &Header, b: &[u8]| {
        cases.push(case(name, "body_check", json!({"header": hex::encode(hd.encode()), "body": hex::encode(b)})))
    };
    let h = header_for(&good);
    bc("belongs", &h, &enc);
    bc("other body", &h, &Body::coinbase_only(1_048_576, [1; 32]).encode());
    let mut b = good.clone();
    b.coinbase.height += 1;
    bc("coinbase height + 1", &Header { body_root: b.root(), ..h }, &b.encode());
    let mut b = good.clone();
    b.coinbase.miner_key[31] ^= 1;
    bc("coinbase pays another key", &Header { body_root: b.root(), ..h }, &b.encode());
    let mut b = good.clone();
    b.coinbase.reward += 1;
    bc("reward + 1", &Header { body_root: b.root(), ..h }, &b.encode());
    let mut b = good.clone();
    b.coinbase.reward = 5_000_000_000;
    bc("pre-halving reward after the halving", &Header { body_root: b.root(), ..h }, &b.encode());
    let mut b = good.clone();
    b.coinbase.height += 1;
    b.coinbase.reward += 1;
    bc("height and reward wrong: Height first", &Header { body_root: b.root(), ..h }, &b.encode());
    bc(
        "root and height wrong: Root first",
        &Header { height: 7, ..h },
        &Body::coinbase_only(1_048_576, [1; 32]).encode(),
    );
    bc("bad body encoding", &h, &enc[..52]);
    let mut rewards = Vec::new();
    for height in [
        0u64,
        1,
        (1 << 20) - 1,
        1 << 20,
        (1 << 20) + 1,
        (2 << 20) - 1,
        3 << 20,
        (32 << 20) + 5,
        (33 << 20) - 1,
        33 << 20,
        (63 << 20) + 1,
        64 << 20,
        u64::MAX,
    ] {
        let b = Body::coinbase_only(height, key);
        bc(&format!("scheduled reward at {height}"), &header_for(&b), &b.encode());
        rewards.push(case(format!("reward({height})"), "reward", json!({"height": height})));
    }
    cases.extend(rewards);
    file(
        "§15 block body",
        "body_decode errors, in order: Version, Length, Transactions; body_check: the decode errors, then Root, Height, MinerKey, Reward",
        cases,
    )
}

// ---------------------------------------------------------------------------
// §7 tokens and weights on unusual specs; §6 forward pass on conformance models (§14.1)

fn spec_v(s: &ModelSpec) -> Value {
    json!({"vocab": s.vocab, "seq_len": s.seq_len, "d_model": s.d_model,
           "n_heads": s.n_heads, "n_layers": s.n_layers, "d_ffn": s.d_ffn})
}

const fn spec(vocab: u32, seq_len: u32, d_model: u32, n_heads: u32, n_layers: u32, d_ffn: u32) -> ModelSpec {
    ModelSpec { vocab, seq_len, d_model, n_heads, n_layers, d_ffn }
}

fn puzzle() -> Value {
    let mut cases = Vec::new();
    let mut tpl = [0u8; 152];
    for (i, b) in tpl.iter_mut().enumerate() {
        *b = (i * 11 + 5) as u8;
    }
    for s in [spec(2, 1, 16, 1, 1, 16), spec(65536, 64, 16, 4, 1, 16), spec(4096, 1024, 16, 4, 1, 16)] {
        for nonce in [0u64, 1 << 63] {
            cases.push(case(
                format!("tokens vocab={} seq_len={} nonce={nonce}", s.vocab, s.seq_len),
                "tokens",
                json!({"spec": spec_v(&s), "template": hex::encode(tpl), "nonce": nonce}),
            ));
        }
    }
    let prev = hex::encode(*blake3::hash(b"tpow weights seed").as_bytes());
    for (layer, kind) in [(u32::MAX, 0u32), (u32::MAX, 1), (0, 2), (1, 7)] {
        cases.push(case(
            format!("weights layer={layer} kind={kind}"),
            "weights",
            json!({"spec": spec_v(&ModelSpec::DEVNET), "model": {"prev_id": prev}, "layer": layer, "kind": kind, "count": 1024}),
        ));
    }
    for s in [spec(2, 1, 16, 1, 1, 16), spec(16, 8, 32, 8, 3, 32), spec(8, 4, 128, 2, 1, 512)] {
        let mut t = tpl;
        t[12..44].copy_from_slice(blake3::hash(b"tpow puzzle seed").as_bytes());
        cases.push(case(
            format!("puzzle {:?}", spec_v(&s).to_string()),
            "puzzle",
            json!({"spec": spec_v(&s), "template": hex::encode(t), "nonce": 42}),
        ));
    }
    file("§5 weights, §7 tokens and puzzle on other model specs", "", cases)
}

/// Rule hits of §14.1, counted over a pass computing every position of every block.
#[derive(Default, Clone, Copy)]
struct Hits {
    rms_floor: u64,
    rms_clamp: u64,
    act_clamp: u64,
    softmax_cut: u64,
    softmax_cut_512: u64,
    prob_cap: u64,
    att_clamp: u64,
    residual_clamp: u64,
    gelu_flat: u64,
    pow2_frac: u16,
}

impl Hits {
    fn json(&self) -> Value {
        json!({
            "rms_floor": self.rms_floor, "rms_clamp": self.rms_clamp, "act_clamp": self.act_clamp,
            "softmax_cut": self.softmax_cut, "softmax_cut_512": self.softmax_cut_512,
            "prob_cap": self.prob_cap, "att_clamp": self.att_clamp,
            "residual_clamp": self.residual_clamp, "gelu_flat": self.gelu_flat,
            "pow2_frac_indices": self.pow2_frac.count_ones(),
        })
    }
}

fn rs(v: i64, s: u32) -> i64 {
    (v + (1 << (s - 1))) >> s
}

fn rms(x: &[i64], hits: &mut Hits) -> Vec<i64> {
    let log2d = x.len().trailing_zeros();
    let ms: i64 = x.iter().map(|v| (v * v) >> log2d).sum();
    let r0 = isqrt(ms as u32) as i64;
    hits.rms_floor += (r0 == 0) as u64;
    let r = r0.max(1);
    let b = 64 - r.leading_zeros();
    let inv = (1i64 << (b + 14)) / r;
    x.iter()
        .map(|&v| {
            let y = rs(v * inv, b + 14 - NORM_RMS_LOG2);
            hits.rms_clamp += (y.abs() > 127) as u64;
            y.clamp(-127, 127)
        })
        .collect()
}

fn matvec(h: &[i64], w: &[i8], rows: usize) -> Vec<i64> {
    let cols = h.len();
    (0..rows).map(|o| (0..cols).map(|c| h[c] * i64::from(w[o * cols + c])).sum()).collect()
}

/// Straightforward scalar forward pass of §6 (every position of every block),
/// counting rule hits.
fn forward_counting(m: &Model, tokens: &[u16]) -> (Vec<i8>, Hits) {
    let sp = m.spec;
    let (s, d, f) = (sp.seq_len as usize, sp.d_model as usize, sp.d_ffn as usize);
    let hd = sp.head_dim();
    let (a_sh, rd, rf, q_sh) = (act_shift(d), residual_shift(d), residual_shift(f), score_shift(hd));
    let mut hits = Hits::default();
    let mut x: Vec<Vec<i64>> = (0..s)
        .map(|p| {
            (0..d)
                .map(|c| (i64::from(m.tok_emb.row(tokens[p] as usize)[c]) + i64::from(m.pos_emb.row(p)[c])) << 2)
                .collect()
        })
        .collect();
    let act = |v: i64, hits: &mut Hits| {
        let y = rs(v, a_sh);
        hits.act_clamp += (y.abs() > 127) as u64;
        y.clamp(-127, 127)
    };
    let resid = |x: &mut [i64], upd: &[i64], sh: u32, hits: &mut Hits| {
        for (xv, &u) in x.iter_mut().zip(upd) {
            let y = *xv + rs(u, sh);
            hits.residual_clamp += (y.abs() > i64::from(RESIDUAL_MAX)) as u64;
            *xv = y.clamp(-i64::from(RESIDUAL_MAX), i64::from(RESIDUAL_MAX));
        }
    };
    for l in &m.layers {
        let h: Vec<Vec<i64>> = x.iter().map(|r| rms(r, &mut hits)).collect();
        let proj = |w: &tpow_core::model::Matrix, hits: &mut Hits| -> Vec<Vec<i64>> {
            h.iter().map(|r| matvec(r, &w.data, w.rows).into_iter().map(|v| act(v, hits)).collect()).collect()
        };
        let (q, k, v) = (proj(&l.wq, &mut hits), proj(&l.wk, &mut hits), proj(&l.wv, &mut hits));
        let mut att = vec![vec![0i64; d]; s];
        for i in 0..s {
            for g in 0..d / hd {
                let r = g * hd..(g + 1) * hd;
                let sc: Vec<i64> =
                    (0..=i).map(|j| q[i][r.clone()].iter().zip(&k[j][r.clone()]).map(|(a, b)| a * b).sum()).collect();
                let mx = *sc.iter().max().unwrap();
                let w: Vec<i64> = sc
                    .iter()
                    .map(|&sj| {
                        let t = (mx - sj) >> q_sh;
                        hits.softmax_cut += (t >= 256) as u64;
                        hits.softmax_cut_512 += (t >= 512) as u64;
                        if t < 256 {
                            hits.pow2_frac |= 1 << (t & 15);
                        }
                        i64::from(exp2_weight(t.min(256) as i32))
                    })
                    .collect();
                let z: i64 = w.iter().sum();
                let rr = (1i64 << 30) / z;
                for c in r.clone() {
                    let mut acc = 0i64;
                    for j in 0..=i {
                        let p = (w[j] * rr + (1 << 22)) >> 23;
                        if c == r.start {
                            hits.prob_cap += (p > 127) as u64;
                        }
                        acc += p.min(127) * v[j][c];
                    }
                    let y = rs(acc, 7);
                    hits.att_clamp += (y.abs() > 127) as u64;
                    att[i][c] = y.clamp(-127, 127);
                }
            }
        }
        for p in 0..s {
            resid(&mut x[p], &matvec(&att[p], &l.wo.data, d), rd, &mut hits);
        }
        for row in x.iter_mut() {
            let h = rms(row, &mut hits);
            let u: Vec<i64> = matvec(&h, &l.w_up.data, f)
                .into_iter()
                .map(|a| {
                    let a = act(a, &mut hits);
                    hits.gelu_flat += (a.abs() > 80) as u64;
                    i64::from(GELU_TABLE[(a + 128) as usize])
                })
                .collect();
            resid(row, &matvec(&u, &l.w_down.data, d), rf, &mut hits);
        }
    }
    let out = rms(&x[s - 1], &mut hits).into_iter().map(|v| v as i8).collect();
    (out, hits)
}

const I: (u32, i32) = (128, 0);

/// Gains per tensor kind (tok, pos, q, k, v, o, up, down) as `(mul, add)`.
type Gains = [(u32, i32); 8];

fn forward_cases() -> Value {
    let devnet = ModelSpec::DEVNET;
    let one_head = spec(64, 16, 64, 1, 2, 128);
    let odd = spec(16, 8, 32, 8, 3, 32);
    let wide = spec(16, 32, 128, 2, 2, 512);
    let tiny = spec(2, 1, 16, 1, 1, 16);
    let ffn = spec(4, 4, 16, 4, 2, 4096);
    // (name, spec, gains per kind: tok, pos, q, k, v, o, up, down)
    let configs: Vec<(&str, ModelSpec, Gains)> = vec![
        ("identity gains = the §5 model", devnet, [I; 8]),
        ("tiny embeddings: r = max(isqrt(ms), 1), RMS-norm clamp", devnet, [(1, 0), (0, 0), I, I, I, I, I, I]),
        ("constant embeddings: ms = 0 everywhere", tiny, [(0, 1), (0, 0), I, I, I, I, I, I]),
        ("biased values: attention clamp", devnet, [(128, 60), (0, 0), I, I, (128, 100), I, I, I]),
        (
            "biased values and output: residual clamp (attention)",
            devnet,
            [(128, 60), (0, 0), I, I, (128, 100), (128, 100), (0, 0), (0, 0)],
        ),
        ("biased MLP: residual clamp (MLP)", devnet, [(128, 60), (0, 0), I, I, I, (0, 0), (128, 60), (128, 100)]),
        (
            "biased queries, large keys: softmax cut-off t >= 256 and >= 512",
            devnet,
            [(128, 40), I, (128, 127), (1024, 0), I, I, I, I],
        ),
        ("one head of 64: large scores", one_head, [I, I, (1024, 0), (1024, 0), I, I, I, I]),
        ("one head of 64: biased queries", one_head, [(128, 40), I, (128, 127), (1024, 0), (128, 90), I, I, I]),
        ("odd log2 widths (D = F = 32, HD = 4), identity", odd, [I; 8]),
        (
            "odd log2 widths, saturating",
            odd,
            [(512, 30), I, (2048, 0), (2048, 0), (128, 80), (256, 50), (256, 40), (256, 60)],
        ),
        ("D = 128, HD = 64, F = 512, identity", wide, [I; 8]),
        (
            "D = 128, saturating",
            wide,
            [(256, 20), (64, 0), (128, 120), (2048, 0), (128, 100), (128, 100), (128, 60), (128, 100)],
        ),
        ("F = 4096 (R_F = 8), identity", ffn, [I; 8]),
        ("F = 4096, biased MLP", ffn, [(128, 50), I, I, I, I, I, (128, 60), (128, 110)]),
        (
            "negative biases",
            devnet,
            [(128, -60), (0, 0), (128, -100), (1024, 0), (128, -100), (128, 100), (128, -60), (128, -100)],
        ),
    ];
    let mut cases = Vec::new();
    let mut totals = Hits::default();
    let mut frac_all = 0u16;
    for (ci, (name, s, gains)) in configs.into_iter().enumerate() {
        let seed = *blake3::hash(format!("tpow conformance seed {ci}").as_bytes()).as_bytes();
        let g: [ConformanceGain; 8] = gains.map(|(mul, add)| ConformanceGain { mul, add });
        let model = Model::conformance(&s, &seed, &g).unwrap();
        let mut rng = Rng(1000 + ci as u64);
        for k in 0..2 {
            let tokens: Vec<u16> = (0..s.seq_len).map(|_| (rng.next() % u64::from(s.vocab)) as u16).collect();
            let input = json!({
                "spec": spec_v(&s),
                "model": {"seed": hex::encode(seed), "gains": gains.iter().map(|&(m, a)| json!([m, a])).collect::<Vec<_>>()},
                "tokens": tokens,
            });
            let mut c = case(format!("{name} #{k}"), "forward", input);
            let (out, hits) = forward_counting(&model, &tokens);
            assert_eq!(
                hex::encode(out.iter().map(|&v| v as u8).collect::<Vec<_>>()),
                c["expect"]["output"].as_str().unwrap(),
                "{name}: scalar re-implementation differs from tpow-core"
            );
            c["hits"] = hits.json();
            totals.rms_floor += hits.rms_floor;
            totals.rms_clamp += hits.rms_clamp;
            totals.act_clamp += hits.act_clamp;
            totals.softmax_cut += hits.softmax_cut;
            totals.softmax_cut_512 += hits.softmax_cut_512;
            totals.prob_cap += hits.prob_cap;
            totals.att_clamp += hits.att_clamp;
            totals.residual_clamp += hits.residual_clamp;
            totals.gelu_flat += hits.gelu_flat;
            frac_all |= hits.pow2_frac;
            cases.push(c);
        }
        // The conformance model's weights are checked too (head of Wv of layer 0).
        cases.push(case(
            format!("{name}: weights of Wv"),
            "weights",
            json!({"spec": spec_v(&s), "model": {"seed": hex::encode(seed), "gains": gains.iter().map(|&(m, a)| json!([m, a])).collect::<Vec<_>>()},
                   "layer": 0, "kind": 4, "count": 64}),
        ));
    }
    totals.pow2_frac = frac_all;
    let t = totals.json();
    for (k, v) in t.as_object().unwrap() {
        assert!(v.as_u64().unwrap() > 0, "no forward vector hits rule {k}");
    }
    assert_eq!(t["pow2_frac_indices"], 16);
    let mut f = file(
        "§6 forward pass on conformance models (§14.1)",
        "hits: how often each rule fired, counted over a pass that computes every position of every block \
         (PROTOCOL.md §14.1); compared when an implementation reports them",
        cases,
    );
    let mut m = Map::new();
    m.insert("hit_totals".into(), t);
    f.as_object_mut().unwrap().extend(m);
    f
}

#[test]
fn section_vectors() {
    bless_or_check("targets.json", targets());
    bless_or_check("asert.json", asert());
    bless_or_check("mmr.json", mmr());
    bless_or_check("header.json", header());
    bless_or_check("body.json", body());
    bless_or_check("puzzle.json", puzzle());
}

#[test]
fn forward_vectors() {
    bless_or_check("forward.json", forward_cases());
}

/// Bitcoin Cash's published aserti3-2d runs, converted to milliseconds: their
/// expected bits are BCH's, not generated here.
#[test]
fn bch_asert_runs() {
    let text = std::fs::read_to_string(dir().join("asert_bch.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let mut n = 0;
    for c in v["cases"].as_array().unwrap() {
        let t = &c["table"];
        let fields: Vec<&str> = t["input_fields"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
        for row in t["rows"].as_array().unwrap() {
            let mut input = c["input"].clone();
            for (i, f) in fields.iter().enumerate() {
                input[*f] = row[i].clone();
            }
            let Reply::Output(o) = handle("asert", &input) else { panic!("{input}") };
            assert_eq!(o["bits"], row[fields.len()], "{} {row}", c["name"]);
            n += 1;
        }
    }
    assert!(n >= 14_000, "{n} points");
}

// ---------------------------------------------------------------------------
// §12 header-chain scripts and §16 detached checks (chain.json)

/// A devnet-shaped chain whose genesis target is 2^254 (a pow hash meets it one
/// time in four), so that the script's headers are mined in a few passes each.
fn script_params() -> ChainParams {
    let mut p = ChainParams::devnet();
    p.asert.max_target = U256::from(1u8) << 255;
    p.genesis_bits = CompactTarget::from_target(U256::from(1u8) << 254);
    p
}

fn params_v(p: &ChainParams) -> Value {
    json!({
        "spec": spec_v(&p.model),
        "ideal_block_time_ms": p.asert.ideal_block_time_ms, "half_life_ms": p.asert.half_life_ms,
        "max_target": h(p.asert.max_target), "genesis_timestamp_ms": p.genesis_timestamp_ms,
        "genesis_bits": p.genesis_bits.0, "max_future_drift_ms": p.max_future_drift_ms,
    })
}

struct ScriptMiner {
    params: ChainParams,
    chain: HeaderChain,
    cache: ModelCache,
}

impl ScriptMiner {
    fn template(&self, parent: &BlockId, key: u8, ts: u64) -> Header {
        let mut hd = self.chain.template_on(parent, [key; 32], [0; 32], ts).expect("known parent");
        hd.timestamp_ms = ts;
        hd
    }
    fn digest(&mut self, hd: &Header) -> [u8; 32] {
        self.cache.output_digest(&PowInput::of(self.params.model, hd)).unwrap()
    }
    fn meets(hd: &Header) -> bool {
        hash_meets_target(&pow_hash(&hd.template(), hd.nonce, &hd.output_digest), &hd.bits.to_target().unwrap())
    }
    /// The first nonce whose pow hash (with the real digest) meets the target.
    fn mine(&mut self, mut hd: Header) -> Header {
        loop {
            hd.output_digest = self.digest(&hd);
            if Self::meets(&hd) {
                return hd;
            }
            hd.nonce += 1;
        }
    }
    /// The first nonce whose pow hash with a made-up digest meets the target.
    fn mine_fake(hd: Header) -> Header {
        let mut hd = Header { output_digest: [0xEE; 32], ..hd };
        while !Self::meets(&hd) {
            hd.nonce += 1;
        }
        hd
    }
    /// The first nonce whose pow hash (real digest) is above the target.
    fn above(&mut self, mut hd: Header) -> Header {
        loop {
            hd.output_digest = self.digest(&hd);
            if !Self::meets(&hd) {
                return hd;
            }
            hd.nonce += 1;
        }
    }
    /// A valid child of `parent`, remembered for later templates.
    fn block(&mut self, parent: &BlockId, key: u8, ts: u64) -> Header {
        let hd = self.mine(self.template(parent, key, ts));
        self.chain.submit_cpu(&hd, u64::MAX, &mut self.cache).unwrap();
        hd
    }
}

fn hx(hd: &Header) -> Value {
    json!(hex::encode(hd.encode()))
}

fn chain_vectors() -> Value {
    let params = script_params();
    let (g0, s, drift) = (params.genesis_timestamp_ms, params.asert.ideal_block_time_ms, params.max_future_drift_ms);
    let t = |height: u64| g0 + s * height;
    let mut m = ScriptMiner {
        params: params.clone(),
        chain: HeaderChain::new(params.clone()).unwrap(),
        cache: ModelCache::new(),
    };
    let g = m.chain.at_height(0).unwrap().id;
    // (what the step shows, the step, the verdict it must get: "ok" or the error name)
    let mut steps: Vec<(&str, Value, &str)> = Vec::new();
    let single = |hd: &Header, now: u64| json!({"now_ms": now, "header": hx(hd)});
    let segment =
        |hs: &[&Header], now: u64| json!({"now_ms": now, "segment": hs.iter().map(|x| hx(x)).collect::<Vec<_>>()});

    let a1 = m.block(&g, 1, t(1));
    steps.push(("A1 extends genesis", single(&a1, t(1)), "ok"));
    steps.push(("A1 again", single(&a1, t(1)), "AlreadyKnown"));
    let mut orphan = m.template(&a1.id(), 9, t(2));
    orphan.prev_id = [0x55; 32];
    let orphan = m.mine(orphan);
    steps.push(("parent unknown", single(&orphan, t(2)), "UnknownParent"));
    let bad_height = m.mine(Header { height: 3, ..m.template(&a1.id(), 9, t(2)) });
    steps.push(("height parent + 2", single(&bad_height, t(2)), "Height"));
    let same_ts = m.mine(m.template(&a1.id(), 9, t(1)));
    steps.push((
        "timestamp equal to the parent's (otherwise valid)",
        single(&same_ts, t(2)),
        "TimestampNotAfterParent",
    ));
    let a2 = m.block(&a1.id(), 1, t(2));
    steps.push(("A2 one ms beyond now + drift", single(&a2, t(2) - drift - 1), "TimestampInFuture"));
    steps.push(("A2 at exactly now + drift (offered again later)", single(&a2, t(2) - drift), "ok"));
    let wrong_bits =
        m.mine(Header { bits: CompactTarget::from_target(U256::from(1u8) << 253), ..m.template(&a2.id(), 9, t(3)) });
    steps.push(("bits harder than ASERT's (otherwise valid)", single(&wrong_bits, t(3)), "Target"));
    let wrong_mmr = m.mine(Header { mmr_root: a2.mmr_root, ..m.template(&a2.id(), 9, t(3)) });
    steps.push(("mmr_root of the parent's ancestors (otherwise valid)", single(&wrong_mmr, t(3)), "MmrRoot"));
    let high = m.above(m.template(&a2.id(), 9, t(3)));
    steps.push(("pow hash above the target", single(&high, t(3)), "PowHash"));
    let fake = ScriptMiner::mine_fake(m.template(&a2.id(), 9, t(3)));
    steps.push(("made-up output digest, pow hash below the target", single(&fake, t(3)), "OutputDigest"));
    let a3 = m.block(&a2.id(), 1, t(3));
    let b3 = m.block(&a2.id(), 2, t(3));
    let b4 = m.block(&b3.id(), 2, t(4));
    let a4 = m.block(&a3.id(), 1, t(4));
    let a5 = m.block(&a4.id(), 1, t(5));
    steps.push(("A3", single(&a3, t(3)), "ok"));
    steps.push(("B3, sibling of A3 with equal work: A3 seen first stays best", single(&b3, t(3)), "ok"));
    steps.push(("B4 on B3: heavier, reorg", single(&b4, t(4)), "ok"));
    steps.push(("A4 on A3: ties B4, B4 stays", single(&a4, t(4)), "ok"));
    steps.push(("A5 on A4: reorg back", single(&a5, t(5)), "ok"));
    let a6 = m.block(&a5.id(), 1, t(6));
    let a7 = m.block(&a6.id(), 1, t(7));
    steps.push(("segment A6 A7 (best work 8 blocks, threshold 2 blocks)", segment(&[&a6, &a7], t(7)), "ok"));
    let c1 = m.block(&g, 3, t(1));
    steps.push(("segment C1, child of genesis claiming exactly the threshold: kept", segment(&[&c1], t(7)), "ok"));
    let a8 = m.block(&a7.id(), 1, t(8));
    let a9 = m.block(&a8.id(), 1, t(9));
    steps.push((
        "segment A6 A7 A8 C1: C1 does not link (index as sent, known prefix counted)",
        segment(&[&a6, &a7, &a8, &c1], t(8)),
        "NotContiguous",
    ));
    let a9_fake = ScriptMiner::mine_fake(m.template(&a8.id(), 7, t(9)));
    let e9 = m.chain.get(&a8.id()).unwrap().child(a9_fake, a9_fake.bits.to_target().unwrap());
    let a10_bits = m.mine(Header {
        version: 1,
        height: 10,
        prev_id: e9.id,
        timestamp_ms: t(10),
        bits: CompactTarget::from_target(U256::from(1u8) << 253),
        body_root: [0; 32],
        mmr_root: e9.mmr.root(),
        miner_key: [7; 32],
        nonce: 0,
        output_digest: [0; 32],
    });
    steps.push((
        "segment A8, A9 with a made-up digest, A10 with wrong bits: bits of every header before any pass",
        segment(&[&a8, &a9_fake, &a10_bits], t(10)),
        "Target",
    ));
    let a9_ts = m.mine(m.template(&a8.id(), 7, t(8)));
    steps.push(("segment A7 A8 A9': A9' not after A8", segment(&[&a7, &a8, &a9_ts], t(9)), "TimestampNotAfterParent"));
    steps.push(("segment of a header with an unknown parent", segment(&[&orphan], t(9)), "UnknownParent"));
    let a9_future = m.mine(m.template(&a8.id(), 7, t(9)));
    steps.push((
        "segment A8 A9'' with A9'' in the future",
        segment(&[&a8, &a9_future], t(9) - drift - 1),
        "TimestampInFuture",
    ));
    steps.push(("segment A8 A9 (threshold 4 blocks): C1 pruned", segment(&[&a8, &a9], t(9)), "ok"));
    let c1b = m.block(&g, 5, t(1));
    steps.push(("segment C1', child of genesis below the threshold", segment(&[&c1b], t(9)), "LowWork"));
    let a10 = m.block(&a9.id(), 1, t(10));
    let a11 = m.block(&a10.id(), 1, t(11));
    let a11_fake = ScriptMiner::mine_fake(m.template(&a10.id(), 1, t(11)));
    steps.push((
        "segment A10, A11 with a made-up digest: nothing stored",
        segment(&[&a10, &a11_fake], t(11)),
        "OutputDigest",
    ));
    steps.push(("A10 alone (was not stored)", single(&a10, t(10)), "ok"));
    steps.push((
        "segment A10 A11 (A10 skipped; threshold 6 blocks): B3 B4 pruned",
        segment(&[&a10, &a11], t(11)),
        "ok",
    ));
    steps.push(("segment A10 A11 again: all known, nothing changes", segment(&[&a10, &a11], t(11)), "ok"));
    let d10 = m.block(&a9.id(), 4, t(10));
    let d11 = m.block(&d10.id(), 4, t(11));
    let d12 = m.block(&d11.id(), 4, t(12));
    steps.push(("segment D10 D11 D12 forking at A9: heavier, reorg", segment(&[&d10, &d11, &d12], t(12)), "ok"));
    let a12 = m.block(&a11.id(), 1, t(12));
    steps.push(("segment A12: ties D12, D12 stays", segment(&[&a12], t(12)), "ok"));
    let a13 = m.block(&a12.id(), 1, t(13));
    steps.push(("segment A13: reorg back to A", segment(&[&a13], t(13)), "ok"));

    let input = json!({
        "params": params_v(&params),
        "steps": steps.iter().map(|(name, st, _)| { let mut st = st.clone(); st["name"] = json!(name); st }).collect::<Vec<_>>(),
    });
    let script = case("script: every §12.1 error, fork choice, segments, threshold, pruning", "chain_script", input);
    let got = script["expect"]["steps"].as_array().unwrap();
    for ((name, _, want), v) in steps.iter().zip(got) {
        let verdict = v.get("error").and_then(Value::as_str).unwrap_or("ok");
        assert_eq!(verdict, *want, "{name}: {v}");
    }
    let hid = |hd: &Header| json!(hex::encode(hd.id()));
    let ids = |v: &Value| v["pruned"].clone();
    assert_eq!(got[12]["tip"], hid(&a3), "tie keeps A3");
    assert_eq!((got[13]["tip"].clone(), got[13]["reorg"].clone()), (hid(&b4), json!(true)));
    assert_eq!(got[14]["tip"], hid(&b4), "tie keeps B4");
    assert_eq!(got[17]["pruned"], json!([]), "C1 at the threshold kept");
    assert_eq!(got[18]["index"], json!(3));
    assert_eq!(got[19]["index"], json!(2));
    assert_eq!(ids(&got[23]), json!([hex::encode(c1.id())]));
    let mut bb = vec![hex::encode(b3.id()), hex::encode(b4.id())];
    bb.sort();
    assert_eq!(ids(&got[27]), json!(bb));
    assert_eq!((got[29]["tip"].clone(), got[29]["reorg"].clone()), (hid(&d12), json!(true)));
    assert_eq!(got[30]["tip"], hid(&d12));

    // Detached checks (§16, tpow-core's check_detached).
    let mut cases = vec![script];
    let pv = params_v(&params);
    let mut det = |name: &str, hd: &Header, now: u64| {
        cases.push(case(name, "check_detached", json!({"params": pv, "header": hx(hd), "now_ms": now})))
    };
    det("A5", &a5, t(5));
    det("A5 at exactly now + drift", &a5, t(5) - drift);
    det("A5 one ms beyond now + drift", &a5, t(5) - drift - 1);
    det("genesis (height 0)", &genesis_header(&params), g0);
    det("height 0, in the future", &Header { timestamp_ms: g0 + drift + 10_000, ..genesis_header(&params) }, g0);
    let at_genesis = ScriptMiner::mine_fake(m.template(&g, 6, g0));
    det("timestamp equal to genesis", &at_genesis, t(5));
    // A late header (30 s behind schedule): ASERT(h − 1, ts − 1) is the easiest allowed.
    let late = t(5) + 30_000;
    let parent_like = |ts: u64| Header { height: 4, timestamp_ms: ts, ..genesis_header(&params) };
    let easiest = next_bits(&params, &parent_like(late - 1)).unwrap();
    let too_easy = next_bits(&params, &parent_like(late)).unwrap();
    assert!(too_easy.to_target().unwrap() > easiest.to_target().unwrap());
    let base = Header { timestamp_ms: late, ..m.template(&a4.id(), 6, late) };
    det("late header with ASERT(h − 1, ts − 1) bits", &ScriptMiner::mine_fake(Header { bits: easiest, ..base }), late);
    det(
        "late header with ASERT(h − 1, ts) bits: too easy",
        &ScriptMiner::mine_fake(Header { bits: too_easy, ..base }),
        late,
    );
    let harder = CompactTarget::from_target(U256::from(1u8) << 250);
    det("late header with a harder target", &ScriptMiner::mine_fake(Header { bits: harder, ..base }), late);
    let mut high_easy = Header { bits: too_easy, output_digest: [0xEE; 32], ..base };
    while ScriptMiner::meets(&high_easy) {
        high_easy.nonce += 1;
    }
    det("too easy and pow hash above it: Target first", &high_easy, late);
    let mut high = Header { bits: easiest, output_digest: [0xEE; 32], ..base };
    while ScriptMiner::meets(&high) {
        high.nonce += 1;
    }
    det("pow hash above the target", &high, late);
    file(
        "§12 header validation, fork choice, segments; §16 detached checks",
        "chain_script: a devnet-shaped chain (params; genesis target 2^254) fed single headers (§12.1 and \
         §12.2, every check, no work threshold) and segments (§12.3) at now_ms; after each accepted step the \
         best tip, its height, whether the old tip left the best chain (reorg) and the sorted ids pruned. \
         check_detached: the detached checks of §16 in tpow-core's order (Height, TimestampNotAfterParent, \
         TimestampInFuture, Target, PowHash).",
        cases,
    )
}

#[test]
fn chain_script_vectors() {
    bless_or_check("chain.json", chain_vectors());
}
