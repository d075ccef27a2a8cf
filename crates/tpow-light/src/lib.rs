//! The tpow light client: verify, don't trust.
//!
//! It downloads headers from one or more untrusted nodes and checks them itself —
//! linkage, time, ASERT difficulty, the MMR commitment, the cheap pow hash, and
//! then the winning forward pass of each header it must verify (WebGPU in the
//! browser when there is an adapter, else tpow-core compiled to wasm). A sync
//! verifies the last L = 100 headers fully plus a FlyClient sample of older ones
//! drawn from the client's own randomness (a minority forger escapes with
//! probability ≤ 2^−50), so a chain of 100,000 headers costs about 435 forward
//! passes; full mode checks every header.
//!
//! Layering (after smoldot): everything outside `wasm` is a sans-io core — pure
//! functions and a [`Client`] generic over a small [`Platform`] trait (fetch bytes,
//! run a pass, read the clock) — compiled and tested natively against fake nodes
//! ([`testkit`]). `wasm` (wasm32 only) is the browser platform: fetch, WebSocket,
//! IndexedDB, a Web Worker for CPU passes, WebGPU through tpow-gpu, and the
//! wasm-bindgen class of the `pkg/` JS package. See README.md for the Rust and JS
//! APIs and the security argument for sampled headers.

pub mod client;
pub mod engine_race;
pub mod error;
pub mod flyclient;
pub mod nodes;
pub mod pass;
pub mod state;
pub mod verify;
pub mod wire;

#[cfg(all(not(target_arch = "wasm32"), any(test, feature = "testkit")))]
pub mod testkit;

#[cfg(target_arch = "wasm32")]
pub mod wasm;

pub use client::{
    Backend, Check, Checkpoint, Client, Config, Phase, Platform, Progress, Stats, SyncMode, SyncReport, TipSummary,
    VerifiedRecord,
};
pub use error::{EngineError, FetchError, LightError, NodeFault};
pub use nodes::{NodeState, NodeStatus};
pub use wire::TipClaim;

#[cfg(target_arch = "wasm32")]
pub use wasm::{GpuUse, LightClient, LightOptions};
