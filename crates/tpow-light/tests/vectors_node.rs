//! The test vectors reproduce in wasm32 under Node.js:
//! `CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner cargo test -p tpow-light --target wasm32-unknown-unknown --test vectors_node`
#![cfg(target_arch = "wasm32")]

mod common;

use wasm_bindgen_test::wasm_bindgen_test;

#[wasm_bindgen_test]
fn devnet_vectors_in_wasm() {
    assert!(common::check_cpu("devnet") >= 10);
}

#[wasm_bindgen_test]
fn mainnet_vectors_in_wasm() {
    assert!(common::check_cpu("mainnet") >= 4);
}
