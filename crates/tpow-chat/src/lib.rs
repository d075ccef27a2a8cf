//! The chat engine of a tpow node.
//!
//! A node serves language models next to mining; this crate is the model side:
//! it loads a GGUF file (SmolLM2-135M-Instruct by default) with candle, builds the
//! tokenizer from the GGUF's own metadata, renders ChatML prompts, and runs
//! generation on a dedicated worker thread behind a bounded queue. It knows
//! nothing about HTTP: the node's OpenAI-compatible API is a thin layer on top.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

pub mod chat_template;
mod engine;
pub mod model;
pub mod sampling;
pub mod tokenizer;

pub use chat_template::ChatTemplate;
pub use model::{Model, WeightFormat};
pub use tokenizer::Tokenizer;

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
    /// Most tokens to generate (already checked against the engine's cap).
    pub max_tokens: u32,
    /// 0 means greedy.
    pub temperature: f32,
    /// Nucleus sampling mass in (0, 1]; 1 disables it.
    pub top_p: f32,
    /// Seed of the sampler (same seed, same prompt, same text).
    pub seed: u64,
    /// Generation stops before any of these strings (which are not emitted).
    pub stop: Vec<String>,
}

/// Options of [`Engine::load`].
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Requests waiting beyond the running one; more are refused with
    /// [`ChatError::QueueFull`].
    pub queue_capacity: usize,
    /// Largest `max_tokens` a request may ask for.
    pub max_tokens_cap: u32,
    /// Threads of the matmul pool (None: all cores).
    pub threads: Option<usize>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions { queue_capacity: 4, max_tokens_cap: 512, threads: None }
    }
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
    #[error("prompt is {tokens} tokens; with max_tokens {max_tokens} it exceeds the context of {limit}")]
    PromptTooLong { tokens: usize, max_tokens: u32, limit: usize },
    #[error("max_tokens {asked} is over the cap of {cap}")]
    MaxTokensOverCap { asked: u32, cap: u32 },
    #[error("invalid parameter: {0}")]
    InvalidParam(String),
    #[error("the generation queue is full")]
    QueueFull,
    #[error("the engine has stopped")]
    Stopped,
}

/// A loaded model with its worker thread. Cheap to share behind an `Arc`.
pub struct Engine {
    model_id: String,
    context_length: usize,
    max_tokens_cap: u32,
    tokenizer: Arc<Tokenizer>,
    template: ChatTemplate,
    shared: Arc<engine::Shared>,
    capacity: usize,
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
        let tokenizer = Arc::new(tokenizer);
        let shared = Arc::new(engine::Shared {
            queue: std::sync::Mutex::new(engine::QueueState { jobs: Default::default(), stopped: false }),
            wake: std::sync::Condvar::new(),
            demand: Arc::new(AtomicUsize::new(0)),
        });
        let worker = engine::Worker {
            model,
            tokenizer: tokenizer.clone(),
            shared: shared.clone(),
            history: Vec::new(),
            reusable: 0,
        };
        let worker = std::thread::Builder::new()
            .name("tpow-chat".into())
            .spawn(move || worker.run())
            .map_err(|e| err(format!("cannot start the worker thread: {e}")))?;
        Ok(Engine {
            model_id: model_id_of(path),
            context_length,
            max_tokens_cap: options.max_tokens_cap,
            tokenizer,
            template,
            shared,
            capacity: options.queue_capacity,
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

    /// Validates, tokenises and queues a generation. Errors are the caller's
    /// (400-class) except `QueueFull` (429/503) and `Stopped`.
    pub fn submit(&self, messages: Vec<Message>, params: GenerateParams) -> Result<Generation, ChatError> {
        if messages.is_empty() {
            return Err(ChatError::EmptyMessages);
        }
        if params.max_tokens > self.max_tokens_cap {
            return Err(ChatError::MaxTokensOverCap { asked: params.max_tokens, cap: self.max_tokens_cap });
        }
        if params.max_tokens == 0 {
            return Err(ChatError::InvalidParam("max_tokens must be at least 1".into()));
        }
        if !params.temperature.is_finite() || params.temperature < 0.0 {
            return Err(ChatError::InvalidParam(format!("temperature {} must be finite and >= 0", params.temperature)));
        }
        if !(params.top_p > 0.0 && params.top_p <= 1.0) {
            return Err(ChatError::InvalidParam(format!("top_p {} must be in (0, 1]", params.top_p)));
        }
        let prompt = self.template.render(&messages);
        let tokens = self.tokenizer.encode(&prompt).map_err(ChatError::InvalidParam)?;
        if tokens.len() + params.max_tokens as usize > self.context_length {
            return Err(ChatError::PromptTooLong {
                tokens: tokens.len(),
                max_tokens: params.max_tokens,
                limit: self.context_length,
            });
        }
        let prompt_tokens = tokens.len() as u32;
        // Every token makes at most one event, plus a final flush and `Done`: the
        // worker never waits on a slow reader.
        let (tx, rx) = tokio::sync::mpsc::channel(params.max_tokens as usize + 2);
        let cancel = Arc::new(AtomicBool::new(false));
        {
            let mut state = self.shared.queue.lock().unwrap();
            if state.stopped {
                return Err(ChatError::Stopped);
            }
            self.shared.purge_cancelled(&mut state);
            if state.jobs.len() >= self.capacity {
                return Err(ChatError::QueueFull);
            }
            self.shared.demand.fetch_add(1, Ordering::SeqCst);
            state.jobs.push_back(engine::Job { tokens, params, events: tx, cancel: cancel.clone() });
        }
        self.shared.wake.notify_one();
        Ok(Generation { prompt_tokens, events: rx, cancel, shared: Arc::downgrade(&self.shared) })
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Ok(mut state) = self.shared.queue.lock() {
            state.stopped = true;
        }
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
            if let Ok(mut state) = shared.queue.lock() {
                shared.purge_cancelled(&mut state);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::model_id_of;
    use std::path::Path;

    #[test]
    fn model_id_from_file_name() {
        assert_eq!(model_id_of(Path::new("/m/SmolLM2-135M-Instruct.Q4_1.gguf")), "SmolLM2-135M-Instruct");
        assert_eq!(model_id_of(Path::new("x/llama-3.2-1b.gguf")), "llama-3.2-1b");
        assert_eq!(model_id_of(Path::new("a.F16.gguf")), "a");
        assert_eq!(model_id_of(Path::new("model.bin")), "model.bin");
    }
}
