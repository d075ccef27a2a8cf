//! Every committed forward-pass vector reproduces on the GPU byte for byte, with and
//! without `dot4I8Packed`: the chain files (tests/vectors/{devnet,mainnet}.json)
//! through the verifier and through the miner's batches, and the conformance models
//! of tests/vectors/forward.json (§14.1) on their tokens.

mod common;

/// The vector files, parsed as tpow-core's tests and the wasm32 check do.
#[path = "../../tpow-core/tests/common/vector_files.rs"]
mod vector_files;

use std::path::PathBuf;

use serde::Deserialize;
use tpow_core::chain::PowInput;
use tpow_core::{Model, ModelSpec};
use tpow_gpu::{GpuMiner, GpuVerifier};

#[derive(Deserialize)]
struct SpecJson {
    vocab: u32,
    seq_len: u32,
    d_model: u32,
    n_heads: u32,
    n_layers: u32,
    d_ffn: u32,
}

#[derive(Deserialize)]
struct Case {
    prev_id: String,
    template: String,
    nonce: u64,
    output: String,
    output_digest: String,
    pow_hash: String,
}

#[derive(Deserialize)]
struct VectorFile {
    spec: SpecJson,
    cases: Vec<Case>,
}

struct Vector {
    prev_id: [u8; 32],
    template: [u8; 152],
    nonce: u64,
    output: Vec<u8>,
    digest: [u8; 32],
    pow_hash: [u8; 32],
}

fn arr<const N: usize>(hex_str: &str) -> [u8; N] {
    let v = hex::decode(hex_str).expect("hex");
    v.try_into().expect("length")
}

fn load(chain: &str) -> (ModelSpec, Vec<Vector>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors").join(format!("{chain}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let f: VectorFile = serde_json::from_str(&text).expect("vector json");
    let spec = ModelSpec {
        vocab: f.spec.vocab,
        seq_len: f.spec.seq_len,
        d_model: f.spec.d_model,
        n_heads: f.spec.n_heads,
        n_layers: f.spec.n_layers,
        d_ffn: f.spec.d_ffn,
    };
    let cases = f
        .cases
        .iter()
        .map(|c| Vector {
            prev_id: arr(&c.prev_id),
            template: arr(&c.template),
            nonce: c.nonce,
            output: hex::decode(&c.output).expect("hex"),
            digest: arr(&c.output_digest),
            pow_hash: arr(&c.pow_hash),
        })
        .collect();
    (spec, cases)
}

fn check_chain(chain: &str) {
    let (spec, cases) = load(chain);
    assert!(!cases.is_empty());
    for (mode, ctx) in common::both_variants() {
        // Verify mode: one nonce at a time, the model derived by the verifier.
        let mut verifier = GpuVerifier::new(&ctx);
        for (i, c) in cases.iter().enumerate() {
            let input =
                PowInput { spec, prev_id: c.prev_id, template: c.template, nonce: c.nonce, output_digest: c.digest };
            let out = verifier.output(&input).expect("gpu verify");
            let out: Vec<u8> = out.iter().map(|&v| v as u8).collect();
            assert_eq!(out, c.output, "{chain} {mode:?} verify nonce {}", c.nonce);
            if i == 0 {
                // The digest path once (the output bytes above already fix it).
                assert_eq!(verifier.output_digest(&input).expect("gpu verify"), c.digest);
            }
        }
        // Mine mode: all nonces of one seed in one batch (plus neighbours, so the
        // vector nonces sit at different batch positions).
        let mut miner = GpuMiner::new(&ctx, 16);
        let mut seeds: Vec<[u8; 32]> = cases.iter().map(|c| c.prev_id).collect();
        seeds.dedup();
        for seed in seeds {
            let model = Model::derive(&spec, &seed).expect("spec");
            miner.set_model(&model).expect("upload");
            let group: Vec<&Vector> = cases.iter().filter(|c| c.prev_id == seed).collect();
            let mut nonces: Vec<u64> = vec![12345];
            nonces.extend(group.iter().map(|c| c.nonce));
            let attempts = miner.attempts(&group[0].template, &nonces).expect("gpu mine");
            for (c, a) in group.iter().zip(&attempts[1..]) {
                assert_eq!(a.nonce, c.nonce);
                assert_eq!(a.output_digest, c.digest, "{chain} {mode:?} mine nonce {}", c.nonce);
                assert_eq!(a.pow_hash, c.pow_hash, "{chain} {mode:?} mine nonce {}", c.nonce);
            }
        }
    }
}

#[test]
fn devnet_vectors_reproduce_on_gpu() {
    check_chain("devnet");
}

#[test]
fn mainnet_vectors_reproduce_on_gpu() {
    check_chain("mainnet");
}

/// The §6 conformance models of tests/vectors/forward.json (§14.1), where every clamp
/// and guard of the forward pass fires, on six model shapes (one head of 64, head
/// width 4, S = 1, F = 4096, ...): their tokens through the GPU pass, byte for byte.
#[test]
fn conformance_vectors_reproduce_on_gpu() {
    let (cases, _) = vector_files::conformance_cases(vector_files::FORWARD_JSON);
    assert!(cases.len() >= 32, "forward.json: {} forward cases", cases.len());
    let variants = common::both_variants();
    assert!(!variants.is_empty() || std::env::var("TPOW_GPU_TESTS").as_deref() == Ok("skip"));
    for (mode, ctx) in variants {
        let mut miner = GpuMiner::new(&ctx, 4);
        let mut i = 0;
        while i < cases.len() {
            // The cases on one model (consecutive in the file) in one batch.
            let group: Vec<_> =
                cases[i..].iter().take_while(|c| c.spec == cases[i].spec && c.model == cases[i].model).collect();
            i += group.len();
            let model = group[0].model.model(&group[0].spec);
            miner.set_model(&model).expect("upload");
            let tokens: Vec<u16> = group.iter().flat_map(|c| c.tokens.iter().copied()).collect();
            let outs = miner.outputs_of_tokens(&tokens).expect("gpu forward");
            assert_eq!(outs.len(), group.len());
            for (c, out) in group.iter().zip(&outs) {
                assert_eq!(out, &c.output, "forward.json {} ({mode:?})", c.name);
            }
        }
        eprintln!("{mode:?}: {} conformance passes as committed", cases.len());
    }
}

#[test]
fn tokens_out_of_range_are_an_error() {
    let Some((_, ctx)) = common::both_variants().into_iter().next() else {
        return;
    };
    let mut miner = GpuMiner::new(&ctx, 2);
    assert!(matches!(miner.outputs_of_tokens(&[0; 16]), Err(tpow_gpu::GpuError::NoModel)));
    let model = Model::derive(&ModelSpec::DEVNET, &[1; 32]).expect("spec");
    miner.set_model(&model).expect("upload");
    let s = ModelSpec::DEVNET.seq_len as usize;
    assert!(matches!(miner.outputs_of_tokens(&vec![0; s + 1]), Err(tpow_gpu::GpuError::Validation(_))));
    let mut t = vec![0u16; s];
    t[3] = ModelSpec::DEVNET.vocab as u16;
    assert!(matches!(miner.outputs_of_tokens(&t), Err(tpow_gpu::GpuError::Validation(_))));
    t[3] = 0;
    assert_eq!(miner.outputs_of_tokens(&t).expect("gpu").len(), 1);
}
