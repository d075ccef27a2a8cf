//! `tpow-node`: the command line of the tpow full node (the node itself is the
//! `tpow_node` library).
//!
//! - `run`: one node (see `tpow_node::node`).
//! - `devnet`: N mining nodes on loopback as child processes of this one.
//! - `mine`: mine and verify blocks of a fresh in-memory chain.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tpow_core::ChainParams;
use tpow_node::{attack, demo, devnet, node, parse_key};

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
            demo::mine_blocks(&chain, blocks, threads, parse_key(miner_key.as_deref())?, genesis_time_ms)
        }
    }
}
