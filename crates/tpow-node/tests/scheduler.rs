//! Chat preempts mining (issue: a node mines and serves chat at once), with the
//! real model: time to first token on a node mining with every core stays within
//! 1.5x of an idle node's, mining resumes afterwards, and `/metrics` (read with the
//! Prometheus project's own parser when available) moves as driven.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::chat::{chat_body, model_path};
use common::{python, request, serial, Node, Opts};
use serde_json::json;

/// A prompt of about 150 tokens: time to first token is mostly prompt processing.
fn prompt() -> String {
    "Summarise in one short sentence why the sky looks blue during the day and red at sunset. \
     Mention scattering of light by molecules of the atmosphere, the wavelength of blue light, \
     and the longer path of sunlight through the air when the sun is low. "
        .repeat(2)
}

/// Sends a streaming chat request; returns the time to the first content token
/// and the time to the end of the stream.
fn streamed_ttft(addr: &str, body: &str) -> (Duration, Duration) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120))).expect("timeout");
    let started = Instant::now();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut seen = Vec::new();
    let mut first = None;
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
        if first.is_none() && has_content_delta(&seen) {
            first = Some(started.elapsed());
        }
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    (first.unwrap_or_else(|| panic!("no content token in {text}")), started.elapsed())
}

/// Whether an SSE chunk with non-empty `delta.content` has arrived.
fn has_content_delta(bytes: &[u8]) -> bool {
    let pat = b"\"content\":\"";
    bytes.windows(pat.len() + 1).any(|w| &w[..pat.len()] == pat && w[pat.len()] != b'"')
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The node's metrics, as `name{labels}` -> value (a minimal reader of the text format).
fn metrics(addr: &str) -> BTreeMap<String, f64> {
    let (status, body) = request(addr, "GET", "/metrics", None).expect("GET /metrics");
    assert_eq!(status, 200);
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

/// Parses `/metrics` with the Python `prometheus_client` parser; `None` if that
/// Python is not installed (allowed unless `TPOW_OPENAI_TEST=1`, as scripts/test.sh sets).
fn parsed_by_prometheus(addr: &str) -> Option<serde_json::Value> {
    let py = python();
    let ok = Command::new(&py).args(["-c", "import prometheus_client"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        let demanded = std::env::var("TPOW_OPENAI_TEST").is_ok_and(|v| v == "1");
        assert!(!demanded, "TPOW_OPENAI_TEST=1 but {} cannot import prometheus_client", py.display());
        eprintln!("SKIPPED the Python parser: {} lacks prometheus_client", py.display());
        return None;
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/metrics/parse_metrics.py");
    let out = Command::new(&py).arg(script).arg(format!("http://{addr}/metrics")).output().expect("python");
    assert!(out.status.success(), "prometheus_client rejected /metrics: {}", String::from_utf8_lossy(&out.stderr));
    Some(serde_json::from_slice(&out.stdout).expect("parser output"))
}

fn chat_node(dir: PathBuf, mine: bool) -> Node {
    let args = vec!["--model".to_string(), model_path().display().to_string()];
    // Every core mines.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    Node::start(&dir, &Opts { mine, threads: Some(threads), chat: Some(args), ..Default::default() })
}

fn ttft_runs(addr: &str, runs: usize) -> Duration {
    let body =
        chat_body("SmolLM2-135M-Instruct", &prompt(), json!({ "max_tokens": 4, "temperature": 0, "stream": true }));
    // One warm-up: first-touch page faults of the weights are not scheduling.
    streamed_ttft(addr, &body);
    median((0..runs).map(|_| streamed_ttft(addr, &body).0).collect())
}

#[test]
fn chat_preempts_mining_and_mining_resumes() {
    let _guard = serial();
    let tmp = tempfile::tempdir().expect("tempdir");

    let idle = chat_node(tmp.path().join("idle"), false);
    let idle_ttft = ttft_runs(&idle.http, 5);
    drop(idle);

    let busy = chat_node(tmp.path().join("busy"), true);
    let passes = |m: &BTreeMap<String, f64>| m.get("tpow_pow_forward_passes_total").copied().unwrap_or(0.0);
    let until = Instant::now() + Duration::from_secs(60);
    while passes(&metrics(&busy.http)) < 1000.0 {
        assert!(Instant::now() < until, "the node does not mine:\n{}", busy.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let before = metrics(&busy.http);
    let busy_ttft = ttft_runs(&busy.http, 5);
    let after_chat = metrics(&busy.http);
    eprintln!("time to first token: idle node {idle_ttft:?}, node mining on every core {busy_ttft:?}");
    assert!(
        busy_ttft.as_secs_f64() <= idle_ttft.as_secs_f64() * 1.5,
        "mining slowed chat: idle {idle_ttft:?}, mining {busy_ttft:?}"
    );

    // Mining resumes once the queue is empty.
    std::thread::sleep(Duration::from_secs(1));
    let resumed = metrics(&busy.http);
    std::thread::sleep(Duration::from_secs(1));
    let later = metrics(&busy.http);
    assert!(passes(&later) > passes(&resumed), "mining did not resume:\n{}", busy.log());

    // The accounting moved the way the test drove it.
    let get = |m: &BTreeMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
    assert_eq!(get(&after_chat, "tpow_chat_requests_total") - get(&before, "tpow_chat_requests_total"), 6.0);
    assert!(get(&after_chat, "tpow_chat_tokens_generated_total") > get(&before, "tpow_chat_tokens_generated_total"));
    assert_eq!(
        get(&after_chat, "tpow_chat_time_to_first_token_seconds_count")
            - get(&before, "tpow_chat_time_to_first_token_seconds_count"),
        6.0
    );
    assert!(get(&after_chat, "tpow_compute_seconds_total{kind=\"chat\"}") > 0.0);
    assert!(get(&after_chat, "tpow_compute_seconds_total{kind=\"mining\"}") > 0.0);
    assert!(get(&later, "tpow_best_height") >= 1.0, "{later:?}");
    assert!(get(&later, "tpow_miner_switch_seconds_count") >= 1.0, "{later:?}");

    if let Some(parsed) = parsed_by_prometheus(&busy.http) {
        let passes = parsed["tpow_pow_forward_passes_total"].as_f64().expect("passes parsed");
        assert!(passes >= get(&later, "tpow_pow_forward_passes_total"));
        assert!(parsed["tpow_chat_requests_total"].as_f64() >= Some(6.0));
    }
}
