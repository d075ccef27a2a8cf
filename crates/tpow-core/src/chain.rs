//! Sans-io header chain: validation against a parent, cumulative work, fork
//! choice and reorgs.
//!
//! Validation is split in two so the expensive step can run anywhere: [`HeaderChain::precheck`]
//! does every cheap check (linkage, height, time, difficulty, MMR commitment and the
//! pow hash against the target) and returns a [`PendingHeader`]; whoever owns a
//! forward-pass engine (CPU here, a GPU in `tpow-gpu`, WebGPU in the browser)
//! computes the output digest for [`PendingHeader::pow_input`] and hands it to
//! [`PendingHeader::complete`]. A forged header therefore costs its sender a pow
//! hash below the target before it costs a verifier one forward pass.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use crate::asert::{next_compact, AsertAnchor};
use crate::forward::{Backend, PackedModel};
use crate::header::{BlockId, Header, TEMPLATE_LEN, VERSION};
use crate::mmr::{MmrNode, MmrPeaks};
use crate::model::Model;
use crate::puzzle::{pow_hash, Solver};
use crate::spec::{ChainParams, ModelSpec, ParamsError};
use crate::target::{block_work, hash_meets_target, CompactTarget};
use crate::U256;

/// Why a header was rejected. Variants are ordered as the checks run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Already in the chain.
    #[error("header already known")]
    AlreadyKnown,
    /// Wrong format version.
    #[error("unsupported header version {0}")]
    Version(u32),
    /// The parent is not in the chain (the caller should fetch it first).
    #[error("unknown parent")]
    UnknownParent,
    /// Height is not parent height + 1.
    #[error("height {got} does not follow parent height (expected {expected})")]
    Height {
        /// Parent height + 1.
        expected: u64,
        /// Header's height.
        got: u64,
    },
    /// Timestamp not strictly after the parent's.
    #[error("timestamp {got} not after parent timestamp {parent}")]
    TimestampNotAfterParent {
        /// Parent's timestamp.
        parent: u64,
        /// Header's timestamp.
        got: u64,
    },
    /// Timestamp too far ahead of the verifier's clock.
    #[error("timestamp {got} is more than {max_drift} ms ahead of now ({now})")]
    TimestampInFuture {
        /// Header's timestamp.
        got: u64,
        /// Verifier's clock.
        now: u64,
        /// Allowed drift.
        max_drift: u64,
    },
    /// Target differs from what ASERT prescribes.
    #[error("target bits {got:#010x}, ASERT requires {expected:#010x}")]
    Target {
        /// Required compact target.
        expected: u32,
        /// Header's compact target.
        got: u32,
    },
    /// The MMR root does not commit to the header's ancestors.
    #[error("MMR root does not match the ancestors")]
    MmrRoot,
    /// The pow hash is above the target (the cheap check).
    #[error("pow hash above target")]
    PowHash,
    /// The forward pass gives a different output digest (the expensive check).
    #[error("output digest does not match the forward pass")]
    OutputDigest,
    /// The model spec of the chain is unusable (a configuration error).
    #[error("bad model spec: {0}")]
    Spec(#[from] crate::spec::SpecError),
    /// The chain parameters are unusable (a configuration error).
    #[error("bad chain parameters: {0}")]
    Params(#[from] ParamsError),
}

/// A header in the chain with what it contributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainEntry {
    /// The header.
    pub header: Header,
    /// Its id.
    pub id: BlockId,
    /// Its expanded target.
    pub target: U256,
    /// Work of all headers from genesis up to and including this one.
    pub total_work: U256,
    /// MMR over genesis..=this header: the child's `mmr_root` is its root.
    pub mmr: MmrPeaks,
}

impl ChainEntry {
    /// The genesis entry of a chain.
    pub fn genesis(params: &ChainParams) -> Result<Self, ParamsError> {
        params.validate()?;
        let header = genesis_header(params);
        let target = params.genesis_target()?;
        Ok(Self::detached(&MmrPeaks::new(), header, target))
    }

    /// The entry of `header` on top of `self` (whose checks `header` passed:
    /// [`check_against_parent`] returned `target`).
    pub fn child(&self, header: Header, target: U256) -> Self {
        Self::detached(&self.mmr, header, target)
    }

    /// The entry of a header whose parent is not at hand but whose MMR over
    /// genesis..=parent (`parent_mmr`) was proven against its `mmr_root`. The
    /// cumulative work is the one `parent_mmr` commits to.
    pub fn detached(parent_mmr: &MmrPeaks, header: Header, target: U256) -> Self {
        let id = header.id();
        let mut mmr = parent_mmr.clone();
        mmr.push(mmr_leaf(id, &target));
        ChainEntry { header, id, target, total_work: mmr.total_work(), mmr }
    }
}

/// The data the expensive check needs: derive the model from `prev_id`, run
/// `template`/`nonce` through it, compare with `output_digest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PowInput {
    /// Model shape.
    pub spec: ModelSpec,
    /// Seed of the model.
    pub prev_id: BlockId,
    /// Header bytes before the nonce.
    pub template: [u8; TEMPLATE_LEN],
    /// The nonce.
    pub nonce: u64,
    /// The digest the header claims.
    pub output_digest: [u8; 32],
}

impl PowInput {
    /// Of a header.
    pub fn of(spec: ModelSpec, header: &Header) -> Self {
        PowInput {
            spec,
            prev_id: header.prev_id,
            template: header.template(),
            nonce: header.nonce,
            output_digest: header.output_digest,
        }
    }
}

/// A header that passed every cheap check and awaits its forward pass.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "a pending header is not in the chain until completed and inserted"]
pub struct PendingHeader {
    header: Header,
    id: BlockId,
    target: U256,
    spec: ModelSpec,
}

impl PendingHeader {
    /// What to run through the forward pass.
    pub fn pow_input(&self) -> PowInput {
        PowInput::of(self.spec, &self.header)
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Accepts the header if `computed_digest` (from any engine) matches.
    pub fn complete(self, computed_digest: &[u8; 32]) -> Result<VerifiedHeader, HeaderError> {
        if computed_digest != &self.header.output_digest {
            return Err(HeaderError::OutputDigest);
        }
        Ok(VerifiedHeader { header: self.header, id: self.id, target: self.target })
    }
}

/// A fully verified header, ready for [`HeaderChain::insert`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedHeader {
    header: Header,
    id: BlockId,
    target: U256,
}

impl VerifiedHeader {
    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }
    /// Its id.
    pub fn id(&self) -> BlockId {
        self.id
    }
}

/// What an insertion did to the best chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InsertOutcome {
    /// The header is the new best tip. `removed` lists the old best-chain ids above
    /// the fork point (empty when the tip was simply extended), `added` the new ones,
    /// both from low to high.
    NewTip {
        /// Height of the last header both chains share.
        fork_height: u64,
        /// Headers that left the best chain.
        removed: Vec<BlockId>,
        /// Headers that joined it.
        added: Vec<BlockId>,
    },
    /// Stored on a side chain with no more work than the best.
    SideChain,
}

/// The genesis header of a chain. It is fixed by the parameters and never mined.
pub fn genesis_header(params: &ChainParams) -> Header {
    Header {
        version: VERSION,
        height: 0,
        prev_id: [0; 32],
        timestamp_ms: params.genesis_timestamp_ms,
        bits: params.genesis_bits,
        body_root: [0; 32],
        mmr_root: MmrPeaks::new().root(),
        miner_key: [0; 32],
        nonce: 0,
        output_digest: [0; 32],
    }
}

/// The ASERT anchor of a chain: its genesis header.
pub fn asert_anchor(params: &ChainParams) -> Result<AsertAnchor, ParamsError> {
    Ok(AsertAnchor {
        height: 0,
        parent_timestamp_ms: params.genesis_timestamp_ms.saturating_sub(params.asert.ideal_block_time_ms),
        target: params.genesis_target()?,
    })
}

/// The compact target the child of `parent` must carry.
pub fn next_bits(params: &ChainParams, parent: &Header) -> Result<CompactTarget, ParamsError> {
    Ok(next_compact(&params.asert, &asert_anchor(params)?, parent.height, parent.timestamp_ms))
}

/// How far below the best chain's work a competing branch may claim to be and
/// still be verified: this many blocks at the best tip's target (PROTOCOL.md
/// §12.3). A branch further behind could only win by out-mining the best chain
/// first, which its own forward passes would show no sooner than at that point.
pub const WORK_MARGIN_BLOCKS: u64 = 6;

/// The least total work a branch must claim (by pow hashes alone) before any of
/// its forward passes is run: the best chain's work minus
/// [`WORK_MARGIN_BLOCKS`] blocks at the best tip's target.
pub fn min_branch_work(best: &ChainEntry) -> U256 {
    let margin = block_work(best.target).saturating_mul(U256::from(WORK_MARGIN_BLOCKS));
    best.total_work.saturating_sub(margin)
}

/// Why a branch (a segment of headers from the network) was refused before any
/// forward pass, or failed one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BranchError {
    /// A header failed a rule.
    #[error("header {index} (height {height}): {source}")]
    Header {
        /// Position in the segment.
        index: usize,
        /// Height the header claims.
        height: u64,
        /// The rule.
        #[source]
        source: HeaderError,
    },
    /// Header `0` does not link to header `0 - 1`.
    #[error("headers do not link at index {0}")]
    NotContiguous(usize),
    /// The branch claims too little work to ever become best (§12.3).
    #[error("branch claims work {claimed}, below the {required} worth verifying")]
    LowWork {
        /// Total work up to the segment's last header.
        claimed: U256,
        /// [`min_branch_work`] of the best chain.
        required: U256,
    },
}

impl BranchError {
    /// The rule a header broke, if it was one.
    pub fn header_error(&self) -> Option<&HeaderError> {
        match self {
            BranchError::Header { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A segment of new headers that passed every cheap check and claims enough
/// work; its forward passes are still to run.
#[derive(Clone, Debug)]
#[must_use = "a pending branch is not in the chain until completed and inserted"]
pub struct PendingBranch {
    entries: Vec<ChainEntry>,
    spec: ModelSpec,
    skipped: usize,
}

impl PendingBranch {
    /// Headers to verify (leading headers already known are not counted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether every header was already known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many leading headers were already in the chain and skipped.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The headers to verify, parent first.
    pub fn headers(&self) -> impl Iterator<Item = &Header> {
        self.entries.iter().map(|e| &e.header)
    }

    /// What to run through the forward pass for header `i`.
    pub fn pow_input(&self, i: usize) -> Option<PowInput> {
        self.entries.get(i).map(|e| PowInput::of(self.spec, &e.header))
    }

    /// Total work claimed up to the last header.
    pub fn claimed_work(&self) -> Option<U256> {
        self.entries.last().map(|e| e.total_work)
    }

    /// The order in which to run the passes: a permutation of `0..len()` drawn
    /// from `seed`, which the verifier picks at random so that a sender cannot
    /// place its one false digest last (§12.3). Run the passes in this order, in
    /// chunks, and drop the branch at the first mismatch.
    pub fn verification_order(&self, seed: &[u8; 32]) -> Vec<usize> {
        shuffled(self.entries.len(), seed)
    }

    /// Compares the digest computed for header `i` (of [`Self::headers`]) with
    /// the one it claims. Errors give the position in the segment as sent
    /// (`skipped() + i`), like [`HeaderChain::precheck_branch`]'s.
    pub fn check_digest(&self, i: usize, computed: &[u8; 32]) -> Result<(), BranchError> {
        let index = self.skipped + i;
        let e = self.entries.get(i).ok_or(BranchError::NotContiguous(index))?;
        if &e.header.output_digest != computed {
            return Err(BranchError::Header { index, height: e.header.height, source: HeaderError::OutputDigest });
        }
        Ok(())
    }

    /// The verified headers, parent first, given every computed digest in header
    /// order. Borrows the branch, so a caller can still name the header that failed;
    /// the verified headers are small copies (no MMR peaks).
    pub fn complete(&self, digests: &[[u8; 32]]) -> Result<Vec<VerifiedHeader>, BranchError> {
        if digests.len() != self.entries.len() {
            return Err(BranchError::NotContiguous(digests.len().min(self.entries.len())));
        }
        for (i, d) in digests.iter().enumerate() {
            self.check_digest(i, d)?;
        }
        Ok(self.entries.iter().map(|e| VerifiedHeader { header: e.header, id: e.id, target: e.target }).collect())
    }
}

/// A permutation of `0..n` (Fisher-Yates, indices drawn from the BLAKE3 XOF of
/// `seed` under the context of §3, reduced by rejection so it is unbiased).
pub fn shuffled(n: usize, seed: &[u8; 32]) -> Vec<usize> {
    let mut out: Vec<usize> = (0..n).collect();
    let mut xof = crate::hash::hasher(crate::hash::CTX_VERIFY_ORDER).update(seed).finalize_xof();
    let mut next = || {
        let mut b = [0u8; 8];
        xof.fill(&mut b);
        u64::from_le_bytes(b)
    };
    for i in (1..n).rev() {
        let bound = i as u64 + 1;
        let zone = u64::MAX - u64::MAX % bound;
        let j = loop {
            let r = next();
            if r < zone {
                break (r % bound) as usize;
            }
        };
        out.swap(i, j);
    }
    out
}

/// The MMR leaf that a header contributes.
pub fn mmr_leaf(id: BlockId, target: &U256) -> MmrNode {
    MmrNode { hash: id, work: block_work(*target) }
}

/// The headers known to this client, and which chain has the most work.
#[derive(Clone, Debug)]
pub struct HeaderChain {
    params: ChainParams,
    entries: BTreeMap<BlockId, ChainEntry>,
    /// Best chain by height: `best[h]` is the id at height h.
    best: Vec<BlockId>,
    /// Entries not on the best chain.
    side: BTreeSet<BlockId>,
    /// The ASERT anchor of the (validated) parameters.
    anchor: AsertAnchor,
}

impl HeaderChain {
    /// A chain holding only the genesis header; fails on unusable parameters.
    pub fn new(params: ChainParams) -> Result<Self, ParamsError> {
        let entry = ChainEntry::genesis(&params)?;
        let anchor = asert_anchor(&params)?;
        let id = entry.id;
        let mut entries = BTreeMap::new();
        entries.insert(id, entry);
        Ok(HeaderChain { params, entries, best: vec![id], side: BTreeSet::new(), anchor })
    }

    /// The chain parameters.
    pub fn params(&self) -> &ChainParams {
        &self.params
    }

    /// The best tip.
    pub fn tip(&self) -> &ChainEntry {
        &self.entries[self.best.last().expect("best chain holds genesis")]
    }

    /// Height of the best tip.
    pub fn height(&self) -> u64 {
        self.best.len() as u64 - 1
    }

    /// A known header by id, on any branch.
    pub fn get(&self, id: &BlockId) -> Option<&ChainEntry> {
        self.entries.get(id)
    }

    /// The best-chain header at `height`.
    pub fn at_height(&self, height: u64) -> Option<&ChainEntry> {
        let id = self.best.get(usize::try_from(height).ok()?)?;
        self.entries.get(id)
    }

    /// Number of headers stored on all branches.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false: genesis is always there.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Number of headers stored off the best chain.
    pub fn side_len(&self) -> usize {
        self.side.len()
    }

    /// Every cheap check of a segment of headers from the network (parent
    /// first), for *all* of them, before any forward pass (PROTOCOL.md §12.3):
    /// leading headers already known are skipped; the first new one must have a
    /// known parent; each must link to the one before and pass
    /// [`check_against_parent`] against it; and the branch must claim at least
    /// [`min_branch_work`].
    pub fn precheck_branch(&self, headers: &[Header], now_ms: u64) -> Result<PendingBranch, BranchError> {
        let skipped = headers.iter().take_while(|h| self.entries.contains_key(&h.id())).count();
        for (i, w) in headers.windows(2).enumerate().skip(skipped.saturating_sub(1)) {
            if w[1].prev_id != w[0].id() {
                return Err(BranchError::NotContiguous(i + 1));
            }
        }
        let fresh = &headers[skipped..];
        let Some(first) = fresh.first() else {
            return Ok(PendingBranch { entries: Vec::new(), spec: self.params.model, skipped });
        };
        let fail = |index: usize, h: &Header| {
            let height = h.height;
            move |source| BranchError::Header { index, height, source }
        };
        if first.version != VERSION {
            return Err(fail(skipped, first)(HeaderError::Version(first.version)));
        }
        let mut parent =
            self.entries.get(&first.prev_id).ok_or_else(|| fail(skipped, first)(HeaderError::UnknownParent))?;
        let mut entries: Vec<ChainEntry> = Vec::with_capacity(fresh.len());
        for (i, h) in fresh.iter().enumerate() {
            let index = skipped + i;
            if h.version != VERSION {
                return Err(fail(index, h)(HeaderError::Version(h.version)));
            }
            let target = check_against_parent(&self.params, parent, h, now_ms).map_err(fail(index, h))?;
            let entry = parent.child(*h, target);
            entries.push(entry);
            parent = entries.last().expect("pushed above");
        }
        let claimed = parent.total_work;
        let required = min_branch_work(self.tip());
        if claimed < required {
            return Err(BranchError::LowWork { claimed, required });
        }
        Ok(PendingBranch { entries, spec: self.params.model, skipped })
    }

    /// Removes side branches that can no longer come within the margin of the
    /// best chain (no entry on them has [`min_branch_work`]), so an attacker's
    /// cheap old branches cost bounded memory and disk. Returns the removed
    /// headers' (height, id), to delete them from storage too.
    pub fn prune(&mut self) -> Vec<(u64, BlockId)> {
        let required = min_branch_work(self.tip());
        let mut alive = BTreeSet::new();
        for id in &self.side {
            if alive.contains(id) || self.entries.get(id).is_none_or(|e| e.total_work < required) {
                continue;
            }
            let mut cursor = *id;
            while self.side.contains(&cursor) && alive.insert(cursor) {
                match self.entries.get(&cursor) {
                    Some(e) => cursor = e.header.prev_id,
                    None => break,
                }
            }
        }
        let dead: Vec<BlockId> = self.side.difference(&alive).copied().collect();
        let mut out = Vec::with_capacity(dead.len());
        for id in dead {
            self.side.remove(&id);
            if let Some(e) = self.entries.remove(&id) {
                out.push((e.header.height, id));
            }
        }
        out
    }

    /// Every check that costs no forward pass, cheapest first, for one header.
    /// It applies no work threshold: use it for headers this node trusts (its
    /// own store, its own miner) and [`Self::precheck_branch`] for the network.
    pub fn precheck(&self, header: &Header, now_ms: u64) -> Result<PendingHeader, HeaderError> {
        let id = header.id();
        if self.entries.contains_key(&id) {
            return Err(HeaderError::AlreadyKnown);
        }
        if header.version != VERSION {
            return Err(HeaderError::Version(header.version));
        }
        let parent = self.entries.get(&header.prev_id).ok_or(HeaderError::UnknownParent)?;
        let target = check_against_parent(&self.params, parent, header, now_ms)?;
        Ok(PendingHeader { header: *header, id, target, spec: self.params.model })
    }

    /// Adds a verified header and applies fork choice (most total work wins; on a
    /// tie the header seen first stays best).
    pub fn insert(&mut self, verified: VerifiedHeader) -> Result<InsertOutcome, HeaderError> {
        if self.entries.contains_key(&verified.id) {
            return Err(HeaderError::AlreadyKnown);
        }
        let parent = self.entries.get(&verified.header.prev_id).ok_or(HeaderError::UnknownParent)?;
        let mut mmr = parent.mmr.clone();
        mmr.push(mmr_leaf(verified.id, &verified.target));
        let entry = ChainEntry {
            header: verified.header,
            id: verified.id,
            target: verified.target,
            total_work: parent.total_work.saturating_add(block_work(verified.target)),
            mmr,
        };
        let new_is_best = entry.total_work > self.tip().total_work;
        let id = entry.id;
        self.entries.insert(id, entry);
        if !new_is_best {
            self.side.insert(id);
            return Ok(InsertOutcome::SideChain);
        }
        // Walk back from the new tip until we meet the best chain.
        let mut added = Vec::new();
        let mut cursor = id;
        loop {
            let e = &self.entries[&cursor];
            let h = e.header.height as usize;
            if self.best.get(h) == Some(&cursor) {
                break;
            }
            added.push(cursor);
            cursor = e.header.prev_id;
        }
        added.reverse();
        let fork_height = self.entries[&cursor].header.height;
        let removed = self.best.split_off(fork_height as usize + 1);
        self.best.extend_from_slice(&added);
        for a in &added {
            self.side.remove(a);
        }
        self.side.extend(removed.iter().copied());
        Ok(InsertOutcome::NewTip { fork_height, removed, added })
    }

    /// Verifies a header completely on this CPU and inserts it.
    pub fn submit_cpu(
        &mut self,
        header: &Header,
        now_ms: u64,
        cache: &mut ModelCache,
    ) -> Result<InsertOutcome, HeaderError> {
        let pending = self.precheck(header, now_ms)?;
        let digest = cache.output_digest(&pending.pow_input())?;
        self.insert(pending.complete(&digest)?)
    }

    /// The header a miner should search on top of the best tip (nonce and output
    /// digest zero). Its timestamp is `now_ms`, or one past the parent's if the
    /// clock is behind.
    pub fn next_template(&self, miner_key: [u8; 32], body_root: [u8; 32], now_ms: u64) -> Header {
        let tip = self.tip();
        template_on(&self.params, &self.anchor, tip, miner_key, body_root, now_ms)
    }

    /// Like [`Self::next_template`] on top of any known header (to mine a side branch).
    pub fn template_on(
        &self,
        parent: &BlockId,
        miner_key: [u8; 32],
        body_root: [u8; 32],
        now_ms: u64,
    ) -> Option<Header> {
        Some(template_on(&self.params, &self.anchor, self.entries.get(parent)?, miner_key, body_root, now_ms))
    }
}

fn template_on(
    params: &ChainParams,
    anchor: &AsertAnchor,
    parent: &ChainEntry,
    miner_key: [u8; 32],
    body_root: [u8; 32],
    now_ms: u64,
) -> Header {
    Header {
        version: VERSION,
        height: parent.header.height + 1,
        prev_id: parent.id,
        timestamp_ms: now_ms.max(parent.header.timestamp_ms + 1),
        bits: next_compact(&params.asert, anchor, parent.header.height, parent.header.timestamp_ms),
        body_root,
        mmr_root: parent.mmr.root(),
        miner_key,
        nonce: 0,
        output_digest: [0; 32],
    }
}

/// The contextual checks of `header` against its `parent`, in order; returns the
/// header's target.
pub fn check_against_parent(
    params: &ChainParams,
    parent: &ChainEntry,
    header: &Header,
    now_ms: u64,
) -> Result<U256, HeaderError> {
    let expected_height = parent.header.height + 1;
    if header.height != expected_height {
        return Err(HeaderError::Height { expected: expected_height, got: header.height });
    }
    check_time(params, parent.header.timestamp_ms, header, now_ms)?;
    let expected = next_bits(params, &parent.header)?;
    if header.bits != expected {
        return Err(HeaderError::Target { expected: expected.0, got: header.bits.0 });
    }
    if header.mmr_root != parent.mmr.root() {
        return Err(HeaderError::MmrRoot);
    }
    let target = check_pow_hash(header)?;
    Ok(target)
}

/// A child checked against its parent entry (every cheap check of §12.1 except
/// "already known"), returning its entry: what a client that keeps only a window
/// of the chain needs.
pub fn check_child(
    params: &ChainParams,
    parent: &ChainEntry,
    header: &Header,
    now_ms: u64,
) -> Result<ChainEntry, HeaderError> {
    if header.version != VERSION {
        return Err(HeaderError::Version(header.version));
    }
    if header.prev_id != parent.id {
        return Err(HeaderError::UnknownParent);
    }
    let target = check_against_parent(params, parent, header, now_ms)?;
    Ok(parent.child(*header, target))
}

/// The two time rules (§12.1): strictly after the parent (or, for a header whose
/// parent is not at hand, after genesis) and not beyond the verifier's clock plus
/// the allowed drift.
fn check_time(params: &ChainParams, parent_timestamp_ms: u64, header: &Header, now_ms: u64) -> Result<(), HeaderError> {
    if header.timestamp_ms <= parent_timestamp_ms {
        return Err(HeaderError::TimestampNotAfterParent { parent: parent_timestamp_ms, got: header.timestamp_ms });
    }
    if header.timestamp_ms > now_ms.saturating_add(params.max_future_drift_ms) {
        return Err(HeaderError::TimestampInFuture {
            got: header.timestamp_ms,
            now: now_ms,
            max_drift: params.max_future_drift_ms,
        });
    }
    Ok(())
}

/// The cheap checks a header gets when its parent is not at hand (a FlyClient
/// sample, the oldest of the last headers; PROTOCOL.md §16): height above
/// genesis, time after genesis and not in the future, a target no easier than
/// ASERT allows for *any* parent older than the header, and the pow hash.
/// Returns the header's target.
///
/// ASERT is monotone in the parent's timestamp and the parent is strictly older
/// than the child, so `ASERT(height − 1, timestamp − 1)` bounds the target from
/// above; `GetCompact` preserves the order. What this cannot see is a target
/// *harder* than required, which only costs the forger more work per header.
pub fn check_detached(params: &ChainParams, header: &Header, now_ms: u64) -> Result<U256, HeaderError> {
    if header.version != VERSION {
        return Err(HeaderError::Version(header.version));
    }
    if header.height == 0 {
        return Err(HeaderError::Height { expected: 1, got: 0 });
    }
    check_time(params, params.genesis_timestamp_ms, header, now_ms)?;
    let parent_like = Header { height: header.height - 1, timestamp_ms: header.timestamp_ms - 1, ..*header };
    let easiest = next_bits(params, &parent_like)?;
    let too_easy = HeaderError::Target { expected: easiest.0, got: header.bits.0 };
    let easiest_target = easiest.to_target().map_err(|_| too_easy.clone())?;
    let target = header.bits.to_target().map_err(|_| HeaderError::PowHash)?;
    if target > easiest_target {
        return Err(too_easy);
    }
    check_pow_hash(header)
}

/// The cheap proof-of-work check: one hash against the header's own target.
pub fn check_pow_hash(header: &Header) -> Result<U256, HeaderError> {
    let target = header.bits.to_target().map_err(|_| HeaderError::PowHash)?;
    let h = pow_hash(&header.template(), header.nonce, &header.output_digest);
    if !hash_meets_target(&h, &target) {
        return Err(HeaderError::PowHash);
    }
    Ok(target)
}

/// Verifies one header's proof of work on its own (no parent needed): the cheap
/// pow hash check, then the forward pass on this CPU.
pub fn verify_header_pow(spec: &ModelSpec, header: &Header, cache: &mut ModelCache) -> Result<(), HeaderError> {
    check_pow_hash(header)?;
    let digest = cache.output_digest(&PowInput::of(*spec, header))?;
    if digest != header.output_digest {
        return Err(HeaderError::OutputDigest);
    }
    Ok(())
}

/// Keeps the last derived model, laid out for this CPU's kernels: siblings share a
/// parent, and neither the derivation nor the layout (on mainnet each costs about as
/// much as the pass) is paid twice for them.
#[derive(Default)]
pub struct ModelCache {
    packed: Option<PackedModel<'static>>,
}

impl ModelCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The model for (`spec`, `prev_id`), laid out for the fastest kernels of this
    /// CPU ([`Backend::detect`]); derived and laid out if not cached.
    pub fn packed(&mut self, spec: &ModelSpec, prev_id: &BlockId) -> Result<&PackedModel<'static>, HeaderError> {
        let stale = match &self.packed {
            Some(p) => p.model().prev_id != *prev_id || p.model().spec != *spec,
            None => true,
        };
        if stale {
            // Drop the old layout first: two mainnet models never coexist here.
            self.packed = None;
            let model = Arc::new(Model::derive(spec, prev_id)?);
            self.packed = Some(PackedModel::shared(model, Backend::detect()));
        }
        Ok(self.packed.as_ref().expect("set above"))
    }

    /// The model for (`spec`, `prev_id`), derived if not cached.
    pub fn model(&mut self, spec: &ModelSpec, prev_id: &BlockId) -> Result<&Model, HeaderError> {
        Ok(self.packed(spec, prev_id)?.model())
    }

    /// Runs the forward pass for `input` and digests it.
    pub fn output_digest(&mut self, input: &PowInput) -> Result<[u8; 32], HeaderError> {
        let packed = self.packed(&input.spec, &input.prev_id)?;
        Ok(Solver::with_packed(packed).attempt(&input.template, input.nonce).output_digest)
    }
}
