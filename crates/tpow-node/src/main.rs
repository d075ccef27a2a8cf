//! `tpow-node`: the tpow full node.
//!
//! - `run`: one node: redb store, libp2p network, optional CPU miner, HTTP API.
//!   With the `chat` feature (default) it also serves an OpenAI-compatible chat
//!   API (module `chat`) from a local model or an upstream server.
//! - `devnet`: N mining nodes on loopback as child processes of this one.
//! - `mine`: mine and verify blocks of a fresh in-memory chain (a demo and a
//!   miner benchmark; touches no disk or network).
//!
//! Layering: pure logic (tpow-core, [`wire`], [`chain_state`]) is
//! sans-io and unit-tested; [`service`], [`p2p`], [`http`] and [`mining`] are the
//! I/O edges around it.

mod attack;
mod chain_state;
#[cfg(feature = "chat")]
mod chat;
mod devnet;
mod http;
mod limits;
mod metrics;
mod mining;
mod node;
mod p2p;
mod scheduler;
mod service;
mod shares;
mod store;
mod summary;
mod time;
mod web;
mod wire;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use tpow_core::chain::InsertOutcome;
use tpow_core::miner::{mine, MineJob, MineOutcome};
use tpow_core::{ChainParams, HeaderChain, Model, ModelCache};

use crate::time::now_ms;

#[derive(Parser)]
#[command(name = "tpow-node", version, about = "tpow full node (Transformer proof of work)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a full node.
    Run(node::RunArgs),
    /// Start N connected mining nodes on 127.0.0.1 (child processes); Ctrl-C stops all.
    Devnet(devnet::DevnetArgs),
    /// Test tool: connect to a node and gossip invalid blocks; exits 0 once the
    /// node has disconnected (banned) us, 1 otherwise.
    #[command(hide = true)]
    Attack {
        /// The node to attack.
        #[arg(long)]
        peer: libp2p::Multiaddr,
        /// What to send.
        #[arg(long, value_enum)]
        kind: attack::AttackKind,
        /// Rounds, each with a fresh key.
        #[arg(long, default_value_t = 1)]
        rounds: u32,
        /// Run the rounds at the same time instead of one after the other.
        #[arg(long)]
        parallel: bool,
        /// Devnet genesis time of the node.
        #[arg(long)]
        genesis_time_ms: u64,
        /// Give up on a round after this many seconds.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Mine blocks on a fresh local chain with the CPU, verify and print each.
    Mine {
        /// Chain parameters: devnet or mainnet.
        #[arg(long, default_value = "devnet")]
        chain: String,
        /// How many blocks to mine.
        #[arg(long, default_value_t = 10)]
        blocks: u64,
        /// Miner threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Miner public key, 64 hex characters (default: all zero).
        #[arg(long)]
        miner_key: Option<String>,
        /// Genesis timestamp in unix milliseconds. ASERT measures the schedule from
        /// it, so a devnet starts at "now" by default; mainnet uses its preset.
        #[arg(long)]
        genesis_time_ms: Option<u64>,
    },
}

/// Parses a 32-byte key from hex (`None` gives all zero).
pub fn parse_key(s: Option<&str>) -> Result<[u8; 32]> {
    let Some(s) = s else { return Ok([0; 32]) };
    let bytes = hex::decode(s).context("miner key is not hex")?;
    bytes.try_into().map_err(|b: Vec<u8>| anyhow::anyhow!("miner key must be 32 bytes, got {}", b.len()))
}

fn mine_blocks(chain_name: &str, blocks: u64, threads: usize, key: [u8; 32], genesis: Option<u64>) -> Result<()> {
    let Some(mut params) = ChainParams::by_name(chain_name) else {
        bail!("unknown chain {chain_name:?} (expected devnet or mainnet)");
    };
    match genesis {
        Some(t) => params = params.with_genesis_time(t)?,
        None if params.network.allows_genesis_override() => params = params.with_genesis_time(now_ms())?,
        None => {}
    }
    let spec = params.model;
    println!(
        "chain {} | model {}x{} d_model {} heads {} layers {} ffn {} | {} parameters, {:.1} M MAC per pass | {threads} threads",
        params.name(),
        spec.seq_len,
        spec.vocab,
        spec.d_model,
        spec.n_heads,
        spec.n_layers,
        spec.d_ffn,
        spec.parameter_count(),
        spec.macs_per_pass() as f64 / 1e6
    );
    let mut chain = HeaderChain::new(params)?;
    println!(
        "{:>6}  {:<16}  {:>10}  {:>9}  {:>8}  {:>10}  {:>9}",
        "height", "id", "bits", "attempts", "secs", "nonces/s", "verify ms"
    );
    let stop = AtomicBool::new(false);
    for _ in 0..blocks {
        let template = chain.next_template(key, [0; 32], now_ms());
        let started = Instant::now();
        let model = Model::derive(&spec, &template.prev_id)?;
        let attempts = AtomicU64::new(0);
        let job = MineJob {
            model: &model,
            template: template.template(),
            target: template.bits.to_target()?,
            start_nonce: 0,
            nonce_count: u64::MAX,
        };
        let MineOutcome::Found(found) = mine(&job, threads, &stop, &attempts) else {
            bail!("miner stopped without a block");
        };
        let secs = started.elapsed().as_secs_f64();
        let header = tpow_core::Header { nonce: found.nonce, output_digest: found.output_digest, ..template };
        // Verify as a peer would, from scratch: cheap checks, model, forward pass.
        let verify_started = Instant::now();
        let mut verifier = ModelCache::new();
        let outcome =
            chain.submit_cpu(&header, now_ms(), &mut verifier).context("our own block failed verification")?;
        let verify_ms = verify_started.elapsed().as_secs_f64() * 1e3;
        debug_assert!(matches!(outcome, InsertOutcome::NewTip { .. }));
        let n = attempts.load(Ordering::Relaxed);
        println!(
            "{:>6}  {:<16}  {:#010x}  {:>9}  {:>8.2}  {:>10.0}  {:>9.2}",
            header.height,
            &hex::encode(header.id())[..16],
            header.bits.0,
            n,
            secs,
            n as f64 / secs,
            verify_ms
        );
    }
    let tip = chain.tip();
    println!("tip height {} id {} total work {}", tip.header.height, hex::encode(tip.id), tip.total_work);
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => node::run(args),
        Command::Devnet(args) => devnet::run(args),
        Command::Attack { peer, kind, rounds, parallel, genesis_time_ms, seconds } => {
            let params = ChainParams::devnet().with_genesis_time(genesis_time_ms)?;
            let rt = tokio::runtime::Runtime::new().context("runtime")?;
            let per_round = std::time::Duration::from_secs(seconds);
            let refused = rt.block_on(attack::run(peer, &params, kind, rounds, per_round, parallel))?;
            println!("{refused} of {rounds} rounds disconnected or refused by the peer");
            std::process::exit(if refused == rounds { 0 } else { 1 })
        }
        Command::Mine { chain, blocks, threads, miner_key, genesis_time_ms } => {
            let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
            mine_blocks(&chain, blocks, threads, parse_key(miner_key.as_deref())?, genesis_time_ms)
        }
    }
}
