//! The upstream backend: forwards chat to an OpenAI-compatible server (vLLM,
//! llama.cpp server, ...) and relays its answer as pieces, so the node still
//! validates requests, renders OpenAI objects itself and signs what it relays.
//!
//! The request goes upstream as the client sent it (fields the node does not
//! read included); only `stream` and `stream_options` are set by the node.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::StatusCode;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::{json, Value};

use super::openai::{ChatApiError, ChatRequest, Usage};
use super::{BackendInfo, ChatBackend, Completion, Piece};

/// Longest SSE line accepted from the upstream.
const MAX_SSE_LINE: usize = 1 << 20;
/// Largest non-streaming answer accepted from the upstream.
const MAX_ANSWER_BYTES: usize = 8 << 20;

/// Forwards to `base` (`.../v1`).
pub struct UpstreamBackend {
    client: reqwest::Client,
    base: String,
    /// Model ids from the last successful `/v1/models` (announced to peers).
    models: Mutex<Vec<String>>,
}

/// `http://h:8000`, `http://h:8000/` and `http://h:8000/v1` all name `http://h:8000/v1`.
pub fn normalize_base(url: &str) -> Result<String, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("--upstream {url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("--upstream {url:?} must be http or https"));
    }
    let trimmed = url.trim_end_matches('/');
    Ok(if trimmed.ends_with("/v1") { trimmed.to_string() } else { format!("{trimmed}/v1") })
}

fn unreachable(e: reqwest::Error) -> ChatApiError {
    let mut err = ChatApiError::unavailable(format!("the upstream server cannot be reached: {e}"));
    err.code = Some("upstream_unavailable".into());
    err
}

fn bad_gateway(message: impl Into<String>) -> ChatApiError {
    ChatApiError::server(StatusCode::BAD_GATEWAY, message)
}

/// The upstream's error answer: relayed as is when it is an OpenAI error body.
async fn relay_error(res: reqwest::Response) -> ChatApiError {
    let status = StatusCode::from_u16(res.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let text = res.text().await.unwrap_or_default();
    match serde_json::from_str::<Value>(&text) {
        Ok(v) if v.get("error").is_some() => {
            let mut e = ChatApiError::server(status, "upstream error");
            e.relayed = Some(Box::new(v));
            e
        }
        _ => bad_gateway(format!("the upstream answered {status}: {}", text.chars().take(300).collect::<String>())),
    }
}

fn usage_of(v: &Value) -> Option<Usage> {
    let u = v.get("usage")?;
    Some(Usage::new(
        u.get("prompt_tokens")?.as_u64()?.try_into().ok()?,
        u.get("completion_tokens")?.as_u64()?.try_into().ok()?,
    ))
}

impl UpstreamBackend {
    /// A backend for `url`; asks it for its models (a failure there is only logged:
    /// the upstream may come up after the node).
    pub async fn new(url: &str) -> Result<UpstreamBackend, String> {
        let base = normalize_base(url)?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let backend = UpstreamBackend { client, base, models: Mutex::new(Vec::new()) };
        if let Err(e) = backend.fetch_models().await {
            tracing::warn!("upstream {}: cannot list models yet: {}", backend.base, e.message);
        }
        Ok(backend)
    }

    async fn fetch_models(&self) -> Result<Value, ChatApiError> {
        let res = self
            .client
            .get(format!("{}/models", self.base))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(unreachable)?;
        if !res.status().is_success() {
            return Err(relay_error(res).await);
        }
        let v = read_json(res).await?;
        let ids: Vec<String> = v["data"]
            .as_array()
            .map(|a| a.iter().filter_map(|m| m["id"].as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        *self.models.lock().unwrap_or_else(|p| p.into_inner()) = ids;
        Ok(v)
    }
}

/// Reads a bounded JSON body.
async fn read_json(mut res: reqwest::Response) -> Result<Value, ChatApiError> {
    let mut buf = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(|e| bad_gateway(format!("reading the upstream: {e}")))? {
        buf.extend_from_slice(&chunk);
        if buf.len() > MAX_ANSWER_BYTES {
            return Err(bad_gateway("the upstream answer is too large"));
        }
    }
    serde_json::from_slice(&buf).map_err(|e| bad_gateway(format!("the upstream answer is not JSON: {e}")))
}

#[async_trait::async_trait]
impl ChatBackend for UpstreamBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: "upstream",
            models: self.models.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            demand: None,
            engine: None,
            sampling: None,
            unavailable: None,
        }
    }

    async fn list_models(&self) -> Result<Value, ChatApiError> {
        self.fetch_models().await
    }

    async fn start(&self, request: ChatRequest, mut raw: Value) -> Result<Completion, ChatApiError> {
        raw["stream"] = Value::Bool(request.stream);
        if request.stream {
            // Always ask for usage: the node reports it when the client wants it.
            raw["stream_options"] = json!({ "include_usage": true });
        }
        let res = self
            .client
            .post(format!("{}/chat/completions", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(raw.to_string())
            .send()
            .await
            .map_err(unreachable)?;
        if !res.status().is_success() {
            return Err(relay_error(res).await);
        }
        let model = request.model;
        if !request.stream {
            let v = read_json(res).await?;
            let choice = &v["choices"][0];
            let content = choice["message"]["content"].as_str().unwrap_or_default().to_string();
            let reason = choice["finish_reason"].as_str().unwrap_or("stop").to_string();
            let pieces = vec![Ok(Piece::Text(content)), Ok(Piece::Finish { reason, usage: usage_of(&v) })];
            return Ok(Completion { model, pieces: futures::stream::iter(pieces).boxed() });
        }
        let state = Relay {
            body: res.bytes_stream().boxed(),
            sse: SseParser::default(),
            queue: VecDeque::new(),
            finish: None,
            usage: None,
            done: false,
        };
        let pieces = futures::stream::unfold(state, |mut st| async move {
            loop {
                if let Some(item) = st.queue.pop_front() {
                    return Some((item, st));
                }
                if st.done {
                    return None;
                }
                match st.body.next().await {
                    Some(Ok(bytes)) => match st.sse.push(&bytes) {
                        Ok(events) => {
                            for data in events {
                                st.on_data(&data);
                                if st.done {
                                    break;
                                }
                            }
                        }
                        Err(e) => st.fail(bad_gateway(e)),
                    },
                    Some(Err(e)) => st.fail(bad_gateway(format!("the upstream stream broke: {e}"))),
                    // End of body without [DONE]: finish with what came.
                    None => st.finish(),
                }
            }
        })
        .boxed();
        Ok(Completion { model, pieces })
    }
}

/// State of a relayed stream.
struct Relay {
    body: BoxStream<'static, reqwest::Result<axum::body::Bytes>>,
    sse: SseParser,
    queue: VecDeque<Result<Piece, ChatApiError>>,
    finish: Option<String>,
    usage: Option<Usage>,
    done: bool,
}

impl Relay {
    fn fail(&mut self, e: ChatApiError) {
        self.queue.push_back(Err(e));
        self.done = true;
    }

    fn finish(&mut self) {
        let reason = self.finish.take().unwrap_or_else(|| "stop".into());
        self.queue.push_back(Ok(Piece::Finish { reason, usage: self.usage }));
        self.done = true;
    }

    /// One SSE `data` payload of the upstream.
    fn on_data(&mut self, data: &str) {
        if data.trim() == "[DONE]" {
            return self.finish();
        }
        let v: Value = match serde_json::from_str(data) {
            Ok(v) => v,
            Err(e) => return self.fail(bad_gateway(format!("the upstream sent a chunk that is not JSON: {e}"))),
        };
        if v.get("error").is_some() {
            let mut e = bad_gateway("upstream error");
            e.relayed = Some(Box::new(v));
            return self.fail(e);
        }
        let choice = &v["choices"][0];
        if let Some(text) = choice["delta"]["content"].as_str().filter(|t| !t.is_empty()) {
            self.queue.push_back(Ok(Piece::Text(text.to_string())));
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            self.finish = Some(reason.to_string());
        }
        if let Some(u) = usage_of(&v) {
            self.usage = Some(u);
        }
    }
}

/// A minimal server-sent-events reader: returns the `data` of each complete event.
#[derive(Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: Option<String>,
}

impl SseParser {
    /// Feeds bytes; returns the payloads of the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                if self.line.len() > MAX_SSE_LINE {
                    return Err("the upstream sent an over-long event line".into());
                }
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line =
                String::from_utf8(line).map_err(|_| "the upstream sent an event that is not UTF-8".to_string())?;
            if line.is_empty() {
                if let Some(d) = self.data.take() {
                    out.push(d);
                }
            } else if let Some(rest) = line.strip_prefix("data:") {
                let rest = rest.strip_prefix(' ').unwrap_or(rest);
                match &mut self.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(rest);
                    }
                    None => self.data = Some(rest.to_string()),
                }
            }
            // Comments (`:`), `event:`, `id:` and `retry:` lines carry nothing we use.
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_normalised() {
        assert_eq!(normalize_base("http://h:8000").as_deref(), Ok("http://h:8000/v1"));
        assert_eq!(normalize_base("http://h:8000/").as_deref(), Ok("http://h:8000/v1"));
        assert_eq!(normalize_base("https://h/v1/").as_deref(), Ok("https://h/v1"));
        assert!(normalize_base("ftp://h").is_err());
        assert!(normalize_base("not a url").is_err());
    }

    #[test]
    fn sse_events_survive_any_split() {
        let stream = b": keep-alive\n\ndata: {\"a\":1}\r\n\r\nevent: x\ndata: line1\ndata: line2\n\ndata: [DONE]\n\n";
        let want = vec!["{\"a\":1}".to_string(), "line1\nline2".into(), "[DONE]".into()];
        for split in 0..stream.len() {
            let mut p = SseParser::default();
            let mut got = p.push(&stream[..split]).expect("valid");
            got.extend(p.push(&stream[split..]).expect("valid"));
            assert_eq!(got, want, "split at {split}");
        }
        let mut p = SseParser::default();
        assert!(p.push(&vec![b'x'; MAX_SSE_LINE + 1]).is_err());
    }

    #[test]
    fn relayed_chunks_become_pieces() {
        let mut r = Relay {
            body: futures::stream::empty().boxed(),
            sse: SseParser::default(),
            queue: VecDeque::new(),
            finish: None,
            usage: None,
            done: false,
        };
        r.on_data(r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#);
        r.on_data(r#"{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#);
        r.on_data(r#"{"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}"#);
        r.on_data(r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#);
        r.on_data("[DONE]");
        let pieces: Vec<Piece> = r.queue.drain(..).map(|p| p.expect("ok")).collect();
        assert_eq!(
            pieces,
            vec![Piece::Text("Hi".into()), Piece::Finish { reason: "length".into(), usage: Some(Usage::new(3, 1)) }]
        );
        assert!(r.done);
        let mut r2 = Relay { done: false, ..r };
        r2.on_data(r#"{"error":{"message":"boom"}}"#);
        assert!(r2.done);
        let e = r2.queue.pop_front().expect("item").expect_err("error");
        assert_eq!(e.body_json()["error"]["message"], "boom");
    }
}
