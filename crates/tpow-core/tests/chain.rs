//! Header-chain validation with real mined headers and forged ones.

use std::sync::atomic::{AtomicBool, AtomicU64};

use tpow_core::chain::{check_pow_hash, verify_header_pow, HeaderError, InsertOutcome};
use tpow_core::miner::{mine, MineJob, MineOutcome};
use tpow_core::puzzle::pow_hash;
use tpow_core::target::{hash_meets_target, CompactTarget};
use tpow_core::{BlockId, ChainParams, Header, HeaderChain, Model, ModelCache, U256};

/// Devnet shape with an easy start (about one nonce in 16 wins), so tests mine fast.
fn easy_params() -> ChainParams {
    let mut p = ChainParams::devnet();
    p.genesis_bits = CompactTarget::from_target(p.asert.max_target);
    p
}

const STEP: u64 = 2_000;

fn solve(mut h: Header) -> Header {
    let model = Model::derive(&ChainParams::devnet().model, &h.prev_id).unwrap();
    let job = MineJob {
        model: &model,
        template: h.template(),
        target: h.bits.to_target().unwrap(),
        start_nonce: 0,
        nonce_count: 1 << 20,
    };
    match mine(&job, 1, &AtomicBool::new(false), &AtomicU64::new(0)) {
        MineOutcome::Found(a) => {
            h.nonce = a.nonce;
            h.output_digest = a.output_digest;
            h
        }
        other => panic!("no solution: {other:?}"),
    }
}

/// Mines one valid child of `parent` with a timestamp `STEP` after it.
fn child(chain: &HeaderChain, parent: &BlockId, key: u8) -> Header {
    let p = chain.get(parent).unwrap();
    let t = chain.template_on(parent, [key; 32], [0; 32], p.header.timestamp_ms + STEP).unwrap();
    solve(t)
}

fn now(h: &Header) -> u64 {
    h.timestamp_ms
}

#[test]
fn mined_headers_extend_the_chain_and_accumulate_work() {
    let mut chain = HeaderChain::new(easy_params()).expect("valid params");
    let mut cache = ModelCache::new();
    let mut work = chain.tip().total_work;
    for height in 1..=20u64 {
        let tip = chain.tip().id;
        let h = child(&chain, &tip, 1);
        let out = chain.submit_cpu(&h, now(&h), &mut cache).unwrap();
        assert_eq!(out, InsertOutcome::NewTip { fork_height: height - 1, removed: vec![], added: vec![h.id()] });
        assert_eq!(chain.height(), height);
        assert!(chain.tip().total_work > work);
        work = chain.tip().total_work;
        verify_header_pow(&ChainParams::devnet().model, &h, &mut cache).unwrap();
    }
    // Resubmitting is rejected without side effects.
    let h = chain.tip().header;
    assert_eq!(chain.submit_cpu(&h, now(&h), &mut cache), Err(HeaderError::AlreadyKnown));
}

/// A chain with a few blocks and a valid next header on top of it.
fn setup() -> (HeaderChain, Header, ModelCache) {
    let mut chain = HeaderChain::new(easy_params()).expect("valid params");
    let mut cache = ModelCache::new();
    for _ in 0..3 {
        let tip = chain.tip().id;
        let h = child(&chain, &tip, 1);
        chain.submit_cpu(&h, now(&h), &mut cache).unwrap();
    }
    let tip = chain.tip().id;
    let next = child(&chain, &tip, 2);
    (chain, next, cache)
}

/// Re-mines a tampered header so that only the tampered rule is broken.
fn resolve(h: Header) -> Header {
    solve(Header { nonce: 0, output_digest: [0; 32], ..h })
}

#[test]
fn the_valid_next_header_is_accepted() {
    let (mut chain, next, mut cache) = setup();
    chain.submit_cpu(&next, now(&next), &mut cache).unwrap();
}

#[test]
fn unknown_parent_is_rejected() {
    let (chain, next, _) = setup();
    let h = resolve(Header { prev_id: [9; 32], ..next });
    assert_eq!(chain.precheck(&h, now(&h)).unwrap_err(), HeaderError::UnknownParent);
}

#[test]
fn wrong_height_is_rejected() {
    let (chain, next, _) = setup();
    let h = resolve(Header { height: next.height + 1, ..next });
    assert!(matches!(chain.precheck(&h, now(&h)), Err(HeaderError::Height { .. })));
}

#[test]
fn timestamps_out_of_range_are_rejected() {
    let (chain, next, _) = setup();
    let parent_ts = chain.tip().header.timestamp_ms;
    let h = resolve(Header { timestamp_ms: parent_ts, ..next });
    assert!(matches!(chain.precheck(&h, now(&next)), Err(HeaderError::TimestampNotAfterParent { .. })));
    // Far in the future relative to the verifier's clock. The target is re-derived by
    // ASERT from the parent, so only the clock rule can fail.
    let drift = chain.params().max_future_drift_ms;
    let h = resolve(Header { timestamp_ms: parent_ts + drift + 10 * STEP, ..next });
    assert!(matches!(chain.precheck(&h, parent_ts + STEP), Err(HeaderError::TimestampInFuture { .. })));
    // The same header is fine once the clock has caught up.
    assert!(chain.precheck(&h, h.timestamp_ms).is_ok());
}

#[test]
fn wrong_target_is_rejected_before_the_pow_check() {
    let (chain, next, _) = setup();
    // Easier than ASERT allows; nonce left unsolved, so the pow check would fail too:
    // the target rule must be reported first.
    let easier = CompactTarget::from_target(next.bits.to_target().unwrap() << 1u32);
    let h = Header { bits: easier, ..next };
    assert!(matches!(chain.precheck(&h, now(&h)), Err(HeaderError::Target { .. })));
}

#[test]
fn wrong_mmr_root_is_rejected() {
    let (chain, next, _) = setup();
    let h = resolve(Header { mmr_root: [7; 32], ..next });
    assert_eq!(chain.precheck(&h, now(&h)).unwrap_err(), HeaderError::MmrRoot);
}

#[test]
fn bad_pow_hash_is_rejected_by_the_cheap_check() {
    let (chain, next, _) = setup();
    let target = next.bits.to_target().unwrap();
    // Find a nonce whose pow hash misses the target, keeping the real digest field.
    let mut h = next;
    while hash_meets_target(&pow_hash(&h.template(), h.nonce, &h.output_digest), &target) {
        h.nonce += 1;
    }
    // `precheck` has no model and runs no forward pass: the rejection is cheap.
    assert_eq!(chain.precheck(&h, now(&h)).unwrap_err(), HeaderError::PowHash);
    assert_eq!(check_pow_hash(&h).unwrap_err(), HeaderError::PowHash);
}

#[test]
fn forged_output_digest_passes_cheap_checks_but_fails_the_forward_pass() {
    let (mut chain, next, mut cache) = setup();
    // A forger grinds the pow hash over a made-up digest, skipping the forward pass.
    let target = next.bits.to_target().unwrap();
    let mut h = Header { output_digest: [0xAB; 32], nonce: 0, ..next };
    while !hash_meets_target(&pow_hash(&h.template(), h.nonce, &h.output_digest), &target) {
        h.nonce += 1;
    }
    let pending = chain.precheck(&h, now(&h)).expect("cheap checks pass");
    let real = cache.output_digest(&pending.pow_input()).unwrap();
    assert_eq!(pending.complete(&real).unwrap_err(), HeaderError::OutputDigest);
    assert_eq!(chain.submit_cpu(&h, now(&h), &mut cache).unwrap_err(), HeaderError::OutputDigest);
    assert_eq!(verify_header_pow(&chain.params().model, &h, &mut cache).unwrap_err(), HeaderError::OutputDigest);
    assert_eq!(chain.height(), 3, "nothing was inserted");
}

#[test]
fn heavier_fork_reorgs_and_lighter_fork_stays_on_the_side() {
    let mut chain = HeaderChain::new(easy_params()).expect("valid params");
    let mut cache = ModelCache::new();
    let genesis = chain.tip().id;
    // Branch A: 3 blocks.
    let mut a = Vec::new();
    let mut tip = genesis;
    for _ in 0..3 {
        let h = child(&chain, &tip, 0xA);
        chain.submit_cpu(&h, now(&h), &mut cache).unwrap();
        tip = h.id();
        a.push(tip);
    }
    // Branch B from genesis: equal work first (stays side), then one more (reorg).
    let mut b = Vec::new();
    let mut tip = genesis;
    for i in 0..4 {
        let h = child(&chain, &tip, 0xB);
        let out = chain.submit_cpu(&h, now(&h), &mut cache).unwrap();
        tip = h.id();
        b.push(tip);
        if i < 3 {
            // Same heights, same timestamps, so same targets: never strictly more work.
            assert_eq!(out, InsertOutcome::SideChain, "block {i} of B");
        } else {
            assert_eq!(out, InsertOutcome::NewTip { fork_height: 0, removed: a.clone(), added: b.clone() });
        }
    }
    assert_eq!(chain.tip().id, *b.last().unwrap());
    assert_eq!(chain.height(), 4);
    for (h, id) in b.iter().enumerate() {
        assert_eq!(chain.at_height(h as u64 + 1).unwrap().id, *id);
    }
    // A grows back past B: reorg again, removing all of B.
    let mut tip = *a.last().unwrap();
    for _ in 0..2 {
        let h = child(&chain, &tip, 0xA);
        let out = chain.submit_cpu(&h, now(&h), &mut cache).unwrap();
        tip = h.id();
        if let InsertOutcome::NewTip { fork_height, removed, .. } = out {
            assert_eq!(fork_height, 0);
            assert_eq!(removed, b);
        }
    }
    assert_eq!(chain.tip().id, tip);
    assert_eq!(chain.len(), 1 + 5 + 4);
}

#[test]
fn asert_raises_difficulty_when_blocks_come_fast() {
    let mut chain = HeaderChain::new(easy_params()).expect("valid params");
    let mut cache = ModelCache::new();
    let start: U256 = chain.tip().target;
    for _ in 0..10 {
        let tip = chain.tip();
        let ts = tip.header.timestamp_ms + 100; // 20x faster than the 2 s ideal
        let t = chain.next_template([1; 32], [0; 32], ts);
        let h = solve(t);
        chain.submit_cpu(&h, ts, &mut cache).unwrap();
    }
    assert!(chain.tip().target < start, "target must fall when blocks are fast");
}

/// Mines `n` headers on `parent`, each `STEP` after the one before, without
/// inserting them (a segment as a peer would send it).
fn segment(chain: &HeaderChain, parent: &BlockId, n: usize, key: u8) -> Vec<Header> {
    let mut out: Vec<Header> = Vec::new();
    let mut scratch = chain.clone();
    let mut cache = ModelCache::new();
    let mut tip = *parent;
    for _ in 0..n {
        let h = child(&scratch, &tip, key);
        scratch.submit_cpu(&h, u64::MAX - STEP, &mut cache).unwrap();
        tip = h.id();
        out.push(h);
    }
    out
}

fn grow(chain: &mut HeaderChain, n: usize, key: u8) {
    let mut cache = ModelCache::new();
    for _ in 0..n {
        let tip = chain.tip().id;
        let h = child(chain, &tip, key);
        chain.submit_cpu(&h, u64::MAX - STEP, &mut cache).unwrap();
    }
}

#[test]
fn branch_precheck_checks_every_header_before_any_pass() {
    let chain = HeaderChain::new(easy_params()).expect("valid params");
    let g = chain.tip().id;
    let seg = segment(&chain, &g, 5, 1);
    let pending = chain.precheck_branch(&seg, u64::MAX - STEP).expect("valid segment");
    assert_eq!(pending.len(), 5);
    // Header 4 claims an easier target than ASERT gives: refused at index 4 by the
    // cheap checks, even though the headers before it are fine.
    let mut forged = seg.clone();
    forged[4].bits = CompactTarget(0x2200_00ff);
    let err = chain.precheck_branch(&forged, u64::MAX - STEP).unwrap_err();
    assert!(
        matches!(err, tpow_core::BranchError::Header { index: 4, source: HeaderError::Target { .. }, .. }),
        "{err}"
    );
    // A made-up digest on header 4 that still meets the target cannot be told
    // apart cheaply; the check of its digest can.
    let mut cache = ModelCache::new();
    let order = pending.verification_order(&[7; 32]);
    for &i in &order {
        let d = cache.output_digest(&pending.pow_input(i).unwrap()).unwrap();
        pending.check_digest(i, &d).unwrap();
    }
    // Gaps and leading known headers.
    let mut gap = seg.clone();
    gap.remove(2);
    assert_eq!(chain.precheck_branch(&gap, u64::MAX - STEP).unwrap_err(), tpow_core::BranchError::NotContiguous(2));
    let mut grown = chain.clone();
    let mut cache = ModelCache::new();
    grown.submit_cpu(&seg[0], u64::MAX - STEP, &mut cache).unwrap();
    let p = grown.precheck_branch(&seg, u64::MAX - STEP).unwrap();
    assert_eq!((p.skipped(), p.len()), (1, 4));
}

#[test]
fn low_work_branches_get_no_pass_and_are_pruned() {
    let mut chain = HeaderChain::new(easy_params()).expect("valid params");
    let g = chain.tip().id;
    grow(&mut chain, 12, 1);
    let now = u64::MAX - STEP;
    // A child of genesis claims one block of work against twelve: refused before
    // any pass, whatever its digest.
    let fork = segment(&chain, &g, 1, 2);
    let err = chain.precheck_branch(&fork, now).unwrap_err();
    assert!(matches!(err, tpow_core::BranchError::LowWork { .. }), "{err}");
    // A sibling of the tip is within the margin: it gets its pass and is stored.
    let parent = chain.at_height(chain.height() - 1).unwrap().id;
    let sibling = segment(&chain, &parent, 1, 3);
    let pending = chain.precheck_branch(&sibling, now).expect("within the margin");
    let mut cache = ModelCache::new();
    let d = cache.output_digest(&pending.pow_input(0).unwrap()).unwrap();
    for v in pending.complete(&[d]).unwrap() {
        assert_eq!(chain.insert(v).unwrap(), InsertOutcome::SideChain);
    }
    assert_eq!(chain.side_len(), 1);
    assert!(chain.prune().is_empty(), "a fresh sibling stays");
    // The best chain moves on by more than the margin: the sibling can no longer
    // win and is pruned.
    grow(&mut chain, tpow_core::chain::WORK_MARGIN_BLOCKS as usize + 2, 1);
    assert_eq!(chain.prune(), vec![(sibling[0].height, sibling[0].id())]);
    assert_eq!(chain.side_len(), 0);
    assert!(chain.get(&sibling[0].id()).is_none());
}

#[test]
fn a_heavier_branch_still_wins_through_the_branch_path() {
    let mut chain = HeaderChain::new(easy_params()).expect("valid params");
    grow(&mut chain, 8, 1);
    let fork_parent = chain.at_height(4).unwrap().id;
    let branch = segment(&chain, &fork_parent, 6, 2);
    let pending = chain.precheck_branch(&branch, u64::MAX - STEP).expect("heavier branch");
    let mut cache = ModelCache::new();
    let digests: Vec<[u8; 32]> =
        (0..pending.len()).map(|i| cache.output_digest(&pending.pow_input(i).unwrap()).unwrap()).collect();
    let outcomes: Vec<InsertOutcome> =
        pending.complete(&digests).unwrap().into_iter().map(|v| chain.insert(v).unwrap()).collect();
    assert!(outcomes
        .iter()
        .any(|o| matches!(o, InsertOutcome::NewTip { fork_height: 4, removed, .. } if removed.len() == 4)));
    assert_eq!(chain.tip().id, branch[5].id());
    assert_eq!(chain.side_len(), 4);
}

#[test]
fn verification_order_is_a_seeded_permutation() {
    let a = tpow_core::chain::shuffled(500, &[1; 32]);
    let b = tpow_core::chain::shuffled(500, &[2; 32]);
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..500).collect::<Vec<_>>());
    assert_ne!(a, b);
    assert_eq!(a, tpow_core::chain::shuffled(500, &[1; 32]));
    // The last header is not verified last for most seeds.
    let last_first = (0..64u8).filter(|s| tpow_core::chain::shuffled(500, &[*s; 32])[..8].contains(&499)).count();
    assert!(last_first < 8);
}

#[test]
fn detached_check_bounds_the_target() {
    use tpow_core::chain::{check_detached, ChainEntry};
    let chain = HeaderChain::new(ChainParams::devnet()).expect("valid params");
    let params = chain.params().clone();
    let g = chain.tip().id;
    let seg = segment(&chain, &g, 3, 1);
    let now = seg[2].timestamp_ms;
    let mut parent = ChainEntry::genesis(&params).unwrap();
    for h in &seg {
        let t = check_detached(&params, h, now).unwrap();
        let e = parent.child(*h, t);
        assert_eq!(e.id, h.id());
        parent = e;
    }
    let future = Header { timestamp_ms: now + 60_000, ..seg[1] };
    assert!(matches!(check_detached(&params, &future, now), Err(HeaderError::TimestampInFuture { .. })));
    // Stamped on schedule, the header may not carry the easiest target.
    let on_schedule = params.genesis_timestamp_ms + 2_000 * seg[1].height;
    let easy =
        Header { timestamp_ms: on_schedule, bits: CompactTarget::from_target(params.asert.max_target), ..seg[1] };
    assert!(matches!(check_detached(&params, &easy, now), Err(HeaderError::Target { .. })));
    assert!(check_detached(&params, &tpow_core::chain::genesis_header(&params), now).is_err());
}

#[test]
fn parameters_are_validated_once() {
    let mut bad = ChainParams::devnet();
    bad.genesis_bits = CompactTarget(0x0180_0000); // negative: does not decode
    assert!(HeaderChain::new(bad.clone()).is_err());
    assert!(tpow_core::chain::ChainEntry::genesis(&bad).is_err());
    let mut easy = ChainParams::devnet();
    easy.genesis_bits = CompactTarget::from_target(U256::MAX);
    assert_eq!(HeaderChain::new(easy).unwrap_err(), tpow_core::ParamsError::GenesisAboveMax);
    assert!(ChainParams::mainnet().with_genesis_time(1).is_err());
    assert_eq!(ChainParams::devnet().with_genesis_time(5).unwrap().genesis_timestamp_ms, 5);
    assert!(tpow_core::Network::Devnet.allows_genesis_override());
    assert!(!tpow_core::Network::Mainnet.allows_genesis_override());
}

/// Siblings of one parent reuse the cached layout (no derivation or packing per pass),
/// and the cached pass gives the digest a fresh solver gives; a new parent replaces it.
#[test]
fn the_model_cache_lays_out_each_parent_once() {
    use tpow_core::chain::PowInput;
    use tpow_core::puzzle::Solver;
    let spec = easy_params().model;
    let mut cache = ModelCache::new();
    let a = [7u8; 32];
    let first = cache.packed(&spec, &a).expect("derive") as *const _;
    let again = cache.packed(&spec, &a).expect("cached") as *const _;
    assert!(std::ptr::eq(first, again), "the same parent must not be laid out twice");

    let model = Model::derive(&spec, &a).expect("derive");
    let template = [3u8; tpow_core::header::TEMPLATE_LEN];
    for nonce in 0..4u64 {
        let input = PowInput { spec, prev_id: a, template, nonce, output_digest: [0; 32] };
        let fresh = Solver::new(&model).attempt(&template, nonce).output_digest;
        assert_eq!(cache.output_digest(&input).expect("pass"), fresh, "nonce {nonce}");
    }

    let b = [8u8; 32];
    assert_eq!(cache.model(&spec, &b).expect("derive").prev_id, b);
    assert_eq!(cache.packed(&spec, &b).expect("cached").model(), &Model::derive(&spec, &b).expect("derive"));
}
