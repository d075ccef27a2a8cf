//! The OpenAI-compatible chat API with the real local model (SmolLM2-135M).
//!
//! One node process serves every test of this file (tests run one by one under
//! `serial()`); it answers with small `max_tokens` to keep the file fast.

mod common;

use std::io::{Read, Write};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::chat::{chat_body, model_path, parse_stream, receipt_ok, verify_receipt};
use common::{request_full, serial, HttpResponse, Node, Opts};
use serde_json::{json, Value};

const MODEL: &str = "SmolLM2-135M-Instruct";
/// The test node's `--max-tokens-cap`.
const CAP: u32 = 200;
/// Generous: the machine is shared and a generation may wait in the queue.
const TIMEOUT: Duration = Duration::from_secs(120);

fn node() -> &'static Node {
    static NODE: OnceLock<Node> = OnceLock::new();
    NODE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tpow-chat-api-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let model = model_path();
        assert!(model.exists(), "the chat tests need the model at {} (TPOW_MODEL overrides)", model.display());
        let chat = vec![
            "--model".into(),
            model.display().to_string(),
            "--chat-queue".into(),
            "1".into(),
            "--max-tokens-cap".into(),
            CAP.to_string(),
        ];
        Node::start(&dir, &Opts { chat: Some(chat), ..Default::default() })
    })
}

fn post(n: &Node, body: &str) -> HttpResponse {
    request_full(&n.http, "POST", "/v1/chat/completions", Some(body.as_bytes()), TIMEOUT)
        .unwrap_or_else(|| panic!("no answer; log:\n{}", n.log()))
}

fn demand(n: &Node) -> u64 {
    let (_, info) = n.get_json("/api/info");
    info["chat"]["demand"].as_u64().unwrap_or_else(|| panic!("no chat demand in {info}"))
}

const FRANCE: &str = "What is the capital of France? Answer in one sentence.";

#[test]
fn greedy_answer_is_right_deterministic_counted_and_signed() {
    let _guard = serial();
    let n = node();
    let body = chat_body(MODEL, FRANCE, json!({ "temperature": 0, "max_tokens": 24 }));
    let a = post(n, &body);
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let v = a.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], MODEL);
    assert!(v["id"].as_str().is_some_and(|id| id.starts_with("chatcmpl-")), "{v}");
    let content = v["choices"][0]["message"]["content"].as_str().expect("content").to_string();
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    let finish = v["choices"][0]["finish_reason"].as_str().expect("finish_reason");
    assert!(finish == "stop" || finish == "length", "{finish}");
    let usage = &v["usage"];
    let (prompt, completion) =
        (usage["prompt_tokens"].as_u64().expect("p"), usage["completion_tokens"].as_u64().expect("c"));
    assert!(prompt > 5 && (1..=24).contains(&completion), "{usage}");
    assert_eq!(usage["total_tokens"].as_u64(), Some(prompt + completion));
    if finish == "length" {
        assert_eq!(completion, 24);
    }

    // Signed in the headers and in the body, over this body and this content.
    let receipt = &v["tpow"];
    assert!(receipt_ok(receipt, body.as_bytes(), &content), "{receipt}");
    assert_eq!(a.header("x-tpow-node-key"), receipt["node_key"].as_str());
    assert_eq!(a.header("x-tpow-signature"), receipt["signature"].as_str());
    assert_eq!(a.header("x-tpow-request-hash"), receipt["request_hash"].as_str());
    assert_eq!(a.header("x-tpow-response-hash"), receipt["response_hash"].as_str());
    let (key, sig) = (receipt["node_key"].as_str().expect("key"), receipt["signature"].as_str().expect("sig"));
    assert!(!verify_receipt(key, body.as_bytes(), &format!("{content}!"), sig), "tampered answer");
    assert!(!verify_receipt(key, body.replace("France", "Spain").as_bytes(), &content, sig), "tampered question");
    // The key is the node's identity, as /api/info publishes it.
    let (_, info) = n.get_json("/api/info");
    assert_eq!(info["node_key"].as_str(), Some(key));
    assert_eq!(receipt["peer_id"], info["peer_id"]);

    // Greedy is deterministic.
    let b = post(n, &body).json();
    assert_eq!(b["choices"][0]["message"]["content"].as_str(), Some(content.as_str()));
    assert_eq!(b["usage"], v["usage"]);
    assert_ne!(b["id"], v["id"]);
    // Last, so that a weak model still has the API checked above.
    assert!(content.contains("Paris"), "{content:?}");
}

#[test]
fn streaming_gives_the_same_text_and_usage_as_a_whole_answer() {
    let _guard = serial();
    let n = node();
    let params = json!({ "temperature": 0, "max_tokens": 20 });
    let whole = post(n, &chat_body(MODEL, FRANCE, params.clone())).json();
    let mut stream_params = params.clone();
    stream_params["stream"] = json!(true);
    stream_params["stream_options"] = json!({ "include_usage": true });
    let body = chat_body(MODEL, FRANCE, stream_params);
    let r = post(n, &body);
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/event-stream")), "{:?}", r.headers);
    let s = parse_stream(&r.body);
    assert!(s.ended_with_done, "no [DONE]");
    assert_eq!(s.content, whole["choices"][0]["message"]["content"].as_str().expect("content"));
    let first = &s.chunks[0];
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert!(s.chunks.iter().all(|c| c["id"] == first["id"] && c["model"] == MODEL));
    assert_eq!(s.finish_reason.as_deref(), whole["choices"][0]["finish_reason"].as_str());
    assert_eq!(s.usage.as_ref(), Some(&whole["usage"]), "usage of the stream");
    // With include_usage the last chunk has no choices and carries usage and the receipt.
    let last = s.chunks.last().expect("chunks");
    assert_eq!(last["choices"].as_array().map(Vec::len), Some(0));
    let receipt = s.receipt.expect("receipt in the last chunk");
    assert!(receipt_ok(&receipt, body.as_bytes(), &s.content), "{receipt}");
    assert!(!receipt_ok(&receipt, body.as_bytes(), &format!("{} ", s.content)), "tampered stream");
    assert_eq!(r.header("x-tpow-node-key"), receipt["node_key"].as_str());

    // Without include_usage: no usage anywhere, the finish chunk is last and signed.
    let mut plain = params;
    plain["stream"] = json!(true);
    let body = chat_body(MODEL, FRANCE, plain);
    let s = parse_stream(&post(n, &body).body);
    assert!(s.usage.is_none() && s.ended_with_done);
    let last = s.chunks.last().expect("chunks");
    assert!(last["choices"][0]["finish_reason"].is_string(), "{last}");
    assert!(receipt_ok(&s.receipt.expect("receipt"), body.as_bytes(), &s.content));
}

#[test]
fn invalid_requests_are_openai_errors() {
    let _guard = serial();
    let n = node();
    let user = |extra: Value| chat_body(MODEL, "Hi", extra);
    let long_prompt = "hello ".repeat(9_000);
    let cases: Vec<(String, Option<&str>, &str)> = vec![
        ("{\"model\": ".into(), None, "invalid JSON"),
        (chat_body("gpt-9", "Hi", json!({})), Some("model"), "unknown model"),
        (json!({ "model": MODEL, "messages": [] }).to_string(), Some("messages"), "empty messages"),
        (
            json!({ "model": MODEL, "messages": [{ "role": "robot", "content": "x" }] }).to_string(),
            Some("messages[0].role"),
            "unknown role",
        ),
        (chat_body(MODEL, &long_prompt, json!({ "max_tokens": 10 })), Some("messages"), "prompt over the context"),
        (chat_body(MODEL, &long_prompt, json!({})), Some("messages"), "prompt over the context, default max_tokens"),
        (user(json!({ "max_tokens": CAP + 1 })), Some("max_tokens"), "max_tokens over the cap"),
        (user(json!({ "temperature": 3 })), Some("temperature"), "temperature"),
        (user(json!({ "top_p": 0 })), Some("top_p"), "top_p"),
        (user(json!({ "stream": 1 })), Some("stream"), "wrong type"),
    ];
    for (body, param, what) in cases {
        let r = post(n, &body);
        assert_eq!(r.status, 400, "{what}: {}", String::from_utf8_lossy(&r.body));
        let e = r.json();
        assert_eq!(e["error"]["type"], "invalid_request_error", "{what}: {e}");
        assert!(e["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {e}");
        assert_eq!(e["error"]["param"].as_str(), param, "{what}: {e}");
        assert!(e["error"].as_object().is_some_and(|o| o.contains_key("code")), "{what}: {e}");
    }
    let r = post(n, &chat_body(MODEL, &long_prompt, json!({ "max_tokens": 10 })));
    assert_eq!(r.json()["error"]["code"], "context_length_exceeded");

    // A body over 1 MiB is refused before it is parsed.
    let huge = chat_body(MODEL, &"x".repeat(1_100_000), json!({}));
    let r = request_full(&n.http, "POST", "/v1/chat/completions", Some(huge.as_bytes()), TIMEOUT).expect("answer");
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");

    let (status, models) = n.get_json("/v1/models");
    assert_eq!(status, 200);
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], MODEL);
    let (_, info) = n.get_json("/api/info");
    assert_eq!(info["models"], json!([MODEL]));
    assert_eq!(info["chat"]["backend"], "local");
}

/// Opens a streaming request and returns the socket once the first content
/// delta arrived (the generation is running).
fn open_stream(n: &Node, body: &str) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(&n.http).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // The role chunk has an empty content; a second `"content"` is a real delta.
    while count(&seen, "\"content\"") < 2 {
        let k = s.read(&mut buf).expect("read");
        assert!(k > 0, "stream ended early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..k]);
    }
    s
}

fn count(hay: &[u8], needle: &str) -> usize {
    String::from_utf8_lossy(hay).matches(needle).count()
}

#[test]
fn a_disconnected_client_cancels_its_generation() {
    let _guard = serial();
    let n = node();
    let prompt = "Count from 1 to 500, separated by commas.";
    let params = json!({ "temperature": 0, "max_tokens": 100 });
    // How long the whole generation takes when nobody cancels it.
    let started = Instant::now();
    let whole = post(n, &chat_body(MODEL, prompt, params.clone())).json();
    let full = started.elapsed();
    let tokens = whole["usage"]["completion_tokens"].as_u64().unwrap_or(0);
    assert!(tokens >= 50, "needs a long answer: {whole}");

    let mut stream_params = params;
    stream_params["stream"] = json!(true);
    let s = open_stream(n, &chat_body(MODEL, prompt, stream_params));
    assert_eq!(demand(n), 1);
    let dropped = Instant::now();
    drop(s);
    while demand(n) != 0 {
        assert!(dropped.elapsed() < full, "the generation ran on after the client left; log:\n{}", n.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    let cancel = dropped.elapsed();
    eprintln!("whole generation of {tokens} tokens: {full:?}; stopped {cancel:?} after the client left");
    assert!(cancel < full / 2, "cancel took {cancel:?}, a whole generation {full:?}");
    // And the engine serves the next request.
    let r = post(n, &chat_body(MODEL, FRANCE, json!({ "temperature": 0, "max_tokens": 4 })));
    assert_eq!(r.status, 200);
}

#[test]
fn requests_beyond_the_queue_are_refused_at_once() {
    let _guard = serial();
    let n = node();
    // The node runs one generation and queues one (--chat-queue 1).
    let long = chat_body(
        MODEL,
        "Count from 1 to 500, separated by commas.",
        json!({ "temperature": 0, "max_tokens": CAP, "stream": true }),
    );
    let running = open_stream(n, &long);
    // `long` asks for up to CAP tokens: far longer than the refusals below take.
    let mut queued = std::net::TcpStream::connect(&n.http).expect("connect");
    write!(
        queued,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{long}",
        long.len()
    )
    .expect("send");
    n.wait_for("the second request to queue", TIMEOUT, |n| demand(n) == 2);
    let started = Instant::now();
    for stream in [false, true] {
        let r = post(n, &chat_body(MODEL, FRANCE, json!({ "max_tokens": 4, "stream": stream })));
        assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("retry-after"), Some("1"));
        let e = r.json();
        assert_eq!(e["error"]["code"], "queue_full", "{e}");
    }
    let refused = started.elapsed();
    assert!(refused < Duration::from_secs(10), "refusals took {refused:?}");
    drop(running);
    drop(queued);
    n.wait_for("the queue to drain", TIMEOUT, |n| demand(n) == 0);
}
