//! The forward-pass cases of the committed vector files, parsed for the engines that
//! run them: the chain files (`tests/vectors/{devnet,mainnet}.json`, §14) and the
//! conformance models of `tests/vectors/forward.json` (§14.1), where every clamp and
//! guard of the forward pass fires.
//!
//! Shared by source (`#[path]`) between tpow-core's backend test, tpow-gpu's vector
//! test and the wasm32 check package (`examples/wasm_simd`), so each engine runs the
//! same cases; needs `serde_json` and `hex`. A malformed file panics.

#![allow(dead_code)]

use serde_json::Value;
use tpow_core::model::{ConformanceGain, TensorKind};
use tpow_core::{Model, ModelSpec};

/// `tests/vectors/devnet.json`.
pub const DEVNET_JSON: &str = include_str!("../../../../tests/vectors/devnet.json");
/// `tests/vectors/mainnet.json`.
pub const MAINNET_JSON: &str = include_str!("../../../../tests/vectors/mainnet.json");
/// `tests/vectors/forward.json`.
pub const FORWARD_JSON: &str = include_str!("../../../../tests/vectors/forward.json");

/// Which model a case runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// The §5 model of a block id.
    Derived([u8; 32]),
    /// A conformance model (§14.1).
    Conformance { seed: [u8; 32], gains: [ConformanceGain; 8] },
}

impl ModelSource {
    /// The model of `spec`.
    pub fn model(&self, spec: &ModelSpec) -> Model {
        match self {
            ModelSource::Derived(prev_id) => Model::derive(spec, prev_id),
            ModelSource::Conformance { seed, gains } => Model::conformance(spec, seed, gains),
        }
        .expect("valid spec in a vector")
    }
}

/// One forward pass with its expected output.
#[derive(Clone, Debug)]
pub struct ForwardCase {
    /// The case's name in the file (the chain files: chain and nonce).
    pub name: String,
    pub spec: ModelSpec,
    pub model: ModelSource,
    /// For the chain files: the template and nonce the tokens come from (§7).
    pub puzzle: Option<([u8; 152], u64)>,
    pub tokens: Vec<u16>,
    pub output: Vec<i8>,
    pub output_digest: [u8; 32],
}

/// The first weights of one tensor of a conformance model.
#[derive(Clone, Debug)]
pub struct WeightsCase {
    pub name: String,
    pub spec: ModelSpec,
    pub model: ModelSource,
    pub layer: u32,
    pub kind: TensorKind,
    pub weights: Vec<i8>,
}

/// The tensor kinds by id (§5).
pub const KINDS: [TensorKind; 8] = [
    TensorKind::TokenEmbedding,
    TensorKind::PositionEmbedding,
    TensorKind::Query,
    TensorKind::Key,
    TensorKind::Value,
    TensorKind::AttnOut,
    TensorKind::MlpUp,
    TensorKind::MlpDown,
];

/// The row-major weights of tensor `kind` of layer `layer` (embeddings: any layer).
pub fn tensor(model: &Model, layer: u32, kind: TensorKind) -> &[i8] {
    let l = model.layers.get(layer as usize);
    let l = || l.expect("layer in range");
    match kind {
        TensorKind::TokenEmbedding => &model.tok_emb.data,
        TensorKind::PositionEmbedding => &model.pos_emb.data,
        TensorKind::Query => &l().wq.data,
        TensorKind::Key => &l().wk.data,
        TensorKind::Value => &l().wv.data,
        TensorKind::AttnOut => &l().wo.data,
        TensorKind::MlpUp => &l().w_up.data,
        TensorKind::MlpDown => &l().w_down.data,
    }
}

fn hex_bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("hex")
}

fn hex_array<const N: usize>(v: &Value) -> [u8; N] {
    hex_bytes(v).try_into().expect("hex of the right length")
}

fn hex_i8(v: &Value) -> Vec<i8> {
    hex_bytes(v).into_iter().map(|b| b as i8).collect()
}

fn u32_of(v: &Value, key: &str) -> u32 {
    v[key].as_u64().and_then(|x| u32::try_from(x).ok()).unwrap_or_else(|| panic!("{key}: not a u32"))
}

fn spec_of(v: &Value) -> ModelSpec {
    ModelSpec {
        vocab: u32_of(v, "vocab"),
        seq_len: u32_of(v, "seq_len"),
        d_model: u32_of(v, "d_model"),
        n_heads: u32_of(v, "n_heads"),
        n_layers: u32_of(v, "n_layers"),
        d_ffn: u32_of(v, "d_ffn"),
    }
}

fn model_of(m: &Value) -> ModelSource {
    if !m["prev_id"].is_null() {
        return ModelSource::Derived(hex_array(&m["prev_id"]));
    }
    let pairs = m["gains"].as_array().expect("gains");
    assert_eq!(pairs.len(), 8, "8 gains");
    let mut gains = [ConformanceGain::IDENTITY; 8];
    for (g, p) in gains.iter_mut().zip(pairs) {
        let mul = p[0].as_u64().and_then(|x| u32::try_from(x).ok()).expect("mul");
        let add = p[1].as_i64().and_then(|x| i32::try_from(x).ok()).expect("add");
        *g = ConformanceGain { mul, add };
    }
    ModelSource::Conformance { seed: hex_array(&m["seed"]), gains }
}

/// The `forward` and `weights` cases of a `tpow-vectors/1` file (forward.json).
pub fn conformance_cases(text: &str) -> (Vec<ForwardCase>, Vec<WeightsCase>) {
    let file: Value = serde_json::from_str(text).expect("vector file parses");
    assert_eq!(file["format"], "tpow-vectors/1");
    let (mut fwd, mut weights) = (Vec::new(), Vec::new());
    for c in file["cases"].as_array().expect("cases") {
        let (input, expect) = (&c["input"], &c["expect"]);
        let name = c["name"].as_str().expect("name").to_string();
        let spec = spec_of(&input["spec"]);
        let model = model_of(&input["model"]);
        match c["op"].as_str().expect("op") {
            "forward" => fwd.push(ForwardCase {
                name,
                spec,
                model,
                puzzle: None,
                tokens: input["tokens"]
                    .as_array()
                    .expect("tokens")
                    .iter()
                    .map(|t| t.as_u64().and_then(|t| u16::try_from(t).ok()).expect("token"))
                    .collect(),
                output: hex_i8(&expect["output"]),
                output_digest: hex_array(&expect["output_digest"]),
            }),
            "weights" => {
                let count = input["count"].as_u64().expect("count") as usize;
                let w = hex_i8(&expect["weights"]);
                assert_eq!(w.len(), count, "{name}: weight count");
                weights.push(WeightsCase {
                    name,
                    spec,
                    model,
                    layer: u32_of(input, "layer"),
                    kind: KINDS[u32_of(input, "kind") as usize],
                    weights: w,
                });
            }
            other => panic!("unexpected op {other} in a forward-pass file"),
        }
    }
    (fwd, weights)
}

/// The cases of a chain file (devnet.json, mainnet.json): §5 models, tokens from
/// the puzzle (§7).
pub fn chain_cases(text: &str) -> Vec<ForwardCase> {
    let file: Value = serde_json::from_str(text).expect("vector file parses");
    let chain = file["chain"].as_str().expect("chain");
    let spec = spec_of(&file["spec"]);
    file["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| {
            let nonce = c["nonce"].as_u64().expect("nonce");
            ForwardCase {
                name: format!("{chain} nonce {nonce}"),
                spec,
                model: ModelSource::Derived(hex_array(&c["prev_id"])),
                puzzle: Some((hex_array(&c["template"]), nonce)),
                tokens: c["tokens"]
                    .as_array()
                    .expect("tokens")
                    .iter()
                    .map(|t| t.as_u64().and_then(|t| u16::try_from(t).ok()).expect("token"))
                    .collect(),
                output: hex_i8(&c["output"]),
                output_digest: hex_array(&c["output_digest"]),
            }
        })
        .collect()
}

/// Every forward-pass case: both chain files, then forward.json's.
pub fn all_forward_cases() -> Vec<ForwardCase> {
    let mut v = chain_cases(DEVNET_JSON);
    v.extend(chain_cases(MAINNET_JSON));
    v.extend(conformance_cases(FORWARD_JSON).0);
    v
}
