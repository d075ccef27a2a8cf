//! What the dashboard shows of the chain that tpow-light verified in this page
//! (the only verifier in the app: every rule is tpow-core's, run by tpow-light).

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
    /// What the verification guarantees (full, or FlyClient's security level).
    pub security: String,
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
