//! `--upstream`: a real node forwarding chat to a mock OpenAI-compatible server
//! (axum, in this process), and model discovery between peers. Needs no model file.

mod common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use common::chat::{chat_body, parse_stream, receipt_ok};
use common::{request_full, serial, HttpResponse, Node, Opts};
use serde_json::{json, Value};

const MOCK_MODEL: &str = "mock-model";

/// The mock upstream: answers "echo: <last message>", one word per chunk when
/// streaming, and records every request it gets.
struct Mock {
    _rt: tokio::runtime::Runtime,
    url: String,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl Mock {
    fn requests(&self) -> Vec<Value> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

async fn mock_models() -> Json<Value> {
    Json(
        json!({ "object": "list", "data": [{ "id": MOCK_MODEL, "object": "model", "created": 0, "owned_by": "test" }] }),
    )
}

async fn mock_chat(State(seen): State<Arc<Mutex<Vec<Value>>>>, Json(req): Json<Value>) -> Response {
    seen.lock().unwrap_or_else(|p| p.into_inner()).push(req.clone());
    if req["model"] != MOCK_MODEL {
        let e = json!({ "error": { "message": "model not found at the mock", "type": "invalid_request_error",
                                   "param": "model", "code": "model_not_found" } });
        return (StatusCode::NOT_FOUND, Json(e)).into_response();
    }
    let last = req["messages"].as_array().and_then(|m| m.last()).and_then(|m| m["content"].as_str()).unwrap_or("");
    let mut words = vec!["echo:".to_string()];
    words.extend(last.split_whitespace().map(str::to_string));
    let usage = json!({ "prompt_tokens": 11, "completion_tokens": words.len(), "total_tokens": 11 + words.len() });
    if req["stream"] != true {
        return Json(json!({
            "id": "up-1", "object": "chat.completion", "created": 1, "model": MOCK_MODEL,
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": words.join(" ") }, "finish_reason": "stop" }],
            "usage": usage,
        }))
        .into_response();
    }
    let chunk = |delta: Value, finish: Value| {
        json!({ "id": "up-1", "object": "chat.completion.chunk", "created": 1, "model": MOCK_MODEL,
                "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }] })
    };
    let mut events = vec![": upstream comment".to_string()];
    events.push(format!("data: {}", chunk(json!({ "role": "assistant", "content": "" }), Value::Null)));
    for (i, w) in words.iter().enumerate() {
        let text = if i == 0 { w.clone() } else { format!(" {w}") };
        events.push(format!("data: {}", chunk(json!({ "content": text }), Value::Null)));
    }
    events.push(format!("data: {}", chunk(json!({}), json!("stop"))));
    if req["stream_options"]["include_usage"] == true {
        events.push(format!(
            "data: {}",
            json!({ "id": "up-1", "object": "chat.completion.chunk", "created": 1, "model": MOCK_MODEL, "choices": [], "usage": usage })
        ));
    }
    events.push("data: [DONE]".into());
    let body = events.join("\r\n\r\n") + "\r\n\r\n";
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}

fn mock() -> &'static Mock {
    static MOCK: OnceLock<Mock> = OnceLock::new();
    MOCK.get_or_init(|| {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/v1/models", get(mock_models))
            .route("/v1/chat/completions", axum::routing::post(mock_chat))
            .with_state(seen.clone());
        rt.spawn(async move { axum::serve(listener, app).await });
        Mock { _rt: rt, url: format!("http://{addr}"), seen }
    })
}

/// The node in front of the mock (shared by the tests of this file).
fn node() -> &'static Node {
    static NODE: OnceLock<Node> = OnceLock::new();
    NODE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tpow-chat-upstream-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let chat = vec!["--upstream".into(), mock().url.clone()];
        Node::start(&dir, &Opts { chat: Some(chat), ..Default::default() })
    })
}

fn post(n: &Node, body: &[u8]) -> HttpResponse {
    request_full(&n.http, "POST", "/v1/chat/completions", Some(body), Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no answer; log:\n{}", n.log()))
}

#[test]
fn upstream_answers_are_relayed_and_signed() {
    let _guard = serial();
    let (n, m) = (node(), mock());
    let (status, models) = n.get_json("/v1/models");
    assert_eq!(status, 200);
    assert_eq!(models["data"][0]["id"], MOCK_MODEL);
    let (_, info) = n.get_json("/api/info");
    assert_eq!(info["models"], json!([MOCK_MODEL]), "{info}");
    assert_eq!(info["chat"]["backend"], "upstream");

    // Not streaming; a field the node does not read still reaches the upstream.
    let body = chat_body(
        MOCK_MODEL,
        "hello upstream world",
        json!({ "temperature": 0.3, "max_tokens": 9, "frequency_penalty": 0.5 }),
    );
    let r = post(n, body.as_bytes());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    let content = v["choices"][0]["message"]["content"].as_str().expect("content");
    assert_eq!(content, "echo: hello upstream world");
    assert_eq!(v["usage"], json!({ "prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15 }));
    assert!(receipt_ok(&v["tpow"], body.as_bytes(), content), "{}", v["tpow"]);
    assert!(!receipt_ok(&v["tpow"], body.as_bytes(), "echo: hello downstream world"));
    assert_eq!(r.header("x-tpow-signature"), v["tpow"]["signature"].as_str());
    let sent = m.requests().last().cloned().expect("the mock got the request");
    assert_eq!((sent["temperature"].as_f64(), sent["frequency_penalty"].as_f64()), (Some(0.3), Some(0.5)));
    assert_eq!(sent["stream"], false);

    // Streaming, with and without usage.
    for include_usage in [true, false] {
        let body = chat_body(
            MOCK_MODEL,
            "hello upstream world",
            json!({ "stream": true, "stream_options": { "include_usage": include_usage } }),
        );
        let r = post(n, body.as_bytes());
        assert_eq!(r.status, 200);
        let s = parse_stream(&r.body);
        assert!(s.ended_with_done);
        assert_eq!(s.content, "echo: hello upstream world");
        assert_eq!(s.chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(s.finish_reason.as_deref(), Some("stop"));
        assert_eq!(s.usage.is_some(), include_usage);
        if include_usage {
            assert_eq!(s.usage.as_ref().map(|u| u["completion_tokens"].clone()), Some(json!(4)));
        }
        assert!(receipt_ok(&s.receipt.expect("receipt"), body.as_bytes(), &s.content));
        let sent = m.requests().last().cloned().expect("request");
        // The node always asks the upstream for usage.
        assert_eq!(
            (sent["stream"].clone(), sent["stream_options"]["include_usage"].clone()),
            (json!(true), json!(true))
        );
    }
}

#[test]
fn the_node_validates_before_forwarding_and_relays_upstream_errors() {
    let _guard = serial();
    let (n, m) = (node(), mock());
    let _ = n.get("/api/health");
    let before = m.requests().len();
    let r = post(n, json!({ "model": MOCK_MODEL, "messages": [] }).to_string().as_bytes());
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "messages");
    let r = post(n, chat_body(MOCK_MODEL, "x", json!({ "top_p": 7 })).as_bytes());
    assert_eq!(r.status, 400);
    let r = post(n, chat_body(MOCK_MODEL, &"x".repeat(1_100_000), json!({})).as_bytes());
    assert_eq!(r.status, 413);
    assert_eq!(m.requests().len(), before, "invalid requests must not reach the upstream");

    // The upstream's own refusal comes back with its status and body.
    let r = post(n, chat_body("other-model", "x", json!({})).as_bytes());
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["message"], "model not found at the mock");
    let r = post(n, chat_body("other-model", "x", json!({ "stream": true })).as_bytes());
    assert_eq!(r.status, 404);

    // An upstream that is down: 503, the node itself keeps running.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let down = Node::start(
        &tmp.path().join("down"),
        &Opts { chat: Some(vec!["--upstream".into(), format!("http://{dead}")]), ..Default::default() },
    );
    let r = post(&down, chat_body(MOCK_MODEL, "x", json!({})).as_bytes());
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["code"], "upstream_unavailable");
    assert_eq!(down.get("/v1/models").0, 503);
    assert_eq!(down.get_json("/api/health").0, 200);
}

#[test]
fn peers_learn_which_node_serves_which_model() {
    let _guard = serial();
    let n = node();
    let tmp = tempfile::tempdir().expect("tempdir");
    let plain = Node::start(&tmp.path().join("plain"), &Opts { peers: vec![n.p2p.clone()], ..Default::default() });
    let port: u64 = n.http.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
    plain.wait_for("the chat peer's models", Duration::from_secs(30), |p| {
        let (_, v) = p.get_json("/api/peers");
        v["peers"]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x["models"] == json!([MOCK_MODEL]) && x["http_port"] == port))
    });
    // The plain node serves no chat, and says why.
    let (_, info) = plain.get_json("/api/info");
    assert_eq!(info["models"], json!([]));
    assert!(info["chat"]["unavailable"].as_str().is_some_and(|w| w.contains("--no-chat")), "{info}");
    let r = post(&plain, chat_body(MOCK_MODEL, "x", json!({})).as_bytes());
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["type"], "server_error");
}
