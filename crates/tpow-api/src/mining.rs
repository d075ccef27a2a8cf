//! Browser mining: `/api/work` (the template and the share target), share
//! submissions and `/api/miners`.

use serde::{Deserialize, Serialize};

use crate::chain::ModelShape;

/// `GET /api/work?miner=KEY`: a template to mine on the current tip.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Work {
    /// The whole 192-byte header, nonce and output digest zero, hex.
    pub header: String,
    /// Height of the block being mined.
    pub height: u64,
    /// Shape of the puzzle model.
    pub model: ModelShape,
    /// Its parent's id, hex: the model's weights derive from it.
    pub prev_id: String,
    /// What a submitted share's pow hash must meet, 64 hex digits.
    pub share_target: String,
    /// The block target, 64 hex digits.
    pub target: String,
    /// The first 152 header bytes (what the nonce search hashes), hex.
    pub template: String,
}

/// Body of `POST /api/work`: a solved template.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ShareSubmission {
    /// The 192-byte header with nonce and output digest filled in, hex.
    pub header: String,
}

/// Answer to an accepted share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ShareAnswer {
    /// Always true (a refused share is an error status).
    pub accepted: bool,
    /// Whether the share also met the block target and was stored as a block.
    pub block: bool,
    /// Blocks credited to the miner key at this node.
    pub blocks: u64,
    /// Shares credited to the miner key at this node.
    pub shares: u64,
}

/// One miner key's counts at a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MinerRow {
    /// Accepted blocks.
    pub blocks: u64,
    /// When the last share arrived (unix ms).
    pub last_share_ms: u64,
    /// Miner key, hex.
    pub miner: String,
    /// Accepted shares.
    pub shares: u64,
}

/// The node's own miner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct NodeMinerStats {
    /// Nonces tried.
    pub attempts: u64,
    /// Blocks found.
    pub blocks: u64,
}

/// `GET /api/miners`: shares and blocks per miner key (most shares first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Miners {
    /// Per miner key.
    pub miners: Vec<MinerRow>,
    /// The node's own miner; `null` when it does not mine.
    pub node: Option<NodeMinerStats>,
}
