//! Benchmark, not a test: one mainnet header on WebGPU in headless Chromium, its
//! model derived in wasm and uploaded (before) against derived on the GPU (after,
//! what `GpuVerifier` does), each on a parent not seen before. Prints a table; does
//! nothing unless built with `TPOW_BENCH=1`:
//! `TPOW_BENCH=1 WASM_BINDGEN_TEST_TIMEOUT=600 CHROMEDRIVER=/usr/bin/chromedriver
//!  WASM_BINDGEN_TEST_WEBDRIVER_JSON=$PWD/tests/light/webdriver.json
//!  CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner cargo test
//!  -p tpow-light --target wasm32-unknown-unknown --locked --release --test gpu_derive_bench -- --nocapture`
#![cfg(target_arch = "wasm32")]

#[allow(dead_code)]
mod common;

use tpow_core::chain::PowInput;
use tpow_core::Model;
use wasm_bindgen_test::{console_log, wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

fn now_ms() -> f64 {
    js_sys::Date::now()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[wasm_bindgen_test]
async fn mainnet_header_on_webgpu_cpu_vs_gpu_derivation() {
    if option_env!("TPOW_BENCH").is_none() {
        return;
    }
    let ctx = match tpow_gpu::GpuContext::new(&tpow_gpu::GpuOptions::default()).await {
        Ok(c) => c,
        Err(e) => {
            console_log!("no WebGPU adapter: {e}");
            return;
        }
    };
    let vectors = common::load("mainnet");
    let base = common::input("mainnet", &vectors.cases[0]);
    // A parent not seen before for every timed header (the vector's own first, so
    // the digest is checked once per path).
    let fresh = |i: u8| PowInput {
        spec: base.spec,
        prev_id: [i; 32],
        template: base.template,
        nonce: base.nonce,
        output_digest: base.output_digest,
    };
    let (mut derive_cpu, mut before, mut after, mut pass) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut cpu_path = tpow_gpu::GpuVerifier::new(&ctx);
    let mut gpu_path = tpow_gpu::GpuVerifier::new(&ctx);
    let model = Model::derive(&base.spec, &base.prev_id).expect("spec");
    cpu_path.set_model_async(&model).await.expect("upload");
    let want = &vectors.cases[0].output_digest;
    let t = now_ms();
    let warm = cpu_path.output_digest_async(&base).await.expect("pass");
    let first_cpu = now_ms() - t;
    assert_eq!(&hex::encode(warm), want, "the vector on a CPU-derived model");
    let t = now_ms();
    let warm = gpu_path.output_digest_async(&base).await.expect("pass");
    let first_gpu = now_ms() - t;
    assert_eq!(&hex::encode(warm), want, "the vector on a GPU-derived model");
    for i in 1..=5u8 {
        let input = fresh(i);
        let t = now_ms();
        let model = Model::derive(&input.spec, &input.prev_id).expect("spec");
        derive_cpu.push(now_ms() - t);
        cpu_path.set_model_async(&model).await.expect("upload");
        let a = cpu_path.output_digest_async(&input).await.expect("pass");
        before.push(now_ms() - t);
        let t = now_ms();
        let b = gpu_path.output_digest_async(&input).await.expect("pass");
        after.push(now_ms() - t);
        // The same header again: the model stays loaded, so this is the pass alone.
        let t = now_ms();
        gpu_path.output_digest_async(&input).await.expect("pass");
        pass.push(now_ms() - t);
        assert_eq!(a, b, "GPU-derived model gives another digest");
    }
    console_log!("WebGPU adapter: {:?}", ctx.adapter());
    console_log!("| mainnet header on a new parent, WebGPU | median of 5 (ms) |");
    console_log!("| --- | ---: |");
    console_log!("| model derived in wasm (alone) | {:.0} |", median(derive_cpu));
    console_log!("| before: derived in wasm + uploaded + pass | {:.0} |", median(before));
    console_log!("| after: derived on the GPU + pass | {:.0} |", median(after));
    console_log!("| the pass alone (model loaded) | {:.0} |", median(pass));
    console_log!("first header (kernel compilation): before {first_cpu:.0} ms, after {first_gpu:.0} ms");
}
