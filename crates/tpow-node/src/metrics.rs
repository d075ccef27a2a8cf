//! Operator accounting: what the node's compute went to (proof of work, chat,
//! verification), exported at `GET /metrics` in the Prometheus text format.
//!
//! One process-wide set of instruments ([`get`]): every part of the node records
//! into it without threading a handle through each constructor, as is usual for
//! Prometheus clients. Values that are states rather than events (height, peers,
//! queue depth, nonces/s) are gauges refreshed by the node's summary task.

use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// What a slice of compute time was spent on.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Kind {
    /// Proof-of-work forward passes of this node's miner.
    Mining,
    /// Chat generation (prompt processing and decoding).
    #[cfg_attr(not(feature = "chat"), allow(dead_code))]
    Chat,
    /// Forward passes that verify received blocks and browser shares.
    Verification,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Mining => "mining",
            Kind::Chat => "chat",
            Kind::Verification => "verification",
        }
    }
}

/// Label set of [`Metrics::compute_seconds`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    kind: &'static str,
}

/// The node's instruments.
pub struct Metrics {
    registry: Registry,
    /// Forward passes this node's miner ran (CPU and GPU).
    pub pow_forward_passes: Counter,
    /// Forward passes run to verify blocks from peers, the node's own miner and
    /// browser shares (what an attacker can try to make the node spend).
    pub verification_passes: Counter,
    /// Of those, passes the GPU ran during sync (`--gpu`).
    pub verification_gpu_passes: Counter,
    /// Headers accepted without a forward pass under `--assume-valid`.
    pub verification_assumed: Counter,
    /// Models derived for verification.
    pub verification_derivations: Counter,
    /// Thread seconds spent deriving models for verification.
    pub verification_derive_seconds: Counter<f64, AtomicU64>,
    /// Thread seconds spent in verification forward passes.
    pub verification_pass_seconds: Counter<f64, AtomicU64>,
    /// Blocks this node's miner found and stored.
    pub blocks_found: Counter,
    /// Mining rate over the last summary interval.
    pub nonces_per_second: Gauge<f64, AtomicU64>,
    /// Shares from browser miners that passed verification.
    pub shares_accepted: Counter,
    /// Shares from browser miners that were refused (stale, duplicate, invalid).
    pub shares_rejected: Counter,
    /// Chat requests accepted into the engine's queue.
    pub chat_requests: Counter,
    /// Chat requests refused because the queue or the KV cache was full.
    pub chat_rejected_busy: Counter,
    /// Tokens the chat engine generated.
    pub chat_tokens: Counter,
    /// Request received -> first token sent.
    pub chat_ttft_seconds: Histogram,
    /// Chat requests queued or running.
    pub chat_queue_depth: Gauge,
    /// Sequences in each forward pass of the chat engine (continuous batching).
    pub chat_batch_size: Histogram,
    /// Chat generations cancelled because the client went away.
    pub chat_cancelled: Counter,
    /// KV-cache memory budget of the chat engine.
    pub chat_kv_cache_budget_bytes: Gauge,
    /// KV-cache bytes reserved by queued and running chat requests.
    pub chat_kv_cache_reserved_bytes: Gauge,
    /// KV-cache bytes the chat engine has allocated.
    pub chat_kv_cache_allocated_bytes: Gauge,
    /// Seconds of compute by kind (wall-clock time the work held its threads).
    pub compute_seconds: Family<KindLabel, Counter<f64, AtomicU64>>,
    /// New tip seen -> first nonce tried on the new block's model.
    pub miner_switch_seconds: Histogram,
    /// Largest share of compute mining may take while chat waits (`--mine-share`).
    pub mine_share: Gauge<f64, AtomicU64>,
    /// Connected peers.
    pub peers: Gauge,
    /// Height of the best tip.
    pub best_height: Gauge,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tpow");
        let m = Metrics {
            pow_forward_passes: Counter::default(),
            verification_passes: Counter::default(),
            verification_gpu_passes: Counter::default(),
            verification_assumed: Counter::default(),
            verification_derivations: Counter::default(),
            verification_derive_seconds: Counter::default(),
            verification_pass_seconds: Counter::default(),
            blocks_found: Counter::default(),
            nonces_per_second: Gauge::default(),
            shares_accepted: Counter::default(),
            shares_rejected: Counter::default(),
            chat_requests: Counter::default(),
            chat_rejected_busy: Counter::default(),
            chat_tokens: Counter::default(),
            // 10 ms .. ~20 s.
            chat_ttft_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 12)),
            chat_queue_depth: Gauge::default(),
            // 1, 2, 4, ... 64 sequences per step.
            chat_batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 7)),
            chat_cancelled: Counter::default(),
            chat_kv_cache_budget_bytes: Gauge::default(),
            chat_kv_cache_reserved_bytes: Gauge::default(),
            chat_kv_cache_allocated_bytes: Gauge::default(),
            compute_seconds: Family::default(),
            // 0.1 ms .. ~3 s.
            miner_switch_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            mine_share: Gauge::default(),
            peers: Gauge::default(),
            best_height: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "pow_forward_passes",
            "Proof-of-work forward passes run by this node's miner",
            m.pow_forward_passes.clone(),
        );
        registry.register(
            "verification_forward_passes",
            "Forward passes run to verify blocks and shares received",
            m.verification_passes.clone(),
        );
        registry.register(
            "verification_gpu_forward_passes",
            "Of the verification passes, those the GPU ran (--gpu)",
            m.verification_gpu_passes.clone(),
        );
        registry.register(
            "verification_assumed_headers",
            "Headers accepted without a forward pass under --assume-valid",
            m.verification_assumed.clone(),
        );
        registry.register(
            "verification_model_derivations",
            "Models derived to verify blocks",
            m.verification_derivations.clone(),
        );
        registry.register(
            "verification_derive_seconds",
            "Thread seconds spent deriving models to verify blocks",
            m.verification_derive_seconds.clone(),
        );
        registry.register(
            "verification_pass_seconds",
            "Thread seconds spent in forward passes to verify blocks",
            m.verification_pass_seconds.clone(),
        );
        registry.register("blocks_found", "Blocks mined by this node and stored", m.blocks_found.clone());
        registry.register(
            "nonces_per_second",
            "Mining rate over the last summary interval",
            m.nonces_per_second.clone(),
        );
        registry.register(
            "shares_accepted",
            "Browser-miner shares that passed verification",
            m.shares_accepted.clone(),
        );
        registry.register(
            "shares_rejected",
            "Browser-miner shares refused (stale, duplicate or invalid)",
            m.shares_rejected.clone(),
        );
        registry.register("chat_requests", "Chat requests accepted into the generation queue", m.chat_requests.clone());
        registry.register(
            "chat_rejected_busy",
            "Chat requests refused because the queue was full",
            m.chat_rejected_busy.clone(),
        );
        registry.register("chat_tokens_generated", "Tokens generated by the chat engine", m.chat_tokens.clone());
        registry.register(
            "chat_time_to_first_token_seconds",
            "Chat request received to first token",
            m.chat_ttft_seconds.clone(),
        );
        registry.register("chat_queue_depth", "Chat requests queued or running", m.chat_queue_depth.clone());
        registry.register(
            "chat_batch_size",
            "Sequences per forward pass of the chat engine",
            m.chat_batch_size.clone(),
        );
        registry.register(
            "chat_cancelled",
            "Chat generations cancelled because the client went away",
            m.chat_cancelled.clone(),
        );
        registry.register(
            "chat_kv_cache_budget_bytes",
            "KV-cache memory budget of the chat engine",
            m.chat_kv_cache_budget_bytes.clone(),
        );
        registry.register(
            "chat_kv_cache_reserved_bytes",
            "KV-cache bytes reserved by queued and running chat requests",
            m.chat_kv_cache_reserved_bytes.clone(),
        );
        registry.register(
            "chat_kv_cache_allocated_bytes",
            "KV-cache bytes allocated by the chat engine",
            m.chat_kv_cache_allocated_bytes.clone(),
        );
        registry.register("compute_seconds", "Seconds of compute by kind of work", m.compute_seconds.clone());
        registry.register(
            "miner_switch_seconds",
            "New tip seen to first nonce on the new model",
            m.miner_switch_seconds.clone(),
        );
        registry.register("mine_share", "Largest share of compute mining takes while chat waits", m.mine_share.clone());
        registry.register("peers", "Connected peers", m.peers.clone());
        registry.register("best_height", "Height of the best tip", m.best_height.clone());
        Metrics { registry, ..m }
    }

    /// Records one batch's verification: wall time as compute, and its costs.
    pub fn record_verification(&self, elapsed: Duration, stats: &crate::chain_state::VerifyStats) {
        self.add_compute(Kind::Verification, elapsed);
        self.verification_passes.inc_by(stats.passes as u64);
        self.verification_gpu_passes.inc_by(stats.offloaded as u64);
        self.verification_assumed.inc_by(stats.assumed as u64);
        self.verification_derivations.inc_by(stats.derivations as u64);
        self.verification_derive_seconds.inc_by(stats.derive.as_secs_f64());
        self.verification_pass_seconds.inc_by(stats.pass.as_secs_f64());
    }

    /// Adds `elapsed` to the compute time of `kind`.
    pub fn add_compute(&self, kind: Kind, elapsed: Duration) {
        self.compute_seconds.get_or_create(&KindLabel { kind: kind.label() }).inc_by(elapsed.as_secs_f64());
    }

    /// The exposition text of every instrument.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The process-wide instruments.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_instrument_and_moves() {
        let m = Metrics::new();
        m.pow_forward_passes.inc_by(7);
        m.add_compute(Kind::Chat, Duration::from_millis(1500));
        m.chat_ttft_seconds.observe(0.2);
        let text = m.encode();
        assert!(text.contains("tpow_pow_forward_passes_total 7"), "{text}");
        assert!(text.contains("tpow_compute_seconds_total{kind=\"chat\"} 1.5"), "{text}");
        assert!(text.contains("tpow_chat_time_to_first_token_seconds_count 1"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
