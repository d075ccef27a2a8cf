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

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use crate::asert::{next_compact, AsertAnchor};
use crate::header::{BlockId, Header, TEMPLATE_LEN, VERSION};
use crate::mmr::{MmrNode, MmrPeaks};
use crate::model::Model;
use crate::puzzle::{pow_hash, Solver};
use crate::spec::{ChainParams, ModelSpec};
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
pub fn asert_anchor(params: &ChainParams) -> AsertAnchor {
    AsertAnchor {
        height: 0,
        parent_timestamp_ms: params.genesis_timestamp_ms.saturating_sub(params.asert.ideal_block_time_ms),
        target: params.genesis_bits.to_target().unwrap_or(params.asert.max_target),
    }
}

/// The compact target the child of `parent` must carry.
pub fn next_bits(params: &ChainParams, parent: &Header) -> CompactTarget {
    next_compact(&params.asert, &asert_anchor(params), parent.height, parent.timestamp_ms)
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
}

impl HeaderChain {
    /// A chain holding only the genesis header.
    pub fn new(params: ChainParams) -> Self {
        let g = genesis_header(&params);
        let id = g.id();
        let target = params.genesis_bits.to_target().unwrap_or(params.asert.max_target);
        let mut mmr = MmrPeaks::new();
        mmr.push(mmr_leaf(id, &target));
        let entry = ChainEntry { header: g, id, target, total_work: block_work(target), mmr };
        let mut entries = BTreeMap::new();
        entries.insert(id, entry);
        HeaderChain { params, entries, best: vec![id] }
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

    /// Every check that costs no forward pass, cheapest first.
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
        template_on(&self.params, tip, miner_key, body_root, now_ms)
    }

    /// Like [`Self::next_template`] on top of any known header (to mine a side branch).
    pub fn template_on(
        &self,
        parent: &BlockId,
        miner_key: [u8; 32],
        body_root: [u8; 32],
        now_ms: u64,
    ) -> Option<Header> {
        Some(template_on(&self.params, self.entries.get(parent)?, miner_key, body_root, now_ms))
    }
}

fn template_on(
    params: &ChainParams,
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
        bits: next_bits(params, &parent.header),
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
    if header.timestamp_ms <= parent.header.timestamp_ms {
        return Err(HeaderError::TimestampNotAfterParent {
            parent: parent.header.timestamp_ms,
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
    let expected = next_bits(params, &parent.header);
    if header.bits != expected {
        return Err(HeaderError::Target { expected: expected.0, got: header.bits.0 });
    }
    if header.mmr_root != parent.mmr.root() {
        return Err(HeaderError::MmrRoot);
    }
    let target = check_pow_hash(header)?;
    Ok(target)
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

/// Keeps the last derived model: siblings share a parent, and a miner tries many
/// nonces on one.
#[derive(Default)]
pub struct ModelCache {
    model: Option<Model>,
}

impl ModelCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The model for (`spec`, `prev_id`), derived if not cached.
    pub fn model(&mut self, spec: &ModelSpec, prev_id: &BlockId) -> Result<&Model, HeaderError> {
        let stale = match &self.model {
            Some(m) => m.prev_id != *prev_id || m.spec != *spec,
            None => true,
        };
        if stale {
            self.model = Some(Model::derive(spec, prev_id)?);
        }
        Ok(self.model.as_ref().expect("set above"))
    }

    /// Runs the forward pass for `input` and digests it.
    pub fn output_digest(&mut self, input: &PowInput) -> Result<[u8; 32], HeaderError> {
        let model = self.model(&input.spec, &input.prev_id)?;
        Ok(Solver::new(model).attempt(&input.template, input.nonce).output_digest)
    }
}
