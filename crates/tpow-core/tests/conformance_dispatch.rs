//! tpow-core's side of the conformance protocol (tests/vectors/README.md):
//! one request (`op` and `input`) in, one `output` or error name out.
//!
//! Shared by the native conformance test (`tests/conformance.rs`, which includes
//! this file as a module) and the CLI (`examples/conformance.rs`, which runs the
//! JSON-lines protocol on stdin/stdout for `tests/vectors/conformance.py`). As a
//! test target of its own it contains no tests.

#![allow(dead_code)]

use serde_json::{json, Map, Value};
use tpow_core::asert::{next_target, AsertAnchor, AsertParams};
use tpow_core::body::{block_reward, check_body, Body, BodyError};
use tpow_core::chain::{check_detached, genesis_header, next_bits};
use tpow_core::forward::ops::GELU_TABLE;
use tpow_core::forward::{forward, Scratch};
use tpow_core::header::{DecodeError, Header, TEMPLATE_LEN};
use tpow_core::mmr::{Mmr, MmrError, MmrNode, MmrPeaks, MmrProof};
use tpow_core::model::{derive_tensor, ConformanceGain, TensorKind};
use tpow_core::puzzle::{input_tokens, output_digest, pow_hash, pow_hash_of_encoded};
use tpow_core::target::{block_work, hash_meets_target, CompactTarget, TargetError};
use tpow_core::{BranchError, ChainParams, HeaderChain, HeaderError, Model, ModelCache, ModelSpec, Network, U256};

/// The protocol version this dispatcher speaks (`format` of the vector files).
pub const FORMAT: &str = "tpow-vectors/1";

/// What a request produced: an output object, a named rule error, or a
/// protocol problem (malformed input, unknown op).
#[derive(Debug, PartialEq)]
pub enum Reply {
    Output(Value),
    Error(String),
    Unsupported(String),
    BadRequest(String),
}

type R<T> = Result<T, Reply>;

fn bad(msg: impl Into<String>) -> Reply {
    Reply::BadRequest(msg.into())
}

fn err(name: &str) -> Reply {
    Reply::Error(name.to_string())
}

fn field<'a>(input: &'a Value, name: &str) -> R<&'a Value> {
    input.get(name).ok_or_else(|| bad(format!("missing field {name}")))
}

fn u64_of(input: &Value, name: &str) -> R<u64> {
    field(input, name)?.as_u64().ok_or_else(|| bad(format!("{name}: not a u64")))
}

fn u32_of(input: &Value, name: &str) -> R<u32> {
    u32::try_from(u64_of(input, name)?).map_err(|_| bad(format!("{name}: not a u32")))
}

fn str_of<'a>(input: &'a Value, name: &str) -> R<&'a str> {
    field(input, name)?.as_str().ok_or_else(|| bad(format!("{name}: not a string")))
}

fn bytes_of(input: &Value, name: &str) -> R<Vec<u8>> {
    hex::decode(str_of(input, name)?).map_err(|e| bad(format!("{name}: {e}")))
}

fn array_of<const N: usize>(input: &Value, name: &str) -> R<[u8; N]> {
    bytes_of(input, name)?.try_into().map_err(|_| bad(format!("{name}: not {N} bytes")))
}

/// A 256-bit integer: 64 hex digits, big-endian.
fn u256_of(input: &Value, name: &str) -> R<U256> {
    Ok(U256::from_be_bytes(array_of::<32>(input, name)?))
}

pub fn u256_hex(x: U256) -> String {
    hex::encode(x.to_be_bytes::<32>())
}

fn node_of(v: &Value) -> R<MmrNode> {
    let pair = v.as_array().filter(|a| a.len() == 2).ok_or_else(|| bad("node: not [hash, work]"))?;
    let wrap = json!({"hash": pair[0], "work": pair[1]});
    Ok(MmrNode { hash: array_of::<32>(&wrap, "hash")?, work: u256_of(&wrap, "work")? })
}

fn node_json(n: &MmrNode) -> Value {
    json!([hex::encode(n.hash), u256_hex(n.work)])
}

fn leaves_of(input: &Value) -> R<Vec<MmrNode>> {
    field(input, "leaves")?.as_array().ok_or_else(|| bad("leaves: not an array"))?.iter().map(node_of).collect()
}

fn spec_of(input: &Value) -> R<ModelSpec> {
    let s = field(input, "spec")?;
    let spec = ModelSpec {
        vocab: u32_of(s, "vocab")?,
        seq_len: u32_of(s, "seq_len")?,
        d_model: u32_of(s, "d_model")?,
        n_heads: u32_of(s, "n_heads")?,
        n_layers: u32_of(s, "n_layers")?,
        d_ffn: u32_of(s, "d_ffn")?,
    };
    spec.validate().map_err(|e| bad(format!("spec: {e}")))?;
    Ok(spec)
}

fn chain_of(input: &Value) -> R<ChainParams> {
    match str_of(input, "chain")? {
        "devnet" => Ok(ChainParams::devnet()),
        "mainnet" => Ok(ChainParams::mainnet()),
        other => Err(bad(format!("unknown chain {other}"))),
    }
}

const KINDS: [TensorKind; 8] = [
    TensorKind::TokenEmbedding,
    TensorKind::PositionEmbedding,
    TensorKind::Query,
    TensorKind::Key,
    TensorKind::Value,
    TensorKind::AttnOut,
    TensorKind::MlpUp,
    TensorKind::MlpDown,
];

/// `{"prev_id": hex}` (the §5 model) or `{"seed": hex, "gains": [[mul, add]; 8]}`
/// (a conformance model, §14.1).
fn model_of(input: &Value, spec: &ModelSpec) -> R<Model> {
    let m = field(input, "model")?;
    if m.get("prev_id").is_some() {
        return Model::derive(spec, &array_of::<32>(m, "prev_id")?).map_err(|e| bad(e.to_string()));
    }
    let seed = array_of::<32>(m, "seed")?;
    let gains = gains_of(m)?;
    Model::conformance(spec, &seed, &gains).map_err(|e| bad(e.to_string()))
}

pub fn gains_of(m: &Value) -> R<[ConformanceGain; 8]> {
    let list = field(m, "gains")?.as_array().filter(|a| a.len() == 8).ok_or_else(|| bad("gains: not 8 pairs"))?;
    let mut gains = [ConformanceGain::IDENTITY; 8];
    for (g, v) in gains.iter_mut().zip(list) {
        let pair = v.as_array().filter(|a| a.len() == 2).ok_or_else(|| bad("gain: not [mul, add]"))?;
        let mul = pair[0].as_u64().filter(|&x| x <= 65535).ok_or_else(|| bad("gain mul: not in 0..=65535"))?;
        let add =
            pair[1].as_i64().filter(|x| (-255..=255).contains(x)).ok_or_else(|| bad("gain add: not in -255..=255"))?;
        *g = ConformanceGain { mul: mul as u32, add: add as i32 };
    }
    Ok(gains)
}

fn matrix_of(model: &Model, layer: u32, kind: TensorKind) -> R<&[i8]> {
    if kind == TensorKind::TokenEmbedding || kind == TensorKind::PositionEmbedding {
        if layer != u32::MAX {
            return Err(bad("embeddings have layer 0xFFFFFFFF"));
        }
        return Ok(if kind == TensorKind::TokenEmbedding { &model.tok_emb.data } else { &model.pos_emb.data });
    }
    let l = model.layers.get(layer as usize).ok_or_else(|| bad("layer out of range"))?;
    Ok(match kind {
        TensorKind::Query => &l.wq.data,
        TensorKind::Key => &l.wk.data,
        TensorKind::Value => &l.wv.data,
        TensorKind::AttnOut => &l.wo.data,
        TensorKind::MlpUp => &l.w_up.data,
        _ => &l.w_down.data,
    })
}

fn i8_hex(v: &[i8]) -> String {
    hex::encode(v.iter().map(|&x| x as u8).collect::<Vec<u8>>())
}

fn template_of(input: &Value) -> R<[u8; TEMPLATE_LEN]> {
    array_of::<TEMPLATE_LEN>(input, "template")
}

fn target_error(e: TargetError) -> Reply {
    err(match e {
        TargetError::Negative => "Negative",
        TargetError::Overflow => "Overflow",
        TargetError::Zero => "Zero",
    })
}

fn header_error(e: DecodeError) -> Reply {
    match e {
        DecodeError::Length(_) => err("Length"),
        DecodeError::Version(_) => err("Version"),
        DecodeError::Bits(t) => target_error(t),
    }
}

fn mmr_error(e: MmrError) -> Reply {
    err(match e {
        MmrError::LeafIndexOutOfRange { .. } => "LeafIndexOutOfRange",
        MmrError::LeafCountTooLarge { .. } => "LeafCountTooLarge",
        MmrError::WrongSiblingCount { .. } => "WrongSiblingCount",
        MmrError::WrongPeakCount { .. } => "WrongPeakCount",
        MmrError::RootMismatch => "RootMismatch",
        MmrError::Truncated => "Truncated",
        MmrError::TrailingBytes => "TrailingBytes",
        MmrError::TooManyItems { .. } => "TooManyItems",
    })
}

fn body_error(e: BodyError) -> Reply {
    err(match e {
        BodyError::Length { .. } => "Length",
        BodyError::Version(_) => "Version",
        BodyError::Transactions(_) => "Transactions",
        BodyError::Root => "Root",
        BodyError::Height { .. } => "Height",
        BodyError::MinerKey => "MinerKey",
        BodyError::Reward { .. } => "Reward",
    })
}

fn header_json(h: &Header) -> Value {
    let enc = h.encode();
    json!({
        "version": h.version,
        "height": h.height,
        "prev_id": hex::encode(h.prev_id),
        "timestamp_ms": h.timestamp_ms,
        "bits": h.bits.0,
        "body_root": hex::encode(h.body_root),
        "mmr_root": hex::encode(h.mmr_root),
        "miner_key": hex::encode(h.miner_key),
        "nonce": h.nonce,
        "output_digest": hex::encode(h.output_digest),
        "target": u256_hex(h.bits.to_target().unwrap_or_default()),
        "id": hex::encode(h.id()),
        "pow_hash": hex::encode(pow_hash_of_encoded(&enc)),
    })
}

/// A chain's parameters (§4.2) given explicitly: `spec`, `ideal_block_time_ms`,
/// `half_life_ms`, `max_target`, `genesis_timestamp_ms`, `genesis_bits`,
/// `max_future_drift_ms`.
pub fn params_of(input: &Value) -> R<ChainParams> {
    let p = field(input, "params")?;
    let params = ChainParams {
        network: Network::Devnet,
        model: spec_of(p)?,
        asert: AsertParams {
            ideal_block_time_ms: u64_of(p, "ideal_block_time_ms")?,
            half_life_ms: u64_of(p, "half_life_ms")?,
            max_target: u256_of(p, "max_target")?,
        },
        genesis_timestamp_ms: u64_of(p, "genesis_timestamp_ms")?,
        genesis_bits: CompactTarget(u32_of(p, "genesis_bits")?),
        max_future_drift_ms: u64_of(p, "max_future_drift_ms")?,
    };
    params.validate().map_err(|e| bad(format!("params: {e}")))?;
    Ok(params)
}

pub fn header_error_name(e: &HeaderError) -> &'static str {
    match e {
        HeaderError::AlreadyKnown => "AlreadyKnown",
        HeaderError::Version(_) => "Version",
        HeaderError::UnknownParent => "UnknownParent",
        HeaderError::Height { .. } => "Height",
        HeaderError::TimestampNotAfterParent { .. } => "TimestampNotAfterParent",
        HeaderError::TimestampInFuture { .. } => "TimestampInFuture",
        HeaderError::Target { .. } => "Target",
        HeaderError::MmrRoot => "MmrRoot",
        HeaderError::PowHash => "PowHash",
        HeaderError::OutputDigest => "OutputDigest",
        HeaderError::Spec(_) => "Spec",
        HeaderError::Params(_) => "Params",
    }
}

fn branch_error_json(e: &BranchError) -> Value {
    match e {
        BranchError::Header { index, source, .. } => json!({"error": header_error_name(source), "index": index}),
        BranchError::NotContiguous(i) => json!({"error": "NotContiguous", "index": i}),
        BranchError::LowWork { .. } => json!({"error": "LowWork"}),
    }
}

fn header_of(v: &Value) -> R<Header> {
    let b = hex::decode(v.as_str().ok_or_else(|| bad("header: not a string"))?).map_err(|e| bad(e.to_string()))?;
    Header::decode(&b).map_err(header_error)
}

/// One step of a `chain_script`: a single header through §12.1/§12.2 (every
/// check, no work threshold), or a segment through §12.3; then pruning.
fn chain_step(chain: &mut HeaderChain, cache: &mut ModelCache, step: &Value) -> R<Value> {
    let now = u64_of(step, "now_ms")?;
    let (old_tip, old_height) = (chain.tip().id, chain.height());
    let outcome: Result<(), Value> = if let Some(h) = step.get("header") {
        let hd = header_of(h)?;
        chain.submit_cpu(&hd, now, cache).map(|_| ()).map_err(|e| json!({"error": header_error_name(&e)}))
    } else {
        let hs = field(step, "segment")?
            .as_array()
            .ok_or_else(|| bad("segment: not an array"))?
            .iter()
            .map(header_of)
            .collect::<R<Vec<Header>>>()?;
        (|| {
            let branch = chain.precheck_branch(&hs, now).map_err(|e| branch_error_json(&e))?;
            let mut digests = Vec::with_capacity(branch.len());
            for i in 0..branch.len() {
                let d = cache.output_digest(&branch.pow_input(i).expect("in range"));
                digests.push(d.map_err(|e| json!({"error": header_error_name(&e)}))?);
            }
            for v in branch.complete(&digests).map_err(|e| branch_error_json(&e))? {
                chain.insert(v).map_err(|e| json!({"error": header_error_name(&e)}))?;
            }
            Ok(())
        })()
    };
    if let Err(v) = outcome {
        return Ok(v);
    }
    let mut pruned: Vec<String> = chain.prune().iter().map(|(_, id)| hex::encode(id)).collect();
    pruned.sort();
    let reorg = chain.at_height(old_height).map(|e| e.id) != Some(old_tip);
    Ok(json!({"tip": hex::encode(chain.tip().id), "height": chain.height(), "reorg": reorg, "pruned": pruned}))
}

/// Answers one request.
pub fn handle(op: &str, input: &Value) -> Reply {
    match run(op, input) {
        Ok(v) => Reply::Output(v),
        Err(r) => r,
    }
}

fn run(op: &str, input: &Value) -> R<Value> {
    Ok(match op {
        "compact_decode" => {
            let t = CompactTarget(u32_of(input, "bits")?).to_target().map_err(target_error)?;
            json!({"target": u256_hex(t)})
        }
        "compact_encode" => json!({"bits": CompactTarget::from_target(u256_of(input, "target")?).0}),
        "work" => json!({"work": u256_hex(block_work(u256_of(input, "target")?))}),
        "meets_target" => {
            json!({"meets": hash_meets_target(&array_of::<32>(input, "hash")?, &u256_of(input, "target")?)})
        }
        "asert" => {
            let params = AsertParams {
                ideal_block_time_ms: u64_of(input, "ideal_block_time_ms")?,
                half_life_ms: u64_of(input, "half_life_ms")?,
                max_target: u256_of(input, "max_target")?,
            };
            let anchor = AsertAnchor {
                height: u64_of(input, "anchor_height")?,
                parent_timestamp_ms: u64_of(input, "anchor_parent_timestamp_ms")?,
                target: u256_of(input, "anchor_target")?,
            };
            let t =
                next_target(&params, &anchor, u64_of(input, "parent_height")?, u64_of(input, "parent_timestamp_ms")?);
            json!({"target": u256_hex(t), "bits": CompactTarget::from_target(t).0})
        }
        "next_bits" => {
            let params = chain_of(input)?;
            let parent = Header {
                height: u64_of(input, "parent_height")?,
                timestamp_ms: u64_of(input, "parent_timestamp_ms")?,
                ..genesis_header(&params)
            };
            json!({"bits": next_bits(&params, &parent).map_err(|e| bad(e.to_string()))?.0})
        }
        "genesis" => {
            let params = chain_of(input)?;
            let g = genesis_header(&params);
            json!({"header": hex::encode(g.encode()), "id": hex::encode(g.id())})
        }
        "mmr" => {
            let leaves = leaves_of(input)?;
            let mut peaks = MmrPeaks::new();
            let mut roots = vec![hex::encode(peaks.root())];
            for l in &leaves {
                peaks.push(*l);
                roots.push(hex::encode(peaks.root()));
            }
            json!({
                "roots": roots,
                "peaks": peaks.peaks().iter().map(node_json).collect::<Vec<_>>(),
                "total_work": u256_hex(peaks.total_work()),
            })
        }
        "mmr_proof" => {
            let mut mmr = Mmr::new();
            for l in leaves_of(input)? {
                mmr.push(l);
            }
            let p = mmr.proof(u64_of(input, "leaf_index")?, u64_of(input, "leaf_count")?).map_err(mmr_error)?;
            json!({"proof": hex::encode(p.encode())})
        }
        "mmr_verify" => {
            let proof = MmrProof::decode(&bytes_of(input, "proof")?).map_err(mmr_error)?;
            let leaf = node_of(field(input, "leaf")?)?;
            proof.verify(&array_of::<32>(input, "root")?, &leaf).map_err(mmr_error)?;
            json!({})
        }
        "header_decode" => header_json(&Header::decode(&bytes_of(input, "header")?).map_err(header_error)?),
        "body_decode" => {
            let b = Body::decode(&bytes_of(input, "body")?).map_err(body_error)?;
            json!({
                "height": b.coinbase.height,
                "miner_key": hex::encode(b.coinbase.miner_key),
                "reward": b.coinbase.reward,
                "body_root": hex::encode(b.root()),
            })
        }
        "body_check" => {
            let h = Header::decode(&bytes_of(input, "header")?).map_err(header_error)?;
            let b = Body::decode(&bytes_of(input, "body")?).map_err(body_error)?;
            check_body(&h, &b).map_err(body_error)?;
            json!({})
        }
        "reward" => json!({"reward": block_reward(u64_of(input, "height")?)}),
        "gelu_table" => json!({"table": i8_hex(&GELU_TABLE)}),
        "weights" => {
            let spec = spec_of(input)?;
            let layer = u32_of(input, "layer")?;
            let kind = *KINDS.get(u32_of(input, "kind")? as usize).ok_or_else(|| bad("kind out of range"))?;
            let count = u64_of(input, "count")? as usize;
            let m = field(input, "model")?;
            if m.get("prev_id").is_some() {
                // Streams are prefix-consistent: derive just the first `count` weights.
                let mut w = vec![0i8; count];
                derive_tensor(&array_of::<32>(m, "prev_id")?, &spec, layer, kind, &mut w);
                json!({"weights": i8_hex(&w)})
            } else {
                let model = model_of(input, &spec)?;
                let data = matrix_of(&model, layer, kind)?;
                json!({"weights": i8_hex(&data[..count.min(data.len())])})
            }
        }
        "tokens" => {
            let spec = spec_of(input)?;
            let mut t = vec![0u16; spec.seq_len as usize];
            input_tokens(&spec, &template_of(input)?, u64_of(input, "nonce")?, &mut t);
            json!({"tokens": t})
        }
        "puzzle" => {
            let spec = spec_of(input)?;
            let template = template_of(input)?;
            let nonce = u64_of(input, "nonce")?;
            let mut prev_id = [0u8; 32];
            prev_id.copy_from_slice(&template[12..44]);
            let model = Model::derive(&spec, &prev_id).map_err(|e| bad(e.to_string()))?;
            let mut t = vec![0u16; spec.seq_len as usize];
            input_tokens(&spec, &template, nonce, &mut t);
            let out = run_forward(&model, &t);
            let digest = output_digest(&out);
            json!({
                "tokens": t,
                "output": i8_hex(&out),
                "output_digest": hex::encode(digest),
                "pow_hash": hex::encode(pow_hash(&template, nonce, &digest)),
            })
        }
        "forward" => {
            let spec = spec_of(input)?;
            let model = model_of(input, &spec)?;
            let tokens: Vec<u16> = field(input, "tokens")?
                .as_array()
                .ok_or_else(|| bad("tokens: not an array"))?
                .iter()
                .map(|t| t.as_u64().filter(|&x| x < u64::from(spec.vocab)).map(|x| x as u16))
                .collect::<Option<_>>()
                .ok_or_else(|| bad("tokens: each must be < vocab"))?;
            if tokens.len() != spec.seq_len as usize {
                return Err(bad("tokens: need seq_len of them"));
            }
            let out = run_forward(&model, &tokens);
            json!({"output": i8_hex(&out), "output_digest": hex::encode(output_digest(&out))})
        }
        "chain_script" => {
            let mut chain = HeaderChain::new(params_of(input)?).map_err(|e| bad(e.to_string()))?;
            let mut cache = ModelCache::new();
            let mut out = Vec::new();
            for step in field(input, "steps")?.as_array().ok_or_else(|| bad("steps: not an array"))? {
                out.push(chain_step(&mut chain, &mut cache, step)?);
            }
            json!({"genesis_id": hex::encode(chain.at_height(0).expect("genesis").id), "steps": out})
        }
        "check_detached" => {
            let params = params_of(input)?;
            let hd = header_of(field(input, "header")?)?;
            let t = check_detached(&params, &hd, u64_of(input, "now_ms")?).map_err(|e| err(header_error_name(&e)))?;
            json!({"target": u256_hex(t)})
        }
        other => return Err(Reply::Unsupported(other.to_string())),
    })
}

fn run_forward(model: &Model, tokens: &[u16]) -> Vec<i8> {
    let mut out = vec![0i8; model.spec.d_model as usize];
    forward(model, tokens, &mut Scratch::new(model), &mut out);
    out
}

/// The protocol's reply line for request `id`.
pub fn reply_json(id: &Value, reply: Reply) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), id.clone());
    match reply {
        Reply::Output(v) => m.insert("output".into(), v),
        Reply::Error(e) => m.insert("error".into(), Value::String(e)),
        Reply::Unsupported(op) => m.insert("unsupported".into(), Value::String(op)),
        Reply::BadRequest(msg) => m.insert("bad_request".into(), Value::String(msg)),
    };
    Value::Object(m)
}
