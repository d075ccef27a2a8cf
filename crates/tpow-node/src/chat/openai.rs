//! The OpenAI chat-completions wire format: request parsing and validation,
//! response and chunk objects, and OpenAI-style errors. The shapes are
//! tpow-api's ([`api::ChatRequest`], [`api::ChatCompletion`], [`api::ChatChunk`],
//! [`api::OpenAiError`]); the rules are here.
//!
//! Pure functions: no I/O, so every rule here is unit-tested. Unknown request
//! fields are ignored (OpenAI clients send many optional ones); fields we read
//! are strictly checked.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;
use tpow_api as api;
use tpow_api::{MessageContent, Stop};
use tpow_chat::{Message, Role};

pub use tpow_api::Usage;

/// Largest request body (a larger one is a 413).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Most messages in one request.
pub const MAX_MESSAGES: usize = 256;
/// Largest content of one message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;
/// Most stop strings (as OpenAI).
pub const MAX_STOP: usize = 4;
/// Longest stop string, in bytes.
pub const MAX_STOP_BYTES: usize = 256;
/// Seconds a client is told to wait after a 429.
pub const RETRY_AFTER_SECS: u32 = 1;

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone)]
pub struct ChatApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<String>,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u32>,
    /// An upstream's own error body, relayed as is (boxed: errors stay small).
    pub relayed: Option<Box<Value>>,
}

impl ChatApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ChatApiError {
            status,
            kind,
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
            relayed: None,
        }
    }

    /// A 400 `invalid_request_error`.
    pub fn invalid(message: impl Into<String>, param: Option<&str>, code: Option<&str>) -> Self {
        let mut e = ChatApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message);
        e.param = param.map(str::to_string);
        e.code = code.map(str::to_string);
        e
    }

    /// 429: the generation queue is full; retry shortly.
    pub fn queue_full() -> Self {
        let mut e = ChatApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "the node's generation queue is full; retry shortly",
        );
        e.code = Some("queue_full".into());
        e.retry_after = Some(RETRY_AFTER_SECS);
        e
    }

    /// 429: the node is busy with other requests (tokenizer slots, KV-cache
    /// budget); retry shortly.
    pub fn busy(message: impl Into<String>) -> Self {
        let mut e = ChatApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message);
        e.code = Some("server_busy".into());
        e.retry_after = Some(RETRY_AFTER_SECS);
        e
    }

    /// 415: the body is not declared as JSON. Only `application/json` is read:
    /// a web page can send `text/plain` (or a form) to any origin without a CORS
    /// preflight, and so could make visitors' browsers start generations here.
    pub fn unsupported_media_type(got: Option<&str>) -> Self {
        let message = match got {
            Some(t) => format!("the body must be JSON sent as Content-Type: application/json, not {t:?}"),
            None => "the body must be JSON sent as Content-Type: application/json".to_string(),
        };
        let mut e = ChatApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request_error", message);
        e.code = Some("unsupported_media_type".into());
        e
    }

    /// 503: no engine can serve the request, with the reason.
    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut e = ChatApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message);
        e.code = Some("engine_unavailable".into());
        e
    }

    /// A 5xx of our own (the engine or the upstream failed mid-way).
    pub fn server(status: StatusCode, message: impl Into<String>) -> Self {
        ChatApiError::new(status, "server_error", message)
    }

    /// The request body could not be read (too large: 413).
    pub fn body(status: StatusCode, message: impl Into<String>) -> Self {
        let mut e = ChatApiError::new(status, "invalid_request_error", message);
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            e.code = Some("request_too_large".into());
        }
        e
    }

    /// The `{"error": {...}}` body ([`api::OpenAiError`], or the upstream's own).
    pub fn body_json(&self) -> Value {
        if let Some(v) = &self.relayed {
            return (**v).clone();
        }
        let body = api::OpenAiError {
            error: api::OpenAiErrorBody {
                code: self.code.clone(),
                message: self.message.clone(),
                param: self.param.clone(),
                kind: self.kind.to_string(),
            },
        };
        serde_json::to_value(body).unwrap_or(Value::Null)
    }
}

impl IntoResponse for ChatApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, Json(self.body_json())).into_response();
        if let Some(secs) = self.retry_after {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

/// Maps an engine refusal to its HTTP error.
pub fn engine_error(e: tpow_chat::ChatError) -> ChatApiError {
    use tpow_chat::ChatError as E;
    let msg = e.to_string();
    match e {
        E::EmptyMessages => ChatApiError::invalid(msg, Some("messages"), None),
        E::PromptTooLong { .. } | E::PromptOverBudget { .. } => {
            ChatApiError::invalid(msg, Some("messages"), Some("context_length_exceeded"))
        }
        E::MaxTokensOverCap { .. } => ChatApiError::invalid(msg, Some("max_tokens"), None),
        E::InvalidParam(_) => ChatApiError::invalid(msg, None, None),
        E::QueueFull => ChatApiError::queue_full(),
        E::Busy | E::KvCacheFull { .. } => ChatApiError::busy(msg),
        E::Stopped | E::Load { .. } => ChatApiError::unavailable(msg),
    }
}

/// Whether a `Content-Type` value names JSON: `application/json`, any case,
/// parameters (`; charset=utf-8`) allowed.
pub fn is_json_content_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// A validated chat-completion request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    /// None: as many as the context and the node's cap allow.
    pub max_tokens: Option<u32>,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
}

fn role_of(name: &str) -> Option<Role> {
    match name {
        "system" | "developer" => Some(Role::System),
        "user" => Some(Role::User),
        "assistant" => Some(Role::Assistant),
        _ => None,
    }
}

/// Parses and checks a request body. Returns the request and the body as JSON
/// (the upstream mode forwards the latter, so fields we ignore still reach it).
pub fn parse_request(body: &[u8]) -> Result<(ChatRequest, Value), ChatApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ChatApiError::invalid(format!("the body is not valid JSON: {e}"), None, Some("invalid_json")))?;
    if !value.is_object() {
        return Err(ChatApiError::invalid("the body must be a JSON object", None, Some("invalid_json")));
    }
    let raw: api::ChatRequest = serde_path_to_error::deserialize(&value).map_err(|e| {
        let path = e.path().to_string();
        ChatApiError::invalid(format!("{path}: {}", e.inner()), Some(&path), None)
    })?;
    let model = match raw.model {
        Some(m) if !m.is_empty() => m,
        _ => return Err(ChatApiError::invalid("`model` is required", Some("model"), None)),
    };
    let raw_messages = raw.messages.unwrap_or_default();
    if raw_messages.is_empty() {
        return Err(ChatApiError::invalid("`messages` must not be empty", Some("messages"), None));
    }
    if raw_messages.len() > MAX_MESSAGES {
        return Err(ChatApiError::invalid(
            format!("at most {MAX_MESSAGES} messages, got {}", raw_messages.len()),
            Some("messages"),
            None,
        ));
    }
    let mut messages = Vec::with_capacity(raw_messages.len());
    for (i, m) in raw_messages.into_iter().enumerate() {
        let role = role_of(&m.role).ok_or_else(|| {
            ChatApiError::invalid(
                format!("messages[{i}].role {:?} is not one of system, developer, user, assistant", m.role),
                Some(&format!("messages[{i}].role")),
                None,
            )
        })?;
        let content = match m.content {
            None => String::new(),
            Some(MessageContent::Text(t)) => t,
            Some(MessageContent::Parts(parts)) => {
                let mut text = String::new();
                for p in parts {
                    match (p.kind.as_str(), p.text) {
                        ("text", Some(t)) => text.push_str(&t),
                        _ => {
                            return Err(ChatApiError::invalid(
                                format!("messages[{i}].content: only text parts are supported, got {:?}", p.kind),
                                Some(&format!("messages[{i}].content")),
                                None,
                            ))
                        }
                    }
                }
                text
            }
        };
        if content.len() > MAX_MESSAGE_BYTES {
            return Err(ChatApiError::invalid(
                format!("messages[{i}].content is {} bytes; the limit is {MAX_MESSAGE_BYTES}", content.len()),
                Some(&format!("messages[{i}].content")),
                None,
            ));
        }
        messages.push(Message { role, content });
    }
    let max_tokens = raw.max_completion_tokens.or(raw.max_tokens);
    if max_tokens == Some(0) {
        return Err(ChatApiError::invalid("`max_tokens` must be at least 1", Some("max_tokens"), None));
    }
    let temperature = raw.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ChatApiError::invalid(
            format!("`temperature` {temperature} must be between 0 and 2"),
            Some("temperature"),
            None,
        ));
    }
    let top_p = raw.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ChatApiError::invalid(format!("`top_p` {top_p} must be in (0, 1]"), Some("top_p"), None));
    }
    if raw.n.is_some_and(|n| n != 1) {
        return Err(ChatApiError::invalid("only `n` = 1 is supported", Some("n"), None));
    }
    let stop = match raw.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    if stop.len() > MAX_STOP {
        return Err(ChatApiError::invalid(format!("at most {MAX_STOP} stop strings"), Some("stop"), None));
    }
    if stop.iter().any(|s| s.is_empty() || s.len() > MAX_STOP_BYTES) {
        return Err(ChatApiError::invalid(
            format!("stop strings must be 1 to {MAX_STOP_BYTES} bytes"),
            Some("stop"),
            None,
        ));
    }
    let stream = raw.stream.unwrap_or(false);
    let include_usage = raw.stream_options.and_then(|o| o.include_usage).unwrap_or(false);
    let request = ChatRequest {
        model,
        messages,
        max_tokens,
        temperature: temperature as f32,
        top_p: top_p as f32,
        // OpenAI seeds are signed; the sampler takes the same 64 bits.
        seed: raw.seed.map(|s| s as u64),
        stop,
        stream,
        include_usage,
    };
    Ok((request, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<ChatRequest, ChatApiError> {
        parse_request(body.as_bytes()).map(|(r, _)| r)
    }

    fn err(body: &str) -> ChatApiError {
        match parse(body) {
            Ok(r) => panic!("accepted {body}: {r:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_full_request_parses() {
        let r = parse(
            r#"{"model":"m","messages":[{"role":"system","content":"Be brief."},
                {"role":"user","content":[{"type":"text","text":"Hi "},{"type":"text","text":"there"}]},
                {"role":"assistant","content":null}],
                "max_tokens":7,"temperature":0.5,"top_p":0.9,"seed":-1,"stop":"\n",
                "stream":true,"stream_options":{"include_usage":true},"user":"ignored"}"#,
        )
        .expect("valid");
        assert_eq!(r.model, "m");
        assert_eq!(r.messages.len(), 3);
        assert_eq!(r.messages[1], Message { role: Role::User, content: "Hi there".into() });
        assert_eq!(r.messages[2].content, "");
        assert_eq!((r.max_tokens, r.temperature, r.top_p), (Some(7), 0.5, 0.9));
        assert_eq!(r.seed, Some(u64::MAX));
        assert_eq!(r.stop, vec!["\n".to_string()]);
        assert!(r.stream && r.include_usage);
    }

    #[test]
    fn defaults_follow_openai() {
        let r =
            parse(r#"{"model":"m","messages":[{"role":"developer","content":"x"}],"stop":["a","b"]}"#).expect("valid");
        assert_eq!(r.messages[0].role, Role::System);
        assert_eq!((r.max_tokens, r.temperature, r.top_p, r.seed), (None, 1.0, 1.0, None));
        assert_eq!(r.stop.len(), 2);
        assert!(!r.stream && !r.include_usage);
        let r = parse(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_completion_tokens":3}"#)
            .expect("valid");
        assert_eq!(r.max_tokens, Some(3));
    }

    #[test]
    fn bad_requests_are_400_with_the_param() {
        let cases: &[(&str, Option<&str>)] = &[
            ("{not json", None),
            ("[1,2]", None),
            (r#"{"messages":[{"role":"user","content":"x"}]}"#, Some("model")),
            (r#"{"model":"m","messages":[]}"#, Some("messages")),
            (r#"{"model":"m"}"#, Some("messages")),
            (r#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#, Some("messages[0].role")),
            (
                r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#,
                Some("messages[0].content"),
            ),
            (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":2.5}"#, Some("temperature")),
            (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":-0.1}"#, Some("temperature")),
            (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"top_p":0}"#, Some("top_p")),
            (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"top_p":1.5}"#, Some("top_p")),
            (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0}"#, Some("max_tokens")),
            (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":-4}"#, Some("max_tokens")),
            (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":"9"}"#, Some("max_tokens")),
            (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":2}"#, Some("n")),
            (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stop":["a","b","c","d","e"]}"#, Some("stop")),
            (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stop":""}"#, Some("stop")),
            (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#, Some("stream")),
        ];
        for (body, param) in cases {
            let e = err(body);
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(e.kind, "invalid_request_error", "{body}");
            assert_eq!(e.param.as_deref(), *param, "{body}: {}", e.message);
            let v = e.body_json();
            assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        }
    }

    #[test]
    fn sizes_are_bounded() {
        let many = vec![r#"{"role":"user","content":"x"}"#; MAX_MESSAGES + 1].join(",");
        assert_eq!(err(&format!(r#"{{"model":"m","messages":[{many}]}}"#)).param.as_deref(), Some("messages"));
        let big = "x".repeat(MAX_MESSAGE_BYTES + 1);
        let e = err(&format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{big}"}}]}}"#));
        assert_eq!(e.param.as_deref(), Some("messages[0].content"));
        let long_stop = "s".repeat(MAX_STOP_BYTES + 1);
        let e = err(&format!(r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],"stop":"{long_stop}"}}"#));
        assert_eq!(e.param.as_deref(), Some("stop"));
    }

    #[test]
    fn only_json_content_types() {
        for ok in ["application/json", "Application/JSON", "application/json; charset=utf-8", " application/json ;x=y"]
        {
            assert!(is_json_content_type(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "",
            "application/jsonp",
            "application/json-seq",
        ] {
            assert!(!is_json_content_type(bad), "{bad}");
        }
        let e = ChatApiError::unsupported_media_type(Some("text/plain"));
        assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(e.body_json()["error"]["type"], "invalid_request_error");
    }

    #[test]
    fn queue_full_carries_retry_after() {
        let res = ChatApiError::queue_full().into_response();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()), Some("1"));
    }

    #[test]
    fn engine_errors_map_to_statuses() {
        use tpow_chat::ChatError as E;
        let cases = [
            (E::EmptyMessages, StatusCode::BAD_REQUEST),
            (E::PromptTooLong { tokens: 9000, at_least: true, max_tokens: 1, limit: 8192 }, StatusCode::BAD_REQUEST),
            (E::PromptOverBudget { tokens: 5000, at_least: true, budget: 4096 }, StatusCode::BAD_REQUEST),
            (E::Busy, StatusCode::TOO_MANY_REQUESTS),
            (E::KvCacheFull { needed: 2, free: 1, budget: 3 }, StatusCode::TOO_MANY_REQUESTS),
            (E::MaxTokensOverCap { asked: 9, cap: 8 }, StatusCode::BAD_REQUEST),
            (E::InvalidParam("x".into()), StatusCode::BAD_REQUEST),
            (E::QueueFull, StatusCode::TOO_MANY_REQUESTS),
            (E::Stopped, StatusCode::SERVICE_UNAVAILABLE),
        ];
        for (e, status) in cases {
            assert_eq!(engine_error(e).status, status);
        }
    }

    #[test]
    fn objects_have_openai_shape() {
        fn json<T: serde::Serialize>(v: &T) -> Value {
            serde_json::to_value(v).unwrap_or_default()
        }
        let u = Usage::new(5, 2);
        let c = json(&api::ChatCompletion::answer("id1", 9, "m", "Hi", "stop", Some(u)));
        assert_eq!(c["object"], "chat.completion");
        assert_eq!(c["choices"][0]["message"]["content"], "Hi");
        assert_eq!(c["usage"]["total_tokens"], 7);
        let text = api::Delta { content: Some("H".into()), role: None };
        let k = json(&api::ChatChunk::delta("id1", 9, "m", text, None, true));
        assert_eq!(k["object"], "chat.completion.chunk");
        assert!(k["choices"][0]["finish_reason"].is_null());
        assert!(k.as_object().is_some_and(|o| o.contains_key("usage")));
        let k = json(&api::ChatChunk::delta("id1", 9, "m", api::Delta::default(), Some("length"), false));
        assert_eq!(k["choices"][0]["finish_reason"], "length");
        assert!(!k.as_object().is_some_and(|o| o.contains_key("usage")));
        let k = json(&api::ChatChunk::usage("id1", 9, "m", Some(u)));
        assert_eq!(k["choices"].as_array().map(Vec::len), Some(0));
        assert_eq!(k["usage"]["completion_tokens"], 2);
    }
}
