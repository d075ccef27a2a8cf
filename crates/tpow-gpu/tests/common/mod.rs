//! Shared by the integration tests: opening the GPU, or failing clearly.

#![allow(dead_code)]

use tpow_gpu::{GpuContext, GpuOptions, PackedDot};

/// The device for `packed_dot`, or `None` when there is none and
/// `TPOW_GPU_TESTS=skip` is set. Without that variable a missing adapter fails the
/// test: CI has lavapipe (`apt-get install mesa-vulkan-drivers libvulkan1`), so a
/// silent skip would hide a broken setup.
pub fn gpu(packed_dot: PackedDot) -> Option<GpuContext> {
    let opts = GpuOptions { packed_dot, ..GpuOptions::default() };
    match GpuContext::new_blocking(&opts) {
        Ok(ctx) => {
            eprintln!("GPU: {:?}", ctx.adapter());
            Some(ctx)
        }
        Err(e) if std::env::var("TPOW_GPU_TESTS").as_deref() == Ok("skip") => {
            eprintln!("no GPU ({e}); skipped because TPOW_GPU_TESTS=skip");
            None
        }
        Err(e) => panic!(
            "no GPU adapter for the tpow-gpu tests: {e}. Install a Vulkan driver (on Debian \
             without a GPU: apt-get install mesa-vulkan-drivers libvulkan1 for lavapipe), \
             or set TPOW_GPU_TESTS=skip to skip these tests."
        ),
    }
}

/// Both kernel variants that the adapter offers: `dot4I8Packed` (when available) and
/// the unpacked fallback.
pub fn both_variants() -> Vec<(PackedDot, GpuContext)> {
    let mut v = Vec::new();
    for mode in [PackedDot::Auto, PackedDot::Off] {
        if let Some(ctx) = gpu(mode) {
            if mode == PackedDot::Auto && !ctx.adapter().packed_dot {
                eprintln!("adapter lacks dot4I8Packed: only the fallback is tested");
                continue;
            }
            v.push((mode, ctx));
        }
    }
    v
}
