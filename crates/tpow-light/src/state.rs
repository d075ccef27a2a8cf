//! The verified state a client persists (IndexedDB in the browser), so that a
//! reload resumes instead of re-syncing.
//!
//! Format (version 1, all integers little-endian unless noted):
//! `"TPWL" ‖ u8 version ‖ genesis id (32) ‖ u32 n ‖ total work of the first entry
//! (32, big-endian) ‖ u64 leaf count ‖ u8 p ‖ p × (hash 32 ‖ work 32 BE) ‖ n × header
//! (192)`: the newest `n` best-chain headers, and the MMR of the first one (its
//! parent's MMR plus itself). Everything else is recomputed on load, and the
//! headers must link and commit to the recomputed MMRs, so a damaged or edited
//! record is rejected rather than trusted. (The record is local data the client
//! wrote itself; the checks guard against corruption, not against the user.)

use tpow_core::chain::ChainEntry;
use tpow_core::header::HEADER_LEN;
use tpow_core::mmr::{MmrNode, MmrPeaks};
use tpow_core::{BlockId, ChainParams, Header, U256};

use crate::verify::{LightChain, WINDOW};

const MAGIC: &[u8; 4] = b"TPWL";
const VERSION: u8 = 1;

/// Why a stored record was not loaded (the client then syncs from scratch).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// Not a record of this format.
    #[error("stored state is not in the expected format")]
    Format,
    /// Stored for another chain.
    #[error("stored state belongs to another chain")]
    OtherChain,
    /// Headers or MMR that do not fit together.
    #[error("stored state is inconsistent")]
    Inconsistent,
}

/// Serialises the kept window of `chain`.
pub fn encode(chain: &LightChain) -> Vec<u8> {
    let entries: Vec<&ChainEntry> = chain.entries().collect();
    let first = entries[0];
    let mut out = Vec::with_capacity(128 + first.mmr.peaks().len() * 64 + entries.len() * HEADER_LEN);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&chain.genesis_id());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    out.extend_from_slice(&first.total_work.to_be_bytes::<32>());
    out.extend_from_slice(&first.mmr.leaf_count().to_le_bytes());
    out.push(first.mmr.peaks().len() as u8);
    for p in first.mmr.peaks() {
        out.extend_from_slice(&p.hash);
        out.extend_from_slice(&p.work.to_be_bytes::<32>());
    }
    for e in &entries {
        out.extend_from_slice(&e.header.encode());
    }
    out
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], StateError> {
        if self.0.len() < n {
            return Err(StateError::Format);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], StateError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
}

/// Rebuilds a chain from [`encode`]'s output.
pub fn decode(params: &ChainParams, bytes: &[u8]) -> Result<LightChain, StateError> {
    let mut r = Reader(bytes);
    if r.take(4)? != MAGIC || r.take(1)? != [VERSION] {
        return Err(StateError::Format);
    }
    let genesis: BlockId = r.array()?;
    if ChainEntry::genesis(params).map(|g| g.id) != Ok(genesis) {
        return Err(StateError::OtherChain);
    }
    let n = u32::from_le_bytes(r.array()?) as usize;
    if n == 0 || n > WINDOW {
        return Err(StateError::Format);
    }
    let total_work = U256::from_be_bytes(r.array::<32>()?);
    let leaf_count = u64::from_le_bytes(r.array()?);
    let p = r.take(1)?[0] as usize;
    let mut peaks = Vec::with_capacity(p);
    for _ in 0..p {
        let hash = r.array()?;
        peaks.push(MmrNode { hash, work: U256::from_be_bytes(r.array::<32>()?) });
    }
    let mmr = MmrPeaks::from_parts(leaf_count, peaks).map_err(|_| StateError::Inconsistent)?;
    let mut headers = Vec::with_capacity(n);
    for _ in 0..n {
        headers.push(Header::decode(r.take(HEADER_LEN)?).map_err(|_| StateError::Format)?);
    }
    if !r.0.is_empty() {
        return Err(StateError::Format);
    }
    let first = headers[0];
    let target = first.bits.to_target().map_err(|_| StateError::Inconsistent)?;
    let id = first.id();
    // The first entry's MMR must end with its own leaf and hold height + 1 leaves,
    // and its total work must be the MMR's.
    if leaf_count != first.height + 1 || mmr.total_work() != total_work {
        return Err(StateError::Inconsistent);
    }
    let mut entries = vec![ChainEntry { header: first, id, target, total_work, mmr }];
    for h in &headers[1..] {
        let parent = entries.last().ok_or(StateError::Inconsistent)?;
        if h.prev_id != parent.id || h.height != parent.header.height + 1 || h.mmr_root != parent.mmr.root() {
            return Err(StateError::Inconsistent);
        }
        let t = h.bits.to_target().map_err(|_| StateError::Inconsistent)?;
        let child = parent.child(*h, t);
        entries.push(child);
    }
    LightChain::from_entries(params.clone(), entries).ok_or(StateError::Inconsistent)
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_damage() {
        let params = ChainParams::devnet();
        let g = ChainEntry::genesis(&params).expect("valid params");
        let mined = crate::testkit::mine(&params, &g, 3, 2_000);
        let chain = LightChain::from_entries(params.clone(), [vec![g], mined].concat()).expect("linked");
        let bytes = encode(&chain);
        let back = decode(&params, &bytes).expect("decodes");
        assert_eq!(back.tip(), chain.tip());
        assert_eq!(back.entries().count(), 4);
        assert_eq!(decode(&params, &bytes[..bytes.len() - 1]).err(), Some(StateError::Format));
        let mut flipped = bytes.clone();
        let last = flipped.len() - 100;
        flipped[last] ^= 1;
        assert!(decode(&params, &flipped).is_err());
        assert_eq!(decode(&ChainParams::mainnet(), &bytes).err(), Some(StateError::OtherChain));
    }
}
