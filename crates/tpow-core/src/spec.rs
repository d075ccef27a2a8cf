//! Chain parameters: the shape of the puzzle model and the difficulty schedule.

use crate::asert::AsertParams;
use crate::target::CompactTarget;
use crate::U256;

/// Shape of the puzzle Transformer.
///
/// Every dimension is a power of two so that every division in the forward pass
/// is a shift; this is what lets WGSL reproduce it without 64-bit integers and
/// without relying on driver-specific integer division.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ModelSpec {
    /// Number of distinct input tokens.
    pub vocab: u32,
    /// Tokens per puzzle input.
    pub seq_len: u32,
    /// Width of the residual stream.
    pub d_model: u32,
    /// Attention heads; `d_model / n_heads` is the head width.
    pub n_heads: u32,
    /// Transformer blocks.
    pub n_layers: u32,
    /// Hidden width of the MLP.
    pub d_ffn: u32,
}

/// Why a [`ModelSpec`] cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A dimension is not a power of two or out of its allowed range.
    #[error("model dimension {name} = {value} is not a power of two in {min}..={max}")]
    BadDimension {
        /// Field name.
        name: &'static str,
        /// Offending value.
        value: u32,
        /// Smallest allowed value.
        min: u32,
        /// Largest allowed value.
        max: u32,
    },
    /// Layer count outside 1..=64.
    #[error("n_layers = {0} is outside 1..=64")]
    BadLayers(u32),
    /// Head width outside 4..=64.
    #[error("head width d_model / n_heads = {0} is outside 4..=64")]
    BadHeadDim(u32),
}

impl ModelSpec {
    /// Tiny model for a local devnet: a forward pass costs well under a millisecond.
    pub const DEVNET: ModelSpec =
        ModelSpec { vocab: 256, seq_len: 16, d_model: 64, n_heads: 4, n_layers: 2, d_ffn: 256 };

    /// Mainnet model: about 5.8 million parameters, about 0.27 G multiply-accumulates
    /// per forward pass.
    pub const MAINNET: ModelSpec =
        ModelSpec { vocab: 4096, seq_len: 64, d_model: 256, n_heads: 8, n_layers: 6, d_ffn: 1024 };

    /// Checks the bounds that keep every intermediate value inside i32 (see
    /// docs/PROTOCOL.md, "Bounds").
    pub fn validate(&self) -> Result<(), SpecError> {
        let dims = [
            ("vocab", self.vocab, 2, 65536),
            ("seq_len", self.seq_len, 1, 1024),
            ("d_model", self.d_model, 16, 1024),
            ("n_heads", self.n_heads, 1, 64),
            ("d_ffn", self.d_ffn, 16, 4096),
        ];
        for (name, value, min, max) in dims {
            if !value.is_power_of_two() || value < min || value > max {
                return Err(SpecError::BadDimension { name, value, min, max });
            }
        }
        if !(1..=64).contains(&self.n_layers) {
            return Err(SpecError::BadLayers(self.n_layers));
        }
        let hd = self.d_model / self.n_heads;
        if !(4..=64).contains(&hd) {
            return Err(SpecError::BadHeadDim(hd));
        }
        Ok(())
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        (self.d_model / self.n_heads) as usize
    }

    /// Number of weights (all int8).
    pub fn parameter_count(&self) -> u64 {
        let d = self.d_model as u64;
        let f = self.d_ffn as u64;
        (self.vocab as u64 + self.seq_len as u64) * d + self.n_layers as u64 * (4 * d * d + 2 * d * f)
    }

    /// Multiply-accumulates of one forward pass as the reference computes it
    /// (the last layer only needs the last position beyond its keys and values).
    pub fn macs_per_pass(&self) -> u64 {
        let (s, d, f) = (self.seq_len as u64, self.d_model as u64, self.d_ffn as u64);
        let l = self.n_layers as u64;
        let attn_pairs = s * (s + 1) / 2; // causal (query, key) pairs per layer
        let full = s * (4 * d * d + 2 * d * f) + 2 * attn_pairs * d;
        let last = 2 * s * d * d + (2 * d * d + 2 * d * f) + 2 * s * d;
        (l - 1) * full + last
    }

    /// Canonical 24-byte encoding: the six fields as u32 little-endian, in
    /// declaration order. It is mixed into the weight derivation so that chains
    /// with different shapes never share weights.
    pub fn to_bytes(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        for (i, v) in
            [self.vocab, self.seq_len, self.d_model, self.n_heads, self.n_layers, self.d_ffn].into_iter().enumerate()
        {
            b[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        b
    }
}

/// Everything that distinguishes one chain from another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainParams {
    /// Human name (`devnet`, `mainnet`).
    pub name: &'static str,
    /// Shape of the puzzle model.
    pub model: ModelSpec,
    /// Difficulty schedule.
    pub asert: AsertParams,
    /// Timestamp of the genesis header (unix milliseconds).
    pub genesis_timestamp_ms: u64,
    /// Target of the genesis header; the ASERT anchor target.
    pub genesis_bits: CompactTarget,
    /// How far a header's timestamp may run ahead of the verifier's clock.
    pub max_future_drift_ms: u64,
}

impl ChainParams {
    /// Local development chain: tiny model, 2-second blocks, fast-reacting difficulty.
    pub fn devnet() -> Self {
        ChainParams {
            name: "devnet",
            model: ModelSpec::DEVNET,
            asert: AsertParams { ideal_block_time_ms: 2_000, half_life_ms: 60_000, max_target: U256::from(1u8) << 252 },
            genesis_timestamp_ms: 1_764_000_000_000,
            // About 4,000 attempts per block at the start.
            genesis_bits: CompactTarget::from_target(U256::MAX / U256::from(4_000u32)),
            max_future_drift_ms: 15_000,
        }
    }

    /// Public chain: 60-second blocks, difficulty half-life of 12 hours.
    pub fn mainnet() -> Self {
        ChainParams {
            name: "mainnet",
            model: ModelSpec::MAINNET,
            asert: AsertParams {
                ideal_block_time_ms: 60_000,
                half_life_ms: 12 * 3_600_000,
                max_target: U256::from(1u8) << 240,
            },
            genesis_timestamp_ms: 1_764_000_000_000,
            genesis_bits: CompactTarget::from_target(U256::from(1u8) << 238),
            max_future_drift_ms: 2 * 3_600_000,
        }
    }

    /// Looks a preset up by name.
    pub fn by_name(name: &str) -> Option<Self> {
        match name {
            "devnet" => Some(Self::devnet()),
            "mainnet" => Some(Self::mainnet()),
            _ => None,
        }
    }
}
