//! The GPU forward pass against tpow-core on random seeds, nonces and model shapes;
//! the GPU miner against the CPU miner; errors instead of panics.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64};

use tpow_core::chain::PowInput;
use tpow_core::miner::{mine, MineJob, MineOutcome};
use tpow_core::puzzle::Solver;
use tpow_core::{Model, ModelCache, ModelSpec, U256};
use tpow_gpu::{GpuError, GpuMiner, GpuVerifier, PackedDot};

/// xorshift64: deterministic test data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        for c in b.iter_mut() {
            *c = self.next() as u8;
        }
        b
    }
}

/// GPU outputs of `nonces` (through batches of `batch`) equal the CPU's.
fn check_batch(miner: &mut GpuMiner, model: &Model, template: &[u8; 152], nonces: &[u64]) {
    miner.set_model(model).expect("upload");
    let gpu = miner.outputs(template, nonces).expect("gpu forward");
    let mut solver = Solver::new(model);
    for (&nonce, g) in nonces.iter().zip(&gpu) {
        assert_eq!(
            g.as_slice(),
            solver.output(template, nonce),
            "spec {:?} seed {:02x?} nonce {nonce}",
            model.spec,
            &model.prev_id[..4]
        );
    }
}

#[test]
fn devnet_random_seeds_and_nonces() {
    let mut rng = Rng(0x5eed_0001);
    for (mode, ctx) in common::both_variants() {
        // 37 nonces through batches of 16: full batches and a short one.
        let mut miner = GpuMiner::new(&ctx, 16);
        for _ in 0..3 {
            let model = Model::derive(&ModelSpec::DEVNET, &rng.bytes()).expect("spec");
            let template = rng.bytes();
            let nonces: Vec<u64> = (0..37).map(|_| rng.next()).collect();
            check_batch(&mut miner, &model, &template, &nonces);
        }
        eprintln!("{mode:?}: ok");
    }
}

#[test]
fn mainnet_random_seed() {
    let mut rng = Rng(0x5eed_0002);
    for (_, ctx) in common::both_variants() {
        let mut miner = GpuMiner::new(&ctx, 4);
        let model = Model::derive(&ModelSpec::MAINNET, &rng.bytes()).expect("spec");
        let nonces: Vec<u64> = (0..2).map(|_| rng.next()).collect();
        check_batch(&mut miner, &model, &rng.bytes(), &nonces);
    }
}

/// Shapes at the edges of what `ModelSpec::validate` allows: one position, head width
/// 4 and 64, one head, one layer (only the last-layer kernels run), odd batch sizes.
#[test]
fn other_model_shapes() {
    let shapes = [(16, 1, 16, 4, 1, 16), (64, 8, 32, 1, 3, 64), (1024, 32, 128, 2, 2, 512), (2, 4, 64, 16, 2, 32)];
    let mut rng = Rng(0x5eed_0003);
    for (mode, ctx) in common::both_variants() {
        for (vocab, seq_len, d_model, n_heads, n_layers, d_ffn) in shapes {
            let spec = ModelSpec { vocab, seq_len, d_model, n_heads, n_layers, d_ffn };
            spec.validate().expect("valid test shape");
            let model = Model::derive(&spec, &rng.bytes()).expect("spec");
            let mut miner = GpuMiner::new(&ctx, 5);
            let nonces: Vec<u64> = (0..7).map(|_| rng.next()).collect();
            check_batch(&mut miner, &model, &rng.bytes(), &nonces);
        }
        eprintln!("{mode:?}: ok");
    }
}

#[test]
fn gpu_miner_finds_the_cpu_miners_nonce() {
    let Some(ctx) = common::gpu(PackedDot::Auto) else {
        return;
    };
    let model = Model::derive(&ModelSpec::DEVNET, &[42; 32]).expect("spec");
    let template = [9u8; 152];
    let target = U256::MAX / U256::from(300u32);
    let job = MineJob { model: &model, template, target, start_nonce: u64::MAX - 100, nonce_count: 20_000 };
    let cpu = match mine(&job, 1, &AtomicBool::new(false), &AtomicU64::new(0)) {
        MineOutcome::Found(a) => a,
        other => panic!("CPU miner: {other:?}"),
    };
    let mut miner = GpuMiner::new(&ctx, 64);
    miner.set_model(&model).expect("upload");
    let gpu = miner
        .mine_batch(&template, job.start_nonce, job.nonce_count, &target)
        .expect("gpu mine")
        .expect("a solution in range");
    assert_eq!(gpu, cpu);
    let stats = miner.stats();
    assert_eq!(stats.solutions, 1);
    assert_eq!(stats.attempts, cpu.nonce.wrapping_sub(job.start_nonce) + 1);
    // A target nothing meets: the whole range is tried.
    let none = miner.mine_batch(&template, 0, 100, &U256::ZERO).expect("gpu mine");
    assert_eq!(none, None);
    assert_eq!(miner.stats().attempts, stats.attempts + 100);
}

#[test]
fn verifier_matches_model_cache_across_models() {
    let Some(ctx) = common::gpu(PackedDot::Auto) else {
        return;
    };
    let mut verifier = GpuVerifier::new(&ctx);
    let mut cache = ModelCache::new();
    let mut rng = Rng(0x5eed_0004);
    let seeds: [[u8; 32]; 2] = [rng.bytes(), rng.bytes()];
    for &prev_id in [seeds[0], seeds[1], seeds[0], seeds[0]].iter() {
        let input = PowInput {
            spec: ModelSpec::DEVNET,
            prev_id,
            template: rng.bytes(),
            nonce: rng.next(),
            output_digest: [0; 32],
        };
        assert_eq!(
            verifier.output_digest(&input).expect("gpu verify"),
            cache.output_digest(&input).expect("cpu verify")
        );
    }
}

#[test]
fn errors_are_values_not_panics() {
    let Some(ctx) = common::gpu(PackedDot::Auto) else {
        return;
    };
    let mut miner = GpuMiner::new(&ctx, 4);
    assert_eq!(miner.mine_batch(&[0; 152], 0, 4, &U256::MAX), Err(GpuError::NoModel));
    let mut verifier = GpuVerifier::new(&ctx);
    let bad = PowInput {
        spec: ModelSpec { vocab: 100, ..ModelSpec::DEVNET },
        prev_id: [0; 32],
        template: [0; 152],
        nonce: 0,
        output_digest: [0; 32],
    };
    assert!(matches!(verifier.output_digest(&bad), Err(GpuError::Spec(_))));
}
