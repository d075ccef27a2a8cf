//! The chain as this page has verified it, and what the dashboard shows of it.
//!
//! `LocalChain` wraps tpow-core's sans-io `HeaderChain`: the page feeds it headers
//! it downloaded, runs the forward pass on whatever engine it has (WebGPU or the
//! CPU in wasm) and reports the digest back; the rules themselves (linkage, time,
//! ASERT, MMR, pow hash, output digest, fork choice) are tpow-core's.

use std::collections::BTreeMap;

use tpow_core::chain::{genesis_header, PendingHeader};
use tpow_core::{ChainParams, Header, HeaderChain, HeaderError, InsertOutcome};

use crate::units::difficulty;

/// Rows the dashboard keeps.
pub const MAX_ROWS: usize = 40;

/// How far a header got.
#[derive(Clone, Debug, PartialEq)]
pub enum Verification {
    /// Downloaded, cheap checks passed, forward pass not run yet.
    Pending,
    /// Fully verified: the forward pass reproduced the output digest.
    Verified {
        /// Engine that ran the forward pass.
        backend: String,
        /// Milliseconds it took (derivation and pass).
        ms: f64,
    },
    /// Rejected, with the reason.
    Failed(String),
}

/// One header as the dashboard lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct HeaderRow {
    /// Height.
    pub height: u64,
    /// Id, hex.
    pub id: String,
    /// Timestamp (unix ms).
    pub timestamp_ms: u64,
    /// Expected attempts per block at its target.
    pub difficulty: f64,
    /// State of its verification.
    pub status: Verification,
}

/// The best verified tip.
#[derive(Clone, Debug, PartialEq)]
pub struct TipView {
    /// Height.
    pub height: u64,
    /// Id, hex.
    pub id: String,
    /// Cumulative work, decimal.
    pub total_work: String,
    /// Expected attempts per block at the tip's target.
    pub difficulty: f64,
}

/// Why the chain could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The node names a chain this app does not know.
    #[error("unknown chain {0:?}")]
    UnknownChain(String),
    /// The node's genesis is not the genesis of that chain.
    #[error("the node's genesis header does not match chain {0}")]
    Genesis(String),
    /// Bytes that are not a header.
    #[error("undecodable header: {0}")]
    Decode(String),
}

/// The verified chain and the dashboard rows.
pub struct LocalChain {
    chain: HeaderChain,
    rows: BTreeMap<u64, HeaderRow>,
}

impl LocalChain {
    /// Starts from the node's genesis header. A devnet's genesis time is chosen when
    /// the devnet starts, so it is taken from the header; everything else (bits, the
    /// model, ASERT) must be the named chain's, which the id comparison enforces.
    pub fn from_genesis(chain_name: &str, genesis_bytes: &[u8]) -> Result<LocalChain, ChainError> {
        let mut params = ChainParams::by_name(chain_name).ok_or_else(|| ChainError::UnknownChain(chain_name.into()))?;
        let g = Header::decode(genesis_bytes).map_err(|e| ChainError::Decode(e.to_string()))?;
        params.genesis_timestamp_ms = g.timestamp_ms;
        if genesis_header(&params).id() != g.id() {
            return Err(ChainError::Genesis(chain_name.into()));
        }
        let chain = HeaderChain::new(params);
        let mut lc = LocalChain { chain, rows: BTreeMap::new() };
        let genesis = lc.chain.tip().clone();
        lc.set_row(&genesis.header, Verification::Verified { backend: "genesis".into(), ms: 0.0 });
        Ok(lc)
    }

    /// Chain parameters in use.
    pub fn params(&self) -> &ChainParams {
        self.chain.params()
    }

    /// Height of the best verified header.
    pub fn height(&self) -> u64 {
        self.chain.height()
    }

    /// Whether the header with this id is verified (on any branch).
    pub fn knows(&self, id: &[u8; 32]) -> bool {
        self.chain.get(id).is_some()
    }

    /// The cheap checks; on success the header is listed as pending.
    pub fn precheck(&mut self, header: &Header, now_ms: u64) -> Result<PendingHeader, HeaderError> {
        let p = self.chain.precheck(header, now_ms)?;
        self.set_row(header, Verification::Pending);
        Ok(p)
    }

    /// Finishes a header with the digest an engine computed.
    pub fn complete(
        &mut self,
        pending: PendingHeader,
        digest: &[u8; 32],
        backend: &str,
        ms: f64,
    ) -> Result<InsertOutcome, HeaderError> {
        let header = *pending.header();
        let outcome = pending.complete(digest).and_then(|v| self.chain.insert(v));
        match &outcome {
            Ok(_) => self.set_row(&header, Verification::Verified { backend: backend.into(), ms }),
            Err(e) => self.set_row(&header, Verification::Failed(e.to_string())),
        }
        if let Ok(InsertOutcome::NewTip { removed, .. }) = &outcome {
            if !removed.is_empty() {
                // A reorg: show the new best chain's headers at those heights.
                for h in self.chain.tip().header.height.saturating_sub(MAX_ROWS as u64)..=self.height() {
                    if let Some(e) = self.chain.at_height(h) {
                        let id = hex::encode(e.id);
                        if self.rows.get(&h).is_some_and(|r| r.id != id) {
                            let header = e.header;
                            self.set_row(&header, Verification::Verified { backend: "reorg".into(), ms: 0.0 });
                        }
                    }
                }
            }
        }
        outcome
    }

    /// Lists a downloaded header as pending until its checks run.
    pub fn note_downloaded(&mut self, header: &Header) {
        self.set_row(header, Verification::Pending);
    }

    /// Lists a header that failed its checks.
    pub fn mark_failed(&mut self, header: &Header, reason: String) {
        self.set_row(header, Verification::Failed(reason));
    }

    fn set_row(&mut self, header: &Header, status: Verification) {
        let target = header.bits.to_target().unwrap_or_default();
        self.rows.insert(
            header.height,
            HeaderRow {
                height: header.height,
                id: hex::encode(header.id()),
                timestamp_ms: header.timestamp_ms,
                difficulty: difficulty(&target),
                status,
            },
        );
        while self.rows.len() > MAX_ROWS {
            self.rows.pop_first();
        }
    }

    /// Rows, newest first.
    pub fn rows(&self) -> Vec<HeaderRow> {
        self.rows.values().rev().cloned().collect()
    }

    /// The best verified tip.
    pub fn tip(&self) -> TipView {
        let t = self.chain.tip();
        TipView {
            height: t.header.height,
            id: hex::encode(t.id),
            total_work: t.total_work.to_string(),
            difficulty: difficulty(&t.target),
        }
    }

    /// Difficulty and block time (seconds) of the last `n` best-chain headers, oldest
    /// first (a block's time is the gap to its parent; genesis has none).
    pub fn series(&self, n: u64) -> (Vec<f64>, Vec<f64>) {
        let top = self.height();
        let from = top.saturating_sub(n).max(1);
        let mut diff = Vec::new();
        let mut times = Vec::new();
        for h in from..=top {
            let (Some(e), Some(p)) = (self.chain.at_height(h), self.chain.at_height(h - 1)) else { continue };
            diff.push(difficulty(&e.target));
            times.push(e.header.timestamp_ms.saturating_sub(p.header.timestamp_ms) as f64 / 1000.0);
        }
        (diff, times)
    }
}

/// A node as the dashboard shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeView {
    /// Base URL.
    pub url: String,
    /// Its state.
    pub state: NodeState,
}

/// Whether a node answers.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeState {
    /// Not asked yet.
    Connecting,
    /// It answered `/api/health`.
    Online {
        /// Chain it follows.
        chain: String,
        /// Its best height.
        height: u64,
        /// Its peer count, where known.
        peers: Option<u64>,
    },
    /// It did not answer (or answered nonsense).
    Unreachable(String),
}

/// Everything the chain view shows, produced by a chain source.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ChainSnapshot {
    /// Chain name, once a node said it.
    pub chain: String,
    /// Best verified tip.
    pub tip: Option<TipView>,
    /// Recent headers, newest first.
    pub rows: Vec<HeaderRow>,
    /// Difficulty of recent blocks, oldest first.
    pub difficulty: Vec<f64>,
    /// Block times (seconds) of recent blocks, oldest first.
    pub block_times: Vec<f64>,
    /// Height verified by this page.
    pub verified_height: u64,
    /// Best height any node reports.
    pub network_height: u64,
    /// The nodes asked.
    pub nodes: Vec<NodeView>,
    /// Engine that verifies forward passes.
    pub engine: String,
    /// Something the person should know (WebGPU missing, all nodes down).
    pub notice: Option<String>,
}

impl ChainSnapshot {
    /// Sync progress in 0..=1.
    pub fn progress(&self) -> f64 {
        if self.network_height == 0 {
            return if self.tip.is_some() { 1.0 } else { 0.0 };
        }
        (self.verified_height as f64 / self.network_height as f64).min(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tpow_core::chain::ModelCache;

    fn mine(chain: &HeaderChain, t: u64) -> Header {
        let mut cache = ModelCache::new();
        let mut h = chain.next_template([1; 32], [2; 32], t);
        let target = h.bits.to_target().expect("valid bits");
        let model = cache.model(&chain.params().model, &h.prev_id).expect("spec").clone();
        let mut solver = tpow_core::puzzle::Solver::new(&model);
        for nonce in 0.. {
            let a = solver.attempt(&h.template(), nonce);
            if tpow_core::target::hash_meets_target(&a.pow_hash, &target) {
                h.nonce = nonce;
                h.output_digest = a.output_digest;
                return h;
            }
        }
        unreachable!("the nonce space is not exhausted on devnet")
    }

    fn devnet_at(genesis_ms: u64) -> ChainParams {
        let mut p = ChainParams::devnet();
        p.genesis_timestamp_ms = genesis_ms;
        p
    }

    #[test]
    fn verifies_headers_and_rejects_a_wrong_digest() {
        let params = devnet_at(1_800_000_000_000);
        let genesis = genesis_header(&params).encode();
        let mut lc = LocalChain::from_genesis("devnet", &genesis).expect("genesis");
        let mut miner = HeaderChain::new(params.clone());
        let mut cache = ModelCache::new();
        let mut headers = Vec::new();
        for i in 1..=3u64 {
            let h = mine(&miner, params.genesis_timestamp_ms + 2_000 * i);
            miner.submit_cpu(&h, h.timestamp_ms, &mut cache).expect("mined header is valid");
            headers.push(h);
        }
        let now = headers[2].timestamp_ms;
        for h in &headers[..2] {
            let p = lc.precheck(h, now).expect("cheap checks pass");
            assert_eq!(lc.rows()[0].status, Verification::Pending);
            let d = cache.output_digest(&p.pow_input()).expect("digest");
            lc.complete(p, &d, "CPU", 1.0).expect("valid");
        }
        assert_eq!(lc.height(), 2);
        assert_eq!(lc.tip().id, hex::encode(headers[1].id()));
        assert_eq!(lc.rows()[0].status, Verification::Verified { backend: "CPU".into(), ms: 1.0 });
        let (diff, times) = lc.series(10);
        assert_eq!(diff.len(), 2);
        assert_eq!(times, vec![2.0, 2.0]);

        // The third header with a digest that is not its forward pass's fails.
        let p = lc.precheck(&headers[2], now).expect("cheap checks pass");
        assert_eq!(lc.complete(p, &[0; 32], "CPU", 1.0), Err(HeaderError::OutputDigest));
        assert!(matches!(lc.rows()[0].status, Verification::Failed(_)));
        assert_eq!(lc.height(), 2);
    }

    #[test]
    fn genesis_must_be_the_named_chains() {
        let params = devnet_at(1_800_000_000_000);
        let mut g = genesis_header(&params);
        assert!(LocalChain::from_genesis("devnet", &g.encode()).is_ok());
        assert!(matches!(LocalChain::from_genesis("nochain", &g.encode()), Err(ChainError::UnknownChain(_))));
        assert!(matches!(LocalChain::from_genesis("mainnet", &g.encode()), Err(ChainError::Genesis(_))));
        g.miner_key = [9; 32];
        assert!(matches!(LocalChain::from_genesis("devnet", &g.encode()), Err(ChainError::Genesis(_))));
        assert!(matches!(LocalChain::from_genesis("devnet", &[0; 10]), Err(ChainError::Decode(_))));
    }

    #[test]
    fn progress_is_verified_over_network_height() {
        let mut s = ChainSnapshot::default();
        assert_eq!(s.progress(), 0.0);
        s.network_height = 10;
        s.verified_height = 5;
        assert_eq!(s.progress(), 0.5);
        s.verified_height = 12;
        assert_eq!(s.progress(), 1.0);
    }
}
