//! `tpow-node`: the full node binary.
//!
//! Today it has one job, `mine`: mine blocks on a fresh in-memory chain with the
//! multi-threaded CPU miner, verify each one as an independent node would (cheap
//! checks, then the forward pass), and print them. Networking, storage and the HTTP
//! API come with the full node.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use tpow_core::chain::InsertOutcome;
use tpow_core::miner::{mine, MineJob, MineOutcome};
use tpow_core::{ChainParams, HeaderChain, Model, ModelCache};

#[derive(Parser)]
#[command(name = "tpow-node", version, about = "tpow full node (Transformer proof of work)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn parse_key(s: Option<&str>) -> Result<[u8; 32]> {
    let Some(s) = s else { return Ok([0; 32]) };
    let bytes = hex::decode(s).context("miner key is not hex")?;
    bytes.try_into().map_err(|b: Vec<u8>| anyhow::anyhow!("miner key must be 32 bytes, got {}", b.len()))
}

fn mine_blocks(chain_name: &str, blocks: u64, threads: usize, key: [u8; 32], genesis: Option<u64>) -> Result<()> {
    let Some(mut params) = ChainParams::by_name(chain_name) else {
        bail!("unknown chain {chain_name:?} (expected devnet or mainnet)");
    };
    match genesis {
        Some(t) => params.genesis_timestamp_ms = t,
        None if params.name == "devnet" => params.genesis_timestamp_ms = now_ms(),
        None => {}
    }
    let spec = params.model;
    println!(
        "chain {} | model {}x{} d_model {} heads {} layers {} ffn {} | {} parameters, {:.1} M MAC per pass | {threads} threads",
        params.name,
        spec.seq_len,
        spec.vocab,
        spec.d_model,
        spec.n_heads,
        spec.n_layers,
        spec.d_ffn,
        spec.parameter_count(),
        spec.macs_per_pass() as f64 / 1e6
    );
    let mut chain = HeaderChain::new(params);
    let mut verifier = ModelCache::new();
    println!("{:>6}  {:<16}  {:>10}  {:>9}  {:>8}  {:>10}  {:>9}", "height", "id", "bits", "attempts", "secs", "nonces/s", "verify ms");
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
        let header = tpow_core::Header {
            nonce: found.nonce,
            output_digest: found.output_digest,
            ..template
        };
        // Verify as a peer would, from scratch: cheap checks, model, forward pass.
        let verify_started = Instant::now();
        verifier = ModelCache::new();
        let outcome = chain.submit_cpu(&header, now_ms(), &mut verifier).context("our own block failed verification")?;
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
    drop(verifier);
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Mine {
            chain,
            blocks,
            threads,
            miner_key,
            genesis_time_ms,
        } => {
            let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
            mine_blocks(&chain, blocks, threads, parse_key(miner_key.as_deref())?, genesis_time_ms)
        }
    }
}
