//! The light client's logic over a small platform trait (smoldot's layering): all
//! decisions — what to fetch, what to check, which pass to run, which chain wins,
//! which node lied — live here and are tested natively against fake nodes; the
//! platform only moves bytes and runs forward passes.
//!
//! State sits in `RefCell`s that are borrowed only between awaits, so a UI can read
//! [`Client::tip`] or [`Client::nodes`] while a sync runs.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use serde::Serialize;
use tpow_core::chain::{check_child, check_detached, genesis_header, mmr_leaf, ChainEntry, PowInput};
use tpow_core::{BlockId, ChainParams, Header, HeaderError, U256};

use crate::error::{fault, EngineError, FetchError, LightError, NodeFault};
use crate::flyclient::{check_sample_cover, draws_for, estimated_passes, peaks_from_proof, work_before};
use crate::nodes::{try_order, NodeState, NodeStatus};
use crate::verify::LightChain;
use crate::wire::{self, TipClaim};

/// Which engine ran a forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// WebGPU in the browser, through tpow-gpu.
    WebGpu,
    /// tpow-core compiled to wasm32, in a Web Worker.
    CpuWorker,
    /// tpow-core compiled to wasm32, on the calling thread.
    CpuWasm,
    /// tpow-core natively (tests, benchmarks).
    CpuNative,
}

/// What the client needs from its environment. Implementations: the browser
/// (`src/wasm/`), fake nodes in [`crate::testkit`].
#[allow(async_fn_in_trait)]
pub trait Platform {
    /// GET `path` (with query) from the node at base URL `node`. Errors are
    /// transport failures and non-2xx statuses; a body over `limit` bytes may be
    /// cut off or refused (the caller rejects it anyway).
    async fn get(&self, node: &str, path: &str, limit: usize) -> Result<Vec<u8>, FetchError>;
    /// Runs the forward pass of `input` and returns its output digest.
    async fn forward_pass(&self, input: &PowInput) -> Result<([u8; 32], Backend), EngineError>;
    /// Wall-clock unix time in milliseconds (for the future-drift rule).
    fn unix_ms(&self) -> u64;
    /// A monotonic clock in milliseconds (for timing passes).
    fn monotonic_ms(&self) -> f64;
    /// 32 fresh random bytes for a FlyClient request, unpredictable to the nodes
    /// (the browser's `crypto.getRandomValues`). The sample's security rests on the
    /// node not knowing them before it has committed to its tip.
    fn random_seed(&self) -> Result<[u8; 32], EngineError>;
}

/// How much of the chain a sync verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Every header from genesis: linkage, time, ASERT, MMR root, pow hash and
    /// forward pass.
    Full,
    /// The last `last` headers fully, plus a FlyClient sample of older ones drawn
    /// from the client's own randomness, as many draws as security level
    /// `security_bits` needs (docs/PROTOCOL.md §16), each with its MMR proof and pass.
    Sampled {
        /// Newest headers checked fully (1..=100; default 100, as CKB RFC 0044).
        last: u64,
        /// λ: a chain forged by a minority (c = 1/2) escapes with probability at
        /// most `2^−λ` (1..=128; default 50).
        security_bits: u32,
    },
}

impl Default for SyncMode {
    fn default() -> Self {
        SyncMode::Sampled { last: 100, security_bits: tpow_core::flyclient::DEFAULT_SECURITY_BITS }
    }
}

/// A header the chain must contain (from a trusted source), or the sync fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Its height.
    pub height: u64,
    /// Its id.
    pub id: BlockId,
}

/// Client configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Base URLs of the nodes (`http://127.0.0.1:8645`).
    pub nodes: Vec<String>,
    /// Chain parameters (for a devnet with `--genesis-time-ms`, set
    /// `genesis_timestamp_ms` to match).
    pub params: ChainParams,
    /// Full or sampled.
    pub mode: SyncMode,
    /// Optional header every accepted chain must contain.
    pub checkpoint: Option<Checkpoint>,
}

impl Config {
    /// Checks the limits the node API imposes.
    pub fn validate(&self) -> Result<(), LightError> {
        if self.nodes.is_empty() {
            return Err(LightError::Config("no node URLs".into()));
        }
        if let SyncMode::Sampled { last, security_bits } = self.mode {
            if last == 0 || last > wire::MAX_FLY_LAST {
                return Err(LightError::Config(format!("last must be in 1..={}", wire::MAX_FLY_LAST)));
            }
            let max = tpow_core::flyclient::MAX_SECURITY_BITS;
            if security_bits == 0 || security_bits > max {
                return Err(LightError::Config(format!("security bits must be in 1..={max}")));
            }
        }
        self.params.model.validate().map_err(|e| LightError::Config(e.to_string()))
    }
}

/// How a header came to be verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// Against its parent (linkage, time, ASERT, MMR root, pow hash, pass).
    Linked,
    /// FlyClient sample (MMR proof, cumulative work, ASERT bound, pow hash, pass).
    Sampled,
    /// Without its parent (ASERT bound, time, pow hash, pass): the oldest of the
    /// last k, or a header given to [`Client::verify_header`].
    Detached,
}

/// One verified header, for the UI.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VerifiedRecord {
    /// Height.
    pub height: u64,
    /// Id, hex.
    pub id: String,
    /// Engine of its forward pass.
    pub backend: Backend,
    /// Duration of the forward pass (with model derivation), milliseconds.
    pub ms: f64,
    /// Which checks it got.
    pub check: Check,
    /// The node that served it (empty for [`Client::verify_header`]).
    pub node: String,
}

/// The best verified tip.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TipSummary {
    /// Height.
    pub height: u64,
    /// Id, hex.
    pub id: String,
    /// Cumulative work, decimal.
    pub total_work: String,
    /// Header timestamp, unix ms.
    pub timestamp_ms: u64,
    /// The 192-byte header, hex.
    pub header: String,
}

impl TipSummary {
    fn of(e: &ChainEntry) -> Self {
        TipSummary {
            height: e.header.height,
            id: hex::encode(e.id),
            total_work: e.total_work.to_string(),
            timestamp_ms: e.header.timestamp_ms,
            header: hex::encode(e.header.encode()),
        }
    }
}

/// Where a sync is. Serialised in lower case (`tips`, `headers`, `flyclient`,
/// `verify`, `done`): the JS `Progress.phase` of `pkg/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Asking every node for its tip.
    Tips,
    /// Downloading headers (full mode, or catching up linearly).
    Headers,
    /// The FlyClient answer arrived; its cheap checks run.
    Flyclient,
    /// Forward passes.
    Verify,
    /// Finished.
    Done,
}

impl Phase {
    /// The name JS sees.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Tips => "tips",
            Phase::Headers => "headers",
            Phase::Flyclient => "flyclient",
            Phase::Verify => "verify",
            Phase::Done => "done",
        }
    }
}

impl core::fmt::Display for Phase {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Progress of a sync, reported after every request and every forward pass.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Progress {
    /// Where the sync is.
    pub phase: Phase,
    /// The node being synced from.
    pub node: String,
    /// Forward passes done in this phase.
    pub done: u64,
    /// Forward passes this phase needs (0 when not known yet).
    pub total: u64,
    /// Height of the header just verified.
    pub height: Option<u64>,
}

/// Counters, cumulative since the client was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Forward passes run.
    pub passes: u64,
    /// Response bytes downloaded.
    pub bytes: u64,
    /// Headers that passed the cheap checks.
    pub headers_checked: u64,
    /// Requests made.
    pub requests: u64,
}

/// Result of one [`Client::sync`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SyncReport {
    /// The best verified tip afterwards.
    pub tip: TipSummary,
    /// Forward passes this sync ran.
    pub passes: u64,
    /// Bytes it downloaded.
    pub bytes: u64,
    /// Its duration in milliseconds.
    pub ms: f64,
    /// The node statuses afterwards.
    pub nodes: Vec<NodeStatus>,
}

/// Most records kept for [`Client::recent`].
pub const RECENT: usize = 256;

/// A header that passed its cheap checks and awaits its pass.
struct Pending {
    header: Header,
    check: Check,
}

/// The light client.
pub struct Client<P: Platform> {
    platform: P,
    config: Config,
    chain: RefCell<LightChain>,
    nodes: RefCell<Vec<NodeStatus>>,
    recent: RefCell<VecDeque<VerifiedRecord>>,
    stats: Cell<Stats>,
    busy: Cell<bool>,
}

/// Clears the busy flag however the sync ends.
struct BusyGuard<'a>(&'a Cell<bool>);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

impl<P: Platform> Client<P> {
    /// A client at genesis (or at `state`, bytes from [`Client::state_bytes`], when
    /// they load; a record that does not is ignored and the client starts at genesis).
    pub fn new(config: Config, platform: P, state: Option<&[u8]>) -> Result<Self, LightError> {
        config.validate()?;
        config.params.validate()?;
        let chain = match state.and_then(|b| crate::state::decode(&config.params, b).ok()) {
            Some(c) => c,
            None => LightChain::genesis(config.params.clone())?,
        };
        let nodes = config.nodes.iter().map(|u| NodeStatus::new(u)).collect();
        Ok(Client {
            platform,
            config,
            chain: RefCell::new(chain),
            nodes: RefCell::new(nodes),
            recent: RefCell::new(VecDeque::new()),
            stats: Cell::new(Stats::default()),
            busy: Cell::new(false),
        })
    }

    /// The platform.
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The best verified tip (genesis before the first sync).
    pub fn tip(&self) -> TipSummary {
        TipSummary::of(self.chain.borrow().tip())
    }

    /// The best verified tip's full entry (header, work, MMR).
    pub fn tip_entry(&self) -> ChainEntry {
        self.chain.borrow().tip().clone()
    }

    /// Node statuses, in configuration order.
    pub fn nodes(&self) -> Vec<NodeStatus> {
        self.nodes.borrow().clone()
    }

    /// The most recently verified headers, newest last.
    pub fn recent(&self) -> Vec<VerifiedRecord> {
        self.recent.borrow().iter().cloned().collect()
    }

    /// Cumulative counters.
    pub fn stats(&self) -> Stats {
        self.stats.get()
    }

    /// Whether a sync or follow step is running.
    pub fn is_busy(&self) -> bool {
        self.busy.get()
    }

    /// The verified state to persist.
    pub fn state_bytes(&self) -> Vec<u8> {
        crate::state::encode(&self.chain.borrow())
    }

    fn bump(&self, f: impl FnOnce(&mut Stats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    fn set_state(&self, i: usize, state: NodeState) {
        if let Some(n) = self.nodes.borrow_mut().get_mut(i) {
            n.state = state;
        }
    }

    fn take_busy(&self) -> Result<BusyGuard<'_>, LightError> {
        if self.busy.replace(true) {
            return Err(LightError::Busy);
        }
        Ok(BusyGuard(&self.busy))
    }

    async fn fetch(&self, node: &str, path: &str, limit: usize) -> Result<Vec<u8>, LightError> {
        self.bump(|s| s.requests += 1);
        let body = self
            .platform
            .get(node, path, limit)
            .await
            .map_err(|error| LightError::Network { node: node.into(), error })?;
        self.bump(|s| s.bytes += body.len() as u64);
        if body.len() > limit {
            return Err(fault(node, NodeFault::TooLarge { got: body.len(), limit }));
        }
        Ok(body)
    }

    /// Refuses a node of another chain before anything it serves is trusted: its
    /// `/api/chain` must name our chain and genesis. Asked once per node.
    async fn check_same_chain(&self, index: usize, node: &str) -> Result<(), LightError> {
        if self.nodes.borrow().get(index).is_some_and(|n| n.same_chain) {
            return Ok(());
        }
        let body = self.fetch(node, "/api/chain", wire::MAX_CHAIN_BYTES).await?;
        let claim = wire::parse_chain(&body).map_err(|f| fault(node, f))?;
        let params = &self.config.params;
        let ours = genesis_header(params).id();
        if claim.name != params.name() || claim.genesis_id != ours {
            return Err(fault(
                node,
                NodeFault::WrongChain(format!(
                    "genesis: the node follows {} with genesis {}, this client {} with genesis {}",
                    claim.name,
                    hex::encode(&claim.genesis_id[..8]),
                    params.name(),
                    hex::encode(&ours[..8])
                )),
            ));
        }
        if let Some(n) = self.nodes.borrow_mut().get_mut(index) {
            n.same_chain = true;
        }
        Ok(())
    }

    async fn fetch_tip(&self, node: &str) -> Result<TipClaim, LightError> {
        let body = self.fetch(node, "/api/tip", wire::MAX_TIP_BYTES).await?;
        wire::parse_tip(&body).map_err(|f| fault(node, f))
    }

    async fn fetch_headers(&self, node: &str, from: u64, count: u64) -> Result<Vec<Header>, LightError> {
        let count = count.clamp(1, wire::MAX_HEADERS_PER_REQUEST);
        let body =
            self.fetch(node, &format!("/api/headers?from={from}&count={count}"), wire::MAX_HEADERS_BYTES).await?;
        wire::parse_headers(&body, from, count).map_err(|f| fault(node, f))
    }

    /// Runs the pass of `header` and records it.
    async fn run_pass(&self, node: &str, header: &Header, check: Check) -> Result<VerifiedRecord, LightError> {
        let input = PowInput::of(self.config.params.model, header);
        let start = self.platform.monotonic_ms();
        let (digest, backend) = self.platform.forward_pass(&input).await.map_err(LightError::Engine)?;
        let ms = self.platform.monotonic_ms() - start;
        self.bump(|s| s.passes += 1);
        if digest != header.output_digest {
            let error = HeaderError::OutputDigest;
            return Err(fault(node, NodeFault::Header { height: header.height, error }));
        }
        let rec = VerifiedRecord {
            height: header.height,
            id: hex::encode(header.id()),
            backend,
            ms,
            check,
            node: node.into(),
        };
        let mut recent = self.recent.borrow_mut();
        recent.push_back(rec.clone());
        while recent.len() > RECENT {
            recent.pop_front();
        }
        Ok(rec)
    }

    /// Runs the passes of `pending`, newest first (a forged tip is the likeliest
    /// place for a lie, so it is found first).
    async fn run_passes(
        &self,
        node: &str,
        pending: &[Pending],
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<(), LightError> {
        let total = pending.len() as u64;
        for (done, p) in pending.iter().rev().enumerate() {
            self.run_pass(node, &p.header, p.check).await?;
            progress(&Progress {
                phase: Phase::Verify,
                node: node.into(),
                done: done as u64 + 1,
                total,
                height: Some(p.header.height),
            });
        }
        Ok(())
    }

    fn check_checkpoint(&self, node: &str, header: &Header, id: &BlockId) -> Result<(), LightError> {
        match self.config.checkpoint {
            Some(cp) if cp.height == header.height && cp.id != *id => {
                Err(fault(node, NodeFault::WrongChain(format!("checkpoint at height {}", cp.height))))
            }
            _ => Ok(()),
        }
    }

    /// Verifies the node's headers from `base`'s tip (walking back inside `base`'s
    /// window on a fork) up to `target`. `Ok(None)`: the fork is older than the
    /// window, a fresh sync is needed.
    async fn verify_linear(
        &self,
        node: &str,
        mut chain: LightChain,
        target: u64,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<Option<LightChain>, LightError> {
        let params = self.config.params.clone();
        let mut next = chain.tip().header.height + 1;
        let mut backed_off = false;
        let mut first = true;
        while next <= target {
            let count = (target - next + 1).min(wire::MAX_HEADERS_PER_REQUEST);
            let headers = self.fetch_headers(node, next, count).await?;
            progress(&Progress { phase: Phase::Headers, node: node.into(), done: 0, total: 0, height: Some(next) });
            let mut rest = &headers[..];
            if first {
                first = false;
                let oldest = chain.oldest().clone();
                if !backed_off && rest[0].prev_id != chain.tip().id {
                    if oldest.header.height + 1 == next {
                        return Self::deep_fork(node, &oldest);
                    }
                    // A fork: fetch again from just above the oldest kept header.
                    backed_off = true;
                    first = true;
                    next = oldest.header.height + 1;
                    continue;
                }
                if backed_off {
                    if rest[0].prev_id != oldest.id {
                        return Self::deep_fork(node, &oldest);
                    }
                    // Skip what we already hold; the fork point is the last match.
                    while let Some(h) = rest.first() {
                        if chain.find(&h.id()).is_none() {
                            break;
                        }
                        rest = &rest[1..];
                    }
                    let Some(h) = rest.first() else {
                        // The node's chain is a prefix of ours.
                        return Ok(Some(chain));
                    };
                    let Some(parent) = chain.find(&h.prev_id).map(|p| p.header.height) else {
                        return Err(fault(
                            node,
                            NodeFault::Mismatch { height: h.height, what: "does not link".into() },
                        ));
                    };
                    chain.reorg(parent, Vec::new());
                }
            }
            let now = self.platform.unix_ms();
            let mut parent = chain.tip().clone();
            let fork = parent.header.height;
            let mut entries = Vec::with_capacity(rest.len());
            let mut pending = Vec::with_capacity(rest.len());
            for h in rest {
                let e = check_child(&params, &parent, h, now)
                    .map_err(|error| fault(node, NodeFault::Header { height: h.height, error }))?;
                self.check_checkpoint(node, h, &e.id)?;
                pending.push(Pending { header: *h, check: Check::Linked });
                parent = e.clone();
                entries.push(e);
            }
            self.bump(|s| s.headers_checked += entries.len() as u64);
            self.run_passes(node, &pending, progress).await?;
            chain.reorg(fork, entries);
            if (headers.len() as u64) < count {
                break;
            }
            next = chain.tip().header.height + 1;
        }
        Ok(Some(chain))
    }

    /// A fork below the kept window: a fresh sync decides, unless the window starts
    /// at genesis (then the node's chain has another genesis).
    fn deep_fork(node: &str, oldest: &ChainEntry) -> Result<Option<LightChain>, LightError> {
        if oldest.header.height == 0 {
            return Err(fault(node, NodeFault::WrongChain("genesis".into())));
        }
        Ok(None)
    }

    /// FlyClient sync to the node's announced tip `claim`: the last k headers
    /// linked and fully checked, the older part through a sample drawn from a seed
    /// this client chooses *after* the node committed to the tip id, so the node
    /// can neither pick nor re-roll the draws (docs/PROTOCOL.md §16).
    async fn verify_sampled(
        &self,
        node: &str,
        claim: &TipClaim,
        last: u64,
        security_bits: u32,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<LightChain, LightError> {
        let params = self.config.params.clone();
        let nf = |f: NodeFault| fault(node, f);
        let tip = claim.height;
        let last = last.min(tip).max(1);
        let anchor = tip + 1 - last;
        let seed = self.platform.random_seed()?;
        let path = format!("/api/flyclient?tip={tip}&last={last}&seed={}&security={security_bits}", hex::encode(seed));
        let body = self.fetch(node, &path, wire::max_fly_bytes(tip)).await?;
        let fly = wire::parse_flyclient(&body, tip, last).map_err(nf)?;
        // The answer must be about the tip the node announced before it saw the
        // seed: answering for another tip would let it choose among prepared forks,
        // so such an answer is never used. It is not proof of lying either (an
        // honest node may have reorganised meanwhile), so the node is not flagged:
        // the next sync asks again.
        if fly.tip_id != claim.id {
            return Err(LightError::Network { node: node.into(), error: FetchError::TipMoved { height: tip } });
        }
        progress(&Progress { phase: Phase::Flyclient, node: node.into(), done: 0, total: 0, height: Some(tip) });
        for (i, h) in fly.last.iter().enumerate() {
            if h.height != anchor + i as u64 {
                return Err(nf(NodeFault::Mismatch {
                    height: anchor + i as u64,
                    what: format!("served height {}", h.height),
                }));
            }
        }
        // The MMR below the anchor, proven by the genesis leaf against its root.
        let genesis = ChainEntry::genesis(&params)?;
        let body = self.fetch(node, &format!("/api/mmr-proof?height=0&tip={anchor}"), wire::MAX_PROOF_BYTES).await?;
        let pr = wire::parse_mmr_proof(&body, 0).map_err(nf)?;
        if pr.header != genesis.header {
            return Err(nf(NodeFault::WrongChain("genesis".into())));
        }
        if pr.tip_header != fly.last[0] || pr.proof.leaf_count != anchor || pr.proof.leaf_index != 0 {
            return Err(nf(NodeFault::Mismatch { height: anchor, what: "MMR proof is for another header".into() }));
        }
        let below = peaks_from_proof(&pr.proof, &fly.last[0].mmr_root, &mmr_leaf(genesis.id, &genesis.target))
            .map_err(|error| nf(NodeFault::Proof { height: 0, error }))?;
        let now = self.platform.unix_ms();
        let hdr_fault = |height: u64| move |error: HeaderError| fault(node, NodeFault::Header { height, error });

        // The last k: the oldest detached, the rest linked.
        let first = &fly.last[0];
        let target = check_detached(&params, first, now).map_err(hdr_fault(first.height))?;
        let mut entries = vec![ChainEntry::detached(&below, *first, target)];
        let mut pending = vec![Pending { header: *first, check: Check::Detached }];
        for h in &fly.last[1..] {
            let parent = entries.last().expect("not empty");
            let e = check_child(&params, parent, h, now).map_err(hdr_fault(h.height))?;
            pending.push(Pending { header: *h, check: Check::Linked });
            entries.push(e);
        }
        for e in &entries {
            self.check_checkpoint(node, &e.header, &e.id)?;
        }
        let tip_entry = entries.last().expect("not empty");
        if tip_entry.id != claim.id {
            return Err(nf(NodeFault::Mismatch { height: tip, what: "last headers end at another tip id".into() }));
        }
        let tip_root = tip_entry.header.mmr_root;

        // The samples: ascending heights below the anchor, increasing timestamps,
        // each proven against the tip's MMR root, drawn as the tip id prescribes.
        let mut intervals = Vec::with_capacity(fly.sampled.len());
        let mut prev: Option<&Header> = None;
        let mut sample_pending = Vec::new();
        for s in &fly.sampled {
            let h = &s.header;
            if h.height >= anchor || prev.is_some_and(|p| p.height >= h.height) {
                return Err(nf(NodeFault::Sample(format!("height {} out of order or range", h.height))));
            }
            if let Some(p) = prev {
                if h.timestamp_ms < p.timestamp_ms.saturating_add(h.height - p.height) {
                    return Err(nf(NodeFault::Header {
                        height: h.height,
                        error: HeaderError::TimestampNotAfterParent { parent: p.timestamp_ms, got: h.timestamp_ms },
                    }));
                }
            }
            prev = Some(h);
            let (id, target) = if h.height == 0 {
                if *h != genesis.header {
                    return Err(nf(NodeFault::WrongChain("genesis".into())));
                }
                (genesis.id, genesis.target)
            } else {
                let t = check_detached(&params, h, now).map_err(hdr_fault(h.height))?;
                sample_pending.push(Pending { header: *h, check: Check::Sampled });
                (h.id(), t)
            };
            self.check_checkpoint(node, h, &id)?;
            if s.proof.leaf_count != tip || s.proof.leaf_index != h.height {
                let error = tpow_core::mmr::MmrError::LeafIndexOutOfRange {
                    leaf_index: s.proof.leaf_index,
                    leaf_count: s.proof.leaf_count,
                };
                return Err(nf(NodeFault::Proof { height: h.height, error }));
            }
            let leaf = mmr_leaf(id, &target);
            s.proof.verify(&tip_root, &leaf).map_err(|error| nf(NodeFault::Proof { height: h.height, error }))?;
            let before = work_before(&s.proof).ok_or_else(|| nf(NodeFault::Sample("proof shape".into())))?;
            if s.total_work != before.saturating_add(leaf.work) {
                return Err(nf(NodeFault::Sample(format!("height {}: wrong cumulative work", h.height))));
            }
            intervals.push((before, leaf.work));
        }
        if let (Some(p), Some(f)) = (prev, fly.last.first()) {
            if f.timestamp_ms < p.timestamp_ms.saturating_add(f.height - p.height) {
                let error = HeaderError::TimestampNotAfterParent { parent: p.timestamp_ms, got: f.timestamp_ms };
                return Err(nf(NodeFault::Header { height: f.height, error }));
            }
        }
        // The draws: work `checked` of the last k (verified above, linked to the
        // proven MMR below them) and work `below_work` under them fix the levels and
        // so the draw count; the node must have made exactly those draws.
        let below_work = below.total_work();
        let checked = tip_entry.total_work.saturating_sub(below_work);
        let draws = draws_for(&checked, &below_work, security_bits);
        if draws > wire::MAX_FLY_DRAWS {
            return Err(nf(NodeFault::Sample(format!("{draws} draws needed, more than {}", wire::MAX_FLY_DRAWS))));
        }
        if fly.draws != draws {
            return Err(nf(NodeFault::Sample(format!("{} draws made, {draws} needed", fly.draws))));
        }
        check_sample_cover(&seed, draws, &checked, &below_work, &intervals).map_err(|e| nf(NodeFault::Sample(e)))?;
        if let Some(cp) = self.config.checkpoint {
            if cp.height < anchor && !fly.sampled.iter().any(|s| s.header.height == cp.height) {
                self.prove_checkpoint(node, cp, tip, &tip_root).await?;
            }
        }
        self.bump(|s| s.headers_checked += (entries.len() + sample_pending.len()) as u64);

        // Cheap checks all passed: now the forward passes.
        pending.extend(sample_pending);
        self.run_passes(node, &pending, progress).await?;
        LightChain::from_entries(params, entries)
            .ok_or_else(|| nf(NodeFault::Mismatch { height: tip, what: "last headers do not link".into() }))
    }

    /// Checks that the configured checkpoint is leaf `cp.height` under `root`.
    async fn prove_checkpoint(&self, node: &str, cp: Checkpoint, tip: u64, root: &[u8; 32]) -> Result<(), LightError> {
        let body =
            self.fetch(node, &format!("/api/mmr-proof?height={}&tip={tip}", cp.height), wire::MAX_PROOF_BYTES).await?;
        let pr = wire::parse_mmr_proof(&body, cp.height).map_err(|f| fault(node, f))?;
        let target = pr.header.bits.to_target().map_err(|_| fault(node, NodeFault::WrongChain("checkpoint".into())))?;
        if pr.header.id() != cp.id || pr.proof.leaf_index != cp.height || pr.proof.leaf_count != tip {
            return Err(fault(node, NodeFault::WrongChain(format!("checkpoint at height {}", cp.height))));
        }
        pr.proof
            .verify(root, &mmr_leaf(cp.id, &target))
            .map_err(|error| fault(node, NodeFault::Proof { height: cp.height, error }))
    }

    /// Verifies the chain `claim` announces, from the node at `node`: linearly from
    /// our tip when that is cheaper than sampling (following, resuming), else a
    /// fresh sync in the configured mode.
    async fn verify_candidate(
        &self,
        node: &str,
        claim: &TipClaim,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<LightChain, LightError> {
        let current = self.chain.borrow().clone();
        let gap = claim.height.saturating_sub(current.tip().header.height);
        let candidate = match self.config.mode {
            SyncMode::Full => match self.verify_linear(node, current, claim.height, progress).await? {
                Some(c) => c,
                None => {
                    let fresh = LightChain::genesis(self.config.params.clone())?;
                    self.verify_linear(node, fresh, claim.height, progress)
                        .await?
                        .ok_or_else(|| fault(node, NodeFault::WrongChain("genesis".into())))?
                }
            },
            SyncMode::Sampled { last, security_bits } => {
                let budget = estimated_passes(claim.height, last, security_bits);
                let linear = if gap <= budget || claim.height <= budget {
                    let base = if gap <= budget { current } else { LightChain::genesis(self.config.params.clone())? };
                    self.verify_linear(node, base, claim.height, progress).await?
                } else {
                    None
                };
                match linear {
                    Some(c) => c,
                    None if claim.height == 0 => LightChain::genesis(self.config.params.clone())?,
                    None => self.verify_sampled(node, claim, last, security_bits, progress).await?,
                }
            }
        };
        // The node's claim must be what it served: a node announcing more work
        // than its chain has is lying (and would otherwise win the try order).
        let tip = candidate.tip();
        if tip.id == claim.id && tip.total_work != claim.total_work {
            return Err(fault(node, NodeFault::WorkMismatch { claimed: claim.total_work, verified: tip.total_work }));
        }
        if tip.header.height == claim.height && tip.id != claim.id && tip.total_work < claim.total_work {
            return Err(fault(node, NodeFault::WorkMismatch { claimed: claim.total_work, verified: tip.total_work }));
        }
        Ok(candidate)
    }

    /// Adopts `candidate` if it has strictly more work than the current chain.
    fn adopt(&self, candidate: LightChain) -> bool {
        let mut chain = self.chain.borrow_mut();
        if candidate.tip().total_work > chain.tip().total_work {
            *chain = candidate;
            true
        } else {
            false
        }
    }

    /// Asks every node for its tip and verifies the chains in order of claimed work
    /// until no unverified claim beats the best verified chain. Nodes that serve
    /// invalid data are flagged ([`NodeState::Invalid`]) and skipped.
    pub async fn sync(&self, progress: &mut dyn FnMut(&Progress)) -> Result<SyncReport, LightError> {
        let _busy = self.take_busy()?;
        let start = self.platform.monotonic_ms();
        let before = self.stats();
        let urls = self.config.nodes.clone();
        let mut claims = Vec::with_capacity(urls.len());
        for (i, url) in urls.iter().enumerate() {
            let tip = match self.check_same_chain(i, url).await {
                Ok(()) => self.fetch_tip(url).await,
                Err(e) => Err(e),
            };
            let claim = match tip {
                Ok(c) => {
                    if let Some(n) = self.nodes.borrow_mut().get_mut(i) {
                        n.claim(&c);
                    }
                    Some(c)
                }
                Err(e) => {
                    self.note_error(i, &e);
                    None
                }
            };
            progress(&Progress {
                phase: Phase::Tips,
                node: url.clone(),
                done: i as u64 + 1,
                total: urls.len() as u64,
                height: None,
            });
            claims.push(claim);
        }
        let mut errors = Vec::new();
        for i in try_order(&claims) {
            let Some(claim) = &claims[i] else { continue };
            let best = self.chain.borrow().tip().clone();
            if claim.id == best.id {
                self.set_state(i, NodeState::Ok);
                continue;
            }
            if claim.total_work <= best.total_work {
                continue;
            }
            match self.verify_candidate(&urls[i], claim, progress).await {
                Ok(c) => {
                    self.adopt(c);
                    self.set_state(i, NodeState::Ok);
                }
                Err(e) => {
                    self.note_error(i, &e);
                    errors.push(e.to_string());
                }
            }
        }
        // Everyone else: on our chain, or behind it.
        let best = self.chain.borrow().tip().clone();
        for (i, claim) in claims.iter().enumerate() {
            if let Some(c) = claim {
                let mut nodes = self.nodes.borrow_mut();
                if let Some(n) = nodes.get_mut(i) {
                    if matches!(n.state, NodeState::Unknown | NodeState::Ok | NodeState::Behind) {
                        n.state = if c.id == best.id { NodeState::Ok } else { NodeState::Behind };
                    }
                }
            }
        }
        if claims.iter().all(Option::is_none) || (best.header.height == 0 && !errors.is_empty()) {
            return Err(LightError::NoValidChain(errors.join("; ")));
        }
        let after = self.stats();
        progress(&Progress {
            phase: Phase::Done,
            node: String::new(),
            done: 0,
            total: 0,
            height: Some(best.header.height),
        });
        Ok(SyncReport {
            tip: TipSummary::of(&best),
            passes: after.passes - before.passes,
            bytes: after.bytes - before.bytes,
            ms: self.platform.monotonic_ms() - start,
            nodes: self.nodes(),
        })
    }

    fn note_error(&self, i: usize, e: &LightError) {
        let state = match e {
            LightError::Node { .. } => NodeState::Invalid(e.to_string()),
            LightError::Network { .. } => NodeState::Unreachable(e.to_string()),
            _ => return,
        };
        self.set_state(i, state);
    }

    /// One step of following the tip: node `index` announced `claim` (e.g. over its
    /// WebSocket). Verifies and adopts it if it has more work. Returns the new tip
    /// if the best chain changed. Flagged nodes are ignored; a busy client returns
    /// [`LightError::Busy`] (the caller retries with the latest claim later).
    pub async fn on_tip(&self, index: usize, claim: TipClaim) -> Result<Option<TipSummary>, LightError> {
        let url = self.config.nodes.get(index).cloned().ok_or_else(|| LightError::Config("no such node".into()))?;
        if self.nodes.borrow().get(index).is_some_and(|n| n.is_flagged()) {
            return Ok(None);
        }
        if let Err(e) = self.check_same_chain(index, &url).await {
            self.note_error(index, &e);
            return Err(e);
        }
        if let Some(n) = self.nodes.borrow_mut().get_mut(index) {
            n.claim(&claim);
        }
        let best = self.chain.borrow().tip().clone();
        if claim.id == best.id {
            self.set_state(index, NodeState::Ok);
            return Ok(None);
        }
        if claim.total_work <= best.total_work {
            self.set_state(index, NodeState::Behind);
            return Ok(None);
        }
        let _busy = self.take_busy()?;
        match self.verify_candidate(&url, &claim, &mut |_| {}).await {
            Ok(c) => {
                let changed = self.adopt(c);
                self.set_state(index, NodeState::Ok);
                Ok(changed.then(|| self.tip()))
            }
            Err(e) => {
                self.note_error(index, &e);
                Err(e)
            }
        }
    }

    /// Parses a WebSocket message of node `index` and runs [`Client::on_tip`].
    pub async fn on_tip_message(&self, index: usize, message: &[u8]) -> Result<Option<TipSummary>, LightError> {
        let url = self.config.nodes.get(index).cloned().unwrap_or_default();
        let claim = wire::parse_tip(message).map_err(|f| fault(&url, f))?;
        self.on_tip(index, claim).await
    }

    /// Verifies one 192-byte header on its own: against its parent if the client
    /// holds it, else the detached checks; then its forward pass. Nothing is
    /// stored in the chain.
    pub async fn verify_header(&self, bytes: &[u8]) -> Result<VerifiedRecord, LightError> {
        let header = Header::decode(bytes)?;
        let params = &self.config.params;
        let now = self.platform.unix_ms();
        let parent = self.chain.borrow().find(&header.prev_id).cloned();
        let check = match parent {
            Some(p) => {
                check_child(params, &p, &header, now)?;
                Check::Linked
            }
            None if header == genesis_header(params) => {
                let id = hex::encode(header.id());
                return Ok(VerifiedRecord {
                    height: 0,
                    id,
                    backend: Backend::CpuNative,
                    ms: 0.0,
                    check: Check::Linked,
                    node: String::new(),
                });
            }
            None => {
                check_detached(params, &header, now)?;
                Check::Detached
            }
        };
        self.run_pass("", &header, check).await.map_err(|e| match e {
            LightError::Node { fault: NodeFault::Header { error, .. }, .. } => LightError::Header(error),
            other => other,
        })
    }

    /// Total work of the best verified chain.
    pub fn total_work(&self) -> U256 {
        self.chain.borrow().tip().total_work
    }
}
