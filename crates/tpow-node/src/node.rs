//! `tpow-node run`: wires the store, chain service, network, miner and HTTP API
//! together and runs them until Ctrl-C / SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use libp2p::{identity, Multiaddr};
use tokio::sync::{mpsc, watch};
use tpow_core::chain::genesis_header;
use tpow_core::ChainParams;

use crate::chain_state::ChainState;
use crate::store::Store;

/// Arguments of `tpow-node run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Chain parameters: devnet or mainnet.
    #[arg(long, default_value = "devnet")]
    pub chain: String,
    /// Directory of the database and node key (created if missing).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// HTTP API address (port 0: any free port, written to DATA_DIR/http-addr).
    #[arg(long, default_value = "127.0.0.1:8645")]
    pub http: SocketAddr,
    /// libp2p listen address (port 0: any free port, written to DATA_DIR/p2p-addr).
    #[arg(long, default_value = "/ip4/0.0.0.0/tcp/0")]
    pub p2p: Multiaddr,
    /// A peer to dial and keep connected (repeatable).
    #[arg(long = "peer")]
    pub peers: Vec<Multiaddr>,
    /// Mine with the CPU.
    #[arg(long)]
    pub mine: bool,
    /// Miner threads (default: all cores but one, at least one).
    #[arg(long)]
    pub threads: Option<usize>,
    /// CPU threads that verify a batch of synced blocks (default: every core).
    /// With `--gpu` and an adapter, 0 leaves the forward passes to the GPU (the
    /// CPU still settles any disagreement); without one, at least one thread runs.
    #[arg(long)]
    pub verify_threads: Option<usize>,
    /// Use the GPU (tpow-gpu) when an adapter exists: to mine (with --mine) and
    /// to verify synced blocks next to the CPU threads. Without one, or if the
    /// GPU fails later, the node says so and uses the CPU. A GPU digest counts
    /// only when it equals the header's; any disagreement is settled by the CPU.
    #[arg(long)]
    pub gpu: bool,
    /// Directory of the built web app served at / (default: the source tree's www/dist).
    #[arg(long)]
    pub web_dir: Option<PathBuf>,
    /// Serve no web app, only the API.
    #[arg(long)]
    pub no_web: bool,
    /// Largest share of compute mining keeps while chat requests wait (0..=1; 0
    /// pauses mining until the chat queue is empty, 1 never yields).
    #[arg(long, default_value_t = crate::scheduler::DEFAULT_MINE_SHARE)]
    pub mine_share: f64,
    /// Key paid by mined coinbases, 64 hex characters (default: derived from the node key).
    #[arg(long)]
    pub miner_key: Option<String>,
    /// Genesis timestamp (unix ms). Devnet only; fixed in the data dir on first
    /// start (default then: now). Nodes of one devnet must share it.
    #[arg(long)]
    pub genesis_time_ms: Option<u64>,
    /// Trust the chain up to this block (64 hex characters): headers it
    /// descends from get every cheap check and the pow hash but no forward
    /// pass, once it shows up in a sync answer extending the best chain (as
    /// Bitcoin Core's -assumevalid). Off by default.
    #[arg(long, value_parser = parse_block_id)]
    pub assume_valid: Option<tpow_core::BlockId>,
    /// Stop when the process with this id is gone (set by `devnet` so that no
    /// node outlives its launcher, even one killed with SIGKILL). Linux only.
    #[arg(long, hide = true)]
    pub parent_pid: Option<u32>,
    /// Chat: model, upstream, queue.
    #[cfg(feature = "chat")]
    #[command(flatten)]
    pub chat: crate::chat::ChatArgs,
}

fn parse_block_id(s: &str) -> Result<tpow_core::BlockId, String> {
    let bytes = hex::decode(s).map_err(|e| format!("not hex: {e}"))?;
    bytes.try_into().map_err(|b: Vec<u8>| format!("a block id is 32 bytes, got {}", b.len()))
}

/// Fixes the chain parameters of a data dir: the first start records chain name
/// and genesis time, later starts must agree with them.
fn chain_params(store: &Store, args: &RunArgs) -> Result<ChainParams> {
    let Some(params) = ChainParams::by_name(&args.chain) else {
        bail!("unknown chain {:?} (expected devnet or mainnet)", args.chain);
    };
    if !params.network.allows_genesis_override() && args.genesis_time_ms.is_some() {
        bail!("--genesis-time-ms is for devnets; {}'s genesis is fixed", params.network);
    }
    match store.meta("chain")? {
        Some(name) if name != params.name().as_bytes() => {
            bail!("data dir holds chain {:?}, not {:?}", String::from_utf8_lossy(&name), params.name())
        }
        Some(_) => {}
        None => store.set_meta("chain", params.name().as_bytes())?,
    }
    let stored = store
        .meta("genesis_time_ms")?
        .map(|b| <[u8; 8]>::try_from(b.as_slice()).map(u64::from_le_bytes))
        .transpose()
        .map_err(|_| anyhow::anyhow!("corrupt genesis_time_ms in the data dir"))?;
    let genesis = match (stored, args.genesis_time_ms) {
        (Some(s), Some(a)) if s != a => bail!("data dir has genesis time {s}, --genesis-time-ms says {a}"),
        (Some(s), _) => s,
        (None, a) => {
            let t = match a {
                Some(t) => t,
                None if params.network.allows_genesis_override() => crate::time::now_ms(),
                None => params.genesis_timestamp_ms,
            };
            store.set_meta("genesis_time_ms", &t.to_le_bytes())?;
            t
        }
    };
    let params = params.with_genesis_time(genesis).context("genesis time")?;
    params.validate().context("chain parameters")?;
    Ok(params)
}

fn node_key(store: &Store) -> Result<identity::Keypair> {
    if let Some(bytes) = store.meta("node_key")? {
        return identity::Keypair::from_protobuf_encoding(&bytes).context("corrupt node key in the data dir");
    }
    let key = identity::Keypair::generate_ed25519();
    store.set_meta("node_key", &key.to_protobuf_encoding().context("encoding the node key")?)?;
    Ok(key)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,libp2p_gossipsub=warn,libp2p_swarm=warn"));
    // Colours only on a terminal: logs in files stay greppable.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).try_init();
}

/// Runs a node until Ctrl-C or SIGTERM.
pub fn run(args: RunArgs) -> Result<()> {
    init_tracing();
    if !(0.0..=1.0).contains(&args.mine_share) {
        bail!("--mine-share must be between 0 and 1, got {}", args.mine_share);
    }
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(args))
}

async fn run_async(args: RunArgs) -> Result<()> {
    let db_path = args.data_dir.join("chain.redb");
    let store = Store::open(&db_path).with_context(|| format!("opening {}", db_path.display()))?;
    let params = chain_params(&store, &args)?;
    let keypair = node_key(&store)?;
    let miner_key = match &args.miner_key {
        Some(k) => crate::parse_key(Some(k))?,
        None => *blake3::hash(&keypair.public().encode_protobuf()).as_bytes(),
    };
    let genesis_id = genesis_header(&params).id();
    let started = std::time::Instant::now();
    let stored = store.load().context("reading the chain from the database")?;
    let (state, repair) = ChainState::rebuild(params.clone(), stored).context("loading the chain from the database")?;
    store.commit(&repair).context("repairing the database after loading")?;
    let tip = state.tip();
    tracing::info!(
        chain = params.name(),
        genesis = %hex::encode(&genesis_id[..8]),
        "loaded height {} ({}) in {:.2}s",
        tip.height,
        hex::encode(&tip.id[..8]),
        started.elapsed().as_secs_f64()
    );
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if let Some(av) = args.assume_valid {
        tracing::info!(block = %hex::encode(av), "assuming valid: no forward passes for the headers this block descends from");
    }
    // Opening the GPU and its check against the CPU block: off the runtime.
    let spec = params.model;
    let gpu = if args.gpu {
        tokio::task::spawn_blocking(move || crate::gpu_sync::open(&spec)).await.ok().flatten()
    } else {
        None
    };
    let offload = match gpu {
        Some(engine) => crate::service::OffloadEngine::new(Box::new(engine)),
        None => crate::service::OffloadEngine::default(),
    };
    let service_cfg = crate::service::ServiceConfig {
        assume_valid: args.assume_valid,
        offload,
        ..crate::service::ServiceConfig::new(args.verify_threads.unwrap_or(cores))
    };
    let (chain, mut service_task) = crate::service::spawn(state, store, service_cfg);

    // HTTP is bound first so that its port can be announced to peers.
    let http_listener = crate::http::bind(args.http, &args.data_dir).await?;
    let http_port = http_listener.local_addr().ok().map(|a| a.port());
    let identity = crate::http::NodeIdentity {
        peer_id: keypair.public().to_peer_id().to_string(),
        node_key: keypair.public().try_into_ed25519().map(|k| hex::encode(k.to_bytes())).unwrap_or_default(),
    };
    #[cfg(feature = "chat")]
    let chat = crate::chat::setup(&args.chat, &keypair).await?;
    #[cfg(feature = "chat")]
    let models = chat.backend.info().models;
    #[cfg(not(feature = "chat"))]
    let models: Vec<String> = Vec::new();

    let (publish_tx, publish_rx) = mpsc::channel(64);
    let (peers_tx, peers_rx) = watch::channel(Vec::new());
    let p2p_cfg = crate::p2p::P2pConfig {
        keypair,
        listen: args.p2p.clone(),
        bootstrap: args.peers.clone(),
        chain_name: params.name().to_string(),
        genesis_id,
        data_dir: args.data_dir.clone(),
        meta: crate::p2p::NodeMeta::new(&models, http_port),
    };
    let mut p2p_task = tokio::spawn(crate::p2p::run(p2p_cfg, chain.clone(), publish_rx, peers_tx));

    let shutdown = Arc::new(AtomicBool::new(false));
    let mut miner_stats = None;
    // Chat has priority over mining: the gate reads the engine's queue.
    #[cfg(feature = "chat")]
    let gate = match chat.backend.demand_counter() {
        Some(demand) => crate::scheduler::ComputeGate::new(demand, args.mine_share),
        None => crate::scheduler::ComputeGate::no_chat(),
    };
    #[cfg(not(feature = "chat"))]
    let gate = crate::scheduler::ComputeGate::no_chat();
    let mut miner_thread = None;
    if args.mine {
        let threads = args.threads.unwrap_or(cores.saturating_sub(1)).max(1);
        let stats = Arc::new(crate::mining::MinerStats::default());
        miner_thread = Some(
            crate::mining::spawn(
                chain.clone(),
                miner_key,
                crate::mining::Engine { threads, gpu: args.gpu },
                publish_tx.clone(),
                shutdown.clone(),
                stats.clone(),
                gate.clone(),
            )
            .context("starting the miner thread")?,
        );
        miner_stats = Some(stats);
        tracing::info!(threads, miner_key = %hex::encode(miner_key), "mining");
    }
    tokio::spawn(crate::summary::run(crate::summary::Sources {
        tip: chain.tip(),
        peers: peers_rx.clone(),
        miner: miner_stats.clone(),
        gate,
    }));
    let (shares, websockets) = crate::http::ApiState::limits(params.model);
    let api = crate::http::ApiState {
        chain: chain.clone(),
        peers: peers_rx,
        publish: publish_tx,
        node_miner: miner_stats,
        shares,
        websockets,
        identity,
        #[cfg(feature = "chat")]
        chat,
    };
    let web_dir = (!args.no_web).then(|| args.web_dir.clone().unwrap_or_else(crate::web::default_dir)).filter(|d| {
        let ok = crate::web::has_app(d);
        if !ok {
            tracing::warn!("no web app in {} (build it with scripts/build-web.sh); serving the API only", d.display());
        }
        ok
    });
    let mut http_task = tokio::spawn(crate::http::serve(http_listener, api, web_dir));

    let parent_pid = args.parent_pid;
    let result = tokio::select! {
        r = shutdown_signal() => r,
        () = parent_gone(parent_pid) => {
            tracing::info!("launcher process is gone");
            Ok(())
        }
        r = &mut p2p_task => r.context("network task panicked").and_then(|r| r.context("network")),
        r = &mut http_task => r.context("HTTP task panicked").and_then(|r| r.context("HTTP")),
        r = &mut service_task => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context("chain service stopped; the next start rebuilds from disk")),
            Err(e) => Err(anyhow::Error::new(e).context("chain service panicked")),
        },
    };
    tracing::info!("stopping");
    shutdown.store(true, Ordering::Relaxed);
    p2p_task.abort();
    http_task.abort();
    drop(chain);
    if let Some(m) = miner_thread {
        let _ = tokio::task::spawn_blocking(move || m.stop()).await;
    }
    service_task.abort();
    result
}

/// Resolves once process `pid` no longer exists (never if `pid` is None).
async fn parent_gone(pid: Option<u32>) {
    let Some(pid) = pid else { return std::future::pending().await };
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    if !proc_dir.exists() {
        // No procfs (not Linux) or already gone at start: do not guess.
        return std::future::pending().await;
    }
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    while proc_dir.exists() {
        tick.tick().await;
    }
}

async fn shutdown_signal() -> Result<()> {
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("Ctrl-C handler"),
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await.context("Ctrl-C handler")
}
