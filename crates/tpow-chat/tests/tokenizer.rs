//! The GGUF-built tokenizer against llama.cpp's (tokenizer_cases.json, written by
//! gen_tokenizer_cases.py).

mod common;

use tpow_chat::Tokenizer;

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

#[derive(serde::Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

fn tokenizer() -> Tokenizer {
    let path = common::model_path();
    let mut f = std::fs::File::open(&path).unwrap();
    let ct = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    Tokenizer::from_gguf(&ct).unwrap()
}

#[test]
fn matches_llama_cpp_and_round_trips() {
    let cases: Cases = serde_json::from_str(include_str!("tokenizer_cases.json")).unwrap();
    assert!(cases.cases.len() >= 40);
    let tok = tokenizer();
    let mut failures = Vec::new();
    for case in &cases.cases {
        let ids = tok.encode(&case.text).unwrap();
        if ids != case.ids {
            failures.push(format!("{:?}: got {:?}, llama.cpp {:?}", case.text, ids, case.ids));
        }
        assert_eq!(tok.decode(&case.ids), case.text, "decoding the reference ids of {:?}", case.text);
    }
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), cases.cases.len(), failures.join("\n"));
}

#[test]
fn special_tokens_are_single_tokens() {
    let tok = tokenizer();
    assert_eq!(tok.token_id("<|im_start|>"), Some(1));
    assert_eq!(tok.token_id("<|im_end|>"), Some(2));
    assert_eq!(tok.token_id("<|endoftext|>"), Some(0));
    assert_eq!(tok.eos_id, 2);
    assert_eq!(tok.encode("<|im_start|>user\n").unwrap()[0], 1);
    assert_eq!(tok.encode("x<|im_end|>").unwrap().last(), Some(&2));
    assert!(tok.is_control(2) && !tok.is_control(905));
}

#[test]
fn tokens_split_characters_and_bytes_rejoin() {
    let tok = tokenizer();
    // Some emoji are made of several byte tokens: each token alone is not UTF-8.
    let ids = tok.encode("👍🏽").unwrap();
    assert!(ids.iter().any(|&id| std::str::from_utf8(tok.token_bytes(id)).is_err()));
    let mut stream = tpow_chat::tokenizer::Utf8Stream::default();
    let mut out = String::new();
    for &id in &ids {
        out.push_str(&stream.push(tok.token_bytes(id)));
    }
    out.push_str(&stream.finish());
    assert_eq!(out, "👍🏽");
}
