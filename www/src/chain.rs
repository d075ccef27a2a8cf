//! What the dashboard shows of the chain that tpow-light verified in this page
//! (the only verifier in the app: every rule is tpow-core's, run by tpow-light).

/// Rows the dashboard keeps.
pub const MAX_ROWS: usize = 40;

/// Devnet chains up to this height are verified in full (every header's forward
/// pass); longer ones, and every mainnet chain, are sampled. A devnet pass is about
/// 0.2 ms and a full sync of 12,140 headers took 7.55 s on the simd128 CPU worker
/// (docs/BENCHMARKS.md), so 10,000 headers is a few seconds on the CPU, where a
/// 100,000-header devnet would take minutes. A mainnet pass is 17 ms (simd128) to
/// about 1 s (software WebGPU): one year is 525,600 headers, so mainnet is always
/// sampled (about 450 passes at that length).
pub const DEVNET_FULL_MAX_HEADERS: u64 = 10_000;

/// How the chain view's light client verifies the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Every header's forward pass.
    Full,
    /// FlyClient (PROTOCOL.md §16): the newest headers in full plus a sample drawn
    /// from randomness this page chooses. A chain shorter than the sample is still
    /// checked header by header (tpow-light decides that by itself).
    Sampled,
}

impl SyncMode {
    /// The mode for the network a node reports (`/api/health`'s `chain`) at the
    /// height it reports: full on a devnet of at most
    /// [`DEVNET_FULL_MAX_HEADERS`], sampled on mainnet (and on any other name:
    /// tpow-light only knows the two presets and refuses the rest). `requested`
    /// (the page's `?sync=full|sampled`) overrides the choice. A node that lies
    /// about its height can only move a devnet between the two modes, both sound;
    /// one that lies about its chain's name is refused by its genesis.
    pub fn choose(chain: &str, height: u64, requested: Option<&str>) -> SyncMode {
        match requested {
            Some("full") => return SyncMode::Full,
            Some("sampled") => return SyncMode::Sampled,
            _ => {}
        }
        if chain == "devnet" && height <= DEVNET_FULL_MAX_HEADERS {
            SyncMode::Full
        } else {
            SyncMode::Sampled
        }
    }

    /// tpow-light's name of the mode (`LightOptions::mode`).
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::Full => "full",
            SyncMode::Sampled => "sampled",
        }
    }

    /// What a chain verified in this mode is guaranteed to be, in words: sampled
    /// with the `last` newest headers in full and `security_bits` bits.
    pub fn guarantee(self, last: u64, security_bits: u32) -> String {
        match self {
            SyncMode::Full => "every header's forward pass re-run in this tab (full sync)".into(),
            SyncMode::Sampled => format!(
                "2^-{security_bits} against an attacker with < 50 % of the work \
                 (FlyClient: the newest {last} headers and a sample drawn by this tab re-run here)"
            ),
        }
    }
}

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
    fn mode_follows_the_network() {
        // Mainnet is sampled at every length, even a new chain's.
        for h in [0, 1, 500, DEVNET_FULL_MAX_HEADERS, 100_000, 10_000_000] {
            assert_eq!(SyncMode::choose("mainnet", h, None), SyncMode::Sampled, "mainnet at {h}");
        }
        // A devnet is verified in full until it is long.
        assert_eq!(SyncMode::choose("devnet", 0, None), SyncMode::Full);
        assert_eq!(SyncMode::choose("devnet", DEVNET_FULL_MAX_HEADERS, None), SyncMode::Full);
        assert_eq!(SyncMode::choose("devnet", DEVNET_FULL_MAX_HEADERS + 1, None), SyncMode::Sampled);
        assert_eq!(SyncMode::choose("devnet", 100_000, None), SyncMode::Sampled);
        // A name tpow-light does not know is never given the cheap path.
        assert_eq!(SyncMode::choose("testnet", 10, None), SyncMode::Sampled);
        // The page's ?sync= overrides; anything else is ignored.
        assert_eq!(SyncMode::choose("mainnet", 5, Some("full")), SyncMode::Full);
        assert_eq!(SyncMode::choose("devnet", 5, Some("sampled")), SyncMode::Sampled);
        assert_eq!(SyncMode::choose("mainnet", 5, Some("fast")), SyncMode::Sampled);
        assert_eq!(SyncMode::Full.as_str(), "full");
        assert_eq!(SyncMode::Sampled.as_str(), "sampled");
    }

    #[test]
    fn guarantee_states_the_security_level() {
        let g = SyncMode::Sampled.guarantee(100, 50);
        assert!(g.starts_with("2^-50 against an attacker with < 50 % of the work"), "{g}");
        assert!(g.contains("newest 100 headers"), "{g}");
        assert!(SyncMode::Full.guarantee(100, 50).contains("every header"));
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
