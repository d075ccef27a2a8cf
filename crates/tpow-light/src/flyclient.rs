//! FlyClient verification: how many draws to make, and the checks that make a
//! node's sample trustworthy without trusting the node.
//!
//! The client chooses the randomness: a fresh 32-byte seed per request, sent after
//! the node has committed to its tip (the announced id fixes the tip header, whose
//! `mmr_root` fixes every header and every cumulative work below it). The node maps
//! the draws (`tpow_core::flyclient::draw_position`) to heights by binary search
//! over cumulative work. The client cannot run that search itself (it does not
//! know the work at every height), but it can check the answer: each sample's MMR
//! proof against the tip's root fixes the exact work *before* the sampled header
//! (the left siblings and left peaks of its path, whose work values the root
//! commits to), so the client recomputes every draw and checks that exactly one
//! returned header's work interval `[before, before + work)` holds it. A node can
//! therefore neither drop an inconvenient sample nor substitute another, and,
//! since the seed arrives after its commitment, not re-roll the sample either.

use tpow_core::flyclient::{draw_count, draw_position, levels};
use tpow_core::mmr::{MmrNode, MmrPeaks, MmrProof};
use tpow_core::U256;

/// Draws the client needs for security `security_bits` when the last `L` headers
/// hold work `checked` and the headers below them `below` (the rule of
/// `tpow_core::flyclient::draw_count`).
pub fn draws_for(checked: &U256, below: &U256, security_bits: u32) -> u64 {
    draw_count(levels(checked, below), security_bits)
}

/// An estimate of the passes a sampled sync to `height` costs with `last` headers
/// checked fully, assuming steady difficulty (used only to choose between a linear
/// catch-up and a sampled sync; the real count comes from the verified work).
pub fn estimated_passes(height: u64, last: u64, security_bits: u32) -> u64 {
    let last = last.clamp(1, height.max(1));
    let below = height.saturating_sub(last) + 1;
    last + draws_for(&U256::from(last), &U256::from(below), security_bits)
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
/// and its own work) are exactly the headers hit by the client's draws `0..draws`
/// for `seed` over the work `below` the last headers, whose own work is `checked`.
/// Returns a description of the first discrepancy.
pub fn check_sample_cover(
    seed: &[u8; 32],
    draws: u64,
    checked: &U256,
    below: &U256,
    intervals: &[(U256, U256)],
) -> Result<(), String> {
    let mut hit = vec![false; intervals.len()];
    for i in 0..draws {
        let Some(r) = draw_position(seed, i, checked, below) else {
            return if intervals.is_empty() { Ok(()) } else { Err("samples returned for an empty range".into()) };
        };
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
        let checked = U256::from(30u8);
        let heights = tpow_core::flyclient::sample_heights(&seed, 300, &checked, 40, |h| U256::from(cum[h as usize]));
        let interval = |h: u64| (U256::from(cum[h as usize] - works[h as usize]), U256::from(works[h as usize]));
        let total = U256::from(cum[299]);
        let good: Vec<_> = heights.iter().map(|&h| interval(h)).collect();
        assert_eq!(check_sample_cover(&seed, 40, &checked, &total, &good), Ok(()));
        let mut dropped = good.clone();
        dropped.remove(3);
        assert!(check_sample_cover(&seed, 40, &checked, &total, &dropped).is_err());
        let mut swapped = good.clone();
        let other = (0..300).find(|h| !heights.contains(h)).expect("an unsampled height");
        swapped[0] = interval(other);
        swapped.sort();
        assert!(check_sample_cover(&seed, 40, &checked, &total, &swapped).is_err());
        // Another seed (the node re-rolling) does not fit the same answer.
        assert!(check_sample_cover(&[43; 32], 40, &checked, &total, &good).is_err());
        // 100,000 headers at steady difficulty, L = 100, λ = 50: J = 10, 347 draws.
        assert_eq!(estimated_passes(100_000, 100, 50), 100 + 347);
    }
}
