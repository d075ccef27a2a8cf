//! A quantised llama forward pass on candle, after candle-transformers'
//! `quantized_llama` (same tensor names, same maths: RMSNorm, interleaved RoPE,
//! grouped-query attention, SwiGLU MLP, tied output), with three differences
//! that matter for a chat server:
//!
//! - weights can be re-quantised at load (Q4_1 -> Q8_0 decodes faster on x86: the
//!   Q8_0 x Q8_0 dot product is the cheapest kernel candle has);
//! - the KV cache is a plain per-layer buffer per sequence ([`KvCache`]) that grows
//!   by appending into memory reserved up front, so a decode step does not copy
//!   the whole cache (`Tensor::cat`), a cache can be truncated to a shared prefix
//!   and reused by the next request, and its memory is known before it is used;
//! - [`Model::forward_batch`] runs several sequences in one pass (continuous
//!   batching): the weight matmuls see all their rows at once, attention runs per
//!   sequence over its own cache;
//! - Q8_0 weights go through [`crate::qmatmul`] ([`Matmul::Batched`], the
//!   default): each weight block is read once per step and combined with every
//!   row while it is in registers (candle's matmul walks the whole matrix once
//!   per row), and the projections that share an input (q|k|v, gate|up) run as
//!   one matrix. Every output is bit-identical to candle's on the same CPU and
//!   computed row by row, so a sequence's numbers do not depend on what else is
//!   in the batch, and a generation's text is the one candle's matmul gives;
//! - the rotary tables cover the model's whole context (`llama.context_length`),
//!   not a fixed 4096.

use std::io::{Read, Seek};

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

use crate::qmatmul::{Kernel, Q8Matrix};

pub type Result<T> = candle_core::Result<T>;

/// Hyper-parameters read from the GGUF metadata.
#[derive(Debug, Clone)]
pub struct Config {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub context_length: usize,
    pub rope_freq_base: f32,
    pub rms_eps: f32,
    pub vocab_size: usize,
}

struct Layer {
    attn_norm: Vec<f32>,
    /// The query, key and value projections (one input, three outputs).
    wqkv: Proj,
    wo: Proj,
    ffn_norm: Vec<f32>,
    /// The gate and up projections (one input, two outputs).
    w_gate_up: Proj,
    w_down: Proj,
}

/// How the weight matmuls run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matmul {
    /// candle's quantised matmul, every matrix on its own.
    Candle,
    /// Q8_0 matrices through [`crate::qmatmul`] (each weight block read once per
    /// step for all rows; matrices sharing an input fused into one) where that
    /// kernel computes candle's vector dot product's numbers (x86-64); candle's
    /// matmul elsewhere.
    Batched,
}

/// One or more weight matrices applied to the same input, giving one output each.
enum Proj {
    /// candle's matmul per matrix.
    Candle(Vec<QMatMul>),
    /// The matrices stacked (output columns one after another) as one
    /// [`Q8Matrix`].
    Q8(Q8Matrix),
}

impl Proj {
    /// Builds the projection of `ts` (all of shape `[n_i][k]`).
    fn new(ts: Vec<QTensor>, matmul: Matmul) -> Result<Proj> {
        let k = ts[0].shape().dims2()?.1;
        let batched = matmul == Matmul::Batched
            && Kernel::matches_candle()
            && ts.iter().all(|t| t.dtype() == GgmlDType::Q8_0 && t.shape().dims2().is_ok_and(|(_, tk)| tk == k));
        if !batched {
            return Ok(Proj::Candle(ts.into_iter().map(QMatMul::from_qtensor).collect::<Result<_>>()?));
        }
        let mut n = 0;
        let mut bytes = Vec::new();
        for t in &ts {
            n += t.shape().dims2()?.0;
            bytes.extend_from_slice(&t.data()?);
        }
        Ok(Proj::Q8(Q8Matrix::from_q8_0_bytes(&bytes, n, k, Kernel::detect())?))
    }

    /// `x · Wᵀ` for the `m` rows of `x`: each row's outputs of every matrix, one
    /// after another (`m` rows of the summed widths).
    fn forward_rows(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        match self {
            Proj::Candle(ms) => {
                let k = x.len() / m.max(1);
                let xt = Tensor::from_slice(x, (1, m, k), &Device::Cpu)?;
                let outs: Vec<Vec<f32>> =
                    ms.iter().map(|q| q.forward(&xt)?.flatten_all()?.to_vec1::<f32>()).collect::<Result<_>>()?;
                let widths: Vec<usize> = outs.iter().map(|o| o.len() / m.max(1)).collect();
                let mut rows = Vec::with_capacity(outs.iter().map(Vec::len).sum());
                for r in 0..m {
                    for (o, &w) in outs.iter().zip(&widths) {
                        rows.extend_from_slice(&o[r * w..(r + 1) * w]);
                    }
                }
                Ok(rows)
            }
            Proj::Q8(mat) => {
                let mut out = vec![0f32; m * mat.n()];
                mat.matmul(x, &mut out);
                Ok(out)
            }
        }
    }
}

/// The keys and values of one sequence, every layer.
#[derive(Default)]
pub struct KvCache {
    /// Keys of the cached positions per layer, position-major: `[pos][kv_head][head_dim]`.
    k: Vec<Vec<f32>>,
    /// Values, same layout.
    v: Vec<Vec<f32>>,
    /// Positions held.
    len: usize,
}

impl KvCache {
    /// An empty cache with room for `positions` (allocated now, once: appending
    /// never reallocates, so the memory of a sequence is what was reserved).
    pub fn with_capacity(config: &Config, positions: usize) -> KvCache {
        let row = config.n_kv_head * config.head_dim;
        let layer = || (0..config.n_layer).map(|_| Vec::with_capacity(positions * row)).collect();
        KvCache { k: layer(), v: layer(), len: 0 }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keeps the first `len` positions.
    pub fn truncate(&mut self, len: usize, config: &Config) {
        let len = len.min(self.len);
        let row = config.n_kv_head * config.head_dim;
        for l in self.k.iter_mut().chain(self.v.iter_mut()) {
            l.truncate(len * row);
        }
        self.len = len;
    }

    /// Sets the room to `positions` (at least the positions held): grows it so
    /// appending never reallocates, or gives back what is beyond it.
    pub fn set_capacity(&mut self, positions: usize, config: &Config) {
        let row = config.n_kv_head * config.head_dim;
        if self.k.len() != config.n_layer {
            *self = KvCache::with_capacity(config, positions);
            return;
        }
        let want = positions.max(self.len) * row;
        for l in self.k.iter_mut().chain(self.v.iter_mut()) {
            if l.capacity() < want {
                l.reserve_exact(want - l.len());
            } else {
                l.shrink_to(want);
            }
        }
    }

    /// Bytes reserved.
    pub fn capacity_bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(|l| l.capacity() * 4).sum()
    }
}

/// One sequence's part of a batched forward pass.
pub struct SeqInput<'a> {
    /// Its cache; the tokens run at positions `cache.len()..` and are appended.
    pub cache: &'a mut KvCache,
    /// Tokens to run: one when decoding, a prompt chunk when prefilling.
    pub tokens: &'a [u32],
    /// Whether the logits of its last token are wanted (not for a prompt chunk
    /// that is not the prompt's last).
    pub logits: bool,
}

/// The model with its KV cache.
pub struct Model {
    pub config: Config,
    tok_embd: QTensor,
    layers: Vec<Layer>,
    out_norm: Vec<f32>,
    output: Proj,
    /// `[position][head_dim / 2]`: the rotary angles' cosines and sines.
    cos: Vec<f32>,
    sin: Vec<f32>,
    device: Device,
    /// The cache of the single-sequence API ([`Model::forward`]).
    cache: KvCache,
}

fn md_u32(ct: &gguf_file::Content, key: &str) -> Result<usize> {
    match ct.metadata.get(key) {
        Some(v) => Ok(v.to_u32()? as usize),
        None => candle_core::bail!("metadata {key} is missing"),
    }
}

/// How weights are stored after loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// As in the file.
    AsLoaded,
    /// Q4_0/Q4_1/Q5_0/Q5_1 matrices re-quantised to Q8_0.
    Q8_0,
}

impl Model {
    /// Reads the model from a GGUF file already parsed into `ct`, with the
    /// batched matmul ([`Matmul::Batched`]).
    pub fn load<R: Read + Seek>(ct: &gguf_file::Content, reader: &mut R, format: WeightFormat) -> Result<Model> {
        Model::load_with(ct, reader, format, Matmul::Batched)
    }

    /// [`Model::load`] with a chosen matmul.
    pub fn load_with<R: Read + Seek>(
        ct: &gguf_file::Content,
        reader: &mut R,
        format: WeightFormat,
        matmul: Matmul,
    ) -> Result<Model> {
        let device = Device::Cpu;
        let arch =
            ct.metadata.get("general.architecture").and_then(|v| v.to_string().ok()).cloned().unwrap_or_default();
        if arch != "llama" {
            candle_core::bail!("architecture {arch:?} is not supported (only llama)");
        }
        let n_embd = md_u32(ct, "llama.embedding_length")?;
        let n_head = md_u32(ct, "llama.attention.head_count")?;
        let n_kv_head = md_u32(ct, "llama.attention.head_count_kv")?;
        let head_dim = n_embd / n_head;
        let rope_dim = md_u32(ct, "llama.rope.dimension_count").unwrap_or(head_dim);
        if rope_dim != head_dim {
            candle_core::bail!("partial rotary embeddings are not supported");
        }
        let config = Config {
            n_layer: md_u32(ct, "llama.block_count")?,
            n_embd,
            n_head,
            n_kv_head,
            head_dim,
            n_ff: md_u32(ct, "llama.feed_forward_length")?,
            context_length: md_u32(ct, "llama.context_length")?,
            rope_freq_base: ct.metadata.get("llama.rope.freq_base").and_then(|v| v.to_f32().ok()).unwrap_or(10000.),
            rms_eps: ct
                .metadata
                .get("llama.attention.layer_norm_rms_epsilon")
                .and_then(|v| v.to_f32().ok())
                .unwrap_or(1e-5),
            vocab_size: 0,
        };

        let qmat = |reader: &mut R, name: &str| -> Result<QTensor> {
            let t = ct.tensor(reader, name, &device)?;
            Ok(match (format, t.dtype()) {
                (WeightFormat::Q8_0, GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1) => {
                    QTensor::quantize(&t.dequantize(&device)?, GgmlDType::Q8_0)?
                }
                _ => t,
            })
        };
        let vec = |reader: &mut R, name: &str| -> Result<Vec<f32>> {
            ct.tensor(reader, name, &device)?.dequantize(&device)?.to_vec1::<f32>()
        };

        let tok_embd = ct.tensor(reader, "token_embd.weight", &device)?;
        let vocab_size = tok_embd.shape().dims2()?.0;
        let output = if ct.tensor_infos.contains_key("output.weight") {
            qmat(reader, "output.weight")?
        } else {
            // Tied embeddings (SmolLM2): the output projection is the embedding matrix.
            qmat(reader, "token_embd.weight")?
        };
        let output = Proj::new(vec![output], matmul)?;
        let out_norm = vec(reader, "output_norm.weight")?;
        let mut layers = Vec::with_capacity(config.n_layer);
        for i in 0..config.n_layer {
            let p = format!("blk.{i}");
            layers.push(Layer {
                attn_norm: vec(reader, &format!("{p}.attn_norm.weight"))?,
                wqkv: Proj::new(
                    vec![
                        qmat(reader, &format!("{p}.attn_q.weight"))?,
                        qmat(reader, &format!("{p}.attn_k.weight"))?,
                        qmat(reader, &format!("{p}.attn_v.weight"))?,
                    ],
                    matmul,
                )?,
                wo: Proj::new(vec![qmat(reader, &format!("{p}.attn_output.weight"))?], matmul)?,
                ffn_norm: vec(reader, &format!("{p}.ffn_norm.weight"))?,
                w_gate_up: Proj::new(
                    vec![qmat(reader, &format!("{p}.ffn_gate.weight"))?, qmat(reader, &format!("{p}.ffn_up.weight"))?],
                    matmul,
                )?,
                w_down: Proj::new(vec![qmat(reader, &format!("{p}.ffn_down.weight"))?], matmul)?,
            });
        }

        let theta: Vec<f32> =
            (0..head_dim).step_by(2).map(|i| 1f32 / config.rope_freq_base.powf(i as f32 / head_dim as f32)).collect();
        let n_theta = theta.len();
        let ctx = config.context_length;
        let mut cos = Vec::with_capacity(ctx * n_theta);
        let mut sin = Vec::with_capacity(ctx * n_theta);
        for pos in 0..ctx {
            for &t in &theta {
                let a = pos as f32 * t;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        let config = Config { vocab_size, ..config };
        Ok(Model { config, tok_embd, layers, out_norm, output, cos, sin, device, cache: KvCache::default() })
    }

    /// Bytes of KV cache one position takes (keys and values, every layer).
    pub fn kv_bytes_per_token(&self) -> usize {
        2 * self.config.n_layer * self.config.n_kv_head * self.config.head_dim * std::mem::size_of::<f32>()
    }

    /// Positions in the KV cache of the single-sequence API.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Keeps the first `len` cached positions (a shared prompt prefix), drops the rest.
    pub fn truncate_cache(&mut self, len: usize) {
        let config = self.config.clone();
        self.cache.truncate(len, &config);
    }

    /// Runs `tokens` at positions `cached..cached + len` (extending the cache) and
    /// returns the logits of the last one. One sequence: [`Model::forward_batch`] of one.
    pub fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let mut cache = std::mem::take(&mut self.cache);
        if cache.k.len() != self.config.n_layer {
            cache = KvCache::with_capacity(&self.config, 0);
        }
        let out = self.forward_batch(&mut [SeqInput { cache: &mut cache, tokens, logits: true }]);
        self.cache = cache;
        match out?.pop().flatten() {
            Some(logits) => Ok(logits),
            None => candle_core::bail!("no logits"),
        }
    }

    /// One step of several sequences: every sequence's tokens run at its own next
    /// positions and are appended to its own cache; returns, per sequence, the
    /// logits of its last token when asked for.
    ///
    /// Single-token (decode) sequences are best put first: their rows are then
    /// contiguous and their projections and rotary embedding run as one block.
    /// A sequence's results are bit-identical whatever else is in the batch
    /// (row-wise matmuls and norms, per-sequence attention).
    pub fn forward_batch(&self, seqs: &mut [SeqInput<'_>]) -> Result<Vec<Option<Vec<f32>>>> {
        let c = &self.config;
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        for s in seqs.iter() {
            if s.tokens.is_empty() {
                candle_core::bail!("forward of no tokens");
            }
            if s.cache.len + s.tokens.len() > c.context_length {
                candle_core::bail!("context of {} tokens exceeded", c.context_length);
            }
            if s.cache.k.len() != c.n_layer {
                candle_core::bail!("a KV cache of another model");
            }
        }
        let total: usize = seqs.iter().map(|s| s.tokens.len()).sum();
        // Leading single-token sequences: the decode block.
        let n_dec = seqs.iter().take_while(|s| s.tokens.len() == 1).count();
        let ids: Vec<u32> = seqs.iter().flat_map(|s| s.tokens.iter().copied()).collect();
        let ids = Tensor::new(ids.as_slice(), &self.device)?;
        // The residual stream, `total` rows of `n_embd`; between the matmuls every
        // operation but prompt-chunk attention is row-wise and repeats candle's
        // arithmetic on the same values (see `rms_norm_rows`, `rope_row`,
        // `silu_mul`), so no tensor round trips.
        let mut x = self.tok_embd.embedding(&ids)?.flatten_all()?.to_vec1::<f32>()?;
        let e = c.n_embd;
        let kvw = c.n_kv_head * c.head_dim;
        let qkvw = e + 2 * kvw;
        let half = c.head_dim / 2;
        let neg_inf = Tensor::new(f32::NEG_INFINITY, &self.device)?;
        let mut h = vec![0f32; total * e];
        let mut y = vec![0f32; total * e];
        for (li, layer) in self.layers.iter().enumerate() {
            rms_norm_rows(&x, &layer.attn_norm, c.rms_eps, &mut h);
            let mut qkv = layer.wqkv.forward_rows(&h, total)?;
            // Every row's rotary embedding at its position; its key and value to its
            // sequence's cache.
            let mut rows = qkv.chunks_exact_mut(qkvw);
            for s in seqs.iter_mut() {
                for (i, r) in rows.by_ref().take(s.tokens.len()).enumerate() {
                    let at = (s.cache.len + i) * half;
                    let (cos, sin) = (&self.cos[at..at + half], &self.sin[at..at + half]);
                    let (q, kv) = r.split_at_mut(e);
                    let (k, v) = kv.split_at_mut(kvw);
                    rope_row(q, cos, sin);
                    rope_row(k, cos, sin);
                    s.cache.k[li].extend_from_slice(k);
                    s.cache.v[li].extend_from_slice(v);
                }
            }
            let queries = |from: usize, n: usize| -> Vec<f32> {
                qkv[from * qkvw..(from + n) * qkvw].chunks_exact(qkvw).flat_map(|r| &r[..e]).copied().collect()
            };
            if n_dec > 0 {
                let kv: Vec<LayerKv<'_>> = seqs[..n_dec]
                    .iter()
                    .map(|s| LayerKv { k: &s.cache.k[li], v: &s.cache.v[li], len: s.cache.len + 1 })
                    .collect();
                y[..n_dec * e].copy_from_slice(&decode_attention_rows(&queries(0, n_dec), &kv, c));
            }
            let mut off = n_dec;
            for s in seqs[n_dec..].iter() {
                let seq_len = s.tokens.len();
                let pos = s.cache.len;
                let kv_len = pos + seq_len;
                let (kc, vc) = (&s.cache.k[li], &s.cache.v[li]);
                debug_assert_eq!(kc.len(), kv_len * kvw);
                let q = queries(off, seq_len);
                let ys = if seq_len == 1 {
                    decode_attention(&q, LayerKv { k: kc, v: vc, len: kv_len }, c)
                } else {
                    let q = Tensor::from_vec(q, (1, seq_len, c.n_head, c.head_dim), &self.device)?
                        .transpose(1, 2)?
                        .contiguous()?;
                    let m: Vec<u8> =
                        (0..seq_len).flat_map(|i| (0..kv_len).map(move |j| u8::from(j > pos + i))).collect();
                    let mask = Tensor::from_vec(m, (seq_len, kv_len), &self.device)?;
                    let kt =
                        Tensor::from_slice(kc, (1, kv_len, c.n_kv_head, c.head_dim), &self.device)?.transpose(1, 2)?;
                    let vt =
                        Tensor::from_slice(vc, (1, kv_len, c.n_kv_head, c.head_dim), &self.device)?.transpose(1, 2)?;
                    let rep = c.n_head / c.n_kv_head;
                    let kt = repeat_kv(&kt, rep)?;
                    let vt = repeat_kv(&vt, rep)?;
                    let att = (q.matmul(&kt.t()?)? * (1.0 / (c.head_dim as f64).sqrt()))?;
                    let mask = mask.broadcast_as(att.shape())?;
                    let att = mask.where_cond(&neg_inf.broadcast_as(att.shape())?, &att)?;
                    let att = candle_nn::ops::softmax_last_dim(&att)?;
                    att.matmul(&vt)?.transpose(1, 2)?.flatten_all()?.to_vec1::<f32>()?
                };
                y[off * e..(off + seq_len) * e].copy_from_slice(&ys);
                off += seq_len;
            }
            // x1 = attention output + residual, in place.
            let o = layer.wo.forward_rows(&y, total)?;
            for (xv, ov) in x.iter_mut().zip(&o) {
                *xv += *ov;
            }
            rms_norm_rows(&x, &layer.ffn_norm, c.rms_eps, &mut h);
            let gate_up = layer.w_gate_up.forward_rows(&h, total)?;
            let act = silu_mul(&gate_up, c.n_ff);
            let d = layer.w_down.forward_rows(&act, total)?;
            for (xv, dv) in x.iter_mut().zip(&d) {
                *xv += *dv;
            }
        }
        // The last row of every sequence that wants logits.
        let mut last = Vec::new();
        let mut end = 0;
        for s in seqs.iter_mut() {
            end += s.tokens.len();
            s.cache.len += s.tokens.len();
            if s.logits {
                last.extend_from_slice(&x[(end - 1) * e..end * e]);
            }
        }
        let mut out = vec![None; seqs.len()];
        if last.is_empty() {
            return Ok(out);
        }
        let n_rows = last.len() / e;
        let mut normed = vec![0f32; last.len()];
        rms_norm_rows(&last, &self.out_norm, c.rms_eps, &mut normed);
        let logits = self.output.forward_rows(&normed, n_rows)?;
        let mut logits = logits.chunks_exact(logits.len() / n_rows);
        for (slot, s) in out.iter_mut().zip(seqs.iter()) {
            if s.logits {
                *slot = logits.next().map(<[f32]>::to_vec);
            }
        }
        Ok(out)
    }
}

/// candle's RMS norm of each row of `x` (candle-nn's `rms_norm` on the CPU): the
/// sum of squares in order, `m = sqrt(sum / n + eps)`, then `x / m * alpha`.
fn rms_norm_rows(x: &[f32], alpha: &[f32], eps: f32, out: &mut [f32]) {
    let n = alpha.len();
    for (src, dst) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let sum2 = src.iter().map(|&v| v * v).sum::<f32>();
        let m = (sum2 / n as f32 + eps).sqrt();
        for ((d, &s), &a) in dst.iter_mut().zip(src).zip(alpha) {
            *d = s / m * a;
        }
    }
}

/// candle's interleaved rotary embedding (`rope_i`) of one position's heads, in
/// place: each pair `(a, b)` becomes `(a cos - b sin, a sin + b cos)` with the
/// pair's angle (`cos` and `sin` hold one value per pair of a head).
fn rope_row(heads: &mut [f32], cos: &[f32], sin: &[f32]) {
    for head in heads.chunks_exact_mut(2 * cos.len()) {
        for ((p, &c), &s) in head.chunks_exact_mut(2).zip(cos).zip(sin) {
            let (a, b) = (p[0], p[1]);
            p[0] = a * c - b * s;
            p[1] = a * s + b * c;
        }
    }
}

/// The MLP's activation of each row of `gate_up` (`n_ff` gate values then `n_ff`
/// up values): candle's `silu(g) * u`, with `silu(g) = g / (1 + exp(-g))`.
fn silu_mul(gate_up: &[f32], n_ff: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(gate_up.len() / 2);
    for row in gate_up.chunks_exact(2 * n_ff) {
        let (gate, up) = row.split_at(n_ff);
        out.extend(gate.iter().zip(up).map(|(&g, &u)| g / (1.0 + (-g).exp()) * u));
    }
    out
}

/// `(b, n_kv, s, d)` -> `(b, n_kv * rep, s, d)`, each kv head repeated `rep` times in a row.
fn repeat_kv(x: &Tensor, rep: usize) -> Result<Tensor> {
    if rep == 1 {
        return x.contiguous();
    }
    let (b, n_kv, s, d) = x.dims4()?;
    x.unsqueeze(2)?.broadcast_as((b, n_kv, rep, s, d))?.contiguous()?.reshape((b, n_kv * rep, s, d))
}

/// One sequence's cached keys and values of one layer: `len` positions of
/// `n_kv_head * head_dim` values each.
#[derive(Clone, Copy)]
struct LayerKv<'a> {
    k: &'a [f32],
    v: &'a [f32],
    len: usize,
}

/// The decode attention of several sequences, one query row each (`q` is
/// `kv.len()` rows of `n_embd`), each over its own cache, one sequence per item
/// of candle's thread pool.
fn decode_attention_rows(q: &[f32], kv: &[LayerKv<'_>], c: &Config) -> Vec<f32> {
    let e = c.n_embd;
    let mut y = vec![0f32; kv.len() * e];
    let mut rows: Vec<&mut [f32]> = y.chunks_mut(e).collect();
    crate::pool::for_each_mut(&mut rows, |i, row| {
        row.copy_from_slice(&decode_attention(&q[i * e..(i + 1) * e], kv[i], c));
    });
    drop(rows);
    y
}

/// Attention of one query position over a sequence's cached positions.
fn decode_attention(q: &[f32], kv: LayerKv<'_>, c: &Config) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx") {
        // SAFETY: this CPU has AVX (checked just above).
        return unsafe { decode_attention_avx(q, kv, c) };
    }
    attention(q, kv, c)
}

/// [`attention`] compiled for AVX (eight lanes instead of four), with the scores
/// of eight positions at a time ([`avx_scores`]): the same operations on the same
/// values in the same order (no fused multiply-add), so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn decode_attention_avx(q: &[f32], kv: LayerKv<'_>, c: &Config) -> Vec<f32> {
    attention_with(q, kv, c, |qh, k, row, scale, scores| {
        // SAFETY: this function runs only where the CPU has AVX.
        unsafe { avx_scores(qh, k, row, scale, scores) }
    })
}

/// The scores `dot(qh, k_p) * scale` of the positions `p` (key `p` is
/// `k[p * row..][..qh.len()]`, one per entry of `scores`) and their maximum.
#[inline(always)]
fn scores_and_max(qh: &[f32], k: &[f32], row: usize, scale: f32, scores: &mut [f32]) -> f32 {
    let mut max = f32::NEG_INFINITY;
    for (p, s) in scores.iter_mut().enumerate() {
        let d = dot(qh, &k[p * row..][..qh.len()]) * scale;
        *s = d;
        max = max.max(d);
    }
    max
}

/// [`scores_and_max`] eight positions at a time when the head size is a multiple
/// of 8: position `p`'s eight lane sums of [`dot`] are built as there (lane `j`
/// adds the products `j, j + 8, ...` in order), then an 8x8 transpose puts lane
/// `j` of the eight positions in one register, so [`dot`]'s final sum of the lanes
/// in order is seven vector additions for eight positions. `vmaxps` keeps the
/// running maximum when the score is NaN, as `f32::max` does.
///
/// # Safety
/// The CPU must have AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn avx_scores(qh: &[f32], k: &[f32], row: usize, scale: f32, scores: &mut [f32]) -> f32 {
    use std::arch::x86_64::*;
    let hd = qh.len();
    let n = scores.len();
    if !hd.is_multiple_of(8) || n < 8 {
        return scores_and_max(qh, k, row, scale, scores);
    }
    assert!(k.len() >= (n - 1) * row + hd);
    let groups = n / 8;
    let vscale = _mm256_set1_ps(scale);
    let mut vmax = _mm256_set1_ps(f32::NEG_INFINITY);
    for g in 0..groups {
        let base = g * 8 * row;
        let mut acc = [_mm256_setzero_ps(); 8];
        for i in 0..hd / 8 {
            // SAFETY: chunk i of `qh` and of key g * 8 + p (p < 8, within `n` keys
            // of `row` values) are in bounds (asserted above); unaligned loads.
            let qv = unsafe { _mm256_loadu_ps(qh.as_ptr().add(8 * i)) };
            for (p, a) in acc.iter_mut().enumerate() {
                let kv = unsafe { _mm256_loadu_ps(k.as_ptr().add(base + p * row + 8 * i)) };
                *a = _mm256_add_ps(*a, _mm256_mul_ps(qv, kv));
            }
        }
        // Transpose: t[j] holds lane j of the eight positions.
        let u0 = _mm256_unpacklo_ps(acc[0], acc[1]);
        let u1 = _mm256_unpackhi_ps(acc[0], acc[1]);
        let u2 = _mm256_unpacklo_ps(acc[2], acc[3]);
        let u3 = _mm256_unpackhi_ps(acc[2], acc[3]);
        let u4 = _mm256_unpacklo_ps(acc[4], acc[5]);
        let u5 = _mm256_unpackhi_ps(acc[4], acc[5]);
        let u6 = _mm256_unpacklo_ps(acc[6], acc[7]);
        let u7 = _mm256_unpackhi_ps(acc[6], acc[7]);
        let s0 = _mm256_shuffle_ps::<0x44>(u0, u2);
        let s1 = _mm256_shuffle_ps::<0xee>(u0, u2);
        let s2 = _mm256_shuffle_ps::<0x44>(u1, u3);
        let s3 = _mm256_shuffle_ps::<0xee>(u1, u3);
        let s4 = _mm256_shuffle_ps::<0x44>(u4, u6);
        let s5 = _mm256_shuffle_ps::<0xee>(u4, u6);
        let s6 = _mm256_shuffle_ps::<0x44>(u5, u7);
        let s7 = _mm256_shuffle_ps::<0xee>(u5, u7);
        let t = [
            _mm256_permute2f128_ps::<0x20>(s0, s4),
            _mm256_permute2f128_ps::<0x20>(s1, s5),
            _mm256_permute2f128_ps::<0x20>(s2, s6),
            _mm256_permute2f128_ps::<0x20>(s3, s7),
            _mm256_permute2f128_ps::<0x31>(s0, s4),
            _mm256_permute2f128_ps::<0x31>(s1, s5),
            _mm256_permute2f128_ps::<0x31>(s2, s6),
            _mm256_permute2f128_ps::<0x31>(s3, s7),
        ];
        let mut sum = t[0];
        for &tj in &t[1..] {
            sum = _mm256_add_ps(sum, tj);
        }
        let d = _mm256_mul_ps(sum, vscale);
        // SAFETY: scores g * 8 .. g * 8 + 8 exist (g < n / 8).
        unsafe { _mm256_storeu_ps(scores.as_mut_ptr().add(g * 8), d) };
        vmax = _mm256_max_ps(d, vmax);
    }
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds eight f32.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), vmax) };
    let head_max = lanes.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    if groups * 8 == n {
        return head_max;
    }
    let tail = scores_and_max(qh, &k[groups * 8 * row..], row, scale, &mut scores[groups * 8..]);
    head_max.max(tail)
}

/// Attention of one query position over `kv_len` cached positions (the
/// portable build).
fn attention(q: &[f32], kv: LayerKv<'_>, c: &Config) -> Vec<f32> {
    attention_with(q, kv, c, scores_and_max)
}

/// Attention with `qk` computing a head's scores and their maximum.
#[inline(always)]
fn attention_with(
    q: &[f32],
    LayerKv { k, v, len }: LayerKv<'_>,
    c: &Config,
    qk: impl Fn(&[f32], &[f32], usize, f32, &mut [f32]) -> f32,
) -> Vec<f32> {
    let hd = c.head_dim;
    let row = c.n_kv_head * hd;
    let rep = c.n_head / c.n_kv_head;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0f32; c.n_head * hd];
    let mut scores = vec![0f32; len];
    for h in 0..c.n_head {
        let kvh = h / rep;
        let qh = &q[h * hd..(h + 1) * hd];
        let max = qk(qh, &k[kvh * hd..], row, scale, &mut scores);
        let mut sum = 0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        let inv = 1.0 / sum;
        let oh = &mut out[h * hd..(h + 1) * hd];
        for (p, &s) in scores.iter().enumerate() {
            let w = s * inv;
            let vp = &v[p * row + kvh * hd..p * row + (kvh + 1) * hd];
            for (o, &x) in oh.iter_mut().zip(vp) {
                *o += w * x;
            }
        }
    }
    out
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators (lane j sums the products j, j + 8, ...), then
    // the lanes in order, then the tail: whole chunks so that the loop has no bounds
    // checks and vectorises.
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(seed: u64, len: usize, spread: f32) -> Vec<f32> {
        let mut s = seed | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * spread
            })
            .collect()
    }

    /// Asserts bit-identity, naming the first difference.
    fn assert_same_bits(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        let diff: Vec<usize> = (0..got.len()).filter(|&i| got[i].to_bits() != want[i].to_bits()).collect();
        if let Some(&i) = diff.first() {
            panic!("{what}: {} values differ, first [{i}] {} vs {}", diff.len(), got[i], want[i]);
        }
    }

    /// The row-wise operations between the matmuls give candle's bits: RMS norm,
    /// interleaved rotary embedding (both of candle's code paths: one position and
    /// several) and `silu(gate) * up`.
    #[test]
    fn row_operations_are_candles() {
        let dev = Device::Cpu;
        let (rows, n) = (5, 576);
        let x = values(1, rows * n, 40.0);
        let alpha = values(2, n, 2.0);
        let want = candle_nn::ops::rms_norm(
            &Tensor::from_slice(&x, (1, rows, n), &dev).unwrap(),
            &Tensor::from_slice(&alpha, n, &dev).unwrap(),
            1e-5,
        )
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
        let mut got = vec![0f32; rows * n];
        rms_norm_rows(&x, &alpha, 1e-5, &mut got);
        assert_same_bits(&got, &want, "rms norm");

        let (heads, hd) = (9, 64);
        for positions in [1, 4] {
            let q = values(3 + positions as u64, positions * heads * hd, 3.0);
            let angles: Vec<f32> = (0..positions * hd / 2).map(|i| i as f32 * 0.37 + 11.0).collect();
            let cos: Vec<f32> = angles.iter().map(|a| a.cos()).collect();
            let sin: Vec<f32> = angles.iter().map(|a| a.sin()).collect();
            // candle's layout: (1, heads, positions, hd); ours: one row per position.
            let qt = Tensor::from_slice(&q, (1, positions, heads, hd), &dev).unwrap().transpose(1, 2).unwrap();
            let want = candle_nn::rotary_emb::rope_i(
                &qt.contiguous().unwrap(),
                &Tensor::from_slice(&cos, (positions, hd / 2), &dev).unwrap(),
                &Tensor::from_slice(&sin, (positions, hd / 2), &dev).unwrap(),
            )
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
            let mut got = q.clone();
            for (p, row) in got.chunks_exact_mut(heads * hd).enumerate() {
                rope_row(row, &cos[p * hd / 2..][..hd / 2], &sin[p * hd / 2..][..hd / 2]);
            }
            assert_same_bits(&got, &want, &format!("rope over {positions} positions"));
        }

        let n_ff = 1536;
        let gate_up = values(9, 3 * 2 * n_ff, 12.0);
        let gu = Tensor::from_slice(&gate_up, (3, 2 * n_ff), &dev).unwrap();
        let gate = gu.narrow(1, 0, n_ff).unwrap();
        let up = gu.narrow(1, n_ff, n_ff).unwrap();
        let want =
            (candle_nn::ops::silu(&gate).unwrap() * up).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_same_bits(&silu_mul(&gate_up, n_ff), &want, "silu(gate) * up");
    }

    /// The AVX build of the decode attention gives the portable build's bits
    /// (SmolLM2-135M's head layout, contexts of 1 to 300 positions).
    #[test]
    fn the_avx_attention_is_bit_identical() {
        let c = Config {
            n_layer: 1,
            n_embd: 576,
            n_head: 9,
            n_kv_head: 3,
            head_dim: 64,
            n_ff: 1536,
            context_length: 2048,
            rope_freq_base: 10_000.0,
            rms_eps: 1e-5,
            vocab_size: 49_152,
        };
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut value = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        };
        let row = c.n_kv_head * c.head_dim;
        for kv_len in [1, 2, 7, 8, 9, 15, 64, 300] {
            let q: Vec<f32> = (0..c.n_embd).map(|_| value() * 4.0).collect();
            let k: Vec<f32> = (0..kv_len * row).map(|_| value() * 3.0).collect();
            let v: Vec<f32> = (0..kv_len * row).map(|_| value()).collect();
            let kv = LayerKv { k: &k, v: &v, len: kv_len };
            let (portable, chosen) = (attention(&q, kv, &c), decode_attention(&q, kv, &c));
            let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&chosen), bits(&portable), "kv_len {kv_len}");
        }
    }
}
