//! What the GPU examples (`gpu_bench`, `gpu_profile`) measure alike.

use std::time::Instant;

use tpow_core::U256;
use tpow_gpu::{GpuError, GpuMiner};

/// Nonces per second of `miner` at its batch size over about `secs`, after a warm-up
/// batch (at least one call). Each call asks for `batches_per_call` batches, so with
/// 2 or more the miner overlaps a batch's host work with the next one's pass.
pub fn miner_rate(miner: &mut GpuMiner, secs: f64, batches_per_call: u64) -> Result<f64, GpuError> {
    let b = miner.batch_size() as u64;
    let template = [7u8; 152];
    miner.mine_batch(&template, 0, b, &U256::ZERO)?;
    let (mut done, t) = (0u64, Instant::now());
    while done == 0 || t.elapsed().as_secs_f64() < secs {
        miner.mine_batch(&template, 1_000_000 + done, batches_per_call * b, &U256::ZERO)?;
        done += batches_per_call * b;
    }
    Ok(done as f64 / t.elapsed().as_secs_f64())
}
