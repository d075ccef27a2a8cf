//! The node's heartbeat: refreshes the state gauges of `/metrics` every second and
//! logs a one-line summary (height, peers, nonces/s, chat tok/s, mining share)
//! every [`LOG_EVERY`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::chain_state::TipInfo;
use crate::metrics;
use crate::mining::MinerStats;
use crate::p2p::PeerInfo;
use crate::scheduler::ComputeGate;

/// Interval of the log line.
pub const LOG_EVERY: Duration = Duration::from_secs(30);

/// What the summary reads.
pub struct Sources {
    pub tip: watch::Receiver<TipInfo>,
    pub peers: watch::Receiver<Vec<PeerInfo>>,
    pub miner: Option<Arc<MinerStats>>,
    pub gate: ComputeGate,
}

/// Runs until the runtime stops.
pub async fn run(src: Sources) {
    let m = metrics::get();
    m.mine_share.set(src.gate.share());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let attempts = || src.miner.as_ref().map_or(0, |s| s.attempts.load(Ordering::Relaxed));
    let tokens = || m.chat_tokens.get();
    let (mut last_attempts, mut last_at) = (attempts(), Instant::now());
    let (mut log_attempts, mut log_tokens, mut log_at) = (last_attempts, tokens(), last_at);
    loop {
        tick.tick().await;
        let (a, t, now) = (attempts(), tokens(), Instant::now());
        let secs = now.duration_since(last_at).as_secs_f64().max(1e-3);
        m.nonces_per_second.set(a.saturating_sub(last_attempts) as f64 / secs);
        (last_attempts, last_at) = (a, now);
        let height = src.tip.borrow().height;
        let peers = src.peers.borrow().len();
        m.best_height.set(i64::try_from(height).unwrap_or(i64::MAX));
        m.peers.set(peers as i64);
        m.chat_queue_depth.set(src.gate.demand() as i64);
        if now.duration_since(log_at) >= LOG_EVERY {
            let secs = now.duration_since(log_at).as_secs_f64();
            tracing::info!(
                "height {height} | peers {peers} | {:.0} nonces/s | chat {:.1} tok/s, queue {} | mining share {:.0}% while chat waits",
                a.saturating_sub(log_attempts) as f64 / secs,
                t.saturating_sub(log_tokens) as f64 / secs,
                src.gate.demand(),
                src.gate.share() * 100.0
            );
            (log_attempts, log_tokens, log_at) = (a, t, now);
        }
    }
}
