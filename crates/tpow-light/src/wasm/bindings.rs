//! The JavaScript API of `pkg/` (wasm-bindgen). Values cross as plain objects
//! (serde-wasm-bindgen); the TypeScript shapes are declared below.

use js_sys::{Function, Promise, Reflect};
use serde::Serialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use super::{LightClient as Inner, LightOptions};
use crate::client::Backend;
use crate::error::LightError;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** Options of `LightClient.create`. */
export interface LightOptions {
  /** Node base URLs, e.g. `http://127.0.0.1:8645`. */
  nodes: string[];
  /** `devnet` (default) or `mainnet`. */
  chain?: "devnet" | "mainnet";
  /** Genesis time of a devnet started with `--genesis-time-ms`; omitted on a devnet: adopted from the first node. */
  genesisTimeMs?: number;
  /** `sampled` (default: last k + FlyClient sample) or `full` (every header). */
  mode?: "sampled" | "full";
  /** Sampled mode: newest headers checked fully (1..=100, default 100). */
  last?: number;
  /** Sampled mode: security level in bits (1..=128, default 50); the draw count follows from it (PROTOCOL.md §16). */
  securityBits?: number;
  /** WebGPU: `true` always first, `false` never, `"auto"` (default) raced against the CPU on the first three headers (digests compared), the faster kept: a software adapter loses to the simd128 kernel. */
  gpu?: boolean | "auto";
  /** URL of `tpow_light_worker.js`: CPU passes then run in a Web Worker. */
  workerUrl?: string;
  /** Keep verified state in IndexedDB and resume from it (default true). */
  persist?: boolean;
  /** A header every accepted chain must contain. */
  checkpointHeight?: number;
  checkpointId?: string;
}
export type Backend = "web-gpu" | "cpu-worker" | "cpu-wasm" | "cpu-native";
export interface TipSummary { height: number; id: string; total_work: string; timestamp_ms: number; header: string; }
export interface VerifiedRecord { height: number; id: string; backend: Backend; ms: number; check: "linked" | "sampled" | "detached"; node: string; }
export interface NodeStatus {
  url: string;
  state: "unknown" | "ok" | "behind" | "unreachable" | "invalid";
  /** Why, for `unreachable` and `invalid` (a node flagged for serving invalid data). */
  detail?: string;
  claimed_height?: number;
  claimed_work?: string;
}
export interface Progress { phase: "tips" | "headers" | "flyclient" | "verify" | "done"; node: string; done: number; total: number; height?: number; }
export interface SyncReport { tip: TipSummary; passes: number; bytes: number; ms: number; nodes: NodeStatus[]; }
export interface Stats { passes: number; bytes: number; headers_checked: number; requests: number; }
/** What `sync`, `verifyHeader` and `create` reject with: an `Error` with these fields. */
export interface LightClientError extends Error {
  /** `invalid-data` (the node lied or sent garbage), `network`, `no-valid-chain`, `decode`, `invalid-header`, `engine`, `config`, `busy`. */
  kind: string;
  /** The node blamed, if any. */
  node?: string;
}
"#;

fn to_js<T: Serialize>(v: &T) -> JsValue {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).unwrap_or(JsValue::NULL)
}

/// A JS `Error` with `kind` and `node` fields.
fn js_error(e: &LightError) -> JsValue {
    let err = js_sys::Error::new(&e.to_string());
    let _ = Reflect::set(&err, &"kind".into(), &e.kind().into());
    if let Some(n) = e.node() {
        let _ = Reflect::set(&err, &"node".into(), &n.into());
    }
    err.into()
}

/// The tpow light client (see pkg/README.md).
#[wasm_bindgen(js_name = LightClient)]
pub struct JsLightClient {
    inner: Inner,
}

#[wasm_bindgen(js_class = LightClient)]
impl JsLightClient {
    /// Creates a client. Rejects with a `LightClientError` on bad options.
    #[wasm_bindgen(unchecked_return_type = "Promise<LightClient>")]
    pub fn create(#[wasm_bindgen(unchecked_param_type = "LightOptions")] options: JsValue) -> Promise {
        future_to_promise(async move {
            let opts: LightOptions =
                serde_wasm_bindgen::from_value(options).map_err(|e| js_error(&LightError::Config(e.to_string())))?;
            let inner = Inner::new(opts).await.map_err(|e| js_error(&e))?;
            Ok(JsLightClient { inner }.into())
        })
    }

    /// Verifies the best chain the nodes serve; `onProgress` (optional) gets a `Progress`
    /// after every request and forward pass. Resolves with a `SyncReport`.
    #[wasm_bindgen(unchecked_return_type = "Promise<SyncReport>")]
    pub fn sync(&self, #[wasm_bindgen(js_name = onProgress)] on_progress: Option<Function>) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let cb = on_progress;
            let r = inner
                .sync(|p| {
                    if let Some(f) = &cb {
                        let _ = f.call1(&JsValue::NULL, &to_js(p));
                    }
                })
                .await
                .map_err(|e| js_error(&e))?;
            Ok(to_js(&r))
        })
    }

    /// The best verified tip.
    #[wasm_bindgen(unchecked_return_type = "TipSummary")]
    pub fn tip(&self) -> JsValue {
        to_js(&self.inner.tip())
    }

    /// Verifies one 192-byte header (parent-linked if the client holds the parent,
    /// else the detached checks) and its forward pass.
    #[wasm_bindgen(js_name = verifyHeader, unchecked_return_type = "Promise<VerifiedRecord>")]
    pub fn verify_header(&self, bytes: Vec<u8>) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let r = inner.verify_header(&bytes).await.map_err(|e| js_error(&e))?;
            Ok(to_js(&r))
        })
    }

    /// Calls `callback(tip)` for every new verified best tip, following the nodes'
    /// WebSockets. Returns an id for `unsubscribe`.
    pub fn subscribe(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(tip: TipSummary) => void")] callback: Function,
    ) -> u32 {
        self.inner.subscribe(move |t| {
            let _ = callback.call1(&JsValue::NULL, &to_js(t));
        })
    }

    /// Stops a subscription; the last one closes the WebSockets.
    pub fn unsubscribe(&self, id: u32) {
        self.inner.unsubscribe(id)
    }

    /// Node statuses (a node that served invalid data has `state: "invalid"`).
    #[wasm_bindgen(unchecked_return_type = "NodeStatus[]")]
    pub fn nodes(&self) -> JsValue {
        to_js(&self.inner.nodes())
    }

    /// Recently verified headers, newest last, with backend and milliseconds.
    #[wasm_bindgen(unchecked_return_type = "VerifiedRecord[]")]
    pub fn recent(&self) -> JsValue {
        to_js(&self.inner.recent())
    }

    /// Counters since creation.
    #[wasm_bindgen(unchecked_return_type = "Stats")]
    pub fn stats(&self) -> JsValue {
        to_js(&self.inner.stats())
    }

    /// The engine passes go to first: `web-gpu`, `cpu-worker` or `cpu-wasm`.
    #[wasm_bindgen(getter, unchecked_return_type = "Backend")]
    pub fn backend(&self) -> JsValue {
        to_js(&self.inner.backend())
    }

    /// The WebGPU adapter in use, if any.
    #[wasm_bindgen(getter)]
    pub fn adapter(&self) -> Option<String> {
        self.inner.adapter()
    }

    /// Why WebGPU is not used, if it was tried.
    #[wasm_bindgen(getter, js_name = gpuError)]
    pub fn gpu_error(&self) -> Option<String> {
        self.inner.gpu_error()
    }

    /// One forward pass of (`prevId`, `template`, `nonce`) on `backend`
    /// (`web-gpu`, `cpu-worker`, `cpu-wasm`): resolves with `{digest, ms}`. For
    /// benchmarks and for checking that the engines agree.
    #[wasm_bindgen(js_name = digestOn, unchecked_return_type = "Promise<{digest: string, ms: number}>")]
    pub fn digest_on(&self, backend: String, prev_id: String, template: String, nonce: String) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let bad = |m: String| js_error(&LightError::Config(m));
            let backend = match backend.as_str() {
                "web-gpu" => Backend::WebGpu,
                "cpu-worker" => Backend::CpuWorker,
                "cpu-wasm" => Backend::CpuWasm,
                o => return Err(bad(format!("unknown backend {o}"))),
            };
            let mut p = [0u8; 32];
            hex::decode_to_slice(&prev_id, &mut p).map_err(|e| bad(e.to_string()))?;
            let mut t = [0u8; tpow_core::header::TEMPLATE_LEN];
            hex::decode_to_slice(&template, &mut t).map_err(|e| bad(e.to_string()))?;
            let nonce: u64 = nonce.parse().map_err(|_| bad("nonce".into()))?;
            let input = tpow_core::chain::PowInput {
                spec: inner.core().config().params.model,
                prev_id: p,
                template: t,
                nonce,
                output_digest: [0; 32],
            };
            let (d, ms) = inner.digest_on(backend, &input).await.map_err(|e| js_error(&e))?;
            let out = js_sys::Object::new();
            let _ = Reflect::set(&out, &"digest".into(), &hex::encode(d).into());
            let _ = Reflect::set(&out, &"ms".into(), &ms.into());
            Ok(out.into())
        })
    }
}

/// The CPU forward pass of an encoded pass request (the worker's entry point):
/// returns the 32-byte output digest. Throws on a malformed request.
#[wasm_bindgen(js_name = cpuDigest)]
pub fn cpu_digest(input: &[u8]) -> Result<Vec<u8>, JsValue> {
    let input = crate::pass::decode(input).ok_or_else(|| JsValue::from_str("malformed pass request"))?;
    let mut cache = tpow_core::ModelCache::new();
    cache.output_digest(&input).map(|d| d.to_vec()).map_err(|e| JsValue::from_str(&e.to_string()))
}

/// The output digest of one forward pass on the CPU, for the test vectors:
/// `chain` is `devnet` or `mainnet`, the rest as in the vector files.
#[wasm_bindgen(js_name = vectorDigest)]
pub fn vector_digest(chain: &str, prev_id: &str, template: &str, nonce: &str) -> Result<String, JsValue> {
    let spec = tpow_core::ChainParams::by_name(chain).ok_or_else(|| JsValue::from_str("unknown chain"))?.model;
    let mut p = [0u8; 32];
    hex::decode_to_slice(prev_id, &mut p).map_err(|e| JsValue::from_str(&e.to_string()))?;
    let mut t = [0u8; tpow_core::header::TEMPLATE_LEN];
    hex::decode_to_slice(template, &mut t).map_err(|e| JsValue::from_str(&e.to_string()))?;
    let nonce: u64 = nonce.parse().map_err(|_| JsValue::from_str("nonce"))?;
    let input = tpow_core::chain::PowInput { spec, prev_id: p, template: t, nonce, output_digest: [0; 32] };
    let d = tpow_core::ModelCache::new().output_digest(&input).map_err(|e| JsValue::from_str(&e.to_string()))?;
    Ok(hex::encode(d))
}
