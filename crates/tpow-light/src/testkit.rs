//! Fakes for tests and benchmarks (native only): chains mined with tpow-core and
//! in-memory nodes that answer the node HTTP API (docs/API.md) byte for byte like
//! `tpow-node` (they render the same tpow-api types) — or lie in a chosen way.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::Instant;

use tpow_core::chain::{check_pow_hash, mmr_leaf, next_bits, ChainEntry, PowInput};
use tpow_core::mmr::{Mmr, MmrProof};
use tpow_core::{ChainParams, Header, ModelCache, U256};

use crate::client::{Backend, Platform};
use crate::error::{EngineError, FetchError};

/// Devnet parameters with genesis `age_ms` in the past: ASERT then sits at the
/// easiest target, so mining costs a handful of passes per block (what
/// `tpow-node run --genesis-time-ms` does for a fast local chain).
pub fn fast_devnet(now_ms: u64, age_ms: u64) -> ChainParams {
    let mut p = ChainParams::devnet();
    p.genesis_timestamp_ms = now_ms.saturating_sub(age_ms);
    p
}

/// The unix time now, in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Mines `n` headers on `parent`, timestamps `step` ms apart (CPU, this thread).
/// The first is stamped no earlier than ten minutes ago, so a chain whose genesis
/// lies far in the past is far behind schedule and ASERT gives the easiest target.
pub fn mine(params: &ChainParams, parent: &ChainEntry, n: usize, step: u64) -> Vec<ChainEntry> {
    mine_keyed(params, parent, n, step, [1; 32])
}

/// [`mine`] with a miner key, so two branches from one parent differ.
pub fn mine_keyed(params: &ChainParams, parent: &ChainEntry, n: usize, step: u64, key: [u8; 32]) -> Vec<ChainEntry> {
    let mut out = Vec::with_capacity(n);
    let mut cache = ModelCache::new();
    let mut p = parent.clone();
    let floor = now_ms().saturating_sub(600_000);
    for i in 0..n {
        let mut h = Header {
            version: 1,
            height: p.header.height + 1,
            prev_id: p.id,
            timestamp_ms: if i == 0 { (p.header.timestamp_ms + step).max(floor) } else { p.header.timestamp_ms + step },
            bits: next_bits(params, &p.header).expect("valid params"),
            body_root: [0; 32],
            mmr_root: p.mmr.root(),
            miner_key: key,
            nonce: 0,
            output_digest: [0; 32],
        };
        let target = h.bits.to_target().unwrap_or(params.asert.max_target);
        loop {
            let input = PowInput::of(params.model, &h);
            h.output_digest = cache.output_digest(&input).unwrap_or([0; 32]);
            if check_pow_hash(&h).is_ok() {
                break;
            }
            h.nonce += 1;
        }
        let e = p.child(h, target);
        out.push(e.clone());
        p = e;
    }
    out
}

/// A whole chain as a node stores it: headers, full MMR, cumulative work.
#[derive(Clone)]
pub struct FakeChain {
    /// Headers by height.
    pub headers: Vec<Header>,
    /// The MMR over all of them.
    pub mmr: Mmr,
    /// Cumulative work by height.
    pub total_work: Vec<U256>,
    /// Entry of the tip (to mine on).
    pub tip: ChainEntry,
}

impl FakeChain {
    /// Genesis only.
    pub fn new(params: &ChainParams) -> Self {
        let g = ChainEntry::genesis(params).expect("valid params");
        let mut mmr = Mmr::new();
        mmr.push(mmr_leaf(g.id, &g.target));
        FakeChain { headers: vec![g.header], mmr, total_work: vec![g.total_work], tip: g }
    }

    /// Appends mined entries (children of the tip, in order).
    pub fn push(&mut self, entries: &[ChainEntry]) {
        for e in entries {
            self.headers.push(e.header);
            self.mmr.push(mmr_leaf(e.id, &e.target));
            self.total_work.push(e.total_work);
            self.tip = e.clone();
        }
    }

    /// Mines `n` more headers with miner key `key`.
    pub fn grow(&mut self, params: &ChainParams, n: usize, key: [u8; 32]) {
        let mined = mine_keyed(params, &self.tip, n, 1, key);
        self.push(&mined);
    }

    /// A copy cut back to `height` (to fork from).
    pub fn truncated(&self, params: &ChainParams, height: u64) -> Self {
        let mut c = FakeChain::new(params);
        let mut parent = c.tip.clone();
        let mut entries = Vec::new();
        for h in &self.headers[1..=height as usize] {
            let t = h.bits.to_target().unwrap_or(U256::MAX);
            let e = parent.child(*h, t);
            entries.push(e.clone());
            parent = e;
        }
        c.push(&entries);
        c
    }

    /// Appends `n` headers whose output digests are made up: valid bits, MMR root,
    /// timestamps and a pow hash ground with BLAKE3 alone (no forward pass), so
    /// they pass every check but the pass. This is what a forger pays nearly
    /// nothing for: the digest is not examined until a pass is run on the header.
    pub fn grow_forged(&mut self, params: &ChainParams, n: usize) {
        let floor = now_ms().saturating_sub(600_000);
        let mut entries = Vec::with_capacity(n);
        let mut p = self.tip.clone();
        for i in 0..n {
            let mut h = Header {
                version: 1,
                height: p.header.height + 1,
                prev_id: p.id,
                timestamp_ms: if i == 0 { (p.header.timestamp_ms + 1).max(floor) } else { p.header.timestamp_ms + 1 },
                bits: next_bits(params, &p.header).expect("valid params"),
                body_root: [0; 32],
                mmr_root: p.mmr.root(),
                miner_key: [0xF0; 32],
                nonce: 0,
                output_digest: [0xAB; 32],
            };
            while check_pow_hash(&h).is_err() {
                h.nonce += 1;
            }
            let target = h.bits.to_target().unwrap_or(params.asert.max_target);
            let e = p.child(h, target);
            entries.push(e.clone());
            p = e;
        }
        self.push(&entries);
    }

    /// The forged-suffix attack on `honest`: fork at `depth` headers below its tip,
    /// put `depth` headers with made-up digests there ([`FakeChain::grow_forged`]),
    /// and mine `last + 1` real headers on top, so the forged chain claims more
    /// work than `honest` and its newest `last` headers (the ones a client checks
    /// fully) are all genuine.
    pub fn forged_suffix(params: &ChainParams, honest: &FakeChain, depth: u64, last: u64) -> Self {
        let mut c = honest.truncated(params, honest.height().saturating_sub(depth));
        c.grow_forged(params, depth as usize);
        c.grow(params, last as usize + 1, [0xF1; 32]);
        c
    }

    /// Tip height.
    pub fn height(&self) -> u64 {
        self.headers.len() as u64 - 1
    }
}

/// How a fake node misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lie {
    /// Honest.
    None,
    /// Announces ten times its real total work.
    InflateWork,
    /// Serves the header at this height with a changed output digest (its pow hash
    /// is recomputed by brute force over nonces, so only the forward pass can tell).
    ForgedPass(u64),
    /// Flips a byte in every MMR proof.
    BadProofs,
    /// Cuts the last byte off every header response.
    Truncate,
    /// Answers `/api/flyclient` with 250 samples, more than anyone may ask for.
    AbsurdCounts,
    /// Leaves the heaviest sample out of `/api/flyclient`.
    DropSample,
    /// Does not answer at all.
    Down,
    /// Says in `/api/chain` that it follows another genesis.
    OtherGenesis,
    /// Answers the sample for another tip id (what an honest node does when it
    /// reorganised between announcing its tip and answering).
    MovedTip,
}

/// An in-memory node.
pub struct FakeNode {
    /// Its best chain.
    pub chain: FakeChain,
    /// Its misbehaviour.
    pub lie: Lie,
    forged: Option<Header>,
    params: ChainParams,
}

impl FakeNode {
    /// A node serving `chain`, lying as `lie` says.
    pub fn new(params: &ChainParams, chain: FakeChain, lie: Lie) -> Self {
        let forged = match lie {
            Lie::ForgedPass(h) => chain.headers.get(h as usize).map(|orig| forge(params, orig)),
            _ => None,
        };
        FakeNode { chain, lie, forged, params: params.clone() }
    }

    fn header(&self, h: u64) -> Header {
        match self.forged {
            Some(f) if f.height == h => f,
            _ => self.chain.headers[h as usize],
        }
    }

    fn answer(&self, path: &str) -> Result<Vec<u8>, FetchError> {
        if self.lie == Lie::Down {
            return Err(FetchError::Unreachable("connection refused".into()));
        }
        let status = |status: u16, message: &str| FetchError::Status { status, message: message.to_string() };

        let (route, query) = path.split_once('?').unwrap_or((path, ""));
        let q: HashMap<&str, u64> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
            .collect();
        let seed = query.split('&').find_map(|kv| kv.strip_prefix("seed="));
        let tip = self.chain.height();
        match route {
            "/api/chain" => {
                let mut info = tpow_api::ChainInfo::of(&self.params);
                let genesis = self.header(0);
                let mut id = genesis.id();
                if self.lie == Lie::OtherGenesis {
                    id[0] ^= 1;
                }
                info.genesis_id = hex::encode(id);
                info.genesis_header = hex::encode(genesis.encode());
                info.genesis_timestamp_ms = genesis.timestamp_ms;
                Ok(json(&info))
            }
            "/api/tip" => {
                let mut work = self.chain.total_work[tip as usize];
                if self.lie == Lie::InflateWork {
                    work = work.saturating_mul(U256::from(10u8));
                }
                let h = self.header(tip);
                let target = h.bits.to_target().unwrap_or(self.params.asert.max_target);
                Ok(json(&tpow_api::Tip::new(tip, &h.id(), &work, &target, h.timestamp_ms)))
            }
            "/api/headers" => {
                let from = *q.get("from").ok_or_else(|| status(400, "missing from"))?;
                let count = q.get("count").copied().unwrap_or(1);
                if from > tip {
                    return Err(status(404, &format!("height {from} above tip")));
                }
                let end = (from + count).min(tip + 1);
                let mut out: Vec<u8> = (from..end).flat_map(|h| self.header(h).encode()).collect();
                if self.lie == Lie::Truncate {
                    out.pop();
                }
                Ok(out)
            }
            "/api/mmr-proof" => {
                let height = *q.get("height").ok_or_else(|| status(400, "missing height"))?;
                let at = q.get("tip").copied().unwrap_or(tip);
                if height >= at || at > tip {
                    return Err(status(404, "no such proof"));
                }
                let proof = self.proof(height, at)?;
                Ok(json(&tpow_api::MmrProofAnswer::new(&self.header(height), at, &self.header(at), &proof)))
            }
            "/api/flyclient" => {
                let at = q.get("tip").copied().unwrap_or(tip).min(tip);
                let last = q.get("last").copied().unwrap_or(10).clamp(1, at + 1);
                let security = q.get("security").copied().unwrap_or(50) as u32;
                let mut seed_bytes = [0u8; 32];
                hex::decode_to_slice(seed.ok_or_else(|| status(400, "missing seed"))?, &mut seed_bytes)
                    .map_err(|e| status(400, &format!("seed: {e}")))?;
                let first_last = at + 1 - last;
                let below = if first_last == 0 { U256::ZERO } else { self.chain.total_work[first_last as usize - 1] };
                let checked = self.chain.total_work[at as usize] - below;
                let draws = tpow_core::flyclient::draw_count(tpow_core::flyclient::levels(&checked, &below), security);
                if draws > tpow_core::flyclient::MAX_DRAWS {
                    return Err(status(400, "too many draws"));
                }
                let mut heights = tpow_core::flyclient::sample_heights(&seed_bytes, first_last, &checked, draws, |h| {
                    self.chain.total_work.get(h as usize).copied().unwrap_or_default()
                });
                if self.lie == Lie::DropSample && !heights.is_empty() {
                    heights.remove(heights.len() / 2);
                }
                let mut sampled = Vec::new();
                for h in heights {
                    let proof = self.proof(h, at)?;
                    sampled.push(tpow_api::FlySample::new(&self.header(h), &self.chain.total_work[h as usize], &proof));
                }
                if self.lie == Lie::AbsurdCounts {
                    sampled = sampled.first().map(|one| vec![one.clone(); 250]).unwrap_or_default();
                }
                let last: Vec<Header> = (first_last..=at).map(|h| self.header(h)).collect();
                let work = self.chain.total_work[at as usize];
                let mut answer = tpow_api::FlyAnswer::new((&self.header(at), &work), draws, &last, sampled);
                if self.lie == Lie::MovedTip {
                    let mut tip_id = self.header(at).id();
                    tip_id[0] ^= 1;
                    answer.tip_id = hex::encode(tip_id);
                }
                Ok(json(&answer))
            }
            _ => Err(status(404, &format!("no such endpoint {route}"))),
        }
    }

    fn proof(&self, height: u64, at: u64) -> Result<MmrProof, FetchError> {
        let mut p =
            self.chain.mmr.proof(height, at).map_err(|e| FetchError::Status { status: 400, message: e.to_string() })?;
        if self.lie == Lie::BadProofs {
            if let Some(s) = p.siblings.first_mut().or(p.peaks.first_mut()) {
                s.hash[0] ^= 1;
            }
        }
        Ok(p)
    }
}

/// A message as the node renders it.
fn json(v: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// A copy of `orig` with a wrong output digest whose pow hash still meets the
/// target (so the cheap checks pass and only the forward pass exposes it).
fn forge(_params: &ChainParams, orig: &Header) -> Header {
    let mut h = *orig;
    h.output_digest = [0xAB; 32];
    for nonce in 0.. {
        h.nonce = nonce;
        if check_pow_hash(&h).is_ok() {
            break;
        }
    }
    h
}

/// Fake nodes plus a native CPU engine: a [`Platform`] for tests and benchmarks.
pub struct FakeNet {
    nodes: HashMap<String, FakeNode>,
    cache: RefCell<ModelCache>,
    start: Instant,
    now_ms: Cell<u64>,
    seed: Cell<([u8; 32], u64)>,
    /// Requests served, per node URL.
    pub requests: RefCell<HashMap<String, u64>>,
}

impl FakeNet {
    /// A network of `nodes` (URL, node).
    pub fn new(nodes: Vec<(String, FakeNode)>) -> Self {
        FakeNet {
            nodes: nodes.into_iter().collect(),
            cache: RefCell::new(ModelCache::new()),
            start: Instant::now(),
            now_ms: Cell::new(now_ms()),
            seed: Cell::new(([0x5E; 32], 0)),
            requests: RefCell::new(HashMap::new()),
        }
    }

    /// Replaces a node's chain (it mined or reorganised).
    pub fn set_chain(&mut self, url: &str, chain: FakeChain) {
        if let Some(n) = self.nodes.get_mut(url) {
            n.chain = chain;
        }
    }

    /// Makes the client's randomness reproducible: its FlyClient seeds become
    /// `H("tpow testkit client seed", base ‖ LE64(counter))` for counter 0, 1, …
    pub fn with_seed(self, base: [u8; 32]) -> Self {
        self.seed.set((base, 0));
        self
    }

    /// A node.
    pub fn node(&self, url: &str) -> Option<&FakeNode> {
        self.nodes.get(url)
    }
}

impl Platform for FakeNet {
    async fn get(&self, node: &str, path: &str, _limit: usize) -> Result<Vec<u8>, FetchError> {
        *self.requests.borrow_mut().entry(node.to_string()).or_default() += 1;
        self.nodes.get(node).ok_or_else(|| FetchError::Unreachable("no such host".into()))?.answer(path)
    }

    async fn forward_pass(&self, input: &PowInput) -> Result<([u8; 32], Backend), EngineError> {
        let d = self.cache.borrow_mut().output_digest(input).map_err(|e| EngineError::Failed(e.to_string()))?;
        Ok((d, Backend::CpuNative))
    }

    fn unix_ms(&self) -> u64 {
        self.now_ms.get().max(now_ms())
    }

    fn monotonic_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1e3
    }

    fn random_seed(&self) -> Result<[u8; 32], EngineError> {
        let (base, n) = self.seed.get();
        self.seed.set((base, n + 1));
        Ok(tpow_core::hash::hash_parts("tpow testkit client seed", &[&base, &n.to_le_bytes()]))
    }
}
