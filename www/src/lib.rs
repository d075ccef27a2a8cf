//! The tpow web app: a chain dashboard that verifies headers in the browser, a chat
//! with the models nodes serve, and an opt-in miner in a Web Worker.
//!
//! Everything that does not need a browser lives in plain modules that build and
//! are tested natively (`cargo test -p tpow-web`): node URLs, the node API's JSON,
//! the server-sent-events parser, chat receipts, mining arithmetic, chart geometry
//! and number formatting. The browser parts (`web`) only exist on wasm32.

pub mod api;
pub mod chain;
pub mod chart;
pub mod mining;
pub mod nodes;
pub mod receipt;
pub mod sse;
pub mod units;

#[cfg(target_arch = "wasm32")]
pub mod web;
