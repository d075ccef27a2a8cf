//! Helpers for tests that run real `tpow-node` processes on 127.0.0.1.
//!
//! Every node is a child process owned by a [`Node`], killed (SIGKILL) and reaped
//! when the value drops, so a failing assertion never leaves processes behind.
//! Ports are ephemeral: nodes bind port 0 and write their addresses to files in
//! their data dir.

#![allow(dead_code)]

pub mod chat;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Nodes of different tests would compete for the two cores; run tests one by one.
static SERIAL: Mutex<()> = Mutex::new(());

/// Takes the per-binary test lock (poison-tolerant: one failed test must not fail the rest).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running node process.
pub struct Node {
    child: Option<Child>,
    /// Its data dir.
    pub dir: PathBuf,
    /// `127.0.0.1:PORT` of its HTTP API.
    pub http: String,
    /// Its p2p multiaddr (without /p2p).
    pub p2p: String,
}

/// Options of [`Node::start`].
#[derive(Default, Clone)]
pub struct Opts {
    pub mine: bool,
    /// Miner threads (default 1: tests share two cores).
    pub threads: Option<usize>,
    /// Use the GPU (`--gpu`): to mine (with `mine`) and to verify sync batches.
    pub gpu: bool,
    pub peers: Vec<String>,
    pub genesis_time_ms: Option<u64>,
    /// Chat options (`--model`, `--upstream`, ...); None runs the node with
    /// `--no-chat`, so chain tests neither load the model nor wait for it.
    pub chat: Option<Vec<String>>,
    /// More `tpow-node run` arguments (e.g. `--assume-valid ID`).
    pub extra: Vec<String>,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64
}

impl Node {
    /// Starts a node on `dir` and waits until its HTTP API answers.
    pub fn start(dir: &Path, opts: &Opts) -> Node {
        std::fs::create_dir_all(dir).expect("data dir");
        // Stale address files from a previous run of this dir must not be read.
        let _ = std::fs::remove_file(dir.join("http-addr"));
        let _ = std::fs::remove_file(dir.join("p2p-addr"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tpow-node"));
        cmd.args(["run", "--chain", "devnet", "--http", "127.0.0.1:0", "--p2p", "/ip4/127.0.0.1/tcp/0"])
            .arg("--data-dir")
            .arg(dir);
        if opts.mine {
            cmd.args(["--mine", "--threads"]).arg(opts.threads.unwrap_or(1).to_string());
        }
        if opts.gpu {
            cmd.arg("--gpu");
        }
        if let Some(t) = opts.genesis_time_ms {
            cmd.arg("--genesis-time-ms").arg(t.to_string());
        }
        for p in &opts.peers {
            cmd.arg("--peer").arg(p);
        }
        cmd.args(&opts.extra);
        if cfg!(feature = "chat") {
            match &opts.chat {
                None => {
                    cmd.arg("--no-chat");
                }
                Some(args) => {
                    cmd.args(args);
                }
            }
        }
        // A node kept in a static (shared by the tests of a file) is never
        // dropped; it stops by itself when the test process is gone.
        cmd.arg("--parent-pid").arg(std::process::id().to_string());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("node.log")).expect("log");
        cmd.stdin(Stdio::null()).stdout(log.try_clone().expect("log")).stderr(log);
        cmd.env("RUST_LOG", "info,libp2p=warn");
        let child = cmd.spawn().expect("spawn tpow-node");
        let mut node = Node { child: Some(child), dir: dir.to_path_buf(), http: String::new(), p2p: String::new() };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let http = std::fs::read_to_string(dir.join("http-addr")).unwrap_or_default();
            let p2p = std::fs::read_to_string(dir.join("p2p-addr")).unwrap_or_default();
            if !http.is_empty() && !p2p.is_empty() {
                node.http = http.trim().to_string();
                node.p2p = p2p.trim().to_string();
                if node.try_get("/api/health").is_some() {
                    return node;
                }
            }
            if let Some(c) = node.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("node exited early with {status}; log:\n{}", node.log());
                }
            }
            assert!(Instant::now() < deadline, "node did not start; log:\n{}", node.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        let s = std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default();
        let tail: Vec<&str> = s.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// SIGKILL, no cleanup by the node.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// (status, body) of a GET, or None if the node does not answer.
    pub fn try_get(&self, path: &str) -> Option<(u16, Vec<u8>)> {
        request(&self.http, "GET", path, None)
    }

    pub fn get(&self, path: &str) -> (u16, Vec<u8>) {
        self.try_get(path).unwrap_or_else(|| panic!("GET {path} failed; log:\n{}", self.log()))
    }

    pub fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let (status, body) = self.get(path);
        let v = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {:?}", String::from_utf8_lossy(&body)));
        (status, v)
    }

    pub fn post_json(&self, path: &str, body: &str) -> (u16, serde_json::Value) {
        let (status, body) = request(&self.http, "POST", path, Some(body)).expect("POST");
        (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
    }

    /// (height, id) of the tip.
    /// Resident memory of the node process in KiB (from /proc; 0 elsewhere).
    #[allow(dead_code)] // not every test binary reads it
    pub fn rss_kib(&self) -> u64 {
        let Some(pid) = self.child.as_ref().map(Child::id) else { return 0 };
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:").and_then(|v| v.trim().trim_end_matches(" kB").parse().ok()))
            })
            .unwrap_or(0)
    }

    /// A sample from `/metrics` (0 if absent).
    pub fn metric(&self, name: &str) -> f64 {
        let (_, body) = self.get("/metrics");
        String::from_utf8_lossy(&body)
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse::<f64>().ok()))
            .unwrap_or(0.0)
    }

    pub fn tip(&self) -> (u64, String) {
        let (_, v) = self.get_json("/api/tip");
        (v["height"].as_u64().expect("height"), v["id"].as_str().expect("id").to_string())
    }

    /// Id of the best-chain header at `height`.
    pub fn id_at(&self, height: u64) -> Option<String> {
        let (status, v) = self.get_json(&format!("/api/headers?from={height}&count=1&format=json"));
        (status == 200).then(|| v["headers"][0]["id"].as_str().map(str::to_string)).flatten()
    }

    /// Waits until `cond` holds, panicking with the log after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut cond: impl FnMut(&Node) -> bool) {
        let deadline = Instant::now() + timeout;
        while !cond(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A blocking HTTP/1.1 request with `Connection: close`.
pub fn request(addr: &str, method: &str, path: &str, body: Option<&str>) -> Option<(u16, Vec<u8>)> {
    request_full(addr, method, path, body.map(str::as_bytes), Duration::from_secs(10)).map(|r| (r.status, r.body))
}

/// A response with its headers (names lower-cased).
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// [`request`] with headers and a chosen read timeout. A write error is not
/// fatal: a server may answer (413) before it has read a large body.
pub fn request_full(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Option<HttpResponse> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    let body = body.unwrap_or(b"");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    let _ = s.write_all(body);
    let mut out = Vec::new();
    // A reset after a complete early answer still leaves that answer in `out`.
    let _ = s.read_to_end(&mut out);
    let split = out.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut payload = out[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        payload = dechunk(&payload);
    }
    Some(HttpResponse { status, headers, body: payload })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = b.windows(2).position(|w| w == b"\r\n") {
        let len = usize::from_str_radix(String::from_utf8_lossy(&b[..pos]).trim(), 16).unwrap_or(0);
        if len == 0 {
            break;
        }
        let start = pos + 2;
        out.extend_from_slice(&b[start..(start + len).min(b.len())]);
        b = &b[(start + len + 2).min(b.len())..];
    }
    out
}

/// The Python of the tests that drive Python clients: `TPOW_PYTHON`, else the venv
/// scripts/test.sh installs under `${TPOW_CACHE:-$HOME/.cache/tpow}`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("TPOW_PYTHON") {
        return p.into();
    }
    let cache = match std::env::var_os("TPOW_CACHE") {
        Some(c) => PathBuf::from(c),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/tpow"),
    };
    cache.join("venv/bin/python")
}
