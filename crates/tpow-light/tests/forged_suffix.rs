#![cfg(not(target_arch = "wasm32"))]
//! The forged-suffix attack of issue 19 against the light client's FlyClient sync.
//!
//! A forger forks the honest chain `depth` headers below its tip, fills the fork
//! with headers whose output digests are made up (pow hashes ground with BLAKE3
//! alone: cheap, since nothing checks a digest before a forward pass), and mines the
//! newest L + 1 headers honestly, so its chain claims more work than the honest one
//! and everything a client checks fully is genuine. The client's sample, drawn from
//! its own seed with FlyClient's density, must hit the forged part every time; the
//! honest chain must still verify.

use futures::executor::block_on;
use tpow_light::testkit::{fast_devnet, now_ms, FakeChain, FakeNet, FakeNode, Lie};
use tpow_light::{Client, Config, LightError, NodeState, SyncMode};

const HONEST: &str = "http://honest";
const LIAR: &str = "http://liar";
/// Headers checked fully (CKB RFC 0044's L).
const LAST: u64 = 100;
/// Client seeds tried against each forged chain.
const SEEDS: u64 = 200;

fn mode() -> SyncMode {
    SyncMode::Sampled { last: LAST, security_bits: 50 }
}

fn config(p: &tpow_core::ChainParams, nodes: &[&str]) -> Config {
    Config { nodes: nodes.iter().map(|s| s.to_string()).collect(), params: p.clone(), mode: mode(), checkpoint: None }
}

fn seed(depth: u64, i: u64) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&depth.to_le_bytes());
    s[8..16].copy_from_slice(&i.to_le_bytes());
    s
}

#[test]
fn forged_suffix_is_rejected_for_every_seed_and_the_honest_chain_accepted() {
    let p = fast_devnet(now_ms(), 86_400_000);
    let mut honest = FakeChain::new(&p);
    honest.grow(&p, 10_200, [1; 32]);
    for depth in [100u64, 1_000, 10_000] {
        let forged = FakeChain::forged_suffix(&p, &honest, depth, LAST);
        assert!(forged.tip.total_work > honest.tip.total_work, "the fork claims more work");
        let mut rejected = 0;
        for i in 0..SEEDS {
            let net = FakeNet::new(vec![(LIAR.into(), FakeNode::new(&p, forged.clone(), Lie::None))])
                .with_seed(seed(depth, i));
            let client = Client::new(config(&p, &[LIAR]), net, None).expect("config");
            match block_on(client.sync(&mut |_| {})) {
                Err(LightError::NoValidChain(msg)) => {
                    assert!(msg.contains("output digest"), "depth {depth} seed {i}: {msg}");
                    rejected += 1;
                }
                other => panic!("depth {depth} seed {i}: forged chain not rejected: {other:?}"),
            }
            assert_eq!(client.tip().height, 0, "nothing of the forged chain accepted");
            assert!(matches!(client.nodes()[0].state, NodeState::Invalid(_)), "depth {depth} seed {i}: flagged");
            // It was a sampled sync, not a linear one.
            assert!(client.stats().passes < 1 + LAST, "depth {depth}: {} passes", client.stats().passes);
        }
        eprintln!("forged suffix of {depth} headers: rejected for {rejected} of {SEEDS} client seeds");
        assert_eq!(rejected, SEEDS);

        // Next to an honest node: the liar is flagged and the honest chain adopted.
        for i in 0..2 {
            let net = FakeNet::new(vec![
                (LIAR.into(), FakeNode::new(&p, forged.clone(), Lie::None)),
                (HONEST.into(), FakeNode::new(&p, honest.clone(), Lie::None)),
            ])
            .with_seed(seed(depth, SEEDS + i));
            let client = Client::new(config(&p, &[LIAR, HONEST]), net, None).expect("config");
            let r = block_on(client.sync(&mut |_| {})).expect("the honest chain verifies");
            assert_eq!(r.tip.id, hex::encode(honest.tip.id));
            let nodes = client.nodes();
            assert!(matches!(nodes[0].state, NodeState::Invalid(_)), "{:?}", nodes[0].state);
            assert_eq!(nodes[1].state, NodeState::Ok);
            assert!(
                client.recent().iter().any(|v| v.check == tpow_light::Check::Sampled),
                "the honest chain was sampled"
            );
        }
    }
}
