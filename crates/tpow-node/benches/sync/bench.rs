//! Initial-sync benchmark (an example target, `sync_bench`): generates a long
//! devnet chain with the easiest target ASERT allows (blocks stamped on
//! schedule, late enough that the target sits at `max_target`), writes it into a
//! serving node's data dir, then times fresh `tpow-node` processes syncing it
//! over 127.0.0.1 with the given CPU sets, with and without `--assume-valid`
//! (the tip). Prints a table; asserts nothing about speed.
//!
//! ```text
//! cargo build --release -p tpow-node --no-default-features --bin tpow-node --example sync_bench
//! target/release/examples/sync_bench --blocks 20000 --node target/release/tpow-node --cpus 0 --cpus 0,1
//! ```
//!
//! `--generate-only DIR` writes the chain into the data dir `DIR` (replacing it)
//! and stops (no sync runs): `DIR/genesis-ms` holds the genesis time, the form
//! `tests/light/run.mjs --data-dir DIR --no-mine` serves. `--max-secs S` stops
//! generating after `S` seconds with the blocks made so far (the chain is as long
//! as the machine mined in that time; the count is printed). 100,000 headers took
//! 156 s on one thread of a loaded 2-core machine:
//!
//! ```text
//! target/release/examples/sync_bench --blocks 100000 --generate-only /tmp/chain100k
//! node tests/light/run.mjs --bench --no-mine --no-full --data-dir /tmp/chain100k --node-bin target/release/tpow-node
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tpow_core::body::Body;
use tpow_core::miner::{mine, MineJob, MineOutcome};
use tpow_core::{ChainParams, Header, HeaderChain, Model, ModelCache};
use tpow_node::store::{BestUpdate, CommitPlan, NewRow, Store};

struct Args {
    blocks: u64,
    node: PathBuf,
    cpus: Vec<String>,
    work: PathBuf,
    generate_only: Option<PathBuf>,
    max_secs: Option<f64>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        blocks: 20_000,
        node: PathBuf::from("target/release/tpow-node"),
        cpus: Vec::new(),
        work: std::env::temp_dir().join("tpow-sync-bench"),
        generate_only: None,
        max_secs: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--blocks" => a.blocks = v.parse()?,
            "--node" => a.node = v.into(),
            "--cpus" => a.cpus.push(v),
            "--work" => a.work = v.into(),
            "--generate-only" => a.generate_only = Some(v.into()),
            "--max-secs" => a.max_secs = Some(v.parse()?),
            _ => bail!("unknown argument {k}"),
        }
    }
    if a.cpus.is_empty() {
        a.cpus = vec!["0".into(), "0,1".into()];
    }
    Ok(a)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Mines `n` blocks on a devnet with genesis time `genesis`, stamped every 2 s
/// from `genesis + 600 s` (late enough for ASERT's easiest target); fewer if
/// `deadline` passes first.
fn generate(params: &ChainParams, n: u64, deadline: Option<Instant>) -> Result<Vec<(Header, Body)>> {
    let mut chain = HeaderChain::new(params.clone())?;
    let key = [7u8; 32];
    let stop = AtomicBool::new(false);
    let mut out = Vec::with_capacity(n as usize);
    let started = Instant::now();
    for i in 0..n {
        if deadline.is_some_and(|d| Instant::now() > d) {
            eprintln!("--max-secs reached after {i} blocks");
            break;
        }
        if i > 0 && i % 10_000 == 0 {
            eprintln!("{i} blocks in {:.1}s", started.elapsed().as_secs_f64());
        }
        let t = params.genesis_timestamp_ms + 600_000 + 2_000 * i;
        let height = chain.height() + 1;
        let body = Body::coinbase_only(height, key);
        let template = chain.next_template(key, body.root(), t);
        let model = Model::derive(&params.model, &template.prev_id)?;
        let job = MineJob {
            model: &model,
            template: template.template(),
            target: template.bits.to_target()?,
            start_nonce: 0,
            nonce_count: u64::MAX,
        };
        let MineOutcome::Found(a) = mine(&job, 1, &stop, &AtomicU64::new(0)) else { bail!("miner stopped") };
        let header = Header { nonce: a.nonce, output_digest: a.output_digest, ..template };
        let pending = chain.precheck(&header, u64::MAX)?;
        chain.insert(pending.complete(&header.output_digest)?)?;
        out.push((header, body));
    }
    Ok(out)
}

/// One thread's cost of model derivation and of a forward pass on this chain.
fn costs(params: &ChainParams, blocks: &[(Header, Body)]) -> Result<(f64, f64)> {
    let sample: Vec<&Header> = blocks.iter().map(|(h, _)| h).take(500).collect();
    let started = Instant::now();
    for h in &sample {
        std::hint::black_box(Model::derive(&params.model, &h.prev_id)?);
    }
    let derive = started.elapsed().as_secs_f64() / sample.len() as f64;
    let mut cache = ModelCache::new();
    let input = tpow_core::chain::PowInput::of(params.model, sample[0]);
    cache.model(&params.model, &input.prev_id)?;
    let started = Instant::now();
    for _ in 0..sample.len() {
        std::hint::black_box(cache.output_digest(&input)?);
    }
    let pass = started.elapsed().as_secs_f64() / sample.len() as f64;
    Ok((derive, pass))
}

fn write_data_dir(dir: &Path, params: &ChainParams, blocks: &[(Header, Body)]) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let store = Store::open(&dir.join("chain.redb"))?;
    store.set_meta("chain", params.name().as_bytes())?;
    store.set_meta("genesis_time_ms", &params.genesis_timestamp_ms.to_le_bytes())?;
    let genesis = tpow_core::chain::genesis_header(params).id();
    let mut ids = vec![genesis];
    ids.extend(blocks.iter().map(|(h, _)| h.id()));
    let rows = blocks
        .iter()
        .enumerate()
        .map(|(i, (h, b))| NewRow { seq: i as u64 + 1, header: *h, id: h.id(), body: b.encode() })
        .collect();
    store.commit(&CommitPlan {
        blocks: rows,
        best: Some(BestUpdate { from: 0, ids, old_height: 0 }),
        pruned: vec![],
    })?;
    Ok(())
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_node(
    node: &Path,
    dir: &Path,
    genesis: u64,
    cpus: Option<&str>,
    extra: &[String],
) -> Result<(Proc, String, String)> {
    std::fs::create_dir_all(dir)?;
    let _ = std::fs::remove_file(dir.join("http-addr"));
    let _ = std::fs::remove_file(dir.join("p2p-addr"));
    let mut cmd = match cpus {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(c).arg(node);
            cmd
        }
        None => Command::new(node),
    };
    cmd.args(["run", "--chain", "devnet", "--http", "127.0.0.1:0", "--p2p", "/ip4/127.0.0.1/tcp/0", "--no-web"])
        .arg("--data-dir")
        .arg(dir)
        .arg("--genesis-time-ms")
        .arg(genesis.to_string())
        .arg("--parent-pid")
        .arg(std::process::id().to_string())
        .args(extra);
    let log = std::fs::File::create(dir.join("node.log"))?;
    cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).env("RUST_LOG", "info,libp2p=warn");
    let proc = Proc(cmd.spawn().context("spawning tpow-node")?);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let http = std::fs::read_to_string(dir.join("http-addr")).unwrap_or_default();
        let p2p = std::fs::read_to_string(dir.join("p2p-addr")).unwrap_or_default();
        if !http.trim().is_empty() && !p2p.trim().is_empty() && get(http.trim(), "/api/health").is_some() {
            return Ok((proc, http.trim().to_string(), p2p.trim().to_string()));
        }
        if Instant::now() > deadline {
            bail!("node in {} did not start", dir.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

fn height(addr: &str) -> u64 {
    get(addr, "/api/tip")
        .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
        .and_then(|v| v["height"].as_u64())
        .unwrap_or(0)
}

fn metric(addr: &str, name: &str) -> f64 {
    get(addr, "/metrics")
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with(name) && !l.starts_with('#'))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0.0)
}

fn main() -> Result<()> {
    let a = args()?;
    let genesis = now_ms() - 600_000 - 2_000 * a.blocks - 60_000;
    let params = ChainParams::devnet().with_genesis_time(genesis)?;
    let started = Instant::now();
    let deadline = a.max_secs.map(|s| started + Duration::from_secs_f64(s));
    let blocks = generate(&params, a.blocks, deadline)?;
    println!("generated {} blocks in {:.1}s", blocks.len(), started.elapsed().as_secs_f64());
    if let Some(dir) = &a.generate_only {
        write_data_dir(dir, &params, &blocks)?;
        std::fs::write(dir.join("genesis-ms"), genesis.to_string())?;
        println!("wrote {} (genesis {genesis} ms):", dir.display());
        println!("  tpow-node run --chain devnet --data-dir {} --genesis-time-ms {genesis}", dir.display());
        println!("  node tests/light/run.mjs --bench --no-mine --data-dir {} --node-bin ...", dir.display());
        return Ok(());
    }
    let blocks_n = blocks.len() as u64;
    let (derive, pass) = costs(&params, &blocks)?;
    println!("one thread: derivation {:.3} ms, forward pass {:.3} ms (devnet)", derive * 1e3, pass * 1e3);
    let tip = blocks.last().map(|(h, _)| h.id()).context("no blocks")?;
    let serve_dir = a.work.join("serve");
    write_data_dir(&serve_dir, &params, &blocks)?;
    println!();
    println!(
        "| cpus | --assume-valid | headers | seconds | headers/s | passes | derive s (threads) | pass s (threads) |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for cpus in &a.cpus {
        for assume in [false, true] {
            let (_server, _, server_p2p) = start_node(&a.node, &serve_dir, genesis, None, &[])?;
            let dir = a.work.join(format!("sync-{}-{assume}", cpus.replace(',', "_")));
            let _ = std::fs::remove_dir_all(&dir);
            let mut extra = vec!["--peer".to_string(), server_p2p];
            if assume {
                extra.push("--assume-valid".into());
                extra.push(hex::encode(tip));
            }
            let t0 = Instant::now();
            let (_client, http, _) = start_node(&a.node, &dir, genesis, Some(cpus), &extra)?;
            let deadline = t0 + Duration::from_secs(1_800);
            while height(&http) < blocks_n {
                if Instant::now() > deadline {
                    bail!("sync did not finish; see {}", dir.join("node.log").display());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let secs = t0.elapsed().as_secs_f64();
            println!(
                "| {cpus} | {} | {} | {secs:.2} | {:.0} | {:.0} | {:.2} | {:.2} |",
                if assume { "tip" } else { "off" },
                blocks_n,
                blocks_n as f64 / secs,
                metric(&http, "tpow_verification_forward_passes_total"),
                metric(&http, "tpow_verification_derive_seconds_total"),
                metric(&http, "tpow_verification_pass_seconds_total"),
            );
        }
    }
    Ok(())
}
