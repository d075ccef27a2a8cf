//! `--gpu` during sync: tpow-gpu's verifier as the offload engine of
//! [`crate::chain_state::verify_branch`], one more worker next to the CPU threads.
//! It derives each parent's model on the GPU and runs one header at a time (the
//! headers of a sync batch have distinct parents, so there is nothing to batch).

use tpow_core::chain::PowInput;
use tpow_core::{ModelCache, ModelSpec};
use tpow_gpu::{GpuContext, GpuOptions, GpuVerifier};

use crate::chain_state::PassEngine;

/// Inputs of the known-answer check at open.
const SELF_TEST_INPUTS: u8 = 3;

/// The GPU as a [`PassEngine`].
pub struct GpuPassEngine(GpuVerifier);

impl PassEngine for GpuPassEngine {
    fn output_digest(&mut self, input: &PowInput) -> Result<[u8; 32], String> {
        self.0.output_digest(input).map_err(|e| e.to_string())
    }
}

/// Opens the GPU for verifying `spec`'s headers, or says why the CPU verifies
/// alone. The GPU must first give the CPU's digests on a few inputs of distinct
/// models and nonces (so a device that computes nothing, or the same output for
/// everything, is never trusted with a digest; see [`PassEngine`]).
pub fn open(spec: &ModelSpec) -> Option<GpuPassEngine> {
    let ctx = match GpuContext::new_blocking(&GpuOptions::default()) {
        Ok(ctx) => ctx,
        Err(e) => {
            tracing::warn!("--gpu: {e}; verifying synced blocks on the CPU only");
            return None;
        }
    };
    let mut engine = GpuPassEngine(GpuVerifier::new(&ctx));
    if let Err(why) = self_test(&mut engine, spec) {
        tracing::warn!(
            "--gpu: the GPU failed its check against the CPU ({why}); verifying synced blocks on the CPU only"
        );
        return None;
    }
    let a = ctx.adapter();
    tracing::info!(adapter = %a.name, kind = %a.device_type, "verifying synced blocks on the GPU too");
    Some(engine)
}

/// The engine's digests of a few fixed inputs against the CPU's.
fn self_test(engine: &mut dyn PassEngine, spec: &ModelSpec) -> Result<(), String> {
    let mut cpu = ModelCache::new();
    for i in 0..SELF_TEST_INPUTS {
        let mut template = [0u8; tpow_core::header::TEMPLATE_LEN];
        for (j, b) in template.iter_mut().enumerate() {
            *b = (j as u8).wrapping_mul(31).wrapping_add(i);
        }
        let input = PowInput {
            spec: *spec,
            prev_id: [i.wrapping_add(1); 32],
            template,
            nonce: u64::from(i) * 0x9e37_79b9,
            output_digest: [0; 32],
        };
        let want = cpu.output_digest(&input).map_err(|e| format!("CPU: {e}"))?;
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.output_digest(&input)))
            .unwrap_or_else(|_| Err("panicked".into()))?;
        if got != want {
            return Err(format!("input {i}: digest {} instead of {}", hex::encode(&got[..8]), hex::encode(&want[..8])));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An engine that answers one fixed digest: what a device that runs nothing
    /// would give.
    struct Constant([u8; 32]);

    impl PassEngine for Constant {
        fn output_digest(&mut self, _: &PowInput) -> Result<[u8; 32], String> {
            Ok(self.0)
        }
    }

    #[test]
    fn the_self_test_refuses_an_engine_that_does_not_compute() {
        let spec = tpow_core::ChainParams::devnet().model;
        assert_eq!(self_test(&mut ModelCache::new(), &spec), Ok(()));
        // Even one that knows the first answer.
        let mut cpu = ModelCache::new();
        let first = PowInput {
            spec,
            prev_id: [1; 32],
            template: std::array::from_fn(|j| (j as u8).wrapping_mul(31)),
            nonce: 0,
            output_digest: [0; 32],
        };
        let digest = cpu.output_digest(&first).expect("cpu");
        let err = self_test(&mut Constant(digest), &spec).expect_err("a constant engine passed");
        assert!(err.starts_with("input 1:"), "{err}");
        assert!(self_test(&mut Constant([0; 32]), &spec).is_err());
    }
}
