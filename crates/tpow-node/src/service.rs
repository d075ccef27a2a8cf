//! The chain service: one tokio task that owns the [`ChainState`].
//!
//! Everything that reads or changes the chain sends a [`Command`] through a
//! [`ChainHandle`]. Forward passes never run on this task: a submission is
//! prepared here (cheap checks), its forward passes run on the blocking pool, and
//! the result comes back as another command to be applied, so queries keep being
//! answered while blocks are verified. The service also owns the [`Store`]: a
//! verified batch becomes a commit plan ([`ChainState::apply`], pure), the plan
//! is written in one transaction, and only then does memory change
//! ([`ChainState::advance`]) and the new best tip get published on a `watch`
//! channel (write, then acknowledge). A failed write ends the task with
//! [`ServiceError::Storage`] and leaves memory as it was.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tpow_core::body::Body;
use tpow_core::mmr::MmrProof;
use tpow_core::{BlockId, ChainParams, Header};

use crate::chain_state::{
    verify_branch, Applied, BlockError, ChainState, PassEngine, Prepared, QueryError, TipInfo, VerifyStats, MAX_BATCH,
};
use crate::store::{Store, StoreError};
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
    /// A sync answer (a chain segment, parent first) for the sync lane: it may
    /// extend the segment being verified, and then waits in a bounded queue
    /// instead of failing for an unknown parent (see [`SyncLane`]).
    SubmitSync {
        /// The blocks.
        blocks: Vec<(Header, Body)>,
        /// Who sent it (a peer), for the per-source queue cap.
        source: u64,
        /// Whether the sender has more after it (a full answer).
        more: bool,
        /// Where the answer goes once the segment is applied or refused.
        reply: oneshot::Sender<SubmitResult>,
    },
    /// Internal: forward passes of a prepared batch are done.
    Verified {
        /// The batch.
        prepared: Prepared,
        /// Their digests, or the first failure.
        digests: Result<Vec<[u8; 32]>, tpow_core::BranchError>,
        /// What the passes cost.
        stats: VerifyStats,
        /// Whether it came through the sync lane (which is then free again).
        sync: bool,
        /// Where the answer goes.
        reply: oneshot::Sender<SubmitResult>,
    },
    /// Internal: the sync lane's wait for the `--assume-valid` block may be over.
    Kick,
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

/// Why the chain service stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Writing or reading the database failed: nothing more can be
    /// acknowledged safely. The batch being written was not applied in memory
    /// and not acknowledged; the next start rebuilds from the database.
    #[error("database failed: {0}")]
    Storage(#[from] StoreError),
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

    /// Queues a sync answer on the sync lane without waiting (so answers keep
    /// the order in which they arrived); the receiver resolves once it is
    /// applied or refused. Fails if the service is gone or its inbox is full.
    pub fn submit_sync(
        &self,
        blocks: Vec<(Header, Body)>,
        source: u64,
        more: bool,
    ) -> Result<oneshot::Receiver<SubmitResult>, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(Command::SubmitSync { blocks, source, more, reply }).map_err(|_| Stopped)?;
        Ok(rx)
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

/// Limits of the sync lane (see [`SyncLane`]).
#[derive(Clone, Copy, Debug)]
pub struct LaneLimits {
    /// Sync answers waiting in all.
    pub queued: usize,
    /// Sync answers waiting from one source (a peer): one fast or hostile peer
    /// cannot take the whole queue.
    pub per_source: usize,
    /// How long the lane holds its queue waiting for the `--assume-valid`
    /// block to show up before it verifies what it has.
    pub assume_valid_wait: Duration,
}

impl Default for LaneLimits {
    fn default() -> Self {
        // 64 answers of 500 coinbase-only blocks: about 10 MB of lookahead.
        LaneLimits { queued: 64, per_source: 48, assume_valid_wait: Duration::from_secs(2) }
    }
}

/// How the service runs.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Threads one batch of forward passes may use.
    pub verify_threads: usize,
    /// `--assume-valid`: headers this block descends from get every cheap check
    /// and the pow hash, but no forward pass, once the block is known to extend
    /// the best chain (see [`SyncLane`]).
    pub assume_valid: Option<BlockId>,
    /// Sync lane limits.
    pub lane: LaneLimits,
    /// The GPU verifying sync batches next to the CPU threads (`--gpu`), if any.
    pub offload: OffloadEngine,
}

/// The engine a node verifies sync batches with next to its CPU threads (the
/// GPU under `--gpu`). A batch takes it out and puts it back; it is dropped for
/// good the first time it fails or the CPU proves one of its digests wrong
/// ([`crate::chain_state::PassEngine`]).
#[derive(Clone, Default)]
pub struct OffloadEngine(Arc<std::sync::Mutex<Option<Box<dyn PassEngine>>>>);

impl OffloadEngine {
    pub fn new(engine: Box<dyn PassEngine>) -> Self {
        OffloadEngine(Arc::new(std::sync::Mutex::new(Some(engine))))
    }

    /// The engine, if no other batch holds it (the lock is held only to move it).
    fn take(&self) -> Option<Box<dyn PassEngine>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn put_back(&self, engine: Box<dyn PassEngine>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(engine);
    }
}

impl std::fmt::Debug for OffloadEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle = self.0.try_lock().map(|e| e.is_some()).unwrap_or(false);
        write!(f, "OffloadEngine({})", if idle { "idle" } else { "none or busy" })
    }
}

impl ServiceConfig {
    /// Every core, no assumed block, default limits.
    pub fn new(verify_threads: usize) -> Self {
        ServiceConfig {
            verify_threads,
            assume_valid: None,
            lane: LaneLimits::default(),
            offload: OffloadEngine::default(),
        }
    }
}

/// Starts the service on the current runtime with the state and the store it
/// was rebuilt from. The task ends with an error only when the database fails:
/// the node must then stop (`main` does, cleanly); memory is never ahead of the
/// disk, and the next start rebuilds from the disk.
pub fn spawn(
    state: ChainState,
    store: Store,
    config: ServiceConfig,
) -> (ChainHandle, tokio::task::JoinHandle<Result<(), ServiceError>>) {
    let (tx, rx) = mpsc::channel(256);
    let (tip_tx, tip_rx) = watch::channel(state.tip());
    let handle = ChainHandle { tx: tx.clone(), tip: tip_rx, params: Arc::new(state.params().clone()) };
    let service = Service {
        lane: SyncLane::new(config.assume_valid, config.lane),
        state,
        store,
        self_tx: tx,
        tip_tx,
        verify_threads: config.verify_threads,
        offload: config.offload,
    };
    let task = tokio::spawn(service.run(rx));
    (handle, task)
}

/// A sync answer waiting in the lane.
struct Queued {
    blocks: Vec<(Header, Body)>,
    ids: Vec<BlockId>,
    source: u64,
    more: bool,
    reply: oneshot::Sender<SubmitResult>,
}

/// The sync lane: initial sync as a pipeline. One segment at a time has its
/// forward passes running on every core; the answers that extend it wait in a
/// bounded queue (after the cheap checks a lone header allows: version, time,
/// ASERT bound, pow hash), so the network fetches the next answers while the
/// passes of the previous run, and segments are committed in order.
///
/// With `--assume-valid B`: once B is in the queue, the headers from the
/// segment being started up to B are prechecked as one branch (every cheap
/// check, pow hashes, and the work they claim must exceed the best chain's, so
/// B would become the best tip); then every header up to B gets no forward
/// pass. B's ancestors are exactly the headers that link to it by id, so no
/// peer can make another header inherit B's trust. While B is not in sight and
/// the sender has more, the lane waits (bounded by the queue and
/// [`LaneLimits::assume_valid_wait`]) so that B can show up first.
struct SyncLane {
    /// Last id of the segment whose passes are running.
    busy: Option<BlockId>,
    queue: VecDeque<Queued>,
    limits: LaneLimits,
    assume_valid: Option<BlockId>,
    /// The queue was checked to reach `assume_valid` with enough work.
    proven: bool,
    waiting_since: Option<Instant>,
}

impl SyncLane {
    fn new(assume_valid: Option<BlockId>, limits: LaneLimits) -> Self {
        SyncLane { busy: None, queue: VecDeque::new(), limits, assume_valid, proven: false, waiting_since: None }
    }

    /// The id the next queued answer must start from.
    fn tail(&self) -> Option<BlockId> {
        self.queue.back().and_then(|q| q.ids.last().copied()).or(self.busy)
    }

    fn queued_from(&self, source: u64) -> usize {
        self.queue.iter().filter(|q| q.source == source).count()
    }

    /// Refuses everything queued (it descends from a segment that failed).
    fn abandon(&mut self) {
        self.proven = false;
        self.waiting_since = None;
        for q in self.queue.drain(..) {
            let _ = q.reply.send(Err(BlockError::Abandoned));
        }
    }
}

struct Service {
    state: ChainState,
    store: Store,
    lane: SyncLane,
    self_tx: mpsc::Sender<Command>,
    tip_tx: watch::Sender<TipInfo>,
    verify_threads: usize,
    offload: OffloadEngine,
}

impl Service {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) -> Result<(), ServiceError> {
        while let Some(cmd) = rx.recv().await {
            self.handle(cmd)?;
        }
        Ok(())
    }

    fn handle(&mut self, cmd: Command) -> Result<(), ServiceError> {
        let state = &self.state;
        match cmd {
            Command::Submit { blocks, reply } => match state.prepare(blocks, now_ms()) {
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
                Ok(prepared) if prepared.is_empty() => {
                    let _ = reply.send(Ok(Applied::default()));
                }
                Ok(prepared) => self.verify(prepared, 0, false, reply),
            },
            Command::SubmitSync { blocks, source, more, reply } => {
                self.enqueue(blocks, source, more, reply);
                self.pump()?;
            }
            Command::Kick => self.pump()?,
            Command::Verified { prepared, digests, stats, sync, reply } => {
                if sync {
                    self.lane.busy = None;
                }
                let transition = match digests.and_then(|d| self.state.apply(&prepared, &d)) {
                    Ok(t) => t,
                    Err(e) => {
                        let _ = reply.send(Err(self.state.note_failed(e, &prepared)));
                        if sync {
                            self.lane.abandon();
                        }
                        return Ok(());
                    }
                };
                // Write first: on failure memory is unchanged, nothing is
                // acknowledged (the reply is dropped) and the node stops.
                self.store.commit(transition.plan())?;
                let mut applied = self.state.advance(transition);
                applied.passes = stats.passes;
                applied.assumed = stats.assumed;
                if applied.new_tip {
                    let tip = self.state.tip();
                    tracing::info!(
                        height = tip.height,
                        id = %hex::encode(&tip.id[..8]),
                        accepted = applied.accepted,
                        reorged = applied.reorged,
                        "new tip"
                    );
                    self.tip_tx.send_replace(tip);
                }
                let _ = reply.send(Ok(applied));
                if sync {
                    self.pump()?;
                }
            }
            Command::Template { miner_key, reply } => {
                let _ = reply.send(state.template(miner_key, now_ms()));
            }
            Command::Headers { from, count, reply } => {
                let _ = reply.send(state.headers(from, count));
            }
            Command::BlocksAfter { locator, max, reply } => {
                let _ = reply.send(blocks_after(state, &self.store, &locator, max));
            }
            Command::Locator { reply } => {
                let _ = reply.send(state.locator());
            }
            Command::MmrProof { height, tip, reply } => {
                let _ = reply.send(state.mmr_proof(height, tip));
            }
            Command::FlyClient { tip, last, request, reply } => {
                let _ = reply.send(flyclient(state, tip, last, request));
            }
        }
        Ok(())
    }

    /// Runs the forward passes of `prepared` on the blocking pool; the result
    /// comes back as [`Command::Verified`].
    fn verify(&self, prepared: Prepared, assumed: usize, sync: bool, reply: oneshot::Sender<SubmitResult>) {
        let self_tx = self.self_tx.clone();
        let threads = self.verify_threads;
        let offload = self.offload.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let seed: [u8; 32] = rand::random();
            // Sync batches only: a block from gossip or from this node's own miner
            // (which may run the same GPU kernels) is checked on the CPU. The engine
            // is taken out for the batch, so a concurrent batch never waits for it
            // (it runs on the CPU), and put back unless it failed.
            let mut engine = if sync { offload.take() } else { None };
            let (digests, stats) = verify_branch(
                &prepared,
                threads,
                &seed,
                assumed,
                engine.as_mut().map(|e| &mut **e as &mut dyn PassEngine),
            );
            if let Some(e) = engine.filter(|_| !stats.offload_failed) {
                offload.put_back(e);
            }
            crate::metrics::get().record_verification(started.elapsed(), &stats);
            // If the service is gone the node is stopping; nothing to do.
            let _ = self_tx.blocking_send(Command::Verified { prepared, digests, stats, sync, reply });
        });
    }

    /// Puts a sync answer in the lane, or refuses it (cheap checks only).
    fn enqueue(&mut self, blocks: Vec<(Header, Body)>, source: u64, more: bool, reply: oneshot::Sender<SubmitResult>) {
        if blocks.is_empty() {
            let _ = reply.send(Ok(Applied::default()));
            return;
        }
        if blocks.len() > MAX_BATCH {
            let _ = reply.send(Err(BlockError::TooMany(blocks.len())));
            return;
        }
        let ids: Vec<BlockId> = blocks.iter().map(|(h, _)| h.id()).collect();
        let lane = &mut self.lane;
        if let Some(tail) = lane.tail() {
            if blocks[0].0.prev_id != tail {
                // Not the continuation of the lane: nothing new if every block is
                // known or queued; otherwise a segment from elsewhere, to offer
                // again once the lane is idle.
                let queued = |id: &BlockId| lane.queue.iter().any(|q| q.ids.contains(id));
                let result = if ids.iter().all(|id| self.state.contains(id) || queued(id)) {
                    Ok(Applied::default())
                } else {
                    Err(BlockError::Busy)
                };
                let _ = reply.send(result);
                return;
            }
            if lane.queue.len() >= lane.limits.queued || lane.queued_from(source) >= lane.limits.per_source {
                let _ = reply.send(Err(BlockError::Busy));
                return;
            }
            // Its parent is not in the chain yet: the checks a lone header
            // allows, so a forged answer is refused before it takes a slot.
            if let Err(e) = self.state.check_unlinked(&blocks, &ids, now_ms()) {
                let _ = reply.send(Err(e));
                return;
            }
        }
        self.lane.queue.push_back(Queued { blocks, ids, source, more, reply });
    }

    /// Starts the next queued segment if the lane is free.
    fn pump(&mut self) -> Result<(), ServiceError> {
        while self.lane.busy.is_none() {
            if self.lane.queue.is_empty() {
                return Ok(());
            }
            if self.should_wait() {
                return Ok(());
            }
            let Some(front) = self.lane.queue.pop_front() else { return Ok(()) };
            let assumed_ids = self.assumed_prefix(&front);
            let Queued { blocks, ids, reply, .. } = front;
            match self.state.prepare(blocks, now_ms()) {
                Err(e) => {
                    let _ = reply.send(Err(e));
                    self.lane.abandon();
                }
                Ok(prepared) if prepared.is_empty() => {
                    let _ = reply.send(Ok(Applied::default()));
                }
                Ok(prepared) => {
                    let assumed = match assumed_ids {
                        // Headers of the branch (known leading ones skipped) up to B.
                        Some(n) => n.saturating_sub(prepared.branch.skipped()),
                        None => 0,
                    };
                    self.lane.busy = ids.last().copied();
                    self.verify(prepared, assumed, true, reply);
                }
            }
        }
        Ok(())
    }

    /// Whether the lane should hold its queue a little longer so that the
    /// `--assume-valid` block can show up before passes are spent.
    fn should_wait(&mut self) -> bool {
        let lane = &mut self.lane;
        let Some(av) = lane.assume_valid else { return false };
        let in_sight = lane.queue.iter().any(|q| q.ids.contains(&av));
        let sender_has_more = lane.queue.back().is_some_and(|q| q.more);
        let room = lane.queue.len() < lane.limits.queued;
        if in_sight || !sender_has_more || !room || self.state.contains(&av) {
            lane.waiting_since = None;
            return false;
        }
        let since = *lane.waiting_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= lane.limits.assume_valid_wait {
            return false;
        }
        let tx = self.self_tx.clone();
        let wait = lane.limits.assume_valid_wait.saturating_sub(since.elapsed());
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = tx.send(Command::Kick).await;
        });
        true
    }

    /// How many leading blocks of `front` (as sent) the assumed block descends
    /// from, if any: all of them when it is further down the queue. Proves once
    /// per queue that the headers up to it pass every cheap check and claim
    /// more work than the best chain.
    fn assumed_prefix(&mut self, front: &Queued) -> Option<usize> {
        let av = self.lane.assume_valid?;
        if self.state.contains(&av) {
            return None;
        }
        let in_front = front.ids.iter().position(|id| *id == av);
        let later = self.lane.queue.iter().position(|q| q.ids.contains(&av));
        if in_front.is_none() && later.is_none() {
            return None;
        }
        if !self.lane.proven {
            let mut headers: Vec<Header> = Vec::new();
            let mut take = |q: &[(Header, Body)], ids: &[BlockId]| {
                let end = ids.iter().position(|id| *id == av).map(|i| i + 1);
                headers.extend(q[..end.unwrap_or(q.len())].iter().map(|(h, _)| *h));
                end.is_some()
            };
            let mut reached = take(&front.blocks, &front.ids);
            for q in &self.lane.queue {
                if reached {
                    break;
                }
                reached = take(&q.blocks, &q.ids);
            }
            match self.state.claimed_work(&headers, now_ms()) {
                Ok(Some(work)) if work > self.state.tip().total_work => self.lane.proven = true,
                Ok(_) | Err(_) => {
                    tracing::warn!("--assume-valid block is in the queue but does not extend the best chain here");
                    return None;
                }
            }
        }
        Some(in_front.map_or(front.blocks.len(), |i| i + 1))
    }
}

/// Up to `max` best-chain blocks after `locator`, with their stored bodies.
fn blocks_after(
    state: &ChainState,
    store: &Store,
    locator: &[BlockId],
    max: usize,
) -> Result<StoredBlocks, StoreError> {
    let headers = state.headers_after(locator, max);
    let keys: Vec<(u64, BlockId)> = headers.iter().map(|h| (h.height, h.id())).collect();
    let bodies = store.bodies(&keys)?;
    Ok(headers
        .into_iter()
        .zip(bodies)
        .map(|(h, b)| {
            // Bodies are written with their headers; a missing one can only be
            // rebuilt from the header, which is exactly what a coinbase-only body is.
            let b = b.unwrap_or_else(|| Body::coinbase_only(h.height, h.miner_key).encode());
            (h, b)
        })
        .collect())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain_state::tests::{branch, easy_params};
    use crate::chain_state::Verdict;

    fn start(
        params: &ChainParams,
        dir: &std::path::Path,
        config: ServiceConfig,
    ) -> (ChainHandle, tokio::task::JoinHandle<Result<(), ServiceError>>) {
        let store = Store::open(&dir.join("db")).expect("store");
        let (state, repair) = ChainState::rebuild(params.clone(), store.load().expect("load")).expect("rebuild");
        store.commit(&repair).expect("repair");
        spawn(state, store, config)
    }

    /// The sync lane holds answers while the `--assume-valid` block is not in
    /// sight, caps what one source may queue, refuses a forged answer before it
    /// takes a slot, and once the block arrives applies everything up to it in
    /// order with no forward pass; the block after it gets its pass.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sync_lane_caps_sources_and_assumes_valid_up_to_the_block() {
        let params = easy_params();
        let dir = tempfile::tempdir().expect("tempdir");
        let blocks = branch(&params, 7, 1);
        let av = blocks[5].0.id();
        let config = ServiceConfig {
            verify_threads: 2,
            assume_valid: Some(av),
            // No timer decides anything here: the wait is longer than the test.
            lane: LaneLimits { queued: 4, per_source: 2, assume_valid_wait: Duration::from_secs(3_600) },
            offload: OffloadEngine::default(),
        };
        let (chain, _task) = start(&params, dir.path(), config);
        let (a, b, c) = (1, 2, 3);
        let r1 = chain.submit_sync(vec![blocks[0].clone()], a, true).expect("send");
        let r2 = chain.submit_sync(vec![blocks[1].clone()], a, true).expect("send");
        // Source a has 2 waiting: its third is refused, not queued.
        let r3a = chain.submit_sync(vec![blocks[2].clone()], a, true).expect("send");
        assert!(matches!(r3a.await.expect("reply"), Err(BlockError::Busy)));
        // A forged continuation (a version no header may carry) is refused before it waits.
        let mut forged = blocks[2].clone();
        forged.0.version = 2;
        let rf = chain.submit_sync(vec![forged], c, true).expect("send");
        let err = rf.await.expect("reply").expect_err("forged");
        assert_eq!(err.verdict(), Verdict::Ban, "{err}");
        // Another source continues the same chain.
        let r3 = chain.submit_sync(vec![blocks[2].clone()], b, true).expect("send");
        // Nothing was applied while the assumed block was out of sight.
        assert_eq!(chain.tip().borrow().height, 0);
        let r4 = chain.submit_sync(blocks[3..6].to_vec(), b, false).expect("send");
        let mut assumed = 0;
        for (rx, n) in [(r1, 1), (r2, 1), (r3, 1), (r4, 3)] {
            let applied = rx.await.expect("reply").expect("applied");
            assert!(applied.error.is_none(), "{:?}", applied.error);
            assert_eq!((applied.accepted, applied.passes, applied.assumed), (n, 0, n));
            assumed += applied.assumed;
        }
        assert_eq!(assumed, 6);
        assert_eq!(chain.tip().borrow().id, av);
        // Above the assumed block every header gets its forward pass.
        let r7 = chain.submit_sync(vec![blocks[6].clone()], a, false).expect("send");
        let applied = r7.await.expect("reply").expect("applied");
        assert_eq!((applied.accepted, applied.passes, applied.assumed), (1, 1, 0));
    }

    /// Without `--assume-valid` every header of a sync answer gets its pass,
    /// and an answer that does not continue the lane while it is busy is
    /// refused as Busy (not a fault) rather than verified twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sync_lane_verifies_everything_by_default() {
        let params = easy_params();
        let dir = tempfile::tempdir().expect("tempdir");
        let blocks = branch(&params, 4, 2);
        let (chain, _task) = start(&params, dir.path(), ServiceConfig::new(2));
        let r1 = chain.submit_sync(blocks[..2].to_vec(), 1, true).expect("send");
        let r2 = chain.submit_sync(blocks[2..].to_vec(), 1, false).expect("send");
        for rx in [r1, r2] {
            let applied = rx.await.expect("reply").expect("applied");
            assert_eq!((applied.accepted, applied.passes, applied.assumed), (2, 2, 0));
        }
        assert_eq!(chain.tip().borrow().height, 4);
        // Everything known: nothing to do, whatever the lane's state.
        let again = chain.submit_sync(blocks.clone(), 2, false).expect("send");
        assert_eq!(again.await.expect("reply").expect("applied").accepted, 0);
    }
}
