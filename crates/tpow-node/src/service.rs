//! The chain service: one tokio task that owns the [`ChainState`].
//!
//! Everything that reads or changes the chain sends a [`Command`] through a
//! [`ChainHandle`]. Forward passes never run on this task: a submission is
//! prepared here (cheap checks), its forward passes run on the blocking pool, and
//! the result comes back as another command to be applied, so queries keep being
//! answered while blocks are verified. A new best tip is published on a `watch`
//! channel only after the database commit (write, then acknowledge).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tpow_core::body::Body;
use tpow_core::mmr::MmrProof;
use tpow_core::{BlockId, ChainParams, Header};

use crate::chain_state::{verify_branch, Applied, BlockError, ChainState, Prepared, QueryError, TipInfo};
use crate::store::StoreError;
use crate::time::now_ms;

/// The result of a submission.
pub type SubmitResult = Result<Applied, BlockError>;
/// Stored blocks (header, encoded body) served to a syncing peer.
pub type StoredBlocks = Vec<(Header, Vec<u8>)>;

/// Requests to the chain service.
pub enum Command {
    /// Validate and store blocks (a chain segment, parent first).
    Submit {
        /// The blocks.
        blocks: Vec<(Header, Body)>,
        /// Where the answer goes.
        reply: oneshot::Sender<SubmitResult>,
    },
    /// Internal: forward passes of a prepared batch are done.
    Verified {
        /// The batch.
        prepared: Prepared,
        /// Their digests, or the first failure.
        digests: Result<Vec<[u8; 32]>, tpow_core::BranchError>,
        /// Where the answer goes.
        reply: oneshot::Sender<SubmitResult>,
    },
    /// A mining template on the best tip.
    Template {
        /// Paid by the coinbase.
        miner_key: [u8; 32],
        /// Header (nonce and digest zero) and body.
        reply: oneshot::Sender<(Header, Body)>,
    },
    /// Best-chain headers from a height.
    Headers {
        /// First height.
        from: u64,
        /// How many at most.
        count: u64,
        /// The headers.
        reply: oneshot::Sender<Vec<Header>>,
    },
    /// Blocks after a locator (serving sync).
    BlocksAfter {
        /// Locator of the asking peer.
        locator: Vec<BlockId>,
        /// How many at most.
        max: usize,
        /// The blocks with encoded bodies.
        reply: oneshot::Sender<Result<StoredBlocks, StoreError>>,
    },
    /// Our locator (to ask a peer).
    Locator {
        /// The locator.
        reply: oneshot::Sender<Vec<BlockId>>,
    },
    /// An MMR inclusion proof.
    MmrProof {
        /// Proven height.
        height: u64,
        /// Committing height.
        tip: u64,
        /// Leaf header, committing header, proof.
        reply: oneshot::Sender<Result<(Header, Header, MmrProof), QueryError>>,
    },
    /// FlyClient data: the last `last` best-chain headers up to `tip`, and
    /// older ones sampled by work (docs/PROTOCOL.md §16) with proofs against `tip`.
    FlyClient {
        /// Committing height.
        tip: u64,
        /// How many of the newest headers to send whole.
        last: u64,
        /// Whose randomness draws the sample.
        request: FlyRequest,
        /// The answer.
        reply: oneshot::Sender<Result<FlyData, QueryError>>,
    },
}

/// How a FlyClient sample is drawn.
#[derive(Clone, Copy, Debug)]
pub enum FlyRequest {
    /// From the client's seed, as many draws as security level `security_bits`
    /// needs for this chain's work (`tpow_core::flyclient`). The node cannot
    /// choose or re-roll the sample.
    Seeded {
        /// The client's 32 random bytes.
        seed: [u8; 32],
        /// λ.
        security_bits: u32,
    },
    /// Deprecated: `samples` uniform draws seeded by the tip id (grindable by
    /// the tip's miner); kept for clients built before the seeded request.
    Legacy {
        /// Draws.
        samples: usize,
    },
}

/// Headers and proofs for a FlyClient answer.
pub struct FlyData {
    /// Draws made (for a seeded request: `draw_count(levels(A, W), λ)`). When it
    /// exceeds `tpow_core::flyclient::MAX_DRAWS` nothing is sampled and the
    /// handler refuses the request.
    pub draws: u64,
    /// The committing header and its total work.
    pub tip: (Header, tpow_core::U256),
    /// The newest headers (ending with the tip), low to high.
    pub last: Vec<Header>,
    /// Sampled headers: (header, total work up to it, proof against the tip's MMR root).
    pub sampled: Vec<(Header, tpow_core::U256, MmrProof)>,
}

/// The service went away (the node is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("chain service stopped")]
pub struct Stopped;

/// A cheap, clonable handle to the chain service.
#[derive(Clone)]
pub struct ChainHandle {
    tx: mpsc::Sender<Command>,
    tip: watch::Receiver<TipInfo>,
    params: Arc<ChainParams>,
}

impl ChainHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Submits a chain segment; resolves once it is verified and committed.
    pub async fn submit(&self, blocks: Vec<(Header, Body)>) -> Result<SubmitResult, Stopped> {
        self.ask(|reply| Command::Submit { blocks, reply }).await
    }

    /// Blocking variant of [`Self::submit`] for the miner thread.
    pub fn submit_blocking(&self, blocks: Vec<(Header, Body)>) -> Result<SubmitResult, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx.blocking_send(Command::Submit { blocks, reply }).map_err(|_| Stopped)?;
        rx.blocking_recv().map_err(|_| Stopped)
    }

    /// Blocking template request for the miner thread.
    pub fn template_blocking(&self, miner_key: [u8; 32]) -> Result<(Header, Body), Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx.blocking_send(Command::Template { miner_key, reply }).map_err(|_| Stopped)?;
        rx.blocking_recv().map_err(|_| Stopped)
    }

    /// A mining template.
    pub async fn template(&self, miner_key: [u8; 32]) -> Result<(Header, Body), Stopped> {
        self.ask(|reply| Command::Template { miner_key, reply }).await
    }

    /// Best-chain headers.
    pub async fn headers(&self, from: u64, count: u64) -> Result<Vec<Header>, Stopped> {
        self.ask(|reply| Command::Headers { from, count, reply }).await
    }

    /// Blocks after a locator.
    pub async fn blocks_after(
        &self,
        locator: Vec<BlockId>,
        max: usize,
    ) -> Result<Result<StoredBlocks, StoreError>, Stopped> {
        self.ask(|reply| Command::BlocksAfter { locator, max, reply }).await
    }

    /// Our locator.
    pub async fn locator(&self) -> Result<Vec<BlockId>, Stopped> {
        self.ask(|reply| Command::Locator { reply }).await
    }

    /// An MMR proof.
    pub async fn mmr_proof(
        &self,
        height: u64,
        tip: u64,
    ) -> Result<Result<(Header, Header, MmrProof), QueryError>, Stopped> {
        self.ask(|reply| Command::MmrProof { height, tip, reply }).await
    }

    /// FlyClient headers and proofs.
    pub async fn flyclient(
        &self,
        tip: u64,
        last: u64,
        request: FlyRequest,
    ) -> Result<Result<FlyData, QueryError>, Stopped> {
        self.ask(|reply| Command::FlyClient { tip, last, request, reply }).await
    }

    /// The best tip, updated after each commit.
    pub fn tip(&self) -> watch::Receiver<TipInfo> {
        self.tip.clone()
    }

    /// The chain parameters.
    pub fn params(&self) -> &ChainParams {
        &self.params
    }
}

/// Starts the service on the current runtime. `verify_threads` bounds the
/// threads one batch of forward passes may use. The task ends with an error only
/// when the database fails: the node must then stop (its memory may be ahead of
/// the disk; the next start rebuilds from the disk).
pub fn spawn(
    state: ChainState,
    verify_threads: usize,
) -> (ChainHandle, tokio::task::JoinHandle<Result<(), StoreError>>) {
    let (tx, rx) = mpsc::channel(256);
    let (tip_tx, tip_rx) = watch::channel(state.tip());
    let handle = ChainHandle { tx: tx.clone(), tip: tip_rx, params: Arc::new(state.params().clone()) };
    let task = tokio::spawn(run(state, rx, tx, tip_tx, verify_threads));
    (handle, task)
}

async fn run(
    mut state: ChainState,
    mut rx: mpsc::Receiver<Command>,
    self_tx: mpsc::Sender<Command>,
    tip_tx: watch::Sender<TipInfo>,
    verify_threads: usize,
) -> Result<(), StoreError> {
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Command::Submit { blocks, reply } => match state.prepare(blocks, now_ms()) {
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
                Ok(prepared) if prepared.is_empty() => {
                    let _ = reply.send(Ok(Applied::default()));
                }
                Ok(prepared) => {
                    let self_tx = self_tx.clone();
                    tokio::task::spawn_blocking(move || {
                        let started = std::time::Instant::now();
                        let seed: [u8; 32] = rand::random();
                        let (digests, passes) = verify_branch(&prepared, verify_threads, &seed);
                        let m = crate::metrics::get();
                        m.add_compute(crate::metrics::Kind::Verification, started.elapsed());
                        m.verification_passes.inc_by(passes as u64);
                        // If the service is gone the node is stopping; nothing to do.
                        let _ = self_tx.blocking_send(Command::Verified { prepared, digests, reply });
                    });
                }
            },
            Command::Verified { prepared, digests, reply } => {
                let applied = match digests {
                    Ok(d) => state.apply(prepared, &d),
                    Err(e) => {
                        let _ = reply.send(Err(state.note_failed(e, &prepared)));
                        continue;
                    }
                };
                if let Some(BlockError::Store(e)) = applied.error {
                    // The in-memory chain is ahead of the disk: the only safe move is
                    // to stop (main shuts the node down) and rebuild from the
                    // database on the next start. Nothing was acknowledged.
                    return Err(e);
                }
                if applied.new_tip {
                    let tip = state.tip();
                    tracing::info!(
                        height = tip.height,
                        id = %hex::encode(&tip.id[..8]),
                        accepted = applied.accepted,
                        reorged = applied.reorged,
                        "new tip"
                    );
                    tip_tx.send_replace(tip);
                }
                let _ = reply.send(Ok(applied));
            }
            Command::Template { miner_key, reply } => {
                let _ = reply.send(state.template(miner_key, now_ms()));
            }
            Command::Headers { from, count, reply } => {
                let _ = reply.send(state.headers(from, count));
            }
            Command::BlocksAfter { locator, max, reply } => {
                let _ = reply.send(state.blocks_after(&locator, max));
            }
            Command::Locator { reply } => {
                let _ = reply.send(state.locator());
            }
            Command::MmrProof { height, tip, reply } => {
                let _ = reply.send(state.mmr_proof(height, tip));
            }
            Command::FlyClient { tip, last, request, reply } => {
                let _ = reply.send(flyclient(&state, tip, last, request));
            }
        }
    }
    Ok(())
}

/// Answers a FlyClient request: work positions are mapped to heights by binary
/// search over cumulative work (`sample_heights`), each with its MMR proof against
/// `tip`. Bounded by the caps on `last` and on the draw count.
fn flyclient(state: &ChainState, tip: u64, last: u64, request: FlyRequest) -> Result<FlyData, QueryError> {
    use tpow_core::flyclient::{draw_count, legacy_sample_heights, levels, sample_heights, MAX_DRAWS};
    let tip_header = state.headers(tip, 1).pop().ok_or(QueryError::UnknownHeight(tip))?;
    let tip_work = state.total_work_at(tip).ok_or(QueryError::UnknownHeight(tip))?;
    let last = last.clamp(1, tip + 1);
    let first_last = tip + 1 - last;
    let last_headers = state.headers(first_last, last);
    let work_at = |h: u64| state.total_work_at(h).unwrap_or_default();
    let (draws, heights) = match request {
        FlyRequest::Seeded { seed, security_bits } => {
            let below = if first_last == 0 { tpow_core::U256::ZERO } else { work_at(first_last - 1) };
            let checked = tip_work.saturating_sub(below);
            let draws = draw_count(levels(&checked, &below), security_bits);
            if draws > MAX_DRAWS {
                return Ok(FlyData { draws, tip: (tip_header, tip_work), last: last_headers, sampled: Vec::new() });
            }
            (draws, sample_heights(&seed, first_last, &checked, draws, work_at))
        }
        FlyRequest::Legacy { samples } => {
            (samples as u64, legacy_sample_heights(&tip_header.id(), first_last, samples, work_at))
        }
    };
    let mut sampled = Vec::with_capacity(heights.len());
    for h in heights {
        let (leaf, _, proof) = state.mmr_proof(h, tip)?;
        let work = state.total_work_at(h).ok_or(QueryError::UnknownHeight(h))?;
        sampled.push((leaf, work, proof));
    }
    Ok(FlyData { draws, tip: (tip_header, tip_work), last: last_headers, sampled })
}
