//! Native numbers for docs/BENCHMARKS.md: time to verify one header's forward pass
//! (mainnet and devnet test vectors), and cold syncs of a devnet chain from a fake
//! node in sampled and full mode (forward passes, bytes, time), plus the sampled
//! pass count for longer chains.
//!
//! `cargo run --release -p tpow-light --example light_bench [-- HEADERS]` (default 10000).

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::time::Instant;

    use futures::executor::block_on;
    use tpow_core::chain::PowInput;
    use tpow_core::header::TEMPLATE_LEN;
    use tpow_core::{ChainParams, ModelCache, U256};
    use tpow_light::testkit::{fast_devnet, now_ms, FakeChain, FakeNet, FakeNode, Lie};
    use tpow_light::{Client, Config, SyncMode};

    fn vector_input(file: &str, chain: &str) -> (PowInput, String) {
        let v: serde_json::Value = serde_json::from_str(file).expect("vectors");
        let c = &v["cases"][0];
        let mut prev_id = [0u8; 32];
        hex::decode_to_slice(c["prev_id"].as_str().expect("prev_id"), &mut prev_id).expect("hex");
        let mut template = [0u8; TEMPLATE_LEN];
        hex::decode_to_slice(c["template"].as_str().expect("template"), &mut template).expect("hex");
        let spec = ChainParams::by_name(chain).expect("chain").model;
        let input =
            PowInput { spec, prev_id, template, nonce: c["nonce"].as_u64().expect("nonce"), output_digest: [0; 32] };
        (input, c["output_digest"].as_str().expect("digest").to_string())
    }

    fn time_pass(name: &str, input: &PowInput, expect: &str) {
        let runs = if input.spec.d_model > 64 { 5 } else { 200 };
        let mut cache = ModelCache::new();
        let t = Instant::now();
        let d = cache.output_digest(input).expect("pass");
        let first = t.elapsed().as_secs_f64() * 1e3;
        assert_eq!(hex::encode(d), expect, "vector digest");
        let t = Instant::now();
        for _ in 0..runs {
            cache.output_digest(input).expect("pass");
        }
        let pass = t.elapsed().as_secs_f64() * 1e3 / runs as f64;
        println!("| verify one {name} header, native CPU | {first:.2} ms (model derivation + pass) | {pass:.2} ms (pass, model cached) |");
    }

    pub fn main() {
        let headers: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
        println!("| measurement | value | note |\n| --- | --- | --- |");
        let (m, md) = vector_input(include_str!("../../../tests/vectors/mainnet.json"), "mainnet");
        time_pass("mainnet", &m, &md);
        let (d, dd) = vector_input(include_str!("../../../tests/vectors/devnet.json"), "devnet");
        time_pass("devnet", &d, &dd);

        let params = fast_devnet(now_ms(), 86_400_000);
        let t = Instant::now();
        let mut chain = FakeChain::new(&params);
        chain.grow(&params, headers, [1; 32]);
        eprintln!("mined {headers} devnet headers in {:.1} s", t.elapsed().as_secs_f64());
        for (name, mode) in [("sampled (L=100, λ=50)", SyncMode::default()), ("full", SyncMode::Full)] {
            let net = FakeNet::new(vec![("http://node".into(), FakeNode::new(&params, chain.clone(), Lie::None))]);
            let cfg = Config { nodes: vec!["http://node".into()], params: params.clone(), mode, checkpoint: None };
            let client = Client::new(cfg, net, None).expect("config");
            let t = Instant::now();
            let r = block_on(client.sync(&mut |_| {})).expect("sync");
            println!(
                "| cold {name} sync of {headers} devnet headers, native | {:.2} s | {} forward passes, {} bytes, {} requests |",
                t.elapsed().as_secs_f64(),
                r.passes,
                r.bytes,
                client.stats().requests
            );
        }
        // Passes a sampled sync needs for longer chains (L = 100, λ = 50): L + the
        // distinct headers hit by the draws, with work per header constant (a devnet
        // at its steady target) or rising linearly 1,000-fold.
        for n in [10_000u64, 100_000, 1_000_000] {
            let last = 100u64;
            let boundary = n + 1 - last;
            for (shape, cum) in [
                ("flat work", Box::new(|h: u64| U256::from(h + 1)) as Box<dyn Fn(u64) -> U256>),
                ("rising work", Box::new(move |h: u64| U256::from((h + 1) + 999 * (h + 1) * (h + 1) / (2 * n)))),
            ] {
                let below = cum(boundary - 1);
                let checked = cum(n) - below;
                let m = tpow_light::flyclient::draws_for(&checked, &below, 50);
                let hit = tpow_core::flyclient::sample_heights(&[7; 32], boundary, &checked, m, &cum).len();
                println!(
                    "| sampled sync of {n} headers ({shape}): forward passes | {} | {last} last + distinct of {m} draws |",
                    last as usize + hit
                );
            }
        }
    }
}

fn main() {
    #[cfg(not(target_arch = "wasm32"))]
    native::main();
}
