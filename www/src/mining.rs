//! The in-tab miner's arithmetic and its messages between the page and the Web
//! Workers. The loop itself runs in `bin/miner_worker.rs`; everything here is plain
//! Rust so that it is tested natively against tpow-core.

use serde::{Deserialize, Serialize};
use tpow_core::header::{HEADER_LEN, TEMPLATE_LEN};
use tpow_core::puzzle::{Attempt, Solver};
use tpow_core::target::hash_meets_target;
use tpow_core::{Model, ModelSpec, U256};

use crate::api::Work;
use crate::units::parse_target;

/// Which engine the miner should use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backend {
    /// WebGPU through tpow-gpu (falls back to the CPU if there is no adapter).
    WebGpu,
    /// The portable forward pass compiled to wasm.
    Cpu,
}

/// Page → worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToWorker {
    /// Start mining (the page terminates the worker to stop it).
    Start {
        /// Node base URL whose `/api/work` to use.
        node: String,
        /// Miner key, 64 hex digits.
        miner_key: String,
        /// Requested engine.
        backend: Backend,
        /// Percentage of the time spent computing (1..=100); the rest is sleep.
        duty_percent: u8,
    },
}

/// Worker → page: cumulative counters of this worker since its start.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerReport {
    /// Engine actually in use (`WebGPU (adapter)` or `CPU (wasm)`).
    pub engine: String,
    /// Why the requested engine is not the one in use, if so.
    pub fallback: Option<String>,
    /// Nonces tried.
    pub attempts: u64,
    /// Attempts per second over the last few seconds.
    pub hashrate: f64,
    /// Shares posted.
    pub shares_sent: u64,
    /// Shares the node accepted.
    pub shares_accepted: u64,
    /// Shares that were blocks.
    pub blocks: u64,
    /// Height being mined.
    pub height: u64,
    /// The last problem (node unreachable, stale work), if any.
    pub error: Option<String>,
}

/// Work decoded into what the search needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    /// Height of the block being mined.
    pub height: u64,
    /// Parent id: the model's seed.
    pub prev_id: [u8; 32],
    /// The 152 template bytes.
    pub template: [u8; TEMPLATE_LEN],
    /// Share target (what gets submitted).
    pub share_target: U256,
    /// Block target.
    pub target: U256,
    /// Model shape.
    pub spec: ModelSpec,
}

/// Why `/api/work` could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// A hex field has the wrong length or digits.
    #[error("work field {0} is malformed")]
    Field(&'static str),
    /// The model shape is not one the forward pass accepts.
    #[error("work names an invalid model: {0}")]
    Spec(#[from] tpow_core::spec::SpecError),
}

impl Job {
    /// Decodes and checks a `/api/work` answer.
    pub fn from_work(w: &Work) -> Result<Job, JobError> {
        let spec = ModelSpec::from(w.model);
        spec.validate()?;
        Ok(Job {
            height: w.height,
            prev_id: hex_array(&w.prev_id).ok_or(JobError::Field("prev_id"))?,
            template: hex_array(&w.template).ok_or(JobError::Field("template"))?,
            share_target: parse_target(&w.share_target).ok_or(JobError::Field("share_target"))?,
            target: parse_target(&w.target).ok_or(JobError::Field("target"))?,
            spec,
        })
    }
}

fn hex_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    hex::decode(s).ok()?.try_into().ok()
}

/// The complete header of a found nonce: template ‖ nonce (u64 LE) ‖ output digest.
pub fn assemble_header(template: &[u8; TEMPLATE_LEN], attempt: &Attempt) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..TEMPLATE_LEN].copy_from_slice(template);
    h[TEMPLATE_LEN..TEMPLATE_LEN + 8].copy_from_slice(&attempt.nonce.to_le_bytes());
    h[TEMPLATE_LEN + 8..].copy_from_slice(&attempt.output_digest);
    h
}

/// Tries `count` nonces from `start` (wrapping) on the CPU; returns the attempts
/// meeting the share target.
pub fn cpu_search(model: &Model, job: &Job, start: u64, count: u64) -> Vec<Attempt> {
    let mut solver = Solver::new(model);
    (0..count)
        .map(|i| solver.attempt(&job.template, start.wrapping_add(i)))
        .filter(|a| hash_meets_target(&a.pow_hash, &job.share_target))
        .collect()
}

/// How long to rest after computing for `busy_ms` so that computing takes
/// `duty_percent` of the time.
pub fn rest_ms(busy_ms: f64, duty_percent: u8) -> f64 {
    let duty = f64::from(duty_percent.clamp(1, 100)) / 100.0;
    busy_ms * (1.0 - duty) / duty
}

/// Default number of workers: half the logical cores, at least one.
pub fn default_workers(hardware_concurrency: u32) -> u32 {
    (hardware_concurrency / 2).max(1)
}

/// Hashrate over a sliding window of `(time_ms, cumulative attempts)` samples.
#[derive(Default)]
pub struct RateMeter {
    samples: std::collections::VecDeque<(f64, u64)>,
}

impl RateMeter {
    /// Records a sample and returns the rate (per second) over the last `window_ms`.
    pub fn sample(&mut self, now_ms: f64, total: u64, window_ms: f64) -> f64 {
        self.samples.push_back((now_ms, total));
        while self.samples.len() > 2 && self.samples.front().is_some_and(|&(t, _)| now_ms - t > window_ms) {
            self.samples.pop_front();
        }
        match (self.samples.front(), self.samples.back()) {
            (Some(&(t0, a0)), Some(&(t1, a1))) if t1 > t0 => (a1.saturating_sub(a0)) as f64 * 1000.0 / (t1 - t0),
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tpow_core::puzzle::pow_hash_of_encoded;
    use tpow_core::Header;

    fn job(share_target: U256) -> Job {
        let params = tpow_core::ChainParams::devnet();
        let genesis = tpow_core::chain::genesis_header(&params);
        let chain = tpow_core::HeaderChain::new(params.clone()).expect("valid params");
        let header = chain.next_template([3; 32], [4; 32], params.genesis_timestamp_ms + 2000);
        Job {
            height: 1,
            prev_id: genesis.id(),
            template: header.template(),
            share_target,
            target: share_target,
            spec: params.model,
        }
    }

    #[test]
    fn found_shares_meet_the_target_and_assemble_into_valid_headers() {
        // One in 16 attempts is a share: 200 attempts find some, and not all pass.
        let j = job(U256::MAX >> 4usize);
        let model = Model::derive(&j.spec, &j.prev_id).expect("devnet spec");
        let shares = cpu_search(&model, &j, 1000, 200);
        assert!(!shares.is_empty() && shares.len() < 200, "{} shares", shares.len());
        for a in &shares {
            let bytes = assemble_header(&j.template, a);
            let h = Header::decode(&bytes).expect("assembled header decodes");
            assert_eq!(h.nonce, a.nonce);
            assert_eq!(pow_hash_of_encoded(&bytes), a.pow_hash);
            assert!(hash_meets_target(&a.pow_hash, &j.share_target));
            // The digest is the real forward pass output's.
            let mut solver = Solver::new(&model);
            assert_eq!(solver.attempt(&j.template, a.nonce).output_digest, a.output_digest);
        }
    }

    #[test]
    fn work_decodes_and_rejects_bad_fields() {
        let j = job(U256::MAX >> 8usize);
        let w = Work {
            header: String::new(),
            height: 1,
            prev_id: hex::encode(j.prev_id),
            template: hex::encode(j.template),
            target: hex::encode((U256::MAX >> 16usize).to_be_bytes::<32>()),
            share_target: hex::encode(j.share_target.to_be_bytes::<32>()),
            model: ModelSpec::DEVNET.into(),
        };
        let decoded = Job::from_work(&w).expect("valid work");
        assert_eq!(decoded.template, j.template);
        assert_eq!(decoded.target, U256::MAX >> 16usize);
        let mut bad = w.clone();
        bad.template.pop();
        assert_eq!(Job::from_work(&bad), Err(JobError::Field("template")));
        let mut bad = w;
        bad.model.d_model = 63;
        assert!(matches!(Job::from_work(&bad), Err(JobError::Spec(_))));
    }

    #[test]
    fn throttle_and_defaults() {
        assert_eq!(rest_ms(100.0, 50), 100.0);
        assert_eq!(rest_ms(100.0, 100), 0.0);
        assert_eq!(rest_ms(100.0, 25), 300.0);
        assert_eq!(rest_ms(10.0, 0), 990.0, "0 % reads as 1 %");
        assert_eq!(default_workers(1), 1);
        assert_eq!(default_workers(2), 1);
        assert_eq!(default_workers(8), 4);
    }

    #[test]
    fn rate_meter_uses_its_window() {
        let mut m = RateMeter::default();
        assert_eq!(m.sample(0.0, 0, 3000.0), 0.0);
        assert_eq!(m.sample(1000.0, 100, 3000.0), 100.0);
        assert_eq!(m.sample(2000.0, 300, 3000.0), 150.0);
        // Old samples age out: only the last window counts.
        m.sample(10_000.0, 300, 3000.0);
        assert_eq!(m.sample(11_000.0, 1300, 3000.0), 1000.0);
    }
}
