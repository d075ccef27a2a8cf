//! `--gpu` during sync: tpow-gpu's verifier as the offload engine of
//! [`crate::chain_state::verify_branch`], one more worker next to the CPU threads.
//! It derives each parent's model on the GPU and runs one header at a time (the
//! headers of a sync batch have distinct parents, so there is nothing to batch).

use tpow_core::chain::PowInput;
use tpow_gpu::{GpuContext, GpuOptions, GpuVerifier};

use crate::chain_state::PassEngine;

/// The GPU as a [`PassEngine`].
pub struct GpuPassEngine(GpuVerifier);

impl PassEngine for GpuPassEngine {
    fn output_digest(&mut self, input: &PowInput) -> Result<[u8; 32], String> {
        self.0.output_digest(input).map_err(|e| e.to_string())
    }
}

/// Opens the GPU for verification, or says why the CPU verifies alone.
pub fn open() -> Option<GpuPassEngine> {
    match GpuContext::new_blocking(&GpuOptions::default()) {
        Ok(ctx) => {
            let a = ctx.adapter();
            tracing::info!(adapter = %a.name, kind = %a.device_type, "verifying synced blocks on the GPU too");
            Some(GpuPassEngine(GpuVerifier::new(&ctx)))
        }
        Err(e) => {
            tracing::warn!("--gpu: {e}; verifying synced blocks on the CPU only");
            None
        }
    }
}
