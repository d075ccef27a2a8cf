//! `tpow-node mine`: mine and verify blocks of a fresh in-memory chain on this
//! CPU, printing each (no disk, no network).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tpow_core::chain::InsertOutcome;
use tpow_core::miner::{mine, MineJob, MineOutcome};
use tpow_core::{ChainParams, HeaderChain, Model, ModelCache};

use crate::time::now_ms;

/// Mines `blocks` blocks with `threads` threads, paying `key`.
pub fn mine_blocks(chain_name: &str, blocks: u64, threads: usize, key: [u8; 32], genesis: Option<u64>) -> Result<()> {
    let Some(mut params) = ChainParams::by_name(chain_name) else {
        bail!("unknown chain {chain_name:?} (expected devnet or mainnet)");
    };
    match genesis {
        Some(t) => params = params.with_genesis_time(t)?,
        None if params.network.allows_genesis_override() => params = params.with_genesis_time(now_ms())?,
        None => {}
    }
    let spec = params.model;
    println!(
        "chain {} | model {}x{} d_model {} heads {} layers {} ffn {} | {} parameters, {:.1} M MAC per pass | {threads} threads",
        params.name(),
        spec.seq_len,
        spec.vocab,
        spec.d_model,
        spec.n_heads,
        spec.n_layers,
        spec.d_ffn,
        spec.parameter_count(),
        spec.macs_per_pass() as f64 / 1e6
    );
    let mut chain = HeaderChain::new(params)?;
    println!(
        "{:>6}  {:<16}  {:>10}  {:>9}  {:>8}  {:>10}  {:>9}",
        "height", "id", "bits", "attempts", "secs", "nonces/s", "verify ms"
    );
    let stop = AtomicBool::new(false);
    for _ in 0..blocks {
        let template = chain.next_template(key, [0; 32], now_ms());
        let started = Instant::now();
        let model = Model::derive(&spec, &template.prev_id)?;
        let attempts = AtomicU64::new(0);
        let job = MineJob {
            model: &model,
            template: template.template(),
            target: template.bits.to_target()?,
            start_nonce: 0,
            nonce_count: u64::MAX,
        };
        let MineOutcome::Found(found) = mine(&job, threads, &stop, &attempts) else {
            bail!("miner stopped without a block");
        };
        let secs = started.elapsed().as_secs_f64();
        let header = tpow_core::Header { nonce: found.nonce, output_digest: found.output_digest, ..template };
        // Verify as a peer would, from scratch: cheap checks, model, forward pass.
        let verify_started = Instant::now();
        let mut verifier = ModelCache::new();
        let outcome =
            chain.submit_cpu(&header, now_ms(), &mut verifier).context("our own block failed verification")?;
        let verify_ms = verify_started.elapsed().as_secs_f64() * 1e3;
        debug_assert!(matches!(outcome, InsertOutcome::NewTip { .. }));
        let n = attempts.load(Ordering::Relaxed);
        println!(
            "{:>6}  {:<16}  {:#010x}  {:>9}  {:>8.2}  {:>10.0}  {:>9.2}",
            header.height,
            &hex::encode(header.id())[..16],
            header.bits.0,
            n,
            secs,
            n as f64 / secs,
            verify_ms
        );
    }
    let tip = chain.tip();
    println!("tip height {} id {} total work {}", tip.header.height, hex::encode(tip.id), tip.total_work);
    Ok(())
}
