//! The page's side of the miner: spawns the Web Workers, forwards their reports,
//! and terminates them on stop. The miner key lives in local storage.

use std::rc::Rc;

use gloo::storage::{LocalStorage, Storage};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{ErrorEvent, MessageEvent, Worker};

use crate::mining::{Backend, ToWorker, WorkerReport};
use crate::receipt::public_key;
use crate::web::net::{js_error, random_bytes};
use crate::web::worker::READY;

/// Local-storage key of the miner's secret key.
const SECRET_KEY: &str = "tpow.miner.secret";
/// Script Trunk writes for the worker binary (`data-loader-shim`; scripts/build-web.sh
/// makes it load the simd128 module where the browser supports it).
const WORKER_SCRIPT: &str = "./miner_worker_loader.js";

/// The worker script's URL: a page running the portable module (no SIMD in this
/// browser, or forced with `?kernel=portable`) starts its workers portable too.
fn worker_script() -> String {
    match tpow_light::wasm::kernel() {
        "portable" => format!("{WORKER_SCRIPT}?kernel=portable"),
        _ => WORKER_SCRIPT.to_string(),
    }
}

/// The miner's public key (what coinbases pay), hex. The ed25519 secret is made in
/// the browser on first use and kept in local storage, so the same tab (and later
/// visits) mine to the same key.
pub fn miner_key() -> Result<String, String> {
    let stored: Option<String> = LocalStorage::get(SECRET_KEY).ok();
    let secret: [u8; 32] = match stored.and_then(|s| hex::decode(s).ok()).and_then(|b| b.try_into().ok()) {
        Some(s) => s,
        None => {
            let s = random_bytes::<32>()?;
            LocalStorage::set(SECRET_KEY, hex::encode(s)).map_err(|e| format!("local storage: {e}"))?;
            s
        }
    };
    Ok(hex::encode(public_key(&secret)))
}

/// Running workers. Dropping this does not stop them; call [`MinerHost::stop`].
pub struct MinerHost {
    workers: Vec<Worker>,
    _handlers: Vec<Closure<dyn FnMut(MessageEvent)>>,
    _errors: Vec<Closure<dyn FnMut(ErrorEvent)>>,
}

impl MinerHost {
    /// Starts `count` workers mining at `node`.
    pub fn start(
        node: &str,
        key: &str,
        backend: Backend,
        count: u32,
        duty_percent: u8,
        on_report: Rc<dyn Fn(usize, WorkerReport)>,
    ) -> Result<MinerHost, String> {
        let mut host = MinerHost { workers: Vec::new(), _handlers: Vec::new(), _errors: Vec::new() };
        // One GPU is shared by all workers: a single worker drives it.
        let count = if backend == Backend::WebGpu { 1 } else { count.max(1) };
        for i in 0..count as usize {
            let worker = match Worker::new(&worker_script()) {
                Ok(w) => w,
                Err(e) => {
                    host.stop();
                    return Err(format!("cannot start a Web Worker: {}", js_error(&e)));
                }
            };
            let cb = on_report.clone();
            let msg = ToWorker::Start { node: node.to_string(), miner_key: key.to_string(), backend, duty_percent };
            let start = serde_wasm_bindgen::to_value(&msg).map_err(|e| e.to_string())?;
            let w2 = worker.clone();
            let handler = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
                let data = ev.data();
                if data.as_string().as_deref() == Some(READY) {
                    // The worker's wasm is loaded and listening: now it can be told to start.
                    if let Err(e) = w2.post_message(&start) {
                        cb(i, WorkerReport { error: Some(js_error(&e)), ..Default::default() });
                    }
                } else if let Ok(r) = serde_wasm_bindgen::from_value::<WorkerReport>(data) {
                    cb(i, r);
                }
            });
            worker.set_onmessage(Some(handler.as_ref().unchecked_ref()));
            let cb = on_report.clone();
            let on_error = Closure::<dyn FnMut(ErrorEvent)>::new(move |ev: ErrorEvent| {
                cb(
                    i,
                    WorkerReport {
                        error: Some(format!("the miner worker failed: {}", ev.message())),
                        ..Default::default()
                    },
                );
            });
            worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
            host._errors.push(on_error);
            host.workers.push(worker);
            host._handlers.push(handler);
        }
        Ok(host)
    }

    /// Terminates every worker at once (mid-search; nothing is left running).
    pub fn stop(&mut self) {
        for w in self.workers.drain(..) {
            w.terminate();
        }
    }
}

/// Logical cores the browser reports.
pub fn hardware_concurrency() -> u32 {
    web_sys::window().map_or(1, |w| w.navigator().hardware_concurrency() as u32).max(1)
}
