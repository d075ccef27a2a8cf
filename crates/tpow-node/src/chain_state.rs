//! The node's chain state: the sans-io [`HeaderChain`] of tpow-core, the full
//! [`Mmr`] of the best chain (for proofs), and the [`Store`] that makes both
//! durable. Synchronous and single-owner: the chain service task owns it, so no
//! lock guards consensus state.
//!
//! Validation of a batch of blocks is split into three steps so that the costly
//! middle one can run on other threads:
//! 1. [`ChainState::prepare`]: every cheap check of every block (body commitment,
//!    and tpow-core's [`HeaderChain::precheck_branch`]: linkage, height, time, ASERT
//!    bits, MMR root and pow hash of each header, and the branch's claimed work
//!    against the best chain's). A forged batch costs the sender hash work before
//!    it costs us a forward pass, and a branch that could never win costs none.
//! 2. [`verify_branch`]: the forward passes, on all cores, outside the service,
//!    in a random order and in chunks; the first wrong digest ends the batch.
//! 3. [`ChainState::apply`]: insertion, fork choice, pruning of side branches that
//!    fell out of the margin, one database commit, and only then the answer.

use std::collections::{HashSet, VecDeque};

use tpow_core::body::{check_body, Body, BodyError};
use tpow_core::chain::{mmr_leaf, BranchError, PendingBranch};
use tpow_core::mmr::{Mmr, MmrError, MmrProof};
use tpow_core::{BlockId, ChainParams, Header, HeaderChain, HeaderError, InsertOutcome, ModelCache, U256};

use crate::store::{BestUpdate, NewBlock, Store, StoreError};

/// Most blocks accepted in one submission (one sync response).
pub const MAX_BATCH: usize = 2_000;
/// How many ids of blocks that failed their forward pass are remembered, so the
/// same forgery never costs a second forward pass.
const KNOWN_INVALID_CAP: usize = 4_096;

/// Why a block (or batch) was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// A consensus rule of the header failed.
    #[error("header {height}: {source}")]
    Header {
        /// Height the header claims.
        height: u64,
        /// The rule.
        #[source]
        source: HeaderError,
    },
    /// The body does not match its header or is malformed.
    #[error("body of header {height}: {source}")]
    Body {
        /// Height the header claims.
        height: u64,
        /// The rule.
        #[source]
        source: BodyError,
    },
    /// The blocks of a batch do not form a chain.
    #[error("batch is not a contiguous chain at index {0}")]
    NotContiguous(usize),
    /// The branch claims too little work to ever become best: no forward pass is
    /// spent on it and it is not stored (PROTOCOL.md §12.3). Not a fault: an
    /// honest peer on a lighter fork sends such batches too.
    #[error("branch claims too little work to be verified ({0})")]
    LowWork(BranchError),
    /// The block already failed a forward pass here.
    #[error("block already known to be invalid")]
    KnownInvalid,
    /// More than [`MAX_BATCH`] blocks.
    #[error("batch of {0} blocks exceeds the maximum {MAX_BATCH}")]
    TooMany(usize),
    /// The database failed: the node cannot continue safely.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// What the network layer should do about the sender of a rejected block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The data is provably invalid: disconnect and ban the sender.
    Ban,
    /// The parent is unknown: sync from the sender.
    NeedParent,
    /// Not the sender's fault (already known, our clock, our disk): ignore.
    Ignore,
}

impl BlockError {
    /// How to treat the sender.
    pub fn verdict(&self) -> Verdict {
        match self {
            BlockError::Header { source, .. } => match source {
                HeaderError::UnknownParent => Verdict::NeedParent,
                HeaderError::AlreadyKnown
                | HeaderError::TimestampInFuture { .. }
                | HeaderError::Spec(_)
                | HeaderError::Params(_) => Verdict::Ignore,
                _ => Verdict::Ban,
            },
            BlockError::Body { .. }
            | BlockError::NotContiguous(_)
            | BlockError::KnownInvalid
            | BlockError::TooMany(_) => Verdict::Ban,
            BlockError::Store(_) | BlockError::LowWork(_) => Verdict::Ignore,
        }
    }
}

/// Why a query failed (an HTTP 4xx).
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// No best-chain header at that height.
    #[error("no header at height {0} on the best chain")]
    UnknownHeight(u64),
    /// The MMR cannot prove this pair.
    #[error("{0}")]
    Mmr(#[from] MmrError),
    /// A proof needs `height < tip`.
    #[error("height {height} must be below tip {tip}: header T commits to headers 0..T")]
    NotBelowTip {
        /// Proven height.
        height: u64,
        /// Committing height.
        tip: u64,
    },
}

impl From<BranchError> for BlockError {
    fn from(e: BranchError) -> Self {
        match e {
            BranchError::Header { height, source, .. } => BlockError::Header { height, source },
            BranchError::NotContiguous(i) => BlockError::NotContiguous(i),
            low @ BranchError::LowWork { .. } => BlockError::LowWork(low),
        }
    }
}

/// A batch that passed the cheap checks.
#[derive(Debug)]
pub struct Prepared {
    /// The headers not yet known, awaiting their forward passes.
    pub branch: PendingBranch,
    /// Their bodies, in the same order.
    pub bodies: Vec<Body>,
}

impl Prepared {
    /// Whether every block was already known.
    pub fn is_empty(&self) -> bool {
        self.branch.is_empty()
    }
}

/// What [`ChainState::apply`] did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Blocks stored.
    pub accepted: usize,
    /// Whether the best tip moved.
    pub new_tip: bool,
    /// Deepest reorg: blocks removed from the best chain.
    pub reorged: usize,
    /// Side-branch blocks pruned (from memory and disk) after this batch.
    pub pruned: usize,
    /// Why a block was not inserted (the rest of the batch was dropped).
    pub error: Option<BlockError>,
}

/// The best tip, as published to the miner, the API and WebSocket clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TipInfo {
    /// Height.
    pub height: u64,
    /// Block id.
    pub id: BlockId,
    /// Cumulative work of the best chain.
    pub total_work: U256,
    /// Expanded target of the tip header.
    pub target: U256,
    /// Tip timestamp (unix ms).
    pub timestamp_ms: u64,
}

/// Headers, MMR and store of one node.
pub struct ChainState {
    chain: HeaderChain,
    mmr: Mmr,
    store: Store,
    next_seq: u64,
    known_invalid: HashSet<BlockId>,
    known_invalid_order: VecDeque<BlockId>,
}

impl ChainState {
    /// Rebuilds the header chain and MMR from `store`.
    ///
    /// Stored headers were fully verified when first accepted, so the rebuild runs
    /// the cheap checks again (a damaged file shows up as a failed link) but takes
    /// the stored output digests as given instead of repeating every forward pass.
    pub fn rebuild(params: ChainParams, store: Store) -> Result<Self, OpenError> {
        let mut chain = HeaderChain::new(params)?;
        let stored = store.load_headers()?;
        let mut next_seq = 1;
        for (seq, header) in &stored {
            // `u64::MAX` as "now": the future-timestamp check passed when it mattered.
            let pending = chain
                .precheck(header, u64::MAX)
                .map_err(|source| OpenError::Replay { height: header.height, source })?;
            let digest = header.output_digest;
            let verified =
                pending.complete(&digest).map_err(|source| OpenError::Replay { height: header.height, source })?;
            chain.insert(verified).map_err(|source| OpenError::Replay { height: header.height, source })?;
            next_seq = next_seq.max(seq + 1);
        }
        // Side branches that fell out of the margin while the node was down (or
        // were stored by an older version that kept every branch).
        let pruned = chain.prune();
        if !pruned.is_empty() {
            store.commit(&[], None, &pruned)?;
        }
        let mut mmr = Mmr::new();
        let mut best = Vec::with_capacity(chain.height() as usize + 1);
        for h in 0..=chain.height() {
            let e = chain.at_height(h).ok_or(OpenError::Inconsistent)?;
            mmr.push(mmr_leaf(e.id, &e.target));
            best.push(e.id);
        }
        let state = ChainState {
            chain,
            mmr,
            store,
            next_seq,
            known_invalid: HashSet::new(),
            known_invalid_order: VecDeque::new(),
        };
        // The index is derived data: rewrite it if it disagrees (an old file, or a
        // crash between versions of this software).
        let stored_best = state.store.best_ids()?;
        if stored_best != best {
            let old_height = (stored_best.len() as u64).saturating_sub(1);
            state.store.commit(&[], Some(BestUpdate { from: 0, ids: &best, old_height }), &[])?;
        }
        Ok(state)
    }

    /// Chain parameters.
    pub fn params(&self) -> &ChainParams {
        self.chain.params()
    }

    /// The current best tip.
    pub fn tip(&self) -> TipInfo {
        let t = self.chain.tip();
        TipInfo {
            height: t.header.height,
            id: t.id,
            total_work: t.total_work,
            target: t.target,
            timestamp_ms: t.header.timestamp_ms,
        }
    }

    /// Step 1: the cheap checks of a batch (see the module docs).
    pub fn prepare(&self, blocks: Vec<(Header, Body)>, now_ms: u64) -> Result<Prepared, BlockError> {
        if blocks.len() > MAX_BATCH {
            return Err(BlockError::TooMany(blocks.len()));
        }
        if blocks.iter().any(|(h, _)| self.known_invalid.contains(&h.id())) {
            return Err(BlockError::KnownInvalid);
        }
        let headers: Vec<Header> = blocks.iter().map(|(h, _)| *h).collect();
        let branch = self.chain.precheck_branch(&headers, now_ms)?;
        let bodies: Vec<Body> = blocks.into_iter().skip(branch.skipped()).map(|(_, b)| b).collect();
        for (header, body) in branch.headers().zip(&bodies) {
            check_body(header, body).map_err(|source| BlockError::Body { height: header.height, source })?;
        }
        Ok(Prepared { branch, bodies })
    }

    /// Step 3: insert the blocks whose forward passes gave `digests` (in header
    /// order), prune, commit, and report. A wrong digest rejects the whole batch.
    pub fn apply(&mut self, prepared: Prepared, digests: &[[u8; 32]]) -> Applied {
        let mut out = Applied::default();
        let old_height = self.chain.height();
        let mut lowest_fork: Option<u64> = None;
        let mut new_rows: Vec<(u64, Header, BlockId, Vec<u8>)> = Vec::new();
        let verified = match prepared.branch.complete(digests) {
            Ok(v) => v,
            Err(e) => {
                out.error = Some(self.note_failed(e, &prepared));
                return out;
            }
        };
        for (verified, body) in verified.into_iter().zip(&prepared.bodies) {
            let header = *verified.header();
            let id = verified.id();
            match self.chain.insert(verified) {
                Ok(InsertOutcome::NewTip { fork_height, removed, added }) => {
                    out.new_tip = true;
                    out.reorged = out.reorged.max(removed.len());
                    lowest_fork = Some(lowest_fork.map_or(fork_height, |f: u64| f.min(fork_height)));
                    self.mmr.truncate(fork_height + 1);
                    for a in &added {
                        if let Some(e) = self.chain.get(a) {
                            self.mmr.push(mmr_leaf(*a, &e.target));
                        }
                    }
                }
                Ok(InsertOutcome::SideChain) => {}
                // Inserted meanwhile by another batch: nothing to do.
                Err(HeaderError::AlreadyKnown) => continue,
                Err(source) => {
                    out.error = Some(BlockError::Header { height: header.height, source });
                    break;
                }
            }
            new_rows.push((self.next_seq, header, id, body.encode()));
            self.next_seq += 1;
            out.accepted += 1;
        }
        let pruned = self.chain.prune();
        out.pruned = pruned.len();
        // A block of this batch that was pruned at once is simply not written.
        new_rows.retain(|r| self.chain.get(&r.2).is_some());
        if new_rows.is_empty() && pruned.is_empty() {
            return out;
        }
        let blocks: Vec<NewBlock<'_>> =
            new_rows.iter().map(|(seq, header, id, body)| NewBlock { seq: *seq, header, id: *id, body }).collect();
        let best_ids: Vec<BlockId>;
        let best = match lowest_fork {
            Some(fork) => {
                best_ids =
                    ((fork + 1)..=self.chain.height()).filter_map(|h| self.chain.at_height(h).map(|e| e.id)).collect();
                Some(BestUpdate { from: fork + 1, ids: &best_ids, old_height })
            }
            None => None,
        };
        if let Err(e) = self.store.commit(&blocks, best, &pruned) {
            out.error = Some(BlockError::Store(e));
            out.accepted = 0;
            out.new_tip = false;
        }
        out
    }

    /// Records a batch whose forward passes failed: the header with the wrong
    /// digest is remembered so the same forgery never costs a second pass.
    pub fn note_failed(&mut self, e: BranchError, prepared: &Prepared) -> BlockError {
        if let BranchError::Header { index, source: HeaderError::OutputDigest, .. } = &e {
            if let Some(h) = prepared.branch.headers().nth(index.saturating_sub(prepared.branch.skipped())) {
                self.remember_invalid(h.id());
            }
        }
        e.into()
    }

    fn remember_invalid(&mut self, id: BlockId) {
        if self.known_invalid.insert(id) {
            self.known_invalid_order.push_back(id);
            if self.known_invalid_order.len() > KNOWN_INVALID_CAP {
                if let Some(old) = self.known_invalid_order.pop_front() {
                    self.known_invalid.remove(&old);
                }
            }
        }
    }

    /// Best-chain headers at heights `from..from + count` (fewer at the tip).
    pub fn headers(&self, from: u64, count: u64) -> Vec<Header> {
        (from..from.saturating_add(count)).map_while(|h| self.chain.at_height(h).map(|e| e.header)).collect()
    }

    /// A block locator of the best chain: the last 10 heights, then exponentially
    /// sparser back to genesis (Bitcoin's `getheaders` locator).
    pub fn locator(&self) -> Vec<BlockId> {
        let mut out = Vec::new();
        let mut h = self.chain.height();
        let mut step = 1;
        loop {
            if let Some(e) = self.chain.at_height(h) {
                out.push(e.id);
            }
            if h == 0 {
                break;
            }
            if out.len() >= 10 {
                step *= 2;
            }
            h = h.saturating_sub(step);
        }
        out
    }

    /// Up to `max` best-chain blocks after the first locator entry that is on our
    /// best chain (genesis if none is).
    pub fn blocks_after(&self, locator: &[BlockId], max: usize) -> Result<Vec<(Header, Vec<u8>)>, StoreError> {
        let start = locator
            .iter()
            .find_map(|id| {
                let e = self.chain.get(id)?;
                (self.chain.at_height(e.header.height)?.id == *id).then_some(e.header.height)
            })
            .unwrap_or(0);
        let headers = self.headers(start + 1, max as u64);
        let keys: Vec<(u64, BlockId)> = headers.iter().map(|h| (h.height, h.id())).collect();
        let bodies = self.store.bodies(&keys)?;
        Ok(headers
            .into_iter()
            .zip(bodies)
            .map(|(h, b)| {
                // Bodies are written with their headers; a missing one can only be
                // rebuilt from the header, which is exactly what a coinbase-only body is.
                let b = b.unwrap_or_else(|| Body::coinbase_only(h.height, h.miner_key).encode());
                (h, b)
            })
            .collect())
    }

    /// Proof that the best-chain header at `height` is in the MMR committed by the
    /// best-chain header at `tip` (over leaves `0..tip`).
    pub fn mmr_proof(&self, height: u64, tip: u64) -> Result<(Header, Header, MmrProof), QueryError> {
        if height >= tip {
            return Err(QueryError::NotBelowTip { height, tip });
        }
        let leaf = self.chain.at_height(height).ok_or(QueryError::UnknownHeight(height))?;
        let root = self.chain.at_height(tip).ok_or(QueryError::UnknownHeight(tip))?;
        let proof = self.mmr.proof(height, tip)?;
        Ok((leaf.header, root.header, proof))
    }

    /// Cumulative work up to and including the best-chain header at `height`.
    pub fn total_work_at(&self, height: u64) -> Option<U256> {
        self.chain.at_height(height).map(|e| e.total_work)
    }

    /// A block template on the best tip paying `miner_key`.
    pub fn template(&self, miner_key: [u8; 32], now_ms: u64) -> (Header, Body) {
        let height = self.chain.height() + 1;
        let body = Body::coinbase_only(height, miner_key);
        (self.chain.next_template(miner_key, body.root(), now_ms), body)
    }
}

/// Why the chain could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored header does not fit the chain: the file belongs to another chain
    /// (different parameters or genesis) or is damaged.
    #[error("stored header at height {height} does not replay: {source} (wrong --chain/genesis for this data dir?)")]
    Replay {
        /// Its height.
        height: u64,
        /// The failed rule.
        #[source]
        source: HeaderError,
    },
    /// The header chain has a hole in its best chain (a bug).
    #[error("best chain is inconsistent")]
    Inconsistent,
    /// The chain parameters are unusable.
    #[error("chain parameters: {0}")]
    Params(#[from] tpow_core::ParamsError),
}

/// A header's index in the branch and its computed digest.
type Digested = (usize, [u8; 32]);

/// Forward passes one chunk runs per verifying thread: small, so a forged
/// header costs at most a few passes beyond the first wrong one.
pub const PASSES_PER_THREAD_CHUNK: usize = 2;

/// Step 2: the forward passes of a prepared batch on up to `threads` threads, in
/// the order [`PendingBranch::verification_order`] draws from `seed` (fresh
/// randomness per batch), in chunks of `threads × PASSES_PER_THREAD_CHUNK`; the
/// first wrong digest stops the work. Returns the digests in header order and the
/// number of passes run.
pub fn verify_branch(
    prepared: &Prepared,
    threads: usize,
    seed: &[u8; 32],
) -> (Result<Vec<[u8; 32]>, BranchError>, usize) {
    let branch = &prepared.branch;
    let threads = threads.clamp(1, branch.len().max(1));
    let order = branch.verification_order(seed);
    let mut digests = vec![[0u8; 32]; branch.len()];
    let mut passes = 0;
    for chunk in order.chunks(threads * PASSES_PER_THREAD_CHUNK) {
        let per_thread = chunk.len().div_ceil(threads).max(1);
        let results: Result<Vec<Digested>, (usize, HeaderError)> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .chunks(per_thread)
                .map(|part| {
                    s.spawn(move || {
                        let mut cache = ModelCache::new();
                        part.iter()
                            .map(|&i| match branch.pow_input(i) {
                                Some(input) => cache.output_digest(&input).map(|d| (i, d)).map_err(|e| (i, e)),
                                None => Err((i, HeaderError::UnknownParent)),
                            })
                            .collect::<Result<Vec<_>, _>>()
                    })
                })
                .collect();
            let mut out = Vec::with_capacity(chunk.len());
            for h in handles {
                // A panicking forward pass is a bug in core; surface it as a panic here too.
                out.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?);
            }
            Ok(out)
        });
        passes += chunk.len();
        let results = match results {
            Ok(r) => r,
            Err((i, source)) => {
                let height = branch.headers().nth(i).map_or(0, |h| h.height);
                return (Err(BranchError::Header { index: branch.skipped() + i, height, source }), passes);
            }
        };
        for (i, d) in results {
            if let Err(e) = branch.check_digest(i, &d) {
                return (Err(e), passes);
            }
            digests[i] = d;
        }
    }
    (Ok(digests), passes)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64};

    use tpow_core::chain::HeaderChain;
    use tpow_core::miner::{mine, MineJob, MineOutcome};
    use tpow_core::target::CompactTarget;
    use tpow_core::Model;

    use super::*;

    /// Devnet with the easiest target: a block takes a handful of forward passes.
    fn easy_params() -> ChainParams {
        let mut p = ChainParams::devnet();
        p.genesis_bits = CompactTarget::from_target(p.asert.max_target);
        p
    }

    /// Mines a block on `parent` in a scratch chain that holds `ancestors`.
    fn mine_on(params: &ChainParams, ancestors: &[Header], key: u8, t: u64) -> (Header, Body) {
        let mut chain = HeaderChain::new(params.clone()).expect("valid params");
        let mut cache = ModelCache::new();
        for h in ancestors {
            chain.submit_cpu(h, u64::MAX, &mut cache).expect("ancestor");
        }
        let height = chain.height() + 1;
        let body = Body::coinbase_only(height, [key; 32]);
        let template = chain.next_template([key; 32], body.root(), t);
        let model = Model::derive(&params.model, &template.prev_id).expect("model");
        let job = MineJob {
            model: &model,
            template: template.template(),
            target: template.bits.to_target().expect("target"),
            start_nonce: 0,
            nonce_count: u64::MAX,
        };
        let MineOutcome::Found(a) = mine(&job, 1, &AtomicBool::new(false), &AtomicU64::new(0)) else {
            panic!("no block")
        };
        (Header { nonce: a.nonce, output_digest: a.output_digest, ..template }, body)
    }

    fn branch(params: &ChainParams, n: usize, key: u8) -> Vec<(Header, Body)> {
        let mut out: Vec<(Header, Body)> = Vec::new();
        for i in 0..n {
            let ancestors: Vec<Header> = out.iter().map(|(h, _)| *h).collect();
            let t = params.genesis_timestamp_ms + 2_000 * (i as u64 + 1);
            out.push(mine_on(params, &ancestors, key, t));
        }
        out
    }

    fn submit(state: &mut ChainState, blocks: Vec<(Header, Body)>) -> Result<Applied, BlockError> {
        let prepared = state.prepare(blocks, u64::MAX / 2)?;
        let (digests, _) = verify_branch(&prepared, 2, &[5; 32]);
        match digests {
            Ok(d) => Ok(state.apply(prepared, &d)),
            Err(e) => Err(state.note_failed(e, &prepared)),
        }
    }

    fn open(params: &ChainParams, dir: &std::path::Path) -> ChainState {
        ChainState::rebuild(params.clone(), Store::open(&dir.join("db")).expect("store")).expect("rebuild")
    }

    #[test]
    fn accept_reorg_and_rebuild() {
        let params = easy_params();
        let dir = tempfile::tempdir().expect("tempdir");
        let a = branch(&params, 2, 1);
        let b = branch(&params, 3, 2);
        let mut state = open(&params, dir.path());
        let r = submit(&mut state, a.clone()).expect("a");
        assert_eq!((r.accepted, r.new_tip, r.reorged), (2, true, 0));
        assert_eq!(state.tip().id, a[1].0.id());
        let r = submit(&mut state, b.clone()).expect("b");
        assert!(r.error.is_none(), "{r:?}");
        assert_eq!((r.accepted, r.new_tip, r.reorged), (3, true, 2));
        assert_eq!(state.tip().id, b[2].0.id());
        // Resubmitting is harmless.
        assert_eq!(submit(&mut state, b.clone()).expect("again").accepted, 0);
        let tip = state.tip();
        drop(state);
        let state = open(&params, dir.path());
        assert_eq!(state.tip(), tip);
        assert_eq!(
            state.headers(1, 10).iter().map(Header::id).collect::<Vec<_>>(),
            b.iter().map(|(h, _)| h.id()).collect::<Vec<_>>()
        );
        // The MMR proof of height 1 verifies against the root in header 3.
        let (leaf, root, proof) = state.mmr_proof(1, 3).expect("proof");
        let target = leaf.bits.to_target().expect("target");
        proof.verify(&root.mmr_root, &mmr_leaf(leaf.id(), &target)).expect("verifies");
        assert!(matches!(state.mmr_proof(3, 3), Err(QueryError::NotBelowTip { .. })));
        // Sync serving: after a locator of genesis we get the whole branch.
        let served = state.blocks_after(&[[9; 32], b[0].0.id()], 10).expect("serve");
        assert_eq!(served.len(), 2);
        assert_eq!(served[0].0, b[1].0);
    }

    #[test]
    fn invalid_blocks_are_rejected_with_the_right_verdict() {
        let params = easy_params();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut state = open(&params, dir.path());
        let a = branch(&params, 2, 1);

        let mut wrong_digest = a[0].clone();
        wrong_digest.0.output_digest[0] ^= 1;
        // Changing the digest changes the pow hash: usually the cheap check catches
        // it; if not, the forward pass does. Either way: ban.
        let r = submit(&mut state, vec![wrong_digest.clone()]);
        let err = match r {
            Err(e) => e,
            Ok(applied) => applied.error.expect("must fail"),
        };
        assert_eq!(err.verdict(), Verdict::Ban, "{err}");

        let mut bad_body = a[0].clone();
        bad_body.1.coinbase.reward += 1;
        assert!(matches!(submit(&mut state, vec![bad_body]), Err(BlockError::Body { .. })));

        let orphan = submit(&mut state, vec![a[1].clone()]).expect_err("orphan");
        assert_eq!(orphan.verdict(), Verdict::NeedParent);

        let gap = submit(&mut state, vec![a[1].clone(), a[0].clone()]).expect_err("gap");
        assert!(matches!(gap, BlockError::NotContiguous(1)));

        assert_eq!(submit(&mut state, a).expect("valid").accepted, 2);
        assert_eq!(state.tip().height, 2);
    }

    #[test]
    fn locator_is_dense_then_sparse() {
        let params = easy_params();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut state = open(&params, dir.path());
        submit(&mut state, branch(&params, 14, 3)).expect("chain");
        let heights: Vec<u64> =
            state.locator().iter().map(|id| state.chain.get(id).expect("known").header.height).collect();
        assert_eq!(heights, vec![14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 3, 0]);
    }
}
