//! GPU forward pass benchmark: mining throughput per batch size, single-header verify
//! latency, weight upload time, and model derivation on the CPU against on the GPU,
//! against the CPU miner, as markdown tables.
//!
//! `cargo run --release -p tpow-gpu --example gpu_bench [-- --secs S --devnet 16,256
//! --mainnet 4,16 --no-fallback]`. Batch sizes default to small ones on a CPU
//! adapter (lavapipe: its numbers prove exactness, not speed) and large ones on a GPU.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

use tpow_core::chain::PowInput;
use tpow_core::miner::{mine, MineJob};
use tpow_core::puzzle::{input_tokens, output_digest, pow_hash, Solver};
use tpow_core::{ChainParams, Model, U256};
use tpow_gpu::{GpuContext, GpuMiner, GpuOptions, GpuVerifier, PackedDot};

mod support;

struct Args {
    secs: f64,
    devnet: Option<Vec<u32>>,
    mainnet: Option<Vec<u32>>,
    fallback: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args { secs: 1.0, devnet: None, mainnet: None, fallback: true };
    let mut it = std::env::args().skip(1);
    let list = |v: Option<String>| -> Result<Vec<u32>, String> {
        v.ok_or("missing value")?.split(',').map(|x| x.trim().parse::<u32>().map_err(|e| format!("{x}: {e}"))).collect()
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--secs" => a.secs = it.next().ok_or("missing value")?.parse().map_err(|e| format!("--secs: {e}"))?,
            "--devnet" => a.devnet = Some(list(it.next())?),
            "--mainnet" => a.mainnet = Some(list(it.next())?),
            "--no-fallback" => a.fallback = false,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// Nonces per second of the multi-threaded CPU miner, run for about `secs`.
fn cpu_rate(model: &Model, secs: f64) -> f64 {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let run = |count: u64| {
        let job = MineJob { model, template: [7; 152], target: U256::ZERO, start_nonce: 0, nonce_count: count };
        let t = Instant::now();
        mine(&job, threads, &AtomicBool::new(false), &AtomicU64::new(0));
        t.elapsed().as_secs_f64()
    };
    let probe = (threads as u64) * 4;
    let t = run(probe).max(1e-6);
    let count = ((probe as f64 * secs / t) as u64).max(probe);
    count as f64 / run(count)
}
/// CPU time per nonce of what the GPU miner leaves to the host (token derivation,
/// output digest, pow hash), on one thread: the GPU rate this one core can feed.
fn host_cost(spec: &tpow_core::ModelSpec) -> Duration {
    let mut tokens = vec![0u16; spec.seq_len as usize];
    let out = vec![5i8; spec.d_model as usize];
    let n = 20_000u32;
    let t = Instant::now();
    for nonce in 0..n as u64 {
        input_tokens(spec, &[1; 152], nonce, &mut tokens);
        let d = output_digest(&out);
        std::hint::black_box(pow_hash(&[1; 152], nonce, &d));
    }
    t.elapsed() / n
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("gpu_bench: {e}");
            std::process::exit(2);
        }
    };
    let ctx = match GpuContext::new_blocking(&GpuOptions::default()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gpu_bench: {e}");
            std::process::exit(1);
        }
    };
    let fallback_ctx = if args.fallback {
        GpuContext::new_blocking(&GpuOptions { packed_dot: PackedDot::Off, ..GpuOptions::default() }).ok()
    } else {
        None
    };
    let a = ctx.adapter();
    let cpu_adapter = a.device_type == "Cpu";
    println!(
        "Adapter: **{}** ({}, {}, driver {}); CPU: {} threads, kernels `{}`\n",
        a.name,
        a.backend,
        a.device_type,
        a.driver,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        tpow_core::forward::simd_backend_name()
    );
    let mut mining = Vec::new();
    let mut single = Vec::new();
    let mut derivation = Vec::new();
    for params in [ChainParams::devnet(), ChainParams::mainnet()] {
        let spec = params.model;
        let batches = match (params.name(), cpu_adapter) {
            ("devnet", _) if args.devnet.is_some() => args.devnet.clone().unwrap_or_default(),
            ("mainnet", _) if args.mainnet.is_some() => args.mainnet.clone().unwrap_or_default(),
            ("devnet", true) => vec![16, 256, 1024],
            ("devnet", false) => vec![256, 4096, 16384],
            (_, true) => vec![4, 16],
            (_, false) => vec![64, 512, 2048],
        };
        let t = Instant::now();
        let model = match Model::derive(&spec, &[1; 32]) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("gpu_bench: {e}");
                std::process::exit(1);
            }
        };
        let derive = t.elapsed();
        let cpu = cpu_rate(&model, args.secs);
        mining.push(format!(
            "| {} | CPU miner (all threads) | - | {:.1} | {} |",
            params.name(),
            cpu,
            ms(Duration::from_secs_f64(1.0 / cpu))
        ));
        let mut variants = vec![(ctx.clone(), if a.packed_dot { "dot4I8Packed" } else { "unpacked" })];
        if let Some(f) = &fallback_ctx {
            variants.push((f.clone(), "unpacked"));
        }
        for (c, label) in &variants {
            for &b in &batches {
                let mut miner = GpuMiner::new(c, b);
                let r = miner.set_model(&model).and_then(|_| support::miner_rate(&mut miner, args.secs, 1));
                match r {
                    Ok(rate) => mining.push(format!(
                        "| {} | GPU {label} | {} | {:.1} | {} |",
                        params.name(),
                        miner.batch_size(),
                        rate,
                        ms(Duration::from_secs_f64(1.0 / rate))
                    )),
                    Err(e) => mining.push(format!("| {} | GPU {label} | {b} | error: {e} | |", params.name())),
                }
            }
        }
        // Verify latency and uploads on the main context.
        let mut verifier = GpuVerifier::new(&ctx);
        let t = Instant::now();
        if let Err(e) = verifier.set_model(&model) {
            eprintln!("gpu_bench: {e}");
            continue;
        }
        let first_upload = t.elapsed();
        let uploads: Vec<Duration> = (0..3)
            .map(|_| {
                let t = Instant::now();
                let _ = verifier.set_model(&model);
                t.elapsed()
            })
            .collect();
        let reps = if params.network == tpow_core::Network::Devnet { 9 } else { 3 };
        let mut lat = Vec::new();
        let mut cpu_lat = Vec::new();
        let mut solver = Solver::new(&model);
        for nonce in 0..reps {
            let input = PowInput { spec, prev_id: model.prev_id, template: [3; 152], nonce, output_digest: [0; 32] };
            let t = Instant::now();
            if let Err(e) = verifier.output_digest(&input) {
                eprintln!("gpu_bench: {e}");
                break;
            }
            lat.push(t.elapsed());
            let t = Instant::now();
            solver.attempt(&input.template, nonce);
            cpu_lat.push(t.elapsed());
        }
        if lat.is_empty() {
            continue;
        }
        derivation.push(derive_row(&ctx, &spec, params.name(), reps as usize));
        single.push(format!(
            "| {} | {} | {} | {} | {} | {} | {:.1} | {:.2} |",
            params.name(),
            ms(median(lat)),
            ms(median(cpu_lat)),
            ms(derive),
            ms(first_upload),
            ms(median(uploads)),
            spec.parameter_count() as f64 / 1e6,
            host_cost(&spec).as_secs_f64() * 1e6,
        ));
    }
    println!("### Mining throughput\n");
    println!("| chain | engine | batch | nonces/s | ms/nonce |");
    println!("| --- | --- | ---: | ---: | ---: |");
    for r in mining {
        println!("{r}");
    }
    println!("\n### Single header and weights\n");
    println!(
        "| chain | GPU verify (ms) | CPU verify, 1 thread (ms) | CPU derive weights (ms) | first upload incl. kernel compile (ms) | weight upload (ms) | weights (M) | host work per mined nonce (µs) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in single {
        println!("{r}");
    }
    println!("\n### Model derivation for a new parent (median, a fresh prev_id each time)\n");
    println!(
        "| chain | CPU derive, 1 thread (ms) | CPU derive + upload (ms) | GPU derive (ms) | verify a new parent, CPU-derived (ms) | verify a new parent, GPU-derived (ms) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for r in derivation {
        println!("{r}");
    }
}

/// One row of the derivation table: the model of a new `prev_id` derived on the CPU
/// (alone, and with the upload `GpuMiner::set_model` does) against derived on the GPU
/// (`GpuMiner::derive_model`, which returns once the weights are on the device), and
/// a whole header check on a new parent either way. Each timed call uses a `prev_id`
/// not seen before, after one warm-up (kernel compilation) per path.
fn derive_row(ctx: &GpuContext, spec: &tpow_core::ModelSpec, name: &str, reps: usize) -> String {
    let fresh = |i: usize, tag: u8| {
        let mut id = [tag; 32];
        id[..8].copy_from_slice(&(i as u64).to_le_bytes());
        id
    };
    let mut miner = GpuMiner::new(ctx, 1);
    let input = |prev_id| PowInput { spec: *spec, prev_id, template: [3; 152], nonce: 5, output_digest: [0; 32] };
    let mut run = || -> Result<[Duration; 5], tpow_gpu::GpuError> {
        miner.derive_model(spec, &fresh(0, 0xd0))?;
        miner.set_model(&Model::derive(spec, &fresh(0, 0xd1))?)?;
        let (mut cpu, mut cpu_up, mut gpu, mut v_cpu, mut v_gpu) = (vec![], vec![], vec![], vec![], vec![]);
        let mut cpu_verifier = GpuVerifier::new(ctx);
        let mut gpu_verifier = GpuVerifier::new(ctx);
        gpu_verifier.output(&input(fresh(0, 0xd2)))?;
        cpu_verifier.set_model(&Model::derive(spec, &fresh(0, 0xd3))?)?;
        cpu_verifier.output(&input(fresh(0, 0xd3)))?;
        for i in 1..=reps {
            let t = Instant::now();
            let model = Model::derive(spec, &fresh(i, 0xd1))?;
            cpu.push(t.elapsed());
            miner.set_model(&model)?;
            cpu_up.push(t.elapsed());
            let t = Instant::now();
            miner.derive_model(spec, &fresh(i, 0xd0))?;
            gpu.push(t.elapsed());
            // A header on a new parent: derive (CPU + upload, or GPU), one pass.
            let t = Instant::now();
            let prev_id = fresh(i, 0xd3);
            cpu_verifier.set_model(&Model::derive(spec, &prev_id)?)?;
            let a = cpu_verifier.output(&input(prev_id))?;
            v_cpu.push(t.elapsed());
            let t = Instant::now();
            let b = gpu_verifier.output(&input(prev_id))?;
            v_gpu.push(t.elapsed());
            if a != b {
                return Err(tpow_gpu::GpuError::Validation("GPU-derived model gave another output".into()));
            }
        }
        Ok([median(cpu), median(cpu_up), median(gpu), median(v_cpu), median(v_gpu)])
    };
    match run() {
        Ok(d) => format!("| {name} | {} | {} | {} | {} | {} |", ms(d[0]), ms(d[1]), ms(d[2]), ms(d[3]), ms(d[4])),
        Err(e) => format!("| {name} | error: {e} | | | | |"),
    }
}
