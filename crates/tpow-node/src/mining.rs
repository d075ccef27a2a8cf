//! The CPU miner of a node: a dedicated OS thread (mining is CPU-bound and must
//! never sit on the async runtime) running [`tpow_core::miner::mine`] on a
//! template of the best tip, restarted whenever the tip moves.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::mpsc;
use tpow_core::body::Body;
use tpow_core::miner::{mine, MineJob, MineOutcome};
use tpow_core::{Header, Model};

use crate::service::ChainHandle;

/// Shared counters of the miner, for the API.
#[derive(Default)]
pub struct MinerStats {
    /// Forward passes tried.
    pub attempts: AtomicU64,
    /// Blocks found and accepted.
    pub blocks: AtomicU64,
}

/// Starts the miner. `publish` receives every block this node mined and stored,
/// for gossip. The thread ends when `shutdown` is raised or the chain service stops.
pub fn spawn(
    chain: ChainHandle,
    miner_key: [u8; 32],
    threads: usize,
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
            match mine(&job, threads, &stop, &stats.attempts) {
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
