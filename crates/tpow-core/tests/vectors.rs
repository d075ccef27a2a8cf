//! The committed test vectors in `tests/vectors/` reproduce byte for byte.
//!
//! The same files are checked by the WGSL and wasm32 implementations and by the
//! independent Python implementation of docs/PROTOCOL.md
//! (`tests/vectors/reference.py`). Regenerate them only on a deliberate consensus
//! change: `TPOW_BLESS=1 cargo test -p tpow-core --test vectors`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tpow_core::chain::{genesis_header, HeaderChain};
use tpow_core::forward::ops::GELU_TABLE;
use tpow_core::model::{derive_tensor, TensorKind, NO_LAYER};
use tpow_core::puzzle::{input_tokens, Solver};
use tpow_core::{ChainParams, Model, ModelSpec};

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct SpecJson {
    vocab: u32,
    seq_len: u32,
    d_model: u32,
    n_heads: u32,
    n_layers: u32,
    d_ffn: u32,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct TensorHead {
    layer: u32,
    kind: u32,
    /// First 32 weights, as bytes (two's complement).
    first_bytes: String,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Case {
    prev_id: String,
    template: String,
    nonce: u64,
    weights: Vec<TensorHead>,
    tokens: Vec<u16>,
    /// The forward pass output, int8 as two's-complement bytes.
    output: String,
    output_digest: String,
    pow_hash: String,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct VectorFile {
    comment: String,
    chain: String,
    spec: SpecJson,
    genesis_header: String,
    genesis_id: String,
    /// GELU_TABLE[v + 128] for v in -128..=127, as two's-complement bytes.
    gelu_table: String,
    cases: Vec<Case>,
}

fn vector_path(chain: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors").join(format!("{chain}.json"))
}

fn bytes_of(v: &[i8]) -> Vec<u8> {
    v.iter().map(|&x| x as u8).collect()
}

fn compute(params: &ChainParams, n_seeds: u32, nonces: &[u64]) -> VectorFile {
    let spec = params.model;
    let genesis = genesis_header(params);
    let mut cases = Vec::new();
    for s in 0..n_seeds {
        // Seeds: the genesis id, then hashes standing in for later block ids.
        let prev_id =
            if s == 0 { genesis.id() } else { *blake3::hash(format!("tpow vector seed {s}").as_bytes()).as_bytes() };
        let model = Model::derive(&spec, &prev_id).expect("valid spec");
        let mut template = [0u8; 152];
        for (i, b) in template.iter_mut().enumerate() {
            *b = (i as u32 * 7 + s * 13) as u8;
        }
        template[12..44].copy_from_slice(&prev_id);
        let mut weights = Vec::new();
        let kinds = [
            (NO_LAYER, TensorKind::TokenEmbedding),
            (NO_LAYER, TensorKind::PositionEmbedding),
            (0, TensorKind::Query),
            (0, TensorKind::Key),
            (0, TensorKind::Value),
            (0, TensorKind::AttnOut),
            (0, TensorKind::MlpUp),
            (spec.n_layers - 1, TensorKind::MlpDown),
        ];
        for (layer, kind) in kinds {
            let mut w = [0i8; 32];
            derive_tensor(&prev_id, &spec, layer, kind, &mut w);
            weights.push(TensorHead { layer, kind: kind as u32, first_bytes: hex::encode(bytes_of(&w)) });
        }
        let mut solver = Solver::new(&model);
        for &nonce in nonces {
            let mut tokens = vec![0u16; spec.seq_len as usize];
            input_tokens(&spec, &template, nonce, &mut tokens);
            let output = bytes_of(solver.output(&template, nonce));
            let a = solver.attempt(&template, nonce);
            cases.push(Case {
                prev_id: hex::encode(prev_id),
                template: hex::encode(template),
                nonce,
                weights: weights
                    .iter()
                    .map(|w| TensorHead { layer: w.layer, kind: w.kind, first_bytes: w.first_bytes.clone() })
                    .collect(),
                tokens,
                output: hex::encode(output),
                output_digest: hex::encode(a.output_digest),
                pow_hash: hex::encode(a.pow_hash),
            });
        }
    }
    VectorFile {
        comment: "tpow consensus test vectors; see docs/PROTOCOL.md. Regenerate: TPOW_BLESS=1 cargo test -p tpow-core --test vectors".into(),
        chain: params.name().into(),
        spec: SpecJson {
            vocab: spec.vocab,
            seq_len: spec.seq_len,
            d_model: spec.d_model,
            n_heads: spec.n_heads,
            n_layers: spec.n_layers,
            d_ffn: spec.d_ffn,
        },
        genesis_header: hex::encode(genesis.encode()),
        genesis_id: hex::encode(HeaderChain::new(params.clone()).expect("valid params").tip().id),
        gelu_table: hex::encode(bytes_of(&GELU_TABLE)),
        cases,
    }
}

fn check(params: ChainParams, n_seeds: u32, nonces: &[u64]) {
    let got = compute(&params, n_seeds, nonces);
    let path = vector_path(params.name());
    if std::env::var_os("TPOW_BLESS").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
        return;
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let want: VectorFile = serde_json::from_str(&text).unwrap();
    assert_eq!(want.spec, got.spec);
    assert_eq!(want.genesis_header, got.genesis_header);
    assert_eq!(want.genesis_id, got.genesis_id);
    assert_eq!(want.gelu_table, got.gelu_table);
    assert_eq!(want.cases.len(), got.cases.len());
    for (w, g) in want.cases.iter().zip(&got.cases) {
        assert_eq!(w, g, "case prev_id={} nonce={}", w.prev_id, w.nonce);
    }
}

#[test]
fn devnet_vectors_reproduce() {
    check(ChainParams::devnet(), 4, &[0, 1, 2, 1 << 32, u64::MAX]);
}

#[test]
fn mainnet_vectors_reproduce() {
    check(ChainParams::mainnet(), 2, &[0, 1, u64::MAX]);
}

#[test]
fn spec_encoding_is_what_the_vectors_assume() {
    assert_eq!(ModelSpec::DEVNET.to_bytes()[..4], 256u32.to_le_bytes());
}
