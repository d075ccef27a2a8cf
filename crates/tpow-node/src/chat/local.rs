//! The local backend: the tpow-chat engine in this process.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::http::StatusCode;
use futures::StreamExt;
use serde_json::Value;
use tpow_chat::{Engine, Event, FinishReason, GenerateParams, Generation};

use super::openai::{engine_error, ChatApiError, ChatRequest, Usage};
use super::{models_json, BackendInfo, ChatBackend, Completion, Piece};

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

/// Tokenises, fills in the default `max_tokens` and queues the generation
/// (blocking: tokenising a long prompt takes a while).
fn submit(engine: &Engine, request: ChatRequest) -> Result<Generation, ChatApiError> {
    let max_tokens = match request.max_tokens {
        Some(m) => m,
        None => {
            // OpenAI's default: whatever fits; here also within the node's cap.
            let prompt = engine.render_prompt(&request.messages);
            let tokens = engine.tokenizer().encode(&prompt).map_err(|e| ChatApiError::invalid(e, None, None))?.len();
            let room = engine.context_length().saturating_sub(tokens);
            if room == 0 {
                return Err(engine_error(tpow_chat::ChatError::PromptTooLong {
                    tokens,
                    max_tokens: 1,
                    limit: engine.context_length(),
                }));
            }
            u32::try_from(room).unwrap_or(u32::MAX).min(engine.max_tokens_cap())
        }
    };
    let params = GenerateParams {
        max_tokens,
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
            unavailable: None,
        }
    }

    async fn list_models(&self) -> Result<Value, ChatApiError> {
        Ok(models_json(&[self.engine.model_id().to_string()]))
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
                    usage: Some(Usage {
                        prompt_tokens: usage.prompt_tokens,
                        completion_tokens: usage.completion_tokens,
                    }),
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
