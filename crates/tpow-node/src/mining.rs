//! The miner of a node: a dedicated OS thread (mining must never sit on the async
//! runtime) running [`tpow_core::miner::mine`] on the CPU, or batches of
//! [`tpow_gpu::GpuMiner`] when `--gpu` found an adapter, on a template of the best
//! tip.
//!
//! Mining works in *rounds* and *slices*. A round is one template: a new tip ends
//! it at once (the stale model is dropped, the next round derives the new one). A
//! slice is a stretch of work the [`ComputeGate`] granted: unlimited while no chat
//! request waits, a short duty-cycle slice (or nothing) while one does. A small
//! preempt thread raises the slice's stop flag when a deadline passes or chat
//! arrives, so chat never waits longer than one forward pass (CPU) or one batch
//! (GPU) plus a millisecond.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tpow_core::body::Body;
use tpow_core::miner::{mine, MineJob, MineOutcome};
use tpow_core::{Header, Model, ModelSpec, U256};
use tpow_gpu::{GpuContext, GpuError, GpuMiner, GpuOptions};

use crate::metrics::{self, Kind};
use crate::scheduler::{ComputeGate, Grant};
use crate::service::ChainHandle;

/// Shared counters of the miner, for the API.
#[derive(Default)]
pub struct MinerStats {
    /// Forward passes tried.
    pub attempts: AtomicU64,
    /// Blocks found and accepted.
    pub blocks: AtomicU64,
    /// Nanoseconds spent mining in duty-cycle slices (while chat waits); each is
    /// followed by a rest in proportion, which is what bounds mining's share.
    pub slice_nanos: AtomicU64,
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
/// or a chat request interrupts the search within one batch.
const GPU_BATCH: u32 = 256;

/// How often the preempt thread looks at deadlines and chat demand.
const PREEMPT_POLL: Duration = Duration::from_millis(1);

/// What the miner needs from the chain: templates on the best tip and a place to
/// put solutions. The node's chain service in production, a fake in tests.
pub trait MinerHost: Send + 'static {
    /// Model shape of the chain.
    fn model_spec(&self) -> ModelSpec;
    /// A template (nonce and digest zero) and body on the best tip; `None` once the
    /// host is gone.
    fn template(&self, miner_key: [u8; 32]) -> Option<(Header, Body)>;
    /// Stores a solved block. `Err(())` once the host is gone.
    #[allow(clippy::result_unit_err)]
    fn submit(&self, header: Header, body: Body) -> Result<bool, ()>;
}

/// The node's chain service as a miner host; accepted blocks go to gossip.
struct NodeHost {
    chain: ChainHandle,
    publish: mpsc::Sender<(Header, Body)>,
}

impl MinerHost for NodeHost {
    fn model_spec(&self) -> ModelSpec {
        self.chain.params().model
    }

    fn template(&self, miner_key: [u8; 32]) -> Option<(Header, Body)> {
        self.chain.template_blocking(miner_key).ok()
    }

    fn submit(&self, header: Header, body: Body) -> Result<bool, ()> {
        match self.chain.submit_blocking(vec![(header, body.clone())]) {
            Ok(Ok(applied)) if applied.accepted == 1 => {
                tracing::info!(height = header.height, id = %hex::encode(&header.id()[..8]), "mined block");
                self.publish.blocking_send((header, body)).map_err(|_| ())?;
                Ok(true)
            }
            // Usually a competing block arrived first.
            Ok(Ok(applied)) => {
                tracing::debug!(?applied.error, "mined block not accepted");
                Ok(false)
            }
            Ok(Err(e)) => {
                tracing::warn!("mined block rejected: {e}");
                Ok(false)
            }
            Err(_) => Err(()),
        }
    }
}

/// Flags shared by the miner thread, its preempt thread and whoever reports tips.
#[derive(Default)]
pub struct MinerSignals {
    /// The current round is stale (new tip) or the miner is stopping.
    round_stop: AtomicBool,
    /// The current slice must end (round stop, deadline, or chat arrived).
    slice_stop: AtomicBool,
    shutdown: AtomicBool,
    /// Nanoseconds since `epoch` at which the slice ends (`u64::MAX`: none).
    deadline_ns: AtomicU64,
    /// End the slice as soon as chat is waiting (free slices).
    preempt_on_chat: AtomicBool,
    /// When the newest unhandled tip change was reported.
    tip_changed_at: Mutex<Option<Instant>>,
    epoch: OnceInstant,
}

/// An `Instant` fixed at construction (Default for [`MinerSignals`]).
struct OnceInstant(Instant);

impl Default for OnceInstant {
    fn default() -> Self {
        OnceInstant(Instant::now())
    }
}

impl MinerSignals {
    /// A new best tip exists: abandon the round (and its model) now.
    pub fn tip_changed(&self) {
        let mut at = self.tip_changed_at.lock().unwrap_or_else(|p| p.into_inner());
        at.get_or_insert_with(Instant::now);
        self.round_stop.store(true, Ordering::SeqCst);
        self.slice_stop.store(true, Ordering::SeqCst);
    }

    fn stop_all(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        self.round_stop.store(true, Ordering::SeqCst);
        self.slice_stop.store(true, Ordering::SeqCst);
    }

    fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    fn take_tip_change(&self) -> Option<Instant> {
        self.tip_changed_at.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Arms the slice: its stop flag falls when `run` passes or, if `preempt_on_chat`,
    /// when chat arrives; it starts raised if the round is already stale.
    fn arm(&self, run: Option<Duration>, preempt_on_chat: bool) {
        let deadline = run.map_or(u64::MAX, |d| self.now_ns().saturating_add(d.as_nanos() as u64));
        self.deadline_ns.store(deadline, Ordering::SeqCst);
        self.preempt_on_chat.store(preempt_on_chat, Ordering::SeqCst);
        self.slice_stop.store(false, Ordering::SeqCst);
        if self.round_stop.load(Ordering::SeqCst) {
            self.slice_stop.store(true, Ordering::SeqCst);
        }
    }

    fn disarm(&self) {
        self.deadline_ns.store(u64::MAX, Ordering::SeqCst);
        self.preempt_on_chat.store(false, Ordering::SeqCst);
    }

    /// Sleeps up to `d`, waking early when `wake` holds or the round ends.
    fn rest(&self, d: Duration, wake: impl Fn() -> bool) {
        let until = Instant::now() + d;
        while Instant::now() < until && !self.round_stop.load(Ordering::SeqCst) && !wake() {
            std::thread::sleep(PREEMPT_POLL);
        }
    }
}

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
    template: &[u8; tpow_core::header::TEMPLATE_LEN],
    target: &U256,
    start_nonce: u64,
    stop: &AtomicBool,
    attempts: &AtomicU64,
) -> Result<MineOutcome, GpuError> {
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

/// Starts the miner on the node's chain. `publish` receives every block this node
/// mined and stored, for gossip; `gate` makes it yield to chat. The threads end
/// when `shutdown` is raised or the chain service stops.
pub fn spawn(
    chain: ChainHandle,
    miner_key: [u8; 32],
    engine: Engine,
    publish: mpsc::Sender<(Header, Body)>,
    shutdown: Arc<AtomicBool>,
    stats: Arc<MinerStats>,
    gate: ComputeGate,
) -> std::io::Result<Miner> {
    let signals = Arc::new(MinerSignals::default());
    // Every new tip (and shutdown) ends the round within one forward pass.
    {
        let signals = signals.clone();
        let mut tip = chain.tip();
        tokio::spawn(async move {
            while tip.changed().await.is_ok() {
                signals.tip_changed();
                if shutdown.load(Ordering::Relaxed) {
                    signals.stop_all();
                    break;
                }
            }
        });
    }
    spawn_on(NodeHost { chain, publish }, miner_key, engine, stats, gate, signals)
}

/// Starts the miner on any host; the caller reports new tips through `signals`.
pub fn spawn_on<H: MinerHost>(
    host: H,
    miner_key: [u8; 32],
    engine: Engine,
    stats: Arc<MinerStats>,
    gate: ComputeGate,
    signals: Arc<MinerSignals>,
) -> std::io::Result<Miner> {
    let preempt = {
        let (signals, gate) = (signals.clone(), gate.clone());
        std::thread::Builder::new().name("miner-preempt".into()).spawn(move || {
            while !signals.stopping() {
                let past_deadline = signals.now_ns() >= signals.deadline_ns.load(Ordering::SeqCst);
                let chat = signals.preempt_on_chat.load(Ordering::SeqCst) && gate.chat_waiting();
                if past_deadline || chat {
                    signals.slice_stop.store(true, Ordering::SeqCst);
                }
                std::thread::sleep(PREEMPT_POLL);
            }
        })?
    };
    let thread_signals = signals.clone();
    let thread = std::thread::Builder::new()
        .name("miner".into())
        .spawn(move || run_miner(&host, miner_key, engine, &stats, &gate, &thread_signals))?;
    Ok(Miner { thread, preempt, signals })
}

fn run_miner<H: MinerHost>(
    host: &H,
    miner_key: [u8; 32],
    engine: Engine,
    stats: &MinerStats,
    gate: &ComputeGate,
    signals: &MinerSignals,
) {
    let m = metrics::get();
    // Different nodes (and restarts) search different nonces even if they share a key.
    let mut start_nonce = u64::from_le_bytes(seed(&miner_key, crate::time::now_ms()));
    let mut gpu = if engine.gpu { open_gpu() } else { None };
    let spec = host.model_spec();
    while !signals.stopping() {
        signals.round_stop.store(false, Ordering::SeqCst);
        let Some((template, body)) = host.template(miner_key) else { return };
        let Ok(target) = template.bits.to_target() else {
            tracing::error!("template has an invalid target; miner stops");
            return;
        };
        let model = match Model::derive(&spec, &template.prev_id) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!("cannot derive the puzzle model ({e}); miner stops");
                return;
            }
        };
        if let Some(g) = gpu.as_mut() {
            if let Err(e) = g.set_model(&model) {
                tracing::warn!("GPU miner failed ({e}); mining on the CPU from now on");
                gpu = None;
            }
        }
        // The new model is ready: the first nonce on it is tried next.
        if let Some(at) = signals.take_tip_change() {
            m.miner_switch_seconds.observe(at.elapsed().as_secs_f64());
        }
        let mut nonce = start_nonce;
        while !signals.round_stop.load(Ordering::SeqCst) {
            let grant = gate.grant();
            match grant {
                Grant::Wait(d) => {
                    signals.rest(d, || !gate.chat_waiting());
                    continue;
                }
                Grant::Free => signals.arm(None, true),
                Grant::Slice { run, .. } => signals.arm(Some(run), false),
            }
            let job = MineJob {
                model: &model,
                template: template.template(),
                target,
                start_nonce: nonce,
                nonce_count: u64::MAX,
            };
            let before = stats.attempts.load(Ordering::Relaxed);
            let started = Instant::now();
            let outcome = match gpu.as_mut() {
                Some(g) => mine_gpu(g, &job.template, &target, nonce, &signals.slice_stop, &stats.attempts),
                None => Ok(mine(&job, engine.threads, &signals.slice_stop, &stats.attempts)),
            };
            signals.disarm();
            let elapsed = started.elapsed();
            m.add_compute(Kind::Mining, elapsed);
            // Under a share, rest in proportion to the time used, however the slice
            // ended (deadline, solution, new round): the share holds across rounds.
            if let Grant::Slice { run, rest } = grant {
                stats.slice_nanos.fetch_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
                let ratio = rest.as_secs_f64() / run.as_secs_f64().max(1e-9);
                signals.rest(elapsed.mul_f64(ratio), || !gate.chat_waiting());
            }
            let tried = stats.attempts.load(Ordering::Relaxed).wrapping_sub(before);
            m.pow_forward_passes.inc_by(tried);
            // Threads interleave nonces, so `tried` is where the range roughly ends;
            // a few nonces may be skipped or repeated, which costs nothing.
            nonce = nonce.wrapping_add(tried);
            match outcome {
                Err(e) => {
                    tracing::warn!("GPU miner failed ({e}); mining on the CPU from now on");
                    gpu = None;
                }
                Ok(MineOutcome::Found(a)) => {
                    nonce = a.nonce.wrapping_add(1);
                    // A solution for a parent that is no longer the tip is never sent.
                    if signals.round_stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let header = Header { nonce: a.nonce, output_digest: a.output_digest, ..template };
                    match host.submit(header, body.clone()) {
                        Ok(true) => {
                            stats.blocks.fetch_add(1, Ordering::Relaxed);
                            m.blocks_found.inc();
                        }
                        Ok(false) => {}
                        Err(()) => return,
                    }
                    break;
                }
                Ok(MineOutcome::Stopped) => {}
                Ok(MineOutcome::Exhausted) => nonce = nonce.wrapping_add(u64::MAX / 2),
            }
        }
        start_nonce = nonce;
    }
}

/// The running miner threads.
pub struct Miner {
    thread: JoinHandle<()>,
    preempt: JoinHandle<()>,
    signals: Arc<MinerSignals>,
}

impl Miner {
    /// Stops the search within one forward pass and waits for the threads.
    pub fn stop(self) {
        self.signals.stop_all();
        // A panic in the miner was already reported by the panic hook.
        let _ = self.thread.join();
        let _ = self.preempt.join();
    }
}

/// A starting nonce that differs between keys and restarts (no cryptographic need).
fn seed(key: &[u8; 32], now: u64) -> [u8; 8] {
    let mut x = now ^ 0x9e37_79b9_7f4a_7c15;
    for chunk in key.chunks(8) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        x = (x ^ u64::from_le_bytes(b)).wrapping_mul(0x1000_0000_01b3).rotate_left(29);
    }
    x.to_le_bytes()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tpow_core::chain::genesis_header;
    use tpow_core::target::CompactTarget;
    use tpow_core::ChainParams;

    use super::*;

    /// A chain stand-in whose tip the test moves by hand; it records what the miner
    /// asked for and sent.
    #[derive(Default)]
    struct Log {
        tip: [u8; 32],
        /// (prev_id of the solution, host tip when it arrived, templates served on the new tip before it).
        submissions: Vec<([u8; 32], [u8; 32])>,
        /// prev_ids of the templates served, in order.
        templates: Vec<[u8; 32]>,
    }

    #[derive(Clone)]
    struct FakeHost(Arc<Mutex<Log>>);

    impl MinerHost for FakeHost {
        fn model_spec(&self) -> ModelSpec {
            ChainParams::devnet().model
        }
        fn template(&self, miner_key: [u8; 32]) -> Option<(Header, Body)> {
            let mut log = self.0.lock().ok()?;
            let tip = log.tip;
            log.templates.push(tip);
            let params = ChainParams::devnet();
            // The easiest target: a solution every ~16 passes, many per second.
            let bits = CompactTarget::from_target(params.asert.max_target);
            let header = Header { prev_id: tip, height: 1, bits, miner_key, ..genesis_header(&params) };
            Some((header, Body::coinbase_only(1, miner_key)))
        }
        fn submit(&self, header: Header, _body: Body) -> Result<bool, ()> {
            let mut log = self.0.lock().map_err(|_| ())?;
            let tip = log.tip;
            log.submissions.push((header.prev_id, tip));
            Ok(true)
        }
    }

    fn start(host: &FakeHost, gate: ComputeGate) -> (Miner, Arc<MinerSignals>, Arc<MinerStats>) {
        let signals = Arc::new(MinerSignals::default());
        let stats = Arc::new(MinerStats::default());
        let engine = Engine { threads: 1, gpu: false };
        let miner = spawn_on(host.clone(), [7; 32], engine, stats.clone(), gate, signals.clone()).expect("spawn");
        (miner, signals, stats)
    }

    fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let until = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn a_new_tip_switches_the_model_and_no_stale_solution_is_sent() {
        let host = FakeHost(Arc::new(Mutex::new(Log { tip: [1; 32], ..Log::default() })));
        let (miner, signals, _) = start(&host, ComputeGate::no_chat());
        for switch in 2..12u8 {
            let seen = host.0.lock().expect("log").submissions.len();
            wait_until("solutions on the current tip", || host.0.lock().expect("log").submissions.len() >= seen + 3);
            host.0.lock().expect("log").tip = [switch; 32];
            signals.tip_changed();
            wait_until("a template on the new tip", || host.0.lock().expect("log").templates.contains(&[switch; 32]));
        }
        wait_until("solutions on the last tip", || {
            host.0.lock().expect("log").submissions.last().map(|s| s.0) == Some([11; 32])
        });
        miner.stop();
        let log = host.0.lock().expect("log");
        let stale: Vec<_> = log.submissions.iter().filter(|(prev, tip)| prev != tip).collect();
        assert!(stale.is_empty(), "{} of {} solutions were for an old parent", stale.len(), log.submissions.len());
        // Every switch was measured: new tip -> model derived -> first nonce.
        assert!(log.submissions.len() >= 30);
    }

    #[test]
    fn chat_demand_pauses_mining_and_it_resumes_after() {
        let demand = Arc::new(AtomicUsize::new(0));
        let host = FakeHost(Arc::new(Mutex::new(Log::default())));
        let (miner, _, stats) = start(&host, ComputeGate::new(demand.clone(), 0.0));
        wait_until("mining", || stats.attempts.load(Ordering::Relaxed) > 100);
        demand.store(1, Ordering::SeqCst);
        // Preemption within one forward pass plus the poll interval.
        std::thread::sleep(Duration::from_millis(30));
        let paused_at = stats.attempts.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(stats.attempts.load(Ordering::Relaxed), paused_at, "share 0: no pass while chat waits");
        demand.store(0, Ordering::SeqCst);
        wait_until("mining to resume", || stats.attempts.load(Ordering::Relaxed) > paused_at + 100);
        miner.stop();
    }

    #[test]
    fn a_mine_share_bounds_mining_while_chat_waits() {
        let demand = Arc::new(AtomicUsize::new(0));
        let host = FakeHost(Arc::new(Mutex::new(Log::default())));
        let (miner, _, stats) = start(&host, ComputeGate::new(demand.clone(), 0.2));
        wait_until("mining", || stats.attempts.load(Ordering::Relaxed) > 100);
        let rate = |d: Duration| {
            let a = stats.attempts.load(Ordering::Relaxed);
            std::thread::sleep(d);
            (stats.attempts.load(Ordering::Relaxed) - a) as f64 / d.as_secs_f64()
        };
        demand.store(1, Ordering::SeqCst);
        // The free slice running when chat arrived ends first (it is not a duty-cycle slice).
        wait_until("a duty-cycle slice", || stats.slice_nanos.load(Ordering::Relaxed) > 0);
        let (start, mined_before) = (Instant::now(), stats.slice_nanos.load(Ordering::Relaxed));
        let shared = rate(Duration::from_millis(1_000));
        let wall = start.elapsed().as_secs_f64();
        let mined = (stats.slice_nanos.load(Ordering::Relaxed) - mined_before) as f64 / 1e9;
        demand.store(0, Ordering::SeqCst);
        miner.stop();
        assert!(shared > 0.0, "a 20% share still mines");
        // Every slice is followed by a rest four times its length, measured on the same
        // clock, so however fast or loaded the machine, mining takes at most 20% of the
        // window plus the slice in progress at its end (10 ms, allowing overrun).
        assert!(mined <= 0.2 * wall + 0.1, "mined {mined:.3} s of {wall:.3} s with chat waiting");
    }
}
