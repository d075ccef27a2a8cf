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

/// Which chain a set of parameters describes. Policy that differs between chains
/// asks this type (never the human name), so a new network is one new variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Network {
    /// A local development chain, started fresh by whoever runs it.
    Devnet,
    /// The public chain.
    Mainnet,
}

impl Network {
    /// Every network, for parsers and help texts.
    pub const ALL: [Network; 2] = [Network::Devnet, Network::Mainnet];

    /// The name used on the command line, in the API and in the p2p topic.
    pub fn name(self) -> &'static str {
        match self {
            Network::Devnet => "devnet",
            Network::Mainnet => "mainnet",
        }
    }

    /// Looks a network up by [`Network::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|n| n.name() == name)
    }

    /// Whether an operator may choose the genesis time. A devnet starts fresh on
    /// every machine, so its genesis must be "now"; a public chain has one genesis
    /// that every client must agree on, so nobody may move it.
    pub fn allows_genesis_override(self) -> bool {
        matches!(self, Network::Devnet)
    }
}

impl core::fmt::Display for Network {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a [`ChainParams`] cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// The model shape is outside the bounds of the forward pass.
    #[error("bad model spec: {0}")]
    Spec(#[from] SpecError),
    /// The genesis compact target does not decode.
    #[error("genesis bits {0:#010x} do not decode to a target")]
    GenesisBits(u32),
    /// The genesis target is easier than the chain's easiest allowed target.
    #[error("genesis target is above max_target")]
    GenesisAboveMax,
    /// A zero block time or half-life makes ASERT meaningless.
    #[error("ASERT block time and half-life must be positive")]
    Asert,
    /// The network does not let anyone move its genesis.
    #[error("the genesis time of {0} is fixed")]
    GenesisFixed(Network),
}

/// Everything that distinguishes one chain from another.
///
/// Build it with a preset ([`ChainParams::devnet`], [`ChainParams::mainnet`]) or,
/// for tests, a struct literal passed through [`ChainParams::validate`]; every
/// consumer ([`crate::HeaderChain::new`], the light client) validates once, so no
/// rule ever has to guess a fallback for a bad value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainParams {
    /// Which chain.
    pub network: Network,
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
            network: Network::Devnet,
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
            network: Network::Mainnet,
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

    /// The preset of a network.
    pub fn of(network: Network) -> Self {
        match network {
            Network::Devnet => Self::devnet(),
            Network::Mainnet => Self::mainnet(),
        }
    }

    /// Looks a preset up by name.
    pub fn by_name(name: &str) -> Option<Self> {
        Network::from_name(name).map(Self::of)
    }

    /// Human name (`devnet`, `mainnet`).
    pub fn name(&self) -> &'static str {
        self.network.name()
    }

    /// Checks every parameter a rule depends on.
    pub fn validate(&self) -> Result<(), ParamsError> {
        self.model.validate()?;
        if self.asert.ideal_block_time_ms == 0 || self.asert.half_life_ms == 0 {
            return Err(ParamsError::Asert);
        }
        let target = self.genesis_bits.to_target().map_err(|_| ParamsError::GenesisBits(self.genesis_bits.0))?;
        if target > self.asert.max_target {
            return Err(ParamsError::GenesisAboveMax);
        }
        Ok(())
    }

    /// The genesis target (decoded `genesis_bits`).
    pub fn genesis_target(&self) -> Result<U256, ParamsError> {
        self.genesis_bits.to_target().map_err(|_| ParamsError::GenesisBits(self.genesis_bits.0))
    }

    /// The same chain with its genesis at `timestamp_ms`, where the network
    /// allows it.
    pub fn with_genesis_time(mut self, timestamp_ms: u64) -> Result<Self, ParamsError> {
        if timestamp_ms != self.genesis_timestamp_ms && !self.network.allows_genesis_override() {
            return Err(ParamsError::GenesisFixed(self.network));
        }
        self.genesis_timestamp_ms = timestamp_ms;
        Ok(self)
    }
}
