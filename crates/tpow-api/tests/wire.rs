//! The typed messages render exactly the bytes the node served when it built its
//! JSON with `serde_json::json!` (the old renderings are reproduced here from the
//! same values), and every message the node serves parses back to itself.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use tpow_api::*;
use tpow_core::chain::{genesis_header, mmr_leaf};
use tpow_core::mmr::Mmr;
use tpow_core::{ChainParams, Header, U256};

/// `value` serialises to exactly `old` and parses back to itself.
fn same_bytes<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T, old: serde_json::Value) {
    let new = serde_json::to_string(value).expect("serialises");
    assert_eq!(new, old.to_string(), "bytes differ from the node's old rendering");
    let back: T = serde_json::from_str(&new).expect("parses back");
    assert_eq!(&back, value);
}

fn chain() -> (ChainParams, Vec<Header>, Mmr) {
    let p = ChainParams::devnet();
    let g = genesis_header(&p);
    let mut mmr = Mmr::new();
    let target = g.bits.to_target().expect("genesis bits");
    mmr.push(mmr_leaf(g.id(), &target));
    let mut h = g;
    h.height = 1;
    h.prev_id = g.id();
    h.timestamp_ms += 2_000;
    h.mmr_root = mmr.root();
    h.miner_key = [7; 32];
    h.nonce = u64::MAX - 3;
    h.output_digest = [9; 32];
    mmr.push(mmr_leaf(h.id(), &target));
    (p, vec![g, h], mmr)
}

#[test]
fn tip_and_health() {
    let (_, hs, _) = chain();
    let (work, target) = (U256::from(198_613u64), U256::from(0x8aa45u64) << 200);
    let t = Tip::new(42, &hs[1].id(), &work, &target, 1_795_615_721_182);
    same_bytes(
        &t,
        json!({
            "height": 42u64,
            "id": hex::encode(hs[1].id()),
            "total_work": work.to_string(),
            "target": hex::encode(target.to_be_bytes::<32>()),
            "timestamp_ms": 1_795_615_721_182u64,
        }),
    );
    let h = Health { chain: "devnet".into(), height: 42, peers: 2, status: "ok".into() };
    same_bytes(&h, json!({ "status": "ok", "chain": "devnet", "height": 42, "peers": 2usize }));
}

#[test]
fn chain_info() {
    let (p, _, _) = chain();
    let g = genesis_header(&p);
    same_bytes(
        &ChainInfo::of(&p),
        json!({
            "name": p.name(),
            "genesis_id": hex::encode(g.id()),
            "genesis_header": hex::encode(g.encode()),
            "genesis_timestamp_ms": p.genesis_timestamp_ms,
            "genesis_bits": p.genesis_bits.0,
            "model": { "vocab": p.model.vocab, "seq_len": p.model.seq_len, "d_model": p.model.d_model,
                       "n_heads": p.model.n_heads, "n_layers": p.model.n_layers, "d_ffn": p.model.d_ffn },
            "asert": {
                "ideal_block_time_ms": p.asert.ideal_block_time_ms,
                "half_life_ms": p.asert.half_life_ms,
                "max_target": hex::encode(p.asert.max_target.to_be_bytes::<32>()),
            },
            "max_future_drift_ms": p.max_future_drift_ms,
        }),
    );
    assert_eq!(tpow_core::ModelSpec::from(ModelShape::from(p.model)), p.model);
}

#[test]
fn headers_proofs_and_flyclient() {
    let (_, hs, mmr) = chain();
    let h = &hs[1];
    same_bytes(
        &Headers { headers: vec![HeaderJson::from(h)] },
        json!({ "headers": [{
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
        }] }),
    );
    let proof = mmr.proof(0, 1).expect("proof");
    same_bytes(
        &MmrProofAnswer::new(&hs[0], 1, h, &proof),
        json!({
            "height": 0u64,
            "tip": 1u64,
            "leaf_count": proof.leaf_count,
            "header": hex::encode(hs[0].encode()),
            "tip_header": hex::encode(h.encode()),
            "mmr_root": hex::encode(h.mmr_root),
            "proof": hex::encode(proof.encode()),
        }),
    );
    let (w0, w1) = (U256::from(5u8), U256::from(10u8));
    let fly = FlyAnswer::new((h, &w1), 7, &hs[1..], [FlySample::new(&hs[0], &w0, &proof)]);
    same_bytes(
        &fly,
        json!({
            "tip": 1u64,
            "draws": 7u64,
            "tip_id": hex::encode(h.id()),
            "total_work": w1.to_string(),
            "mmr_root": hex::encode(h.mmr_root),
            "last": [hex::encode(h.encode())],
            "sampled": [{
                "height": 0u64,
                "header": hex::encode(hs[0].encode()),
                "total_work": w0.to_string(),
                "proof": hex::encode(proof.encode()),
            }],
        }),
    );
}

#[test]
fn mining_messages() {
    let (p, hs, _) = chain();
    let spec = p.model;
    let w = Work {
        header: hex::encode(hs[1].encode()),
        height: 1,
        model: spec.into(),
        prev_id: hex::encode(hs[1].prev_id),
        share_target: "02".into(),
        target: "01".into(),
        template: hex::encode(hs[1].template()),
    };
    same_bytes(
        &w,
        json!({
            "height": 1u64,
            "prev_id": hex::encode(hs[1].prev_id),
            "header": hex::encode(hs[1].encode()),
            "template": hex::encode(hs[1].template()),
            "target": "01",
            "share_target": "02",
            "model": { "vocab": spec.vocab, "seq_len": spec.seq_len, "d_model": spec.d_model,
                       "n_heads": spec.n_heads, "n_layers": spec.n_layers, "d_ffn": spec.d_ffn },
        }),
    );
    same_bytes(
        &ShareAnswer { accepted: true, block: false, blocks: 0, shares: 12 },
        json!({ "accepted": true, "block": false, "shares": 12u64, "blocks": 0u64 }),
    );
    same_bytes(&ShareSubmission { header: "ab".into() }, json!({ "header": "ab" }));
    let row = MinerRow { blocks: 1, last_share_ms: 5, miner: "aa".into(), shares: 3 };
    same_bytes(
        &Miners { miners: vec![row.clone()], node: Some(NodeMinerStats { attempts: 9, blocks: 2 }) },
        json!({ "miners": [row], "node": json!({ "attempts": 9u64, "blocks": 2u64 }) }),
    );
    same_bytes(&Miners { miners: vec![], node: None }, json!({ "miners": [], "node": null }));
    same_bytes(&ApiError::new("stale share"), json!({ "error": "stale share" }));
}

#[test]
fn info_and_peers() {
    let sampling = Sampling::from_f32(0.2, 0.9);
    // The node wrote f32 settings through their decimal text, so 0.2 stayed 0.2.
    let num = |x: f32| x.to_string().parse::<f64>().map(serde_json::Value::from).unwrap_or_default();
    let engine = EngineInfo {
        active: 1,
        cancelled_generations: 2,
        cancelled_tokens: 3,
        kv_cache_allocated_bytes: 4,
        kv_cache_budget_bytes: 5,
        kv_cache_bytes_per_token: 6,
        kv_cache_reserved_bytes: 7,
        max_batch: 8,
        queued: 9,
    };
    let chat = ChatInfo {
        backend: "local".into(),
        demand: Some(0),
        engine: Some(engine),
        models: vec!["SmolLM2-135M-Instruct".into()],
        sampling: Some(sampling),
        unavailable: None,
    };
    let info = Info {
        chain: "devnet".into(),
        chat: Some(chat),
        models: vec!["SmolLM2-135M-Instruct".into()],
        node_key: "ab".repeat(32),
        peer_id: "12D3KooW".into(),
        version: "0.1.0".into(),
    };
    same_bytes(
        &info,
        json!({
            "version": "0.1.0",
            "chain": "devnet",
            "peer_id": "12D3KooW",
            "node_key": "ab".repeat(32),
            "models": ["SmolLM2-135M-Instruct"],
            "chat": json!({
                "backend": "local",
                "models": ["SmolLM2-135M-Instruct"],
                "demand": Some(0usize),
                "sampling": json!({ "temperature": num(0.2), "top_p": num(0.9) }),
                "engine": json!({
                    "active": 1usize, "queued": 9usize, "max_batch": 8usize,
                    "kv_cache_budget_bytes": 5usize, "kv_cache_reserved_bytes": 7usize,
                    "kv_cache_allocated_bytes": 4usize, "kv_cache_bytes_per_token": 6usize,
                    "cancelled_generations": 2u64, "cancelled_tokens": 3u64,
                }),
                "unavailable": null,
            }),
        }),
    );
    let off = Info {
        chat: Some(ChatInfo {
            backend: "none".into(),
            demand: None,
            engine: None,
            models: vec![],
            sampling: None,
            unavailable: Some("--no-chat".into()),
        }),
        ..Info::default()
    };
    assert_eq!((off.demand(), off.unavailable(), off.sampling()), (0, Some("--no-chat"), None));
    let peer = Peer {
        address: "/ip4/127.0.0.1/tcp/9646".into(),
        agent: Some("tpow-node/0.1.0 http=8646".into()),
        blocks_received: 3,
        http_port: Some(8646),
        models: vec![],
        outbound: true,
        peer_id: "p".into(),
    };
    same_bytes(
        &Peers { peers: vec![peer] },
        json!({ "peers": [{ "peer_id": "p", "address": "/ip4/127.0.0.1/tcp/9646", "outbound": true,
            "agent": "tpow-node/0.1.0 http=8646", "models": [], "http_port": 8646, "blocks_received": 3 }] }),
    );
}

#[test]
fn chat_objects() {
    let usage = Usage::new(36, 8);
    let usage_json = json!({ "prompt_tokens": 36, "completion_tokens": 8, "total_tokens": 44 });
    let receipt = Receipt {
        node_key: "k".into(),
        peer_id: "p".into(),
        request_hash: "q".into(),
        response_hash: "r".into(),
        signature: "s".into(),
    };
    let mut c = ChatCompletion::answer("chatcmpl-1", 9, "m", "Paris.", "stop", Some(usage));
    c.tpow = Some(receipt.clone());
    let mut old = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 9u64, "model": "m", "system_fingerprint": null,
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": "Paris." }, "logprobs": null,
                      "finish_reason": "stop" }],
        "usage": usage_json,
    });
    old["tpow"] = serde_json::to_value(&receipt).expect("receipt");
    same_bytes(&c, old);

    let chunk = |delta: serde_json::Value, finish: Option<&str>| {
        json!({ "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 9u64, "model": "m",
                "system_fingerprint": null,
                "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }] })
    };
    let first = Delta { content: Some(String::new()), role: Some("assistant".into()) };
    same_bytes(
        &ChatChunk::delta("chatcmpl-1", 9, "m", first, None, false),
        chunk(json!({ "role": "assistant", "content": "" }), None),
    );
    let mut with_null = chunk(json!({ "content": "Pa" }), None);
    with_null["usage"] = serde_json::Value::Null;
    let text = Delta { content: Some("Pa".into()), role: None };
    same_bytes(&ChatChunk::delta("chatcmpl-1", 9, "m", text, None, true), with_null);
    let mut last = ChatChunk::delta("chatcmpl-1", 9, "m", Delta::default(), Some("length"), false);
    last.tpow = Some(receipt.clone());
    let mut old_last = chunk(json!({}), Some("length"));
    old_last["tpow"] = serde_json::to_value(&receipt).expect("receipt");
    same_bytes(&last, old_last);
    same_bytes(
        &ChatChunk::usage("chatcmpl-1", 9, "m", Some(usage)),
        json!({ "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 9u64, "model": "m",
                "system_fingerprint": null, "choices": [], "usage": usage_json }),
    );

    let err = OpenAiError {
        error: OpenAiErrorBody {
            code: Some("queue_full".into()),
            message: "full".into(),
            param: None,
            kind: "rate_limit_error".into(),
        },
    };
    same_bytes(
        &err,
        json!({ "error": { "message": "full", "type": "rate_limit_error", "param": null, "code": "queue_full" } }),
    );

    let models = Models::list(vec![
        ModelEntry::own("SmolLM2-135M-Instruct", Some(Sampling::from_f32(0.2, 0.9))),
        ModelEntry::own("other", None),
    ]);
    // Also through a `Value`, as the node's model list travels.
    let via_value = serde_json::to_value(&models).expect("value").to_string();
    assert_eq!(via_value, serde_json::to_string(&models).expect("string"));
    same_bytes(
        &models,
        json!({ "object": "list", "data": [
            { "id": "SmolLM2-135M-Instruct", "object": "model", "created": 0, "owned_by": "tpow",
              "recommended_sampling": { "temperature": 0.2, "top_p": 0.9 } },
            { "id": "other", "object": "model", "created": 0, "owned_by": "tpow" },
        ] }),
    );
}

#[test]
fn requests_read_what_openai_clients_send() {
    let r: ChatRequest = serde_json::from_str(
        r#"{"model":"m","messages":[{"role":"system","content":"Be brief."},
            {"role":"user","content":[{"type":"text","text":"Hi "},{"type":"text","text":"there"}]},
            {"role":"assistant","content":null},{"role":"user"}],
            "max_tokens":7,"temperature":0.5,"top_p":0.9,"seed":-1,"stop":"\n",
            "stream":true,"stream_options":{"include_usage":true},"user":"ignored"}"#,
    )
    .expect("valid");
    let messages = r.messages.as_deref().unwrap_or_default();
    let texts: Vec<String> = messages.iter().map(ChatMessage::content_text).collect();
    assert_eq!(texts, ["Be brief.", "Hi there", "", ""]);
    assert_eq!((r.max_tokens, r.seed, r.stop), (Some(7), Some(-1), Some(Stop::One("\n".into()))));
    assert_eq!(r.stream_options.and_then(|o| o.include_usage), Some(true));
    // What a client writes: only the fields it sets.
    let sent = ChatRequest {
        model: Some("m".into()),
        messages: Some(vec![ChatMessage::text("user", "hi")]),
        stream: Some(true),
        max_tokens: Some(5),
        ..ChatRequest::default()
    };
    assert_eq!(
        serde_json::to_string(&sent).expect("serialises"),
        r#"{"max_tokens":5,"messages":[{"content":"hi","role":"user"}],"model":"m","stream":true}"#
    );
}
