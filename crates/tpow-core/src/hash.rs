//! Domain-separated blake3.
//!
//! Every hash in the protocol uses blake3's `derive_key` mode with its own context
//! string, so no two uses can ever collide (a header id can never be mistaken for a
//! pow hash, a weight stream for a token stream). Re-implementers only need a blake3
//! library with `derive_key` and an extendable output.

/// Context of [`header_id`].
pub const CTX_HEADER_ID: &str = "tpow 2026-11 header id";
/// Context of the proof-of-work hash.
pub const CTX_POW_HASH: &str = "tpow 2026-11 pow hash";
/// Context of the weight streams of the puzzle model.
pub const CTX_MODEL_WEIGHTS: &str = "tpow 2026-11 model weights";
/// Context of the input token stream of one nonce.
pub const CTX_INPUT_TOKENS: &str = "tpow 2026-11 input tokens";
/// Context of the digest of the forward pass output.
pub const CTX_OUTPUT_DIGEST: &str = "tpow 2026-11 output digest";

/// Context of the order in which a verifier runs a branch's forward passes
/// (local policy, not consensus: any order gives the same verdict).
pub const CTX_VERIFY_ORDER: &str = "tpow 2026-11 verify order";

/// A blake3 hasher in derive-key mode for `context`.
pub fn hasher(context: &str) -> blake3::Hasher {
    blake3::Hasher::new_derive_key(context)
}

/// One-shot domain-separated hash of the concatenation of `parts`.
pub fn hash_parts(context: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut h = hasher(context);
    for p in parts {
        h.update(p);
    }
    *h.finalize().as_bytes()
}
