//! The miner of a node: a dedicated OS thread (mining must never sit on the async
//! runtime) running [`tpow_core::miner::mine`] on the CPU, or batches of
//! [`tpow_gpu::GpuMiner`] when `--gpu` found an adapter, on a template of the best
//! tip, restarted whenever the tip moves.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::mpsc;
use tpow_core::body::Body;
use tpow_core::miner::{mine, MineJob, MineOutcome};
use tpow_core::{Header, Model, U256};
use tpow_gpu::{GpuContext, GpuError, GpuMiner, GpuOptions};

use crate::service::ChainHandle;

/// Shared counters of the miner, for the API.
#[derive(Default)]
pub struct MinerStats {
    /// Forward passes tried.
    pub attempts: AtomicU64,
    /// Blocks found and accepted.
    pub blocks: AtomicU64,
}

/// Which compute mines.
#[derive(Clone, Copy, Debug)]
pub struct Engine {
    /// CPU threads (also the fallback when the GPU is unavailable).
    pub threads: usize,
    /// Try the GPU first.
    pub gpu: bool,
}

/// Nonces per GPU dispatch: large enough to fill a GPU, small enough that a new tip
/// interrupts the search within one batch.
const GPU_BATCH: u32 = 256;

/// Opens the GPU miner, or explains why the CPU will mine instead.
fn open_gpu() -> Option<GpuMiner> {
    match GpuContext::new_blocking(&GpuOptions::default()) {
        Ok(ctx) => {
            let a = ctx.adapter();
            tracing::info!(adapter = %a.name, backend = %a.backend, dot4 = a.packed_dot, "mining on the GPU");
            Some(GpuMiner::new(&ctx, GPU_BATCH))
        }
        Err(e) => {
            tracing::warn!("--gpu: {e}; mining on the CPU instead");
            None
        }
    }
}

/// Searches `template` on the GPU until a solution, a stop, or a GPU error.
fn mine_gpu(
    gpu: &mut GpuMiner,
    model: &Model,
    template: &[u8; tpow_core::header::TEMPLATE_LEN],
    target: &U256,
    start_nonce: u64,
    stop: &AtomicBool,
    attempts: &AtomicU64,
) -> Result<MineOutcome, GpuError> {
    gpu.set_model(model)?;
    let batch = u64::from(gpu.batch_size());
    let mut nonce = start_nonce;
    while !stop.load(Ordering::Relaxed) {
        let found = gpu.mine_batch(template, nonce, batch, target)?;
        attempts.fetch_add(batch, Ordering::Relaxed);
        if let Some(a) = found {
            return Ok(MineOutcome::Found(a));
        }
        nonce = nonce.wrapping_add(batch);
    }
    Ok(MineOutcome::Stopped)
}

/// Starts the miner. `publish` receives every block this node mined and stored,
/// for gossip. The thread ends when `shutdown` is raised or the chain service stops.
pub fn spawn(
    chain: ChainHandle,
    miner_key: [u8; 32],
    engine: Engine,
    publish: mpsc::Sender<(Header, Body)>,
    shutdown: Arc<AtomicBool>,
    stats: Arc<MinerStats>,
) -> std::io::Result<Miner> {
    let stop = Arc::new(AtomicBool::new(false));
    // Raise `stop` on every new tip (and on shutdown) so the search restarts
    // within one forward pass.
    {
        let stop = stop.clone();
        let shutdown = shutdown.clone();
        let mut tip = chain.tip();
        tokio::spawn(async move {
            while tip.changed().await.is_ok() {
                stop.store(true, Ordering::Relaxed);
                if shutdown.load(Ordering::Relaxed) {
                    break;
                }
            }
        });
    }
    let miner_stop = stop.clone();
    let miner_shutdown = shutdown.clone();
    let thread = std::thread::Builder::new().name("miner".into()).spawn(move || {
        // Different nodes (and restarts) search different nonces even if they share a key.
        let mut start_nonce = u64::from_le_bytes(blake3_like_seed(&miner_key, crate::time::now_ms()));
        let mut gpu = if engine.gpu { open_gpu() } else { None };
        while !shutdown.load(Ordering::Relaxed) {
            stop.store(false, Ordering::Relaxed);
            let Ok((template, body)) = chain.template_blocking(miner_key) else { return };
            let Ok(target) = template.bits.to_target() else {
                tracing::error!("template has an invalid target; miner stops");
                return;
            };
            let model = match Model::derive(&chain.params().model, &template.prev_id) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!("cannot derive the puzzle model ({e}); miner stops");
                    return;
                }
            };
            let job =
                MineJob { model: &model, template: template.template(), target, start_nonce, nonce_count: u64::MAX };
            let outcome = match gpu
                .as_mut()
                .map(|g| mine_gpu(g, &model, &job.template, &target, start_nonce, &stop, &stats.attempts))
            {
                Some(Ok(outcome)) => outcome,
                Some(Err(e)) => {
                    tracing::warn!("GPU miner failed ({e}); mining on the CPU from now on");
                    gpu = None;
                    continue;
                }
                None => mine(&job, engine.threads, &stop, &stats.attempts),
            };
            match outcome {
                MineOutcome::Found(a) => {
                    start_nonce = a.nonce.wrapping_add(1);
                    let header = Header { nonce: a.nonce, output_digest: a.output_digest, ..template };
                    match chain.submit_blocking(vec![(header, body.clone())]) {
                        Ok(Ok(applied)) if applied.accepted == 1 => {
                            stats.blocks.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(height = header.height, id = %hex::encode(&header.id()[..8]), "mined block");
                            if publish.blocking_send((header, body)).is_err() {
                                return;
                            }
                        }
                        // Usually a competing block arrived first.
                        Ok(Ok(applied)) => tracing::debug!(?applied.error, "mined block not accepted"),
                        Ok(Err(e)) => tracing::warn!("mined block rejected: {e}"),
                        Err(_) => return,
                    }
                }
                MineOutcome::Stopped => {}
                MineOutcome::Exhausted => start_nonce = start_nonce.wrapping_add(u64::MAX / 2),
            }
        }
    })?;
    Ok(Miner { thread, stop: miner_stop, shutdown: miner_shutdown })
}

/// The running miner thread.
pub struct Miner {
    thread: JoinHandle<()>,
    stop: Arc<AtomicBool>,
    shutdown: Arc<AtomicBool>,
}

impl Miner {
    /// Stops the search within one forward pass and waits for the thread.
    pub fn stop(self) {
        self.shutdown.store(true, Ordering::Relaxed);
        self.stop.store(true, Ordering::Relaxed);
        // A panic in the miner was already reported by the panic hook.
        let _ = self.thread.join();
    }
}

/// A starting nonce that differs between keys and restarts (no cryptographic need).
fn blake3_like_seed(key: &[u8; 32], now: u64) -> [u8; 8] {
    let mut x = now ^ 0x9e37_79b9_7f4a_7c15;
    for chunk in key.chunks(8) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        x = (x ^ u64::from_le_bytes(b)).wrapping_mul(0x1000_0000_01b3).rotate_left(29);
    }
    x.to_le_bytes()
}
