//! The integer forward pass: the reference every other implementation must match.
//!
//! A pre-norm decoder Transformer (embeddings, then per block: RMS norm → causal
//! multi-head attention → residual add, RMS norm → GELU MLP → residual add, then a
//! final RMS norm) computed entirely on integers. The consensus output is the final
//! normalised hidden vector of the last position, `d_model` int8 values.
//!
//! The last block only needs the last position beyond its keys and values, so it
//! computes nothing else; that changes no output byte.
//!
//! The consensus object is the [`Model`] (row-major weights). The CPU kernels want
//! their own weight layouts: a [`PackedModel`] is the model laid out for one
//! [`Backend`] (built once per model by whoever runs many passes on it: the miner,
//! a [`crate::puzzle::Solver`]); [`forward`] on a plain `&Model` lays it out per
//! call, which is what a one-pass verification pays anyway.

mod matmul;
pub mod ops;

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use crate::model::{Layer, Matrix, Model};
use ops::*;

pub use matmul::{simd_backend_name, Backend, PackedMatrix};

/// Switches off a part of the model. Only used to prove that every part matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Ablation {
    /// The real forward pass.
    #[default]
    None,
    /// Skip the whole block with this index.
    Layer(usize),
    /// Skip only the attention of this block.
    Attention(usize),
    /// Skip only the MLP of this block.
    Mlp(usize),
}

/// Per-layer activation statistics, for the well-conditioning report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerStats {
    /// int8 values written by requantisation (q, k, v, attention output, MLP hidden).
    pub act_values: u64,
    /// Of those, how many were clamped to ±127.
    pub act_clipped: u64,
    /// Of those, how many were zero.
    pub act_zero: u64,
    /// Sum of squares of the residual stream after the block (all positions).
    pub residual_sum_sq: f64,
    /// Residual values after the block.
    pub residual_values: u64,
    /// Residual values clamped to ±32767.
    pub residual_clipped: u64,
}

/// The matrices of one block laid out for a backend.
#[derive(Clone, Debug)]
struct PackedLayer {
    wq: PackedMatrix,
    wk: PackedMatrix,
    wv: PackedMatrix,
    wo: PackedMatrix,
    w_up: PackedMatrix,
    w_down: PackedMatrix,
}

/// How a [`PackedModel`] holds its consensus model.
#[derive(Clone, Debug)]
enum ModelRef<'m> {
    /// The caller keeps the model (a miner's stack frame, a one-pass verification).
    Borrowed(&'m Model),
    /// Shared ownership, so the layout can live in a cache next to the model.
    Shared(Arc<Model>),
}

/// A [`Model`] with its matrices laid out for one backend's kernels
/// ([`Backend::pack`]): what the CPU engine runs passes on. Build it once per model
/// when running many passes (mining, or checking siblings of one parent: laying out
/// mainnet weights costs about as much as a pass); it borrows or shares the model
/// (the embeddings, and the row-major weights that the scalar loop and the wasm
/// kernels read) and holds only the backend's copies (none for those).
#[derive(Clone, Debug)]
pub struct PackedModel<'m> {
    model: ModelRef<'m>,
    backend: Backend,
    layers: Vec<PackedLayer>,
}

impl PackedModel<'static> {
    /// `model` laid out for `backend`, owning a share of the model: what a cache
    /// keeps between passes.
    pub fn shared(model: Arc<Model>, backend: Backend) -> Self {
        let layers = Self::pack_layers(&model, backend);
        PackedModel { model: ModelRef::Shared(model), backend, layers }
    }
}

impl<'m> PackedModel<'m> {
    /// `model` laid out for `backend`.
    pub fn new(model: &'m Model, backend: Backend) -> Self {
        PackedModel { model: ModelRef::Borrowed(model), backend, layers: Self::pack_layers(model, backend) }
    }

    fn pack_layers(model: &Model, backend: Backend) -> Vec<PackedLayer> {
        model
            .layers
            .iter()
            .map(|l| PackedLayer {
                wq: backend.pack(&l.wq),
                wk: backend.pack(&l.wk),
                wv: backend.pack(&l.wv),
                wo: backend.pack(&l.wo),
                w_up: backend.pack(&l.w_up),
                w_down: backend.pack(&l.w_down),
            })
            .collect()
    }

    /// `model` laid out for the fastest backend of this CPU ([`Backend::detect`]).
    pub fn detect(model: &'m Model) -> Self {
        Self::new(model, Backend::detect())
    }

    /// The consensus model.
    pub fn model(&self) -> &Model {
        match &self.model {
            ModelRef::Borrowed(m) => m,
            ModelRef::Shared(m) => m,
        }
    }

    /// The kernels the layouts are for.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// How many of the model's matrices run this backend's SIMD kernel on this
    /// machine (the rest run the scalar loop); 0 for [`Backend::Scalar`].
    pub fn simd_matrices(&self) -> usize {
        self.pairs().filter(|(w, p)| self.backend.runs_simd(w, p)).count()
    }

    /// Bytes held in packed copies (0 where the kernels read the model's weights).
    pub fn packed_bytes(&self) -> usize {
        self.pairs().map(|(_, p)| p.packed_len()).sum()
    }

    fn pairs(&self) -> impl Iterator<Item = (&Matrix, &PackedMatrix)> + '_ {
        self.model().layers.iter().zip(&self.layers).flat_map(|(l, p): (&Layer, &PackedLayer)| {
            [(&l.wq, &p.wq), (&l.wk, &p.wk), (&l.wv, &p.wv), (&l.wo, &p.wo), (&l.w_up, &p.w_up), (&l.w_down, &p.w_down)]
        })
    }
}

/// Buffers reused across forward passes, so the miner's hot loop never allocates.
pub struct Scratch {
    x: Vec<i32>,
    h: Vec<i8>,
    q: Vec<i8>,
    k: Vec<i8>,
    v: Vec<i8>,
    att: Vec<i8>,
    up: Vec<i8>,
    acc: Vec<i32>,
    scores: Vec<i32>,
    backend: Backend,
}

impl Scratch {
    /// Buffers for `model`'s shape, using the fastest kernels this CPU offers.
    pub fn new(model: &Model) -> Self {
        Self::with_backend(model, Backend::detect())
    }

    /// Buffers with an explicit kernel choice for [`forward`] on a plain [`Model`]
    /// (tests compare the backends). [`forward_packed`] runs the kernels its
    /// [`PackedModel`] was laid out for.
    pub fn with_backend(model: &Model, backend: Backend) -> Self {
        let s = model.spec.seq_len as usize;
        let d = model.spec.d_model as usize;
        let f = model.spec.d_ffn as usize;
        Scratch {
            x: vec![0; s * d],
            h: vec![0; s * d],
            q: vec![0; s * d],
            k: vec![0; s * d],
            v: vec![0; s * d],
            att: vec![0; s * d],
            up: vec![0; s * f],
            acc: vec![0; s * f.max(d)],
            scores: vec![0; s],
            backend,
        }
    }

    /// The kernels [`forward`] lays the model out for.
    pub fn backend(&self) -> Backend {
        self.backend
    }
}

/// Runs the forward pass on `tokens` (each `< vocab`, exactly `seq_len` of them) and
/// writes the `d_model` output bytes, laying the weights out for `scratch`'s backend
/// first (one pass: a verification). Many passes on one model should build a
/// [`PackedModel`] once and call [`forward_packed`].
///
/// Panics if the lengths do not match the model; callers derive tokens with
/// [`crate::puzzle::input_tokens`], which always produces the right count.
pub fn forward(model: &Model, tokens: &[u16], scratch: &mut Scratch, out: &mut [i8]) {
    forward_with(model, tokens, scratch, out, Ablation::None, None);
}

/// [`forward`] with an ablation and optional statistics (analysis only).
pub fn forward_with(
    model: &Model,
    tokens: &[u16],
    sc: &mut Scratch,
    out: &mut [i8],
    ablation: Ablation,
    stats: Option<&mut Vec<LayerStats>>,
) {
    let packed = PackedModel::new(model, sc.backend);
    forward_packed_with(&packed, tokens, sc, out, ablation, stats);
}

/// [`forward`] on a model already laid out for its backend: the mining hot loop.
pub fn forward_packed(model: &PackedModel<'_>, tokens: &[u16], scratch: &mut Scratch, out: &mut [i8]) {
    forward_packed_with(model, tokens, scratch, out, Ablation::None, None);
}

/// [`forward_packed`] with an ablation and optional statistics (analysis only).
pub fn forward_packed_with(
    packed: &PackedModel<'_>,
    tokens: &[u16],
    sc: &mut Scratch,
    out: &mut [i8],
    ablation: Ablation,
    mut stats: Option<&mut Vec<LayerStats>>,
) {
    let model = packed.model();
    let backend = packed.backend;
    let spec = &model.spec;
    let s = spec.seq_len as usize;
    let d = spec.d_model as usize;
    let f = spec.d_ffn as usize;
    assert_eq!(tokens.len(), s, "token count must equal seq_len");
    assert_eq!(out.len(), d, "output length must equal d_model");
    if let Some(st) = stats.as_deref_mut() {
        st.clear();
        st.resize(spec.n_layers as usize, LayerStats::default());
    }

    // Embeddings: x[p] = (tok_emb[token] + pos_emb[p]) << EMBED_SHIFT.
    for (p, &t) in tokens.iter().enumerate() {
        let te = model.tok_emb.row(t as usize % spec.vocab as usize);
        let pe = model.pos_emb.row(p);
        for i in 0..d {
            sc.x[p * d + i] = (te[i] as i32 + pe[i] as i32) << EMBED_SHIFT;
        }
    }

    let n_layers = model.layers.len();
    for (l, (layer, pl)) in model.layers.iter().zip(&packed.layers).enumerate() {
        let last = l + 1 == n_layers;
        // Positions whose outputs this block must produce.
        let first_pos = if last { s - 1 } else { 0 };
        let mut st = stats.as_deref_mut().map(|v| &mut v[l]);
        let skip_attn = matches!(ablation, Ablation::Layer(i) | Ablation::Attention(i) if i == l);
        let skip_mlp = matches!(ablation, Ablation::Layer(i) | Ablation::Mlp(i) if i == l);

        if !skip_attn {
            for p in 0..s {
                rms_norm(&sc.x[p * d..(p + 1) * d], &mut sc.h[p * d..(p + 1) * d]);
            }
            let sh = act_shift(d);
            // Keys and values for every position; queries only where needed.
            project(backend, &sc.h, s, (&layer.wk, &pl.wk), &mut sc.acc, &mut sc.k, sh, st.as_deref_mut());
            project(backend, &sc.h, s, (&layer.wv, &pl.wv), &mut sc.acc, &mut sc.v, sh, st.as_deref_mut());
            let hq = &sc.h[first_pos * d..];
            project(
                backend,
                hq,
                s - first_pos,
                (&layer.wq, &pl.wq),
                &mut sc.acc,
                &mut sc.q[first_pos * d..],
                sh,
                st.as_deref_mut(),
            );
            attention(backend, spec.head_dim(), d, first_pos, s, sc, st.as_deref_mut());
            let rows = s - first_pos;
            backend.matmul_packed(&sc.att[first_pos * d..], rows, &layer.wo, &pl.wo, &mut sc.acc[..rows * d]);
            add_residual(&mut sc.x[first_pos * d..s * d], &sc.acc[..rows * d], residual_shift(d));
        }
        if !skip_mlp {
            let rows = s - first_pos;
            for p in first_pos..s {
                rms_norm(&sc.x[p * d..(p + 1) * d], &mut sc.h[p * d..(p + 1) * d]);
            }
            project(
                backend,
                &sc.h[first_pos * d..],
                rows,
                (&layer.w_up, &pl.w_up),
                &mut sc.acc,
                &mut sc.up,
                act_shift(d),
                st.as_deref_mut(),
            );
            for u in sc.up[..rows * f].iter_mut() {
                *u = GELU_TABLE[(*u as i32 + 128) as usize];
            }
            backend.matmul_packed(&sc.up[..rows * f], rows, &layer.w_down, &pl.w_down, &mut sc.acc[..rows * d]);
            add_residual(&mut sc.x[first_pos * d..s * d], &sc.acc[..rows * d], residual_shift(f));
        }
        if let Some(st) = st {
            for &v in &sc.x[first_pos * d..s * d] {
                st.residual_sum_sq += (v as f64) * (v as f64);
                st.residual_values += 1;
                st.residual_clipped += (v.abs() == RESIDUAL_MAX) as u64;
            }
        }
    }
    rms_norm(&sc.x[(s - 1) * d..s * d], out);
}

/// `dst = clamp_i8(round_shift(src · Wᵀ, shift))` for `rows` input rows.
#[allow(clippy::too_many_arguments)]
fn project(
    backend: Backend,
    src: &[i8],
    rows: usize,
    (w, p): (&Matrix, &PackedMatrix),
    acc: &mut [i32],
    dst: &mut [i8],
    shift: u32,
    stats: Option<&mut LayerStats>,
) {
    let n = rows * w.rows;
    backend.matmul_packed(&src[..rows * w.cols], rows, w, p, &mut acc[..n]);
    for (o, &a) in dst[..n].iter_mut().zip(&acc[..n]) {
        *o = clamp_i8(round_shift(a, shift));
    }
    if let Some(st) = stats {
        record_acts(st, &dst[..n]);
    }
}

fn record_acts(st: &mut LayerStats, vals: &[i8]) {
    st.act_values += vals.len() as u64;
    st.act_clipped += vals.iter().filter(|v| v.unsigned_abs() as i32 == ACT_MAX).count() as u64;
    st.act_zero += vals.iter().filter(|&&v| v == 0).count() as u64;
}

/// `x = clamp(x + round_shift(update, shift), ±RESIDUAL_MAX)`.
fn add_residual(x: &mut [i32], update: &[i32], shift: u32) {
    for (xv, &u) in x.iter_mut().zip(update) {
        *xv = (*xv + round_shift(u, shift)).clamp(-RESIDUAL_MAX, RESIDUAL_MAX);
    }
}

/// Causal multi-head attention for query positions `first..s`, writing `sc.att`.
///
/// Per head and query i: `s_j = q_i · k_j` for j <= i; `t_j = (max s - s_j) >>
/// score_shift`; `w_j = exp2_weight(t_j)`; `r = 2^30 / Σ w` (floor);
/// `p_j = min((w_j · r + 2^22) >> 23, 127)` (Q7 probability);
/// `att_i = clamp_i8(round_shift(Σ_j p_j · v_j, PROB_BITS))`.
fn attention(
    backend: Backend,
    hd: usize,
    d: usize,
    first: usize,
    s: usize,
    sc: &mut Scratch,
    stats: Option<&mut LayerStats>,
) {
    if !backend.attention(hd, d, first, s, &sc.q, &sc.k, &sc.v, &mut sc.att) {
        attention_scalar(hd, d, first, s, sc);
    }
    if let Some(st) = stats {
        record_acts(st, &sc.att[first * d..s * d]);
    }
}

/// The portable attention (the reference; wasm32 runs it).
fn attention_scalar(hd: usize, d: usize, first: usize, s: usize, sc: &mut Scratch) {
    let n_heads = d / hd;
    let sh = score_shift(hd);
    for i in first..s {
        for h in 0..n_heads {
            let q = &sc.q[i * d + h * hd..i * d + (h + 1) * hd];
            let mut max = i32::MIN;
            for j in 0..=i {
                let k = &sc.k[j * d + h * hd..j * d + (h + 1) * hd];
                let dot = matmul::dot_i8(q, k);
                sc.scores[j] = dot;
                max = max.max(dot);
            }
            let mut sum = 0i32;
            for sj in sc.scores[..=i].iter_mut() {
                let w = exp2_weight((max - *sj) >> sh);
                *sj = w;
                sum += w;
            }
            let r = ((1u32 << 30) / sum as u32) as i32;
            // Probability-weighted values, summed key by key into one accumulator
            // per channel (integer sums: the order does not change the result).
            let mut acc = [0i32; 64];
            let acc = &mut acc[..hd];
            for j in 0..=i {
                let p = ((sc.scores[j] * r + (1 << 22)) >> 23).min(127);
                if p == 0 {
                    continue;
                }
                let vj = &sc.v[j * d + h * hd..j * d + (h + 1) * hd];
                for (a, &v) in acc.iter_mut().zip(vj) {
                    *a += p * v as i32;
                }
            }
            let out = &mut sc.att[i * d + h * hd..i * d + (h + 1) * hd];
            for (o, &a) in out.iter_mut().zip(acc.iter()) {
                *o = clamp_i8(round_shift(a, PROB_BITS));
            }
        }
    }
}
