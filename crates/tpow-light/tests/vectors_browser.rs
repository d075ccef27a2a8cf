//! The test vectors reproduce in headless Chromium, on the CPU (wasm) and, where
//! the browser offers a WebGPU adapter, on WebGPU through tpow-gpu:
//! `CHROMEDRIVER=/usr/bin/chromedriver WASM_BINDGEN_TEST_WEBDRIVER_JSON=tests/light/webdriver.json
//!  CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner cargo test -p tpow-light
//!  --target wasm32-unknown-unknown --test vectors_browser`
//! Set `TPOW_REQUIRE_WEBGPU` at build time to fail instead of skipping the GPU half
//! when no adapter is offered.
#![cfg(target_arch = "wasm32")]

mod common;

use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
fn devnet_vectors_in_browser_cpu() {
    assert!(common::check_cpu("devnet") >= 10);
}

#[wasm_bindgen_test]
fn mainnet_vectors_in_browser_cpu() {
    assert!(common::check_cpu("mainnet") >= 4);
}

#[wasm_bindgen_test]
async fn vectors_on_webgpu() {
    let ctx = match tpow_gpu::GpuContext::new(&tpow_gpu::GpuOptions::default()).await {
        Ok(c) => c,
        Err(e) => {
            assert!(option_env!("TPOW_REQUIRE_WEBGPU").is_none(), "no WebGPU adapter: {e}");
            web_sys_log(&format!("WebGPU unavailable, GPU half skipped: {e}"));
            return;
        }
    };
    web_sys_log(&format!("WebGPU adapter: {:?}", ctx.adapter()));
    let mut v = tpow_gpu::GpuVerifier::new(&ctx);
    for chain in ["devnet", "mainnet"] {
        let vectors = common::load(chain);
        for c in &vectors.cases {
            let d = v.output_digest_async(&common::input(chain, c)).await.expect("GPU pass");
            assert_eq!(hex::encode(d), c.output_digest, "{chain} nonce {} on WebGPU", c.nonce);
        }
    }
}

fn web_sys_log(s: &str) {
    wasm_bindgen_test::console_log!("{s}");
}
