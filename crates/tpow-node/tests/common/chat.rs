//! Helpers of the chat tests: request bodies, SSE parsing and an independent
//! receipt check that follows docs/API.md (as a client would write it).

use serde_json::{json, Value};

/// The model file of the local-engine tests (`TPOW_MODEL` overrides).
pub fn model_path() -> std::path::PathBuf {
    match std::env::var_os("TPOW_MODEL") {
        Some(p) => p.into(),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf"),
    }
}

/// A one-message chat request with extra fields merged in.
pub fn chat_body(model: &str, prompt: &str, extra: Value) -> String {
    let mut v = json!({ "model": model, "messages": [{ "role": "user", "content": prompt }] });
    if let (Some(obj), Some(more)) = (v.as_object_mut(), extra.as_object()) {
        for (k, val) in more {
            obj.insert(k.clone(), val.clone());
        }
    }
    v.to_string()
}

/// The `data:` payloads of a server-sent-events body, in order.
pub fn sse_data(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    let mut out = Vec::new();
    for event in text.split("\n\n") {
        let data: Vec<&str> =
            event.lines().filter_map(|l| l.strip_prefix("data:")).map(|d| d.strip_prefix(' ').unwrap_or(d)).collect();
        if !data.is_empty() {
            out.push(data.join("\n"));
        }
    }
    out
}

/// A parsed chat stream.
pub struct Streamed {
    pub chunks: Vec<Value>,
    /// Concatenated `delta.content`.
    pub content: String,
    pub finish_reason: Option<String>,
    pub usage: Option<Value>,
    /// The `tpow` receipt of the last chunk.
    pub receipt: Option<Value>,
    pub ended_with_done: bool,
}

pub fn parse_stream(body: &[u8]) -> Streamed {
    let data = sse_data(body);
    let ended_with_done = data.last().map(String::as_str) == Some("[DONE]");
    let chunks: Vec<Value> = data
        .iter()
        .filter(|d| d.as_str() != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("chunk is not JSON ({e}): {d}")))
        .collect();
    let mut content = String::new();
    let mut finish_reason = None;
    let mut usage = None;
    for c in &chunks {
        if let Some(t) = c["choices"][0]["delta"]["content"].as_str() {
            content.push_str(t);
        }
        if let Some(f) = c["choices"][0]["finish_reason"].as_str() {
            finish_reason = Some(f.to_string());
        }
        if c["usage"].is_object() {
            usage = Some(c["usage"].clone());
        }
    }
    let receipt = chunks.last().and_then(|c| c.get("tpow")).cloned();
    Streamed { chunks, content, finish_reason, usage, receipt, ended_with_done }
}

/// The receipt check of docs/API.md, written from the document:
/// message = BLAKE3-derive_key("tpow 2026-11 chat receipt", BLAKE3(body) ‖ BLAKE3(content)).
pub fn verify_receipt(node_key_hex: &str, request_body: &[u8], content: &str, signature_hex: &str) -> bool {
    let (Ok(key), Ok(sig)) = (hex::decode(node_key_hex), hex::decode(signature_hex)) else { return false };
    let Ok(key) = libp2p::identity::ed25519::PublicKey::try_from_bytes(&key) else { return false };
    let mut h = blake3::Hasher::new_derive_key("tpow 2026-11 chat receipt");
    h.update(blake3::hash(request_body).as_bytes());
    h.update(blake3::hash(content.as_bytes()).as_bytes());
    key.verify(h.finalize().as_bytes(), &sig)
}

/// Checks a `tpow` receipt object against the request body and content.
pub fn receipt_ok(receipt: &Value, request_body: &[u8], content: &str) -> bool {
    let field = |k: &str| receipt[k].as_str().unwrap_or_default().to_string();
    field("request_hash") == blake3::hash(request_body).to_hex().as_str()
        && field("response_hash") == blake3::hash(content.as_bytes()).to_hex().as_str()
        && verify_receipt(&field("node_key"), request_body, content, &field("signature"))
}
