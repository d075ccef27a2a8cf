//! The same Transformer shape in f32 with candle: what a user would run instead.
//!
//! Same computation graph as the integer puzzle (pre-norm, causal multi-head
//! attention, GELU MLP, last layer restricted to the last position), random weights.
//! Only its speed is compared; its numbers mean nothing.

use anyhow::Result;
use candle_core::{DType, Device, Tensor, D};
use tpow_core::ModelSpec;

struct FloatLayer {
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    wo: Tensor,
    w_up: Tensor,
    w_down: Tensor,
}

/// Weights and an input of one forward pass.
pub struct FloatModel {
    spec: ModelSpec,
    x: Tensor,
    mask: Tensor,
    layers: Vec<FloatLayer>,
}

fn rms_norm(x: &Tensor) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    Ok(x.broadcast_div(&(ms + 1e-6)?.sqrt()?)?)
}

impl FloatModel {
    /// Random weights of `spec`'s shape (weights as `in x out`, so x @ w).
    pub fn new(spec: &ModelSpec) -> Result<Self> {
        let dev = Device::Cpu;
        let d = spec.d_model as usize;
        let f = spec.d_ffn as usize;
        let s = spec.seq_len as usize;
        let w = |i: usize, o: usize| Tensor::randn(0f32, 1.0 / (i as f32).sqrt(), (i, o), &dev);
        let layers = (0..spec.n_layers)
            .map(|_| {
                Ok(FloatLayer {
                    wq: w(d, d)?,
                    wk: w(d, d)?,
                    wv: w(d, d)?,
                    wo: w(d, d)?,
                    w_up: w(d, f)?,
                    w_down: w(f, d)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mask: Vec<f32> = (0..s * s).map(|i| if i % s > i / s { f32::NEG_INFINITY } else { 0.0 }).collect();
        Ok(FloatModel {
            spec: *spec,
            x: Tensor::randn(0f32, 1.0, (s, d), &dev)?,
            mask: Tensor::from_vec(mask, (s, s), &dev)?,
            layers,
        })
    }

    /// One forward pass; returns the last position's normalised hidden vector.
    pub fn forward(&self) -> Result<Tensor> {
        let s = self.spec.seq_len as usize;
        let nh = self.spec.n_heads as usize;
        let hd = self.spec.head_dim();
        let scale = 1.0 / (hd as f64).sqrt();
        let mut x = self.x.clone();
        let n = self.layers.len();
        for (l, layer) in self.layers.iter().enumerate() {
            let first = if l + 1 == n { s - 1 } else { 0 };
            let rows = s - first;
            let h = rms_norm(&x)?;
            let heads = |t: Tensor, len: usize| -> Result<Tensor> {
                Ok(t.reshape((len, nh, hd))?.transpose(0, 1)?.contiguous()?)
            };
            let k = heads(h.matmul(&layer.wk)?, s)?;
            let v = heads(h.matmul(&layer.wv)?, s)?;
            let hq = h.narrow(0, first, rows)?;
            let q = heads(hq.matmul(&layer.wq)?, rows)?;
            let att = (q.matmul(&k.t()?)? * scale)?;
            let att = att.broadcast_add(&self.mask.narrow(0, first, rows)?)?;
            let att = candle_nn::ops::softmax_last_dim(&att)?;
            let o = att.matmul(&v)?.transpose(0, 1)?.reshape((rows, nh * hd))?;
            let mut xr = (x.narrow(0, first, rows)? + o.matmul(&layer.wo)?)?;
            let h2 = rms_norm(&xr)?;
            let up = h2.matmul(&layer.w_up)?.gelu()?;
            xr = (xr + up.matmul(&layer.w_down)?)?;
            x = xr;
        }
        let last = x.narrow(0, x.dim(0)? - 1, 1)?;
        Ok(rms_norm(&last)?.to_dtype(DType::F32)?)
    }
}
