//! The puzzle model: int8 weights derived from the previous block id.
//!
//! Each tensor has its own blake3 output stream keyed by (previous block id, model
//! spec, layer, tensor kind), so tensors can be generated independently and in
//! parallel (on a GPU, one stream per workgroup) and nobody can precompute a model
//! before the block it builds on exists.

use alloc::vec::Vec;

use crate::hash::{hasher, CTX_MODEL_WEIGHTS};
use crate::spec::{ModelSpec, SpecError};

/// Which tensor of the model a weight stream belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum TensorKind {
    /// Token embedding, `vocab x d_model`.
    TokenEmbedding = 0,
    /// Position embedding, `seq_len x d_model`.
    PositionEmbedding = 1,
    /// Query projection, `d_model x d_model` (rows are outputs).
    Query = 2,
    /// Key projection, `d_model x d_model`.
    Key = 3,
    /// Value projection, `d_model x d_model`.
    Value = 4,
    /// Attention output projection, `d_model x d_model`.
    AttnOut = 5,
    /// MLP up projection, `d_ffn x d_model`.
    MlpUp = 6,
    /// MLP down projection, `d_model x d_ffn`.
    MlpDown = 7,
}

/// Layer index used for the tensors that belong to no layer (the embeddings).
pub const NO_LAYER: u32 = u32::MAX;

/// Fills `out` with the weight stream of one tensor.
///
/// Stream = blake3-XOF(derive_key(CTX_MODEL_WEIGHTS), prev_id ‖ spec ‖ layer u32 LE
/// ‖ kind u32 LE); each output byte is one weight, read as two's-complement int8,
/// with -128 raised to -127. Symmetric weights (|w| <= 127, like the activations)
/// let SIMD kernels sum pairs of products in 16 bits without saturating
/// (2 · 127 · 127 < 2^15), and negating a weight never overflows.
pub fn derive_tensor(prev_id: &[u8; 32], spec: &ModelSpec, layer: u32, kind: TensorKind, out: &mut [i8]) {
    let mut h = hasher(CTX_MODEL_WEIGHTS);
    h.update(prev_id);
    h.update(&spec.to_bytes());
    h.update(&layer.to_le_bytes());
    h.update(&(kind as u32).to_le_bytes());
    let mut reader = h.finalize_xof();
    // SAFETY-free reinterpretation: fill a byte buffer, then cast each byte.
    let mut buf = [0u8; 4096];
    for chunk in out.chunks_mut(buf.len()) {
        let b = &mut buf[..chunk.len()];
        reader.fill(b);
        for (w, &x) in chunk.iter_mut().zip(b.iter()) {
            *w = (x as i8).max(-127);
        }
    }
}

/// A linear layer: `rows` outputs, each a dot product with `cols` inputs.
///
/// Only the consensus weights: the layouts the CPU kernels want are the engine's
/// ([`crate::forward::PackedModel`]), so a GPU or wasm verifier holds no copy it does
/// not use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matrix {
    /// Output dimension.
    pub rows: usize,
    /// Input dimension.
    pub cols: usize,
    /// Row-major weights, `rows * cols`.
    pub data: Vec<i8>,
}

impl Matrix {
    fn derive(prev_id: &[u8; 32], spec: &ModelSpec, layer: u32, kind: TensorKind, rows: usize, cols: usize) -> Self {
        let mut data = alloc::vec![0i8; rows * cols];
        derive_tensor(prev_id, spec, layer, kind, &mut data);
        Matrix { rows, cols, data }
    }

    /// Weights of output `r`.
    pub fn row(&self, r: usize) -> &[i8] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
}

/// One Transformer block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// Query projection.
    pub wq: Matrix,
    /// Key projection.
    pub wk: Matrix,
    /// Value projection.
    pub wv: Matrix,
    /// Attention output projection.
    pub wo: Matrix,
    /// MLP up projection.
    pub w_up: Matrix,
    /// MLP down projection.
    pub w_down: Matrix,
}

/// All weights of the puzzle model for one block: the consensus object, row-major
/// weights only (docs/PROTOCOL.md §5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Model {
    /// Shape.
    pub spec: ModelSpec,
    /// The previous block id the weights were derived from.
    pub prev_id: [u8; 32],
    /// `vocab x d_model`.
    pub tok_emb: Matrix,
    /// `seq_len x d_model`.
    pub pos_emb: Matrix,
    /// The blocks, in order.
    pub layers: Vec<Layer>,
}

impl Model {
    /// Derives the model that mines on top of block `prev_id`.
    pub fn derive(spec: &ModelSpec, prev_id: &[u8; 32]) -> Result<Self, SpecError> {
        spec.validate()?;
        let d = spec.d_model as usize;
        let f = spec.d_ffn as usize;
        let m = |layer, kind, rows, cols| Matrix::derive(prev_id, spec, layer, kind, rows, cols);
        let layers = (0..spec.n_layers)
            .map(|l| Layer {
                wq: m(l, TensorKind::Query, d, d),
                wk: m(l, TensorKind::Key, d, d),
                wv: m(l, TensorKind::Value, d, d),
                wo: m(l, TensorKind::AttnOut, d, d),
                w_up: m(l, TensorKind::MlpUp, f, d),
                w_down: m(l, TensorKind::MlpDown, d, f),
            })
            .collect();
        Ok(Model {
            spec: *spec,
            prev_id: *prev_id,
            tok_emb: m(NO_LAYER, TensorKind::TokenEmbedding, spec.vocab as usize, d),
            pos_emb: m(NO_LAYER, TensorKind::PositionEmbedding, spec.seq_len as usize, d),
            layers,
        })
    }
}

/// Gain of one tensor kind in a conformance model (docs/PROTOCOL.md §14.1):
/// every weight `w` of the kind's §5 stream becomes `clamp8(((w · mul) >> 7) + add)`.
///
/// `mul = 128, add = 0` leaves the weight unchanged. The specification limits
/// `mul` to `0..=65535` and `add` to `-255..=255`, so that 32-bit implementations
/// compute the same weights; this function computes in 64 bits and accepts any
/// value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConformanceGain {
    /// Multiplier, in units of 1/128.
    pub mul: u32,
    /// Added after scaling, before the clamp to `-127..=127`.
    pub add: i32,
}

impl ConformanceGain {
    /// The gain that leaves weights unchanged (`mul = 128, add = 0`).
    pub const IDENTITY: ConformanceGain = ConformanceGain { mul: 128, add: 0 };
}

impl Model {
    /// A *conformance model* (docs/PROTOCOL.md §14.1): the model derived from
    /// `seed` as if it were a `prev_id` (§5), with each tensor's weights rescaled
    /// by the gain of its kind (`gains[kind as usize]`).
    ///
    /// Test-only: no block ever mines on such a model. It exists so that the
    /// conformance vectors can drive the forward pass into every clamp and guard
    /// (residual and attention clamps, the `t ≥ 256` softmax cut-off, the RMS-norm
    /// floor `r = max(isqrt(ms), 1)`), which the derived weights rarely or never
    /// reach. With every gain [`ConformanceGain::IDENTITY`] it equals
    /// [`Model::derive`]`(spec, seed)`.
    pub fn conformance(spec: &ModelSpec, seed: &[u8; 32], gains: &[ConformanceGain; 8]) -> Result<Self, SpecError> {
        let mut model = Model::derive(spec, seed)?;
        let rescale = |m: &mut Matrix, kind: TensorKind| {
            let g = gains[kind as usize];
            if g == ConformanceGain::IDENTITY {
                return;
            }
            for w in m.data.iter_mut() {
                let v = ((i64::from(*w) * i64::from(g.mul)) >> 7) + i64::from(g.add);
                *w = v.clamp(-127, 127) as i8;
            }
        };
        rescale(&mut model.tok_emb, TensorKind::TokenEmbedding);
        rescale(&mut model.pos_emb, TensorKind::PositionEmbedding);
        for layer in model.layers.iter_mut() {
            rescale(&mut layer.wq, TensorKind::Query);
            rescale(&mut layer.wk, TensorKind::Key);
            rescale(&mut layer.wv, TensorKind::Value);
            rescale(&mut layer.wo, TensorKind::AttnOut);
            rescale(&mut layer.w_up, TensorKind::MlpUp);
            rescale(&mut layer.w_down, TensorKind::MlpDown);
        }
        Ok(model)
    }
}
