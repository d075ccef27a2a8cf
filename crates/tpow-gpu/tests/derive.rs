//! The model derived on the GPU (BLAKE3 in WGSL, `src/derive.rs`) is the model of
//! docs/PROTOCOL.md §5, byte for byte, in the layout the engine uploads: every weight
//! buffer read back equals the CPU upload bytes of `Model::derive`, on the chain
//! shapes, the conformance shapes of tests/vectors/forward.json and several
//! `prev_id`s; and every committed forward vector whose model is a §5 model
//! reproduces with GPU-derived weights.

mod common;

/// The vector files, parsed as tpow-core's tests and the wasm32 check do.
#[path = "../../tpow-core/tests/common/vector_files.rs"]
mod vector_files;

use tpow_core::model::ConformanceGain;
use tpow_core::{Model, ModelSpec};
use tpow_gpu::testing::{derived_weights, uploaded_weights};
use tpow_gpu::{GpuMiner, PackedDot};
use vector_files::ModelSource;

/// Deterministic pseudo-random ids (xorshift), so a failure reproduces.
fn ids(n: usize) -> Vec<[u8; 32]> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut v = vec![[0u8; 32], [0xff; 32]];
    for _ in 0..n {
        let mut id = [0u8; 32];
        for b in id.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes());
        }
        v.push(id);
    }
    v
}

fn assert_same_buffers(got: &[Vec<u8>], want: &[Vec<u8>], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: buffer count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what}: buffer {i} size");
        if let Some(at) = g.iter().zip(w).position(|(a, b)| a != b) {
            panic!("{what}: buffer {i} differs first at byte {at} of {} ({} vs {})", g.len(), g[at], w[at]);
        }
    }
}

#[test]
fn gpu_derived_weights_equal_the_cpu_upload() {
    let Some(ctx) = common::gpu(PackedDot::Auto) else { return };
    let mut specs = vec![ModelSpec::DEVNET, ModelSpec::MAINNET];
    // The conformance shapes: one head of 64, head width 4, S = 1, F = 4096, ...
    for c in vector_files::conformance_cases(vector_files::FORWARD_JSON).0 {
        if !specs.contains(&c.spec) {
            specs.push(c.spec);
        }
    }
    assert!(specs.len() >= 6, "{} shapes", specs.len());
    let mut buffers = 0;
    for spec in &specs {
        let seeds = if *spec == ModelSpec::MAINNET { ids(2) } else { ids(3) };
        for prev_id in seeds {
            let want = uploaded_weights(&Model::derive(spec, &prev_id).expect("spec"));
            let got = pollster::block_on(derived_weights(&ctx, spec, &prev_id)).expect("GPU derivation");
            assert_same_buffers(&got, &want, &format!("{spec:?} prev_id {}", hex::encode(prev_id)));
            buffers += got.len();
        }
    }
    eprintln!("{buffers} weight buffers on {} shapes identical", specs.len());
}

/// The §5 model of a forward case, if it has one (a conformance model whose gains
/// are all the identity is the §5 model of its seed, §14.1).
fn derived_seed(model: &ModelSource) -> Option<[u8; 32]> {
    match model {
        ModelSource::Derived(id) => Some(*id),
        ModelSource::Conformance { seed, gains } if gains.iter().all(|g| *g == ConformanceGain::IDENTITY) => {
            Some(*seed)
        }
        ModelSource::Conformance { .. } => None,
    }
}

#[test]
fn forward_vectors_reproduce_with_gpu_derived_weights() {
    let Some(ctx) = common::gpu(PackedDot::Auto) else { return };
    let cases = vector_files::all_forward_cases();
    let mut miner = GpuMiner::new(&ctx, 4);
    let mut run = 0;
    let mut loaded = None;
    for c in &cases {
        let Some(seed) = derived_seed(&c.model) else { continue };
        if loaded != Some((c.spec, seed)) {
            miner.derive_model(&c.spec, &seed).expect("GPU derivation");
            assert_eq!(miner.model_prev_id(), Some(seed));
            loaded = Some((c.spec, seed));
        }
        let outs = miner.outputs_of_tokens(&c.tokens).expect("GPU forward");
        assert_eq!(outs.len(), 1);
        assert_eq!(outs[0], c.output, "{} with GPU-derived weights", c.name);
        run += 1;
    }
    // Both chain files (§5 models) at least.
    let chain = vector_files::chain_cases(vector_files::DEVNET_JSON).len()
        + vector_files::chain_cases(vector_files::MAINNET_JSON).len();
    assert!(run >= chain, "{run} cases run, {chain} chain cases");
    eprintln!("{run} of {} forward cases on GPU-derived models", cases.len());
}
