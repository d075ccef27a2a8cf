//! The chat engine of a tpow node.
//!
//! A node serves language models next to mining; this crate is the model side:
//! it loads a GGUF file (SmolLM2-135M-Instruct by default) with candle, builds the
//! tokenizer from the GGUF's own metadata, renders ChatML prompts, and runs
//! generation on a dedicated worker thread behind a bounded queue, with
//! continuous batching (every step decodes all running requests in one pass) under
//! a KV-cache memory budget. It knows nothing about HTTP: the node's
//! OpenAI-compatible API is a thin layer on top.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

pub mod chat_template;
mod engine;
pub mod model;
mod pool;
pub mod qmatmul;
pub mod sampling;
pub mod tokenizer;

pub use chat_template::{ChatTemplate, Part};
pub use model::{Model, WeightFormat};
pub use tokenizer::Tokenizer;

/// Sampling settings a model's authors recommend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingDefaults {
    pub temperature: f32,
    pub top_p: f32,
}

/// The recommended sampling of a model family, by model id. SmolLM2's model card
/// (HuggingFaceTB/SmolLM2-*-Instruct) uses temperature 0.2 and top_p 0.9: at
/// OpenAI's default temperature of 1 the 135M model wanders off quickly. The API
/// keeps OpenAI's defaults; clients (the web app) read these and send them.
pub fn recommended_sampling(model_id: &str) -> Option<SamplingDefaults> {
    let id = model_id.to_ascii_lowercase();
    id.starts_with("smollm2").then_some(SamplingDefaults { temperature: 0.2, top_p: 0.9 })
}

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

/// Sampling and stopping parameters of one generation.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    /// Most tokens to generate, at most the engine's cap. None: whatever fits in
    /// the context after the prompt, within the cap (OpenAI's default), found from
    /// the one tokenisation `submit` does anyway.
    pub max_tokens: Option<u32>,
    /// 0 means greedy.
    pub temperature: f32,
    /// Nucleus sampling mass in (0, 1]; 1 disables it.
    pub top_p: f32,
    /// Seed of the sampler (same seed, same prompt, same text).
    pub seed: u64,
    /// Generation stops before any of these strings (which are not emitted).
    pub stop: Vec<String>,
}

/// What the worker reports as it goes (for metrics), on its own thread: keep it quick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineEvent {
    /// One forward pass: `sequences` in the batch, `decode` of them bringing one
    /// token each, and `prefill_tokens` prompt tokens; the KV cache's bytes
    /// reserved (queued and running requests) and allocated, as of the step.
    Step { sequences: usize, decode: usize, prefill_tokens: usize, kv_reserved_bytes: usize, kv_allocated_bytes: usize },
    /// A generation was cancelled (its `Generation` dropped) after generating
    /// `completion_tokens`.
    Cancelled { prompt_tokens: u32, completion_tokens: u32 },
}

/// A receiver of [`EngineEvent`]s.
pub type EngineHook = Arc<dyn Fn(&EngineEvent) + Send + Sync>;

/// Options of [`Engine::load`].
#[derive(Clone)]
pub struct EngineOptions {
    /// Requests waiting beyond the running batch; more are refused with
    /// [`ChatError::QueueFull`].
    pub queue_capacity: usize,
    /// Requests decoded together, one step at a time (continuous batching).
    pub max_batch: usize,
    /// KV-cache memory budget in bytes. Each request reserves its prompt plus
    /// `max_tokens` positions when it is queued; one that does not fit beside the
    /// others is refused with [`ChatError::KvCacheFull`]. Raised if needed to
    /// hold one largest request (`max_prompt_tokens` + `max_tokens_cap`).
    pub kv_cache_bytes: usize,
    /// Receives [`EngineEvent`]s.
    pub hook: Option<EngineHook>,
    /// Largest `max_tokens` a request may ask for.
    pub max_tokens_cap: u32,
    /// Threads of the matmul pool (None: all cores).
    pub threads: Option<usize>,
    /// Most prompt tokens one request may bring (0: the whole context). The prompt
    /// runs before the first token and its attention grows with its square: this
    /// bounds how long one request can keep the engine (and mining, which yields to
    /// it) busy.
    pub max_prompt_tokens: usize,
    /// Prompts tokenised at once; up to [`TOKENIZE_WAITING`] more wait for a slot,
    /// beyond that `submit` answers [`ChatError::Busy`] without reading the prompt.
    pub tokenize_slots: usize,
}

/// Default [`EngineOptions::max_prompt_tokens`].
pub const DEFAULT_MAX_PROMPT_TOKENS: usize = 4096;
/// Submissions that may wait for a tokenizer slot.
pub const TOKENIZE_WAITING: usize = 16;

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            queue_capacity: 4,
            max_tokens_cap: 512,
            threads: None,
            max_prompt_tokens: DEFAULT_MAX_PROMPT_TOKENS,
            tokenize_slots: 2,
            max_batch: DEFAULT_MAX_BATCH,
            kv_cache_bytes: DEFAULT_KV_CACHE_BYTES,
            hook: None,
        }
    }
}

impl std::fmt::Debug for EngineOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineOptions")
            .field("queue_capacity", &self.queue_capacity)
            .field("max_tokens_cap", &self.max_tokens_cap)
            .field("threads", &self.threads)
            .field("max_prompt_tokens", &self.max_prompt_tokens)
            .field("tokenize_slots", &self.tokenize_slots)
            .field("max_batch", &self.max_batch)
            .field("kv_cache_bytes", &self.kv_cache_bytes)
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

/// Default [`EngineOptions::max_batch`].
pub const DEFAULT_MAX_BATCH: usize = 8;
/// Default [`EngineOptions::kv_cache_bytes`]: 1 GiB (SmolLM2-135M: 45 KiB per
/// position, about 23,000 positions: eight requests of 2,900 tokens).
pub const DEFAULT_KV_CACHE_BYTES: usize = 1 << 30;

/// A snapshot of the engine's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineStats {
    /// Requests in the running batch.
    pub active: usize,
    /// Requests waiting for room in the batch.
    pub queued: usize,
    pub max_batch: usize,
    /// The KV-cache budget (bytes).
    pub kv_budget_bytes: usize,
    /// Reserved by queued and running requests.
    pub kv_reserved_bytes: usize,
    /// Allocated now (running requests and a retained prompt prefix).
    pub kv_allocated_bytes: usize,
    /// KV bytes of one position.
    pub kv_bytes_per_token: usize,
    /// Forward passes so far.
    pub steps: u64,
    /// Generations cancelled, and the tokens they had generated.
    pub cancelled: u64,
    pub cancelled_tokens: u64,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-turn token or a stop string.
    Stop,
    /// `max_tokens` or the context window was reached.
    Length,
}

/// Token counts of one generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

/// What a running generation reports, in order: `Token`s then one `Done` or `Error`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Newly generated text (whole UTF-8 characters; stop strings held back).
    Token(String),
    Done {
        finish: FinishReason,
        usage: Usage,
    },
    Error(String),
}

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("cannot load model {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("messages are empty")]
    EmptyMessages,
    /// `tokens` counts what was tokenised before it was clear the prompt cannot fit
    /// (`at_least`: the prompt is longer still; tokenising stops there).
    #[error("the prompt is {} tokens; with max_tokens {max_tokens} it exceeds the context of {limit}", count(*.tokens, *.at_least))]
    PromptTooLong { tokens: usize, at_least: bool, max_tokens: u32, limit: usize },
    #[error("the prompt is {} tokens; this node takes at most {budget} prompt tokens per request", count(*.tokens, *.at_least))]
    PromptOverBudget { tokens: usize, at_least: bool, budget: usize },
    #[error("max_tokens {asked} is over the cap of {cap}")]
    MaxTokensOverCap { asked: u32, cap: u32 },
    #[error("invalid parameter: {0}")]
    InvalidParam(String),
    #[error("the generation queue is full")]
    QueueFull,
    #[error("too many prompts are being tokenised; retry shortly")]
    Busy,
    #[error("the KV cache is full: the request needs {needed} bytes, {free} of the {budget} are free; retry shortly")]
    KvCacheFull { needed: usize, free: usize, budget: usize },
    #[error("the engine has stopped")]
    Stopped,
}

fn count(tokens: usize, at_least: bool) -> String {
    if at_least {
        format!("more than {tokens}")
    } else {
        tokens.to_string()
    }
}

/// Caps the prompts tokenised at once. Tokenising is bounded per request (it
/// stops past the limit) but runs on the caller's thread before anything is
/// queued; without a cap, a burst of large prompts would take every blocking
/// thread and their scratch memory at once.
struct TokenizeGate {
    state: std::sync::Mutex<(usize, usize)>,
    free: std::sync::Condvar,
    slots: usize,
}

/// A tokenizer slot; frees it on drop.
struct TokenizePass<'a>(&'a TokenizeGate);

impl TokenizeGate {
    fn enter(&self) -> Result<TokenizePass<'_>, ChatError> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.0 >= self.slots {
            if st.1 >= TOKENIZE_WAITING {
                return Err(ChatError::Busy);
            }
            st.1 += 1;
            while st.0 >= self.slots {
                st = self.free.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            st.1 -= 1;
        }
        st.0 += 1;
        Ok(TokenizePass(self))
    }
}

impl Drop for TokenizePass<'_> {
    fn drop(&mut self) {
        let mut st = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        st.0 -= 1;
        drop(st);
        self.0.free.notify_one();
    }
}

/// A loaded model with its worker thread. Cheap to share behind an `Arc`.
pub struct Engine {
    model_id: String,
    context_length: usize,
    max_tokens_cap: u32,
    max_prompt_tokens: usize,
    tokenizer: Arc<Tokenizer>,
    template: ChatTemplate,
    /// Ids of `<|im_start|>` and `<|im_end|>`.
    im_ids: (u32, u32),
    tokenize: TokenizeGate,
    shared: Arc<engine::Shared>,
    capacity: usize,
    max_batch: usize,
    kv_budget: usize,
    kv_per_token: usize,
    worker: Option<std::thread::JoinHandle<()>>,
}

/// The model's id from the file name: `SmolLM2-135M-Instruct.Q4_1.gguf` -> `SmolLM2-135M-Instruct`.
fn model_id_of(path: &Path) -> String {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("model");
    let stem = name.strip_suffix(".gguf").unwrap_or(name);
    let is_quant_tag = |t: &str| {
        let t = t.to_ascii_uppercase();
        let b = t.as_bytes();
        (b.len() >= 2 && b[0] == b'Q' && b[1].is_ascii_digit())
            || t.starts_with("IQ")
            || matches!(t.as_str(), "F16" | "F32" | "BF16")
    };
    match stem.rsplit_once('.') {
        Some((head, tail)) if !head.is_empty() && is_quant_tag(tail) => head.to_string(),
        _ => stem.to_string(),
    }
}

/// Sets the size of candle's CPU worker pool before its first use (the pool is
/// process-wide: the first engine of a process decides it, and an explicit
/// `CANDLE_NUM_THREADS` in the environment wins).
fn configure_threads(threads: Option<usize>) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Some(n) = threads.filter(|&n| n > 0) {
            if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
                std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
            }
        }
    });
}

impl Engine {
    /// Loads the GGUF at `path`, re-quantises it for speed and starts the worker.
    pub fn load(path: &Path, options: EngineOptions) -> Result<Engine, ChatError> {
        Engine::load_with(path, options, WeightFormat::Q8_0)
    }

    /// [`Engine::load`] with a choice of weight format (benchmarks compare them).
    pub fn load_with(path: &Path, options: EngineOptions, format: WeightFormat) -> Result<Engine, ChatError> {
        let err = |reason: String| ChatError::Load { path: path.display().to_string(), reason };
        configure_threads(options.threads);
        let (model, tokenizer, template) = load_parts(path, format).map_err(err)?;
        let context_length = model.config.context_length;
        let im_ids = match (tokenizer.token_id(chat_template::IM_START), tokenizer.token_id(chat_template::IM_END)) {
            (Some(a), Some(b)) => (a, b),
            _ => return Err(err("the vocabulary has no <|im_start|>/<|im_end|> (not a ChatML model)".into())),
        };
        let tokenizer = Arc::new(tokenizer);
        let shared = Arc::new(engine::Shared {
            queue: std::sync::Mutex::new(engine::QueueState { jobs: Default::default(), stopped: false, active: 0 }),
            wake: std::sync::Condvar::new(),
            demand: Arc::new(AtomicUsize::new(0)),
            kv_reserved: Arc::new(AtomicUsize::new(0)),
            counters: Default::default(),
            hook: options.hook.clone(),
        });
        let max_prompt_tokens = match options.max_prompt_tokens {
            0 => context_length,
            n => n.min(context_length),
        };
        let kv_per_token = model.kv_bytes_per_token();
        let largest = (max_prompt_tokens + options.max_tokens_cap as usize).min(context_length) * kv_per_token;
        let kv_budget = options.kv_cache_bytes.max(largest);
        let max_batch = options.max_batch.max(1);
        let worker = engine::Worker::new(model, tokenizer.clone(), shared.clone(), max_batch, kv_budget);
        let worker = std::thread::Builder::new()
            .name("tpow-chat".into())
            .spawn(move || worker.run())
            .map_err(|e| err(format!("cannot start the worker thread: {e}")))?;
        Ok(Engine {
            model_id: model_id_of(path),
            context_length,
            max_tokens_cap: options.max_tokens_cap,
            max_prompt_tokens,
            tokenizer,
            template,
            im_ids,
            tokenize: TokenizeGate {
                state: std::sync::Mutex::new((0, 0)),
                free: std::sync::Condvar::new(),
                slots: options.tokenize_slots.max(1),
            },
            shared,
            capacity: options.queue_capacity,
            max_batch,
            kv_budget,
            kv_per_token,
            worker: Some(worker),
        })
    }

    /// The model's id as the API lists it (e.g. `SmolLM2-135M-Instruct`).
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// Context window in tokens.
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// Largest accepted `max_tokens`.
    pub fn max_tokens_cap(&self) -> u32 {
        self.max_tokens_cap
    }

    /// The sampling settings recommended for this model, if known.
    pub fn recommended_sampling(&self) -> Option<SamplingDefaults> {
        recommended_sampling(&self.model_id)
    }

    /// Most prompt tokens one request may bring.
    pub fn max_prompt_tokens(&self) -> usize {
        self.max_prompt_tokens
    }

    /// The engine's load now.
    pub fn stats(&self) -> EngineStats {
        let (active, queued) = {
            let st = self.shared.lock();
            (st.active, st.jobs.len())
        };
        let c = &self.shared.counters;
        EngineStats {
            active,
            queued,
            max_batch: self.max_batch,
            kv_budget_bytes: self.kv_budget,
            kv_reserved_bytes: self.shared.kv_reserved.load(Ordering::SeqCst),
            kv_allocated_bytes: c.kv_allocated.load(Ordering::Relaxed),
            kv_bytes_per_token: self.kv_per_token,
            steps: c.steps.load(Ordering::Relaxed),
            cancelled: c.cancelled.load(Ordering::Relaxed),
            cancelled_tokens: c.cancelled_tokens.load(Ordering::Relaxed),
        }
    }

    /// Requests queued or running; the node's scheduler reads it to make mining yield.
    pub fn demand(&self) -> Arc<AtomicUsize> {
        self.shared.demand.clone()
    }

    /// The tokenizer of the model.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The prompt text the engine feeds the model for `messages`.
    pub fn render_prompt(&self, messages: &[Message]) -> String {
        self.template.render(messages)
    }

    /// The prompt ids of `messages`, as [`Engine::submit`] feeds them to the model:
    /// the template's control tokens, and the messages' text tokenised as plain
    /// text (special-token strings in it stay text).
    pub fn prompt_tokens(&self, messages: &[Message]) -> Result<Vec<u32>, ChatError> {
        match self.encode_prompt(messages, usize::MAX)? {
            Ok(tokens) => Ok(tokens),
            Err((tokens, _)) => Err(ChatError::PromptOverBudget { tokens, at_least: true, budget: usize::MAX }),
        }
    }

    /// Tokenises the prompt, giving up as soon as it is over `limit` tokens:
    /// `Err((count, at_least))` then, `count` being what was seen (`at_least`: the
    /// prompt is longer still). A prompt whose byte length alone proves it over
    /// `limit` is refused before any tokenising.
    fn encode_prompt(&self, messages: &[Message], limit: usize) -> Result<Result<Vec<u32>, (usize, bool)>, ChatError> {
        let parts = self.template.parts(messages);
        let (controls, text_bytes) = parts.iter().fold((0usize, 0usize), |(c, b), p| match p {
            Part::Control(_) => (c + 1, b),
            Part::Text(t) => (c, b + t.len()),
        });
        // Every token stands for at most max_token_bytes bytes of text.
        let floor = controls + text_bytes.div_ceil(self.tokenizer.max_token_bytes());
        if floor > limit {
            return Ok(Err((floor, true)));
        }
        let _pass = self.tokenize.enter()?;
        let mut tokens = Vec::new();
        for part in &parts {
            match part {
                Part::Control(c) => {
                    tokens.push(if *c == chat_template::IM_START { self.im_ids.0 } else { self.im_ids.1 })
                }
                Part::Text(t) => {
                    if !self.tokenizer.encode_plain_bounded(t, limit, &mut tokens).map_err(ChatError::InvalidParam)? {
                        return Ok(Err((tokens.len(), true)));
                    }
                }
            }
            if tokens.len() > limit {
                return Ok(Err((tokens.len(), true)));
            }
        }
        Ok(Ok(tokens))
    }

    /// Validates, tokenises and queues a generation. Errors are the caller's
    /// (400-class) except `QueueFull` and `Busy` (429) and `Stopped`.
    ///
    /// Cheap checks come first; the prompt is tokenised under a cap on concurrent
    /// tokenisations and only up to the most tokens it may have, so a refused
    /// request costs little whatever its size.
    pub fn submit(&self, messages: Vec<Message>, params: GenerateParams) -> Result<Generation, ChatError> {
        if messages.is_empty() {
            return Err(ChatError::EmptyMessages);
        }
        if let Some(asked) = params.max_tokens {
            if asked > self.max_tokens_cap {
                return Err(ChatError::MaxTokensOverCap { asked, cap: self.max_tokens_cap });
            }
            if asked == 0 {
                return Err(ChatError::InvalidParam("max_tokens must be at least 1".into()));
            }
        }
        if !params.temperature.is_finite() || params.temperature < 0.0 {
            return Err(ChatError::InvalidParam(format!("temperature {} must be finite and >= 0", params.temperature)));
        }
        if !(params.top_p > 0.0 && params.top_p <= 1.0) {
            return Err(ChatError::InvalidParam(format!("top_p {} must be in (0, 1]", params.top_p)));
        }
        // The context must hold the prompt and at least max_tokens (1 by default) more.
        let min_new = params.max_tokens.unwrap_or(1);
        let context_room = self.context_length.saturating_sub(min_new as usize);
        let limit = context_room.min(self.max_prompt_tokens);
        let tokens = match self.encode_prompt(&messages, limit)? {
            Ok(tokens) => tokens,
            Err((tokens, at_least)) if limit == context_room => {
                return Err(ChatError::PromptTooLong {
                    tokens,
                    at_least,
                    max_tokens: min_new,
                    limit: self.context_length,
                })
            }
            Err((tokens, at_least)) => {
                return Err(ChatError::PromptOverBudget { tokens, at_least, budget: self.max_prompt_tokens })
            }
        };
        let max_tokens = match params.max_tokens {
            Some(m) => m,
            None => {
                let room = self.context_length - tokens.len();
                u32::try_from(room).unwrap_or(u32::MAX).min(self.max_tokens_cap)
            }
        };
        let prompt_tokens = tokens.len() as u32;
        // Every token makes at most one event, plus a final flush and `Done`: the
        // worker never waits on a slow reader.
        let (tx, rx) = tokio::sync::mpsc::channel(max_tokens as usize + 2);
        let cancel = Arc::new(AtomicBool::new(false));
        // The job's worst case: prompt plus max_tokens positions.
        let kv_bytes = (tokens.len() + max_tokens as usize) * self.kv_per_token;
        {
            let mut state = self.shared.lock();
            if state.stopped {
                return Err(ChatError::Stopped);
            }
            self.shared.purge_cancelled(&mut state);
            // Room in the batch counts as room in the queue: the worker admits at
            // its next step.
            if state.jobs.len() + state.active >= self.capacity + self.max_batch {
                return Err(ChatError::QueueFull);
            }
            let budget = self.kv_budget;
            let reserved = self
                .shared
                .kv_reserved
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| (r + kv_bytes <= budget).then_some(r + kv_bytes));
            if let Err(r) = reserved {
                return Err(ChatError::KvCacheFull { needed: kv_bytes, free: budget.saturating_sub(r), budget });
            }
            self.shared.demand.fetch_add(1, Ordering::SeqCst);
            let hold = engine::Hold {
                demand: self.shared.demand.clone(),
                kv_reserved: self.shared.kv_reserved.clone(),
                kv_bytes,
            };
            state.jobs.push_back(engine::Job {
                tokens,
                max_tokens,
                params,
                events: tx,
                cancel: cancel.clone(),
                _hold: hold,
            });
        }
        self.shared.wake.notify_one();
        Ok(Generation { prompt_tokens, events: rx, cancel, shared: Arc::downgrade(&self.shared) })
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shared.lock().stopped = true;
        self.shared.wake.notify_all();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// Reads the model, the tokenizer and the chat template of a GGUF file.
fn load_parts(path: &Path, format: WeightFormat) -> Result<(Model, Tokenizer, ChatTemplate), String> {
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut reader = std::io::BufReader::new(&mut file);
    let ct =
        candle_core::quantized::gguf_file::Content::read(&mut reader).map_err(|e| format!("not a GGUF file: {e}"))?;
    let tokenizer = Tokenizer::from_gguf(&ct)?;
    let template = ct
        .metadata
        .get("tokenizer.chat_template")
        .and_then(|v| v.to_string().ok())
        .map(|t| ChatTemplate::from_jinja(t))
        .unwrap_or(ChatTemplate { default_system: None });
    let model = Model::load(&ct, &mut reader, format).map_err(|e| e.to_string())?;
    if model.config.vocab_size != tokenizer.vocab_size() {
        return Err(format!(
            "the model has {} token embeddings but the tokenizer {} tokens",
            model.config.vocab_size,
            tokenizer.vocab_size()
        ));
    }
    Ok((model, tokenizer, template))
}

/// A queued or running generation. Dropping it cancels the generation.
pub struct Generation {
    /// Tokens of the rendered prompt.
    pub prompt_tokens: u32,
    events: tokio::sync::mpsc::Receiver<Event>,
    cancel: Arc<AtomicBool>,
    /// The engine's queue, to drop this request from it at once when cancelled.
    shared: std::sync::Weak<engine::Shared>,
}

impl Generation {
    /// The next event; `None` after `Done`/`Error`.
    pub async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// The next event, blocking the thread (not for async code).
    pub fn blocking_next(&mut self) -> Option<Event> {
        self.events.blocking_recv()
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        // Still queued: leave the queue now, so that `demand` and the queue's room are
        // right at once (a running generation stops at its next token).
        if let Some(shared) = self.shared.upgrade() {
            let mut state = shared.lock();
            shared.purge_cancelled(&mut state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{model_id_of, ChatError, TokenizeGate, TOKENIZE_WAITING};
    use std::path::Path;
    use std::sync::Arc;

    #[test]
    fn tokenize_gate_caps_running_and_waiting() {
        let gate =
            Arc::new(TokenizeGate { state: std::sync::Mutex::new((0, 0)), free: std::sync::Condvar::new(), slots: 1 });
        let pass = gate.enter().expect("a free slot");
        let waiters: Vec<_> = (0..TOKENIZE_WAITING)
            .map(|_| {
                let g = gate.clone();
                std::thread::spawn(move || g.enter().map(drop).is_ok())
            })
            .collect();
        // Every waiter is counted before the next submission is refused.
        while gate.state.lock().unwrap().1 < TOKENIZE_WAITING {
            std::thread::yield_now();
        }
        assert!(matches!(gate.enter().map(drop), Err(ChatError::Busy)));
        drop(pass);
        for w in waiters {
            assert!(w.join().unwrap(), "a waiter gets its slot once one frees");
        }
        assert_eq!(*gate.state.lock().unwrap(), (0, 0));
    }

    #[test]
    fn smollm2_sampling_defaults() {
        let d = super::recommended_sampling("SmolLM2-135M-Instruct").expect("known");
        assert_eq!((d.temperature, d.top_p), (0.2, 0.9));
        assert_eq!(super::recommended_sampling("llama-3.2-1b"), None);
    }

    #[test]
    fn model_id_from_file_name() {
        assert_eq!(model_id_of(Path::new("/m/SmolLM2-135M-Instruct.Q4_1.gguf")), "SmolLM2-135M-Instruct");
        assert_eq!(model_id_of(Path::new("x/llama-3.2-1b.gguf")), "llama-3.2-1b");
        assert_eq!(model_id_of(Path::new("a.F16.gguf")), "a");
        assert_eq!(model_id_of(Path::new("model.bin")), "model.bin");
    }
}
