//! The HTTP/WebSocket API (axum) for light clients, dashboards and browser
//! miners. Documented in docs/API.md and docs/openapi.yaml.
//!
//! Handlers only parse, ask the chain service and format: every rule lives in
//! tpow-core or the service. Every input error is a 4xx with `{"error": "..."}`;
//! every list is capped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tower_http::cors::CorsLayer;
use tpow_core::body::Body;
use tpow_core::chain::PowInput;
use tpow_core::header::HEADER_LEN;
use tpow_core::puzzle::pow_hash;
use tpow_core::target::hash_meets_target;
use tpow_core::{Header, ModelCache, U256};

use crate::chain_state::{QueryError, TipInfo};
use crate::mining::MinerStats;
use crate::p2p::PeerInfo;
use crate::service::ChainHandle;

/// Most headers one `/api/headers` call returns.
pub const MAX_HEADERS: u64 = 2_000;
/// Most newest headers in a FlyClient answer.
pub const MAX_FLY_LAST: u64 = 100;
/// Most sampled headers in a FlyClient answer.
pub const MAX_FLY_SAMPLES: usize = 200;
/// Browser shares are this many times easier than a block.
pub const SHARE_FACTOR: u32 = 256;
/// Most distinct miner keys tracked (oldest dropped first).
const MAX_MINERS: usize = 10_000;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct ApiState {
    /// The chain service.
    pub chain: ChainHandle,
    /// Connected peers, kept up to date by the network task.
    pub peers: watch::Receiver<Vec<PeerInfo>>,
    /// Blocks found through `POST /api/work`, for gossip.
    pub publish: mpsc::Sender<(Header, Body)>,
    /// This node's own miner, if mining.
    pub node_miner: Option<Arc<MinerStats>>,
    /// Shares per browser miner key.
    pub miners: Arc<Mutex<Miners>>,
    /// Who this node is (for `/api/info`).
    pub identity: NodeIdentity,
    /// The chat side (OpenAI-compatible `/v1/...`).
    #[cfg(feature = "chat")]
    pub chat: Arc<crate::chat::ChatState>,
}

/// The node's public identity, as `/api/info` reports it.
#[derive(Clone, Debug)]
pub struct NodeIdentity {
    /// libp2p peer id.
    pub peer_id: String,
    /// Ed25519 public key (hex): signs chat receipts; the peer id derives from it.
    pub node_key: String,
}

/// Share accounting per miner key.
#[derive(Default)]
pub struct Miners {
    by_key: HashMap<[u8; 32], MinerEntry>,
    /// Ids of shares already counted (a share counts once); cleared per tip.
    seen: std::collections::HashSet<[u8; 32]>,
    seen_tip: [u8; 32],
}

#[derive(Clone, Copy, Default, Serialize)]
struct MinerEntry {
    shares: u64,
    blocks: u64,
    last_share_ms: u64,
}

/// An API error: a status and a message, rendered as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }
    fn not_found(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::NOT_FOUND, msg.into())
    }
    fn unavailable() -> Self {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, "node is shutting down".into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad(r.body_text())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError(r.status(), r.body_text())
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::UnknownHeight(_) => ApiError::not_found(e.to_string()),
            _ => ApiError::bad(e.to_string()),
        }
    }
}

impl From<crate::service::Stopped> for ApiError {
    fn from(_: crate::service::Stopped) -> Self {
        ApiError::unavailable()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The router with CORS open to any origin (light clients are served elsewhere).
pub fn router(state: ApiState, web_dir: Option<&std::path::Path>) -> Router {
    #[cfg(feature = "chat")]
    let chat = state.chat.clone();
    let api = Router::new()
        .route("/api/health", get(health))
        .route("/api/info", get(info))
        .route("/api/tip", get(tip))
        .route("/api/headers", get(headers))
        .route("/api/mmr-proof", get(mmr_proof))
        .route("/api/flyclient", get(flyclient))
        .route("/api/ws", get(ws))
        .route("/api/peers", get(peers))
        .route("/api/work", get(get_work).post(post_work))
        .route("/api/miners", get(miners))
        .route("/metrics", get(metrics))
        .with_state(state);
    #[cfg(feature = "chat")]
    let api = api.merge(crate::chat::routes::router(chat));
    // The app's files take the fallback when served (unknown API paths stay JSON 404s).
    let api = match web_dir {
        Some(dir) => api.merge(crate::web::router(dir)),
        None => api.fallback(|| async { ApiError::not_found("no such endpoint") }),
    };
    api.layer(CorsLayer::permissive())
}

/// `GET /metrics`: the node's accounting in the OpenMetrics text format.
async fn metrics() -> Response {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], crate::metrics::get().encode()).into_response()
}

/// Binds the API's address. Writes the bound address to `<data_dir>/http-addr`
/// (port 0 picks a free one). Bound before the network starts, so the port can
/// be announced to peers.
pub async fn bind(addr: SocketAddr, data_dir: &std::path::Path) -> anyhow::Result<tokio::net::TcpListener> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding HTTP on {addr}"))?;
    let bound = listener.local_addr().context("HTTP local address")?;
    std::fs::write(data_dir.join("http-addr"), bound.to_string()).context("writing http-addr")?;
    tracing::info!("HTTP API on http://{bound}/api/tip");
    Ok(listener)
}

/// Serves until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    web_dir: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    axum::serve(listener, router(state, web_dir.as_deref())).await.context("HTTP server")
}

fn tip_json(t: &TipInfo) -> Value {
    json!({
        "height": t.height,
        "id": hex::encode(t.id),
        "total_work": t.total_work.to_string(),
        "target": hex::encode(t.target.to_be_bytes::<32>()),
        "timestamp_ms": t.timestamp_ms,
    })
}

fn header_json(h: &Header) -> Value {
    json!({
        "height": h.height,
        "id": hex::encode(h.id()),
        "prev_id": hex::encode(h.prev_id),
        "timestamp_ms": h.timestamp_ms,
        "bits": h.bits.0,
        "body_root": hex::encode(h.body_root),
        "mmr_root": hex::encode(h.mmr_root),
        "miner_key": hex::encode(h.miner_key),
        "nonce": h.nonce.to_string(),
        "output_digest": hex::encode(h.output_digest),
        "hex": hex::encode(h.encode()),
    })
}

async fn health(State(s): State<ApiState>) -> Json<Value> {
    let t = s.chain.tip().borrow().clone();
    Json(json!({ "status": "ok", "chain": s.chain.params().name, "height": t.height, "peers": s.peers.borrow().len() }))
}

/// Who this node is and what it serves: light clients list nodes by model with it.
async fn info(State(s): State<ApiState>) -> Json<Value> {
    #[cfg(feature = "chat")]
    let (models, chat) = (s.chat.backend.info().models, s.chat.info_json());
    #[cfg(not(feature = "chat"))]
    let (models, chat): (Vec<String>, Value) = (Vec::new(), Value::Null);
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "chain": s.chain.params().name,
        "peer_id": s.identity.peer_id,
        "node_key": s.identity.node_key,
        "models": models,
        "chat": chat,
    }))
}

async fn tip(State(s): State<ApiState>) -> Json<Value> {
    let t = s.chain.tip().borrow().clone();
    Json(tip_json(&t))
}

fn parse_u64(params: &HashMap<String, String>, key: &str) -> ApiResult<Option<u64>> {
    params
        .get(key)
        .map(|v| {
            v.parse::<u64>().map_err(|_| ApiError::bad(format!("`{key}` must be a non-negative integer, got {v:?}")))
        })
        .transpose()
}

fn require_u64(params: &HashMap<String, String>, key: &str) -> ApiResult<u64> {
    parse_u64(params, key)?.ok_or_else(|| ApiError::bad(format!("missing query parameter `{key}`")))
}

type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

async fn headers(State(s): State<ApiState>, q: Params) -> ApiResult<Response> {
    let Query(q) = q?;
    let from = require_u64(&q, "from")?;
    let count = parse_u64(&q, "count")?.unwrap_or(1);
    if count == 0 || count > MAX_HEADERS {
        return Err(ApiError::bad(format!("`count` must be in 1..={MAX_HEADERS}")));
    }
    let tip = s.chain.tip().borrow().height;
    if from > tip {
        return Err(ApiError::not_found(format!("height {from} is above the tip {tip}")));
    }
    let headers = s.chain.headers(from, count).await?;
    match q.get("format").map(String::as_str) {
        None | Some("binary") => {
            let mut bytes = Vec::with_capacity(headers.len() * HEADER_LEN);
            for h in &headers {
                bytes.extend_from_slice(&h.encode());
            }
            Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
        }
        Some("json") => {
            Ok(Json(json!({ "headers": headers.iter().map(header_json).collect::<Vec<_>>() })).into_response())
        }
        Some(other) => Err(ApiError::bad(format!("`format` must be binary or json, got {other:?}"))),
    }
}

async fn mmr_proof(State(s): State<ApiState>, q: Params) -> ApiResult<Json<Value>> {
    let Query(q) = q?;
    let height = require_u64(&q, "height")?;
    let tip = match parse_u64(&q, "tip")? {
        Some(t) => t,
        None => s.chain.tip().borrow().height,
    };
    let (leaf, root, proof) = s.chain.mmr_proof(height, tip).await??;
    Ok(Json(json!({
        "height": height,
        "tip": tip,
        "leaf_count": proof.leaf_count,
        "header": hex::encode(leaf.encode()),
        "tip_header": hex::encode(root.encode()),
        "mmr_root": hex::encode(root.mmr_root),
        "proof": hex::encode(proof.encode()),
    })))
}

async fn flyclient(State(s): State<ApiState>, q: Params) -> ApiResult<Json<Value>> {
    let Query(q) = q?;
    let tip = match parse_u64(&q, "tip")? {
        Some(t) => t,
        None => s.chain.tip().borrow().height,
    };
    let last = parse_u64(&q, "last")?.unwrap_or(10);
    let samples = parse_u64(&q, "samples")?.unwrap_or(20);
    if last == 0 || last > MAX_FLY_LAST {
        return Err(ApiError::bad(format!("`last` must be in 1..={MAX_FLY_LAST}")));
    }
    if samples > MAX_FLY_SAMPLES as u64 {
        return Err(ApiError::bad(format!("`samples` must be at most {MAX_FLY_SAMPLES}")));
    }
    let d = s.chain.flyclient(tip, last, samples as usize).await??;
    Ok(Json(json!({
        "tip": tip,
        "tip_id": hex::encode(d.tip.0.id()),
        "total_work": d.tip.1.to_string(),
        "mmr_root": hex::encode(d.tip.0.mmr_root),
        "last": d.last.iter().map(|h| hex::encode(h.encode())).collect::<Vec<_>>(),
        "sampled": d.sampled.iter().map(|(h, w, p)| json!({
            "height": h.height,
            "header": hex::encode(h.encode()),
            "total_work": w.to_string(),
            "proof": hex::encode(p.encode()),
        })).collect::<Vec<_>>(),
    })))
}

async fn peers(State(s): State<ApiState>) -> Json<Value> {
    let list = s.peers.borrow().clone();
    Json(json!({ "peers": list }))
}

async fn ws(State(s): State<ApiState>, upgrade: WebSocketUpgrade) -> Response {
    let rx = s.chain.tip();
    upgrade.max_message_size(1024).on_upgrade(move |socket| push_tips(socket, rx))
}

/// Sends the current tip, then every new one, until the client goes away.
async fn push_tips(mut socket: WebSocket, mut rx: watch::Receiver<TipInfo>) {
    loop {
        let text = tip_json(&rx.borrow_and_update()).to_string();
        if socket.send(Message::Text(text.into())).await.is_err() {
            return;
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                // Clients have nothing to say; pings are answered by axum.
                Some(Ok(_)) => {}
            },
        }
    }
}

fn parse_key(s: &str) -> ApiResult<[u8; 32]> {
    let bytes = hex::decode(s).map_err(|e| ApiError::bad(format!("miner key is not hex: {e}")))?;
    bytes.try_into().map_err(|b: Vec<u8>| ApiError::bad(format!("miner key must be 32 bytes, got {}", b.len())))
}

fn share_target(block_target: U256) -> U256 {
    block_target.saturating_mul(U256::from(SHARE_FACTOR))
}

async fn get_work(State(s): State<ApiState>, q: Params) -> ApiResult<Json<Value>> {
    let Query(q) = q?;
    let key = parse_key(q.get("miner").ok_or_else(|| ApiError::bad("missing query parameter `miner`"))?)?;
    let (header, _body) = s.chain.template(key).await?;
    let target = header.bits.to_target().map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let spec = s.chain.params().model;
    Ok(Json(json!({
        "height": header.height,
        "prev_id": hex::encode(header.prev_id),
        "header": hex::encode(header.encode()),
        "template": hex::encode(header.template()),
        "target": hex::encode(target.to_be_bytes::<32>()),
        "share_target": hex::encode(share_target(target).to_be_bytes::<32>()),
        "model": { "vocab": spec.vocab, "seq_len": spec.seq_len, "d_model": spec.d_model,
                   "n_heads": spec.n_heads, "n_layers": spec.n_layers, "d_ffn": spec.d_ffn },
    })))
}

/// A solved template: the 192-byte header with nonce and output digest filled in.
#[derive(Deserialize)]
struct Solution {
    header: String,
}

async fn post_work(state: State<ApiState>, body: Result<Json<Solution>, JsonRejection>) -> ApiResult<Json<Value>> {
    let result = check_share(state, body).await;
    let m = crate::metrics::get();
    match &result {
        Ok(_) => m.shares_accepted.inc(),
        Err(_) => m.shares_rejected.inc(),
    };
    result
}

/// The checks of `POST /api/work`, cheapest first.
async fn check_share(State(s): State<ApiState>, body: Result<Json<Solution>, JsonRejection>) -> ApiResult<Json<Value>> {
    let Json(sol) = body?;
    let bytes = hex::decode(&sol.header).map_err(|e| ApiError::bad(format!("header is not hex: {e}")))?;
    let header = Header::decode(&bytes).map_err(|e| ApiError::bad(format!("header: {e}")))?;
    let tip = s.chain.tip().borrow().clone();
    if header.prev_id != tip.id || header.height != tip.height + 1 {
        return Err(ApiError(StatusCode::CONFLICT, "stale share: not on the current tip; fetch new work".into()));
    }
    // The template must be exactly what we hand out (apart from the timestamp,
    // which a browser may refresh): cheap checks before a forward pass.
    let (expected, body) = s.chain.template(header.miner_key).await?;
    if header.bits != expected.bits || header.mmr_root != expected.mmr_root || header.body_root != body.root() {
        return Err(ApiError::bad("header does not match the work template (bits, mmr_root or body_root)"));
    }
    let block_target = header.bits.to_target().map_err(|e| ApiError::bad(e.to_string()))?;
    let h = pow_hash(&header.template(), header.nonce, &header.output_digest);
    if !hash_meets_target(&h, &share_target(block_target)) {
        return Err(ApiError::bad("pow hash above the share target"));
    }
    let id = header.id();
    {
        let mut m = s.miners.lock().unwrap_or_else(|p| p.into_inner());
        if m.seen_tip != tip.id {
            m.seen.clear();
            m.seen_tip = tip.id;
        }
        if m.seen.contains(&id) {
            return Err(ApiError(StatusCode::CONFLICT, "duplicate share".into()));
        }
    }
    let input = PowInput::of(s.chain.params().model, &header);
    let digest = tokio::task::spawn_blocking(move || ModelCache::new().output_digest(&input))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if digest != header.output_digest {
        return Err(ApiError::bad("output digest does not match the forward pass"));
    }
    let is_block = hash_meets_target(&h, &block_target);
    let mut accepted_block = false;
    if is_block {
        match s.chain.submit(vec![(header, body.clone())]).await? {
            Ok(a) if a.accepted == 1 => {
                accepted_block = true;
                let _ = s.publish.send((header, body)).await;
            }
            Ok(a) => tracing::info!(?a.error, "browser block not accepted"),
            Err(e) => return Err(ApiError::bad(format!("block rejected: {e}"))),
        }
    }
    let entry = {
        let mut m = s.miners.lock().unwrap_or_else(|p| p.into_inner());
        m.seen.insert(id);
        if !m.by_key.contains_key(&header.miner_key) && m.by_key.len() >= MAX_MINERS {
            if let Some(oldest) = m.by_key.iter().min_by_key(|(_, e)| e.last_share_ms).map(|(k, _)| *k) {
                m.by_key.remove(&oldest);
            }
        }
        let e = m.by_key.entry(header.miner_key).or_default();
        e.shares += 1;
        e.blocks += u64::from(accepted_block);
        e.last_share_ms = crate::time::now_ms();
        *e
    };
    Ok(Json(json!({ "accepted": true, "block": accepted_block, "shares": entry.shares, "blocks": entry.blocks })))
}

async fn miners(State(s): State<ApiState>) -> Json<Value> {
    let m = s.miners.lock().unwrap_or_else(|p| p.into_inner());
    let mut list: Vec<Value> = m
        .by_key
        .iter()
        .map(|(k, e)| json!({ "miner": hex::encode(k), "shares": e.shares, "blocks": e.blocks, "last_share_ms": e.last_share_ms }))
        .collect();
    list.sort_by(|a, b| b["shares"].as_u64().cmp(&a["shares"].as_u64()));
    let node = s.node_miner.as_ref().map(|n| {
        json!({
            "attempts": n.attempts.load(std::sync::atomic::Ordering::Relaxed),
            "blocks": n.blocks.load(std::sync::atomic::Ordering::Relaxed),
        })
    });
    Json(json!({ "miners": list, "node": node }))
}
