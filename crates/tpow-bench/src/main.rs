//! `tpow-bench`: measures the consensus hot paths and prints markdown tables.
//!
//! `cargo run --release -p tpow-bench -- core` gives model derivation, one forward
//! pass (devnet, mainnet; scalar and SIMD kernels), the multi-threaded miner's
//! nonces/s, the achieved int8 multiply-accumulates per second against the
//! machine's int8 peak, and the same-shaped f32 forward pass in candle.

mod chat;
mod float_model;
mod peak;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Parser, Subcommand};
use tpow_core::forward::{forward_packed, Backend, PackedModel, Scratch};
use tpow_core::miner::{mine, MineJob};
use tpow_core::puzzle::input_tokens;
use tpow_core::{Model, ModelSpec, U256};

#[derive(Parser)]
#[command(name = "tpow-bench", about = "tpow benchmarks; prints markdown tables")]
struct Cli {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Consensus core: derivation, forward pass, miner, candle f32 comparison.
    Core {
        /// The int8 multiply-accumulate peak in G MAC/s for the "% of peak"
        /// column (default: measured now, the best instruction on all threads).
        #[arg(long)]
        peak_gmacs: Option<f64>,
        /// Seconds per miner measurement.
        #[arg(long, default_value_t = 5.0)]
        miner_secs: f64,
    },
    /// Chat engine: load time, prompt and decode tokens/s, time to first token.
    Chat {
        /// The GGUF file (default: TPOW_MODEL, else models/ of the workspace).
        #[arg(long)]
        model: Option<std::path::PathBuf>,
        /// Thread counts to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        threads: Vec<usize>,
        /// Measured runs per figure (the median is printed).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Internal: measure one weight format in this process.
        #[arg(long, hide = true)]
        child: Option<String>,
    },
}

/// Median wall time of `f` over repeated runs filling about `budget`.
fn time_median(budget: Duration, mut f: impl FnMut()) -> Duration {
    f(); // warm-up
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < 5 || (start.elapsed() < budget && samples.len() < 10_000) {
        let t = Instant::now();
        f();
        samples.push(t.elapsed());
    }
    samples.sort();
    samples[samples.len() / 2]
}

fn seed() -> [u8; 32] {
    [7; 32]
}

fn forward_time(spec: &ModelSpec, backend: Backend) -> Duration {
    let model = Model::derive(spec, &seed()).expect("preset spec");
    let packed = PackedModel::new(&model, backend);
    let mut scratch = Scratch::with_backend(&model, backend);
    let mut tokens = vec![0u16; spec.seq_len as usize];
    let mut out = vec![0i8; spec.d_model as usize];
    let mut nonce = 0u64;
    time_median(Duration::from_secs(2), || {
        input_tokens(spec, &[0; 152], nonce, &mut tokens);
        forward_packed(&packed, &tokens, &mut scratch, &mut out);
        nonce += 1;
        black_box(&out);
    })
}

fn miner_rate(spec: &ModelSpec, threads: usize, secs: f64) -> f64 {
    let model = Model::derive(spec, &seed()).expect("preset spec");
    let job = MineJob {
        model: &model,
        template: [1; 152],
        target: U256::ZERO, // never met: measures the search rate
        start_nonce: 0,
        nonce_count: u64::MAX,
    };
    let stop = AtomicBool::new(false);
    let attempts = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_secs_f64(secs));
            stop.store(true, Ordering::Relaxed);
        });
        mine(&job, threads, &stop, &attempts);
    });
    attempts.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn core(peak: Option<f64>, miner_secs: f64) -> Result<()> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let best = Backend::detect();
    println!("| instruction (12 independent chains) | G MAC/s, 1 thread | G MAC/s, {cores} threads |");
    println!("|---|---:|---:|");
    let peaks = peak::measure();
    for p in &peaks {
        println!("| {} | {:.1} | {:.1} |", p.name, p.one_thread / 1e9, p.all_threads / 1e9);
    }
    let measured = peaks.iter().map(|p| p.all_threads / 1e9).fold(0.0, f64::max);
    let peak = peak.unwrap_or(measured);
    println!("\nCPU kernels detected: {best:?}; {cores} hardware threads; int8 peak used for %: {peak:.1} G MAC/s\n");

    println!(
        "| spec | parameters | derive model (ms) | lay out for {best:?} (ms) | verify: derive + lay out + pass (ms) |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (name, spec) in [("devnet", ModelSpec::DEVNET), ("mainnet", ModelSpec::MAINNET)] {
        let t = time_median(Duration::from_secs(2), || {
            black_box(Model::derive(&spec, &seed()).expect("preset spec"));
        });
        let model = Model::derive(&spec, &seed()).expect("preset spec");
        let tp = time_median(Duration::from_secs(2), || {
            black_box(PackedModel::new(&model, best));
        });
        // What a verifier pays per header: a fresh model, laid out, one pass.
        let input =
            tpow_core::chain::PowInput { spec, prev_id: seed(), template: [3; 152], nonce: 7, output_digest: [0; 32] };
        let tv = time_median(Duration::from_secs(2), || {
            black_box(tpow_core::ModelCache::new().output_digest(&input).expect("preset spec"));
        });
        println!("| {name} | {} | {:.3} | {:.3} | {:.3} |", spec.parameter_count(), ms(t), ms(tp), ms(tv));
    }

    println!("\n| spec | kernels | forward pass (ms) | G MAC/s (1 thread) |");
    println!("|---|---|---:|---:|");
    let mut single = Vec::new();
    for (name, spec) in [("devnet", ModelSpec::DEVNET), ("mainnet", ModelSpec::MAINNET)] {
        let mut backends = vec![Backend::Scalar];
        if best != Backend::Scalar {
            backends.push(best);
        }
        for b in backends {
            let t = forward_time(&spec, b);
            let gmacs = spec.macs_per_pass() as f64 / t.as_secs_f64() / 1e9;
            println!("| {name} | {b:?} | {:.3} | {gmacs:.1} |", ms(t));
            single.push((name, b, t));
        }
    }

    println!("\n| spec | miner threads | nonces/s | G MAC/s | % of int8 peak ({peak} G) |");
    println!("|---|---:|---:|---:|---:|");
    for (name, spec) in [("devnet", ModelSpec::DEVNET), ("mainnet", ModelSpec::MAINNET)] {
        for threads in [1, cores] {
            let rate = miner_rate(&spec, threads, miner_secs);
            let gmacs = rate * spec.macs_per_pass() as f64 / 1e9;
            println!("| {name} | {threads} | {rate:.0} | {gmacs:.1} | {:.1}% |", gmacs / peak * 100.0);
        }
    }

    println!("\n| spec | engine | forward pass (ms, 1 thread) | G MAC/s |");
    println!("|---|---|---:|---:|");
    for (name, spec) in [("devnet", ModelSpec::DEVNET), ("mainnet", ModelSpec::MAINNET)] {
        let fm = float_model::FloatModel::new(&spec)?;
        let t = time_median(Duration::from_secs(3), || {
            black_box(fm.forward().expect("candle forward"));
        });
        let gmacs = spec.macs_per_pass() as f64 / t.as_secs_f64() / 1e9;
        println!("| {name} | candle f32 (same shape) | {:.3} | {gmacs:.1} |", ms(t));
        if let Some((_, b, ti)) = single.iter().rev().find(|(n, _, _)| *n == name) {
            let g = spec.macs_per_pass() as f64 / ti.as_secs_f64() / 1e9;
            println!("| {name} | tpow int8 ({b:?}) | {:.3} | {g:.1} |", ms(*ti));
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().what {
        What::Core { peak_gmacs, miner_secs } => core(peak_gmacs, miner_secs),
        What::Chat { model, threads, runs, child } => chat::chat(model, &threads, runs, child),
    }
}
