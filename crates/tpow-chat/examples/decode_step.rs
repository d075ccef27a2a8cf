//! Times one batched decode step of the chat model (for profiling).
//!
//! `cargo run --release -p tpow-chat --example decode_step -- [candle] [BATCH...]`
//! (`candle`: candle's matmul instead of the batched Q8_0 kernel)
//! (`TPOW_MODEL` picks the GGUF; `CANDLE_NUM_THREADS` the pool size;
//! `STEPS` the steps per batch size, default 32). For each batch size it prefills
//! that many sequences with a short prompt each, then runs `STEPS` decode steps
//! with every sequence bringing one token, and prints the median step time and the
//! aggregate tokens per second, by the wall clock and by this thread's CPU time
//! (the steadier figure on a shared machine at one thread). Run it under `perf record` to see where a step's
//! time goes.

use std::path::PathBuf;
use std::time::Instant;

use tpow_chat::model::{KvCache, Matmul, Model, SeqInput, WeightFormat};
use tpow_chat::sampling::argmax;

/// CPU time of this thread so far, in nanoseconds (0 if the clock fails). With
/// `CANDLE_NUM_THREADS=1` every step runs on this thread, so this is the step's
/// compute time whatever else the machine is running.
fn cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn main() {
    let path = match std::env::var_os("TPOW_MODEL") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf"),
    };
    let steps: usize = std::env::var("STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(32);
    let batches: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let matmul = if std::env::args().any(|a| a == "candle") { Matmul::Candle } else { Matmul::Batched };
    let batches = if batches.is_empty() { vec![1, 2, 4, 8] } else { batches };

    let mut file = std::fs::File::open(&path).expect("the model file opens");
    let mut reader = std::io::BufReader::new(&mut file);
    let ct = candle_core::quantized::gguf_file::Content::read(&mut reader).expect("a GGUF file");
    let model = Model::load_with(&ct, &mut reader, WeightFormat::Q8_0, matmul).expect("the model loads");

    println!("| batch | step (ms, median of {steps}) | aggregate (tok/s) | step, this thread's CPU time (ms) | tok/s per CPU-second of this thread |");
    println!("|---:|---:|---:|---:|---:|");
    for &b in &batches {
        let mut caches: Vec<KvCache> = (0..b).map(|_| KvCache::with_capacity(&model.config, 64 + steps)).collect();
        let mut next: Vec<u32> = Vec::with_capacity(b);
        for (i, cache) in caches.iter_mut().enumerate() {
            // A distinct short prompt per sequence (token ids of ordinary text).
            let prompt: Vec<u32> = (0..40).map(|j| 1000 + ((i * 37 + j * 11) % 5000) as u32).collect();
            let out = model.forward_batch(&mut [SeqInput { cache, tokens: &prompt, logits: true }]).expect("prefill");
            next.push(argmax(out[0].as_ref().expect("logits")));
        }
        let mut times = Vec::with_capacity(steps);
        let mut cpu_times = Vec::with_capacity(steps);
        for _ in 0..steps {
            let toks: Vec<[u32; 1]> = next.iter().map(|&t| [t]).collect();
            let mut inputs: Vec<SeqInput<'_>> =
                caches.iter_mut().zip(&toks).map(|(cache, t)| SeqInput { cache, tokens: t, logits: true }).collect();
            let (t, cpu) = (Instant::now(), cpu_ns());
            let out = model.forward_batch(&mut inputs).expect("decode");
            times.push(t.elapsed().as_secs_f64());
            cpu_times.push((cpu_ns() - cpu) as f64 * 1e-9);
            next = out.iter().map(|l| argmax(l.as_ref().expect("logits"))).collect();
        }
        times.sort_by(f64::total_cmp);
        cpu_times.sort_by(f64::total_cmp);
        let med = times[times.len() / 2];
        let cpu = cpu_times[cpu_times.len() / 2];
        println!("| {b} | {:.2} | {:.1} | {:.2} | {:.1} |", med * 1e3, b as f64 / med, cpu * 1e3, b as f64 / cpu);
    }
}
