#![cfg(not(target_arch = "wasm32"))]
//! The light client against fake nodes (honest and lying), natively: the sans-io
//! core decides everything, so these tests cover the browser's logic too.

use futures::executor::block_on;
use tpow_light::testkit::{fast_devnet, now_ms, FakeChain, FakeNet, FakeNode, Lie};
use tpow_light::{Client, Config, FetchError, LightError, NodeFault, NodeState, Phase, SyncMode};

const HONEST: &str = "http://honest";
const LIAR: &str = "http://liar";

fn params() -> tpow_core::ChainParams {
    // Genesis a day before the first test started: blocks stamped now are far
    // behind schedule, ASERT sits at the easiest target and mining is cheap.
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    fast_devnet(*START.get_or_init(now_ms), 86_400_000)
}

fn chain(p: &tpow_core::ChainParams, n: usize) -> FakeChain {
    let mut c = FakeChain::new(p);
    c.grow(p, n, [1; 32]);
    c
}

fn config(p: &tpow_core::ChainParams, nodes: &[&str], mode: SyncMode) -> Config {
    Config { nodes: nodes.iter().map(|s| s.to_string()).collect(), params: p.clone(), mode, checkpoint: None }
}

/// The WebSocket message a node sends for `tip`.
fn tip_message(tip: &tpow_core::chain::ChainEntry) -> String {
    tpow_light::wire::tip_json(tip.header.height, &tip.id, &tip.total_work, &tip.target, tip.header.timestamp_ms)
}

fn sampled() -> SyncMode {
    SyncMode::Sampled { last: 10, security_bits: 50 }
}

#[test]
fn sampled_and_full_sync_reach_the_same_tip() {
    let p = params();
    let honest = chain(&p, 300);
    let net = FakeNet::new(vec![(HONEST.into(), FakeNode::new(&p, honest.clone(), Lie::None))]);
    let client = Client::new(config(&p, &[HONEST], sampled()), net, None).expect("config");
    let mut phases = Vec::new();
    let r = block_on(client.sync(&mut |pr| phases.push(pr.phase))).expect("sync");
    assert_eq!(r.tip.height, 300);
    assert_eq!(r.tip.id, hex::encode(honest.tip.id));
    assert_eq!(r.tip.total_work, honest.tip.total_work.to_string());
    // 10 last headers plus at most 174 distinct samples: A = 10, W = 291, J = 5
    // levels, ceil(5 · 50 · ln 2) = 174 draws.
    assert!(r.passes > 10 && r.passes <= 10 + 174, "passes {}", r.passes);
    assert!(phases.contains(&Phase::Flyclient) && phases.contains(&Phase::Verify));
    assert_eq!(client.nodes()[0].state, NodeState::Ok);
    let recent = client.recent();
    assert!(recent.iter().any(|v| v.check == tpow_light::Check::Sampled));
    assert!(recent.iter().all(|v| v.backend == tpow_light::Backend::CpuNative));

    let net = FakeNet::new(vec![(HONEST.into(), FakeNode::new(&p, honest.clone(), Lie::None))]);
    let full = Client::new(config(&p, &[HONEST], SyncMode::Full), net, None).expect("config");
    let r = block_on(full.sync(&mut |_| {})).expect("full sync");
    assert_eq!(r.passes, 300);
    assert_eq!(r.tip, client.tip());
}

/// A lying node with a heavier-looking chain, against an honest one.
fn against_liar(liar_chain: FakeChain, lie: Lie, mode: SyncMode) -> (Client<FakeNet>, FakeChain) {
    let p = params();
    let honest = liar_chain.truncated(&p, 260.min(liar_chain.height()));
    let honest = {
        let mut h = honest;
        if h.height() < 260 {
            h.grow(&p, (260 - h.height()) as usize, [1; 32]);
        }
        h
    };
    let net = FakeNet::new(vec![
        (LIAR.into(), FakeNode::new(&p, liar_chain, lie)),
        (HONEST.into(), FakeNode::new(&p, honest.clone(), Lie::None)),
    ]);
    let client = Client::new(config(&p, &[LIAR, HONEST], mode), net, None).expect("config");
    block_on(client.sync(&mut |_| {})).expect("the honest node's chain verifies");
    (client, honest)
}

fn assert_liar_flagged(client: &Client<FakeNet>, honest: &FakeChain, what: &str) {
    assert_eq!(client.tip().id, hex::encode(honest.tip.id), "{what}: ends on the honest chain");
    let nodes = client.nodes();
    assert!(matches!(&nodes[0].state, NodeState::Invalid(_)), "{what}: liar flagged, got {:?}", nodes[0].state);
    assert_eq!(nodes[1].state, NodeState::Ok, "{what}");
}

#[test]
fn lighter_chain_with_inflated_work_is_flagged() {
    let p = params();
    // The liar forks at 100 and has fewer headers than the honest 260, but
    // announces ten times its work.
    let mut lighter = chain(&p, 100);
    lighter.grow(&p, 60, [2; 32]);
    let (client, honest) = against_liar(lighter, Lie::InflateWork, sampled());
    assert_liar_flagged(&client, &honest, "inflated work");
    let detail = format!("{:?}", client.nodes()[0].state);
    assert!(detail.contains("claimed total work"), "{detail}");
}

#[test]
fn forged_forward_pass_is_caught_only_by_the_pass_and_flagged() {
    let p = params();
    let liar = chain(&p, 280);
    let tip = liar.height();
    for mode in [sampled(), SyncMode::Full] {
        let (client, honest) = against_liar(liar.clone(), Lie::ForgedPass(tip), mode);
        assert_liar_flagged(&client, &honest, "forged pass");
        let detail = format!("{:?}", client.nodes()[0].state);
        assert!(detail.contains("output digest"), "{detail}");
    }
}

#[test]
fn forged_sample_deep_in_the_chain_is_caught() {
    let p = params();
    let liar = chain(&p, 280);
    // Forge every sampled height in turn would be slow; forge one the sample hits.
    let net = FakeNet::new(vec![(LIAR.into(), FakeNode::new(&p, liar.clone(), Lie::None))]);
    let probe = Client::new(config(&p, &[LIAR], sampled()), net, None).expect("config");
    block_on(probe.sync(&mut |_| {})).expect("sync");
    let hit = probe
        .recent()
        .iter()
        .find(|r| r.check == tpow_light::Check::Sampled && r.height > 1)
        .map(|r| r.height)
        .expect("a sampled header");
    let (client, honest) = against_liar(liar, Lie::ForgedPass(hit), sampled());
    assert_liar_flagged(&client, &honest, "forged sample");
}

#[test]
fn wrong_proofs_truncated_bytes_absurd_counts_and_dropped_samples_are_flagged() {
    let p = params();
    let liar = chain(&p, 280);
    for (lie, mode, needle) in [
        (Lie::BadProofs, sampled(), "MMR proof"),
        (Lie::Truncate, SyncMode::Full, "does not decode"),
        (Lie::AbsurdCounts, sampled(), "samples"),
        (Lie::DropSample, sampled(), "sample"),
        (Lie::OtherGenesis, sampled(), "genesis"),
    ] {
        let (client, honest) = against_liar(liar.clone(), lie, mode);
        assert_liar_flagged(&client, &honest, &format!("{lie:?}"));
        let detail = format!("{:?}", client.nodes()[0].state);
        assert!(detail.contains(needle), "{lie:?}: {detail}");
    }
}

#[test]
fn unreachable_node_is_not_blamed_and_a_lone_liar_is_rejected() {
    let p = params();
    let (client, honest) = against_liar(chain(&p, 50), Lie::Down, sampled());
    assert_eq!(client.tip().id, hex::encode(honest.tip.id));
    assert!(matches!(client.nodes()[0].state, NodeState::Unreachable(_)));
    // The platform says why, as a kind: a node that is down is unreachable, not a liar.
    match block_on(client.on_tip_message(0, tip_message(&honest.tip).as_bytes())) {
        Err(LightError::Network { node, error: FetchError::Unreachable(_) }) => assert_eq!(node, LIAR),
        other => panic!("expected an unreachable node, got {other:?}"),
    }

    let net = FakeNet::new(vec![(LIAR.into(), FakeNode::new(&p, chain(&p, 40), Lie::ForgedPass(40)))]);
    let alone = Client::new(config(&p, &[LIAR], sampled()), net, None).expect("config");
    match block_on(alone.sync(&mut |_| {})) {
        Err(LightError::NoValidChain(msg)) => assert!(msg.contains(LIAR), "{msg}"),
        other => panic!("expected NoValidChain, got {other:?}"),
    }
    assert_eq!(alone.tip().height, 0, "nothing accepted");
}

#[test]
fn follows_new_tips_and_reorgs_and_resumes_from_state() {
    let p = params();
    let base = chain(&p, 200);
    let mut net = FakeNet::new(vec![(HONEST.into(), FakeNode::new(&p, base.clone(), Lie::None))]);
    // Sync, then the node mines 3 more.
    let mut grown = base.clone();
    grown.grow(&p, 3, [1; 32]);
    net.set_chain(HONEST, base.clone());
    let client = Client::new(config(&p, &[HONEST], sampled()), net, None).expect("config");
    block_on(client.sync(&mut |_| {})).expect("sync");
    assert_eq!(client.tip().height, 200);
    let state = client.state_bytes();

    // Resume from the stored state on a node that moved on: a short linear catch-up.
    let mut fork = base.truncated(&p, 195);
    fork.grow(&p, 10, [3; 32]);
    let net = FakeNet::new(vec![(HONEST.into(), FakeNode::new(&p, grown.clone(), Lie::None))]);
    let resumed = Client::new(config(&p, &[HONEST], sampled()), net, Some(&state)).expect("config");
    assert_eq!(resumed.tip().height, 200, "state restored");
    let r = block_on(resumed.sync(&mut |_| {})).expect("catch up");
    assert_eq!(r.passes, 3, "only the new headers");
    assert_eq!(resumed.tip().id, hex::encode(grown.tip.id));

    // Following: the node announces a heavier fork from height 195 (a reorg).
    let net = FakeNet::new(vec![(HONEST.into(), FakeNode::new(&p, fork.clone(), Lie::None))]);
    let follower = Client::new(config(&p, &[HONEST], sampled()), net, Some(&state)).expect("config");
    let msg = tip_message(&fork.tip);
    let new_tip = block_on(follower.on_tip_message(0, msg.as_bytes())).expect("reorg verified");
    assert_eq!(new_tip.map(|t| t.height), Some(205));
    assert_eq!(follower.tip().id, hex::encode(fork.tip.id));
    assert_eq!(follower.stats().passes, 10, "only the fork's headers");
    // A stale or lighter announcement changes nothing.
    let old = tip_message(&base.tip);
    assert_eq!(block_on(follower.on_tip_message(0, old.as_bytes())), Ok(None));
    // Garbage on the socket is a typed error naming the node.
    match block_on(follower.on_tip_message(0, b"not json")) {
        Err(LightError::Node { node, fault: NodeFault::Malformed(_) }) => assert_eq!(node, HONEST),
        other => panic!("{other:?}"),
    }
}

#[test]
fn verify_header_checks_one_header() {
    let p = params();
    let c = chain(&p, 30);
    let net = FakeNet::new(vec![(HONEST.into(), FakeNode::new(&p, c.clone(), Lie::None))]);
    let client = Client::new(config(&p, &[HONEST], sampled()), net, None).expect("config");
    let h = c.headers[17];
    let rec = block_on(client.verify_header(&h.encode())).expect("valid header");
    assert_eq!(rec.height, 17);
    assert_eq!(rec.check, tpow_light::Check::Detached);
    let mut forged = h;
    forged.output_digest[0] ^= 1;
    assert!(matches!(block_on(client.verify_header(&forged.encode())), Err(LightError::Header(_))));
    assert!(matches!(block_on(client.verify_header(&h.encode()[..100])), Err(LightError::Decode(_))));
}

/// A node whose best chain moved between announcing its tip and answering the
/// sample (an honest reorganisation) is not believed for that answer, and not
/// flagged as a liar either: its chain is simply not adopted this round.
#[test]
fn a_sample_for_another_tip_is_refused_without_flagging_the_node() {
    let p = params();
    let (client, honest) = against_liar(chain(&p, 300), Lie::MovedTip, sampled());
    assert_eq!(client.tip().id, hex::encode(honest.tip.id), "the honest chain is adopted");
    let state = &client.nodes()[0].state;
    assert!(matches!(state, NodeState::Unreachable(m) if m.contains("moved")), "{state:?}");
}
