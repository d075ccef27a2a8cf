//! The light client's window of the chain.
//!
//! A full node keeps every header ([`tpow_core::HeaderChain`]); a light client keeps
//! the newest few ([`LightChain`]) with the MMR peaks and total work of each, which is
//! all that validating a child needs. Every rule lives in tpow-core
//! ([`tpow_core::chain::check_child`], [`tpow_core::chain::check_detached`]); this
//! module only keeps the window.

use std::collections::VecDeque;

use tpow_core::chain::ChainEntry;
use tpow_core::{BlockId, ChainParams, ParamsError};

/// How many best-chain headers a [`LightChain`] keeps: reorgs deeper than this
/// trigger a fresh sync instead of a walk back.
pub const WINDOW: usize = 128;

/// The newest part of the best verified chain.
#[derive(Clone, Debug)]
pub struct LightChain {
    params: ChainParams,
    genesis: BlockId,
    /// Ascending, contiguous heights; the last one is the tip. Never empty.
    window: VecDeque<ChainEntry>,
}

impl LightChain {
    /// A chain holding only genesis; fails on unusable parameters.
    pub fn genesis(params: ChainParams) -> Result<Self, ParamsError> {
        let g = ChainEntry::genesis(&params)?;
        Ok(LightChain { params, genesis: g.id, window: VecDeque::from([g]) })
    }

    /// A chain from stored or freshly verified entries (ascending, linked). `None`
    /// if `entries` is empty or not linked, or the parameters are unusable.
    pub fn from_entries(params: ChainParams, entries: Vec<ChainEntry>) -> Option<Self> {
        if entries.is_empty() {
            return None;
        }
        let genesis = ChainEntry::genesis(&params).ok()?.id;
        for w in entries.windows(2) {
            if w[1].header.prev_id != w[0].id || w[1].header.height != w[0].header.height + 1 {
                return None;
            }
        }
        let mut window = VecDeque::from(entries);
        while window.len() > WINDOW {
            window.pop_front();
        }
        Some(LightChain { params, genesis, window })
    }

    /// The chain parameters.
    pub fn params(&self) -> &ChainParams {
        &self.params
    }

    /// The id of this chain's genesis header.
    pub fn genesis_id(&self) -> BlockId {
        self.genesis
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
    fn window_reorg() {
        let params = ChainParams::devnet();
        let g = ChainEntry::genesis(&params).expect("valid params");
        let a = mine(&params, &g, 4, 2_000);
        let mut lc = LightChain::from_entries(params.clone(), [vec![g.clone()], a.clone()].concat()).expect("linked");
        assert_eq!(lc.tip().header.height, 4);
        assert_eq!(lc.genesis_id(), g.id);
        let b = mine(&params, &a[1], 3, 1_000);
        let removed = lc.reorg(2, b.clone());
        assert_eq!(removed, vec![a[2].id, a[3].id]);
        assert_eq!(lc.tip().id, b[2].id);
        assert_eq!(lc.at_height(2).map(|e| e.id), Some(a[1].id));
        assert!(LightChain::from_entries(params, vec![a[0].clone(), a[2].clone()]).is_none());
    }
}
