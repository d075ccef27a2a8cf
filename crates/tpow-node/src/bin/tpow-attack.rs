//! `tpow-attack`: test support, not part of the node. It plays a hostile peer
//! against a running node so the tests can prove what forged data costs it
//! (docs/SECURITY.md). Built only with the `attack` feature, which only the
//! crate's own tests enable; exits 0 when every round was disconnected or
//! refused by the node, 1 otherwise.

use anyhow::{Context, Result};
use clap::Parser;
use tpow_core::ChainParams;
use tpow_node::attack;

#[derive(Parser)]
#[command(name = "tpow-attack", about = "Test tool: gossip invalid blocks to a tpow node")]
struct Args {
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
}

fn main() -> Result<()> {
    let a = Args::parse();
    let params = ChainParams::devnet().with_genesis_time(a.genesis_time_ms)?;
    let rt = tokio::runtime::Runtime::new().context("runtime")?;
    let per_round = std::time::Duration::from_secs(a.seconds);
    let refused = rt.block_on(attack::run(a.peer, &params, a.kind, a.rounds, per_round, a.parallel))?;
    println!("{refused} of {} rounds disconnected or refused by the peer", a.rounds);
    std::process::exit(if refused == a.rounds { 0 } else { 1 })
}
