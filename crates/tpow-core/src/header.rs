//! The block header and its canonical 192-byte encoding.

use crate::hash::{hash_parts, CTX_HEADER_ID};
use crate::target::{CompactTarget, TargetError};

/// Encoded size of a header.
pub const HEADER_LEN: usize = 192;
/// Bytes before the nonce: what the miner fixes before searching.
pub const TEMPLATE_LEN: usize = 152;
/// The only header version this implementation accepts.
pub const VERSION: u32 = 1;

/// A 32-byte block id (the domain-separated blake3 of the encoded header).
pub type BlockId = [u8; 32];

/// A block header. Field order is the encoding order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// Format version, [`VERSION`].
    pub version: u32,
    /// Distance from genesis (genesis is 0).
    pub height: u64,
    /// Id of the parent header; the puzzle model is derived from it.
    pub prev_id: BlockId,
    /// Unix time in milliseconds.
    pub timestamp_ms: u64,
    /// Compact target this header's pow hash must not exceed.
    pub bits: CompactTarget,
    /// Commitment to the block body (coinbase and, later, transactions).
    pub body_root: [u8; 32],
    /// Root of the MMR over all previous headers (FlyClient commitment).
    pub mmr_root: [u8; 32],
    /// Public key of the miner, who is paid by the coinbase.
    pub miner_key: [u8; 32],
    /// The miner's search variable.
    pub nonce: u64,
    /// Digest of the forward pass output for this nonce.
    pub output_digest: [u8; 32],
}

/// Why bytes are not a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not exactly [`HEADER_LEN`] bytes.
    #[error("header must be {HEADER_LEN} bytes, got {0}")]
    Length(usize),
    /// A version this implementation does not know.
    #[error("unsupported header version {0}")]
    Version(u32),
    /// The compact target is negative, zero or overflows 256 bits.
    #[error("invalid compact target: {0}")]
    Bits(#[from] TargetError),
}

fn take<const N: usize>(b: &[u8], at: &mut usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[*at..*at + N]);
    *at += N;
    out
}

impl Header {
    /// Canonical encoding: integers little-endian, fields in declaration order.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..TEMPLATE_LEN].copy_from_slice(&self.template());
        b[152..160].copy_from_slice(&self.nonce.to_le_bytes());
        b[160..192].copy_from_slice(&self.output_digest);
        b
    }

    /// The first [`TEMPLATE_LEN`] bytes of the encoding (everything but nonce and
    /// output digest).
    pub fn template(&self) -> [u8; TEMPLATE_LEN] {
        let mut b = [0u8; TEMPLATE_LEN];
        b[0..4].copy_from_slice(&self.version.to_le_bytes());
        b[4..12].copy_from_slice(&self.height.to_le_bytes());
        b[12..44].copy_from_slice(&self.prev_id);
        b[44..52].copy_from_slice(&self.timestamp_ms.to_le_bytes());
        b[52..56].copy_from_slice(&self.bits.0.to_le_bytes());
        b[56..88].copy_from_slice(&self.body_root);
        b[88..120].copy_from_slice(&self.mmr_root);
        b[120..152].copy_from_slice(&self.miner_key);
        b
    }

    /// Parses a canonical encoding. Every byte string of the right length with a
    /// known version and a valid compact target decodes; nothing else does.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() != HEADER_LEN {
            return Err(DecodeError::Length(bytes.len()));
        }
        let mut at = 0;
        let version = u32::from_le_bytes(take(bytes, &mut at));
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let height = u64::from_le_bytes(take(bytes, &mut at));
        let prev_id = take(bytes, &mut at);
        let timestamp_ms = u64::from_le_bytes(take(bytes, &mut at));
        let bits = CompactTarget(u32::from_le_bytes(take(bytes, &mut at)));
        bits.to_target()?;
        Ok(Header {
            version,
            height,
            prev_id,
            timestamp_ms,
            bits,
            body_root: take(bytes, &mut at),
            mmr_root: take(bytes, &mut at),
            miner_key: take(bytes, &mut at),
            nonce: u64::from_le_bytes(take(bytes, &mut at)),
            output_digest: take(bytes, &mut at),
        })
    }

    /// The block id.
    pub fn id(&self) -> BlockId {
        hash_parts(CTX_HEADER_ID, &[&self.encode()])
    }
}
