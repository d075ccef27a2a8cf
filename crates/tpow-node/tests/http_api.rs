//! HTTP API tests against a real node process.

mod common;

use std::time::Duration;

use common::{serial, Node, Opts};
use serde::de::DeserializeOwned;
use serde::Serialize;

#[test]
fn api_answers_and_rejects_bad_input_with_json_errors() {
    let _guard = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let n = Node::start(&tmp.path().join("a"), &Opts { mine: true, ..Default::default() });
    n.wait_for("height 3", Duration::from_secs(60), |n| n.tip().0 >= 3);

    let (status, tip) = n.get_json("/api/tip");
    assert_eq!(status, 200);
    assert_eq!(tip["id"].as_str().expect("id").len(), 64);
    assert_eq!(tip["target"].as_str().expect("target").len(), 64);
    assert!(tip["total_work"].as_str().expect("work").parse::<u128>().is_ok());

    let (status, bin) = n.get("/api/headers?from=0&count=3");
    assert_eq!(status, 200);
    assert_eq!(bin.len(), 3 * 192);
    let (status, json) = n.get_json("/api/headers?from=0&count=3&format=json");
    assert_eq!(status, 200);
    assert_eq!(json["headers"].as_array().expect("list").len(), 3);

    let (status, proof) = n.get_json("/api/mmr-proof?height=1&tip=3");
    assert_eq!(status, 200, "{proof}");
    assert_eq!(proof["leaf_count"], 3);
    let (status, fly) = n.get_json("/api/flyclient?last=2&samples=5");
    assert_eq!(status, 200, "{fly}");
    assert_eq!(fly["last"].as_array().expect("last").len(), 2);
    // The seeded request (the client's randomness): draws follow the rule of
    // tpow_core::flyclient from the chain's work; samples are distinct heights below
    // the last headers (tpow-light's tests check the exact draws).
    let seed = "07".repeat(32);
    let (status, fly) = n.get_json(&format!("/api/flyclient?tip=3&last=1&seed={seed}&security=50"));
    assert_eq!(status, 200, "{fly}");
    let sampled = fly["sampled"].as_array().expect("sampled");
    let draws = fly["draws"].as_u64().expect("draws");
    assert!(draws > 0 && sampled.len() as u64 <= draws, "{fly}");
    let heights: Vec<u64> = sampled.iter().map(|s| s["height"].as_u64().expect("height")).collect();
    assert!(heights.windows(2).all(|w| w[0] < w[1]) && heights.iter().all(|&h| h < 3), "{heights:?}");

    answers_are_the_api_types(&n, &seed);

    for bad in [
        "/api/headers?from=0&count=100000",
        "/api/headers?from=abc",
        "/api/headers?count=1",
        "/api/headers?from=0&format=xml",
        "/api/headers?from=999999999",
        "/api/mmr-proof?height=5&tip=2",
        "/api/mmr-proof?height=1&tip=999999999",
        "/api/work?miner=zz",
        "/api/work?miner=00",
        "/api/flyclient?samples=100000",
        "/api/flyclient?seed=zz",
        "/api/flyclient?seed=0707",
        "/api/flyclient?last=1&security=0&seed=0707070707070707070707070707070707070707070707070707070707070707",
        "/api/flyclient?last=1&security=129&seed=0707070707070707070707070707070707070707070707070707070707070707",
        "/api/nope",
    ] {
        let (status, v) = n.get_json(bad);
        assert!((400..500).contains(&status), "{bad}: status {status}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{bad}: {v}");
    }
    for (body, what) in [
        ("{not json", "broken JSON"),
        ("{\"header\": 5}", "wrong type"),
        ("{\"header\": \"xyz\"}", "bad hex"),
        ("{\"header\": \"00\"}", "short header"),
    ] {
        let (status, v) = n.post_json("/api/work", body);
        assert!((400..500).contains(&status), "{what}: status {status}");
        assert!(v["error"].as_str().is_some(), "{what}: {v}");
    }
    // A template solved with a made-up digest: stale/invalid, never accepted.
    let key = "11".repeat(32);
    let (status, work) = n.get_json(&format!("/api/work?miner={key}"));
    assert_eq!(status, 200);
    let header = work["header"].as_str().expect("header");
    let (status, v) = n.post_json("/api/work", &format!("{{\"header\": \"{header}\"}}"));
    assert!((400..500).contains(&status), "zero-nonce solution: {status} {v}");

    // Every error is JSON: a wrong method, a failed WebSocket handshake, a path
    // segment longer than a file name.
    let long = format!("/{}", "a".repeat(300));
    for (method, path) in [("DELETE", "/api/tip"), ("POST", "/api/headers"), ("GET", "/api/ws"), ("GET", long.as_str())]
    {
        let r = common::request_full(&n.http, method, path, None, Duration::from_secs(10)).expect("answer");
        assert!((400..500).contains(&r.status), "{method} {path}: {}", r.status);
        assert!(r.json()["error"].as_str().is_some(), "{method} {path}: {:?}", String::from_utf8_lossy(&r.body));
    }
    // /api/chain names the chain and its genesis.
    let (status, chain) = n.get_json("/api/chain");
    assert_eq!(status, 200, "{chain}");
    assert_eq!(chain["name"], "devnet");
    let (_, genesis) = n.get("/api/headers?from=0&count=1");
    let g = tpow_core::Header::decode(&genesis).expect("genesis");
    assert_eq!(chain["genesis_id"], hex::encode(g.id()));
    assert_eq!(chain["genesis_timestamp_ms"], g.timestamp_ms);

    // Slow loris: a connection that never finishes its request headers is closed
    // by the node (10 s deadline), while the node keeps answering others.
    use std::io::{Read, Write};
    let mut slow = std::net::TcpStream::connect(&n.http).expect("connect");
    slow.write_all(b"GET /api/tip HTTP/1.1\r\nHost: x\r\n").expect("half a request");
    slow.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(started.elapsed() < Duration::from_secs(25), "half-sent request held open");
    assert_eq!(n.get_json("/api/tip").0, 200);
}

/// Reads the first text frame of `/api/ws` with a hand-made WebSocket handshake.
fn first_ws_message(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(
        s,
        "GET /api/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .expect("handshake");
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("response head");
        buf.push(byte[0]);
    }
    assert!(buf.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&buf));
    let mut head = [0u8; 2];
    s.read_exact(&mut head).expect("frame");
    assert_eq!(head[0] & 0x0f, 1, "text frame");
    let len = match head[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).expect("len");
            u16::from_be_bytes(l) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).expect("payload");
    String::from_utf8(payload).expect("utf8")
}

#[test]
fn websocket_pushes_tip_and_browser_shares_are_verified() {
    use tpow_core::puzzle::Solver;
    use tpow_core::target::hash_meets_target;
    use tpow_core::{ChainParams, Header, Model, U256};

    let _guard = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    // Not mining: the template stays current while the test mines a share.
    let n = Node::start(&tmp.path().join("a"), &Opts::default());
    let msg: serde_json::Value = serde_json::from_str(&first_ws_message(&n.http)).expect("ws json");
    assert_eq!(msg["height"], 0);

    let key = "22".repeat(32);
    let (status, work) = n.get_json(&format!("/api/work?miner={key}"));
    assert_eq!(status, 200, "{work}");
    let hex32 = |v: &serde_json::Value| -> [u8; 32] {
        hex::decode(v.as_str().expect("hex")).expect("hex").try_into().expect("32 bytes")
    };
    let share_target = U256::from_be_bytes(hex32(&work["share_target"]));
    let block_target = U256::from_be_bytes(hex32(&work["target"]));
    // Shares are never easier than the node's floor (macs_per_pass / 2,500 attempts).
    let floor = tpow_core::ModelSpec::DEVNET.macs_per_pass() / 2_500;
    assert!(share_target <= U256::MAX / U256::from(floor), "share target above the floor");
    let template =
        Header::decode(&hex::decode(work["header"].as_str().expect("header")).expect("hex")).expect("header");
    let model = Model::derive(&ChainParams::devnet().model, &template.prev_id).expect("model");
    let mut solver = Solver::new(&model);
    // A share that is not also a block, so the tip (and the template) stay put.
    let found = (0u64..)
        .map(|nonce| solver.attempt(&template.template(), nonce))
        .find(|a| hash_meets_target(&a.pow_hash, &share_target) && !hash_meets_target(&a.pow_hash, &block_target))
        .expect("share");
    let solved = Header { nonce: found.nonce, output_digest: found.output_digest, ..template };
    let body = format!("{{\"header\": \"{}\"}}", hex::encode(solved.encode()));
    let (status, v) = n.post_json("/api/work", &body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["shares"], 1);
    // The same share twice counts once.
    let (status, _) = n.post_json("/api/work", &body);
    assert_eq!(status, 409);
    // A made-up digest with a pow hash ground to meet the share target passes
    // every cheap check; the forward pass exposes it, and the address gets no
    // more share passes for a while (even for a valid share).
    let fake = [0x5a; 32];
    let forged = (1_000_000u64..)
        .map(|nonce| Header { nonce, output_digest: fake, ..template })
        .find(|h| {
            hash_meets_target(&tpow_core::puzzle::pow_hash(&h.template(), h.nonce, &h.output_digest), &share_target)
        })
        .expect("ground share");
    let passes_before = n.metric("tpow_verification_forward_passes_total");
    let (status, v) = n.post_json("/api/work", &format!("{{\"header\": \"{}\"}}", hex::encode(forged.encode())));
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap_or_default().contains("forward pass"), "{v}");
    assert_eq!(n.metric("tpow_verification_forward_passes_total") - passes_before, 1.0, "one pass exposed it");
    let next = (found.nonce + 1..)
        .map(|nonce| solver.attempt(&template.template(), nonce))
        .find(|a| hash_meets_target(&a.pow_hash, &share_target) && !hash_meets_target(&a.pow_hash, &block_target))
        .expect("second share");
    let second = Header { nonce: next.nonce, output_digest: next.output_digest, ..template };
    let (status, v) = n.post_json("/api/work", &format!("{{\"header\": \"{}\"}}", hex::encode(second.encode())));
    assert_eq!(status, 429, "{v}");
    assert_eq!(
        n.metric("tpow_verification_forward_passes_total") - passes_before,
        1.0,
        "no pass for a penalised address"
    );
    let (_, miners) = n.get_json("/api/miners");
    assert_eq!(miners["miners"][0]["miner"], key.as_str());
    assert_eq!(miners["miners"][0]["shares"], 1);
}

/// `path` answers `status` with a body that parses as `T` and renders back to the
/// very bytes the node sent: tpow-api's types are the format, not a copy of it.
fn served_as<T: DeserializeOwned + Serialize>(n: &Node, path: &str, status: u16) -> T {
    let (got, body) = n.get(path);
    assert_eq!(got, status, "{path}: {}", String::from_utf8_lossy(&body));
    let v: T = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{path} is not its type: {e}"));
    let again = serde_json::to_vec(&v).expect("serialises");
    assert_eq!(String::from_utf8_lossy(&again), String::from_utf8_lossy(&body), "{path}");
    v
}

/// Every JSON answer of the chain and mining endpoints, against its tpow-api type.
fn answers_are_the_api_types(n: &Node, seed: &str) {
    let health: tpow_api::Health = served_as(n, "/api/health", 200);
    assert_eq!(health.status, "ok");
    let chain: tpow_api::ChainInfo = served_as(n, "/api/chain", 200);
    assert_eq!(chain.name, health.chain);
    let info: tpow_api::Info = served_as(n, "/api/info", 200);
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    let tip: tpow_api::Tip = served_as(n, "/api/tip", 200);
    assert!(tip.height >= 3);
    let headers: tpow_api::Headers = served_as(n, "/api/headers?from=0&count=3&format=json", 200);
    assert_eq!(headers.headers[0].id, chain.genesis_id);
    let proof: tpow_api::MmrProofAnswer = served_as(n, "/api/mmr-proof?height=1&tip=3", 200);
    assert_eq!((proof.height, proof.tip), (1, 3));
    let fly: tpow_api::FlyAnswer = served_as(n, &format!("/api/flyclient?tip=3&last=1&seed={seed}&security=50"), 200);
    assert_eq!(fly.tip, 3);
    let _: tpow_api::FlyAnswer = served_as(n, "/api/flyclient?last=2&samples=5", 200);
    let _: tpow_api::Peers = served_as(n, "/api/peers", 200);
    let work: tpow_api::Work = served_as(n, &format!("/api/work?miner={}", "ab".repeat(32)), 200);
    assert_eq!(tpow_core::ModelSpec::from(work.model), tpow_core::ChainParams::devnet().model);
    let _: tpow_api::Miners = served_as(n, "/api/miners", 200);
    let e: tpow_api::ApiError = served_as(n, "/api/headers?from=abc", 400);
    assert!(!e.error.is_empty());
    let _: tpow_api::ApiError = served_as(n, "/api/nope", 404);
}
