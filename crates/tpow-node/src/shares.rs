//! Browser-miner shares (`POST /api/work`): what a share must prove, what it may
//! cost the node, and the per-key accounting.
//!
//! A share is a header on the current tip whose pow hash meets the *share target*
//! (easier than the block target). Its `output_digest` is only believable after a
//! forward pass, which costs the node far more than one BLAKE3 call costs the
//! sender, so:
//! - every cheap check runs first (tip, template fields, pow hash, duplicate);
//! - the share target is never easier than [`min_share_work`] attempts: a forger
//!   who grinds pow hashes with a made-up digest then spends more BLAKE3 time than
//!   the node spends on the pass that exposes it (numbers in SECURITY.md);
//! - passes are rationed per IP, per miner key and globally (one at a time), and
//!   the model is derived once per tip, not once per share;
//! - a source whose share fails its pass loses its budget for a while.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tpow_core::body::Body;
use tpow_core::forward::{Backend, PackedModel};
use tpow_core::puzzle::{pow_hash, Solver};
use tpow_core::target::hash_meets_target;
use tpow_core::{BlockId, Header, Model, ModelSpec, U256};

use crate::limits::{ip_key, Buckets, Rate};

/// Shares are this many times easier than a block (unless [`min_share_work`] is
/// higher).
pub const SHARE_FACTOR: u32 = 256;
/// Most distinct miner keys tracked (oldest dropped first).
const MAX_MINERS: usize = 10_000;
/// Forward passes per second one IP may make the node run for shares (burst 20).
pub const SHARE_PASSES_PER_IP: Rate = Rate { per_sec: 4.0, burst: 20.0 };
/// Forward passes per second one miner key may make the node run (burst 10).
pub const SHARE_PASSES_PER_KEY: Rate = Rate { per_sec: 2.0, burst: 10.0 };
/// How long an IP that sent a share with a false digest gets no passes.
pub const FORGERY_PENALTY: Duration = Duration::from_secs(600);

/// The least expected attempts a share must represent: one attempt per 2,500
/// multiply-accumulates of the node's pass. A pass at ~50 G MAC/s costs
/// `macs / 5·10¹⁰` s; grinding `macs / 2,500` pow hashes at ~0.2 µs each costs
/// `macs / 1.25·10¹⁰` s: four times more for the forger (devnet: 391 attempts,
/// mainnet: about 108,000).
pub fn min_share_work(spec: &ModelSpec) -> u64 {
    (spec.macs_per_pass() / 2_500).max(1)
}

/// The share target for a block target: `SHARE_FACTOR` times easier, but never
/// easier than [`min_share_work`] allows.
pub fn share_target(spec: &ModelSpec, block_target: U256) -> U256 {
    let floor = U256::MAX / U256::from(min_share_work(spec));
    block_target.saturating_mul(U256::from(SHARE_FACTOR)).min(floor).max(block_target)
}

/// Why a share was refused.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// Not on the current tip (the HTTP layer answers 409).
    #[error("stale share: not on the current tip; fetch new work")]
    Stale,
    /// Already counted (409).
    #[error("duplicate share")]
    Duplicate,
    /// The sender's budget of forward passes is spent (429).
    #[error("too many shares from this {0}; slow down")]
    RateLimited(&'static str),
    /// Another share is being verified (429).
    #[error("share verification busy; retry shortly")]
    Busy,
    /// Invalid data (400).
    #[error("{0}")]
    Invalid(String),
}

#[derive(Clone, Copy, Default, Serialize)]
struct MinerEntry {
    shares: u64,
    blocks: u64,
    last_share_ms: u64,
}

/// One miner key's counts (the `/api/miners` row).
pub use tpow_api::MinerRow;

struct Budgets {
    per_ip: Buckets<IpAddr>,
    per_key: Buckets<[u8; 32]>,
    penalised: HashMap<IpAddr, Instant>,
}

struct Accounts {
    by_key: HashMap<[u8; 32], MinerEntry>,
    /// Ids of shares already counted (a share counts once); cleared per tip.
    seen: HashSet<BlockId>,
    seen_tip: BlockId,
}

/// The share desk: budgets, the tip's model, and the accounts.
pub struct ShareDesk {
    spec: ModelSpec,
    budgets: Mutex<Budgets>,
    accounts: Mutex<Accounts>,
    model: Mutex<Option<Arc<PackedModel<'static>>>>,
    verifying: tokio::sync::Semaphore,
}

/// A share that passed every check.
pub struct Accepted {
    /// Whether it is a block (the caller submits it to the chain).
    pub block: bool,
}

impl ShareDesk {
    /// A desk for the chain's model shape.
    pub fn new(spec: ModelSpec) -> Self {
        ShareDesk {
            spec,
            budgets: Mutex::new(Budgets {
                per_ip: Buckets::new(SHARE_PASSES_PER_IP, 4_096),
                per_key: Buckets::new(SHARE_PASSES_PER_KEY, MAX_MINERS),
                penalised: HashMap::new(),
            }),
            accounts: Mutex::new(Accounts { by_key: HashMap::new(), seen: HashSet::new(), seen_tip: [0; 32] }),
            model: Mutex::new(None),
            verifying: tokio::sync::Semaphore::new(1),
        }
    }

    /// The share target for a block target.
    pub fn share_target(&self, block_target: U256) -> U256 {
        share_target(&self.spec, block_target)
    }

    /// Every check of a share, cheapest first. `tip` is the current tip id and
    /// height; `expected` the template and body this node hands out for the
    /// share's miner key.
    pub async fn check(
        &self,
        from: IpAddr,
        header: Header,
        tip: (BlockId, u64),
        expected: (&Header, &Body),
    ) -> Result<Accepted, ShareError> {
        if header.prev_id != tip.0 || header.height != tip.1 + 1 {
            return Err(ShareError::Stale);
        }
        // The template must be exactly what we hand out (apart from the
        // timestamp, which a browser may refresh).
        let (template, body) = expected;
        if header.bits != template.bits || header.mmr_root != template.mmr_root || header.body_root != body.root() {
            return Err(ShareError::Invalid(
                "header does not match the work template (bits, mmr_root or body_root)".into(),
            ));
        }
        let block_target = header.bits.to_target().map_err(|e| ShareError::Invalid(e.to_string()))?;
        let h = pow_hash(&header.template(), header.nonce, &header.output_digest);
        if !hash_meets_target(&h, &self.share_target(block_target)) {
            return Err(ShareError::Invalid("pow hash above the share target".into()));
        }
        let id = header.id();
        {
            let mut a = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
            if a.seen_tip != tip.0 {
                a.seen.clear();
                a.seen_tip = tip.0;
            }
            if a.seen.contains(&id) {
                return Err(ShareError::Duplicate);
            }
        }
        let ip = ip_key(from);
        {
            let now = Instant::now();
            let mut b = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
            b.penalised.retain(|_, until| *until > now);
            if b.penalised.contains_key(&ip) {
                return Err(ShareError::RateLimited("address (a share failed its forward pass)"));
            }
            if !b.per_ip.try_take(&ip, 1.0, now) {
                return Err(ShareError::RateLimited("address"));
            }
            if !b.per_key.try_take(&header.miner_key, 1.0, now) {
                return Err(ShareError::RateLimited("miner key"));
            }
        }
        let _permit = self.verifying.try_acquire().map_err(|_| ShareError::Busy)?;
        let model = self.model_for(&header.prev_id).await?;
        let template_bytes = header.template();
        let nonce = header.nonce;
        let digest = tokio::task::spawn_blocking(move || {
            Solver::with_packed(&model).attempt(&template_bytes, nonce).output_digest
        })
        .await
        .map_err(|e| ShareError::Invalid(format!("verification failed: {e}")))?;
        crate::metrics::get().verification_passes.inc();
        if digest != header.output_digest {
            let mut b = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
            if b.penalised.len() < 65_536 {
                b.penalised.insert(ip, Instant::now() + FORGERY_PENALTY);
            }
            return Err(ShareError::Invalid("output digest does not match the forward pass".into()));
        }
        self.accounts.lock().unwrap_or_else(|p| p.into_inner()).seen.insert(id);
        Ok(Accepted { block: hash_meets_target(&h, &block_target) })
    }

    /// The model of `prev_id`, derived and laid out for the CPU's kernels once per
    /// tip (off the async threads): on mainnet each costs about as much as a pass.
    async fn model_for(&self, prev_id: &BlockId) -> Result<Arc<PackedModel<'static>>, ShareError> {
        if let Some(m) = self.model.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            if m.model().prev_id == *prev_id {
                return Ok(m.clone());
            }
        }
        let (spec, seed) = (self.spec, *prev_id);
        let model = tokio::task::spawn_blocking(move || {
            Model::derive(&spec, &seed).map(|m| PackedModel::shared(Arc::new(m), Backend::detect()))
        })
        .await
        .map_err(|e| ShareError::Invalid(format!("model derivation failed: {e}")))?
        .map_err(|e| ShareError::Invalid(e.to_string()))?;
        let model = Arc::new(model);
        *self.model.lock().unwrap_or_else(|p| p.into_inner()) = Some(model.clone());
        Ok(model)
    }

    /// Credits an accepted share (and block) to its miner key; returns the key's
    /// (shares, blocks).
    pub fn credit(&self, key: [u8; 32], block: bool) -> (u64, u64) {
        let mut a = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        if !a.by_key.contains_key(&key) && a.by_key.len() >= MAX_MINERS {
            if let Some(oldest) = a.by_key.iter().min_by_key(|(_, e)| e.last_share_ms).map(|(k, _)| *k) {
                a.by_key.remove(&oldest);
            }
        }
        let e = a.by_key.entry(key).or_default();
        e.shares += 1;
        e.blocks += u64::from(block);
        e.last_share_ms = crate::time::now_ms();
        (e.shares, e.blocks)
    }

    /// Every tracked miner, most shares first.
    pub fn miners(&self) -> Vec<MinerRow> {
        let a = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<MinerRow> = a
            .by_key
            .iter()
            .map(|(k, e)| MinerRow {
                miner: hex::encode(k),
                shares: e.shares,
                blocks: e.blocks,
                last_share_ms: e.last_share_ms,
            })
            .collect();
        list.sort_by_key(|m| std::cmp::Reverse(m.shares));
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_target_has_a_floor() {
        let spec = ModelSpec::DEVNET;
        assert_eq!(min_share_work(&spec), spec.macs_per_pass() / 2_500);
        assert!(min_share_work(&ModelSpec::MAINNET) > 100_000);
        // An easy block: the floor wins.
        let easy = U256::MAX / U256::from(4_000u32);
        assert_eq!(share_target(&spec, easy), U256::MAX / U256::from(min_share_work(&spec)));
        // A hard block: 256 times easier than the block.
        let hard = U256::MAX / U256::from(100_000_000u64);
        assert_eq!(share_target(&spec, hard), hard * U256::from(SHARE_FACTOR));
        // Never harder than the block itself.
        let trivial = U256::MAX / U256::from(2u8);
        assert_eq!(share_target(&spec, trivial), trivial);
    }
}
