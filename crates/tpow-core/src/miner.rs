//! The multi-threaded CPU miner.
//!
//! Each thread owns a [`Solver`] (its own buffers) over one shared model (laid out
//! once for the CPU's kernels, [`PackedModel`]) and tries
//! every `threads`-th nonce of the range, so no two threads repeat work and no lock
//! is touched in the hot loop. A shared flag stops all threads within one forward
//! pass: the node raises it when a new tip arrives.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::forward::PackedModel;
use crate::header::TEMPLATE_LEN;
use crate::model::Model;
use crate::puzzle::{Attempt, Solver};
use crate::target::hash_meets_target;
use crate::U256;

/// One search: a model, a template, a target and a nonce range.
pub struct MineJob<'a> {
    /// Model derived from the template's `prev_id`.
    pub model: &'a Model,
    /// Header bytes before the nonce.
    pub template: [u8; TEMPLATE_LEN],
    /// Pow hashes at or below this win.
    pub target: U256,
    /// First nonce to try.
    pub start_nonce: u64,
    /// How many nonces to try at most (`u64::MAX` for "until stopped").
    pub nonce_count: u64,
}

/// Why [`mine`] returned without a solution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MineOutcome {
    /// A nonce whose pow hash meets the target.
    Found(Attempt),
    /// The stop flag was raised.
    Stopped,
    /// Every nonce of the range was tried.
    Exhausted,
}

/// Searches `job` on `threads` threads. `attempts` counts forward passes as they
/// finish (for hashrate displays); `stop` aborts the search.
pub fn mine(job: &MineJob<'_>, threads: usize, stop: &AtomicBool, attempts: &AtomicU64) -> MineOutcome {
    let threads = threads.max(1) as u64;
    let found: Mutex<Option<Attempt>> = Mutex::new(None);
    let done = AtomicBool::new(false);
    // The weights laid out once for this CPU's kernels, shared by every thread.
    let packed = PackedModel::detect(job.model);
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (found, done, packed) = (&found, &done, &packed);
            scope.spawn(move || {
                let mut solver = Solver::with_packed(packed);
                let mut i = t;
                while i < job.nonce_count {
                    if stop.load(Ordering::Relaxed) || done.load(Ordering::Relaxed) {
                        return;
                    }
                    let nonce = job.start_nonce.wrapping_add(i);
                    let a = solver.attempt(&job.template, nonce);
                    attempts.fetch_add(1, Ordering::Relaxed);
                    if hash_meets_target(&a.pow_hash, &job.target) {
                        let mut f = found.lock().unwrap_or_else(|p| p.into_inner());
                        // Keep the lowest nonce if two threads win at once: deterministic tests.
                        if f.is_none_or(|prev| a.nonce < prev.nonce) {
                            *f = Some(a);
                        }
                        done.store(true, Ordering::Relaxed);
                        return;
                    }
                    i = match i.checked_add(threads) {
                        Some(n) => n,
                        None => return,
                    };
                }
            });
        }
    });
    match found.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(a) => MineOutcome::Found(a),
        None if stop.load(Ordering::Relaxed) => MineOutcome::Stopped,
        None => MineOutcome::Exhausted,
    }
}
