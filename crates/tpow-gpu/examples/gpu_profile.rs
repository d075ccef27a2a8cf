//! Where the GPU forward pass spends its time: per-stage tables for the verifier
//! (batch 1) and the miner (batch N), devnet and mainnet, plus the end-to-end figures
//! (verify latency, mining nonces/s) that the stages add up to.
//!
//! `cargo run --release -p tpow-gpu --example gpu_profile [-- --devnet-batch 256
//! --mainnet-batch 16 --reps 3 --secs 2 --unpacked --only mainnet]`.
//!
//! Each stage is timed twice: with GPU timestamp queries where the adapter offers them
//! (all dispatches in one submission), and by wall clock with one submission per
//! dispatch, waited for. The wall figure includes a fixed submit-and-wait cost per
//! dispatch (measured with an empty submission and shown under the table); "net" is
//! the wall time less that cost. On Linux the CPU time of the whole process during
//! each dispatch is shown too: on a software adapter (lavapipe) that is the kernel's
//! cost even when other work shares the machine, where wall and GPU times are not.
//! Figures are medians over `--reps` runs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tpow_core::chain::PowInput;
use tpow_core::{ChainParams, Model};
use tpow_gpu::{DispatchTime, GpuContext, GpuMiner, GpuOptions, GpuVerifier, PackedDot};

mod support;

struct Args {
    devnet_batch: Option<u32>,
    mainnet_batch: Option<u32>,
    reps: usize,
    secs: f64,
    unpacked: bool,
    only: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args { devnet_batch: None, mainnet_batch: None, reps: 3, secs: 2.0, unpacked: false, only: None };
    let mut it = std::env::args().skip(1);
    let num = |v: Option<String>, what: &str| -> Result<u64, String> {
        v.ok_or(format!("{what}: missing value"))?.parse::<u64>().map_err(|e| format!("{what}: {e}"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--devnet-batch" => a.devnet_batch = Some(num(it.next(), &arg)? as u32),
            "--mainnet-batch" => a.mainnet_batch = Some(num(it.next(), &arg)? as u32),
            "--reps" => a.reps = num(it.next(), &arg)?.max(1) as usize,
            "--secs" => {
                a.secs = it.next().ok_or("--secs: missing value")?.parse().map_err(|e| format!("--secs: {e}"))?
            }
            "--unpacked" => a.unpacked = true,
            "--only" => a.only = Some(it.next().ok_or("--only: missing value")?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// The stages in the order of the forward pass.
const STAGES: [&str; 8] = ["embedding", "norms", "qkv", "attention", "wo", "up", "down", "read-back"];

/// Per stage: dispatches, GPU time, wall time, net time (medians over the runs).
struct StageRow {
    dispatches: usize,
    gpu: Option<Duration>,
    wall: Duration,
    net: Duration,
    cpu: Option<Duration>,
}

fn stage_table(runs: &[Vec<DispatchTime>]) -> (BTreeMap<&'static str, StageRow>, Duration) {
    let mut rows = BTreeMap::new();
    for stage in STAGES {
        let per_run = |f: &dyn Fn(&DispatchTime) -> Duration| -> Duration {
            median(runs.iter().map(|r| r.iter().filter(|t| t.stage == stage).map(f).sum()).collect())
        };
        let dispatches = runs.first().map_or(0, |r| r.iter().filter(|t| t.stage == stage).count());
        if dispatches == 0 {
            continue;
        }
        let has_gpu = runs.iter().all(|r| r.iter().filter(|t| t.stage == stage).all(|t| t.gpu.is_some()));
        let has_cpu = runs.iter().all(|r| r.iter().filter(|t| t.stage == stage).all(|t| t.cpu.is_some()));
        rows.insert(
            stage,
            StageRow {
                dispatches,
                gpu: has_gpu.then(|| per_run(&|t| t.gpu.unwrap_or_default())),
                wall: per_run(&|t| t.wall),
                net: per_run(&|t| t.wall.saturating_sub(t.overhead)),
                cpu: has_cpu.then(|| per_run(&|t| t.cpu.unwrap_or_default())),
            },
        );
    }
    let overhead = median(runs.iter().filter_map(|r| r.first().map(|t| t.overhead)).collect());
    (rows, overhead)
}

fn print_stages(title: &str, runs: &[Vec<DispatchTime>]) {
    let (rows, overhead) = stage_table(runs);
    let total_net: Duration = rows.values().map(|r| r.net).sum();
    let total_gpu: Option<Duration> = rows.iter().filter(|(s, _)| **s != "read-back").map(|(_, r)| r.gpu).sum();
    println!("#### {title}\n");
    let total_cpu: Option<Duration> = rows.iter().filter(|(s, _)| **s != "read-back").map(|(_, r)| r.cpu).sum();
    println!(
        "| stage | dispatches | GPU time (ms) | wall (ms) | net of submit cost (ms) | share of net | process CPU time (ms) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for stage in STAGES {
        if let Some(r) = rows.get(stage) {
            println!(
                "| {stage} | {} | {} | {} | {} | {:.1}% | {} |",
                r.dispatches,
                r.gpu.map_or("-".into(), ms),
                ms(r.wall),
                ms(r.net),
                100.0 * r.net.as_secs_f64() / total_net.as_secs_f64().max(1e-12),
                r.cpu.map_or("-".into(), ms),
            );
        }
    }
    println!(
        "| **total** | {} | {} | {} | {} | | {} |",
        rows.values().map(|r| r.dispatches).sum::<usize>(),
        total_gpu.map_or("-".into(), ms),
        ms(rows.values().map(|r| r.wall).sum()),
        ms(total_net),
        total_cpu.map_or("-".into(), ms),
    );
    println!("\nSubmit-and-wait cost of an empty submission: {} ms.\n", ms(overhead));
}
fn run() -> Result<(), String> {
    let args = parse_args()?;
    let packed_dot = if args.unpacked { PackedDot::Off } else { PackedDot::Auto };
    let ctx = GpuContext::new_blocking(&GpuOptions { packed_dot, profile: true, ..GpuOptions::default() })
        .map_err(|e| e.to_string())?;
    let a = ctx.adapter();
    let cpu_adapter = a.device_type == "Cpu";
    println!(
        "Adapter: **{}** ({}, {}, driver {}); `dot4I8Packed`: {}; timestamp queries: {}\n",
        a.name,
        a.backend,
        a.device_type,
        a.driver,
        if a.packed_dot { "yes" } else { "no" },
        if a.timestamps { "yes" } else { "no (wall time per stage only)" }
    );
    let mut summary = Vec::new();
    for params in [ChainParams::devnet(), ChainParams::mainnet()] {
        let name = params.name();
        if args.only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let spec = params.model;
        let model = Model::derive(&spec, &[1; 32]).map_err(|e| e.to_string())?;
        let batch = match (name, cpu_adapter) {
            ("devnet", _) if args.devnet_batch.is_some() => args.devnet_batch.unwrap_or(1),
            ("mainnet", _) if args.mainnet_batch.is_some() => args.mainnet_batch.unwrap_or(1),
            ("devnet", true) => 256,
            ("devnet", false) => 4096,
            (_, true) => 16,
            (_, false) => 512,
        };
        for b in [1, batch] {
            let mut miner = GpuMiner::new(&ctx, b);
            miner.set_model(&model).map_err(|e| e.to_string())?;
            let nonces: Vec<u64> = (0..miner.batch_size() as u64).collect();
            // A warm-up pass: first-use costs are not part of any stage.
            miner.profile(&[3; 152], &nonces).map_err(|e| e.to_string())?;
            let runs: Vec<Vec<DispatchTime>> = (0..args.reps)
                .map(|_| miner.profile(&[3; 152], &nonces))
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            let role = if b == 1 { "GpuVerifier-shaped (batch 1)" } else { "GpuMiner" };
            print_stages(&format!("{name}, {role}, batch {}", miner.batch_size()), &runs);
            if b != 1 {
                let rate = support::miner_rate(&mut miner, args.secs, 2).map_err(|e| e.to_string())?;
                summary.push(format!("| {name} | GpuMiner nonces/s (batch {}) | {rate:.1} |", miner.batch_size()));
            }
        }
        let mut verifier = GpuVerifier::new(&ctx);
        verifier.set_model(&model).map_err(|e| e.to_string())?;
        let reps = if name == "devnet" { 15 } else { 2 * args.reps + 1 };
        let mut lat = Vec::with_capacity(reps);
        for nonce in 0..=reps as u64 {
            let input = PowInput { spec, prev_id: model.prev_id, template: [3; 152], nonce, output_digest: [0; 32] };
            let t = Instant::now();
            verifier.output_digest(&input).map_err(|e| e.to_string())?;
            // The first header pays first-use costs.
            if nonce > 0 {
                lat.push(t.elapsed());
            }
        }
        summary.push(format!("| {name} | GpuVerifier latency, model loaded (ms) | {} |", ms(median(lat))));
    }
    println!("#### End to end\n");
    println!("| chain | measure | value |");
    println!("| --- | --- | ---: |");
    for s in summary {
        println!("{s}");
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("gpu_profile: {e}");
        std::process::exit(1);
    }
}
