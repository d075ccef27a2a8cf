//! The browser platform layer (wasm32 only) and the Rust API for web apps.
//!
//! [`LightClient`] wraps the sans-io [`Client`] with the browser platform,
//! IndexedDB persistence and WebSocket following; `bindings` exposes the same to
//! JavaScript as the `LightClient` class of `pkg/`.

mod bindings;
mod idb;
mod js;
mod platform;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use serde::Deserialize;
use tpow_core::ChainParams;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::client::{
    Backend, Checkpoint, Client, Config, Progress, Stats, SyncMode, SyncReport, TipSummary, VerifiedRecord,
};
use crate::error::LightError;
use crate::nodes::NodeStatus;
pub use platform::{GpuUse, WebPlatform};

/// Options of [`LightClient::new`] (the JS `LightClient.create` takes the same
/// fields in camelCase).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LightOptions {
    /// Node base URLs (`http://127.0.0.1:8645`).
    pub nodes: Vec<String>,
    /// `devnet` or `mainnet`.
    pub chain: String,
    /// Genesis time of a devnet started with `--genesis-time-ms`. When `None` on a
    /// devnet, the genesis header of the first node that answers is adopted
    /// (trust on first use: fine for development, never for mainnet).
    pub genesis_time_ms: Option<u64>,
    /// `sampled` (default) or `full`.
    pub mode: String,
    /// Sampled mode: newest headers checked fully (1..=100, default 100).
    pub last: u64,
    /// Sampled mode: security level λ in bits (1..=128, default 50): a chain forged
    /// by a minority escapes the sample with probability at most 2^−λ. The number
    /// of draws follows from it and the chain's work (PROTOCOL.md §16).
    pub security_bits: u32,
    /// WebGPU: `true` always first, `false` never, `"auto"` (default) raced
    /// against the CPU on the first headers, the faster kept ([`GpuUse`]).
    #[serde(deserialize_with = "gpu_use")]
    pub gpu: GpuUse,
    /// URL of `tpow_light_worker.js` to run CPU passes in a Web Worker; `None`
    /// runs them on the calling thread, yielding to the event loop between passes.
    pub worker_url: Option<String>,
    /// Keep the verified state in IndexedDB and resume from it (default true).
    pub persist: bool,
    /// Height of a header every accepted chain must contain.
    pub checkpoint_height: Option<u64>,
    /// Its id (hex).
    pub checkpoint_id: Option<String>,
}

/// `gpu` in the options: a boolean or `"auto"`.
fn gpu_use<'de, D: serde::Deserializer<'de>>(d: D) -> Result<GpuUse, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Flag(bool),
        Word(String),
    }
    match Raw::deserialize(d)? {
        Raw::Flag(true) => Ok(GpuUse::On),
        Raw::Flag(false) => Ok(GpuUse::Off),
        Raw::Word(w) if w == "auto" => Ok(GpuUse::Auto),
        Raw::Word(w) => Err(serde::de::Error::custom(format!("gpu: expected true, false or \"auto\", got {w:?}"))),
    }
}

impl Default for LightOptions {
    fn default() -> Self {
        LightOptions {
            nodes: Vec::new(),
            chain: "devnet".into(),
            genesis_time_ms: None,
            mode: "sampled".into(),
            last: 100,
            security_bits: tpow_core::flyclient::DEFAULT_SECURITY_BITS,
            gpu: GpuUse::Auto,
            worker_url: None,
            persist: true,
            checkpoint_height: None,
            checkpoint_id: None,
        }
    }
}

/// The forward-pass kernel compiled into this module: `simd128` (built with
/// `-C target-feature=+simd128`), `relaxed-simd` (`+simd128,+relaxed-simd`) or
/// `portable` (no SIMD). `pkg/` and the web app ship a portable and a simd128 build
/// and load one at run time (`tpow_light.js`: `WebAssembly.validate` of a small
/// SIMD module), so this says which one the engine actually runs.
pub fn kernel() -> &'static str {
    match tpow_core::forward::simd_backend_name() {
        "wasm-simd128" => "simd128",
        "wasm-relaxed-simd" => "relaxed-simd",
        _ => "portable",
    }
}

/// The forward-pass kernel of the loaded WebAssembly build: `simd128`,
/// `relaxed-simd` or `portable` (what `init` picked; call it after `init`).
#[wasm_bindgen(js_name = kernel, unchecked_return_type = "\"simd128\" | \"relaxed-simd\" | \"portable\"")]
pub fn js_kernel() -> String {
    kernel().to_string()
}

/// Subscribers to new tips, with their ids.
type Subscribers = RefCell<Vec<(u32, Rc<dyn Fn(&TipSummary)>)>>;

struct Inner {
    client: Client<WebPlatform>,
    store_key: Option<String>,
    subscribers: Subscribers,
    next_sub: Cell<u32>,
    follow: RefCell<Option<follow::Follow>>,
}

/// The light client for Rust web apps (wasm32). Cheap to clone; all clones share
/// one client.
#[derive(Clone)]
pub struct LightClient {
    inner: Rc<Inner>,
}

/// A devnet's genesis time is chosen when it starts, so a client that was not
/// given one takes it from the first node that answers `/api/chain` (trust on
/// first use, devnets only); every node's genesis id is then checked against it
/// before anything it serves is used.
async fn adopt_genesis_time(nodes: &[String]) -> Option<u64> {
    for n in nodes {
        let url = format!("{}/api/chain", n.trim_end_matches('/'));
        if let Ok(b) = js::http_get(&url, crate::wire::MAX_CHAIN_BYTES).await {
            if let Ok(c) = crate::wire::parse_chain(&b) {
                return Some(c.genesis_timestamp_ms);
            }
        }
    }
    None
}

impl LightClient {
    /// Creates a client: opens WebGPU (if allowed and offered), the worker (if a
    /// URL is given) and the stored state (if `persist`).
    pub async fn new(options: LightOptions) -> Result<Self, LightError> {
        let mut params = ChainParams::by_name(&options.chain)
            .ok_or_else(|| LightError::Config(format!("unknown chain {:?}", options.chain)))?;
        match options.genesis_time_ms {
            Some(t) => params = params.with_genesis_time(t)?,
            None if params.network.allows_genesis_override() => {
                if let Some(t) = adopt_genesis_time(&options.nodes).await {
                    params = params.with_genesis_time(t)?;
                }
            }
            None => {}
        }
        let mode = match options.mode.as_str() {
            "full" => SyncMode::Full,
            "sampled" | "" => SyncMode::Sampled { last: options.last, security_bits: options.security_bits },
            other => return Err(LightError::Config(format!("mode must be sampled or full, got {other:?}"))),
        };
        let checkpoint = match (options.checkpoint_height, &options.checkpoint_id) {
            (Some(height), Some(id)) => {
                let mut b = [0u8; 32];
                hex::decode_to_slice(id, &mut b).map_err(|e| LightError::Config(format!("checkpointId: {e}")))?;
                Some(Checkpoint { height, id: b })
            }
            (None, None) => None,
            _ => return Err(LightError::Config("checkpointHeight and checkpointId go together".into())),
        };
        let genesis = tpow_core::chain::genesis_header(&params).id();
        let store_key = options.persist.then(|| format!("{}:{}", params.name(), hex::encode(genesis)));
        let stored = match &store_key {
            Some(k) => idb::load(k).await.ok().flatten(),
            None => None,
        };
        let platform = WebPlatform::new(options.gpu, options.worker_url.as_deref()).await;
        let config = Config { nodes: options.nodes, params, mode, checkpoint };
        let client = Client::new(config, platform, stored.as_deref())?;
        Ok(LightClient {
            inner: Rc::new(Inner {
                client,
                store_key,
                subscribers: RefCell::new(Vec::new()),
                next_sub: Cell::new(1),
                follow: RefCell::new(None),
            }),
        })
    }

    /// Verifies the best chain the nodes offer (see [`Client::sync`]) and persists
    /// the result. `progress` is called after every request and forward pass.
    pub async fn sync(&self, mut progress: impl FnMut(&Progress)) -> Result<SyncReport, LightError> {
        let before = self.inner.client.tip();
        let r = self.inner.client.sync(&mut progress).await;
        self.after_step(&before).await;
        r
    }

    async fn after_step(&self, before: &TipSummary) {
        let tip = self.inner.client.tip();
        if tip != *before {
            if let Some(k) = &self.inner.store_key {
                let _ = idb::save(k, &self.inner.client.state_bytes()).await;
            }
            let subs: Vec<_> = self.inner.subscribers.borrow().iter().map(|(_, f)| Rc::clone(f)).collect();
            for f in subs {
                f(&tip);
            }
        }
    }

    /// The best verified tip (genesis before the first sync, or the stored tip).
    pub fn tip(&self) -> TipSummary {
        self.inner.client.tip()
    }

    /// The most recently verified headers (newest last), with backend and time.
    pub fn recent(&self) -> Vec<VerifiedRecord> {
        self.inner.client.recent()
    }

    /// What the client thinks of each node.
    pub fn nodes(&self) -> Vec<NodeStatus> {
        self.inner.client.nodes()
    }

    /// Counters: passes, bytes, requests.
    pub fn stats(&self) -> Stats {
        self.inner.client.stats()
    }

    /// Whether a sync or follow step is running.
    pub fn is_busy(&self) -> bool {
        self.inner.client.is_busy()
    }

    /// The engine forward passes go to first.
    pub fn backend(&self) -> Backend {
        self.inner.client.platform().preferred()
    }

    /// The WebGPU adapter, if one is used.
    pub fn adapter(&self) -> Option<String> {
        self.inner.client.platform().adapter()
    }

    /// The WebGPU-against-CPU race (`gpu: "auto"`), if one runs: (WebGPU ms, CPU
    /// ms) over its timed rounds, and the engine kept once it is over.
    pub fn engine_race(&self) -> Option<((f64, f64), Option<Backend>)> {
        self.inner.client.platform().race()
    }

    /// Why WebGPU is not in use, if it was tried and failed.
    pub fn gpu_error(&self) -> Option<String> {
        self.inner.client.platform().gpu_error()
    }

    /// Verifies one 192-byte header (see [`Client::verify_header`]).
    pub async fn verify_header(&self, bytes: &[u8]) -> Result<VerifiedRecord, LightError> {
        self.inner.client.verify_header(bytes).await
    }

    /// Runs one forward pass on a chosen engine: for benchmarks and for showing
    /// that WebGPU and CPU agree. Returns the digest and the milliseconds it took.
    pub async fn digest_on(
        &self,
        backend: Backend,
        input: &tpow_core::chain::PowInput,
    ) -> Result<([u8; 32], f64), LightError> {
        let p = self.inner.client.platform();
        let start = js::monotonic_ms();
        let d = p.pass_on(backend, input).await.map_err(LightError::Engine)?;
        Ok((d, js::monotonic_ms() - start))
    }

    /// Calls `on_tip` with every new verified best tip. The first subscriber starts
    /// following: a WebSocket to each node (`/api/ws`), each announced tip
    /// verified before it is believed, reorgs included. Returns an id for
    /// [`LightClient::unsubscribe`].
    pub fn subscribe(&self, on_tip: impl Fn(&TipSummary) + 'static) -> u32 {
        let id = self.inner.next_sub.get();
        self.inner.next_sub.set(id + 1);
        self.inner.subscribers.borrow_mut().push((id, Rc::new(on_tip)));
        if self.inner.follow.borrow().is_none() {
            let f = follow::Follow::start(self.clone());
            *self.inner.follow.borrow_mut() = Some(f);
        }
        id
    }

    /// Removes a subscriber; the last one leaving closes the WebSockets.
    pub fn unsubscribe(&self, id: u32) {
        self.inner.subscribers.borrow_mut().retain(|(i, _)| *i != id);
        if self.inner.subscribers.borrow().is_empty() {
            self.inner.follow.borrow_mut().take();
        }
    }

    /// The sans-io client underneath.
    pub fn core(&self) -> &Client<WebPlatform> {
        &self.inner.client
    }
}

mod follow {
    //! WebSocket tip following, with reconnects.

    use super::*;

    struct Socket {
        ws: web_sys::WebSocket,
        _onmessage: Closure<dyn FnMut(web_sys::MessageEvent)>,
        _onclose: Closure<dyn FnMut(web_sys::CloseEvent)>,
    }

    /// Open sockets; dropping it closes them and stops reconnecting.
    pub struct Follow {
        stopped: Rc<Cell<bool>>,
        sockets: Rc<RefCell<Vec<Option<Socket>>>>,
    }

    impl Drop for Follow {
        fn drop(&mut self) {
            self.stopped.set(true);
            for s in self.sockets.borrow_mut().drain(..).flatten() {
                s.ws.set_onclose(None);
                s.ws.set_onmessage(None);
                let _ = s.ws.close();
            }
        }
    }

    fn ws_url(node: &str) -> String {
        let base = node.trim_end_matches('/');
        let base = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            base.to_string()
        };
        format!("{base}/api/ws")
    }

    fn connect(client: LightClient, index: usize, stopped: Rc<Cell<bool>>, sockets: Rc<RefCell<Vec<Option<Socket>>>>) {
        if stopped.get() {
            return;
        }
        let Some(node) = client.inner.client.config().nodes.get(index).cloned() else { return };
        let Ok(ws) = web_sys::WebSocket::new(&ws_url(&node)) else { return };
        let onmessage = {
            let client = client.clone();
            Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
                let Some(text) = e.data().as_string() else { return };
                let client = client.clone();
                wasm_bindgen_futures::spawn_local(async move {
                    let before = client.tip();
                    // A sync in progress: retry this announcement when it is done.
                    while let Err(LightError::Busy) = client.inner.client.on_tip_message(index, text.as_bytes()).await {
                        js::sleep_ms(250).await;
                    }
                    client.after_step(&before).await;
                });
            })
        };
        let onclose = {
            let (client, stopped, sockets) = (client.clone(), Rc::clone(&stopped), Rc::clone(&sockets));
            Closure::<dyn FnMut(web_sys::CloseEvent)>::new(move |_| {
                let (client, stopped, sockets) = (client.clone(), Rc::clone(&stopped), Rc::clone(&sockets));
                wasm_bindgen_futures::spawn_local(async move {
                    js::sleep_ms(2_000).await;
                    connect(client, index, stopped, sockets);
                });
            })
        };
        ws.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
        ws.set_onclose(Some(onclose.as_ref().unchecked_ref()));
        let mut s = sockets.borrow_mut();
        if let Some(slot) = s.get_mut(index) {
            *slot = Some(Socket { ws, _onmessage: onmessage, _onclose: onclose });
        }
    }

    impl Follow {
        pub fn start(client: LightClient) -> Self {
            let n = client.inner.client.config().nodes.len();
            let stopped = Rc::new(Cell::new(false));
            let sockets = Rc::new(RefCell::new((0..n).map(|_| None).collect::<Vec<_>>()));
            for i in 0..n {
                connect(client.clone(), i, Rc::clone(&stopped), Rc::clone(&sockets));
            }
            Follow { stopped, sockets }
        }
    }
}
