//! The browser [`Platform`]: fetch for the node API, and forward passes on WebGPU
//! (tpow-gpu), in a Web Worker (tpow-core in wasm), or on this thread.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use futures_channel::oneshot;
use js_sys::{Object, Reflect, Uint8Array};
use tpow_core::chain::PowInput;
use tpow_core::ModelCache;
use tpow_gpu::{GpuContext, GpuOptions, GpuVerifier};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use super::js::{has_webgpu, http_get, js_err, monotonic_ms, random_bytes, sleep_ms};
use crate::client::{Backend, Platform};
use crate::engine_race::{EngineRace, RaceOutcome};
use crate::error::{EngineError, FetchError};

type Reply = oneshot::Sender<Result<[u8; 32], String>>;

/// A module Web Worker running `cpuDigest` from this package (`pkg/tpow_light_worker.js`).
struct PassWorker {
    worker: web_sys::Worker,
    pending: Rc<RefCell<HashMap<u32, Reply>>>,
    next: Cell<u32>,
    _onmessage: Closure<dyn FnMut(web_sys::MessageEvent)>,
}

impl PassWorker {
    fn start(url: &str) -> Result<Self, String> {
        let opts = web_sys::WorkerOptions::new();
        opts.set_type(web_sys::WorkerType::Module);
        let worker = web_sys::Worker::new_with_options(url, &opts).map_err(js_err)?;
        let pending: Rc<RefCell<HashMap<u32, Reply>>> = Rc::default();
        let onmessage = {
            let pending = Rc::clone(&pending);
            Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
                let data = e.data();
                let id = Reflect::get(&data, &"id".into()).ok().and_then(|v| v.as_f64()).unwrap_or(-1.0) as u32;
                let Some(reply) = pending.borrow_mut().remove(&id) else { return };
                let digest = Reflect::get(&data, &"digest".into()).ok().and_then(|d| d.dyn_into::<Uint8Array>().ok());
                let result = match digest {
                    Some(d) if d.length() == 32 => {
                        let mut out = [0u8; 32];
                        d.copy_to(&mut out);
                        Ok(out)
                    }
                    _ => Err(Reflect::get(&data, &"error".into())
                        .ok()
                        .and_then(|v| v.as_string())
                        .unwrap_or_else(|| "worker answered without a digest".into())),
                };
                let _ = reply.send(result);
            })
        };
        worker.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
        Ok(PassWorker { worker, pending, next: Cell::new(0), _onmessage: onmessage })
    }

    async fn digest(&self, input: &PowInput) -> Result<[u8; 32], EngineError> {
        let failed = |v: JsValue| EngineError::Failed(js_err(v));
        let id = self.next.get();
        self.next.set(id.wrapping_add(1));
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, tx);
        let msg = Object::new();
        Reflect::set(&msg, &"id".into(), &JsValue::from(id)).map_err(failed)?;
        Reflect::set(&msg, &"input".into(), &Uint8Array::from(&crate::pass::encode(input)[..])).map_err(failed)?;
        self.worker.post_message(&msg).map_err(failed)?;
        rx.await.map_err(|_| EngineError::Failed("worker went away".into()))?.map_err(EngineError::Failed)
    }
}

impl Drop for PassWorker {
    fn drop(&mut self) {
        self.worker.terminate();
    }
}

/// When forward passes may run on WebGPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GpuUse {
    /// Never (the CPU only).
    Off,
    /// Race WebGPU against the CPU on the first headers and keep the faster
    /// ([`EngineRace`]): a software adapter loses to the simd128 kernel.
    #[default]
    Auto,
    /// Always first, whatever its speed (tests and benchmarks of the GPU path).
    On,
}

/// Which engines to try, in order: WebGPU, the worker, this thread; with
/// [`GpuUse::Auto`], WebGPU only if it won the race.
pub struct WebPlatform {
    gpu: RefCell<Option<GpuVerifier>>,
    adapter: Option<String>,
    worker: Option<PassWorker>,
    cache: RefCell<ModelCache>,
    /// Why the GPU was given up, if it was.
    gpu_error: RefCell<Option<String>>,
    /// WebGPU against the CPU, with [`GpuUse::Auto`] and both engines present.
    race: RefCell<Option<EngineRace>>,
}

impl WebPlatform {
    /// Opens WebGPU unless `gpu` is off and the browser offers an adapter, and the
    /// worker when `worker_url` is given; either failing only narrows the choice.
    pub async fn new(gpu: GpuUse, worker_url: Option<&str>) -> Self {
        let mut gpu_error = None;
        let mut adapter = None;
        let verifier = if gpu != GpuUse::Off && has_webgpu() {
            match GpuContext::new(&GpuOptions::default()).await {
                Ok(ctx) => {
                    let a = ctx.adapter();
                    adapter = Some(format!("{} ({}, {})", a.name, a.backend, a.device_type));
                    Some(GpuVerifier::new(&ctx))
                }
                Err(e) => {
                    gpu_error = Some(e.to_string());
                    None
                }
            }
        } else {
            None
        };
        let worker = worker_url.and_then(|u| PassWorker::start(u).ok());
        let cpu = if worker.is_some() { Backend::CpuWorker } else { Backend::CpuWasm };
        let race = (gpu == GpuUse::Auto && verifier.is_some()).then(|| EngineRace::new(cpu));
        WebPlatform {
            gpu: RefCell::new(verifier),
            adapter,
            worker,
            cache: RefCell::new(ModelCache::new()),
            gpu_error: RefCell::new(gpu_error),
            race: RefCell::new(race),
        }
    }

    /// The engine passes go to first (WebGPU while it is being raced).
    pub fn preferred(&self) -> Backend {
        let chosen = self.race.borrow().as_ref().and_then(EngineRace::chosen);
        if chosen.is_some_and(|b| b != Backend::WebGpu) {
            return if self.worker.is_some() { Backend::CpuWorker } else { Backend::CpuWasm };
        }
        if self.gpu.borrow().is_some() {
            Backend::WebGpu
        } else if self.worker.is_some() {
            Backend::CpuWorker
        } else {
            Backend::CpuWasm
        }
    }

    /// The WebGPU adapter in use.
    pub fn adapter(&self) -> Option<String> {
        self.adapter.clone()
    }

    /// Why WebGPU is not used, if it was tried.
    pub fn gpu_error(&self) -> Option<String> {
        self.gpu_error.borrow().clone()
    }

    /// The engine race, if one runs: (WebGPU ms, CPU ms) over the timed rounds and
    /// the engine kept once it is over.
    pub fn race(&self) -> Option<((f64, f64), Option<Backend>)> {
        self.race.borrow().as_ref().map(|r| (r.timings(), r.chosen()))
    }

    /// The pass on the CPU: the worker, else this thread.
    async fn cpu_pass(&self, input: &PowInput) -> Result<([u8; 32], Backend), EngineError> {
        if let Some(w) = &self.worker {
            if let Ok(d) = w.digest(input).await {
                return Ok((d, Backend::CpuWorker));
            }
        }
        Ok((self.cpu_inline(input).await?, Backend::CpuWasm))
    }

    /// One raced pass: WebGPU, then the CPU, both timed; the CPU's digest (the
    /// reference) is the answer. `None` when WebGPU is not there to race.
    async fn race_pass(&self, input: &PowInput) -> Result<Option<([u8; 32], Backend)>, EngineError> {
        let Some(mut v) = self.gpu.borrow_mut().take() else { return Ok(None) };
        let t0 = monotonic_ms();
        let gpu = v.output_digest_async(input).await;
        let t1 = monotonic_ms();
        let (digest, backend) = self.cpu_pass(input).await?;
        let t2 = monotonic_ms();
        match gpu {
            // A GPU failure says nothing about the header: drop the GPU.
            Err(e) => *self.gpu_error.borrow_mut() = Some(e.to_string()),
            Ok(d) => {
                let outcome = self.race.borrow_mut().as_mut().map(|r| r.record((d, t1 - t0), (digest, t2 - t1)));
                if outcome == Some(RaceOutcome::GpuDisagrees) {
                    *self.gpu_error.borrow_mut() =
                        Some("WebGPU's forward pass differs from the CPU's: verifying on the CPU".into());
                } else {
                    *self.gpu.borrow_mut() = Some(v);
                }
            }
        }
        Ok(Some((digest, backend)))
    }

    /// The pass on this thread (tpow-core in wasm), after yielding to the event loop.
    pub async fn cpu_inline(&self, input: &PowInput) -> Result<[u8; 32], EngineError> {
        sleep_ms(0).await;
        self.cache.borrow_mut().output_digest(input).map_err(|e| EngineError::Failed(e.to_string()))
    }

    /// The pass on a chosen engine (for benchmarks and the cross-backend check).
    pub async fn pass_on(&self, backend: Backend, input: &PowInput) -> Result<[u8; 32], EngineError> {
        match backend {
            Backend::WebGpu => {
                // Taken out while in use, so a concurrent call falls back instead of
                // double-borrowing.
                let mut v = self.gpu.borrow_mut().take().ok_or_else(|| EngineError::Unavailable("WebGPU".into()))?;
                let r = v.output_digest_async(input).await.map_err(|e| EngineError::Failed(e.to_string()));
                *self.gpu.borrow_mut() = Some(v);
                r
            }
            Backend::CpuWorker => {
                self.worker
                    .as_ref()
                    .ok_or_else(|| EngineError::Unavailable("the pass worker".into()))?
                    .digest(input)
                    .await
            }
            Backend::CpuWasm | Backend::CpuNative => self.cpu_inline(input).await,
        }
    }
}

impl Platform for WebPlatform {
    async fn get(&self, node: &str, path: &str, limit: usize) -> Result<Vec<u8>, FetchError> {
        http_get(&format!("{}{path}", node.trim_end_matches('/')), limit).await
    }

    async fn forward_pass(&self, input: &PowInput) -> Result<([u8; 32], Backend), EngineError> {
        let chosen = self.race.borrow().as_ref().map(EngineRace::chosen);
        match chosen {
            // Racing: both engines run this pass.
            Some(None) => {
                if let Some(r) = self.race_pass(input).await? {
                    return Ok(r);
                }
            }
            // The CPU won: WebGPU stays loaded only for `pass_on`.
            Some(Some(b)) if b != Backend::WebGpu => return self.cpu_pass(input).await,
            _ => {}
        }
        let taken = self.gpu.borrow_mut().take();
        if let Some(mut v) = taken {
            match v.output_digest_async(input).await {
                Ok(d) => {
                    *self.gpu.borrow_mut() = Some(v);
                    return Ok((d, Backend::WebGpu));
                }
                // A GPU failure says nothing about the header: drop the GPU, use the CPU.
                Err(e) => *self.gpu_error.borrow_mut() = Some(e.to_string()),
            }
        }
        self.cpu_pass(input).await
    }

    fn unix_ms(&self) -> u64 {
        js_sys::Date::now() as u64
    }

    fn monotonic_ms(&self) -> f64 {
        monotonic_ms()
    }

    fn random_seed(&self) -> Result<[u8; 32], EngineError> {
        random_bytes().map_err(EngineError::Randomness)
    }
}
