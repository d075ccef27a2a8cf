//! Who a node is and whom it knows: `/api/info` and `/api/peers`. A light client
//! and the web app list nodes by the models they serve with these.

use serde::{Deserialize, Serialize};

/// A model's recommended sampling settings (the model authors'; the API's own
/// defaults stay OpenAI's). The web app sends them with its chat requests.
/// (f64, as the request fields are: an f32 0.2 would become 0.20000000298… on
/// its way through a `serde_json::Value`; [`Sampling::from_f32`] keeps 0.2.)
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Sampling {
    /// Softmax temperature (0 is greedy).
    pub temperature: f64,
    /// Nucleus mass.
    pub top_p: f64,
}

impl Sampling {
    /// Settings held as f32, through their shortest decimal text (0.2f32 is 0.2).
    pub fn from_f32(temperature: f32, top_p: f32) -> Self {
        let f = |x: f32| x.to_string().parse::<f64>().unwrap_or(f64::from(x));
        Sampling { temperature: f(temperature), top_p: f(top_p) }
    }
}

/// The local chat engine's batch and KV-cache use (`/api/info` `chat.engine`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EngineInfo {
    /// Requests in the running batch.
    pub active: u64,
    /// Generations cancelled (the client went away).
    pub cancelled_generations: u64,
    /// Tokens those cancelled generations had produced.
    pub cancelled_tokens: u64,
    /// KV-cache memory allocated now.
    pub kv_cache_allocated_bytes: u64,
    /// The KV-cache budget.
    pub kv_cache_budget_bytes: u64,
    /// KV-cache bytes of one position.
    pub kv_cache_bytes_per_token: u64,
    /// KV-cache memory reserved by queued and running requests.
    pub kv_cache_reserved_bytes: u64,
    /// Most requests generated together.
    pub max_batch: u64,
    /// Requests waiting for room in the batch.
    pub queued: u64,
}

/// The chat side of `/api/info`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ChatInfo {
    /// `local` (the node's own engine), `upstream` (forwarding) or `none`.
    pub backend: String,
    /// Generations queued or running (local engine only).
    pub demand: Option<u64>,
    /// The local engine's load (local engine only).
    pub engine: Option<EngineInfo>,
    /// Model ids served.
    pub models: Vec<String>,
    /// The served model's recommended sampling, when known.
    pub sampling: Option<Sampling>,
    /// Why chat is off (`backend` is then `none`).
    pub unavailable: Option<String>,
}

/// `GET /api/info`: who the node is and what it serves.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Info {
    /// Chain name (`devnet`, `mainnet`).
    pub chain: String,
    /// The chat side; `null` in a node built without chat.
    pub chat: Option<ChatInfo>,
    /// Chat models served (the same as `chat.models`).
    pub models: Vec<String>,
    /// The node's ed25519 public key, hex: it signs chat receipts, and the peer id
    /// derives from it.
    pub node_key: String,
    /// libp2p peer id.
    pub peer_id: String,
    /// The node's software version.
    pub version: String,
}

impl Info {
    /// Generations queued or running at the node (0 when it does not say).
    pub fn demand(&self) -> u64 {
        self.chat.as_ref().and_then(|c| c.demand).unwrap_or(0)
    }

    /// The served model's recommended sampling, if the node says.
    pub fn sampling(&self) -> Option<Sampling> {
        self.chat.as_ref()?.sampling
    }

    /// Why the node serves no chat, if it says.
    pub fn unavailable(&self) -> Option<&str> {
        self.chat.as_ref()?.unavailable.as_deref()
    }
}

/// One connected peer, as its node sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Peer {
    /// Remote multiaddress of the first connection (`/ip4/127.0.0.1/tcp/9646`).
    pub address: String,
    /// The peer's libp2p identify agent version, when known.
    pub agent: Option<String>,
    /// Blocks received from it that the node stored.
    pub blocks_received: u64,
    /// Port of its HTTP API (from its agent version); its host is the one in
    /// `address`. `null` for peers that are not tpow nodes.
    pub http_port: Option<u16>,
    /// Chat models it serves (from its agent version).
    pub models: Vec<String>,
    /// Whether the node dialled it.
    pub outbound: bool,
    /// libp2p peer id.
    pub peer_id: String,
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

/// `GET /api/peers`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Peers {
    /// Connected peers.
    pub peers: Vec<Peer>,
}
