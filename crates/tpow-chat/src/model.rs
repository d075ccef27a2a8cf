//! A quantised llama forward pass on candle, after candle-transformers'
//! `quantized_llama` (same tensor names, same maths: RMSNorm, interleaved RoPE,
//! grouped-query attention, SwiGLU MLP, tied output), with three differences
//! that matter for a chat server:
//!
//! - weights can be re-quantised at load (Q4_1 -> Q8_0 decodes faster on x86: the
//!   Q8_0 x Q8_0 dot product is the cheapest kernel candle has);
//! - the KV cache is a plain per-layer buffer that grows by appending, so a decode
//!   step does not copy the whole cache (`Tensor::cat`) and the cache can be
//!   truncated to a shared prefix and reused by the next request;
//! - the rotary tables cover the model's whole context (`llama.context_length`),
//!   not a fixed 4096.

use std::io::{Read, Seek};

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

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
    attn_norm: Tensor,
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    wo: QMatMul,
    ffn_norm: Tensor,
    w_gate: QMatMul,
    w_up: QMatMul,
    w_down: QMatMul,
    /// Keys of the cached positions, position-major: `[pos][kv_head][head_dim]`.
    k_cache: Vec<f32>,
    /// Values, same layout.
    v_cache: Vec<f32>,
}

/// The model with its KV cache.
pub struct Model {
    pub config: Config,
    tok_embd: QTensor,
    layers: Vec<Layer>,
    out_norm: Tensor,
    output: QMatMul,
    cos: Tensor,
    sin: Tensor,
    /// Positions held in every layer's cache.
    cached: usize,
    device: Device,
    /// Scratch of the decode attention (scores of one head).
    scores: Vec<f32>,
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
    /// Reads the model from a GGUF file already parsed into `ct`.
    pub fn load<R: Read + Seek>(ct: &gguf_file::Content, reader: &mut R, format: WeightFormat) -> Result<Model> {
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

        let qmat = |reader: &mut R, name: &str| -> Result<QMatMul> {
            let t = ct.tensor(reader, name, &device)?;
            let t = match (format, t.dtype()) {
                (WeightFormat::Q8_0, GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1) => {
                    QTensor::quantize(&t.dequantize(&device)?, GgmlDType::Q8_0)?
                }
                _ => t,
            };
            QMatMul::from_qtensor(t)
        };
        let vec =
            |reader: &mut R, name: &str| -> Result<Tensor> { ct.tensor(reader, name, &device)?.dequantize(&device) };

        let tok_embd = ct.tensor(reader, "token_embd.weight", &device)?;
        let vocab_size = tok_embd.shape().dims2()?.0;
        let output = if ct.tensor_infos.contains_key("output.weight") {
            qmat(reader, "output.weight")?
        } else {
            // Tied embeddings (SmolLM2): the output projection is the embedding matrix.
            qmat(reader, "token_embd.weight")?
        };
        let out_norm = vec(reader, "output_norm.weight")?;
        let mut layers = Vec::with_capacity(config.n_layer);
        for i in 0..config.n_layer {
            let p = format!("blk.{i}");
            layers.push(Layer {
                attn_norm: vec(reader, &format!("{p}.attn_norm.weight"))?,
                wq: qmat(reader, &format!("{p}.attn_q.weight"))?,
                wk: qmat(reader, &format!("{p}.attn_k.weight"))?,
                wv: qmat(reader, &format!("{p}.attn_v.weight"))?,
                wo: qmat(reader, &format!("{p}.attn_output.weight"))?,
                ffn_norm: vec(reader, &format!("{p}.ffn_norm.weight"))?,
                w_gate: qmat(reader, &format!("{p}.ffn_gate.weight"))?,
                w_up: qmat(reader, &format!("{p}.ffn_up.weight"))?,
                w_down: qmat(reader, &format!("{p}.ffn_down.weight"))?,
                k_cache: Vec::new(),
                v_cache: Vec::new(),
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
        let cos = Tensor::from_vec(cos, (ctx, n_theta), &device)?;
        let sin = Tensor::from_vec(sin, (ctx, n_theta), &device)?;
        let config = Config { vocab_size, ..config };
        Ok(Model { config, tok_embd, layers, out_norm, output, cos, sin, cached: 0, device, scores: Vec::new() })
    }

    /// Positions in the KV cache.
    pub fn cached(&self) -> usize {
        self.cached
    }

    /// Keeps the first `len` cached positions (a shared prompt prefix), drops the rest.
    pub fn truncate_cache(&mut self, len: usize) {
        let len = len.min(self.cached);
        let row = self.config.n_kv_head * self.config.head_dim;
        for l in &mut self.layers {
            l.k_cache.truncate(len * row);
            l.v_cache.truncate(len * row);
        }
        self.cached = len;
    }

    /// Runs `tokens` at positions `cached..cached + len` (extending the cache) and
    /// returns the logits of the last one.
    pub fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let seq_len = tokens.len();
        if seq_len == 0 {
            candle_core::bail!("forward of no tokens");
        }
        let pos = self.cached;
        if pos + seq_len > self.config.context_length {
            candle_core::bail!("context of {} tokens exceeded", self.config.context_length);
        }
        let c = self.config.clone();
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self.tok_embd.embedding(&ids)?.reshape((1, seq_len, c.n_embd))?;
        let cos = self.cos.narrow(0, pos, seq_len)?;
        let sin = self.sin.narrow(0, pos, seq_len)?;
        let kv_len = pos + seq_len;
        let mask = if seq_len > 1 {
            let m: Vec<u8> = (0..seq_len).flat_map(|i| (0..kv_len).map(move |j| u8::from(j > pos + i))).collect();
            Some(Tensor::from_vec(m, (seq_len, kv_len), &self.device)?)
        } else {
            None
        };
        let neg_inf = Tensor::new(f32::NEG_INFINITY, &self.device)?;
        let row = c.n_kv_head * c.head_dim;
        for layer in self.layers.iter_mut() {
            let residual = x.clone();
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, c.rms_eps)?;
            let q = layer.wq.forward(&h)?;
            let k = layer.wk.forward(&h)?;
            let v = layer.wv.forward(&h)?;
            let q = q.reshape((1, seq_len, c.n_head, c.head_dim))?.transpose(1, 2)?.contiguous()?;
            let k = k.reshape((1, seq_len, c.n_kv_head, c.head_dim))?.transpose(1, 2)?.contiguous()?;
            let q = candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?;
            // Append to the cache, position-major.
            let k_new = k.transpose(1, 2)?.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
            let v_new = v.flatten_all()?.to_vec1::<f32>()?;
            layer.k_cache.extend_from_slice(&k_new);
            layer.v_cache.extend_from_slice(&v_new);
            debug_assert_eq!(layer.k_cache.len(), kv_len * row);

            let y = if seq_len == 1 {
                let q = q.flatten_all()?.to_vec1::<f32>()?;
                let y = decode_attention(&q, &layer.k_cache, &layer.v_cache, kv_len, &c, &mut self.scores);
                Tensor::from_vec(y, (1, 1, c.n_embd), &self.device)?
            } else {
                let kc = Tensor::from_slice(&layer.k_cache, (1, kv_len, c.n_kv_head, c.head_dim), &self.device)?
                    .transpose(1, 2)?;
                let vc = Tensor::from_slice(&layer.v_cache, (1, kv_len, c.n_kv_head, c.head_dim), &self.device)?
                    .transpose(1, 2)?;
                let rep = c.n_head / c.n_kv_head;
                let kc = repeat_kv(&kc, rep)?;
                let vc = repeat_kv(&vc, rep)?;
                let att = (q.matmul(&kc.t()?)? * (1.0 / (c.head_dim as f64).sqrt()))?;
                let mask = mask.as_ref().unwrap().broadcast_as(att.shape())?;
                let att = mask.where_cond(&neg_inf.broadcast_as(att.shape())?, &att)?;
                let att = candle_nn::ops::softmax_last_dim(&att)?;
                att.matmul(&vc)?.transpose(1, 2)?.reshape((1, seq_len, c.n_embd))?
            };
            let x1 = (layer.wo.forward(&y)? + residual)?;
            let h = candle_nn::ops::rms_norm(&x1, &layer.ffn_norm, c.rms_eps)?;
            let gate = candle_nn::ops::silu(&layer.w_gate.forward(&h)?)?;
            let up = layer.w_up.forward(&h)?;
            x = (layer.w_down.forward(&(gate * up)?)? + x1)?;
        }
        self.cached = kv_len;
        let x = x.narrow(1, seq_len - 1, 1)?;
        let x = candle_nn::ops::rms_norm(&x, &self.out_norm, c.rms_eps)?;
        let logits = self.output.forward(&x)?;
        logits.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()
    }
}

/// `(b, n_kv, s, d)` -> `(b, n_kv * rep, s, d)`, each kv head repeated `rep` times in a row.
fn repeat_kv(x: &Tensor, rep: usize) -> Result<Tensor> {
    if rep == 1 {
        return x.contiguous();
    }
    let (b, n_kv, s, d) = x.dims4()?;
    x.unsqueeze(2)?.broadcast_as((b, n_kv, rep, s, d))?.contiguous()?.reshape((b, n_kv * rep, s, d))
}

/// Attention of one query position over `kv_len` cached positions.
fn decode_attention(q: &[f32], k: &[f32], v: &[f32], kv_len: usize, c: &Config, scores: &mut Vec<f32>) -> Vec<f32> {
    let hd = c.head_dim;
    let row = c.n_kv_head * hd;
    let rep = c.n_head / c.n_kv_head;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0f32; c.n_head * hd];
    scores.resize(kv_len, 0.0);
    for h in 0..c.n_head {
        let kvh = h / rep;
        let qh = &q[h * hd..(h + 1) * hd];
        let mut max = f32::NEG_INFINITY;
        for (p, s) in scores.iter_mut().enumerate() {
            let kp = &k[p * row + kvh * hd..p * row + (kvh + 1) * hd];
            let d = dot(qh, kp) * scale;
            *s = d;
            max = max.max(d);
        }
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

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators so the compiler vectorises it.
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        for j in 0..8 {
            acc[j] += a[i * 8 + j] * b[i * 8 + j];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
}
