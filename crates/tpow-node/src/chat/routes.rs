//! `GET /v1/models` and `POST /v1/chat/completions`.
//!
//! Both answer modes are rendered from the backend's piece stream, so local and
//! upstream answers look alike and are signed alike. A streamed answer owns the
//! generation: when the client disconnects, hyper drops the body and with it the
//! generation, which cancels it in the engine.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::stream::BoxStream;
use futures::StreamExt;
use serde::Serialize;
use tpow_api as api;

use super::openai::{is_json_content_type, parse_request, ChatApiError, Usage, MAX_BODY_BYTES};
use super::signing::{Receipt, Signer};
use super::{ChatState, Piece};

/// Response headers of the receipt.
pub const H_NODE_KEY: &str = "x-tpow-node-key";
pub const H_SIGNATURE: &str = "x-tpow-signature";
pub const H_REQUEST_HASH: &str = "x-tpow-request-hash";
pub const H_RESPONSE_HASH: &str = "x-tpow-response-hash";

/// The chat routes, with their own body limit (413 above [`MAX_BODY_BYTES`]).
pub fn router(state: Arc<ChatState>) -> Router {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(completions))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn models(State(s): State<Arc<ChatState>>) -> Response {
    match s.backend.list_models().await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A fresh `chatcmpl-…` id.
fn completion_id(body: &[u8]) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = blake3::Hasher::new();
    h.update(body);
    h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    h.update(&nanos.to_le_bytes());
    format!("chatcmpl-{}", &h.finalize().to_hex()[..24])
}

fn set_header(res: &mut Response, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        res.headers_mut().insert(HeaderName::from_static(name), v);
    }
}

async fn completions(State(s): State<Arc<ChatState>>, request: Request) -> Response {
    // The media type first: a body not declared as JSON is refused unread.
    let content_type = request.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("(not text)"));
    if !content_type.is_some_and(is_json_content_type) {
        return ChatApiError::unsupported_media_type(content_type).into_response();
    }
    let body = match Bytes::from_request(request, &()).await {
        Ok(b) => b,
        Err(r) => return ChatApiError::body(r.status(), r.body_text()).into_response(),
    };
    let (request, raw) = match parse_request(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let (stream, include_usage) = (request.stream, request.include_usage);
    let received = Instant::now();
    let m = crate::metrics::get();
    let completion = match s.backend.start(request, raw).await {
        Ok(c) => c,
        Err(e) => {
            if e.status == StatusCode::TOO_MANY_REQUESTS {
                m.chat_rejected_busy.inc();
            }
            return e.into_response();
        }
    };
    m.chat_requests.inc();
    let pieces = metered(completion.pieces, received);
    let answer = Answer {
        id: completion_id(&body),
        created: unix_secs(),
        model: completion.model,
        signer: s.signer.clone(),
        body,
    };
    if stream {
        stream_answer(answer, pieces, include_usage)
    } else {
        whole_answer(answer, pieces).await
    }
}

/// Records time to first token, tokens generated and chat compute time as the
/// pieces pass by.
fn metered(
    pieces: BoxStream<'static, Result<Piece, ChatApiError>>,
    received: Instant,
) -> BoxStream<'static, Result<Piece, ChatApiError>> {
    let mut first = true;
    pieces
        .inspect(move |piece| {
            let m = crate::metrics::get();
            match piece {
                Ok(Piece::Text(_)) if first => {
                    first = false;
                    m.chat_ttft_seconds.observe(received.elapsed().as_secs_f64());
                }
                Ok(Piece::Finish { usage, .. }) => {
                    if let Some(u) = usage {
                        m.chat_tokens.inc_by(u64::from(u.completion_tokens));
                    }
                    m.add_compute(crate::metrics::Kind::Chat, received.elapsed());
                }
                _ => {}
            }
        })
        .boxed()
}

/// What every rendering of one answer shares.
struct Answer {
    id: String,
    created: u64,
    model: String,
    signer: Signer,
    /// The raw request body (the receipt signs its hash).
    body: Bytes,
}

async fn whole_answer(a: Answer, mut pieces: BoxStream<'static, Result<Piece, ChatApiError>>) -> Response {
    let mut content = String::new();
    let (reason, usage) = loop {
        match pieces.next().await {
            Some(Ok(Piece::Text(t))) => content.push_str(&t),
            Some(Ok(Piece::Finish { reason, usage })) => break (reason, usage),
            Some(Err(e)) => return e.into_response(),
            None => {
                return ChatApiError::server(StatusCode::INTERNAL_SERVER_ERROR, "the generation ended without a result")
                    .into_response()
            }
        }
    };
    let receipt = a.signer.sign(&a.body, &content);
    let mut answer = api::ChatCompletion::answer(&a.id, a.created, &a.model, &content, &reason, usage);
    answer.tpow = Some(receipt.clone());
    let mut res = Json(answer).into_response();
    set_header(&mut res, H_NODE_KEY, &receipt.node_key);
    set_header(&mut res, H_SIGNATURE, &receipt.signature);
    set_header(&mut res, H_REQUEST_HASH, &receipt.request_hash);
    set_header(&mut res, H_RESPONSE_HASH, &receipt.response_hash);
    res
}

/// State of a streamed answer.
struct Streaming {
    a: Answer,
    pieces: BoxStream<'static, Result<Piece, ChatApiError>>,
    include_usage: bool,
    content: String,
    started: bool,
    finished: bool,
}

impl Streaming {
    fn chunk(&self, delta: api::Delta, finish: Option<&str>) -> api::ChatChunk {
        api::ChatChunk::delta(&self.a.id, self.a.created, &self.a.model, delta, finish, self.include_usage)
    }

    /// The closing chunks: the finish reason, then usage if asked; the last one
    /// carries the receipt (headers went out before the content existed).
    fn closing(&self, reason: &str, usage: Option<Usage>) -> Vec<api::ChatChunk> {
        let receipt: Receipt = self.a.signer.sign(&self.a.body, &self.content);
        let mut out = vec![self.chunk(api::Delta::default(), Some(reason))];
        if self.include_usage {
            out.push(api::ChatChunk::usage(&self.a.id, self.a.created, &self.a.model, usage));
        }
        if let Some(last) = out.last_mut() {
            last.tpow = Some(receipt);
        }
        out
    }

    /// The next events to send; None once `[DONE]` went out.
    async fn step(&mut self) -> Option<Vec<Event>> {
        let done = || Event::default().data("[DONE]");
        if !self.started {
            self.started = true;
            let first = api::Delta { content: Some(String::new()), role: Some("assistant".into()) };
            return Some(vec![data(&self.chunk(first, None))]);
        }
        if self.finished {
            return None;
        }
        let events = match self.pieces.next().await {
            Some(Ok(Piece::Text(t))) => {
                self.content.push_str(&t);
                let text = api::Delta { content: Some(t), role: None };
                return Some(vec![data(&self.chunk(text, None))]);
            }
            Some(Ok(Piece::Finish { reason, usage })) => {
                let mut events: Vec<Event> = self.closing(&reason, usage).iter().map(data).collect();
                events.push(done());
                events
            }
            // An error after the 200: OpenAI's in-stream error object.
            Some(Err(e)) => vec![data(&e.body_json()), done()],
            None => vec![
                data(
                    &ChatApiError::server(StatusCode::INTERNAL_SERVER_ERROR, "the generation ended without a result")
                        .body_json(),
                ),
                done(),
            ],
        };
        self.finished = true;
        Some(events)
    }
}

/// One SSE `data:` event of a JSON object.
fn data(v: &impl Serialize) -> Event {
    Event::default().data(serde_json::to_string(v).unwrap_or_default())
}

fn stream_answer(a: Answer, pieces: BoxStream<'static, Result<Piece, ChatApiError>>, include_usage: bool) -> Response {
    let key = hex::encode(a.signer.public_key());
    let request_hash = blake3::hash(&a.body).to_hex().to_string();
    let state = Streaming { a, pieces, include_usage, content: String::new(), started: false, finished: false };
    let events = futures::stream::unfold(state, |mut st| async move { st.step().await.map(|ev| (ev, st)) })
        .flat_map(futures::stream::iter)
        .map(Ok::<_, Infallible>);
    let mut res = Sse::new(events).keep_alive(KeepAlive::default()).into_response();
    set_header(&mut res, H_NODE_KEY, &key);
    set_header(&mut res, H_REQUEST_HASH, &request_hash);
    res
}
