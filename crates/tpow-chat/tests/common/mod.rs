//! Shared by the integration tests: where the model is, and a shared engine.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use tpow_chat::{Engine, EngineOptions, Event, FinishReason, GenerateParams, Generation, Message, Role, Usage};

/// The model file: `TPOW_MODEL`, else `<workspace>/models/SmolLM2-135M-Instruct.Q4_1.gguf`.
/// Panics (fails the test) when it is missing.
pub fn model_path() -> PathBuf {
    let path = match std::env::var_os("TPOW_MODEL") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf"),
    };
    assert!(
        path.is_file(),
        "the chat model is missing at {}: run scripts/fetch-model.sh (or set TPOW_MODEL to the GGUF file)",
        path.display()
    );
    path
}

/// One engine shared by the tests that only generate (loading takes a second or two).
pub fn shared_engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        Engine::load(
            &model_path(),
            EngineOptions { queue_capacity: 64, max_prompt_tokens: 0, ..EngineOptions::default() },
        )
        .expect("the model loads")
    })
}

pub fn user(text: &str) -> Vec<Message> {
    vec![Message { role: Role::User, content: text.into() }]
}

pub fn greedy(max_tokens: u32) -> GenerateParams {
    GenerateParams { max_tokens: Some(max_tokens), temperature: 0.0, top_p: 1.0, seed: 0, stop: vec![] }
}

/// The result of a whole generation.
#[derive(Debug)]
pub struct Output {
    pub text: String,
    pub pieces: Vec<String>,
    pub finish: FinishReason,
    pub usage: Usage,
}

/// Reads a generation to its end (blocking).
pub fn collect(mut g: Generation) -> Output {
    let mut pieces = Vec::new();
    loop {
        match g.blocking_next() {
            Some(Event::Token(t)) => pieces.push(t),
            Some(Event::Done { finish, usage }) => {
                assert!(g.blocking_next().is_none(), "nothing comes after Done");
                return Output { text: pieces.concat(), pieces, finish, usage };
            }
            Some(Event::Error(e)) => panic!("generation failed: {e}"),
            None => panic!("the generation ended without Done"),
        }
    }
}

pub fn run(engine: &Engine, messages: Vec<Message>, params: GenerateParams) -> Output {
    collect(engine.submit(messages, params).expect("submit"))
}
