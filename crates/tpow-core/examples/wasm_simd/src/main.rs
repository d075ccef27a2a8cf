//! Checks this build's SIMD kernels against the scalar loop, bit for bit, then times
//! the mainnet model derivation and forward pass.
//!
//! Its purpose is wasm32, where tpow-core's unit tests have no runner (they use
//! `#[test]`, and its dev-dependencies do not build for wasm32): the module exports
//! `tpow_run(mode, reps)` and imports a clock and a log, and `run.mjs` runs it in
//! Node.js (`run.html` in a browser), without wasm-bindgen. Mode bit 1 runs the
//! checks (random matrices, attention, forward passes on random models, and every
//! committed forward-pass vector: the chain files through [`ModelCache`], which is
//! what the light client calls, and through every backend of the build, and the
//! conformance models of tests/vectors/forward.json, where every clamp and guard
//! fires, through every backend), bit 2 the benchmark; a failed check panics, which
//! traps, which the runner reports as a failure.
//!
//! ```sh
//! cd crates/tpow-core/examples/wasm_simd
//! # simd128 (add ,+relaxed-simd for the relaxed kernel; leave RUSTFLAGS out for the portable build)
//! RUSTFLAGS="-C target-feature=+simd128" cargo build --locked --release --target wasm32-unknown-unknown \
//!   --target-dir /tmp/wasm-simd128
//! node run.mjs /tmp/wasm-simd128/wasm32-unknown-unknown/release/tpow-wasm-simd-check.wasm all
//! # native, the same checks on this CPU's kernels and the same timings:
//! cargo run --locked --release --target-dir /tmp/wasm-native -- all
//! ```
//!
//! (A target dir outside the checkout: this package is not the workspace's, so its
//! default would be `target/` here, which git does not ignore.)

use tpow_core::chain::PowInput;
use tpow_core::forward::ops::{clamp_i8, exp2_weight, round_shift, score_shift, PROB_BITS};
use tpow_core::forward::{forward, forward_packed, simd_backend_name, Backend, PackedModel, Scratch};
use tpow_core::model::{derive_tensor, Matrix, TensorKind, NO_LAYER};
use tpow_core::puzzle::{input_tokens, output_digest, pow_hash};
use tpow_core::{ChainParams, Model, ModelCache, ModelSpec};

/// The committed vector files, parsed (shared with tpow-core's and tpow-gpu's tests).
#[path = "../../../tests/common/vector_files.rs"]
mod vector_files;

#[cfg(target_arch = "wasm32")]
mod host {
    #[link(wasm_import_module = "env")]
    extern "C" {
        fn tpow_now() -> f64;
        fn tpow_log(ptr: *const u8, len: usize);
    }

    /// Milliseconds from the host's `performance.now()`.
    pub fn now_ms() -> f64 {
        // SAFETY: an imported JS function without arguments.
        unsafe { tpow_now() }
    }

    /// One line to the host's console.
    pub fn log(s: &str) {
        // SAFETY: the host reads `len` bytes at `ptr` from this module's memory.
        unsafe { tpow_log(s.as_ptr(), s.len()) }
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod host {
    use std::sync::OnceLock;
    use std::time::Instant;

    static START: OnceLock<Instant> = OnceLock::new();

    /// Milliseconds since the first call.
    pub fn now_ms() -> f64 {
        START.get_or_init(Instant::now).elapsed().as_secs_f64() * 1e3
    }

    /// One line to stdout.
    pub fn log(s: &str) {
        println!("{s}");
    }
}

use host::{log, now_ms};

/// Entry point for the JS runner: `mode` bit 1 checks, bit 2 benchmarks (`reps`
/// repetitions per timing, at least 1).
#[cfg(target_arch = "wasm32")]
#[no_mangle]
pub extern "C" fn tpow_run(mode: u32, reps: u32) {
    std::panic::set_hook(Box::new(|info| log(&format!("panic: {info}"))));
    run(mode, reps);
}

fn main() {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let args: Vec<String> = std::env::args().collect();
        let mode = match args.get(1).map(String::as_str) {
            Some("check") => 1,
            Some("bench") => 2,
            _ => 3,
        };
        let reps = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(20);
        run(mode, reps);
    }
}

fn run(mode: u32, reps: u32) {
    log(&format!("target {} / backend {}", std::env::consts::ARCH, simd_backend_name()));
    if mode & 1 != 0 {
        let t = now_ms();
        let n = checks();
        log(&format!("checks: {n} comparisons, all bit-exact ({:.0} ms)", now_ms() - t));
    }
    if mode & 2 != 0 {
        bench(reps.max(1) as usize);
    }
}

/// xorshift64*: deterministic test data without extra dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Any int8, -128 included.
    fn i8(&mut self) -> i8 {
        (self.next() >> 56) as u8 as i8
    }
    /// An activation (or consensus weight) in [-127, 127].
    fn act(&mut self) -> i8 {
        (((self.next() >> 32) % 255) as i32 - 127) as i8
    }
}

/// The SIMD backends of this build and machine (the scalar loop is the reference):
/// on wasm32 those compiled in, natively those the CPU has.
fn simd_backends() -> Vec<Backend> {
    Backend::available().into_iter().filter(|&b| b != Backend::Scalar).collect()
}

/// `model` laid out for `b`; a SIMD backend must run its own kernel on every matrix
/// of the shapes used here (no silent scalar fallback).
fn packed_for(model: &Model, b: Backend) -> PackedModel<'_> {
    let p = PackedModel::new(model, b);
    let want = if b == Backend::Scalar { 0 } else { 6 * model.layers.len() };
    assert!(p.simd_matrices() == want, "{b:?}: {} of {want} matrices on its kernel", p.simd_matrices());
    p
}

/// Every backend on `x` (`rows` rows) times `data` (`n x k`) against the scalar loop;
/// returns the number of comparisons.
fn check_matmul(rows: usize, n: usize, k: usize, x: &[i8], data: &[i8]) -> usize {
    let w = Matrix { rows: n, cols: k, data: data.to_vec() };
    let mut want = vec![0i32; rows * n];
    Backend::Scalar.matmul(x, rows, &w, &mut want);
    let mut count = 0;
    for b in simd_backends() {
        let p = b.pack(&w);
        let mut got = vec![1i32; rows * n];
        b.matmul_packed(x, rows, &w, &p, &mut got);
        assert!(got == want, "{b:?} matmul rows={rows} n={n} k={k}");
        count += 1;
        // Another backend's layout is never misread (at worst the scalar loop runs).
        for other in simd_backends() {
            let mut got = vec![1i32; rows * n];
            other.matmul_packed(x, rows, &w, &p, &mut got);
            assert!(got == want, "{other:?} on {b:?} layout rows={rows} n={n} k={k}");
        }
    }
    count
}

/// The scalar attention of `forward::attention_scalar`, restated from
/// docs/PROTOCOL.md §6 (the crate keeps its own private).
#[allow(clippy::too_many_arguments)]
fn attention_reference(hd: usize, d: usize, first: usize, s: usize, q: &[i8], k: &[i8], v: &[i8], att: &mut [i8]) {
    let sh = score_shift(hd);
    for i in first..s {
        for h in 0..d / hd {
            let qi = &q[i * d + h * hd..][..hd];
            let scores: Vec<i32> = (0..=i)
                .map(|j| k[j * d + h * hd..][..hd].iter().zip(qi).map(|(&a, &b)| a as i32 * b as i32).sum())
                .collect();
            let max = scores.iter().copied().max().unwrap_or(0);
            let w: Vec<i32> = scores.iter().map(|&sj| exp2_weight((max - sj) >> sh)).collect();
            let r = ((1u32 << 30) / w.iter().sum::<i32>() as u32) as i32;
            for c in 0..hd {
                let mut acc = 0i32;
                for (j, &wj) in w.iter().enumerate() {
                    acc += ((wj * r + (1 << 22)) >> 23).min(127) * v[j * d + h * hd + c] as i32;
                }
                att[i * d + h * hd + c] = clamp_i8(round_shift(acc, PROB_BITS));
            }
        }
    }
}

fn checks() -> usize {
    let mut count = 0;
    let mut rng = Rng(0x1234_5678_9abc_def1);
    // Random shapes: partial register tiles, several blocks, long sums.
    for &rows in &[1usize, 2, 3, 4, 5, 7, 13, 64, 65] {
        for &n in &[16usize, 32, 48, 256] {
            for &k in &[4usize, 16, 32, 64, 256, 1024, 4096] {
                if rows * n * k > 8 << 20 {
                    continue;
                }
                let data: Vec<i8> = (0..n * k).map(|_| rng.act()).collect();
                let x: Vec<i8> = (0..rows * k).map(|_| rng.act()).collect();
                count += check_matmul(rows, n, k, &x, &data);
            }
        }
    }
    // Any int8 (-128 included) in either operand: exact, or the scalar fallback.
    for _ in 0..4 {
        let (rows, n, k) = (9, 32, 64);
        let data: Vec<i8> = (0..n * k).map(|_| rng.i8()).collect();
        let x: Vec<i8> = (0..rows * k).map(|_| rng.i8()).collect();
        count += check_matmul(rows, n, k, &x, &data);
        let data: Vec<i8> = (0..n * k).map(|_| rng.act()).collect();
        count += check_matmul(rows, n, k, &x, &data);
    }
    // Extremes: constant operands, the largest sums, equal-sign neighbours (every
    // pair sum at its largest), alternating signs.
    for &(rows, n, k) in &[(1usize, 16usize, 4096usize), (3, 64, 4096), (7, 32, 16)] {
        for &xv in &[-127i8, 127, -128, 0, 1, -1] {
            for &wv in &[-128i8, 127, -127, 0, 1, -1] {
                count += check_matmul(rows, n, k, &vec![xv; rows * k], &vec![wv; n * k]);
            }
        }
    }
    for (xa, xb) in [(-128i8, -128i8), (127, 127), (-127, -127), (-128, 127), (0, -128), (127, 0)] {
        for (wa, wb) in [(127i8, 127i8), (-127, -127), (-128, -128), (127, -128), (0, 127), (-128, 0)] {
            let (rows, n, k) = (6, 32, 256);
            let data: Vec<i8> = (0..n * k).map(|i| if i % 2 == 0 { wa } else { wb }).collect();
            let x: Vec<i8> = (0..rows * k).map(|i| if i % 2 == 0 { xa } else { xb }).collect();
            count += check_matmul(rows, n, k, &x, &data);
        }
    }
    let (rows, n, k) = (5, 48, 4096);
    let data: Vec<i8> = (0..n * k).map(|i| if i % 3 == 0 { -127 } else { 127 }).collect();
    let x: Vec<i8> = (0..rows * k).map(|i| if i % 2 == 0 { -127 } else { 127 }).collect();
    count += check_matmul(rows, n, k, &x, &data);
    // Every product: w[j][p] runs through all 256 int8 values and row p of x is
    // one-hot at p, so out[p][j] = xv · w[j][p].
    let (n, k) = (16usize, 256usize);
    let wval = |j: usize, p: usize| ((p + 17 * j) % 256) as i32 - 128;
    let data: Vec<i8> = (0..n * k).map(|i| wval(i / k, i % k) as i8).collect();
    for xv in (i8::MIN..=i8::MAX).step_by(3).chain([i8::MIN, -127, 127]) {
        let mut x = vec![0i8; k * k];
        for p in 0..k {
            x[p * k + p] = xv;
        }
        count += check_matmul(k, n, k, &x, &data);
    }

    // Attention on random and extreme inputs, every head width that takes a kernel.
    for &(s, d, hd) in
        &[(1usize, 16usize, 16usize), (3, 32, 16), (16, 64, 16), (17, 64, 32), (64, 256, 32), (33, 128, 64)]
    {
        for variant in 0..5 {
            let gen = |rng: &mut Rng| -> Vec<i8> {
                (0..s * d)
                    .map(|_| match variant {
                        0 => rng.act(),
                        1 => 127,
                        2 => (rng.act() as i32 / 16) as i8,
                        3 => [-127i8, 127, 0][(rng.next() % 3) as usize],
                        _ => rng.i8(),
                    })
                    .collect()
            };
            let (q, k, v) = (gen(&mut rng), gen(&mut rng), gen(&mut rng));
            for first in [0, s / 2, s - 1] {
                let mut want = vec![0i8; s * d];
                attention_reference(hd, d, first, s, &q, &k, &v, &mut want);
                for b in simd_backends() {
                    let mut att = vec![0i8; s * d];
                    if b.attention(hd, d, first, s, &q, &k, &v, &mut att) {
                        assert!(
                            att[first * d..] == want[first * d..],
                            "{b:?} attention s={s} d={d} hd={hd} v={variant}"
                        );
                        count += 1;
                    }
                }
            }
        }
    }

    // Forward passes on random models, each backend on its own layout.
    for (spec, seeds, nonces) in [(ModelSpec::DEVNET, 4u8, 16u64), (ModelSpec::MAINNET, 2, 2)] {
        for seed in 0..seeds {
            let model = Model::derive(&spec, &[seed.wrapping_mul(37).wrapping_add(1); 32]).expect("valid spec");
            let variants: Vec<PackedModel<'_>> = simd_backends().into_iter().map(|b| packed_for(&model, b)).collect();
            let mut reference = Scratch::with_backend(&model, Backend::Scalar);
            let mut tokens = vec![0u16; spec.seq_len as usize];
            let dm = spec.d_model as usize;
            for nonce in 0..nonces {
                let mut template = [0u8; 152];
                template[..8].copy_from_slice(&(nonce * 31 + seed as u64).to_le_bytes());
                input_tokens(&spec, &template, nonce, &mut tokens);
                let mut want = vec![0i8; dm];
                forward(&model, &tokens, &mut reference, &mut want);
                for p in &variants {
                    let mut got = vec![0i8; dm];
                    forward_packed(p, &tokens, &mut Scratch::new(&model), &mut got);
                    assert!(got == want, "{:?} forward seed {seed} nonce {nonce}", p.backend());
                    count += 1;
                }
            }
        }
    }

    // The committed vectors, through the light client's entry point (this build's
    // default backend) and through every backend's forward pass.
    for (chain, text) in [("devnet", vector_files::DEVNET_JSON), ("mainnet", vector_files::MAINNET_JSON)] {
        count += check_vectors(chain, text);
    }
    count + check_conformance_vectors()
}

/// Every case of tests/vectors/forward.json (conformance models, §14.1): the weights
/// of the models, and each forward pass through every backend of this build.
fn check_conformance_vectors() -> usize {
    let (cases, weights) = vector_files::conformance_cases(vector_files::FORWARD_JSON);
    assert!(cases.len() >= 32 && weights.len() >= 16, "forward.json: too few cases");
    let mut count = 0;
    for w in &weights {
        let model = w.model.model(&w.spec);
        let got = vector_files::tensor(&model, w.layer, w.kind);
        assert!(got[..w.weights.len()] == w.weights[..], "forward.json {}: weights", w.name);
        count += 1;
    }
    let mut model: Option<(ModelSpec, vector_files::ModelSource, Model)> = None;
    for c in &cases {
        if model.as_ref().is_none_or(|(s, m, _)| *s != c.spec || *m != c.model) {
            model = Some((c.spec, c.model.clone(), c.model.model(&c.spec)));
        }
        let m = &model.as_ref().expect("set above").2;
        assert!(output_digest(&c.output) == c.output_digest, "forward.json {}: the file's digest", c.name);
        for b in Backend::available() {
            let mut got = vec![0i8; c.spec.d_model as usize];
            forward_packed(&packed_for(m, b), &c.tokens, &mut Scratch::new(m), &mut got);
            assert!(got == c.output, "forward.json {}: {b:?} output", c.name);
            count += 1;
        }
    }
    log(&format!(
        "forward.json: {} weight cases, {} passes on {} conformance cases, every backend ({:?}) as committed",
        weights.len(),
        count - weights.len(),
        cases.len(),
        Backend::available().iter().map(|b| b.name()).collect::<Vec<_>>()
    ));
    count
}

/// Decodes the hex string `v[key]` into `out` (panics on a malformed vector file).
fn hex_field(v: &serde_json::Value, key: &str, out: &mut [u8]) {
    let s = v[key].as_str().unwrap_or_else(|| panic!("vector field {key} missing"));
    hex::decode_to_slice(s, out).unwrap_or_else(|e| panic!("vector field {key}: {e}"));
}

fn check_vectors(chain: &str, text: &str) -> usize {
    let file: serde_json::Value = serde_json::from_str(text).expect("vector file parses");
    let params = ChainParams::by_name(chain).expect("known chain");
    let spec = params.model;
    let cases = file["cases"].as_array().expect("cases");
    let mut cache = ModelCache::new();
    let mut count = 0;
    for c in cases {
        let mut prev_id = [0u8; 32];
        let mut template = [0u8; 152];
        let mut digest = [0u8; 32];
        let mut pow = [0u8; 32];
        let mut output = vec![0u8; spec.d_model as usize];
        hex_field(c, "prev_id", &mut prev_id);
        hex_field(c, "template", &mut template);
        hex_field(c, "output_digest", &mut digest);
        hex_field(c, "pow_hash", &mut pow);
        hex_field(c, "output", &mut output);
        let nonce = c["nonce"].as_u64().expect("nonce");
        let input = PowInput { spec, prev_id, template, nonce, output_digest: [0; 32] };
        let d = cache.output_digest(&input).expect("valid spec");
        assert!(d == digest, "{chain} nonce {nonce}: output digest");
        assert!(pow_hash(&template, nonce, &d) == pow, "{chain} nonce {nonce}: pow hash");
        let model = cache.model(&spec, &prev_id).expect("valid spec").clone();
        let mut tokens = vec![0u16; spec.seq_len as usize];
        input_tokens(&spec, &template, nonce, &mut tokens);
        for b in Backend::available() {
            let mut got = vec![0i8; spec.d_model as usize];
            forward(&model, &tokens, &mut Scratch::with_backend(&model, b), &mut got);
            assert!(got.iter().map(|&v| v as u8).eq(output.iter().copied()), "{chain} nonce {nonce}: {b:?} output");
        }
        count += 1;
    }
    assert!(count >= 4, "{chain}: too few vectors");
    count
}

/// Median of `reps` timings of `f`, in milliseconds, after one untimed call (the
/// engine's optimising tier compiles in the background at first).
fn median_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let t0 = now_ms();
            f();
            now_ms() - t0
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn bench(reps: usize) {
    let params = ChainParams::by_name("mainnet").expect("known chain");
    let spec = params.model;
    let prev_id = *blake3::hash(b"tpow wasm bench").as_bytes();
    // The weight streams alone (blake3 XOF), every tensor of the model.
    let d = spec.d_model as usize;
    let f = spec.d_ffn as usize;
    let mut buf = vec![0i8; spec.vocab as usize * d];
    let stream_ms = median_ms(reps, || {
        derive_tensor(&prev_id, &spec, NO_LAYER, TensorKind::TokenEmbedding, &mut buf[..spec.vocab as usize * d]);
        derive_tensor(&prev_id, &spec, NO_LAYER, TensorKind::PositionEmbedding, &mut buf[..spec.seq_len as usize * d]);
        for l in 0..spec.n_layers {
            for (kind, len) in [
                (TensorKind::Query, d * d),
                (TensorKind::Key, d * d),
                (TensorKind::Value, d * d),
                (TensorKind::AttnOut, d * d),
                (TensorKind::MlpUp, f * d),
                (TensorKind::MlpDown, d * f),
            ] {
                derive_tensor(&prev_id, &spec, l, kind, &mut buf[..len]);
            }
        }
    });
    let mut model = None;
    let derive_ms = median_ms(reps, || model = Some(Model::derive(&spec, &prev_id).expect("valid spec")));
    let model = model.expect("derived at least once");
    let mut template = [0u8; 152];
    template[..16].copy_from_slice(b"tpow wasm bench.");
    let mut tokens = vec![0u16; spec.seq_len as usize];
    let mut out = vec![0i8; d];
    let mut pass_ms = |b: Backend| {
        let p = PackedModel::new(&model, b);
        let mut sc = Scratch::with_backend(&model, b);
        let mut nonce = 0u64;
        median_ms(reps, || {
            nonce += 1;
            input_tokens(&spec, &template, nonce, &mut tokens);
            forward_packed(&p, &tokens, &mut sc, &mut out);
        })
    };
    let best = Backend::detect();
    // Laying the weights out for this build's kernels (nothing to do for wasm).
    let pack_ms = median_ms(reps, || {
        PackedModel::new(&model, best);
    });
    let best_ms = pass_ms(best);
    let scalar_ms = pass_ms(Backend::Scalar);
    // What the light client runs per header: a fresh model, one pass, the digest.
    let input = PowInput { spec, prev_id, template, nonce: 7, output_digest: [0; 32] };
    let verify_ms = median_ms(reps, || {
        ModelCache::new().output_digest(&input).expect("valid spec");
    });
    log(&format!("mainnet, median of {reps} runs ({}):", simd_backend_name()));
    log(&format!("  header verify (fresh ModelCache::output_digest: derivation + pass + digest) {verify_ms:.2} ms"));
    log(&format!("  model derivation {derive_ms:.2} ms (weight streams alone, blake3: {stream_ms:.2} ms)"));
    log(&format!("  weights laid out for {best:?}: {pack_ms:.2} ms"));
    log(&format!("  forward pass {best_ms:.2} ms; with the scalar loop in this build {scalar_ms:.2} ms"));
    for b in simd_backends() {
        if b != best {
            log(&format!("  forward pass with {b:?}: {:.2} ms", pass_ms(b)));
        }
    }
}
