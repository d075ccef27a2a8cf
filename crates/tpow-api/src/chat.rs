//! The OpenAI-compatible chat messages the node serves (`/v1/models`,
//! `/v1/chat/completions`, its SSE chunks and its errors) plus the node's own
//! extension: the signed receipt in the `tpow` field.
//!
//! Model lists and requests default what other OpenAI-compatible servers and
//! clients may leave out (a node in upstream mode relays its upstream's list).

use serde::{Deserialize, Deserializer, Serialize};

use crate::node::Sampling;

/// `object` of a non-streamed answer.
pub const OBJECT_COMPLETION: &str = "chat.completion";
/// `object` of a streamed chunk.
pub const OBJECT_CHUNK: &str = "chat.completion.chunk";

/// One served model in `/v1/models`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ModelEntry {
    /// Creation time (unix s); 0 for the node's own models.
    #[serde(default)]
    pub created: u64,
    /// Model id to put in a chat request.
    pub id: String,
    /// Always `model`.
    #[serde(default)]
    pub object: String,
    /// `tpow` for the node's own models.
    #[serde(default)]
    pub owned_by: String,
    /// The model authors' sampling settings, when known (an extension; OpenAI
    /// clients ignore unknown fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommended_sampling: Option<Sampling>,
}

impl ModelEntry {
    /// An entry for a model this node serves itself.
    pub fn own(id: &str, recommended_sampling: Option<Sampling>) -> Self {
        ModelEntry {
            created: 0,
            id: id.to_string(),
            object: "model".into(),
            owned_by: "tpow".into(),
            recommended_sampling,
        }
    }
}

/// `GET /v1/models`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Models {
    /// The models.
    #[serde(default)]
    pub data: Vec<ModelEntry>,
    /// Always `list`.
    #[serde(default)]
    pub object: String,
}

impl Models {
    /// A `list` object.
    pub fn list(data: Vec<ModelEntry>) -> Self {
        Models { data, object: "list".into() }
    }
}

/// One text part of a message's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ContentPart {
    /// `text` (the only kind the node reads).
    #[serde(rename = "type")]
    pub kind: String,
    /// The text.
    #[serde(default)]
    pub text: Option<String>,
}

/// A message's content: a string or an array of text parts. (Named `Content` in
/// serde's messages, as the node's error texts always said.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged, rename = "Content")]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Parts, concatenated.
    Parts(Vec<ContentPart>),
}

/// One chat message (`role`: `system`, `developer`, `user` or `assistant`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ChatMessage {
    /// The text; `null` or absent is empty.
    #[serde(default)]
    pub content: Option<MessageContent>,
    /// Who wrote it.
    pub role: String,
}

impl ChatMessage {
    /// A plain-text message.
    pub fn text(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage { content: Some(MessageContent::Text(content.into())), role: role.into() }
    }

    /// The content as one string (parts concatenated, non-text parts skipped).
    pub fn content_text(&self) -> String {
        match &self.content {
            None => String::new(),
            Some(MessageContent::Text(t)) => t.clone(),
            Some(MessageContent::Parts(p)) => p.iter().filter_map(|p| p.text.as_deref()).collect(),
        }
    }
}

/// `stop`: one string or several.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum Stop {
    /// One stop string.
    One(String),
    /// Up to 4.
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StreamOptions {
    /// Add a last chunk with the token counts.
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// Body of `POST /v1/chat/completions`: the fields the node reads (others are
/// ignored locally and forwarded upstream). Every field is optional here so that
/// the node can name a missing one in OpenAI's error shape; docs/API.md has the
/// rules it then checks.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ChatRequest {
    /// Alias of `max_tokens` (wins when both are given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// Most tokens to generate (1..=the node's cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// 1..=256 messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<ChatMessage>>,
    /// A served model id (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Only 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Same seed, same prompt, same answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Up to 4 strings of 1..=256 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Stream the answer as server-sent chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// With `stream`: `include_usage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// 0..=2, default 1; 0 is greedy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// (0, 1], default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
}

/// Token counts as OpenAI reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Usage {
    /// Tokens generated.
    pub completion_tokens: u32,
    /// Tokens of the rendered prompt.
    pub prompt_tokens: u32,
    /// Their sum.
    pub total_tokens: u32,
}

impl Usage {
    /// Counts with their total.
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Usage { completion_tokens, prompt_tokens, total_tokens: prompt_tokens.saturating_add(completion_tokens) }
    }
}

/// The node's signed receipt over an answer (docs/API.md, "Chat receipts"):
/// Ed25519 by `node_key` over `BLAKE3-derive_key("tpow 2026-11 chat receipt",
/// request_hash ‖ response_hash)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Receipt {
    /// Ed25519 public key of the node, 32 bytes hex.
    pub node_key: String,
    /// The node's libp2p peer id (derived from `node_key`).
    pub peer_id: String,
    /// BLAKE3 of the raw request body, hex.
    pub request_hash: String,
    /// BLAKE3 of the whole generated content, hex.
    pub response_hash: String,
    /// Ed25519 signature of the receipt message, 64 bytes hex.
    pub signature: String,
}

/// One choice of a non-streamed answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ChatChoice {
    /// `stop` (end of turn or a stop string) or `length`.
    pub finish_reason: Option<String>,
    /// Always 0.
    pub index: u32,
    /// Always `null`.
    pub logprobs: Option<serde_json::Value>,
    /// The assistant's message.
    pub message: ChatMessage,
}

/// A `chat.completion`: the whole answer of a request without `stream`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ChatCompletion {
    /// One choice.
    pub choices: Vec<ChatChoice>,
    /// Unix seconds.
    pub created: u64,
    /// `chatcmpl-…`.
    pub id: String,
    /// The model that answered.
    pub model: String,
    /// `chat.completion`.
    pub object: String,
    /// Always `null`.
    pub system_fingerprint: Option<String>,
    /// The node's receipt (absent in an upstream's own answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpow: Option<Receipt>,
    /// Token counts, when known.
    pub usage: Option<Usage>,
}

impl ChatCompletion {
    /// The node's answer: one assistant message.
    pub fn answer(
        id: &str,
        created: u64,
        model: &str,
        content: &str,
        finish_reason: &str,
        usage: Option<Usage>,
    ) -> Self {
        ChatCompletion {
            choices: vec![ChatChoice {
                finish_reason: Some(finish_reason.to_string()),
                index: 0,
                logprobs: None,
                message: ChatMessage::text("assistant", content),
            }],
            created,
            id: id.to_string(),
            model: model.to_string(),
            object: OBJECT_COMPLETION.into(),
            system_fingerprint: None,
            tpow: None,
            usage,
        }
    }
}

/// What a chunk adds: the role (first chunk) and a piece of text.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Delta {
    /// More text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// `assistant`, in the first chunk only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// The one choice of a chunk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ChunkChoice {
    /// What this chunk adds.
    pub delta: Delta,
    /// `null` until the closing chunk: `stop` or `length`.
    pub finish_reason: Option<String>,
    /// Always 0.
    pub index: u32,
    /// Always `null`.
    pub logprobs: Option<serde_json::Value>,
}

/// A `chat.completion.chunk`: one `data:` event of a streamed answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ChatChunk {
    /// One choice; none in the usage chunk.
    pub choices: Vec<ChunkChoice>,
    /// Unix seconds.
    pub created: u64,
    /// `chatcmpl-…`, the same in every chunk.
    pub id: String,
    /// The model that answers.
    pub model: String,
    /// `chat.completion.chunk`.
    pub object: String,
    /// Always `null`.
    pub system_fingerprint: Option<String>,
    /// The receipt, on the last chunk before `[DONE]` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpow: Option<Receipt>,
    /// Absent unless the client asked for usage; then `null` on every chunk but
    /// the usage chunk (`Some(None)` is `null`, `None` is absent).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<Usage>"))]
    pub usage: Option<Option<Usage>>,
}

/// A field that is present (`null` included): `Some(value)`; `#[serde(default)]`
/// makes an absent one `None`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

impl ChatChunk {
    /// A chunk with one choice; `usage` is `Some(None)` (null) when the client
    /// asked for usage, as OpenAI writes it on every chunk but the last.
    pub fn delta(
        id: &str,
        created: u64,
        model: &str,
        delta: Delta,
        finish_reason: Option<&str>,
        with_usage_null: bool,
    ) -> Self {
        ChatChunk {
            choices: vec![ChunkChoice {
                delta,
                finish_reason: finish_reason.map(str::to_string),
                index: 0,
                logprobs: None,
            }],
            created,
            id: id.to_string(),
            model: model.to_string(),
            object: OBJECT_CHUNK.into(),
            system_fingerprint: None,
            tpow: None,
            usage: with_usage_null.then_some(None),
        }
    }

    /// The extra last chunk of `stream_options.include_usage`: no choices, the usage.
    pub fn usage(id: &str, created: u64, model: &str, usage: Option<Usage>) -> Self {
        ChatChunk {
            choices: Vec::new(),
            created,
            id: id.to_string(),
            model: model.to_string(),
            object: OBJECT_CHUNK.into(),
            system_fingerprint: None,
            tpow: None,
            usage: Some(usage),
        }
    }
}

/// The inside of an OpenAI error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct OpenAiErrorBody {
    /// Machine-readable reason (`invalid_json`, `model_not_found`,
    /// `context_length_exceeded`, `request_too_large`, `unsupported_media_type`,
    /// `queue_full`, `server_busy`, `engine_unavailable`, `upstream_unavailable`).
    pub code: Option<String>,
    /// For a human.
    pub message: String,
    /// The offending request field, if one.
    pub param: Option<String>,
    /// `invalid_request_error`, `rate_limit_error` or `server_error`.
    #[serde(rename = "type", default)]
    pub kind: String,
}

/// An error of the `/v1` endpoints, in OpenAI's shape (also sent as an in-stream
/// `data:` event when a stream fails after its 200).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct OpenAiError {
    /// The error.
    pub error: OpenAiErrorBody,
}
