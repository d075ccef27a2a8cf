//! `tpow-node`: the command line of the tpow full node (the node itself is the
//! `tpow_node` library).
//!
//! - `run`: one node (see `tpow_node::node`).
//! - `devnet`: N mining nodes on loopback as child processes of this one.
//! - `mine`: mine and verify blocks of a fresh in-memory chain.

use anyhow::Result;
use clap::{Parser, Subcommand};
use tpow_node::{demo, devnet, node, parse_key};

#[derive(Parser)]
#[command(name = "tpow-node", version, about = "tpow full node (Transformer proof of work)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start; boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run a full node.
    Run(node::RunArgs),
    /// Start N connected mining nodes on 127.0.0.1 (child processes); Ctrl-C stops all.
    Devnet(devnet::DevnetArgs),
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

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => node::run(args),
        Command::Devnet(args) => devnet::run(args),
        Command::Mine { chain, blocks, threads, miner_key, genesis_time_ms } => {
            let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
            demo::mine_blocks(&chain, blocks, threads, parse_key(miner_key.as_deref())?, genesis_time_ms)
        }
    }
}
