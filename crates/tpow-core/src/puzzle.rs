//! The puzzle: nonce → input tokens → forward pass → output digest → pow hash.

use alloc::vec;
use alloc::vec::Vec;

use crate::forward::{forward_packed, PackedModel, Scratch};
use crate::hash::{hash_parts, hasher, CTX_INPUT_TOKENS, CTX_OUTPUT_DIGEST, CTX_POW_HASH};
use crate::header::{HEADER_LEN, TEMPLATE_LEN};
use crate::model::Model;
use crate::spec::ModelSpec;

/// The input tokens for one nonce.
///
/// Stream = blake3-XOF(derive_key(CTX_INPUT_TOKENS), template ‖ nonce u64 LE); token
/// p = (u16 LE at bytes 2p..2p+2) mod vocab. A new nonce re-draws every token, so no
/// two attempts share a prefix and nothing can be cached between them.
pub fn input_tokens(spec: &ModelSpec, template: &[u8; TEMPLATE_LEN], nonce: u64, out: &mut [u16]) {
    let mut h = hasher(CTX_INPUT_TOKENS);
    h.update(template);
    h.update(&nonce.to_le_bytes());
    let mut reader = h.finalize_xof();
    let mask = spec.vocab - 1;
    let mut buf = [0u8; 2];
    for t in out.iter_mut() {
        reader.fill(&mut buf);
        *t = (u16::from_le_bytes(buf) as u32 & mask) as u16;
    }
}

/// Digest of the forward pass output: blake3(derive_key(CTX_OUTPUT_DIGEST), output
/// bytes as two's-complement int8).
pub fn output_digest(output: &[i8]) -> [u8; 32] {
    let mut h = hasher(CTX_OUTPUT_DIGEST);
    for chunk in output.chunks(256) {
        let mut b = [0u8; 256];
        for (d, &v) in b.iter_mut().zip(chunk) {
            *d = v as u8;
        }
        h.update(&b[..chunk.len()]);
    }
    *h.finalize().as_bytes()
}

/// The pow hash of a complete header: blake3(derive_key(CTX_POW_HASH), template ‖
/// nonce u64 LE ‖ output digest) — that is, of the 192 encoded header bytes.
pub fn pow_hash(template: &[u8; TEMPLATE_LEN], nonce: u64, output_digest: &[u8; 32]) -> [u8; 32] {
    hash_parts(CTX_POW_HASH, &[template, &nonce.to_le_bytes(), output_digest])
}

/// Pow hash of an encoded header.
pub fn pow_hash_of_encoded(bytes: &[u8; HEADER_LEN]) -> [u8; 32] {
    hash_parts(CTX_POW_HASH, &[bytes])
}

/// What one attempt produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// The nonce tried.
    pub nonce: u64,
    /// Digest of the forward pass output.
    pub output_digest: [u8; 32],
    /// The resulting pow hash.
    pub pow_hash: [u8; 32],
}

/// The laid-out weights a [`Solver`] runs on: its own, or shared between threads.
enum Weights<'m> {
    Own(PackedModel<'m>),
    Shared(&'m PackedModel<'m>),
}

/// A model laid out for the CPU kernels, with its buffers: everything needed to try
/// nonces on one template.
pub struct Solver<'m> {
    weights: Weights<'m>,
    scratch: Scratch,
    tokens: Vec<u16>,
    out: Vec<i8>,
}

impl<'m> Solver<'m> {
    /// A solver using the fastest CPU kernels (lays the weights out for them).
    pub fn new(model: &'m Model) -> Self {
        Self::with_scratch(model, Scratch::new(model))
    }

    /// A solver with caller-chosen buffers and kernels (`scratch`'s backend).
    pub fn with_scratch(model: &'m Model, scratch: Scratch) -> Self {
        Self::build(Weights::Own(PackedModel::new(model, scratch.backend())), scratch)
    }

    /// A solver on weights laid out once and shared (the miner's threads).
    pub fn with_packed(packed: &'m PackedModel<'m>) -> Self {
        let scratch = Scratch::with_backend(packed.model(), packed.backend());
        Self::build(Weights::Shared(packed), scratch)
    }

    fn build(weights: Weights<'m>, scratch: Scratch) -> Self {
        let spec = match &weights {
            Weights::Own(p) => p.model().spec,
            Weights::Shared(p) => p.model().spec,
        };
        Solver { weights, scratch, tokens: vec![0; spec.seq_len as usize], out: vec![0; spec.d_model as usize] }
    }

    /// The model and its layout.
    pub fn packed(&self) -> &PackedModel<'m> {
        match &self.weights {
            Weights::Own(p) => p,
            Weights::Shared(p) => p,
        }
    }

    /// The forward pass output for `nonce`.
    pub fn output(&mut self, template: &[u8; TEMPLATE_LEN], nonce: u64) -> &[i8] {
        let packed = match &self.weights {
            Weights::Own(p) => p,
            Weights::Shared(p) => *p,
        };
        input_tokens(&packed.model().spec, template, nonce, &mut self.tokens);
        forward_packed(packed, &self.tokens, &mut self.scratch, &mut self.out);
        &self.out
    }

    /// One full attempt.
    pub fn attempt(&mut self, template: &[u8; TEMPLATE_LEN], nonce: u64) -> Attempt {
        let digest = output_digest(self.output(template, nonce));
        Attempt { nonce, output_digest: digest, pow_hash: pow_hash(template, nonce, &digest) }
    }
}
