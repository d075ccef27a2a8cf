//! The miner inside a Web Worker: fetches work from the node, searches nonces with
//! WebGPU (tpow-gpu) or the CPU (tpow-core in wasm), posts shares, rests between
//! slices as the intensity setting asks, and reports its counters to the page.
//! The page stops it by terminating the worker.

use std::cell::RefCell;
use std::rc::Rc;

use tpow_core::puzzle::Attempt;
use tpow_core::Model;
use tpow_gpu::{GpuContext, GpuMiner, GpuOptions};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

use crate::api::{error_text, Share, ShareAnswer, Work};
use crate::mining::{assemble_header, cpu_search, rest_ms, Backend, Job, RateMeter, ToWorker, WorkerReport};
use crate::web::net::has_webgpu;
use crate::web::net::{get_json, perf_now, post_json, random_bytes, sleep_ms};

/// Work is re-fetched this often (a new tip makes the old work stale).
const WORK_REFRESH_MS: f64 = 1_500.0;
/// Target length of one compute slice before the worker rests and reports.
const SLICE_MS: f64 = 100.0;
/// Nonces per GPU dispatch.
const GPU_BATCH: u32 = 256;

/// First message of a worker whose handler is installed.
pub const READY: &str = "ready";

/// Entry point of the worker binary: waits for the `Start` message.
pub fn start_worker() {
    let scope: DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let started = Rc::new(RefCell::new(false));
    let scope2 = scope.clone();
    let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
        let msg: Result<ToWorker, _> = serde_wasm_bindgen::from_value(ev.data());
        match msg {
            Ok(ToWorker::Start { node, miner_key, backend, duty_percent }) if !*started.borrow() => {
                *started.borrow_mut() = true;
                let scope = scope2.clone();
                wasm_bindgen_futures::spawn_local(mine(scope, node, miner_key, backend, duty_percent));
            }
            Ok(_) => {}
            Err(e) => post(&scope2, &WorkerReport { error: Some(format!("bad message: {e}")), ..Default::default() }),
        }
    });
    scope.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
    // The worker lives as long as its handler: leak it on purpose.
    onmessage.forget();
    // Messages posted before the handler existed are lost, so the page waits for this.
    let _ = scope.post_message(&JsValue::from_str(READY));
}

fn post(scope: &DedicatedWorkerGlobalScope, report: &WorkerReport) {
    if let Ok(v) = serde_wasm_bindgen::to_value(report) {
        let _ = scope.post_message(&v);
    }
}

/// The CPU engine's label, with the kernel of the module this worker loaded
/// (`miner_worker_loader.js` picks the simd128 build where the browser has SIMD).
fn cpu_label() -> String {
    format!("CPU (wasm {})", tpow_light::wasm::kernel())
}

enum Engine {
    Gpu(Box<GpuMiner>),
    Cpu,
}

async fn open_gpu() -> Result<(GpuMiner, String), String> {
    if !has_webgpu() {
        return Err("this browser has no WebGPU in workers".into());
    }
    let ctx = GpuContext::new(&GpuOptions::default()).await.map_err(|e| e.to_string())?;
    let a = ctx.adapter();
    let name = if a.name.is_empty() { format!("{} adapter", a.device_type) } else { a.name.clone() };
    Ok((GpuMiner::new(&ctx, GPU_BATCH), format!("WebGPU ({name})")))
}

async fn mine(scope: DedicatedWorkerGlobalScope, node: String, key: String, backend: Backend, duty: u8) {
    let mut report = WorkerReport { engine: cpu_label(), ..Default::default() };
    let mut engine = Engine::Cpu;
    if backend == Backend::WebGpu {
        match open_gpu().await {
            Ok((m, label)) => {
                report.engine = label;
                engine = Engine::Gpu(Box::new(m));
            }
            Err(e) => report.fallback = Some(format!("WebGPU is unavailable ({e}); mining on the CPU instead.")),
        }
    }
    post(&scope, &report);
    let mut meter = RateMeter::default();
    let mut model: Option<Model> = None;
    let mut nonce = u64::from_le_bytes(random_bytes::<8>().unwrap_or([7; 8]));
    let mut last_report = 0.0;
    loop {
        // Fetch (fresh) work.
        let work: Work = match get_json(&format!("{node}/api/work?miner={key}")).await {
            Ok(w) => w,
            Err(e) => {
                report.error = Some(format!("cannot get work: {e}"));
                post(&scope, &report);
                sleep_ms(2_000).await;
                continue;
            }
        };
        let job = match Job::from_work(&work) {
            Ok(j) => j,
            Err(e) => {
                report.error = Some(e.to_string());
                post(&scope, &report);
                sleep_ms(2_000).await;
                continue;
            }
        };
        report.height = job.height;
        if model.as_ref().is_none_or(|m| m.prev_id != job.prev_id || m.spec != job.spec) {
            match Model::derive(&job.spec, &job.prev_id) {
                Ok(m) => model = Some(m),
                Err(e) => {
                    report.error = Some(e.to_string());
                    post(&scope, &report);
                    sleep_ms(2_000).await;
                    continue;
                }
            }
            if let (Engine::Gpu(g), Some(m)) = (&mut engine, &model) {
                if let Err(e) = g.set_model_async(m).await {
                    report.fallback = Some(format!("WebGPU failed ({e}); mining on the CPU instead."));
                    report.engine = cpu_label();
                    engine = Engine::Cpu;
                }
            }
        }
        let Some(m) = model.as_ref() else { continue };
        let fetched = perf_now();
        let mut batch: u64 = 16;
        // Search on this work until it may be stale.
        'work: while perf_now() - fetched < WORK_REFRESH_MS {
            let t0 = perf_now();
            let found: Vec<Attempt> = match &mut engine {
                Engine::Cpu => {
                    let f = cpu_search(m, &job, nonce, batch);
                    report.attempts += batch;
                    nonce = nonce.wrapping_add(batch);
                    f
                }
                Engine::Gpu(g) => {
                    let before = g.stats().attempts;
                    let count = batch.min(u64::from(g.batch_size()) * 4);
                    match g.mine_batch_async(&job.template, nonce, count, &job.share_target).await {
                        Ok(found) => {
                            report.attempts += g.stats().attempts - before;
                            nonce = match &found {
                                Some(a) => a.nonce.wrapping_add(1),
                                None => nonce.wrapping_add(count),
                            };
                            found.into_iter().collect()
                        }
                        Err(e) => {
                            report.fallback = Some(format!("WebGPU failed ({e}); mining on the CPU instead."));
                            report.engine = cpu_label();
                            engine = Engine::Cpu;
                            Vec::new()
                        }
                    }
                }
            };
            let busy = perf_now() - t0;
            // Aim each slice at SLICE_MS (a software WebGPU adapter can be slower than
            // the CPU), so work never goes stale mid-slice and the rest below keeps
            // the duty cycle.
            batch = if busy < SLICE_MS / 2.0 {
                (batch * 2).min(1 << 16)
            } else if busy > SLICE_MS * 2.0 {
                (batch / 2).max(1)
            } else {
                batch
            };
            for a in found {
                let header = assemble_header(&job.template, &a);
                let body = serde_json::to_string(&Share { header: hex::encode(header) }).unwrap_or_default();
                report.shares_sent += 1;
                match post_json(&format!("{node}/api/work"), &body).await {
                    Ok((200, text)) => match serde_json::from_str::<ShareAnswer>(&text) {
                        Ok(ans) if ans.accepted => {
                            report.shares_accepted += 1;
                            report.blocks += u64::from(ans.block);
                            report.error = None;
                            if ans.block {
                                // The tip moved: fetch work on top of our block.
                                break 'work;
                            }
                        }
                        Ok(_) => report.error = Some("the node did not accept a share".into()),
                        Err(e) => report.error = Some(format!("unexpected share answer: {e}")),
                    },
                    Ok((409, _)) => {
                        // Stale work or duplicate: fetch new work.
                        report.error = None;
                        break 'work;
                    }
                    Ok((status, text)) => report.error = Some(format!("share refused: {}", error_text(status, &text))),
                    Err(e) => report.error = Some(format!("cannot send share: {e}")),
                }
            }
            let now = perf_now();
            report.hashrate = meter.sample(now, report.attempts, 5_000.0);
            if now - last_report > 500.0 {
                last_report = now;
                post(&scope, &report);
            }
            let rest = rest_ms(busy, duty);
            sleep_ms(rest.clamp(0.0, 5_000.0) as u32).await;
        }
    }
}
