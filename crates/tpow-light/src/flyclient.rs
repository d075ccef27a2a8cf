//! FlyClient verification: how many headers to sample, and the checks that make a
//! node's sample trustworthy without trusting the node.
//!
//! The node draws the sample (`tpow_core::flyclient::sample_heights`) from the tip
//! id, in proportion to cumulative work. The client cannot run that search itself
//! (it does not know the work at every height), but it can check the answer: each
//! sample's MMR proof against the tip's root fixes the exact work *before* the
//! sampled header (the left siblings and left peaks of its path, whose work values
//! the root commits to), so the client recomputes every draw `r_i` and checks that
//! exactly one returned header's work interval `[before, before + work)` holds it.
//! A node can therefore neither drop an inconvenient sample nor substitute another.

use tpow_core::flyclient::CTX_SAMPLE;
use tpow_core::mmr::{MmrNode, MmrPeaks, MmrProof};
use tpow_core::{BlockId, U256};

/// How many samples the client asks for below the last `k` headers of a chain
/// whose sampled range has `boundary` headers: 10 per doubling of the chain,
/// capped at the node's limit of 200. 100,000 headers give 170 samples.
pub fn default_samples(boundary: u64) -> u64 {
    let bits = 64 - u64::leading_zeros(boundary.max(1)) as u64;
    (10 * bits).min(crate::wire::MAX_FLY_SAMPLES)
}

/// The `i`-th sampling draw in `[0, total)`, as the node computes it.
pub fn draw(seed: &BlockId, i: u64, total: &U256) -> U256 {
    let mut h = tpow_core::hash::hasher(CTX_SAMPLE);
    h.update(seed);
    h.update(&i.to_le_bytes());
    U256::from_be_bytes(*h.finalize().as_bytes()) % *total
}

/// Where leaf `index` of an MMR with `leaf_count` leaves sits: (mountain index,
/// mountain height, position inside the mountain). `None` if out of range.
fn locate(index: u64, leaf_count: u64) -> Option<(usize, u32, u64)> {
    if index >= leaf_count {
        return None;
    }
    let mut start = 0u64;
    let mut m = 0usize;
    for h in (0..64u32).rev() {
        if (leaf_count >> h) & 1 == 1 {
            let size = 1u64 << h;
            if index < start + size {
                return Some((m, h, index - start));
            }
            start += size;
            m += 1;
        }
    }
    None
}

/// The work of all leaves before the proven one, read from a proof that has been
/// verified against a root: left peaks plus the left siblings on the path.
pub fn work_before(proof: &MmrProof) -> Option<U256> {
    let (m, h, local) = locate(proof.leaf_index, proof.leaf_count)?;
    if proof.siblings.len() != h as usize || proof.peaks.len() < m {
        return None;
    }
    let mut w = U256::ZERO;
    for p in &proof.peaks[..m] {
        w = w.saturating_add(p.work);
    }
    for (level, s) in proof.siblings.iter().enumerate() {
        if (local >> level) & 1 == 1 {
            w = w.saturating_add(s.work);
        }
    }
    Some(w)
}

/// The complete peaks of the MMR a proof is about (the proven leaf's own peak
/// recomputed), after checking the proof against `root`: what a client needs to
/// extend the MMR from there.
pub fn peaks_from_proof(
    proof: &MmrProof,
    root: &[u8; 32],
    leaf: &MmrNode,
) -> Result<MmrPeaks, tpow_core::mmr::MmrError> {
    proof.verify(root, leaf)?;
    let (m, _, local) =
        locate(proof.leaf_index, proof.leaf_count).ok_or(tpow_core::mmr::MmrError::LeafIndexOutOfRange {
            leaf_index: proof.leaf_index,
            leaf_count: proof.leaf_count,
        })?;
    let peak = proof.siblings.iter().enumerate().fold(*leaf, |acc, (level, sib)| {
        if (local >> level) & 1 == 0 {
            tpow_core::mmr::merge(&acc, sib)
        } else {
            tpow_core::mmr::merge(sib, &acc)
        }
    });
    let mut all = Vec::with_capacity(proof.peaks.len() + 1);
    all.extend_from_slice(&proof.peaks[..m]);
    all.push(peak);
    all.extend_from_slice(&proof.peaks[m..]);
    let peaks = MmrPeaks::from_parts(proof.leaf_count, all)?;
    if peaks.root() != *root {
        return Err(tpow_core::mmr::MmrError::RootMismatch);
    }
    Ok(peaks)
}

/// Checks that `intervals` (per returned sample, sorted by height: work before it
/// and its own work) are exactly the headers hit by the draws `0..count` over
/// `total`. Returns a description of the first discrepancy.
pub fn check_sample_cover(seed: &BlockId, count: u64, total: &U256, intervals: &[(U256, U256)]) -> Result<(), String> {
    if total.is_zero() {
        return if intervals.is_empty() { Ok(()) } else { Err("samples returned for an empty range".into()) };
    }
    let mut hit = vec![false; intervals.len()];
    for i in 0..count {
        let r = draw(seed, i, total);
        // Intervals are sorted and disjoint: the first whose end exceeds r.
        let at = intervals.partition_point(|(before, work)| before.saturating_add(*work) <= r);
        match intervals.get(at) {
            Some((before, _)) if *before <= r => hit[at] = true,
            _ => return Err(format!("draw {i} falls on a height the node did not return")),
        }
    }
    match hit.iter().position(|h| !h) {
        Some(p) => Err(format!("sample {p} was not drawn")),
        None => Ok(()),
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use tpow_core::mmr::Mmr;

    fn leaf(i: u64) -> MmrNode {
        MmrNode { hash: [i as u8; 32], work: U256::from(i % 7 + 1) }
    }

    #[test]
    fn work_before_and_peaks_match_the_tree() {
        let mut mmr = Mmr::new();
        let mut prefix = vec![U256::ZERO];
        for i in 0..37u64 {
            mmr.push(leaf(i));
            prefix.push(prefix[i as usize] + leaf(i).work);
        }
        for n in [1u64, 2, 5, 16, 31, 37] {
            let root = mmr.prefix_peaks(n).expect("prefix").root();
            for i in 0..n {
                let proof = mmr.proof(i, n).expect("proof");
                proof.verify(&root, &leaf(i)).expect("verifies");
                assert_eq!(work_before(&proof), Some(prefix[i as usize]), "n={n} i={i}");
                let peaks = peaks_from_proof(&proof, &root, &leaf(i)).expect("peaks");
                assert_eq!(peaks, mmr.prefix_peaks(n).expect("prefix"));
            }
            let proof = mmr.proof(0, n).expect("proof");
            assert!(peaks_from_proof(&proof, &[9; 32], &leaf(0)).is_err());
            assert!(peaks_from_proof(&proof, &root, &leaf(3)).is_err());
        }
    }

    #[test]
    fn cover_agrees_with_the_node_rule() {
        // Cumulative work per height as the node sees it; the client's check must
        // accept exactly the node's sample and reject a changed one.
        let works: Vec<u64> = (0..300u64).map(|h| 1 + (h * 7919) % 13).collect();
        let mut cum = Vec::new();
        let mut acc = 0u64;
        for w in &works {
            acc += w;
            cum.push(acc);
        }
        let seed = [42u8; 32];
        let heights = tpow_core::flyclient::sample_heights(&seed, 300, 40, |h| U256::from(cum[h as usize]));
        let interval = |h: u64| (U256::from(cum[h as usize] - works[h as usize]), U256::from(works[h as usize]));
        let total = U256::from(cum[299]);
        let good: Vec<_> = heights.iter().map(|&h| interval(h)).collect();
        assert_eq!(check_sample_cover(&seed, 40, &total, &good), Ok(()));
        let mut dropped = good.clone();
        dropped.remove(3);
        assert!(check_sample_cover(&seed, 40, &total, &dropped).is_err());
        let mut swapped = good.clone();
        let other = (0..300).find(|h| !heights.contains(h)).expect("an unsampled height");
        swapped[0] = interval(other);
        swapped.sort();
        assert!(check_sample_cover(&seed, 40, &total, &swapped).is_err());
        assert!(default_samples(100_000) <= 200 && default_samples(100_000) >= 100);
    }
}
