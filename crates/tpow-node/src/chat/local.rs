//! The local backend: the tpow-chat engine in this process.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::http::StatusCode;
use futures::StreamExt;
use serde_json::Value;
use tpow_chat::{Engine, Event, FinishReason, GenerateParams, Generation};

use super::openai::{engine_error, ChatApiError, ChatRequest, Usage};
use super::{models, BackendInfo, ChatBackend, Completion, Piece};

/// Serves chat with a loaded [`Engine`].
pub struct LocalBackend {
    engine: Arc<Engine>,
}

impl LocalBackend {
    pub fn new(engine: Arc<Engine>) -> LocalBackend {
        LocalBackend { engine }
    }
}

/// A seed for requests that sample without one: different per request.
fn fresh_seed() -> u64 {
    use std::sync::atomic::AtomicU64;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let mut h = blake3::Hasher::new();
    h.update(&t.to_le_bytes());
    h.update(&n.to_le_bytes());
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(out)
}

/// Queues the generation (blocking: it tokenises the prompt, once, bounded by
/// the context and the node's prompt budget; the engine fills in the default
/// `max_tokens` from that same tokenisation).
fn submit(engine: &Engine, request: ChatRequest) -> Result<Generation, ChatApiError> {
    let params = GenerateParams {
        max_tokens: request.max_tokens,
        temperature: request.temperature,
        top_p: request.top_p,
        seed: request.seed.unwrap_or_else(fresh_seed),
        stop: request.stop,
    };
    engine.submit(request.messages, params).map_err(engine_error)
}

#[async_trait::async_trait]
impl ChatBackend for LocalBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: "local",
            models: vec![self.engine.model_id().to_string()],
            demand: Some(self.engine.demand().load(Ordering::SeqCst)),
            engine: Some(self.engine.stats()),
            sampling: self.engine.recommended_sampling(),
            unavailable: None,
        }
    }

    async fn list_models(&self) -> Result<Value, ChatApiError> {
        serde_json::to_value(models(&[self.engine.model_id().to_string()]))
            .map_err(|e| ChatApiError::server(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    }

    fn demand_counter(&self) -> Option<Arc<std::sync::atomic::AtomicUsize>> {
        Some(self.engine.demand())
    }

    async fn start(&self, request: ChatRequest, _raw: Value) -> Result<Completion, ChatApiError> {
        let model = self.engine.model_id().to_string();
        if request.model != model {
            return Err(ChatApiError::invalid(
                format!("the model {:?} is not served here; this node serves {model:?}", request.model),
                Some("model"),
                Some("model_not_found"),
            ));
        }
        let engine = self.engine.clone();
        let generation = tokio::task::spawn_blocking(move || submit(&engine, request))
            .await
            .map_err(|e| ChatApiError::server(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
        // The stream owns the Generation: when the HTTP body is dropped (the client
        // went away), the generation is cancelled.
        let pieces = futures::stream::unfold(Some(generation), |state| async move {
            let mut generation = state?;
            let item = match generation.next().await {
                Some(Event::Token(text)) => return Some((Ok(Piece::Text(text)), Some(generation))),
                Some(Event::Done { finish, usage }) => Ok(Piece::Finish {
                    reason: match finish {
                        FinishReason::Stop => "stop".into(),
                        FinishReason::Length => "length".into(),
                    },
                    usage: Some(Usage::new(usage.prompt_tokens, usage.completion_tokens)),
                }),
                Some(Event::Error(e)) => Err(ChatApiError::server(StatusCode::INTERNAL_SERVER_ERROR, e)),
                None => Err(ChatApiError::unavailable("the generation ended without a result")),
            };
            // After the last event nothing more comes.
            Some((item, None))
        })
        .boxed();
        Ok(Completion { model, pieces })
    }
}
