//! `tpow-bench chat`: the chat engine's speed on SmolLM2-135M-Instruct.
//!
//! For each weight format (Q4_1 re-quantised to Q8_0 at load, the engine's default;
//! Q4_1 as loaded) and thread count, a child process (candle's CPU pool is sized once
//! per process, from `CANDLE_NUM_THREADS`) measures:
//! - load: reading the GGUF, building the tokenizer, re-quantising;
//! - prompt tok/s: a ChatML prompt of ~200 tokens from an empty KV cache, in the
//!   engine's prefill chunks (median of several runs);
//! - TTFT: prompt processing plus choosing the first token (greedy);
//! - decode tok/s: 128 more tokens, one forward pass each (greedy, EOS ignored).
//!
//! `crates/tpow-bench/llama_cpp_bench.py` prints the same columns for llama.cpp on the
//! same file, prompt and thread counts.
//!
//! Then, with every core, the engine itself (continuous batching) under 1, 4, 8 and
//! 16 concurrent streams: aggregate generated tokens per second, time to first
//! token (p50/p95 over all streams of all runs) and the prompt tokens processed per
//! second until every stream had its first token.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tpow_chat::model::{Model, WeightFormat};
use tpow_chat::sampling::argmax;
use tpow_chat::{ChatTemplate, Engine, EngineOptions, Event, GenerateParams, Message, Role, Tokenizer};

/// The user message of the benchmark prompt (the same text is in llama_cpp_bench.py).
pub const PROMPT: &str = "You are reviewing a design document for a small peer-to-peer network in which every node \
mines blocks with a neural network forward pass and also answers chat requests with a small language model. \
The document says that mining must yield the processor whenever a chat request is waiting, that each node keeps \
a bounded queue of requests and refuses new ones when the queue is full, and that a request may be cancelled at \
any time by closing the connection. It also says that the model is loaded once at start-up from a file whose \
size and hash are pinned, that nothing is downloaded while the node runs, and that tokens are streamed to the \
client as soon as they are generated. Summarise the three most important risks of this design, explain how you \
would measure whether chat requests really get the processor quickly enough, and suggest one simple test for \
each risk. Answer in a short numbered list.";

/// Tokens generated after the prompt in the decode measurement.
const DECODE_TOKENS: usize = 128;
/// Prompt tokens per forward pass (the engine's prefill chunk).
const PREFILL_CHUNK: usize = 256;

struct Row {
    format: &'static str,
    threads: usize,
    load_s: f64,
    prompt_tokens: usize,
    prompt_tps: f64,
    ttft_ms: f64,
    decode_tps: f64,
}

fn default_model() -> PathBuf {
    match std::env::var_os("TPOW_MODEL") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf"),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One measurement, in this process (the child).
fn measure(model_path: &Path, format: WeightFormat, runs: usize) -> Result<Row> {
    let t = Instant::now();
    let mut file = std::fs::File::open(model_path).with_context(|| format!("opening {}", model_path.display()))?;
    let mut reader = std::io::BufReader::new(&mut file);
    let ct = candle_core::quantized::gguf_file::Content::read(&mut reader)?;
    let tokenizer = Tokenizer::from_gguf(&ct).map_err(anyhow::Error::msg)?;
    let template = ChatTemplate::from_jinja(ct.metadata["tokenizer.chat_template"].to_string()?);
    let mut model = Model::load(&ct, &mut reader, format)?;
    let load_s = t.elapsed().as_secs_f64();

    let prompt = template.render(&[Message { role: Role::User, content: PROMPT.into() }]);
    let tokens = tokenizer.encode(&prompt).map_err(anyhow::Error::msg)?;

    // Prompt processing and time to first token, from an empty cache each run.
    let mut prefill = Vec::new();
    let mut ttft = Vec::new();
    let mut first = 0;
    for _ in 0..runs.max(1) + 1 {
        model.truncate_cache(0);
        let t = Instant::now();
        let mut logits = Vec::new();
        for chunk in tokens.chunks(PREFILL_CHUNK) {
            logits = model.forward(chunk)?;
        }
        let p = t.elapsed().as_secs_f64();
        first = argmax(&logits);
        let f = t.elapsed().as_secs_f64();
        prefill.push(p);
        ttft.push(f);
    }
    // The first run warms caches and the thread pool: drop it.
    prefill.remove(0);
    ttft.remove(0);

    // Decode, continuing the last prompt run.
    let mut decode = Vec::new();
    for _ in 0..runs.max(1) {
        model.truncate_cache(tokens.len());
        let mut tok = first;
        let t = Instant::now();
        for _ in 0..DECODE_TOKENS {
            let logits = model.forward(&[tok])?;
            tok = argmax(&logits);
        }
        decode.push(DECODE_TOKENS as f64 / t.elapsed().as_secs_f64());
    }
    let threads: usize = std::env::var("CANDLE_NUM_THREADS").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok(Row {
        format: match format {
            WeightFormat::Q8_0 => "Q4_1 -> Q8_0",
            WeightFormat::AsLoaded => "Q4_1",
        },
        threads,
        load_s,
        prompt_tokens: tokens.len(),
        prompt_tps: tokens.len() as f64 / median(prefill),
        ttft_ms: median(ttft) * 1e3,
        decode_tps: median(decode),
    })
}

fn print_header() {
    println!("| engine | weights | threads | load (s) | prompt tokens | prompt (tok/s) | TTFT (ms) | decode (tok/s) |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
}

fn print_row(r: &Row) {
    println!(
        "| tpow-chat (candle) | {} | {} | {:.2} | {} | {:.0} | {:.0} | {:.1} |",
        r.format, r.threads, r.load_s, r.prompt_tokens, r.prompt_tps, r.ttft_ms, r.decode_tps
    );
}

/// Streams of the concurrency measurement.
const STREAMS: [usize; 5] = [1, 2, 4, 8, 16];
/// Tokens each stream generates (sampled, so that few stop early).
const STREAM_TOKENS: u32 = 64;

/// Subjects of the concurrent streams' prompts (each stream its own prompt).
const SUBJECTS: [&str; 16] = [
    "a lighthouse keeper",
    "a lost robot",
    "a river town",
    "a mountain climber",
    "an old clock",
    "a desert caravan",
    "a city at night",
    "a ship's cook",
    "a young baker",
    "a forest fire",
    "a chess champion",
    "a winter market",
    "a deep-sea diver",
    "a travelling circus",
    "a quiet library",
    "a summer storm",
];

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The concurrency table, in this process (the engine with every core).
fn measure_streams(model_path: &Path, runs: usize) -> Result<()> {
    let engine = Engine::load(
        model_path,
        EngineOptions { max_batch: 16, queue_capacity: 16, max_tokens_cap: 512, ..EngineOptions::default() },
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    // aggregate: every generated token over the wall time, prompts included;
    // decode: the tokens generated while every stream of the round was decoding
    // (after the last first token) over that time: the batched decode rate.
    println!("| streams | generated tokens | aggregate (tok/s) | decode, all streams (tok/s) | per stream (tok/s) | TTFT p50 (ms) | TTFT p95 (ms) | prompt (tok/s) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    // Warm up the pool and caches.
    let warm = engine.submit(
        vec![Message { role: Role::User, content: "Hi".into() }],
        GenerateParams { max_tokens: Some(4), temperature: 0.0, top_p: 1.0, seed: 0, stop: vec![] },
    );
    if let Ok(mut g) = warm {
        while g.blocking_next().is_some() {}
    }
    for &n in &STREAMS {
        let mut ttft = Vec::new();
        let (mut tokens, mut secs, mut prompt_tokens, mut prompt_secs) = (0u64, 0f64, 0u64, 0f64);
        let (mut decode_tokens, mut decode_secs) = (0u64, 0f64);
        for run in 0..runs.max(1) {
            let start = Instant::now();
            let mut handles = Vec::new();
            for i in 0..n {
                let content = format!("Write a long story about {}.", SUBJECTS[i % SUBJECTS.len()]);
                let params = GenerateParams {
                    max_tokens: Some(STREAM_TOKENS),
                    temperature: 0.8,
                    top_p: 0.95,
                    seed: (run * 100 + i) as u64,
                    stop: vec![],
                };
                let mut g = engine
                    .submit(vec![Message { role: Role::User, content }], params)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                handles.push(std::thread::spawn(move || {
                    let mut first = None;
                    let mut completion = 0u32;
                    let mut token_times = Vec::new();
                    let prompt = g.prompt_tokens;
                    while let Some(ev) = g.blocking_next() {
                        match ev {
                            Event::Token(_) => {
                                let t = start.elapsed();
                                first.get_or_insert(t);
                                token_times.push(t.as_secs_f64());
                            }
                            Event::Done { usage, .. } => completion = usage.completion_tokens,
                            _ => {}
                        }
                    }
                    (first, completion, prompt, start.elapsed(), token_times)
                }));
            }
            let mut last_first = 0f64;
            let mut end = 0f64;
            let mut all_times = Vec::new();
            for h in handles {
                let (first, completion, prompt, done, times) =
                    h.join().map_err(|_| anyhow::anyhow!("a stream panicked"))?;
                all_times.extend(times);
                let f = first.map(|d| d.as_secs_f64()).unwrap_or(f64::NAN);
                ttft.push(f * 1e3);
                last_first = last_first.max(f);
                end = end.max(done.as_secs_f64());
                tokens += u64::from(completion);
                prompt_tokens += u64::from(prompt);
            }
            secs += end;
            prompt_secs += last_first;
            // Token events, not tokens: a multi-token text piece counts once, the
            // same way in every row.
            let decode_end = all_times.iter().copied().fold(last_first, f64::max);
            decode_tokens += all_times.iter().filter(|&&t| t > last_first).count() as u64;
            decode_secs += decode_end - last_first;
        }
        ttft.sort_by(f64::total_cmp);
        let aggregate = tokens as f64 / secs;
        println!(
            "| {n} | {tokens} | {aggregate:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} |",
            decode_tokens as f64 / decode_secs,
            aggregate / n as f64,
            percentile(&ttft, 0.5),
            percentile(&ttft, 0.95),
            prompt_tokens as f64 / prompt_secs,
        );
    }
    let st = engine.stats();
    println!("\n({} forward passes; KV cache: {} KiB per position)", st.steps, st.kv_bytes_per_token / 1024);
    Ok(())
}

/// Entry point of the `chat` subcommand. `child` is set in the re-executed measuring
/// process: it measures one format at the pool size of its environment and prints a row.
pub fn chat(model: Option<PathBuf>, threads: &[usize], runs: usize, child: Option<String>) -> Result<()> {
    let model = model.unwrap_or_else(default_model);
    if !model.is_file() {
        bail!("the chat model is missing at {}: run scripts/fetch-model.sh", model.display());
    }
    if let Some(format) = child {
        if format == "streams" {
            return measure_streams(&model, runs);
        }
        let format = match format.as_str() {
            "q8_0" => WeightFormat::Q8_0,
            "as-loaded" => WeightFormat::AsLoaded,
            other => bail!("unknown format {other}"),
        };
        print_row(&measure(&model, format, runs)?);
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    print_header();
    for &n in threads {
        for format in ["q8_0", "as-loaded"] {
            let out = Command::new(&exe)
                .args(["chat", "--model"])
                .arg(&model)
                .args(["--runs", &runs.to_string(), "--child", format])
                .env("CANDLE_NUM_THREADS", n.to_string())
                .env("RAYON_NUM_THREADS", n.to_string())
                .output()?;
            if !out.status.success() {
                bail!("the {format} measurement at {n} threads failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            print!("{}", String::from_utf8_lossy(&out.stdout));
        }
    }
    // Concurrent streams through the engine (continuous batching), all cores.
    println!();
    let out = Command::new(&exe)
        .args(["chat", "--model"])
        .arg(&model)
        .args(["--runs", &runs.to_string(), "--child", "streams"])
        .output()?;
    if !out.status.success() {
        bail!("the concurrency measurement failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    print!("{}", String::from_utf8_lossy(&out.stdout));
    Ok(())
}
