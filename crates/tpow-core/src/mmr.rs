//! Merkle Mountain Range over block headers, with cumulative work (FlyClient).
//!
//! Every header commits to the MMR root of all headers before it. Each node
//! carries the total work of the leaves under it, so a root also commits to
//! the chain's total work, and a light client can sample headers in
//! proportion to work and check each sample with a short proof against the
//! latest root, instead of downloading the whole header chain.
//!
//! Layout: the standard MMR. Leaves are appended left to right; whenever two
//! mountains of equal height sit side by side they are merged (older on the
//! left), so with `n` leaves there is one perfect binary tree ("mountain") per
//! set bit of `n`, largest and oldest first. Nodes are stored in post-order.
//!
//! Hashing uses BLAKE3 in `derive_key` mode with a distinct context for
//! internal nodes and for the root, so neither can be confused with the other
//! nor with any other hash in the protocol.

use crate::U256;
use alloc::vec::Vec;
use thiserror::Error;

/// BLAKE3 `derive_key` context for internal nodes.
pub const MERGE_CONTEXT: &str = "tpow 2026-11 mmr merge";
/// BLAKE3 `derive_key` context for the root commitment.
pub const ROOT_CONTEXT: &str = "tpow 2026-11 mmr root";

/// Why an MMR operation or a proof failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Error)]
pub enum MmrError {
    /// The leaf is not among the first `leaf_count` leaves.
    #[error("leaf index {leaf_index} out of range for {leaf_count} leaves")]
    LeafIndexOutOfRange {
        /// The requested leaf.
        leaf_index: u64,
        /// The number of leaves in the MMR the proof is about.
        leaf_count: u64,
    },
    /// More leaves were asked for than the store holds.
    #[error("{requested} leaves requested but only {stored} stored")]
    LeafCountTooLarge {
        /// The requested leaf count.
        requested: u64,
        /// The number of leaves stored.
        stored: u64,
    },
    /// The proof's sibling path does not have the height of the leaf's
    /// mountain.
    #[error("expected {expected} siblings, got {got}")]
    WrongSiblingCount {
        /// The height of the mountain holding the leaf.
        expected: usize,
        /// The number of siblings in the proof.
        got: usize,
    },
    /// The proof does not carry one peak per other mountain.
    #[error("expected {expected} other peaks, got {got}")]
    WrongPeakCount {
        /// One less than the number of mountains for `leaf_count`.
        expected: usize,
        /// The number of peaks in the proof.
        got: usize,
    },
    /// The recomputed root differs from the committed one.
    #[error("proof does not match the root")]
    RootMismatch,
    /// The encoded proof ends early.
    #[error("encoded proof is truncated")]
    Truncated,
    /// The encoded proof has bytes after its last field.
    #[error("encoded proof has trailing bytes")]
    TrailingBytes,
    /// The encoded proof claims more siblings or peaks than any MMR can have.
    #[error("encoded proof has {count} items in a list, more than the maximum {max}")]
    TooManyItems {
        /// The count read from the encoding.
        count: u8,
        /// The maximum allowed.
        max: usize,
    },
}

/// A node of the MMR: a hash and the total work of the leaves below it.
///
/// A leaf is `MmrNode { hash: header_id, work: block_work(header target) }`,
/// built by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MmrNode {
    /// The leaf's header id, or the merge hash of an internal node.
    pub hash: [u8; 32],
    /// Sum of the work of all leaves below (saturating).
    pub work: U256,
}

impl MmrNode {
    /// Size of a node in the proof encoding: hash then work, big-endian.
    pub const ENCODED_LEN: usize = 64;

    /// The empty node used as the "bagged peaks" of an empty MMR.
    const EMPTY: MmrNode = MmrNode { hash: [0; 32], work: U256::ZERO };

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.hash);
        out.extend_from_slice(&self.work.to_be_bytes::<32>());
    }

    fn decode(bytes: &[u8; 64]) -> MmrNode {
        let mut hash = [0u8; 32];
        let mut work = [0u8; 32];
        hash.copy_from_slice(&bytes[..32]);
        work.copy_from_slice(&bytes[32..]);
        MmrNode { hash, work: U256::from_be_bytes(work) }
    }
}

/// The parent of two adjacent nodes (`left` older than `right`).
///
/// The children's work is hashed along with their hashes, so a proof cannot
/// claim a different work split than the one committed. The parent's work
/// saturates rather than wrapping, so no combination of (absurd) leaf work
/// values can wrap around to a small total; real chains never get near it.
pub fn merge(left: &MmrNode, right: &MmrNode) -> MmrNode {
    let mut h = blake3::Hasher::new_derive_key(MERGE_CONTEXT);
    h.update(&left.hash);
    h.update(&left.work.to_be_bytes::<32>());
    h.update(&right.hash);
    h.update(&right.work.to_be_bytes::<32>());
    MmrNode { hash: *h.finalize().as_bytes(), work: left.work.saturating_add(right.work) }
}

/// Folds the peaks (left to right) into one node, from the right:
/// `merge(p0, merge(p1, ... merge(p[n-2], p[n-1])))`. No peaks give the
/// all-zero node.
pub fn bag_peaks(peaks: &[MmrNode]) -> MmrNode {
    let Some((last, rest)) = peaks.split_last() else {
        return MmrNode::EMPTY;
    };
    rest.iter().rev().fold(*last, |acc, p| merge(p, &acc))
}

/// The root commitment of an MMR with `leaf_count` leaves and these peaks
/// (left to right): `H_root(leaf_count as u64 LE ‖ bagged.hash ‖ bagged.work
/// BE)`.
///
/// The leaf count is included because the bagged peaks alone do not fix the
/// tree shape; with it, a proof's position claims are bound to the root.
/// This function does not check that `peaks` has the right length for
/// `leaf_count`; [`MmrPeaks`] and [`Mmr`] always pass consistent values.
pub fn root(leaf_count: u64, peaks: &[MmrNode]) -> [u8; 32] {
    let bagged = bag_peaks(peaks);
    let mut h = blake3::Hasher::new_derive_key(ROOT_CONTEXT);
    h.update(&leaf_count.to_le_bytes());
    h.update(&bagged.hash);
    h.update(&bagged.work.to_be_bytes::<32>());
    *h.finalize().as_bytes()
}

/// Total work committed by these peaks: the work of the bagged node, i.e. the
/// saturating sum of all leaf work.
pub fn total_work(peaks: &[MmrNode]) -> U256 {
    bag_peaks(peaks).work
}

/// Number of nodes (leaves and internal) in an MMR of `leaf_count` leaves.
fn mmr_size(leaf_count: u64) -> u64 {
    // Each leaf adds one node plus one per merge; in total 2n - popcount(n).
    // Computed in u128 because 2n overflows u64 for n >= 2^63.
    (2 * u128::from(leaf_count) - u128::from(leaf_count.count_ones())) as u64
}

/// Nodes in a perfect tree of height `h` (2^(h+1) - 1).
fn tree_size(height: u32) -> u64 {
    (1u64 << height << 1).wrapping_sub(1)
}

/// The mountains of an MMR with `leaf_count` leaves, left to right, as
/// `(height, first leaf index)`.
fn mountains(leaf_count: u64) -> impl Iterator<Item = (u32, u64)> {
    let mut start = 0u64;
    (0..64u32).rev().filter_map(move |h| {
        if leaf_count & (1u64 << h) == 0 {
            return None;
        }
        let first = start;
        start += 1u64 << h;
        Some((h, first))
    })
}

/// Locates leaf `leaf_index` in the MMR of `leaf_count` leaves: returns the
/// index of its mountain among the peaks, the mountain's height, and the
/// leaf's index within the mountain. `leaf_index < leaf_count` required.
fn locate(leaf_index: u64, leaf_count: u64) -> (usize, u32, u64) {
    let mut found = (0, 0, 0);
    for (i, (h, first)) in mountains(leaf_count).enumerate() {
        if leaf_index >= first && leaf_index - first < (1u64 << h) {
            found = (i, h, leaf_index - first);
            break;
        }
    }
    found
}

/// The peaks and leaf count of an MMR: all that is needed to append leaves and
/// to compute the root.
///
/// This is what a node keeps per header: with forks, every header has its own
/// MMR state, and this is at most 64 nodes instead of the whole tree.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct MmrPeaks {
    leaf_count: u64,
    peaks: Vec<MmrNode>,
}

impl MmrPeaks {
    /// The empty MMR.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the state from stored parts (e.g. a per-header record in a
    /// database), checking that there is exactly one peak per mountain of
    /// `leaf_count`, i.e. `leaf_count.count_ones()` peaks.
    pub fn from_parts(leaf_count: u64, peaks: Vec<MmrNode>) -> Result<Self, MmrError> {
        let expected = leaf_count.count_ones() as usize;
        if peaks.len() != expected {
            return Err(MmrError::WrongPeakCount { expected, got: peaks.len() });
        }
        Ok(MmrPeaks { leaf_count, peaks })
    }

    /// Appends a leaf, merging equal-height mountains.
    ///
    /// An MMR holding `u64::MAX` leaves cannot grow further (that would take
    /// far longer than the age of the universe at any block rate); pushing
    /// onto one leaves it unchanged rather than panicking.
    pub fn push(&mut self, leaf: MmrNode) {
        if self.leaf_count == u64::MAX {
            return;
        }
        let mut node = leaf;
        // One merge per trailing one bit of the old count: those are the
        // mountains of equal height that the new leaf completes.
        for _ in 0..self.leaf_count.trailing_ones() {
            // The peak count equals the popcount, so the pops succeed; the
            // fallback keeps this panic-free regardless.
            let Some(left) = self.peaks.pop() else { break };
            node = merge(&left, &node);
        }
        self.peaks.push(node);
        self.leaf_count += 1;
    }

    /// The root commitment (see [`root`]).
    pub fn root(&self) -> [u8; 32] {
        root(self.leaf_count, &self.peaks)
    }

    /// Total work of all leaves.
    pub fn total_work(&self) -> U256 {
        total_work(&self.peaks)
    }

    /// Number of leaves.
    pub fn leaf_count(&self) -> u64 {
        self.leaf_count
    }

    /// The peaks, left (highest, oldest) to right.
    pub fn peaks(&self) -> &[MmrNode] {
        &self.peaks
    }
}

/// The full MMR (all nodes), which can produce proofs against the root of any
/// prefix of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mmr {
    /// All nodes in post-order.
    nodes: Vec<MmrNode>,
    leaf_count: u64,
}

impl Mmr {
    /// The empty MMR.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a leaf and returns its leaf index.
    pub fn push(&mut self, leaf: MmrNode) -> u64 {
        let index = self.leaf_count;
        let mut node = leaf;
        self.nodes.push(node);
        for height in 0..index.trailing_ones() {
            // The left sibling is the peak of the equal-height mountain that
            // ends just before the current node.
            let pos = self.nodes.len() - 1;
            let left = self.nodes[pos - tree_size(height) as usize];
            node = merge(&left, &node);
            self.nodes.push(node);
        }
        self.leaf_count += 1;
        index
    }

    /// Number of leaves.
    pub fn leaf_count(&self) -> u64 {
        self.leaf_count
    }

    /// The current peaks and leaf count.
    pub fn peaks(&self) -> MmrPeaks {
        self.peaks_of(self.leaf_count)
    }

    /// The current root.
    pub fn root(&self) -> [u8; 32] {
        self.peaks().root()
    }

    /// Drops all leaves from index `leaf_count` on (for reorgs). Does nothing
    /// if the MMR has no more than `leaf_count` leaves.
    ///
    /// Post-order storage means the MMR of the first `n` leaves is exactly
    /// the first `mmr_size(n)` nodes, so truncation is a plain cut.
    pub fn truncate(&mut self, leaf_count: u64) {
        if leaf_count < self.leaf_count {
            self.nodes.truncate(mmr_size(leaf_count) as usize);
            self.leaf_count = leaf_count;
        }
    }

    /// The peaks of the MMR of the first `leaf_count` leaves, which is what an
    /// older header committed to.
    pub fn prefix_peaks(&self, leaf_count: u64) -> Result<MmrPeaks, MmrError> {
        self.check_count(leaf_count)?;
        Ok(self.peaks_of(leaf_count))
    }

    /// A proof that leaf `leaf_index` is in the MMR of the first `leaf_count`
    /// leaves, so it can be checked against the root committed in any header
    /// at or after that leaf.
    pub fn proof(&self, leaf_index: u64, leaf_count: u64) -> Result<MmrProof, MmrError> {
        self.check_count(leaf_count)?;
        if leaf_index >= leaf_count {
            return Err(MmrError::LeafIndexOutOfRange { leaf_index, leaf_count });
        }
        let (mountain, height, _) = locate(leaf_index, leaf_count);
        let peak_positions = peak_positions(leaf_count);
        let mut peaks = Vec::with_capacity(peak_positions.len().saturating_sub(1));
        for (i, &p) in peak_positions.iter().enumerate() {
            if i != mountain {
                peaks.push(self.nodes[p as usize]);
            }
        }

        // Walk down from the mountain's peak to the leaf, collecting the
        // sibling at each level, then reverse to get the bottom-up path.
        let mut siblings = Vec::with_capacity(height as usize);
        let (_, first) = mountains(leaf_count).nth(mountain).unwrap_or((0, 0));
        let mut pos = peak_positions[mountain];
        let mut local = leaf_index - first;
        for h in (1..=height).rev() {
            // Children of the node at `pos` (height h) in post-order.
            let right = pos - 1;
            let left = pos - (1u64 << h);
            let half = 1u64 << (h - 1);
            if local < half {
                siblings.push(self.nodes[right as usize]);
                pos = left;
            } else {
                siblings.push(self.nodes[left as usize]);
                pos = right;
                local -= half;
            }
        }
        siblings.reverse();

        Ok(MmrProof { leaf_count, leaf_index, siblings, peaks })
    }

    fn check_count(&self, leaf_count: u64) -> Result<(), MmrError> {
        if leaf_count > self.leaf_count {
            return Err(MmrError::LeafCountTooLarge { requested: leaf_count, stored: self.leaf_count });
        }
        Ok(())
    }

    /// `leaf_count <= self.leaf_count` required.
    fn peaks_of(&self, leaf_count: u64) -> MmrPeaks {
        MmrPeaks { leaf_count, peaks: peak_positions(leaf_count).into_iter().map(|p| self.nodes[p as usize]).collect() }
    }
}

/// Post-order positions of the peaks of an MMR of `leaf_count` leaves.
fn peak_positions(leaf_count: u64) -> Vec<u64> {
    let mut offset = 0u64;
    mountains(leaf_count)
        .map(|(h, _)| {
            offset += tree_size(h);
            offset - 1
        })
        .collect()
}

/// Proof that a leaf is in the MMR of the first `leaf_count` leaves.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MmrProof {
    /// Number of leaves of the MMR whose root the proof is checked against.
    pub leaf_count: u64,
    /// Index of the proven leaf.
    pub leaf_index: u64,
    /// Siblings on the path from the leaf to its mountain's peak, bottom-up.
    pub siblings: Vec<MmrNode>,
    /// The peaks of all the other mountains, left to right.
    pub peaks: Vec<MmrNode>,
}

impl MmrProof {
    /// Most siblings any proof can have (mountains are at most 63 high).
    pub const MAX_SIBLINGS: usize = 64;
    /// Most other peaks any proof can have (at most 64 mountains).
    pub const MAX_PEAKS: usize = 64;
    /// Upper bound on [`MmrProof::encoded_len`], for sizing network limits.
    pub const MAX_ENCODED_LEN: usize = 8 + 8 + 1 + 1 + (Self::MAX_SIBLINGS + Self::MAX_PEAKS) * MmrNode::ENCODED_LEN;

    /// Checks the proof for `leaf` against a committed `root`.
    ///
    /// Everything the verifier relies on comes from `leaf_count` and
    /// `leaf_index`, which the root commits to, so a proof cannot move the
    /// leaf to another position or claim another tree shape.
    pub fn verify(&self, root_hash: &[u8; 32], leaf: &MmrNode) -> Result<(), MmrError> {
        if self.leaf_index >= self.leaf_count {
            return Err(MmrError::LeafIndexOutOfRange { leaf_index: self.leaf_index, leaf_count: self.leaf_count });
        }
        let (mountain, height, local) = locate(self.leaf_index, self.leaf_count);
        if self.siblings.len() != height as usize {
            return Err(MmrError::WrongSiblingCount { expected: height as usize, got: self.siblings.len() });
        }
        let other_peaks = self.leaf_count.count_ones() as usize - 1;
        if self.peaks.len() != other_peaks {
            return Err(MmrError::WrongPeakCount { expected: other_peaks, got: self.peaks.len() });
        }

        // Bit `level` of the leaf's index in its mountain says whether the
        // node at that level is a right child (1) or a left child (0).
        let peak = self.siblings.iter().enumerate().fold(*leaf, |acc, (level, sib)| {
            if (local >> level) & 1 == 0 {
                merge(&acc, sib)
            } else {
                merge(sib, &acc)
            }
        });

        let mut all_peaks = Vec::with_capacity(self.peaks.len() + 1);
        all_peaks.extend_from_slice(&self.peaks[..mountain]);
        all_peaks.push(peak);
        all_peaks.extend_from_slice(&self.peaks[mountain..]);

        if root(self.leaf_count, &all_peaks) == *root_hash {
            Ok(())
        } else {
            Err(MmrError::RootMismatch)
        }
    }

    /// Length of [`MmrProof::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        8 + 8 + 1 + 1 + (self.siblings.len() + self.peaks.len()) * MmrNode::ENCODED_LEN
    }

    /// Encodes as `leaf_count u64 LE ‖ leaf_index u64 LE ‖ n_siblings u8 ‖
    /// siblings ‖ n_peaks u8 ‖ peaks`, each node as `hash ‖ work (32 bytes
    /// BE)`.
    ///
    /// Lists longer than the maximum (which no proof from [`Mmr::proof`] has)
    /// are cut to it; such a proof would not verify anyway.
    pub fn encode(&self) -> Vec<u8> {
        let siblings = &self.siblings[..self.siblings.len().min(Self::MAX_SIBLINGS)];
        let peaks = &self.peaks[..self.peaks.len().min(Self::MAX_PEAKS)];
        let mut out = Vec::with_capacity(18 + (siblings.len() + peaks.len()) * MmrNode::ENCODED_LEN);
        out.extend_from_slice(&self.leaf_count.to_le_bytes());
        out.extend_from_slice(&self.leaf_index.to_le_bytes());
        out.push(siblings.len() as u8);
        for s in siblings {
            s.encode_into(&mut out);
        }
        out.push(peaks.len() as u8);
        for p in peaks {
            p.encode_into(&mut out);
        }
        out
    }

    /// Decodes [`MmrProof::encode`]'s format, rejecting truncated input,
    /// trailing bytes, and list counts above 64. Structural consistency with
    /// `leaf_count` is left to [`MmrProof::verify`].
    pub fn decode(bytes: &[u8]) -> Result<MmrProof, MmrError> {
        let mut r = Reader(bytes);
        let leaf_count = u64::from_le_bytes(r.array()?);
        let leaf_index = u64::from_le_bytes(r.array()?);
        let siblings = r.nodes(Self::MAX_SIBLINGS)?;
        let peaks = r.nodes(Self::MAX_PEAKS)?;
        if !r.0.is_empty() {
            return Err(MmrError::TrailingBytes);
        }
        Ok(MmrProof { leaf_count, leaf_index, siblings, peaks })
    }
}

/// A cursor over untrusted bytes that fails instead of panicking.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], MmrError> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or(MmrError::Truncated)?;
        self.0 = rest;
        Ok(*head)
    }

    fn nodes(&mut self, max: usize) -> Result<Vec<MmrNode>, MmrError> {
        let [count] = self.array::<1>()?;
        if usize::from(count) > max {
            return Err(MmrError::TooManyItems { count, max });
        }
        // `count <= 64`, so the allocation is bounded whatever the input.
        let mut nodes = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            nodes.push(MmrNode::decode(&self.array::<64>()?));
        }
        Ok(nodes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaf(i: u64) -> MmrNode {
        let mut hash = [0u8; 32];
        hash[..8].copy_from_slice(&i.to_le_bytes());
        hash[31] = 0xaa;
        MmrNode { hash, work: U256::from(1000 + i * 7) }
    }

    fn build(n: u64) -> Mmr {
        let mut m = Mmr::new();
        for i in 0..n {
            assert_eq!(m.push(leaf(i)), i);
        }
        m
    }

    #[test]
    fn empty_root() {
        let mut h = blake3::Hasher::new_derive_key(ROOT_CONTEXT);
        h.update(&[0u8; 8 + 32 + 32]);
        let expect = *h.finalize().as_bytes();
        assert_eq!(MmrPeaks::new().root(), expect);
        assert_eq!(Mmr::new().root(), expect);
        assert_eq!(root(0, &[]), expect);
        assert_eq!(MmrPeaks::new().total_work(), U256::ZERO);
    }

    fn hex(bytes: &[u8; 32]) -> alloc::string::String {
        bytes.iter().map(|b| alloc::format!("{b:02x}")).collect()
    }

    /// Known answers computed independently (Python `blake3` package) from
    /// the format description, pinning contexts, byte orders and bagging.
    #[test]
    fn known_answer_roots() {
        assert_eq!(hex(&Mmr::new().root()), "178ce642ca5cc5751402259af3d978e49b1a3acfe55d99d56c37315840a219f3");
        assert_eq!(hex(&build(3).root()), "274a91d2f6f7b73cd8c5a5d6227e3715147ed356de653e6dfc1e89a2dfc9f4e1");
    }

    #[test]
    fn small_shapes_by_hand() {
        let (a, b, c) = (leaf(0), leaf(1), leaf(2));
        let ab = merge(&a, &b);
        assert_eq!(ab.work, a.work + b.work);

        let m = build(1);
        assert_eq!(m.root(), root(1, &[a]));
        let m = build(2);
        assert_eq!(m.peaks().peaks(), &[ab]);
        assert_eq!(m.root(), root(2, &[ab]));
        let m = build(3);
        assert_eq!(m.peaks().peaks(), &[ab, c]);
        assert_eq!(m.root(), root(3, &[ab, c]));
        assert_eq!(bag_peaks(&[ab, c]), merge(&ab, &c));
        let d = leaf(3);
        let abcd = merge(&ab, &merge(&c, &d));
        let m = build(4);
        assert_eq!(m.peaks().peaks(), &[abcd]);
        assert_eq!(m.nodes.len(), 7);
        // Three peaks bag from the right.
        let m = build(7);
        let p = m.peaks();
        assert_eq!(p.peaks().len(), 3);
        assert_eq!(bag_peaks(p.peaks()), merge(&p.peaks()[0], &merge(&p.peaks()[1], &p.peaks()[2])));
        assert_eq!(p.total_work(), (0..7).fold(U256::ZERO, |acc, i| acc + leaf(i).work));
    }

    #[test]
    fn proof_errors() {
        let m = build(11);
        assert_eq!(m.proof(0, 12), Err(MmrError::LeafCountTooLarge { requested: 12, stored: 11 }));
        assert_eq!(m.proof(5, 5), Err(MmrError::LeafIndexOutOfRange { leaf_index: 5, leaf_count: 5 }));
        assert!(m.prefix_peaks(12).is_err());
        let root = m.root();
        let mut p = m.proof(4, 11).unwrap();
        assert_eq!(p.verify(&root, &leaf(4)), Ok(()));
        p.siblings.push(leaf(0));
        assert_eq!(p.verify(&root, &leaf(4)), Err(MmrError::WrongSiblingCount { expected: 3, got: 4 }));
        p.siblings.pop();
        p.peaks.pop();
        assert_eq!(p.verify(&root, &leaf(4)), Err(MmrError::WrongPeakCount { expected: 2, got: 1 }));
        let empty = MmrProof { leaf_count: 0, leaf_index: 0, siblings: Vec::new(), peaks: Vec::new() };
        assert!(matches!(empty.verify(&root, &leaf(0)), Err(MmrError::LeafIndexOutOfRange { .. })));
    }

    #[test]
    fn decode_errors() {
        let p = build(11).proof(4, 11).unwrap();
        let bytes = p.encode();
        assert_eq!(bytes.len(), p.encoded_len());
        assert_eq!(MmrProof::decode(&bytes), Ok(p));
        for cut in 0..bytes.len() {
            assert_eq!(MmrProof::decode(&bytes[..cut]), Err(MmrError::Truncated));
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(MmrProof::decode(&long), Err(MmrError::TrailingBytes));
        let mut many = bytes.clone();
        many[16] = 65;
        assert_eq!(MmrProof::decode(&many), Err(MmrError::TooManyItems { count: 65, max: 64 }));
    }

    #[test]
    fn extreme_leaf_counts_do_not_panic() {
        let p =
            MmrProof { leaf_count: u64::MAX, leaf_index: u64::MAX - 1, siblings: Vec::new(), peaks: vec![leaf(0); 63] };
        assert_eq!(p.verify(&[0; 32], &leaf(0)), Err(MmrError::RootMismatch));
        let p = MmrProof { leaf_count: u64::MAX, leaf_index: 0, siblings: vec![leaf(0); 63], peaks: vec![leaf(0); 63] };
        assert_eq!(p.verify(&[0; 32], &leaf(0)), Err(MmrError::RootMismatch));
        assert!(p.encoded_len() <= MmrProof::MAX_ENCODED_LEN);
    }

    /// Flips one bit of a node, in the hash or in the work.
    fn tamper(n: &mut MmrNode, which: usize) {
        if which.is_multiple_of(2) {
            n.hash[which % 32] ^= 1;
        } else {
            n.work ^= U256::from(1u8) << (which % 256);
        }
    }

    proptest! {
        #[test]
        fn all_proofs_verify(n in 1u64..300, m_frac in 0.0f64..1.0) {
            let mmr = build(n);
            let peaks_pushed = (0..n).fold(MmrPeaks::new(), |mut p, i| {
                p.push(leaf(i));
                p
            });
            prop_assert_eq!(&peaks_pushed, &mmr.peaks());
            prop_assert_eq!(peaks_pushed.root(), mmr.root());
            prop_assert_eq!(
                MmrPeaks::from_parts(n, peaks_pushed.peaks().to_vec()),
                Ok(peaks_pushed.clone())
            );
            prop_assert!(MmrPeaks::from_parts(n + 1, peaks_pushed.peaks().to_vec()).is_err()
                || (n + 1).count_ones() == n.count_ones());
            prop_assert_eq!(mmr.nodes.len() as u64, mmr_size(n));
            let root = mmr.root();
            for i in 0..n {
                let p = mmr.proof(i, n).unwrap();
                prop_assert_eq!(p.verify(&root, &leaf(i)), Ok(()));
                prop_assert!(p.siblings.len() <= MmrProof::MAX_SIBLINGS);
            }
            // Proofs against an older root.
            let m = 1 + ((n - 1) as f64 * m_frac) as u64;
            let old = mmr.prefix_peaks(m).unwrap();
            prop_assert_eq!(&old, &build(m).peaks());
            let old_root = old.root();
            for i in 0..m {
                let p = mmr.proof(i, m).unwrap();
                prop_assert_eq!(p.verify(&old_root, &leaf(i)), Ok(()));
                if m != n {
                    prop_assert!(p.verify(&root, &leaf(i)).is_err());
                }
            }
        }

        #[test]
        fn tampering_fails(n in 1u64..300, i_frac in 0.0f64..1.0, which in any::<usize>()) {
            let mmr = build(n);
            let root = mmr.root();
            let i = ((n as f64 * i_frac) as u64).min(n - 1);
            let proof = mmr.proof(i, n).unwrap();

            let mut l = leaf(i);
            tamper(&mut l, which);
            prop_assert_eq!(proof.verify(&root, &l), Err(MmrError::RootMismatch));
            prop_assert!(proof.verify(&root, &leaf(i + 1)).is_err());

            for k in 0..proof.siblings.len() {
                let mut p = proof.clone();
                tamper(&mut p.siblings[k], which);
                prop_assert_eq!(p.verify(&root, &leaf(i)), Err(MmrError::RootMismatch));
            }
            for k in 0..proof.peaks.len() {
                let mut p = proof.clone();
                tamper(&mut p.peaks[k], which);
                prop_assert_eq!(p.verify(&root, &leaf(i)), Err(MmrError::RootMismatch));
            }
            for other in [i ^ 1, i.wrapping_sub(1), i + 1, i ^ 4] {
                if other != i {
                    let mut p = proof.clone();
                    p.leaf_index = other;
                    prop_assert!(p.verify(&root, &leaf(i)).is_err());
                }
            }
            let mut p = proof.clone();
            p.leaf_count += 1;
            prop_assert!(p.verify(&root, &leaf(i)).is_err());
            let mut bad_root = root;
            bad_root[which % 32] ^= 0x80;
            prop_assert_eq!(proof.verify(&bad_root, &leaf(i)), Err(MmrError::RootMismatch));
        }

        #[test]
        fn encode_round_trip(n in 1u64..300, i_frac in 0.0f64..1.0) {
            let mmr = build(n);
            let i = ((n as f64 * i_frac) as u64).min(n - 1);
            let proof = mmr.proof(i, n).unwrap();
            let bytes = proof.encode();
            prop_assert_eq!(bytes.len(), proof.encoded_len());
            prop_assert!(bytes.len() <= MmrProof::MAX_ENCODED_LEN);
            prop_assert_eq!(MmrProof::decode(&bytes), Ok(proof));
        }

        #[test]
        fn decode_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(p) = MmrProof::decode(&bytes) {
                prop_assert_eq!(p.encode(), bytes);
                let _ = p.verify(&[0; 32], &leaf(0));
            }
        }

        #[test]
        fn decode_structured_random(lc in any::<u64>(), li in any::<u64>(),
                                    ns in 0u8..=64, np in 0u8..=64, fill in any::<u8>()) {
            let mut bytes = Vec::new();
            bytes.extend_from_slice(&lc.to_le_bytes());
            bytes.extend_from_slice(&li.to_le_bytes());
            bytes.push(ns);
            bytes.extend(core::iter::repeat_n(fill, 64 * ns as usize));
            bytes.push(np);
            bytes.extend(core::iter::repeat_n(fill, 64 * np as usize));
            let p = MmrProof::decode(&bytes).unwrap();
            // Verification of arbitrary structure fails cleanly.
            prop_assert!(p.verify(&[fill; 32], &leaf(0)).is_err());
        }

        #[test]
        fn truncate_then_push(n in 1u64..300, cut_frac in 0.0f64..1.0, extra in 0u64..40) {
            let mut mmr = build(n);
            let cut = (n as f64 * cut_frac) as u64;
            mmr.truncate(cut);
            prop_assert_eq!(mmr.leaf_count(), cut);
            prop_assert_eq!(mmr.root(), build(cut).root());
            // Different leaves after the cut, as after a reorg.
            let mut fresh = build(cut);
            for k in 0..extra {
                let mut l = leaf(cut + k);
                l.hash[20] = 0x55;
                prop_assert_eq!(mmr.push(l), cut + k);
                fresh.push(l);
            }
            prop_assert_eq!(mmr.root(), fresh.root());
            prop_assert_eq!(&mmr, &fresh);
            // Truncating to more leaves than stored is a no-op.
            let before = mmr.clone();
            mmr.truncate(cut + extra + 1);
            prop_assert_eq!(mmr, before);
        }
    }
}
