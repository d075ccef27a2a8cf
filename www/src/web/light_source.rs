//! tpow-light as the chain view's only source: its `LightClient`
//! syncs and verifies (FlyClient samples plus the newest headers, or every header
//! in `full` mode: [`SyncMode::choose`] picks by the network the node reports),
//! this module turns its state into [`ChainSnapshot`]s. Difficulty
//! and block-time charts read the node's JSON headers of the verified chain.

use std::rc::Rc;

use serde::Deserialize;
use tpow_core::target::CompactTarget;
use tpow_light::engine_race::RACE_ROUNDS;
use tpow_light::{Backend, GpuUse, LightClient, LightOptions, NodeState as LightNode};

use crate::api::Health;
use crate::chain::{ChainSnapshot, HeaderRow, NodeState, NodeView, SyncMode, TipView, Verification};
use crate::units::difficulty;
use crate::web::net::{get_json, sleep_ms};

/// Starts following `nodes` with tpow-light; `on_update` gets every new snapshot.
/// Runs for the life of the page.
pub fn start(nodes: Vec<String>, on_update: Rc<dyn Fn(ChainSnapshot)>) {
    wasm_bindgen_futures::spawn_local(run(nodes, on_update));
}

#[derive(Deserialize)]
struct JsonHeaders {
    headers: Vec<JsonHeader>,
}

#[derive(Deserialize)]
struct JsonHeader {
    height: u64,
    id: String,
    timestamp_ms: u64,
    bits: u32,
}

fn backend_label(b: Backend, adapter: &Option<String>) -> String {
    match b {
        Backend::WebGpu => match adapter.as_deref().map(str::trim).filter(|a| !a.is_empty()) {
            Some(a) if a.starts_with('(') => format!("WebGPU {a}"),
            Some(a) => format!("WebGPU ({a})"),
            None => "WebGPU".into(),
        },
        // The kernel of the page's module (the worker loads the same choice).
        Backend::CpuWorker => format!("CPU (wasm {}, Web Worker)", tpow_light::wasm::kernel()),
        Backend::CpuWasm | Backend::CpuNative => format!("CPU (wasm {})", tpow_light::wasm::kernel()),
    }
}

/// The value of `name` in the page's query string (`?gpu=0` verifies on the CPU
/// even where WebGPU exists: with `?kernel=portable` too, the tests cover both
/// wasm builds' verifier; `?gpu=1` keeps WebGPU whatever its speed; by default the
/// first headers race WebGPU against the CPU and the faster is kept;
/// `?sync=full|sampled` overrides the mode).
fn query_value(name: &str) -> Option<String> {
    let search = web_sys::window().and_then(|w| w.location().search().ok()).unwrap_or_default();
    search
        .trim_start_matches('?')
        .split('&')
        .find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
}

fn diff_of(bits: u32) -> f64 {
    CompactTarget(bits).to_target().map_or(f64::NAN, |t| difficulty(&t))
}

async fn run(urls: Vec<String>, emit: Rc<dyn Fn(ChainSnapshot)>) {
    let mut snap = ChainSnapshot {
        nodes: urls.iter().map(|u| NodeView { url: u.clone(), state: NodeState::Connecting }).collect(),
        engine: "starting".into(),
        ..ChainSnapshot::default()
    };
    if urls.is_empty() {
        snap.notice = Some("No node to talk to: open this page from a node, or add ?nodes=http://HOST:PORT".into());
        emit(snap);
        return;
    }
    emit(snap.clone());
    // The chain's name and height, from the first node that answers.
    let (chain, height) = 'found: loop {
        for u in &urls {
            if let Ok(h) = get_json::<Health>(&format!("{u}/api/health")).await {
                break 'found (h.chain, h.height);
            }
        }
        snap.notice = Some("No node is reachable; retrying every 2 s.".into());
        emit(snap.clone());
        sleep_ms(2_000).await;
    };
    snap.chain = chain.clone();
    // Mainnet: always sampled. Devnet: full while short (PROTOCOL.md §16, chain.rs).
    let mode = SyncMode::choose(&chain, height, query_value("sync").as_deref());
    let options = LightOptions {
        nodes: urls.clone(),
        chain,
        mode: mode.as_str().into(),
        persist: false,
        gpu: match query_value("gpu").as_deref() {
            Some("0") => GpuUse::Off,
            Some("1") => GpuUse::On,
            _ => GpuUse::Auto,
        },
        ..LightOptions::default()
    };
    // Shown once a sync has verified a chain to that level.
    let guarantee = mode.guarantee(options.last, options.security_bits);
    snap.security = format!("verifying ({} sync)…", mode.as_str());
    let client = loop {
        match LightClient::new(options.clone()).await {
            Ok(c) => break c,
            Err(e) => {
                snap.notice = Some(format!("The light client cannot start: {e}"));
                emit(snap.clone());
                sleep_ms(2_000).await;
            }
        }
    };
    loop {
        let result = client.sync(|_| {}).await;
        snap.notice = match (&result, client.gpu_error()) {
            (Err(e), _) => Some(e.to_string()),
            (Ok(_), Some(g)) => Some(format!("WebGPU is unavailable ({g}); verifying on the CPU (wasm) instead.")),
            (Ok(_), None) => None,
        };
        if result.is_ok() {
            snap.security = guarantee.clone();
        }
        fill(&client, &mut snap).await;
        emit(snap.clone());
        sleep_ms(1_000).await;
    }
}

async fn fill(client: &LightClient, snap: &mut ChainSnapshot) {
    let tip = client.tip();
    snap.engine = backend_label(client.backend(), &client.adapter());
    match client.engine_race() {
        Some(((gpu_ms, cpu_ms), Some(_))) => {
            let n = RACE_ROUNDS - 1;
            snap.engine
                .push_str(&format!(", the faster here (WebGPU {gpu_ms:.0} ms, CPU {cpu_ms:.0} ms on {n} headers)"));
        }
        Some((_, None)) => snap.engine.push_str(", racing WebGPU against the CPU"),
        None => {}
    }
    snap.verified_height = tip.height;
    snap.nodes = client
        .nodes()
        .into_iter()
        .map(|n| NodeView {
            state: match n.state {
                LightNode::Unknown => NodeState::Connecting,
                LightNode::Ok | LightNode::Behind => {
                    NodeState::Online { chain: snap.chain.clone(), height: n.claimed_height.unwrap_or(0), peers: None }
                }
                LightNode::Unreachable(e) => NodeState::Unreachable(e),
                LightNode::Invalid(e) => NodeState::Unreachable(format!("served invalid data: {e}")),
            },
            url: n.url,
        })
        .collect();
    snap.network_height = snap
        .nodes
        .iter()
        .filter_map(|n| match n.state {
            NodeState::Online { height, .. } => Some(height),
            _ => None,
        })
        .max()
        .unwrap_or(tip.height)
        .max(tip.height);
    // Headers of the verified chain for difficulty, times and the rows' details.
    let from = tip.height.saturating_sub(60);
    let mut by_height = std::collections::BTreeMap::new();
    for n in &snap.nodes {
        if let Ok(h) = get_json::<JsonHeaders>(&format!(
            "{}/api/headers?from={from}&count={}&format=json",
            n.url,
            tip.height - from + 1
        ))
        .await
        {
            if h.headers.last().is_some_and(|l| l.id == tip.id) {
                by_height = h.headers.into_iter().map(|h| (h.height, h)).collect();
                break;
            }
        }
    }
    let hs: Vec<&JsonHeader> = by_height.values().collect();
    snap.difficulty = hs.iter().skip(1).map(|h| diff_of(h.bits)).collect();
    snap.block_times =
        hs.windows(2).map(|w| w[1].timestamp_ms.saturating_sub(w[0].timestamp_ms) as f64 / 1000.0).collect();
    let tip_diff = by_height.get(&tip.height).map_or(f64::NAN, |h| diff_of(h.bits));
    snap.tip =
        Some(TipView { height: tip.height, id: tip.id.clone(), total_work: tip.total_work, difficulty: tip_diff });
    let mut rows: Vec<HeaderRow> = client
        .recent()
        .into_iter()
        .map(|r| {
            let h = by_height.get(&r.height).filter(|h| h.id == r.id);
            HeaderRow {
                height: r.height,
                timestamp_ms: h.map_or(0, |h| h.timestamp_ms),
                difficulty: h.map_or(f64::NAN, |h| diff_of(h.bits)),
                status: Verification::Verified { backend: backend_label(r.backend, &client.adapter()), ms: r.ms },
                id: r.id,
            }
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.height));
    rows.truncate(crate::chain::MAX_ROWS);
    snap.rows = rows;
}
