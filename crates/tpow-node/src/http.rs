//! The HTTP/WebSocket API (axum) for light clients, dashboards and browser
//! miners. Documented in docs/API.md and docs/openapi.yaml.
//!
//! Handlers only parse, ask the chain service and format: every rule lives in
//! tpow-core or the service. Every input error is a 4xx with `{"error": "..."}`;
//! every list is capped.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::sync::{mpsc, watch};
use tower_http::cors::CorsLayer;
use tpow_api as api;
use tpow_core::body::Body;
use tpow_core::header::HEADER_LEN;
use tpow_core::Header;

use crate::chain_state::{QueryError, TipInfo};
use crate::limits::{ip_key, Buckets, ConnectionCounts, Rate};
use crate::mining::MinerStats;
use crate::p2p::PeerInfo;
use crate::service::ChainHandle;
use crate::shares::{ShareDesk, ShareError};

/// Most headers one `/api/headers` call returns.
pub const MAX_HEADERS: u64 = 2_000;
/// Most newest headers in a FlyClient answer.
pub const MAX_FLY_LAST: u64 = 100;
/// Most uniform draws of a legacy (unseeded, deprecated) FlyClient request.
pub const MAX_FLY_SAMPLES: usize = 200;
/// Most draws of a seeded FlyClient request (the light client's cap too).
pub const MAX_FLY_DRAWS: u64 = tpow_core::flyclient::MAX_DRAWS;
/// Largest security level a seeded FlyClient request may ask for.
pub const MAX_FLY_SECURITY_BITS: u32 = tpow_core::flyclient::MAX_SECURITY_BITS;
/// Open HTTP connections allowed from one IP address (WebSockets included).
pub const MAX_CONNECTIONS_PER_IP: usize = 64;
/// Open HTTP connections allowed in all.
pub const MAX_CONNECTIONS: usize = 2_048;
/// Open WebSockets allowed from one IP address.
pub const MAX_WEBSOCKETS_PER_IP: usize = 8;
/// Open WebSockets allowed in all.
pub const MAX_WEBSOCKETS: usize = 512;
/// Time a client has to send a request's headers (slow-loris defence).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests per second one IP address may make (burst 200); beyond: 429.
pub const REQUESTS_PER_IP: Rate = Rate { per_sec: 100.0, burst: 200.0 };

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
    /// Browser-miner shares: policy and accounts.
    pub shares: Arc<ShareDesk>,
    /// Open WebSockets per IP.
    pub websockets: Arc<Mutex<ConnectionCounts>>,
    /// Who this node is (for `/api/info`).
    pub identity: NodeIdentity,
    /// The chat side (OpenAI-compatible `/v1/...`).
    #[cfg(feature = "chat")]
    pub chat: Arc<crate::chat::ChatState>,
}

impl ApiState {
    /// Fresh per-node limits for the share desk and WebSockets.
    pub fn limits(spec: tpow_core::ModelSpec) -> (Arc<ShareDesk>, Arc<Mutex<ConnectionCounts>>) {
        (
            Arc::new(ShareDesk::new(spec)),
            Arc::new(Mutex::new(ConnectionCounts::new(MAX_WEBSOCKETS_PER_IP, MAX_WEBSOCKETS))),
        )
    }
}

/// The node's public identity, as `/api/info` reports it.
#[derive(Clone, Debug)]
pub struct NodeIdentity {
    /// libp2p peer id.
    pub peer_id: String,
    /// Ed25519 public key (hex): signs chat receipts; the peer id derives from it.
    pub node_key: String,
}

/// An API error: a status and a message, rendered as [`api::ApiError`] (`{"error": message}`).
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
    fn too_many(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::TOO_MANY_REQUESTS, msg.into())
    }
}

impl From<ShareError> for ApiError {
    fn from(e: ShareError) -> Self {
        let status = match e {
            ShareError::Stale | ShareError::Duplicate => StatusCode::CONFLICT,
            ShareError::RateLimited(_) | ShareError::Busy => StatusCode::TOO_MANY_REQUESTS,
            ShareError::Invalid(_) => StatusCode::BAD_REQUEST,
        };
        ApiError(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(api::ApiError::new(self.1))).into_response()
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
        .route("/api/chain", get(chain))
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
    api.method_not_allowed_fallback(|| async {
        ApiError(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this endpoint".into())
    })
    .layer(CorsLayer::permissive())
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

/// Serves until the process ends: HTTP/1.1 with a deadline for request headers,
/// a cap on connections per IP and in all, and a request budget per IP.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    web_dir: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;

    let requests = Arc::new(Mutex::new(Buckets::new(REQUESTS_PER_IP, 16_384)));
    let app = router(state, web_dir.as_deref()).layer(axum::middleware::from_fn(
        move |ConnectInfo(addr): ConnectInfo<SocketAddr>, req: axum::extract::Request, next: axum::middleware::Next| {
            let requests = requests.clone();
            async move {
                let ok = requests.lock().unwrap_or_else(|p| p.into_inner()).try_take(
                    &ip_key(addr.ip()),
                    1.0,
                    std::time::Instant::now(),
                );
                if !ok {
                    return ApiError::too_many("too many requests from this address").into_response();
                }
                next.run(req).await
            }
        },
    ));
    let connections = Arc::new(Mutex::new(ConnectionCounts::new(MAX_CONNECTIONS_PER_IP, MAX_CONNECTIONS)));
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!("accepting an HTTP connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !connections.lock().unwrap_or_else(|p| p.into_inner()).try_open(addr.ip()) {
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let svc = app
            .clone()
            .layer(axum::Extension(ConnectInfo(addr)))
            .map_request(|req: hyper::Request<hyper::body::Incoming>| req.map(axum::body::Body::new));
        let connections = connections.clone();
        tokio::spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).keep_alive(true);
            let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc)).with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(%addr, "HTTP connection: {e}");
            }
            connections.lock().unwrap_or_else(|p| p.into_inner()).close(addr.ip());
        });
    }
}

fn tip_message(t: &TipInfo) -> api::Tip {
    api::Tip::new(t.height, &t.id, &t.total_work, &t.target, t.timestamp_ms)
}

async fn health(State(s): State<ApiState>) -> Json<api::Health> {
    let t = s.chain.tip().borrow().clone();
    Json(api::Health {
        chain: s.chain.params().name().to_string(),
        height: t.height,
        peers: s.peers.borrow().len() as u64,
        status: "ok".into(),
    })
}

/// `GET /api/chain`: which chain this node follows, so a client can refuse a node
/// of another chain (or another devnet) before trusting anything it serves.
async fn chain(State(s): State<ApiState>) -> Json<api::ChainInfo> {
    Json(api::ChainInfo::of(s.chain.params()))
}

/// Who this node is and what it serves: light clients list nodes by model with it.
async fn info(State(s): State<ApiState>) -> Json<api::Info> {
    #[cfg(feature = "chat")]
    let (models, chat) = (s.chat.backend.info().models, Some(s.chat.info()));
    #[cfg(not(feature = "chat"))]
    let (models, chat) = (Vec::new(), None);
    Json(api::Info {
        chain: s.chain.params().name().to_string(),
        chat,
        models,
        node_key: s.identity.node_key.clone(),
        peer_id: s.identity.peer_id.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    })
}

async fn tip(State(s): State<ApiState>) -> Json<api::Tip> {
    let t = s.chain.tip().borrow().clone();
    Json(tip_message(&t))
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
            let headers = headers.iter().map(api::HeaderJson::from).collect();
            Ok(Json(api::Headers { headers }).into_response())
        }
        Some(other) => Err(ApiError::bad(format!("`format` must be binary or json, got {other:?}"))),
    }
}

async fn mmr_proof(State(s): State<ApiState>, q: Params) -> ApiResult<Json<api::MmrProofAnswer>> {
    let Query(q) = q?;
    let height = require_u64(&q, "height")?;
    let tip = match parse_u64(&q, "tip")? {
        Some(t) => t,
        None => s.chain.tip().borrow().height,
    };
    let (leaf, root, proof) = s.chain.mmr_proof(height, tip).await??;
    let mut answer = api::MmrProofAnswer::new(&leaf, tip, &root, &proof);
    answer.height = height;
    Ok(Json(answer))
}

async fn flyclient(State(s): State<ApiState>, q: Params) -> ApiResult<Json<api::FlyAnswer>> {
    let Query(q) = q?;
    let tip = match parse_u64(&q, "tip")? {
        Some(t) => t,
        None => s.chain.tip().borrow().height,
    };
    let last = parse_u64(&q, "last")?.unwrap_or(10);
    if last == 0 || last > MAX_FLY_LAST {
        return Err(ApiError::bad(format!("`last` must be in 1..={MAX_FLY_LAST}")));
    }
    // Seeded (the client's randomness, PROTOCOL.md §16) unless no seed is given:
    // then the deprecated tip-seeded sample of `samples` uniform draws.
    let request = match q.get("seed") {
        Some(hex_seed) => {
            let mut seed = [0u8; 32];
            hex::decode_to_slice(hex_seed, &mut seed).map_err(|_| ApiError::bad("`seed` must be 64 hex digits"))?;
            let security = parse_u64(&q, "security")?.unwrap_or(u64::from(tpow_core::flyclient::DEFAULT_SECURITY_BITS));
            if security == 0 || security > u64::from(MAX_FLY_SECURITY_BITS) {
                return Err(ApiError::bad(format!("`security` must be in 1..={MAX_FLY_SECURITY_BITS}")));
            }
            crate::service::FlyRequest::Seeded { seed, security_bits: security as u32 }
        }
        None => {
            let samples = parse_u64(&q, "samples")?.unwrap_or(20);
            if samples > MAX_FLY_SAMPLES as u64 {
                return Err(ApiError::bad(format!("`samples` must be at most {MAX_FLY_SAMPLES}")));
            }
            crate::service::FlyRequest::Legacy { samples: samples as usize }
        }
    };
    let d = s.chain.flyclient(tip, last, request).await??;
    if d.draws > MAX_FLY_DRAWS {
        return Err(ApiError::bad(format!(
            "this chain needs {} draws at that security level, more than {MAX_FLY_DRAWS}",
            d.draws
        )));
    }
    let sampled = d.sampled.iter().map(|(h, w, p)| api::FlySample::new(h, w, p));
    let mut answer = api::FlyAnswer::new((&d.tip.0, &d.tip.1), d.draws, &d.last, sampled);
    answer.tip = tip;
    Ok(Json(answer))
}

async fn peers(State(s): State<ApiState>) -> Json<api::Peers> {
    Json(api::Peers { peers: s.peers.borrow().clone() })
}

async fn ws(
    State(s): State<ApiState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(r) => return ApiError(r.status(), r.body_text()).into_response(),
    };
    if !s.websockets.lock().unwrap_or_else(|p| p.into_inner()).try_open(addr.ip()) {
        return ApiError::too_many("too many WebSockets from this address (or in all)").into_response();
    }
    let rx = s.chain.tip();
    let counts = s.websockets.clone();
    upgrade.max_message_size(1024).on_upgrade(move |socket| async move {
        push_tips(socket, rx).await;
        counts.lock().unwrap_or_else(|p| p.into_inner()).close(addr.ip());
    })
}

/// Sends the current tip, then one message per new tip, until the client goes
/// away. What the client sends is read and dropped (pings are answered by axum).
async fn push_tips(mut socket: WebSocket, mut rx: watch::Receiver<TipInfo>) {
    let mut send = true;
    loop {
        if send {
            let tip = tip_message(&rx.borrow_and_update());
            let text = serde_json::to_string(&tip).unwrap_or_default();
            if socket.send(Message::Text(text.into())).await.is_err() {
                return;
            }
        }
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() { return }
                send = true;
            }
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => send = false,
            },
        }
    }
}

fn parse_key(s: &str) -> ApiResult<[u8; 32]> {
    let bytes = hex::decode(s).map_err(|e| ApiError::bad(format!("miner key is not hex: {e}")))?;
    bytes.try_into().map_err(|b: Vec<u8>| ApiError::bad(format!("miner key must be 32 bytes, got {}", b.len())))
}

async fn get_work(State(s): State<ApiState>, q: Params) -> ApiResult<Json<api::Work>> {
    let Query(q) = q?;
    let key = parse_key(q.get("miner").ok_or_else(|| ApiError::bad("missing query parameter `miner`"))?)?;
    let (header, _body) = s.chain.template(key).await?;
    let target = header.bits.to_target().map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(api::Work {
        header: hex::encode(header.encode()),
        height: header.height,
        model: s.chain.params().model.into(),
        prev_id: hex::encode(header.prev_id),
        share_target: hex::encode(s.shares.share_target(target).to_be_bytes::<32>()),
        target: hex::encode(target.to_be_bytes::<32>()),
        template: hex::encode(header.template()),
    }))
}

async fn post_work(
    State(s): State<ApiState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    body: Result<Json<api::ShareSubmission>, JsonRejection>,
) -> ApiResult<Json<api::ShareAnswer>> {
    let result = submit_share(&s, addr.ip(), body).await;
    let m = crate::metrics::get();
    match &result {
        Ok(_) => m.shares_accepted.inc(),
        Err(_) => m.shares_rejected.inc(),
    };
    result
}

/// Parses a share, has the share desk check it, submits it if it is a block.
async fn submit_share(
    s: &ApiState,
    from: IpAddr,
    body: Result<Json<api::ShareSubmission>, JsonRejection>,
) -> ApiResult<Json<api::ShareAnswer>> {
    let Json(sol) = body?;
    let bytes = hex::decode(&sol.header).map_err(|e| ApiError::bad(format!("header is not hex: {e}")))?;
    let header = Header::decode(&bytes).map_err(|e| ApiError::bad(format!("header: {e}")))?;
    let tip = s.chain.tip().borrow().clone();
    let (expected, body) = s.chain.template(header.miner_key).await?;
    let accepted = s.shares.check(from, header, (tip.id, tip.height), (&expected, &body)).await?;
    let mut accepted_block = false;
    if accepted.block {
        match s.chain.submit(vec![(header, body.clone())]).await? {
            Ok(a) if a.accepted == 1 => {
                accepted_block = true;
                let _ = s.publish.send((header, body)).await;
            }
            Ok(a) => tracing::info!(?a.error, "browser block not accepted"),
            Err(e) => return Err(ApiError::bad(format!("block rejected: {e}"))),
        }
    }
    let (shares, blocks) = s.shares.credit(header.miner_key, accepted_block);
    Ok(Json(api::ShareAnswer { accepted: true, block: accepted_block, blocks, shares }))
}

async fn miners(State(s): State<ApiState>) -> Json<api::Miners> {
    let miners = s.shares.miners();
    let node = s.node_miner.as_ref().map(|n| api::NodeMinerStats {
        attempts: n.attempts.load(std::sync::atomic::Ordering::Relaxed),
        blocks: n.blocks.load(std::sync::atomic::Ordering::Relaxed),
    });
    Json(api::Miners { miners, node })
}
