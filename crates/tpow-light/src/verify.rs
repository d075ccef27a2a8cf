//! Header checks for a client that holds only a window of the chain.
//!
//! A full node keeps every header ([`tpow_core::HeaderChain`]); a light client keeps
//! the newest few ([`LightChain`]) with the MMR peaks and total work of each, which is
//! all that validating a child needs (`tpow_core::chain::check_against_parent`).
//! Headers without a known parent (FlyClient samples, the oldest of the last k)
//! get [`check_detached`].

use std::collections::VecDeque;

use tpow_core::chain::{check_against_parent, check_pow_hash, genesis_header, mmr_leaf, next_bits, ChainEntry};
use tpow_core::mmr::MmrPeaks;
use tpow_core::target::block_work;
use tpow_core::{BlockId, ChainParams, Header, HeaderError, U256};

/// How many best-chain headers a [`LightChain`] keeps: reorgs deeper than this
/// trigger a fresh sync instead of a walk back.
pub const WINDOW: usize = 128;

/// The entry of the genesis header.
pub fn genesis_entry(params: &ChainParams) -> ChainEntry {
    let header = genesis_header(params);
    let id = header.id();
    let target = params.genesis_bits.to_target().unwrap_or(params.asert.max_target);
    let mut mmr = MmrPeaks::new();
    mmr.push(mmr_leaf(id, &target));
    ChainEntry { header, id, target, total_work: block_work(target), mmr }
}

/// The entry of `header` on top of `parent` (whose checks `header` passed).
pub fn child_entry(parent: &ChainEntry, header: Header, target: U256) -> ChainEntry {
    let id = header.id();
    let mut mmr = parent.mmr.clone();
    mmr.push(mmr_leaf(id, &target));
    ChainEntry { header, id, target, total_work: parent.total_work.saturating_add(block_work(target)), mmr }
}

/// The entry of a header whose parent is not known but whose MMR (genesis up to
/// its parent, `parent_mmr`) was proven against its `mmr_root`.
pub fn detached_entry(parent_mmr: &MmrPeaks, header: Header, target: U256) -> ChainEntry {
    let id = header.id();
    let mut mmr = parent_mmr.clone();
    mmr.push(mmr_leaf(id, &target));
    ChainEntry { header, id, target, total_work: mmr.total_work(), mmr }
}

/// The cheap checks a header gets when its parent is not at hand: version (by
/// decoding), height above genesis, time not in the future, a target no easier
/// than ASERT allows for *any* parent older than the header, and the pow hash.
///
/// ASERT is monotone in the parent's timestamp and the parent is strictly older
/// than the child, so `ASERT(height − 1, timestamp − 1)` bounds the target from
/// above; `GetCompact` preserves the order. What this cannot see is a target
/// *harder* than required, which only costs the forger more work per header.
pub fn check_detached(params: &ChainParams, header: &Header, now_ms: u64) -> Result<U256, HeaderError> {
    if header.height == 0 {
        return Err(HeaderError::Height { expected: 1, got: 0 });
    }
    if header.timestamp_ms <= params.genesis_timestamp_ms {
        return Err(HeaderError::TimestampNotAfterParent {
            parent: params.genesis_timestamp_ms,
            got: header.timestamp_ms,
        });
    }
    if header.timestamp_ms > now_ms.saturating_add(params.max_future_drift_ms) {
        return Err(HeaderError::TimestampInFuture {
            got: header.timestamp_ms,
            now: now_ms,
            max_drift: params.max_future_drift_ms,
        });
    }
    let parent_like = Header { height: header.height - 1, timestamp_ms: header.timestamp_ms - 1, ..*header };
    let easiest = next_bits(params, &parent_like);
    let easiest_target =
        easiest.to_target().map_err(|_| HeaderError::Target { expected: easiest.0, got: header.bits.0 })?;
    let target = header.bits.to_target().map_err(|_| HeaderError::PowHash)?;
    if target > easiest_target {
        return Err(HeaderError::Target { expected: easiest.0, got: header.bits.0 });
    }
    check_pow_hash(header)
}

/// A child checked against its parent entry (every cheap check of PROTOCOL.md
/// §12.1 except "already known"), returning its entry.
pub fn check_child(
    params: &ChainParams,
    parent: &ChainEntry,
    header: &Header,
    now_ms: u64,
) -> Result<ChainEntry, HeaderError> {
    if header.prev_id != parent.id {
        return Err(HeaderError::UnknownParent);
    }
    let target = check_against_parent(params, parent, header, now_ms)?;
    Ok(child_entry(parent, *header, target))
}

/// The newest part of the best verified chain.
#[derive(Clone, Debug)]
pub struct LightChain {
    params: ChainParams,
    /// Ascending, contiguous heights; the last one is the tip. Never empty.
    window: VecDeque<ChainEntry>,
}

impl LightChain {
    /// A chain holding only genesis.
    pub fn genesis(params: ChainParams) -> Self {
        let g = genesis_entry(&params);
        LightChain { params, window: VecDeque::from([g]) }
    }

    /// A chain from stored or freshly verified entries (ascending, linked). `None`
    /// if `entries` is empty or not linked.
    pub fn from_entries(params: ChainParams, entries: Vec<ChainEntry>) -> Option<Self> {
        if entries.is_empty() {
            return None;
        }
        for w in entries.windows(2) {
            if w[1].header.prev_id != w[0].id || w[1].header.height != w[0].header.height + 1 {
                return None;
            }
        }
        let mut window = VecDeque::from(entries);
        while window.len() > WINDOW {
            window.pop_front();
        }
        Some(LightChain { params, window })
    }

    /// The chain parameters.
    pub fn params(&self) -> &ChainParams {
        &self.params
    }

    /// The best verified tip.
    pub fn tip(&self) -> &ChainEntry {
        self.window.back().expect("window is never empty")
    }

    /// The oldest header still kept.
    pub fn oldest(&self) -> &ChainEntry {
        self.window.front().expect("window is never empty")
    }

    /// A kept header by id.
    pub fn find(&self, id: &BlockId) -> Option<&ChainEntry> {
        self.window.iter().rev().find(|e| e.id == *id)
    }

    /// A kept header by height.
    pub fn at_height(&self, height: u64) -> Option<&ChainEntry> {
        let first = self.oldest().header.height;
        let i = usize::try_from(height.checked_sub(first)?).ok()?;
        self.window.get(i)
    }

    /// The kept headers, ascending.
    pub fn entries(&self) -> impl Iterator<Item = &ChainEntry> {
        self.window.iter()
    }

    /// Replaces everything above `fork_height` by `added` (ascending, the first a
    /// child of the entry at `fork_height`). Returns the ids that left the chain.
    pub fn reorg(&mut self, fork_height: u64, added: Vec<ChainEntry>) -> Vec<BlockId> {
        let mut removed = Vec::new();
        while self.window.len() > 1 && self.tip().header.height > fork_height {
            if let Some(e) = self.window.pop_back() {
                removed.push(e.id);
            }
        }
        removed.reverse();
        self.window.extend(added);
        while self.window.len() > WINDOW {
            self.window.pop_front();
        }
        removed
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::testkit::mine;

    #[test]
    fn detached_check_bounds_the_target() {
        let params = ChainParams::devnet();
        let g = genesis_entry(&params);
        let chain = mine(&params, &g, 3, 2_000);
        let now = chain[2].header.timestamp_ms;
        for e in &chain {
            assert_eq!(check_detached(&params, &e.header, now), Ok(e.target));
            assert_eq!(check_child(&params, &g, &chain[0].header, now).map(|c| c.id), Ok(chain[0].id));
        }
        let future = Header { timestamp_ms: now + 60_000, ..chain[1].header };
        assert!(matches!(check_detached(&params, &future, now), Err(HeaderError::TimestampInFuture { .. })));
        // Stamped on schedule, the header may not carry the easiest target: ASERT
        // would require the genesis target there.
        let on_schedule = params.genesis_timestamp_ms + 2_000 * chain[1].header.height;
        let easy = Header { timestamp_ms: on_schedule, ..chain[1].header };
        assert!(matches!(check_detached(&params, &easy, now), Err(HeaderError::Target { .. })));
        assert!(check_detached(&params, &genesis_entry(&params).header, now).is_err());
        assert_eq!(check_child(&params, &chain[0], &chain[2].header, now), Err(HeaderError::UnknownParent));
    }

    #[test]
    fn window_reorg() {
        let params = ChainParams::devnet();
        let g = genesis_entry(&params);
        let a = mine(&params, &g, 4, 2_000);
        let mut lc = LightChain::from_entries(params.clone(), [vec![g.clone()], a.clone()].concat()).expect("linked");
        assert_eq!(lc.tip().header.height, 4);
        let b = mine(&params, &a[1], 3, 1_000);
        let removed = lc.reorg(2, b.clone());
        assert_eq!(removed, vec![a[2].id, a[3].id]);
        assert_eq!(lc.tip().id, b[2].id);
        assert_eq!(lc.at_height(2).map(|e| e.id), Some(a[1].id));
        assert!(LightChain::from_entries(params, vec![a[0].clone(), a[2].clone()]).is_none());
    }
}
