//! Every CPU backend this machine runs (the scalar reference, AVX2, AVX-512 VNNI:
//! each one whose CPU features are detected, not only the fastest) runs the forward
//! pass end to end on its own weight layout and reproduces every committed
//! forward-pass vector (the chain files and the conformance models of
//! tests/vectors/forward.json, where every clamp and guard fires) and agrees with
//! the scalar loop on random models, derived and conformance ones.
//!
//! `TPOW_REQUIRE_BACKENDS=avx2,avx512-vnni` (names of `Backend::name`) makes a
//! missing backend a failure instead of a note, for machines known to have it.

#[path = "common/vector_files.rs"]
mod vector_files;

use tpow_core::forward::{forward, forward_packed, Backend, PackedModel, Scratch};
use tpow_core::model::ConformanceGain;
use tpow_core::puzzle::{input_tokens, output_digest, Solver};
use tpow_core::{Model, ModelSpec};
use vector_files::{all_forward_cases, ForwardCase};

/// The backends to test, after checking `TPOW_REQUIRE_BACKENDS`.
fn backends() -> Vec<Backend> {
    let available = Backend::available();
    let names: Vec<&str> = available.iter().map(|b| b.name()).collect();
    eprintln!("backends on this machine: {names:?}");
    if let Ok(required) = std::env::var("TPOW_REQUIRE_BACKENDS") {
        for want in required.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            assert!(names.contains(&want), "TPOW_REQUIRE_BACKENDS: {want} is not available here ({names:?})");
        }
    }
    assert_eq!(available[0], Backend::Scalar);
    available
}

/// `model` laid out for `b`, with every matrix on `b`'s own kernel (no silent
/// scalar fallback: every shape in the vectors takes the SIMD kernels).
fn packed_for(model: &Model, b: Backend) -> PackedModel<'_> {
    let p = PackedModel::new(model, b);
    let want = if b == Backend::Scalar { 0 } else { 6 * model.layers.len() };
    assert_eq!(p.simd_matrices(), want, "{b:?}: matrices on the backend's kernel");
    p
}

fn run(p: &PackedModel<'_>, tokens: &[u16]) -> Vec<i8> {
    let mut out = vec![0i8; p.model().spec.d_model as usize];
    forward_packed(p, tokens, &mut Scratch::new(p.model()), &mut out);
    out
}

#[test]
fn every_backend_reproduces_every_forward_vector() {
    let backends = backends();
    let cases = all_forward_cases();
    // 23 chain cases (devnet 20, mainnet 6 per the files) and 32 conformance passes.
    assert!(cases.len() >= 50, "only {} forward cases", cases.len());
    let mut model: Option<(ModelSpec, vector_files::ModelSource, Model)> = None;
    let mut passes = 0;
    for c in &cases {
        if model.as_ref().is_none_or(|(s, m, _)| *s != c.spec || *m != c.model) {
            model = Some((c.spec, c.model.clone(), c.model.model(&c.spec)));
        }
        let m = &model.as_ref().expect("set above").2;
        check_case(c, m, &backends);
        passes += backends.len();
    }
    eprintln!("{} cases x {} backends = {passes} passes, all as committed", cases.len(), backends.len());
}

fn check_case(c: &ForwardCase, model: &Model, backends: &[Backend]) {
    if let Some((template, nonce)) = &c.puzzle {
        let mut t = vec![0u16; c.spec.seq_len as usize];
        input_tokens(&c.spec, template, *nonce, &mut t);
        assert_eq!(t, c.tokens, "{}: tokens", c.name);
    }
    assert_eq!(output_digest(&c.output), c.output_digest, "{}: the file's digest", c.name);
    for &b in backends {
        let out = run(&packed_for(model, b), &c.tokens);
        assert_eq!(out, c.output, "{}: {b:?}", c.name);
        // The entry point on a plain model lays it out per call: same bytes.
        let mut again = vec![0i8; out.len()];
        forward(model, &c.tokens, &mut Scratch::with_backend(model, b), &mut again);
        assert_eq!(again, out, "{}: {b:?} through forward(&Model)", c.name);
        if let Some((template, nonce)) = &c.puzzle {
            let mut solver = Solver::with_scratch(model, Scratch::with_backend(model, b));
            assert_eq!(solver.attempt(template, *nonce).output_digest, c.output_digest, "{}: {b:?} solver", c.name);
        }
    }
}

/// xorshift64*: deterministic test data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self) -> [u8; 32] {
        core::array::from_fn(|_| self.next() as u8)
    }
}

/// Every backend against the scalar loop on `model`, `nonces` random token sets.
fn agree(model: &Model, backends: &[Backend], nonces: usize, rng: &mut Rng) -> usize {
    let spec = model.spec;
    let packed: Vec<PackedModel<'_>> = backends.iter().map(|&b| packed_for(model, b)).collect();
    for _ in 0..nonces {
        let tokens: Vec<u16> = (0..spec.seq_len).map(|_| rng.below(spec.vocab as u64) as u16).collect();
        let want = run(&packed[0], &tokens);
        for p in &packed[1..] {
            assert_eq!(run(p, &tokens), want, "{:?} spec {spec:?} seed {:02x?}", p.backend(), &model.prev_id[..4]);
        }
    }
    nonces * (backends.len() - 1)
}

#[test]
fn every_backend_agrees_on_random_models() {
    let backends = backends();
    let mut rng = Rng(0x00c0_ffee_1234_5678);
    let mut compared = 0;
    for _ in 0..3 {
        let model = Model::derive(&ModelSpec::DEVNET, &rng.bytes()).expect("spec");
        compared += agree(&model, &backends, 40, &mut rng);
    }
    let model = Model::derive(&ModelSpec::MAINNET, &rng.bytes()).expect("spec");
    compared += agree(&model, &backends, 3, &mut rng);
    // Conformance models with random gains on random shapes: saturated activations,
    // clamped residuals and attention outputs, cut-off softmax weights.
    for _ in 0..24 {
        let d = 16u32 << rng.below(4);
        // Head widths 4 and 8 take the scalar attention, 16 and up the SIMD one.
        let hd = (4u32 << rng.below(5)).min(d);
        let spec = ModelSpec {
            vocab: 1 << (1 + rng.below(8)),
            seq_len: 1 << rng.below(7),
            d_model: d,
            n_heads: d / hd,
            n_layers: 1 + rng.below(3) as u32,
            d_ffn: d << rng.below(3),
        };
        spec.validate().expect("a valid random spec");
        let gains: [ConformanceGain; 8] = core::array::from_fn(|_| match rng.below(4) {
            0 => ConformanceGain::IDENTITY,
            1 => ConformanceGain { mul: rng.below(64) as u32, add: 0 },
            2 => ConformanceGain { mul: 128 + rng.below(2048) as u32, add: 0 },
            _ => ConformanceGain { mul: rng.below(256) as u32, add: rng.below(511) as i32 - 255 },
        });
        let model = Model::conformance(&spec, &rng.bytes(), &gains).expect("spec");
        compared += agree(&model, &backends, 4, &mut rng);
    }
    eprintln!("{compared} random passes compared with the scalar loop");
    if backends.len() > 1 {
        assert!(compared > 100);
    }
}
