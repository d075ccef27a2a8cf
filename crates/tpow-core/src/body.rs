//! The block body: today a single coinbase paying the miner, with room for
//! transactions later.
//!
//! The header commits to the body through `body_root` (docs/PROTOCOL.md §15).
//! Header validation (§12) never looks at the body, so light clients that only
//! follow headers need none of this; a full node checks the body against its
//! header with [`check_body`] before it stores the block.

use alloc::vec::Vec;

use crate::header::Header;

/// BLAKE3 `derive_key` context of [`Body::root`].
pub const CTX_BODY_ROOT: &str = "tpow 2026-11 block body";
/// The only body version this implementation accepts.
pub const BODY_VERSION: u8 = 1;
/// Encoded size of a version-1 body (coinbase only).
pub const BODY_LEN: usize = 1 + 8 + 32 + 8 + 4;
/// Upper bound on any body encoding a future version may use; network and
/// storage limits are sized from it.
pub const MAX_BODY_LEN: usize = 1 << 20;
/// Coinbase reward of the first blocks, in base units (10^8 per coin).
pub const INITIAL_REWARD: u64 = 50 * 100_000_000;
/// Blocks between two halvings of the reward.
pub const HALVING_INTERVAL: u64 = 1 << 20;

/// The reward a coinbase at `height` must pay.
pub fn block_reward(height: u64) -> u64 {
    let halvings = height / HALVING_INTERVAL;
    if halvings >= 64 {
        0
    } else {
        INITIAL_REWARD >> halvings
    }
}

/// The coinbase: newly created coins paid to the miner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Coinbase {
    /// Height of the block (makes every coinbase unique).
    pub height: u64,
    /// Who is paid: the header's `miner_key`.
    pub miner_key: [u8; 32],
    /// Amount in base units: [`block_reward`] of the height.
    pub reward: u64,
}

/// A block body.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Body {
    /// The coinbase.
    pub coinbase: Coinbase,
}

/// Why bytes are not a body, or a body does not belong to a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Wrong encoded length for the version.
    #[error("body must be {expected} bytes, got {got}")]
    Length {
        /// Length the version prescribes.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// Unknown body version (or empty input).
    #[error("unsupported body version {0}")]
    Version(u8),
    /// Version 1 carries no transactions.
    #[error("body declares {0} transactions; version 1 allows none")]
    Transactions(u32),
    /// `body_root` of the header differs from the body's root.
    #[error("body root does not match the header")]
    Root,
    /// Coinbase height differs from the header's.
    #[error("coinbase height {got} differs from header height {expected}")]
    Height {
        /// Header height.
        expected: u64,
        /// Coinbase height.
        got: u64,
    },
    /// Coinbase pays someone else than the header's miner key.
    #[error("coinbase does not pay the header's miner key")]
    MinerKey,
    /// Coinbase reward differs from the schedule.
    #[error("coinbase reward {got}, schedule says {expected}")]
    Reward {
        /// [`block_reward`] of the height.
        expected: u64,
        /// What the coinbase claims.
        got: u64,
    },
}

impl Body {
    /// The body a miner of `height` paying `miner_key` must produce.
    pub fn coinbase_only(height: u64, miner_key: [u8; 32]) -> Self {
        Body { coinbase: Coinbase { height, miner_key, reward: block_reward(height) } }
    }

    /// Canonical encoding: version, coinbase (height LE, key, reward LE), then the
    /// transaction count (u32 LE, zero in version 1).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(BODY_LEN);
        b.push(BODY_VERSION);
        b.extend_from_slice(&self.coinbase.height.to_le_bytes());
        b.extend_from_slice(&self.coinbase.miner_key);
        b.extend_from_slice(&self.coinbase.reward.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b
    }

    /// Parses a canonical encoding; anything else is rejected.
    pub fn decode(bytes: &[u8]) -> Result<Self, BodyError> {
        let Some(&version) = bytes.first() else {
            return Err(BodyError::Version(0));
        };
        if version != BODY_VERSION {
            return Err(BodyError::Version(version));
        }
        if bytes.len() != BODY_LEN {
            return Err(BodyError::Length { expected: BODY_LEN, got: bytes.len() });
        }
        let u64_at = |at: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(x)
        };
        let mut miner_key = [0u8; 32];
        miner_key.copy_from_slice(&bytes[9..41]);
        let mut count = [0u8; 4];
        count.copy_from_slice(&bytes[49..53]);
        let count = u32::from_le_bytes(count);
        if count != 0 {
            return Err(BodyError::Transactions(count));
        }
        Ok(Body { coinbase: Coinbase { height: u64_at(1), miner_key, reward: u64_at(41) } })
    }

    /// The commitment a header carries in `body_root`.
    pub fn root(&self) -> [u8; 32] {
        crate::hash::hash_parts(CTX_BODY_ROOT, &[&self.encode()])
    }
}

/// Checks that `body` is the body `header` commits to and that its coinbase
/// follows the rules (right height, pays the header's miner key, scheduled reward).
pub fn check_body(header: &Header, body: &Body) -> Result<(), BodyError> {
    if body.root() != header.body_root {
        return Err(BodyError::Root);
    }
    let cb = &body.coinbase;
    if cb.height != header.height {
        return Err(BodyError::Height { expected: header.height, got: cb.height });
    }
    if cb.miner_key != header.miner_key {
        return Err(BodyError::MinerKey);
    }
    let expected = block_reward(header.height);
    if cb.reward != expected {
        return Err(BodyError::Reward { expected, got: cb.reward });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::genesis_header;
    use crate::spec::ChainParams;

    fn header_for(body: &Body) -> Header {
        Header {
            height: body.coinbase.height,
            miner_key: body.coinbase.miner_key,
            body_root: body.root(),
            ..genesis_header(&ChainParams::devnet())
        }
    }

    #[test]
    fn roundtrip_and_length() {
        let b = Body::coinbase_only(7, [3; 32]);
        let e = b.encode();
        assert_eq!(e.len(), BODY_LEN);
        assert_eq!(Body::decode(&e), Ok(b));
    }

    #[test]
    fn decode_rejects_malformed() {
        let e = Body::coinbase_only(7, [3; 32]).encode();
        assert_eq!(Body::decode(&[]), Err(BodyError::Version(0)));
        assert_eq!(Body::decode(&e[..10]), Err(BodyError::Length { expected: BODY_LEN, got: 10 }));
        let mut v2 = e.clone();
        v2[0] = 2;
        assert_eq!(Body::decode(&v2), Err(BodyError::Version(2)));
        let mut txs = e.clone();
        txs[49] = 1;
        assert_eq!(Body::decode(&txs), Err(BodyError::Transactions(1)));
        let mut long = e;
        long.push(0);
        assert!(matches!(Body::decode(&long), Err(BodyError::Length { .. })));
    }

    #[test]
    fn check_against_header() {
        let b = Body::coinbase_only(9, [5; 32]);
        let h = header_for(&b);
        assert_eq!(check_body(&h, &b), Ok(()));
        let other = Body::coinbase_only(9, [6; 32]);
        assert_eq!(check_body(&h, &other), Err(BodyError::Root));
        let mut wrong_key = h;
        wrong_key.miner_key = [6; 32];
        assert_eq!(check_body(&wrong_key, &b), Err(BodyError::MinerKey));
        let mut rich = b.clone();
        rich.coinbase.reward += 1;
        assert!(matches!(check_body(&header_for(&rich), &rich), Err(BodyError::Reward { .. })));
        let mut wrong_height = header_for(&b);
        wrong_height.height = 10;
        assert!(matches!(check_body(&wrong_height, &b), Err(BodyError::Height { .. })));
    }

    #[test]
    fn reward_halves() {
        assert_eq!(block_reward(0), INITIAL_REWARD);
        assert_eq!(block_reward(HALVING_INTERVAL), INITIAL_REWARD / 2);
        assert_eq!(block_reward(u64::MAX), 0);
    }
}
