//! The chain endpoints: `/api/health`, `/api/chain`, `/api/tip` (and every
//! `/api/ws` message), `/api/headers?format=json`, `/api/mmr-proof`, `/api/flyclient`.

use serde::{Deserialize, Serialize};
use tpow_core::header::Header;
use tpow_core::mmr::MmrProof;
use tpow_core::{BlockId, ChainParams, ModelSpec, U256};

use crate::{hex32, target_hex};

/// `GET /api/health`: liveness and a one-line summary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Health {
    /// Chain name (`devnet`, `mainnet`).
    pub chain: String,
    /// Height of the best tip.
    pub height: u64,
    /// Connected peers.
    pub peers: u64,
    /// `ok` while the node runs.
    pub status: String,
}

/// The shape of the puzzle model as the API writes it (`/api/chain`, `/api/work`):
/// the wire form of [`tpow_core::ModelSpec`], which converts both ways.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ModelShape {
    /// MLP width.
    pub d_ffn: u32,
    /// Residual width.
    pub d_model: u32,
    /// Attention heads.
    pub n_heads: u32,
    /// Transformer blocks.
    pub n_layers: u32,
    /// Tokens per puzzle input.
    pub seq_len: u32,
    /// Distinct tokens.
    pub vocab: u32,
}

impl From<ModelSpec> for ModelShape {
    fn from(m: ModelSpec) -> Self {
        ModelShape {
            d_ffn: m.d_ffn,
            d_model: m.d_model,
            n_heads: m.n_heads,
            n_layers: m.n_layers,
            seq_len: m.seq_len,
            vocab: m.vocab,
        }
    }
}

impl From<ModelShape> for ModelSpec {
    fn from(m: ModelShape) -> Self {
        ModelSpec {
            vocab: m.vocab,
            seq_len: m.seq_len,
            d_model: m.d_model,
            n_heads: m.n_heads,
            n_layers: m.n_layers,
            d_ffn: m.d_ffn,
        }
    }
}

/// The ASERT parameters of `/api/chain`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AsertInfo {
    /// Time off schedule that doubles or halves the target (ms).
    pub half_life_ms: u64,
    /// Intended block spacing (ms).
    pub ideal_block_time_ms: u64,
    /// Easiest target allowed, 64 hex digits.
    pub max_target: String,
}

/// `GET /api/chain`: which chain the node follows. A client compares `genesis_id`
/// with its own and refuses a node of another chain (or another devnet) before it
/// uses anything that node serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ChainInfo {
    /// Difficulty adjustment.
    pub asert: AsertInfo,
    /// Compact target (nBits) of genesis.
    pub genesis_bits: u32,
    /// The canonical 192-byte genesis header, hex.
    pub genesis_header: String,
    /// Id of the genesis header, hex.
    pub genesis_id: String,
    /// Genesis time (a devnet's is chosen when it starts).
    pub genesis_timestamp_ms: u64,
    /// How far in the future a header's time may be (ms).
    pub max_future_drift_ms: u64,
    /// Shape of the puzzle model.
    pub model: ModelShape,
    /// Chain name (`devnet`, `mainnet`).
    pub name: String,
}

impl ChainInfo {
    /// What a node following `params` serves.
    pub fn of(params: &ChainParams) -> Self {
        let g = tpow_core::chain::genesis_header(params);
        ChainInfo {
            asert: AsertInfo {
                half_life_ms: params.asert.half_life_ms,
                ideal_block_time_ms: params.asert.ideal_block_time_ms,
                max_target: target_hex(&params.asert.max_target),
            },
            genesis_bits: params.genesis_bits.0,
            genesis_header: hex::encode(g.encode()),
            genesis_id: hex32(&g.id()),
            genesis_timestamp_ms: params.genesis_timestamp_ms,
            max_future_drift_ms: params.max_future_drift_ms,
            model: params.model.into(),
            name: params.name().to_string(),
        }
    }
}

/// `GET /api/tip` and every `/api/ws` text message: the best tip, announced only
/// after it is committed. Claims only, to a light client: it verifies before it
/// believes any of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Tip {
    /// Height.
    pub height: u64,
    /// Block id, hex.
    pub id: String,
    /// Target of the tip, 64 hex digits.
    pub target: String,
    /// Timestamp of the tip (unix ms).
    pub timestamp_ms: u64,
    /// Cumulative work up to and including the tip, decimal.
    pub total_work: String,
}

impl Tip {
    /// A tip message from its parts.
    pub fn new(height: u64, id: &BlockId, total_work: &U256, target: &U256, timestamp_ms: u64) -> Self {
        Tip { height, id: hex32(id), target: target_hex(target), timestamp_ms, total_work: total_work.to_string() }
    }
}

/// One header in `/api/headers?format=json`: its fields decoded, plus its
/// canonical encoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct HeaderJson {
    /// Compact target (nBits).
    pub bits: u32,
    /// Commitment to the block body, hex.
    pub body_root: String,
    /// Height.
    pub height: u64,
    /// The canonical 192-byte encoding, hex.
    pub hex: String,
    /// Block id, hex.
    pub id: String,
    /// Key the coinbase pays, hex.
    pub miner_key: String,
    /// MMR root over all earlier headers, hex.
    pub mmr_root: String,
    /// Nonce, decimal (a u64: a string so JavaScript keeps every bit).
    pub nonce: String,
    /// Digest of the winning forward pass, hex.
    pub output_digest: String,
    /// Parent id, hex.
    pub prev_id: String,
    /// Timestamp (unix ms).
    pub timestamp_ms: u64,
}

impl From<&Header> for HeaderJson {
    fn from(h: &Header) -> Self {
        HeaderJson {
            bits: h.bits.0,
            body_root: hex32(&h.body_root),
            height: h.height,
            hex: hex::encode(h.encode()),
            id: hex32(&h.id()),
            miner_key: hex32(&h.miner_key),
            mmr_root: hex32(&h.mmr_root),
            nonce: h.nonce.to_string(),
            output_digest: hex32(&h.output_digest),
            prev_id: hex32(&h.prev_id),
            timestamp_ms: h.timestamp_ms,
        }
    }
}

/// `GET /api/headers?format=json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Headers {
    /// Best-chain headers, ascending.
    pub headers: Vec<HeaderJson>,
}

/// `GET /api/mmr-proof`: header `height` is leaf `height` of the MMR committed by
/// the header at `tip`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MmrProofAnswer {
    /// The proven header (192 bytes), hex.
    pub header: String,
    /// Its height.
    pub height: u64,
    /// Leaves the MMR holds (`tip`).
    pub leaf_count: u64,
    /// `tip_header.mmr_root`, hex.
    pub mmr_root: String,
    /// `MmrProof::encode`, hex.
    pub proof: String,
    /// Height of the committing header.
    pub tip: u64,
    /// The committing header (192 bytes), hex.
    pub tip_header: String,
}

impl MmrProofAnswer {
    /// The answer for `leaf` proven against `tip_header`'s `mmr_root`.
    pub fn new(leaf: &Header, tip: u64, tip_header: &Header, proof: &MmrProof) -> Self {
        MmrProofAnswer {
            header: hex::encode(leaf.encode()),
            height: leaf.height,
            leaf_count: proof.leaf_count,
            mmr_root: hex32(&tip_header.mmr_root),
            proof: hex::encode(proof.encode()),
            tip,
            tip_header: hex::encode(tip_header.encode()),
        }
    }
}

/// One sampled header of a FlyClient answer, with its cumulative work and its MMR
/// proof against the answer's `mmr_root`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FlySample {
    /// The header (192 bytes), hex.
    pub header: String,
    /// Its height.
    pub height: u64,
    /// `MmrProof::encode`, hex.
    pub proof: String,
    /// Work of heights `0..=height`, decimal.
    pub total_work: String,
}

impl FlySample {
    /// A sample from its parts.
    pub fn new(header: &Header, total_work: &U256, proof: &MmrProof) -> Self {
        FlySample {
            header: hex::encode(header.encode()),
            height: header.height,
            proof: hex::encode(proof.encode()),
            total_work: total_work.to_string(),
        }
    }
}

/// `GET /api/flyclient`: the last `L` headers and the headers hit by the draws of
/// the client's seed (docs/PROTOCOL.md §16).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FlyAnswer {
    /// Draws made (the client recomputes this number).
    pub draws: u64,
    /// Headers `tip-L+1 ..= tip` (192 bytes each), hex, ascending.
    pub last: Vec<String>,
    /// `mmr_root` of the tip header (covers leaves `0..tip`), hex.
    pub mmr_root: String,
    /// The distinct headers below the last `L` that the draws hit.
    pub sampled: Vec<FlySample>,
    /// Tip height.
    pub tip: u64,
    /// Tip id, hex.
    pub tip_id: String,
    /// Work of the whole chain up to the tip, decimal.
    pub total_work: String,
}

impl FlyAnswer {
    /// An answer for `tip` (its header and cumulative work).
    pub fn new(
        tip: (&Header, &U256),
        draws: u64,
        last: &[Header],
        sampled: impl IntoIterator<Item = FlySample>,
    ) -> Self {
        FlyAnswer {
            draws,
            last: last.iter().map(|h| hex::encode(h.encode())).collect(),
            mmr_root: hex32(&tip.0.mmr_root),
            sampled: sampled.into_iter().collect(),
            tip: tip.0.height,
            tip_id: hex32(&tip.0.id()),
            total_work: tip.1.to_string(),
        }
    }
}
