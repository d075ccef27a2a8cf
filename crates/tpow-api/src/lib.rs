//! Every message of the tpow node's HTTP/WebSocket API (docs/API.md), defined once.
//!
//! The node renders its answers from these types, the light client (tpow-light)
//! and the web app (www) parse them with the same types, and docs/openapi.yaml is
//! generated from them (feature `schema`, [`openapi`]), so the three sides and the
//! documentation cannot drift apart.
//!
//! Conventions of the wire format, kept here rather than in each caller:
//!
//! - hashes, keys, headers and targets are lowercase hex strings; 256-bit work is
//!   a decimal string and nonces are decimal strings, so no client needs JSON
//!   numbers above 2^53;
//! - fields are declared in alphabetical order: the node used to build its JSON
//!   with `serde_json::json!`, whose maps are sorted, and declaring them sorted
//!   keeps every answer byte for byte what it was (tests/wire.rs checks this);
//! - optional fields that the node writes as `null` are `Option`s without
//!   `skip_serializing_if`; fields that are sometimes absent skip when `None`.
//!
//! Fields the node always writes are required; readers ignore unknown fields, so
//! newer nodes stay readable. Only what other OpenAI-compatible servers may omit
//! (model lists, request fields, message content) has defaults.
//! The types hold strings where the wire has strings: checking that a hex string
//! is a header or a proof is the reader's job, with its own typed errors (the
//! light client blames the node that sent it).
//!
//! Plain data with serde only: builds for `wasm32-unknown-unknown`.

pub mod chain;
pub mod chat;
pub mod mining;
pub mod node;
#[cfg(feature = "schema")]
pub mod openapi;

pub use chain::{
    AsertInfo, ChainInfo, FlyAnswer, FlySample, HeaderJson, Headers, Health, MmrProofAnswer, ModelShape, Tip,
};
pub use chat::{
    ChatChoice, ChatChunk, ChatCompletion, ChatMessage, ChatRequest, ChunkChoice, ContentPart, Delta, MessageContent,
    ModelEntry, Models, OpenAiError, OpenAiErrorBody, Receipt, Stop, StreamOptions, Usage,
};
pub use mining::{MinerRow, Miners, NodeMinerStats, ShareAnswer, ShareSubmission, Work};
pub use node::{ChatInfo, EngineInfo, Info, Peer, Peers, Sampling};

use serde::{Deserialize, Serialize};

/// The body of every error the node's own API returns (4xx, 5xx): `{"error": "…"}`.
/// (The OpenAI-compatible `/v1` endpoints use [`OpenAiError`] instead, as OpenAI's
/// clients expect.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "Error"))]
pub struct ApiError {
    /// What the node objected to, for a human.
    pub error: String,
}

impl ApiError {
    /// An error body with this message.
    pub fn new(message: impl Into<String>) -> Self {
        ApiError { error: message.into() }
    }
}

/// A short text for a failed response: the node's `{"error": "…"}`, OpenAI's
/// `{"error": {"message": "…"}}`, else the start of the raw body.
pub fn error_text(status: u16, body: &str) -> String {
    let msg = serde_json::from_str::<ApiError>(body)
        .map(|e| e.error)
        .or_else(|_| serde_json::from_str::<OpenAiError>(body).map(|e| e.error.message))
        .ok();
    let detail = msg.unwrap_or_else(|| body.chars().take(200).collect());
    if detail.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {detail}")
    }
}

/// Lowercase hex of 32 bytes (ids, keys, roots).
pub(crate) fn hex32(bytes: &[u8; 32]) -> String {
    hex::encode(bytes)
}

/// A 256-bit value as 64 big-endian hex digits (targets).
pub(crate) fn target_hex(t: &tpow_core::U256) -> String {
    hex::encode(t.to_be_bytes::<32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_reads_both_error_shapes() {
        assert_eq!(error_text(409, r#"{"error":"stale share"}"#), "HTTP 409: stale share");
        assert_eq!(error_text(503, r#"{"error":{"message":"busy"}}"#), "HTTP 503: busy");
        assert_eq!(error_text(500, "oops"), "HTTP 500: oops");
        assert_eq!(error_text(502, ""), "HTTP 502");
    }
}
