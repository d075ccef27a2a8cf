//! What the client knows about each configured node, and the order in which it
//! tries their chains.

use serde::Serialize;
use tpow_core::U256;

use crate::wire::TipClaim;

/// The verdict on one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "detail", rename_all = "kebab-case")]
pub enum NodeState {
    /// Not asked yet.
    Unknown,
    /// Serves the chain the client verified and follows.
    Ok,
    /// Serves a valid chain with less work than the best (or has not caught up).
    Behind,
    /// Could not be reached; not blamed.
    Unreachable(String),
    /// Served invalid data (forged proof of work, wrong proofs, a false work claim,
    /// malformed bytes): flagged as lying, its claims are ignored until the next sync.
    Invalid(String),
}

/// One node as the UI shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    /// Base URL (`http://127.0.0.1:8645`).
    pub url: String,
    /// Verdict.
    #[serde(flatten)]
    pub state: NodeState,
    /// Height of the tip it last announced.
    pub claimed_height: Option<u64>,
    /// Work it last announced, decimal.
    pub claimed_work: Option<String>,
    /// Whether its `/api/chain` named our genesis (asked once per node).
    #[serde(skip)]
    pub same_chain: bool,
}

impl NodeStatus {
    /// A node not asked yet.
    pub fn new(url: &str) -> Self {
        NodeStatus {
            url: url.to_string(),
            state: NodeState::Unknown,
            claimed_height: None,
            claimed_work: None,
            same_chain: false,
        }
    }

    /// Records an announced tip.
    pub fn claim(&mut self, tip: &TipClaim) {
        self.claimed_height = Some(tip.height);
        self.claimed_work = Some(tip.total_work.to_string());
    }

    /// Whether the node was caught serving invalid data.
    pub fn is_flagged(&self) -> bool {
        matches!(self.state, NodeState::Invalid(_))
    }
}

/// Node indices in the order their chains should be tried: most claimed work
/// first, configuration order on ties, nodes without a claim left out. Trying
/// in this order and stopping at the first chain that verifies *with the work it
/// claimed* yields the most-work valid chain: every node not yet tried claims no
/// more.
pub fn try_order(claims: &[Option<TipClaim>]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..claims.len()).filter(|&i| claims[i].is_some()).collect();
    let work = |i: usize| claims[i].as_ref().map(|c| c.total_work).unwrap_or(U256::ZERO);
    idx.sort_by(|&a, &b| work(b).cmp(&work(a)).then(a.cmp(&b)));
    idx
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn most_claimed_work_first() {
        let c = |w: u64| Some(TipClaim { height: w, id: [0; 32], total_work: U256::from(w) });
        assert_eq!(try_order(&[c(5), None, c(9), c(5)]), vec![2, 0, 3]);
        assert!(try_order(&[None, None]).is_empty());
    }
}
