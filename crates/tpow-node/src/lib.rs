//! The tpow full node as a library; `src/main.rs` is its thin command line.
//!
//! - [`node::run`]: one node: redb store, libp2p network, optional CPU miner, HTTP
//!   API. With the `chat` feature (default) it also serves an OpenAI-compatible
//!   chat API (module `chat`) from a local model or an upstream server.
//! - [`devnet::run`]: N mining nodes on loopback as child processes of this one.
//! - [`demo::mine_blocks`]: mine and verify blocks of a fresh in-memory chain (a
//!   demo and a miner benchmark; touches no disk or network).
//! - [`attack`] (feature `attack`, tests only): a hostile peer, for the tests that prove what forgeries cost.
//!
//! Layering: pure logic (tpow-core, [`wire`], [`chain_state`], [`shares`],
//! [`limits`]) is unit-tested without I/O; [`service`], [`p2p`], [`http`] and
//! [`mining`] are the I/O edges around it.

#[cfg(feature = "attack")]
pub mod attack;
pub mod chain_state;
#[cfg(feature = "chat")]
pub mod chat;
pub mod demo;
pub mod devnet;
pub mod gpu_sync;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod mining;
pub mod node;
pub mod p2p;
pub mod scheduler;
pub mod service;
pub mod shares;
pub mod store;
pub mod summary;
pub mod time;
pub mod web;
pub mod wire;

use anyhow::{Context, Result};

/// Parses a 32-byte key from hex (`None` gives all zero).
pub fn parse_key(s: Option<&str>) -> Result<[u8; 32]> {
    let Some(s) = s else { return Ok([0; 32]) };
    let bytes = hex::decode(s).context("miner key is not hex")?;
    bytes.try_into().map_err(|b: Vec<u8>| anyhow::anyhow!("miner key must be 32 bytes, got {}", b.len()))
}
