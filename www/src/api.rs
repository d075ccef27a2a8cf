//! The node API's JSON (docs/API.md), as far as the app reads it. Unknown fields are
//! ignored so that newer nodes stay readable.

use serde::{Deserialize, Serialize};

/// `GET /api/tip` and every `/api/ws` message.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Tip {
    /// Height of the best tip.
    pub height: u64,
    /// Its id, hex.
    pub id: String,
    /// Cumulative work, decimal.
    pub total_work: String,
    /// Its target, 64 hex digits.
    pub target: String,
    /// Its timestamp (unix milliseconds).
    pub timestamp_ms: u64,
}

/// `GET /api/health`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Health {
    /// `ok` while the node runs.
    pub status: String,
    /// Chain name (`devnet`, `mainnet`).
    pub chain: String,
    /// Best height.
    pub height: u64,
    /// Connected peers.
    pub peers: u64,
}

/// `GET /api/work?miner=KEY`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Work {
    /// Height of the block being mined.
    pub height: u64,
    /// Its parent, hex: the model is derived from it.
    pub prev_id: String,
    /// The first 152 header bytes, hex.
    pub template: String,
    /// Block target, 64 hex digits.
    pub target: String,
    /// Share target, 64 hex digits.
    pub share_target: String,
    /// Shape of the puzzle model.
    pub model: ModelShape,
}

/// A model shape as the API writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct ModelShape {
    /// Token count.
    pub vocab: u32,
    /// Tokens per input.
    pub seq_len: u32,
    /// Residual width.
    pub d_model: u32,
    /// Attention heads.
    pub n_heads: u32,
    /// Blocks.
    pub n_layers: u32,
    /// MLP width.
    pub d_ffn: u32,
}

impl From<ModelShape> for tpow_core::ModelSpec {
    fn from(m: ModelShape) -> Self {
        tpow_core::ModelSpec {
            vocab: m.vocab,
            seq_len: m.seq_len,
            d_model: m.d_model,
            n_heads: m.n_heads,
            n_layers: m.n_layers,
            d_ffn: m.d_ffn,
        }
    }
}

/// Body of `POST /api/work`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Share {
    /// The full 192-byte header, hex.
    pub header: String,
}

/// Answer to an accepted share.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ShareAnswer {
    /// Whether the node took the share.
    pub accepted: bool,
    /// Whether it was also a block.
    pub block: bool,
    /// The miner's accepted shares at this node.
    pub shares: u64,
    /// The miner's blocks at this node.
    pub blocks: u64,
}

/// `GET /api/miners`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Miners {
    /// Per miner key.
    pub miners: Vec<MinerEntry>,
}

/// One miner at a node.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct MinerEntry {
    /// Key, hex.
    pub miner: String,
    /// Accepted shares.
    pub shares: u64,
    /// Blocks.
    pub blocks: u64,
}

/// `{"error": "..."}`, the body of every 4xx.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ApiError {
    /// What the node objected to.
    pub error: String,
}

/// `GET /v1/models` (OpenAI style).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Models {
    /// The models the node serves.
    #[serde(default)]
    pub data: Vec<ModelEntry>,
}

/// One served model.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ModelEntry {
    /// Model id to put in a chat request.
    pub id: String,
}

/// One chat message, as sent and kept in the conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// A model's recommended sampling settings (`/api/info` `chat.sampling`).
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
pub struct Sampling {
    /// Softmax temperature (0 is greedy).
    pub temperature: f32,
    /// Nucleus mass.
    pub top_p: f32,
}

/// Body of `POST /v1/chat/completions`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChatRequest<'a> {
    /// Model id.
    pub model: &'a str,
    /// The conversation so far.
    pub messages: &'a [ChatMessage],
    /// Always true: the answer streams in.
    pub stream: bool,
    /// Cap on generated tokens.
    pub max_tokens: u32,
    /// Temperature (omitted: the node's default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Top-p (omitted: the node's default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
}

/// `GET /api/info`: who a node is and what it serves.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Default)]
pub struct Info {
    /// The node's ed25519 key (it signs chat receipts), hex.
    #[serde(default)]
    pub node_key: String,
    /// Its libp2p peer id.
    #[serde(default)]
    pub peer_id: String,
    /// Models it serves for chat.
    #[serde(default)]
    pub models: Vec<String>,
    /// Chat state (null in a node without chat); read leniently, see [`Info::demand`].
    #[serde(default)]
    pub chat: Option<serde_json::Value>,
}

impl Info {
    /// Generations queued or running at the node.
    pub fn demand(&self) -> u64 {
        self.chat.as_ref().and_then(|c| c.get("demand")?.as_u64()).unwrap_or(0)
    }

    /// The served model's recommended sampling, if the node says.
    pub fn sampling(&self) -> Option<Sampling> {
        serde_json::from_value(self.chat.as_ref()?.get("sampling")?.clone()).ok()
    }

    /// Why the node serves no chat, if it says.
    pub fn unavailable(&self) -> Option<String> {
        self.chat.as_ref().and_then(|c| c.get("unavailable")?.as_str().map(str::to_string))
    }
}

/// `GET /api/peers`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Peers {
    /// Connected peers.
    pub peers: Vec<Peer>,
}

/// One peer as its node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Peer {
    /// libp2p peer id.
    #[serde(default)]
    pub peer_id: String,
    /// Its multiaddress (`/ip4/127.0.0.1/tcp/9646`).
    #[serde(default)]
    pub address: String,
    /// Models it announces.
    #[serde(default)]
    pub models: Vec<String>,
    /// The HTTP port it announces.
    #[serde(default)]
    pub http_port: Option<u16>,
}

impl Peer {
    /// The peer's HTTP base URL: the host of its address with its announced port.
    pub fn http_url(&self) -> Option<String> {
        let port = self.http_port?;
        let mut parts = self.address.split('/').skip(1);
        let (proto, host) = (parts.next()?, parts.next()?);
        match proto {
            "ip4" | "dns" | "dns4" | "dns6" if !host.is_empty() => Some(format!("http://{host}:{port}")),
            "ip6" if !host.is_empty() => Some(format!("http://[{host}]:{port}")),
            _ => None,
        }
    }
}

/// Error text from a failed response: the node's `{"error": ...}` (or OpenAI's
/// `{"error": {"message": ...}}`), else the raw body, shortened.
pub fn error_text(status: u16, body: &str) -> String {
    let msg = serde_json::from_str::<serde_json::Value>(body).ok().and_then(|v| {
        let e = v.get("error")?;
        e.as_str().map(str::to_string).or_else(|| e.get("message")?.as_str().map(str::to_string))
    });
    let detail = msg.unwrap_or_else(|| body.chars().take(200).collect());
    if detail.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_parses_and_converts_its_model() {
        let w: Work = serde_json::from_str(
            r#"{"height":43,"prev_id":"aa","header":"00","template":"bb","target":"01","share_target":"02",
            "model":{"vocab":256,"seq_len":16,"d_model":64,"n_heads":4,"n_layers":2,"d_ffn":256}}"#,
        )
        .expect("valid work");
        assert_eq!(w.height, 43);
        assert_eq!(tpow_core::ModelSpec::from(w.model), tpow_core::ModelSpec::DEVNET);
    }

    #[test]
    fn peers_give_their_chat_urls() {
        let p: Peers = serde_json::from_str(
            r#"{"peers":[{"peer_id":"a","address":"/ip4/127.0.0.1/tcp/9646","outbound":true,"agent":"x",
            "models":["M"],"http_port":8646,"blocks_received":3},
            {"peer_id":"b","address":"/ip6/::1/tcp/1","models":[],"http_port":9000},
            {"peer_id":"c","address":"/ip4/10.0.0.1/tcp/1","models":[],"http_port":null},
            {"peer_id":"d","address":"garbage","http_port":1}]}"#,
        )
        .expect("valid peers");
        let urls: Vec<_> = p.peers.iter().map(Peer::http_url).collect();
        assert_eq!(urls, vec![Some("http://127.0.0.1:8646".into()), Some("http://[::1]:9000".into()), None, None]);
        assert_eq!(p.peers[0].models, vec!["M"]);
    }

    #[test]
    fn info_parses_with_and_without_chat() {
        let i: Info = serde_json::from_str(
            r#"{"version":"0.1.0","chain":"devnet","peer_id":"p","node_key":"ab","models":["M"],
            "chat":{"backend":"local","models":["M"],"demand":2,"unavailable":null}}"#,
        )
        .expect("valid info");
        assert_eq!(i.demand(), 2);
        assert_eq!(i.unavailable(), None);
        let i: Info =
            serde_json::from_str(r#"{"peer_id":"p","node_key":"ab","models":[],"chat":null}"#).expect("valid");
        assert!(i.models.is_empty() && i.chat.is_none() && i.demand() == 0);
        let i: Info =
            serde_json::from_str(r#"{"models":[],"chat":{"backend":"none","demand":null,"unavailable":"--no-chat"}}"#)
                .expect("valid");
        assert_eq!((i.demand(), i.unavailable().as_deref()), (0, Some("--no-chat")));
    }

    #[test]
    fn error_text_reads_both_error_shapes() {
        assert_eq!(error_text(409, r#"{"error":"stale share"}"#), "HTTP 409: stale share");
        assert_eq!(error_text(503, r#"{"error":{"message":"busy"}}"#), "HTTP 503: busy");
        assert_eq!(error_text(500, "oops"), "HTTP 500: oops");
        assert_eq!(error_text(502, ""), "HTTP 502");
    }
}
