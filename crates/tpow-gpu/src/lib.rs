//! The tpow integer forward pass on the GPU: WGSL compute shaders through wgpu.
//!
//! Bit-exact with `tpow_core::forward` (the reference): the kernels use only i32/u32
//! arithmetic, sum in a fixed order, and take every constant from `tpow-core` (shapes
//! and shifts are written into the generated WGSL, the GELU and 2^-x tables are
//! uploaded from its arrays). The committed test vectors reproduce through both modes,
//! with and without `dot4I8Packed`.
//!
//! Tests need a Vulkan adapter; without a GPU, Mesa's lavapipe (`apt-get install
//! mesa-vulkan-drivers libvulkan1`) runs them. With no adapter they fail, unless
//! `TPOW_GPU_TESTS=skip`. Benchmark: `cargo run --release -p tpow-gpu --example
//! gpu_bench`.
//!
//! Two modes:
//! - [`GpuVerifier`]: one nonce, low latency, for a light client checking a header
//!   (mirrors `tpow_core::ModelCache::output_digest`);
//! - [`GpuMiner`]: many nonces per dispatch with the weights uploaded once per block;
//!   tokens are derived and outputs hashed on the CPU (blake3), which costs a few
//!   microseconds per nonce against a forward pass of ~0.3 G multiply-accumulates.
//!
//! Natively the backend is pinned to Vulkan (Metal on Apple, Vulkan or DX12 on
//! Windows) unless `WGPU_BACKEND` names another: Mesa's GL adapter gets i32 division
//! wrong. In the browser it is WebGPU. Every failure is a [`GpuError`], never a panic,
//! so callers can fall back to the CPU.
//!
//! Native calls block (`pollster`); every operation also has an `async` form, which
//! is the only form on wasm32.
//!
//! A block's model can be derived on the GPU ([`GpuMiner::derive_model`]; the
//! verifier always does): BLAKE3 in WGSL expands each tensor's §5 stream, one
//! invocation per 64-byte output block, straight into the weight buffers, so neither
//! the CPU derivation nor the upload (5.8 MB on mainnet) is paid.

mod context;
mod derive;
mod engine;
mod miner;
mod shader;

pub use context::{AdapterSummary, GpuContext, GpuOptions, PackedDot};
pub use engine::DispatchTime;
pub use miner::{GpuMiner, GpuVerifier, MinerStats};

/// Access to the weight buffers for the bit-exactness tests (tests/derive.rs) and
/// the benchmark; not a stable interface.
#[doc(hidden)]
pub mod testing {
    use tpow_core::{Model, ModelSpec};

    use crate::{GpuContext, GpuError};

    /// The bytes of every weight buffer as [`crate::GpuMiner::set_model_async`]
    /// uploads them: token and position embeddings, then per layer q|k|v, attention
    /// output, MLP up, MLP down.
    pub fn uploaded_weights(model: &Model) -> Vec<Vec<u8>> {
        crate::engine::weight_bytes(model)
    }

    /// The same buffers for `Model::derive(spec, prev_id)`, derived on the GPU and
    /// read back.
    pub async fn derived_weights(
        ctx: &GpuContext,
        spec: &ModelSpec,
        prev_id: &[u8; 32],
    ) -> Result<Vec<Vec<u8>>, GpuError> {
        crate::derive::derived_bytes(ctx, spec, prev_id).await
    }

    /// The WGSL of the derivation kernel.
    pub fn derive_wgsl() -> String {
        crate::derive::module()
    }
}

/// Why a GPU operation failed. Every variant leaves the caller free to fall back to
/// the CPU forward pass; none of them means the header or the nonce is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuError {
    /// No adapter on the allowed backends (no GPU driver; WebGPU unavailable). Use the CPU.
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),
    /// The adapter refused to open a device. Use the CPU.
    #[error("the GPU adapter refused a device: {0}")]
    RequestDevice(String),
    /// The device's limits cannot hold this model (buffer sizes, dispatch sizes).
    #[error("the GPU's limits cannot hold this model: {0}")]
    UnsupportedLimits(String),
    /// An allocation failed. A smaller batch may fit; a verifier should use the CPU.
    #[error("GPU out of memory")]
    OutOfMemory,
    /// The device is gone (driver reset, GPU removed, browser tab backgrounded). A new
    /// [`GpuContext`] may work; until then use the CPU.
    #[error("GPU device lost: {0}")]
    DeviceLost(String),
    /// wgpu rejected a call or a shader: a bug in this crate or the driver.
    #[error("GPU validation error: {0}")]
    Validation(String),
    /// The driver reported an internal error (e.g. the shader failed to compile).
    #[error("GPU internal error: {0}")]
    Internal(String),
    /// Reading results back failed.
    #[error("reading GPU results failed: {0}")]
    Map(String),
    /// The model shape is invalid.
    #[error(transparent)]
    Spec(#[from] tpow_core::spec::SpecError),
    /// [`GpuMiner::set_model`] has not been called.
    #[error("no model loaded on the GPU")]
    NoModel,
}

impl GpuError {
    pub(crate) fn from_wgpu(e: wgpu::Error) -> Self {
        match e {
            wgpu::Error::OutOfMemory { .. } => GpuError::OutOfMemory,
            wgpu::Error::Validation { description, .. } => GpuError::Validation(description),
            wgpu::Error::Internal { description, .. } => GpuError::Internal(description),
        }
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    /// A node runs the miner on its own thread and shares the context.
    #[test]
    fn handles_are_send() {
        fn send<T: Send>() {}
        fn sync<T: Sync>() {}
        send::<crate::GpuMiner>();
        send::<crate::GpuVerifier>();
        send::<crate::GpuContext>();
        sync::<crate::GpuContext>();
        send::<crate::GpuError>();
        sync::<crate::GpuError>();
    }
}
