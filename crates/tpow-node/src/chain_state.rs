//! The node's chain state: the sans-io [`HeaderChain`] of tpow-core and the full
//! [`Mmr`] of the best chain (for proofs). Pure: no clock, no disk, no threads of
//! its own (only [`verify_branch`] spawns scoped workers). Synchronous and
//! single-owner: the chain service task owns it together with the store, so no
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
//! 3. [`ChainState::apply`]: computes, without changing anything, what the
//!    verified batch changes: a [`CommitPlan`] (new rows, the best-chain index
//!    update, side blocks to delete) inside a [`Transition`]. The service writes
//!    the plan to the database in one transaction and only then calls
//!    [`ChainState::advance`], which inserts the headers in memory (fork choice,
//!    MMR) and prunes side branches that fell out of the margin. A failed commit
//!    therefore leaves memory exactly as it was: memory is never ahead of the disk.
//!
//! Pruned side blocks are deleted from the database with the next commit (or at
//! the next start, which prunes again): a side block left on disk a little longer
//! is harmless, a best-chain row missing from disk would not be.

use std::collections::{HashSet, VecDeque};

use tpow_core::body::{check_body, Body, BodyError};
use tpow_core::chain::{mmr_leaf, BranchError, PendingBranch, VerifiedHeader};
use tpow_core::mmr::{Mmr, MmrError, MmrProof};
use tpow_core::target::block_work;
use tpow_core::{BlockId, ChainParams, Header, HeaderChain, HeaderError, InsertOutcome, ModelCache, U256};

use crate::store::{BestUpdate, CommitPlan, NewRow};

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
    /// The sync lane is full or busy with another segment: offer it again
    /// later. Not a fault.
    #[error("sync queue busy")]
    Busy,
    /// Refused because the segment it extends was refused. Not this sender's
    /// fault as such (its own segment was never checked).
    #[error("dropped: the segment it extends was refused")]
    Abandoned,
    /// More than [`MAX_BATCH`] blocks.
    #[error("batch of {0} blocks exceeds the maximum {MAX_BATCH}")]
    TooMany(usize),
}

/// What the network layer should do about the sender of a rejected block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The data is provably invalid: disconnect and ban the sender.
    Ban,
    /// The parent is unknown: sync from the sender.
    NeedParent,
    /// Not the sender's fault (already known, our clock): ignore.
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
            BlockError::LowWork(_) | BlockError::Busy | BlockError::Abandoned => Verdict::Ignore,
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

/// What [`ChainState::advance`] did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Blocks stored.
    pub accepted: usize,
    /// Whether the best tip moved.
    pub new_tip: bool,
    /// Deepest reorg: blocks removed from the best chain.
    pub reorged: usize,
    /// Side-branch blocks pruned (from memory now, from disk with the next commit).
    pub pruned: usize,
    /// Why a block was not inserted (the rest of the batch was dropped).
    pub error: Option<BlockError>,
    /// Forward passes run for this batch.
    pub passes: usize,
    /// Headers of this batch taken without a pass (`--assume-valid`).
    pub assumed: usize,
}

/// A verified batch that is not yet in the chain: what to write
/// ([`Transition::plan`]) and what to insert in memory once it is written.
#[derive(Debug)]
#[must_use = "a transition changes nothing until committed and advanced"]
pub struct Transition {
    plan: CommitPlan,
    verified: Vec<VerifiedHeader>,
    /// Why the batch was cut short (the headers before it are still applied).
    error: Option<BlockError>,
}

impl Transition {
    /// What the database must hold before memory may change.
    pub fn plan(&self) -> &CommitPlan {
        &self.plan
    }

    /// Whether there is nothing to write.
    pub fn is_noop(&self) -> bool {
        self.plan.is_empty()
    }
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

/// What the database held at start: every stored header with its insertion
/// sequence number (in sequence order), and the stored best-chain index.
#[derive(Debug, Default)]
pub struct Stored {
    /// `(seq, header)`, ascending `seq`.
    pub headers: Vec<(u64, Header)>,
    /// Ids of the stored best chain from height 0.
    pub best: Vec<BlockId>,
}

/// Headers and MMR of one node.
pub struct ChainState {
    chain: HeaderChain,
    mmr: Mmr,
    next_seq: u64,
    /// Side blocks pruned from memory that the database still holds: deleted by
    /// the next commit plan.
    pruned_on_disk: Vec<(u64, BlockId)>,
    known_invalid: HashSet<BlockId>,
    known_invalid_order: VecDeque<BlockId>,
}

impl ChainState {
    /// Rebuilds the header chain and MMR from what the store held, and returns
    /// the repair the store needs (side branches that fell out of the margin,
    /// and a best-chain index that disagrees with the headers) as a plan to
    /// commit before the state is used.
    ///
    /// Stored headers were fully verified when first accepted, so the rebuild runs
    /// the cheap checks again (a damaged file shows up as a failed link) but takes
    /// the stored output digests as given instead of repeating every forward pass.
    pub fn rebuild(params: ChainParams, stored: Stored) -> Result<(Self, CommitPlan), OpenError> {
        let mut chain = HeaderChain::new(params)?;
        let mut next_seq = 1;
        for (seq, header) in &stored.headers {
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
        let mut plan = CommitPlan { pruned: chain.prune(), ..CommitPlan::default() };
        let mut mmr = Mmr::new();
        let mut best = Vec::with_capacity(chain.height() as usize + 1);
        for h in 0..=chain.height() {
            let e = chain.at_height(h).ok_or(OpenError::Inconsistent)?;
            mmr.push(mmr_leaf(e.id, &e.target));
            best.push(e.id);
        }
        // The index is derived data: rewrite it if it disagrees (an old file, or a
        // crash between versions of this software).
        if stored.best != best {
            plan.best =
                Some(BestUpdate { from: 0, ids: best, old_height: (stored.best.len() as u64).saturating_sub(1) });
        }
        let state = ChainState {
            chain,
            mmr,
            next_seq,
            pruned_on_disk: Vec::new(),
            known_invalid: HashSet::new(),
            known_invalid_order: VecDeque::new(),
        };
        Ok((state, plan))
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

    /// Whether a header with this id is in the chain (any branch).
    pub fn contains(&self, id: &BlockId) -> bool {
        self.chain.get(id).is_some()
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

    /// The cheap checks a segment allows before its parent is known (it waits
    /// behind the segment it extends): it links internally, no id is known to be
    /// invalid, and every header passes tpow-core's detached checks (version,
    /// time, an ASERT bound, the pow hash). `ids` are the headers' ids.
    pub fn check_unlinked(&self, blocks: &[(Header, Body)], ids: &[BlockId], now_ms: u64) -> Result<(), BlockError> {
        for (i, (h, _)) in blocks.iter().enumerate() {
            if i > 0 && h.prev_id != ids[i - 1] {
                return Err(BlockError::NotContiguous(i));
            }
            if self.known_invalid.contains(&ids[i]) {
                return Err(BlockError::KnownInvalid);
            }
            tpow_core::chain::check_detached(self.params(), h, now_ms)
                .map_err(|source| BlockError::Header { height: h.height, source })?;
        }
        Ok(())
    }

    /// Every cheap check of a segment (as [`Self::prepare`] runs them, with the
    /// work threshold) and the total work it claims up to its last header;
    /// nothing is kept. `None` when every header is already known.
    pub fn claimed_work(&self, headers: &[Header], now_ms: u64) -> Result<Option<U256>, BlockError> {
        Ok(self.chain.precheck_branch(headers, now_ms)?.claimed_work())
    }

    /// Step 3a, pure: what inserting the blocks whose forward passes gave
    /// `digests` (in header order) changes, as a plan to commit. A wrong digest
    /// rejects the whole batch (and the id is remembered, see
    /// [`Self::note_failed`]). Headers inserted meanwhile are skipped; a header
    /// whose parent vanished meanwhile ends the batch there (the error is kept in
    /// the transition and reported by [`Self::advance`]).
    pub fn apply(&self, prepared: &Prepared, digests: &[[u8; 32]]) -> Result<Transition, BranchError> {
        let verified = prepared.branch.complete(digests)?;
        let mut plan = CommitPlan { pruned: self.pruned_on_disk.clone(), ..CommitPlan::default() };
        let mut kept: Vec<VerifiedHeader> = Vec::with_capacity(verified.len());
        // Total work of each kept header, by position in `kept`.
        let mut works: Vec<U256> = Vec::with_capacity(verified.len());
        let mut error = None;
        let mut seq = self.next_seq;
        for (v, body) in verified.into_iter().zip(&prepared.bodies) {
            let header = *v.header();
            let id = v.id();
            if self.chain.get(&id).is_some() || kept.iter().any(|k| k.id() == id) {
                continue;
            }
            let parent_work = match kept.last() {
                Some(last) if last.id() == header.prev_id => works.last().copied(),
                _ => self.chain.get(&header.prev_id).map(|e| e.total_work),
            };
            let (Some(parent_work), Ok(target)) = (parent_work, header.bits.to_target()) else {
                error = Some(BlockError::Header { height: header.height, source: HeaderError::UnknownParent });
                break;
            };
            works.push(parent_work.saturating_add(block_work(target)));
            plan.blocks.push(NewRow { seq, header, id, body: body.encode() });
            seq += 1;
            kept.push(v);
        }
        // Fork choice over a contiguous segment: work grows along it, so the
        // segment ends best iff its last header has strictly more work than the
        // tip (PROTOCOL §12.2); the new best chain is then the path from the
        // last header back to the best chain.
        if let (Some(last), Some(work)) = (kept.last(), works.last()) {
            if *work > self.chain.tip().total_work {
                let mut path = Vec::new();
                let mut cursor = last.id();
                let fork = loop {
                    let (height, prev) = match kept.iter().find(|k| k.id() == cursor) {
                        Some(k) => (k.header().height, k.header().prev_id),
                        None => match self.chain.get(&cursor) {
                            Some(e) if self.chain.at_height(e.header.height).is_some_and(|b| b.id == cursor) => {
                                break e.header.height;
                            }
                            Some(e) => (e.header.height, e.header.prev_id),
                            // Unreachable for a linked segment; treat as no change.
                            None => return Ok(Transition { plan, verified: kept, error }),
                        },
                    };
                    path.push(cursor);
                    if height == 0 {
                        break 0;
                    }
                    cursor = prev;
                };
                path.reverse();
                plan.best = Some(BestUpdate { from: fork + 1, ids: path, old_height: self.chain.height() });
            }
        }
        Ok(Transition { plan, verified: kept, error })
    }

    /// Step 3b, after the plan of `transition` is durable: inserts its headers
    /// in memory (fork choice, MMR), prunes side branches that fell out of the
    /// margin (their rows go into the next plan) and reports.
    pub fn advance(&mut self, transition: Transition) -> Applied {
        let Transition { plan, verified, error } = transition;
        let mut out = Applied { error, ..Applied::default() };
        // What the plan deleted is gone from disk.
        self.pruned_on_disk.retain(|p| !plan.pruned.contains(p));
        for (v, row) in verified.into_iter().zip(&plan.blocks) {
            match self.chain.insert(v) {
                Ok(InsertOutcome::NewTip { fork_height, removed, added }) => {
                    out.new_tip = true;
                    out.reorged = out.reorged.max(removed.len());
                    self.mmr.truncate(fork_height + 1);
                    for a in &added {
                        if let Some(e) = self.chain.get(a) {
                            self.mmr.push(mmr_leaf(*a, &e.target));
                        }
                    }
                }
                Ok(InsertOutcome::SideChain) => {}
                // `apply` skipped known headers and checked parents; the service
                // runs apply, commit and advance without anything in between.
                Err(source) => {
                    out.error = Some(BlockError::Header { height: row.header.height, source });
                    break;
                }
            }
            self.next_seq = self.next_seq.max(row.seq + 1);
            out.accepted += 1;
        }
        let pruned = self.chain.prune();
        out.pruned = pruned.len();
        self.pruned_on_disk.extend(pruned);
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

    /// Up to `max` best-chain headers after the first locator entry that is on
    /// our best chain (genesis if none is). The service adds their bodies from
    /// the store.
    pub fn headers_after(&self, locator: &[BlockId], max: usize) -> Vec<Header> {
        let start = locator
            .iter()
            .find_map(|id| {
                let e = self.chain.get(id)?;
                (self.chain.at_height(e.header.height)?.id == *id).then_some(e.header.height)
            })
            .unwrap_or(0);
        self.headers(start + 1, max as u64)
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

/// Forward passes a verifying thread takes from the shared order at a time:
/// small, so a forged header costs at most a few passes per thread beyond the
/// first wrong one.
pub const PASSES_PER_THREAD_CHUNK: usize = 2;

/// A header's index in the branch and its computed digest.
type Digested = (usize, [u8; 32]);

/// One worker's way of computing header `i`'s digest (checked against the header).
type HeaderDigest<'a> = dyn FnMut(usize, &mut VerifyStats) -> Result<[u8; 32], BranchError> + 'a;

/// What the forward passes of one batch cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerifyStats {
    /// Forward passes whose digest was taken: the CPU's, and the offload engine's
    /// that the header confirmed.
    pub passes: usize,
    /// Of those, the offload engine's (its model derivations are not counted in
    /// `derivations` or `derive`; its time is in `pass`).
    pub offloaded: usize,
    /// Whether the offload engine failed or disagreed with the CPU in this batch
    /// (the caller then retires it).
    pub offload_failed: bool,
    /// Headers taken as valid without a pass (`--assume-valid`).
    pub assumed: usize,
    /// Models derived (one per distinct parent a thread met in a row).
    pub derivations: usize,
    /// Thread time spent deriving models.
    pub derive: std::time::Duration,
    /// Thread time spent in forward passes (and digests).
    pub pass: std::time::Duration,
}

/// A second engine for forward passes next to the CPU threads: the GPU when
/// `--gpu` found an adapter (the node hands it sync batches only). A digest it
/// computes is taken when it equals the header's claim; any error, panic or
/// disagreement is settled by the CPU pass, the reference, so a faulty engine
/// cannot make a valid chain fail. The trust it does get: a header is accepted
/// on its word when it outputs exactly the claimed digest. A random fault
/// cannot do that (a forger would have to predict a wrong 256-bit digest); a
/// systematic one, such as a device that returns the same output for every
/// input, could, which is why the node compares it with the CPU on known
/// inputs before using it (`gpu_sync::open`).
pub trait PassEngine: Send {
    /// The output digest of `input`'s forward pass (deriving its model as needed).
    fn output_digest(&mut self, input: &tpow_core::chain::PowInput) -> Result<[u8; 32], String>;
}

/// The CPU itself as an engine: the honest reference the tests compare engines with.
#[cfg(test)]
impl PassEngine for ModelCache {
    fn output_digest(&mut self, input: &tpow_core::chain::PowInput) -> Result<[u8; 32], String> {
        ModelCache::output_digest(self, input).map_err(|e| e.to_string())
    }
}

/// One thread's CPU pass: derives the model of the header's parent (once per
/// parent in a row) and computes the digest, checked against the header.
struct CpuPass {
    cache: ModelCache,
    last_parent: Option<BlockId>,
}

impl CpuPass {
    fn new() -> Self {
        CpuPass { cache: ModelCache::new(), last_parent: None }
    }

    /// The digest of header `i`, or why the branch fails there.
    fn digest(&mut self, branch: &PendingBranch, i: usize, st: &mut VerifyStats) -> Result<[u8; 32], BranchError> {
        use std::time::Instant;
        let Some(input) = branch.pow_input(i) else {
            return Err(BranchError::NotContiguous(branch.skipped() + i));
        };
        let t = Instant::now();
        let derived = self.cache.model(&input.spec, &input.prev_id).map(|_| ());
        if self.last_parent != Some(input.prev_id) {
            st.derivations += 1;
            st.derive += t.elapsed();
            self.last_parent = Some(input.prev_id);
        }
        let t = Instant::now();
        let d = derived.and_then(|()| self.cache.output_digest(&input));
        st.pass += t.elapsed();
        st.passes += 1;
        d.map_err(|source| BranchError::Header { index: branch.skipped() + i, height: input_height(branch, i), source })
            .and_then(|d| branch.check_digest(i, &d).map(|()| d))
    }
}

/// The offload engine's thread: header `i` on the engine while it works, on the
/// CPU when it fails (retired for the rest of the batch) or when its digest
/// differs from the header's (the CPU decides; an engine that the CPU proves
/// wrong is retired).
fn offloaded_digest(
    engine: &mut Option<&mut dyn PassEngine>,
    cpu: &mut CpuPass,
    branch: &PendingBranch,
    i: usize,
    st: &mut VerifyStats,
) -> Result<[u8; 32], BranchError> {
    let Some(e) = engine.as_deref_mut() else { return cpu.digest(branch, i, st) };
    let Some(input) = branch.pow_input(i) else {
        return Err(BranchError::NotContiguous(branch.skipped() + i));
    };
    let t = std::time::Instant::now();
    // A panic in a driver is an engine failure, not a reason to stop verifying.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| e.output_digest(&input)))
        .unwrap_or_else(|_| Err("panicked".into()));
    st.pass += t.elapsed();
    match result {
        Ok(d) if branch.check_digest(i, &d).is_ok() => {
            st.passes += 1;
            st.offloaded += 1;
            Ok(d)
        }
        Ok(_) => {
            let checked = cpu.digest(branch, i, st);
            if checked.is_ok() {
                tracing::warn!(
                    height = input_height(branch, i),
                    "the GPU computed a wrong digest; verifying on the CPU only"
                );
                st.offload_failed = true;
                *engine = None;
            }
            checked
        }
        Err(err) => {
            tracing::warn!(error = %err, "the GPU failed a forward pass; verifying on the CPU only");
            st.offload_failed = true;
            *engine = None;
            cpu.digest(branch, i, st)
        }
    }
}

/// Step 2: the forward passes of a prepared batch on up to `threads` CPU threads
/// plus, when given, one thread feeding `offload` (see [`PassEngine`]).
///
/// The first `assumed` headers (a prefix of [`Prepared::branch`]'s headers that
/// the operator's `--assume-valid` block descends from, see the service) get no
/// pass: their claimed digest is taken. The others run in the order
/// [`PendingBranch::verification_order`] draws from `seed` (fresh randomness per
/// batch): every thread takes the next [`PASSES_PER_THREAD_CHUNK`] positions of
/// that order from a shared cursor (no barrier between chunks, so every core
/// and the GPU stay busy, each at its own speed), and the first wrong digest
/// stops all threads after their current chunk. Each CPU thread keeps its last
/// model, so headers sharing a parent (siblings) derive it once. Returns the
/// digests in header order and the cost.
pub fn verify_branch(
    prepared: &Prepared,
    threads: usize,
    seed: &[u8; 32],
    assumed: usize,
    offload: Option<&mut dyn PassEngine>,
) -> (Result<Vec<[u8; 32]>, BranchError>, VerifyStats) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex;

    let branch = &prepared.branch;
    let assumed = assumed.min(branch.len());
    let mut digests: Vec<[u8; 32]> = branch.headers().map(|h| h.output_digest).collect();
    let order: Vec<usize> = branch.verification_order(seed).into_iter().filter(|&i| i >= assumed).collect();
    let mut stats = VerifyStats { assumed, ..VerifyStats::default() };
    if order.is_empty() {
        return (Ok(digests), stats);
    }
    // No CPU thread at all only when an engine takes the work (tests use it to
    // give the engine every header).
    let most = order.len().div_ceil(PASSES_PER_THREAD_CHUNK);
    let threads = if offload.is_some() { threads.min(most) } else { threads.clamp(1, most) };
    let cursor = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    // The failure met earliest in the drawn order (what a sequential run would report).
    let failure: Mutex<Option<(usize, BranchError)>> = Mutex::new(None);
    // One worker: takes chunks of the order until it is done or a failure stops
    // everyone; `digest` computes one header.
    let work = |digest: &mut HeaderDigest<'_>| {
        let mut out: Vec<Digested> = Vec::new();
        let mut st = VerifyStats::default();
        'work: while !stop.load(Ordering::Relaxed) {
            let start = cursor.fetch_add(PASSES_PER_THREAD_CHUNK, Ordering::Relaxed);
            if start >= order.len() {
                break;
            }
            let end = (start + PASSES_PER_THREAD_CHUNK).min(order.len());
            for (pos, &i) in order.iter().enumerate().take(end).skip(start) {
                match digest(i, &mut st) {
                    Ok(d) => out.push((i, d)),
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        let mut f = failure.lock().unwrap_or_else(|p| p.into_inner());
                        if f.as_ref().is_none_or(|(p, _)| pos < *p) {
                            *f = Some((pos, e));
                        }
                        break 'work;
                    }
                }
            }
        }
        (out, st)
    };
    let per_thread: Vec<(Vec<Digested>, VerifyStats)> = std::thread::scope(|s| {
        let work = &work;
        let mut handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(move || {
                    let mut cpu = CpuPass::new();
                    work(&mut |i, st| cpu.digest(branch, i, st))
                })
            })
            .collect();
        if let Some(engine) = offload {
            handles.push(s.spawn(move || {
                let mut engine = Some(engine);
                let mut cpu = CpuPass::new();
                work(&mut |i, st| offloaded_digest(&mut engine, &mut cpu, branch, i, st))
            }));
        }
        // A panicking forward pass is a bug in core; surface it as a panic here too.
        handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    });
    for (out, st) in per_thread {
        stats.passes += st.passes;
        stats.offloaded += st.offloaded;
        stats.offload_failed |= st.offload_failed;
        stats.derivations += st.derivations;
        stats.derive += st.derive;
        stats.pass += st.pass;
        for (i, d) in out {
            digests[i] = d;
        }
    }
    if let Some((_, e)) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return (Err(e), stats);
    }
    (Ok(digests), stats)
}

fn input_height(branch: &PendingBranch, i: usize) -> u64 {
    branch.headers().nth(i).map_or(0, |h| h.height)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64};

    use tpow_core::chain::HeaderChain;
    use tpow_core::miner::{mine, MineJob, MineOutcome};
    use tpow_core::target::CompactTarget;
    use tpow_core::Model;

    use super::*;
    use crate::store::Store;

    /// Devnet with the easiest target: a block takes a handful of forward passes.
    pub(crate) fn easy_params() -> ChainParams {
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

    pub(crate) fn branch(params: &ChainParams, n: usize, key: u8) -> Vec<(Header, Body)> {
        let mut out: Vec<(Header, Body)> = Vec::new();
        for i in 0..n {
            let ancestors: Vec<Header> = out.iter().map(|(h, _)| *h).collect();
            let t = params.genesis_timestamp_ms + 2_000 * (i as u64 + 1);
            out.push(mine_on(params, &ancestors, key, t));
        }
        out
    }

    /// A state and the store it commits to, as the service holds them.
    struct Node {
        state: ChainState,
        store: Store,
    }

    impl std::ops::Deref for Node {
        type Target = ChainState;
        fn deref(&self) -> &ChainState {
            &self.state
        }
    }

    fn submit(node: &mut Node, blocks: Vec<(Header, Body)>) -> Result<Applied, BlockError> {
        let prepared = node.state.prepare(blocks, u64::MAX / 2)?;
        let (digests, _) = verify_branch(&prepared, 2, &[5; 32], 0, None);
        let transition =
            digests.and_then(|d| node.state.apply(&prepared, &d)).map_err(|e| node.state.note_failed(e, &prepared))?;
        node.store.commit(transition.plan()).expect("commit");
        Ok(node.state.advance(transition))
    }

    fn open(params: &ChainParams, dir: &std::path::Path) -> Node {
        let store = Store::open(&dir.join("db")).expect("store");
        let (state, repair) = ChainState::rebuild(params.clone(), store.load().expect("load")).expect("rebuild");
        store.commit(&repair).expect("repair");
        Node { state, store }
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
        let served = state.headers_after(&[[9; 32], b[0].0.id()], 10);
        assert_eq!(served.len(), 2);
        assert_eq!(served[0], b[1].0);
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

    /// `apply` only plans: until the plan is committed and `advance` runs, the
    /// state is exactly as before (what a failed commit relies on).
    #[test]
    fn apply_plans_without_changing_memory() {
        let params = easy_params();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut node = open(&params, dir.path());
        let a = branch(&params, 3, 1);
        let before = node.tip();
        let prepared = node.state.prepare(a.clone(), u64::MAX / 2).expect("prepare");
        let (digests, _) = verify_branch(&prepared, 1, &[1; 32], 0, None);
        let t = node.state.apply(&prepared, &digests.expect("digests")).expect("apply");
        assert_eq!(t.plan().blocks.len(), 3);
        let best = t.plan().best.as_ref().expect("tip moves");
        assert_eq!((best.from, best.ids.len(), best.old_height), (1, 3, 0));
        // The commit "failed": the transition is dropped.
        drop(t);
        assert_eq!(node.tip(), before);
        assert!(!node.contains(&a[0].0.id()));
        assert_eq!(node.store.best_ids().expect("best").len(), 1);
        // The same batch goes through afterwards.
        let r = submit(&mut node, a.clone()).expect("a");
        assert_eq!((r.accepted, r.new_tip), (3, true));
        assert_eq!(node.store.best_ids().expect("best"), node.locator().into_iter().rev().collect::<Vec<_>>());
    }

    /// A stand-in for the GPU engine: right, wrong, or broken.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Fake {
        Honest,
        Wrong,
        Broken,
    }

    struct FakeEngine {
        mode: Fake,
        calls: usize,
    }

    impl PassEngine for FakeEngine {
        fn output_digest(&mut self, input: &tpow_core::chain::PowInput) -> Result<[u8; 32], String> {
            self.calls += 1;
            match self.mode {
                Fake::Honest => PassEngine::output_digest(&mut ModelCache::new(), input),
                Fake::Wrong => Ok([7; 32]),
                Fake::Broken => Err("device lost".into()),
            }
        }
    }

    /// The offload engine only saves passes: whatever it answers, a valid branch
    /// verifies and a forged one fails, because a disagreement goes to the CPU.
    #[test]
    fn an_offload_engine_saves_passes_but_the_cpu_decides() {
        let params = easy_params();
        let dir = tempfile::tempdir().expect("tempdir");
        let node = open(&params, dir.path());
        let a = branch(&params, 5, 1);
        let prepared = node.state.prepare(a.clone(), u64::MAX / 2).expect("prepare");
        let want = verify_branch(&prepared, 1, &[2; 32], 0, None).0.expect("a valid branch");
        for mode in [Fake::Honest, Fake::Wrong, Fake::Broken] {
            // No CPU thread: the engine's thread takes every header.
            let mut engine = FakeEngine { mode, calls: 0 };
            let (got, st) = verify_branch(&prepared, 0, &[2; 32], 0, Some(&mut engine));
            assert_eq!(got.expect("a valid branch stays valid"), want, "{mode:?}");
            assert_eq!(st.passes, 5, "{mode:?}");
            if mode == Fake::Honest {
                assert_eq!((engine.calls, st.offloaded, st.offload_failed), (5, 5, false));
            } else {
                // Retired at its first fault; the CPU ran every header.
                assert_eq!((engine.calls, st.offloaded, st.offload_failed), (1, 0, true), "{mode:?}");
            }
            // With CPU threads too, the digests are the same.
            let mut engine = FakeEngine { mode, calls: 0 };
            let (got, _) = verify_branch(&prepared, 2, &[3; 32], 0, Some(&mut engine));
            assert_eq!(got.expect("valid with CPU threads"), want, "{mode:?}");
        }

        // A forged digest whose pow hash still meets the target (nonce ground
        // with the false digest): the honest engine disagrees, the CPU confirms,
        // the branch fails, and the engine is not blamed.
        let mut forged = a[0].clone();
        forged.0.output_digest = [9; 32];
        while tpow_core::chain::check_pow_hash(&forged.0).is_err() {
            forged.0.nonce += 1;
        }
        let prepared = node.state.prepare(vec![forged], u64::MAX / 2).expect("cheap checks pass");
        let mut engine = FakeEngine { mode: Fake::Honest, calls: 0 };
        let (got, st) = verify_branch(&prepared, 0, &[2; 32], 0, Some(&mut engine));
        assert!(
            matches!(got, Err(BranchError::Header { source: HeaderError::OutputDigest, .. })),
            "forged digest accepted: {got:?}"
        );
        assert_eq!((engine.calls, st.offloaded, st.offload_failed), (1, 0, false));
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
