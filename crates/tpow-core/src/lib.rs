//! Consensus core of tpow: Transformer proof of work.
//!
//! Pure functions and sans-io state machines only: no clock, no network, no disk.
//! Callers pass the time in and get data out, which is what lets the same code run
//! in the full node, in the browser (wasm32) and in tests. docs/PROTOCOL.md is the
//! normative description of everything in this crate.
//!
//! Map:
//! - [`spec`]: chain parameters and the model shape;
//! - [`model`]: weights derived from the previous block id;
//! - [`forward`]: the integer forward pass (the reference);
//! - [`puzzle`]: nonce → tokens → output digest → pow hash;
//! - [`header`]: the 192-byte header;
//! - [`target`], [`asert`]: targets, work and difficulty;
//! - [`mmr`]: the FlyClient commitment;
//! - [`chain`]: validation, fork choice, reorgs;
//! - `miner` (with `std`): the multi-threaded CPU miner.

#![cfg_attr(not(feature = "std"), no_std)]
#![deny(missing_docs)]

extern crate alloc;

pub mod asert;
pub mod body;
pub mod chain;
pub mod flyclient;
pub mod forward;
pub mod hash;
pub mod header;
#[cfg(feature = "std")]
pub mod miner;
pub mod mmr;
pub mod model;
pub mod puzzle;
pub mod spec;
pub mod target;

/// 256-bit unsigned integer for targets and work.
pub type U256 = ruint::aliases::U256;

pub use chain::{BranchError, ChainEntry, HeaderChain, HeaderError, InsertOutcome, ModelCache, PendingBranch};
pub use header::{BlockId, Header};
pub use model::Model;
pub use spec::{ChainParams, ModelSpec, Network, ParamsError};
