//! OpenAI-compatible chat on the node's HTTP port (feature `chat`).
//!
//! A [`ChatBackend`] turns a validated request into a stream of text pieces;
//! the routes render that stream as OpenAI objects (one JSON answer or
//! server-sent chunks) and sign a receipt over it. Backends:
//!
//! - [`local::LocalBackend`]: the tpow-chat engine (SmolLM2 on candle) in this process;
//! - [`upstream::UpstreamBackend`]: forwarding to an OpenAI-compatible server
//!   (vLLM, llama.cpp server, ...) for models too large for the node;
//! - [`Unavailable`]: chat is off or the model failed to load; every call is a
//!   503 that says why, while the node keeps running the chain.

pub mod local;
pub mod openai;
pub mod routes;
pub mod signing;
pub mod upstream;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::stream::BoxStream;
use serde_json::Value;
use tpow_api as api;

use self::openai::{ChatApiError, ChatRequest, Usage};
use self::signing::Signer;

/// The model file the node looks for when `--model` is not given.
pub const DEFAULT_MODEL_FILE: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Chat options of `tpow-node run`. (Small integer types: this is part of the
/// `run` command's arguments, whose size clippy weighs against the others'.)
#[derive(clap::Args, Debug, Clone)]
pub struct ChatArgs {
    /// GGUF model served on /v1/chat/completions [default: models/SmolLM2-135M-Instruct.Q4_1.gguf
    /// in the working dir, else in the source tree's models/ dir].
    #[arg(long, env = "TPOW_MODEL")]
    pub model: Option<PathBuf>,
    /// Forward chat to this OpenAI-compatible server (base URL, e.g.
    /// http://127.0.0.1:8000 or http://host:8000/v1) instead of the local engine.
    #[arg(long)]
    pub upstream: Option<String>,
    /// Serve no chat (the chat endpoints answer 503).
    #[arg(long)]
    pub no_chat: bool,
    /// Chat requests that may wait beyond the running batch; more get 429.
    #[arg(long, default_value_t = 4)]
    pub chat_queue: usize,
    /// Chat requests generated together (continuous batching: one forward pass
    /// per step for all of them).
    #[arg(long, default_value_t = tpow_chat::DEFAULT_MAX_BATCH as u16)]
    pub chat_batch: u16,
    /// KV-cache memory budget of the local engine in MiB (raised if needed to
    /// hold one largest request). Every request reserves its prompt plus
    /// `max_tokens` positions (45 KiB each for SmolLM2-135M) while queued or
    /// running; one that does not fit gets 429 with Retry-After.
    #[arg(long, default_value_t = (tpow_chat::DEFAULT_KV_CACHE_BYTES >> 20) as u32)]
    pub kv_cache_mb: u32,
    /// Largest `max_tokens` a chat request may ask for.
    #[arg(long, default_value_t = 512)]
    pub max_tokens_cap: u32,
    /// Threads of the local engine's matmuls (default: all cores).
    #[arg(long)]
    pub chat_threads: Option<u16>,
    /// Most prompt tokens one chat request may bring (0: the model's whole
    /// context). Bounds how long one request keeps the engine, and mining that
    /// yields to it, busy; longer prompts get 400 `context_length_exceeded`.
    #[arg(long, default_value_t = tpow_chat::DEFAULT_MAX_PROMPT_TOKENS as u32)]
    pub max_prompt_tokens: u32,
}

/// One step of a generation, backend-neutral.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// More content.
    Text(String),
    /// The end: OpenAI's `finish_reason` and the token counts when known.
    Finish { reason: String, usage: Option<Usage> },
}

/// A started generation. Dropping `pieces` cancels it.
pub struct Completion {
    /// The model id reported in the answer.
    pub model: String,
    pub pieces: BoxStream<'static, Result<Piece, ChatApiError>>,
}

/// What `/api/info` and identify report about a backend.
#[derive(Debug, Clone)]
pub struct BackendInfo {
    /// `local`, `upstream` or `none`.
    pub kind: &'static str,
    /// Model ids served.
    pub models: Vec<String>,
    /// Requests queued or running (local engine only).
    pub demand: Option<usize>,
    /// The local engine's batch and KV cache (None for other backends).
    pub engine: Option<tpow_chat::EngineStats>,
    /// Sampling settings recommended for the served model, if known.
    pub sampling: Option<tpow_chat::SamplingDefaults>,
    /// Why chat is unavailable, if it is.
    pub unavailable: Option<String>,
}

/// Something that answers chat requests.
#[async_trait::async_trait]
pub trait ChatBackend: Send + Sync {
    /// Kind, models and load.
    fn info(&self) -> BackendInfo;
    /// The body of `GET /v1/models`: an [`api::Models`] for the node's own
    /// engine; an upstream's own list is relayed as it came (fields included
    /// that this node does not know).
    async fn list_models(&self) -> Result<Value, ChatApiError>;
    /// Starts a generation; `raw` is the request body as JSON (forwarded upstream).
    async fn start(&self, request: ChatRequest, raw: Value) -> Result<Completion, ChatApiError>;
    /// The live count of generations queued or running, for a scheduler that
    /// makes mining yield to chat (None: the work happens elsewhere).
    fn demand_counter(&self) -> Option<Arc<std::sync::atomic::AtomicUsize>> {
        None
    }
}

/// The backend of a node that serves no chat.
pub struct Unavailable(pub String);

#[async_trait::async_trait]
impl ChatBackend for Unavailable {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: "none",
            models: Vec::new(),
            demand: None,
            engine: None,
            sampling: None,
            unavailable: Some(self.0.clone()),
        }
    }
    async fn list_models(&self) -> Result<Value, ChatApiError> {
        Err(ChatApiError::unavailable(&self.0))
    }
    async fn start(&self, _: ChatRequest, _: Value) -> Result<Completion, ChatApiError> {
        Err(ChatApiError::unavailable(&self.0))
    }
}

/// The chat side of the HTTP API.
pub struct ChatState {
    pub backend: Arc<dyn ChatBackend>,
    pub signer: Signer,
}

impl ChatState {
    /// `chat` of `GET /api/info`. `sampling` is the served model's recommended
    /// settings (the web app's defaults); `engine` the local engine's batch and
    /// KV-cache use.
    pub fn info(&self) -> api::ChatInfo {
        let i = self.backend.info();
        let n = |x: usize| x as u64;
        api::ChatInfo {
            backend: i.kind.to_string(),
            demand: i.demand.map(n),
            engine: i.engine.map(|e| api::EngineInfo {
                active: n(e.active),
                cancelled_generations: e.cancelled,
                cancelled_tokens: e.cancelled_tokens,
                kv_cache_allocated_bytes: n(e.kv_allocated_bytes),
                kv_cache_budget_bytes: n(e.kv_budget_bytes),
                kv_cache_bytes_per_token: n(e.kv_bytes_per_token),
                kv_cache_reserved_bytes: n(e.kv_reserved_bytes),
                max_batch: n(e.max_batch),
                queued: n(e.queued),
            }),
            models: i.models,
            sampling: i.sampling.map(sampling),
            unavailable: i.unavailable,
        }
    }
}

/// Recommended sampling settings as the API writes them (0.2 stays 0.2).
pub fn sampling(d: tpow_chat::SamplingDefaults) -> api::Sampling {
    api::Sampling::from_f32(d.temperature, d.top_p)
}

/// `/v1/models` for a list of ids. A model with known recommended sampling
/// settings carries them as `recommended_sampling` (an extension; OpenAI clients
/// ignore unknown fields).
pub fn models(ids: &[String]) -> api::Models {
    api::Models::list(
        ids.iter().map(|id| api::ModelEntry::own(id, tpow_chat::recommended_sampling(id).map(sampling))).collect(),
    )
}

/// Where the engine's reports go: the batch size of every step, the KV cache's
/// use, and cancelled generations (their tokens counted with the generated tokens;
/// the routes count finished ones from their usage).
fn engine_hook(ev: &tpow_chat::EngineEvent) {
    let m = crate::metrics::get();
    match *ev {
        tpow_chat::EngineEvent::Step { sequences, kv_reserved_bytes, kv_allocated_bytes, .. } => {
            m.chat_batch_size.observe(sequences as f64);
            m.chat_kv_cache_reserved_bytes.set(i64::try_from(kv_reserved_bytes).unwrap_or(i64::MAX));
            m.chat_kv_cache_allocated_bytes.set(i64::try_from(kv_allocated_bytes).unwrap_or(i64::MAX));
        }
        tpow_chat::EngineEvent::Cancelled { completion_tokens, .. } => {
            m.chat_cancelled.inc();
            m.chat_tokens.inc_by(u64::from(completion_tokens));
        }
    }
}

/// The model file to load: the explicit one, else the default in the working
/// dir, else the default in the source tree (so `cargo run` and tests find the
/// workspace's models/ from any directory).
pub fn resolve_model(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    let local = PathBuf::from(DEFAULT_MODEL_FILE);
    if local.exists() {
        return local;
    }
    let in_tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(DEFAULT_MODEL_FILE);
    if in_tree.exists() {
        return in_tree;
    }
    local
}

/// Builds the chat state from the options. Never fails: a node without a usable
/// model still runs the chain, and its chat endpoints say why they are off.
pub async fn setup(args: &ChatArgs, keypair: &libp2p::identity::Keypair) -> anyhow::Result<Arc<ChatState>> {
    let key = keypair
        .clone()
        .try_into_ed25519()
        .map_err(|e| anyhow::anyhow!("the node key must be ed25519 to sign chat receipts: {e}"))?;
    let signer = Signer::new(key);
    let backend: Arc<dyn ChatBackend> = if args.no_chat {
        Arc::new(Unavailable("chat is disabled on this node (--no-chat)".into()))
    } else if let Some(url) = &args.upstream {
        match upstream::UpstreamBackend::new(url).await {
            Ok(b) => {
                tracing::info!(upstream = %url, models = ?b.info().models, "chat: forwarding to upstream");
                Arc::new(b)
            }
            Err(e) => {
                tracing::warn!("chat is unavailable: {e}");
                Arc::new(Unavailable(format!("chat is unavailable: {e}")))
            }
        }
    } else {
        let path = resolve_model(args.model.as_deref());
        let options = tpow_chat::EngineOptions {
            queue_capacity: args.chat_queue,
            max_tokens_cap: args.max_tokens_cap,
            threads: args.chat_threads.map(usize::from),
            max_prompt_tokens: args.max_prompt_tokens as usize,
            max_batch: usize::from(args.chat_batch),
            kv_cache_bytes: (args.kv_cache_mb as usize).saturating_mul(1 << 20),
            hook: Some(Arc::new(engine_hook)),
            ..tpow_chat::EngineOptions::default()
        };
        let started = std::time::Instant::now();
        let load_path = path.clone();
        let loaded = tokio::task::spawn_blocking(move || tpow_chat::Engine::load(&load_path, options)).await;
        match loaded {
            Ok(Ok(engine)) => {
                tracing::info!(
                    model = engine.model_id(),
                    path = %path.display(),
                    "chat: model loaded in {:.1}s",
                    started.elapsed().as_secs_f64()
                );
                crate::metrics::get()
                    .chat_kv_cache_budget_bytes
                    .set(i64::try_from(engine.stats().kv_budget_bytes).unwrap_or(i64::MAX));
                Arc::new(local::LocalBackend::new(Arc::new(engine)))
            }
            Ok(Err(e)) => {
                let why = if path.exists() {
                    format!("chat is unavailable: {e}")
                } else {
                    format!(
                        "chat is unavailable: no model file at {} (pass --model PATH or --upstream URL)",
                        path.display()
                    )
                };
                tracing::warn!("{why}");
                Arc::new(Unavailable(why))
            }
            Err(e) => anyhow::bail!("loading the chat model: {e}"),
        }
    };
    Ok(Arc::new(ChatState { backend, signer }))
}
