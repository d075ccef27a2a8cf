//! The official `openai` Python client (tests/openai) against a node serving the
//! local model.
//!
//! Needs a Python with the packages of tests/openai/requirements.txt: `TPOW_PYTHON`,
//! else `${TPOW_CACHE:-$HOME/.cache/tpow}/venv/bin/python` (scripts/test.sh installs
//! them there). Without one the test says so and passes, unless
//! `TPOW_OPENAI_TEST=1` demands it (scripts/test.sh sets it).

mod common;

use std::process::Command;

use common::chat::model_path;
use common::{python, serial, Node, Opts};

#[test]
fn the_official_openai_client_works_against_the_node() {
    let _guard = serial();
    let py = python();
    let has_openai = Command::new(&py).args(["-c", "import openai, blake3"]).output().is_ok_and(|o| o.status.success());
    if !has_openai {
        let demanded = std::env::var("TPOW_OPENAI_TEST").is_ok_and(|v| v == "1");
        assert!(!demanded, "TPOW_OPENAI_TEST=1 but {} cannot import openai and blake3", py.display());
        eprintln!("SKIPPED: {} lacks the packages of tests/openai/requirements.txt", py.display());
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let chat = vec!["--model".into(), model_path().display().to_string()];
    let n = Node::start(&tmp.path().join("n"), &Opts { chat: Some(chat), ..Default::default() });
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/openai/test_openai_client.py");
    let out = Command::new(&py)
        .arg(&script)
        .env("TPOW_BASE_URL", format!("http://{}/v1", n.http))
        .env("TPOW_MODEL_ID", "SmolLM2-135M-Instruct")
        .output()
        .expect("run python");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the openai client test failed:\n{text}\nnode log:\n{}", n.log());
    eprintln!("{text}");
}
