//! `--gpu`: a node mines its blocks with tpow-gpu (lavapipe in CI) and peers accept
//! them; a peer with `--gpu` verifies what it syncs on the GPU.

mod common;

use std::time::{Duration, Instant};

use common::{now_ms, serial, Node, Opts};

#[test]
fn gpu_mined_blocks_are_accepted_by_a_cpu_verifying_peer() {
    if std::env::var("TPOW_GPU_TESTS").as_deref() == Ok("skip") {
        eprintln!("TPOW_GPU_TESTS=skip: not testing GPU mining");
        return;
    }
    let _guard = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let genesis = now_ms();
    let miner = Node::start(
        &tmp.path().join("gpu"),
        &Opts { mine: true, gpu: true, genesis_time_ms: Some(genesis), ..Default::default() },
    );
    let peer = Node::start(
        &tmp.path().join("peer"),
        &Opts { genesis_time_ms: Some(genesis), peers: vec![miner.p2p.clone()], ..Default::default() },
    );
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let (h, id) = peer.tip();
        if h >= 3 && miner.tip() == (h, id.clone()) {
            break;
        }
        assert!(Instant::now() < deadline, "GPU miner made no blocks; log:\n{}", miner.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = miner.log();
    assert!(log.contains("mining on the GPU"), "the miner did not use the GPU; log:\n{log}");
    assert!(!log.contains("mining on the CPU"), "the miner fell back to the CPU; log:\n{log}");

    // A third node, started now, syncs those blocks and verifies them on the GPU
    // alone (no CPU thread): every pass of its sync batches is a GPU pass that the
    // header confirmed. (Blocks that reach it by gossip later are checked on the CPU.)
    let gpu_peer = Node::start(
        &tmp.path().join("gpu-peer"),
        &Opts {
            gpu: true,
            genesis_time_ms: Some(genesis),
            peers: vec![miner.p2p.clone()],
            extra: vec!["--verify-threads".into(), "0".into()],
            ..Default::default()
        },
    );
    let synced = peer.tip().0;
    gpu_peer.wait_for("sync from the miner", Duration::from_secs(60), |n| n.tip().0 >= synced);
    let log = gpu_peer.log();
    assert!(log.contains("verifying synced blocks on the GPU too"), "no GPU verifier; log:\n{log}");
    let passes = gpu_peer.metric("tpow_verification_forward_passes_total");
    let on_gpu = gpu_peer.metric("tpow_verification_gpu_forward_passes_total");
    assert!(on_gpu >= 3.0 && on_gpu <= passes, "{on_gpu} of {passes} passes on the GPU; log:\n{log}");
}
