//! Where the chain view's data comes from.
//!
//! [`ChainSource`] is the seam between the dashboard and a light client: the view
//! only renders [`ChainSnapshot`]s. [`LocalVerifier`] is this app's own source: it
//! polls every node, downloads the best node's headers, runs tpow-core's checks and
//! re-runs each winning forward pass with WebGPU (tpow-gpu) or the CPU (wasm).

use std::rc::Rc;

use futures::future::join_all;
use tpow_core::chain::{ModelCache, PowInput};
use tpow_core::header::HEADER_LEN;
use tpow_core::{Header, HeaderError};
use tpow_gpu::{GpuContext, GpuOptions, GpuVerifier};
use wasm_bindgen::JsValue;

use crate::api::Health;
use crate::chain::{ChainSnapshot, LocalChain, NodeState, NodeView};
use crate::web::net::{get_bytes, get_json, now_ms, perf_now, sleep_ms};

/// Headers downloaded per request.
const BATCH: u64 = 250;
/// Headers this far below the network tip are verified on the CPU even when WebGPU
/// exists: on a software WebGPU adapter the upload per block costs more than the
/// tiny devnet pass, and the newest headers are the ones a person watches.
const GPU_WINDOW: u64 = 24;

/// Something that follows the chain and reports what the view should show.
pub trait ChainSource {
    /// Starts following `nodes`; `on_update` gets every new snapshot. Runs for the
    /// life of the page.
    fn start(self: Box<Self>, nodes: Vec<String>, on_update: Rc<dyn Fn(ChainSnapshot)>);
}

/// This app's own verifying client (see the module docs).
pub struct LocalVerifier {
    /// Try WebGPU first.
    pub prefer_gpu: bool,
}

impl ChainSource for LocalVerifier {
    fn start(self: Box<Self>, nodes: Vec<String>, on_update: Rc<dyn Fn(ChainSnapshot)>) {
        wasm_bindgen_futures::spawn_local(run(nodes, self.prefer_gpu, on_update));
    }
}

/// The forward-pass engines.
enum Engine {
    Gpu { verifier: Box<GpuVerifier>, label: String },
    Cpu,
}

/// Whether the browser exposes WebGPU at all (`navigator.gpu`).
pub fn has_webgpu() -> bool {
    let nav = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("navigator")).unwrap_or(JsValue::UNDEFINED);
    !nav.is_undefined()
        && js_sys::Reflect::get(&nav, &JsValue::from_str("gpu")).map(|g| !g.is_undefined()).unwrap_or(false)
}

async fn open_gpu() -> Result<(GpuVerifier, String), String> {
    if !has_webgpu() {
        return Err("this browser has no WebGPU".into());
    }
    let ctx = GpuContext::new(&GpuOptions::default()).await.map_err(|e| e.to_string())?;
    let a = ctx.adapter();
    let label =
        format!("WebGPU ({})", if a.name.is_empty() { format!("{} adapter", a.device_type) } else { a.name.clone() });
    Ok((GpuVerifier::new(&ctx), label))
}

const CPU_LABEL: &str = "CPU (wasm)";

async fn run(urls: Vec<String>, prefer_gpu: bool, emit: Rc<dyn Fn(ChainSnapshot)>) {
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
    let mut engine = Engine::Cpu;
    snap.engine = CPU_LABEL.into();
    let mut gpu_note = None;
    if prefer_gpu {
        match open_gpu().await {
            Ok((verifier, label)) => {
                snap.engine = label.clone();
                engine = Engine::Gpu { verifier: Box::new(verifier), label };
            }
            Err(e) => gpu_note = Some(format!("WebGPU is unavailable ({e}); verifying on the CPU (wasm) instead.")),
        }
    }
    let mut cache = ModelCache::new();
    let mut local: Option<LocalChain> = None;
    let mut rewind: u64 = 0;
    loop {
        // 1. Ask every node for its state.
        let answers = join_all(urls.iter().map(|u| {
            let url = format!("{u}/api/health");
            async move { get_json::<Health>(&url).await }
        }))
        .await;
        for (view, answer) in snap.nodes.iter_mut().zip(answers) {
            view.state = match answer {
                Ok(h) if h.status == "ok" => {
                    NodeState::Online { chain: h.chain, height: h.height, peers: Some(h.peers) }
                }
                Ok(h) => NodeState::Unreachable(format!("status {}", h.status)),
                Err(e) => NodeState::Unreachable(e),
            };
        }
        let best = snap
            .nodes
            .iter()
            .filter_map(|n| match &n.state {
                NodeState::Online { chain, height, .. } => Some((n.url.clone(), chain.clone(), *height)),
                _ => None,
            })
            .max_by_key(|(_, _, h)| *h);
        let Some((best_url, chain_name, best_height)) = best else {
            snap.notice = Some("No node is reachable; retrying every 2 s.".into());
            emit(snap.clone());
            sleep_ms(2_000).await;
            continue;
        };
        snap.notice = gpu_note.clone();
        snap.network_height = best_height;
        snap.chain = chain_name.clone();

        // 2. Start from the node's genesis once.
        if local.is_none() {
            match get_bytes(&format!("{best_url}/api/headers?from=0&count=1")).await {
                Ok(b) => match LocalChain::from_genesis(&chain_name, &b) {
                    Ok(lc) => local = Some(lc),
                    Err(e) => snap.notice = Some(format!("{best_url}: {e}")),
                },
                Err(e) => snap.notice = Some(e),
            }
        }
        let Some(lc) = local.as_mut() else {
            emit(snap.clone());
            sleep_ms(2_000).await;
            continue;
        };

        // 3. Download what is missing and verify it.
        let mut behind = false;
        if lc.height() < best_height {
            let from = (lc.height() + 1).saturating_sub(rewind).max(1);
            let count = (best_height + 1 - from).min(BATCH);
            behind = from + count <= best_height;
            match get_bytes(&format!("{best_url}/api/headers?from={from}&count={count}")).await {
                Ok(bytes) => {
                    let (r, extend) =
                        verify_batch(lc, &bytes, best_height, &mut engine, &mut cache, &mut snap, &emit).await;
                    rewind = r;
                    if let Some(n) = extend {
                        gpu_note = Some(n);
                    }
                }
                Err(e) => snap.notice = Some(format!("downloading headers: {e}")),
            }
        }
        fill(&mut snap, lc);
        emit(snap.clone());
        if !behind {
            sleep_ms(1_000).await;
        }
    }
}

fn fill(snap: &mut ChainSnapshot, lc: &LocalChain) {
    snap.tip = Some(lc.tip());
    snap.rows = lc.rows();
    let (d, t) = lc.series(60);
    snap.difficulty = d;
    snap.block_times = t;
    snap.verified_height = lc.height();
}

/// Verifies a downloaded batch. Returns how far to step back next time (a header
/// whose parent is unknown means the node reorganised below our tip) and, if the
/// GPU failed, the note to show from now on.
async fn verify_batch(
    lc: &mut LocalChain,
    bytes: &[u8],
    network_height: u64,
    engine: &mut Engine,
    cache: &mut ModelCache,
    snap: &mut ChainSnapshot,
    emit: &Rc<dyn Fn(ChainSnapshot)>,
) -> (u64, Option<String>) {
    let mut note = None;
    // Cheap checks first for the whole batch, so the list shows them as pending.
    let now = now_ms();
    let mut headers = Vec::new();
    for chunk in bytes.chunks(HEADER_LEN) {
        match Header::decode(chunk) {
            Ok(h) => headers.push(h),
            Err(e) => {
                snap.notice = Some(format!("a node sent an undecodable header: {e}"));
                break;
            }
        }
    }
    // Each header is prechecked once its parent is in, so until then the downloaded
    // ones are listed as pending by height.
    let pending: Vec<Header> = headers.into_iter().filter(|h| !lc.knows(&h.id())).collect();
    for h in &pending {
        lc.note_downloaded(h);
    }
    fill(snap, lc);
    emit(snap.clone());
    for h in pending {
        let p = match lc.precheck(&h, now.max(now_ms())) {
            Ok(p) => p,
            Err(HeaderError::AlreadyKnown) => continue,
            Err(HeaderError::UnknownParent) => return (32, note),
            Err(e) => {
                lc.mark_failed(&h, e.to_string());
                break;
            }
        };
        let input = p.pow_input();
        let use_gpu = h.height + GPU_WINDOW >= network_height;
        let t0 = perf_now();
        let (digest, label) = match digest(engine, cache, &input, use_gpu).await {
            Ok(d) => d,
            Err(e) => {
                note = Some(format!("WebGPU failed ({e}); verifying on the CPU (wasm) instead."));
                *engine = Engine::Cpu;
                snap.engine = CPU_LABEL.into();
                match cache.output_digest(&input) {
                    Ok(d) => (d, CPU_LABEL.to_string()),
                    Err(e) => {
                        lc.mark_failed(&h, e.to_string());
                        break;
                    }
                }
            }
        };
        let ms = perf_now() - t0;
        if lc.complete(p, &digest, &label, ms).is_err() {
            break;
        }
        fill(snap, lc);
        emit(snap.clone());
        // Let the page paint between headers.
        sleep_ms(0).await;
    }
    (0, note)
}

async fn digest(
    engine: &mut Engine,
    cache: &mut ModelCache,
    input: &PowInput,
    use_gpu: bool,
) -> Result<([u8; 32], String), String> {
    match engine {
        Engine::Gpu { verifier, label } if use_gpu => {
            let model = cache.model(&input.spec, &input.prev_id).map_err(|e| e.to_string())?;
            verifier.set_model_async(model).await.map_err(|e| e.to_string())?;
            let d = verifier.output_digest_async(input).await.map_err(|e| e.to_string())?;
            Ok((d, label.clone()))
        }
        _ => cache.output_digest(input).map(|d| (d, CPU_LABEL.to_string())).map_err(|e| e.to_string()),
    }
}
