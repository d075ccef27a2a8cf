//! Well-conditioning of the puzzle model: no shortcut around the forward pass.
//!
//! These tests are the integer version of the failure the brief describes: a model
//! whose output does not depend on every layer and every input token would let a
//! miner skip work. Each property is checked over many seeds and nonces.

use std::collections::HashSet;

use tpow_core::forward::{forward_packed_with, Ablation, LayerStats, PackedModel, Scratch};
use tpow_core::puzzle::input_tokens;
use tpow_core::{Model, ModelSpec};

fn seed(i: u32) -> [u8; 32] {
    *blake3::hash(&i.to_le_bytes()).as_bytes()
}

fn template(i: u64) -> [u8; 152] {
    let mut t = [0u8; 152];
    t[..8].copy_from_slice(&i.to_le_bytes());
    t
}

struct Runner {
    model: &'static Model,
    packed: PackedModel<'static>,
    scratch: Scratch,
    tokens: Vec<u16>,
}

impl Runner {
    fn new(spec: ModelSpec, s: u32) -> Self {
        // Leaked so that the laid-out weights can borrow it (a few models per test).
        let model: &'static Model = Box::leak(Box::new(Model::derive(&spec, &seed(s)).unwrap()));
        let scratch = Scratch::new(model);
        Runner { tokens: vec![0; spec.seq_len as usize], model, packed: PackedModel::detect(model), scratch }
    }
    fn set_nonce(&mut self, nonce: u64) {
        input_tokens(&self.model.spec, &template(7), nonce, &mut self.tokens);
    }
    fn run(&mut self, ablation: Ablation, stats: Option<&mut Vec<LayerStats>>) -> Vec<i8> {
        let mut out = vec![0i8; self.model.spec.d_model as usize];
        forward_packed_with(&self.packed, &self.tokens, &mut self.scratch, &mut out, ablation, stats);
        out
    }
}

fn distinct_outputs(spec: ModelSpec, nonces: u64) {
    let mut r = Runner::new(spec, 1);
    let mut seen = HashSet::new();
    for n in 0..nonces {
        r.set_nonce(n);
        assert!(seen.insert(r.run(Ablation::None, None)), "nonce {n} repeats an output");
    }
}

#[test]
fn devnet_outputs_are_distinct_over_5000_nonces() {
    distinct_outputs(ModelSpec::DEVNET, 5000);
}

#[test]
fn mainnet_outputs_are_distinct_over_1000_nonces() {
    distinct_outputs(ModelSpec::MAINNET, 1000);
}

fn every_part_matters(spec: ModelSpec, seeds: u32, nonces: u64) {
    let layers = spec.n_layers as usize;
    let mut unchanged = 0usize;
    let mut total = 0usize;
    for s in 0..seeds {
        let mut r = Runner::new(spec, s);
        for n in 0..nonces {
            r.set_nonce(n);
            let full = r.run(Ablation::None, None);
            for l in 0..layers {
                for ab in [Ablation::Layer(l), Ablation::Attention(l), Ablation::Mlp(l)] {
                    total += 1;
                    if r.run(ab, None) == full {
                        unchanged += 1;
                        eprintln!("seed {s} nonce {n}: {ab:?} left the output unchanged");
                    }
                }
            }
        }
    }
    // "Essentially every nonce": not a single ablation may go unnoticed.
    assert_eq!(unchanged, 0, "{unchanged} of {total} ablations changed nothing");
}

#[test]
fn devnet_skipping_any_layer_attention_or_mlp_changes_the_output() {
    every_part_matters(ModelSpec::DEVNET, 8, 64);
}

#[test]
fn mainnet_skipping_any_layer_attention_or_mlp_changes_the_output() {
    every_part_matters(ModelSpec::MAINNET, 3, 16);
}

fn every_token_matters(spec: ModelSpec, nonces: u64) {
    let mut r = Runner::new(spec, 3);
    let s = spec.seq_len as usize;
    for n in 0..nonces {
        r.set_nonce(n);
        let full = r.run(Ablation::None, None);
        for pos in [0, s / 2, s - 1] {
            let saved = r.tokens[pos];
            r.tokens[pos] = (saved + 1) % spec.vocab as u16;
            assert_ne!(r.run(Ablation::None, None), full, "nonce {n}: token {pos} did not matter");
            r.tokens[pos] = saved;
        }
    }
}

#[test]
fn devnet_changing_first_middle_or_last_token_changes_the_output() {
    every_token_matters(ModelSpec::DEVNET, 500);
}

#[test]
fn mainnet_changing_first_middle_or_last_token_changes_the_output() {
    every_token_matters(ModelSpec::MAINNET, 100);
}

/// Prints the per-layer report and checks that no layer's activations vanish or
/// saturate.
fn activations_are_well_scaled(spec: ModelSpec, nonces: u64) {
    let mut r = Runner::new(spec, 5);
    let mut total = vec![LayerStats::default(); spec.n_layers as usize];
    let mut stats = Vec::new();
    let mut out_clipped = 0u64;
    let mut out_zero = 0u64;
    let mut out_sq = 0f64;
    for n in 0..nonces {
        r.set_nonce(n);
        let out = r.run(Ablation::None, Some(&mut stats));
        out_clipped += out.iter().filter(|v| v.unsigned_abs() == 127).count() as u64;
        out_zero += out.iter().filter(|&&v| v == 0).count() as u64;
        out_sq += out.iter().map(|&v| (v as f64).powi(2)).sum::<f64>();
        for (t, s) in total.iter_mut().zip(&stats) {
            t.act_values += s.act_values;
            t.act_clipped += s.act_clipped;
            t.act_zero += s.act_zero;
            t.residual_sum_sq += s.residual_sum_sq;
            t.residual_values += s.residual_values;
            t.residual_clipped += s.residual_clipped;
        }
    }
    eprintln!("{spec:?} over {nonces} nonces");
    eprintln!("layer | int8 clipped | int8 zero | residual rms | residual clipped");
    for (l, t) in total.iter().enumerate() {
        let clipped = t.act_clipped as f64 / t.act_values as f64;
        let zero = t.act_zero as f64 / t.act_values as f64;
        let rms = (t.residual_sum_sq / t.residual_values as f64).sqrt();
        let rclip = t.residual_clipped as f64 / t.residual_values as f64;
        eprintln!("{l:5} | {:11.4}% | {:8.2}% | {rms:12.1} | {:15.5}%", clipped * 100.0, zero * 100.0, rclip * 100.0);
        assert!(clipped < 0.01, "layer {l}: {:.3}% of int8 activations saturate", clipped * 100.0);
        assert!(zero < 0.35, "layer {l}: {:.1}% of int8 activations are zero", zero * 100.0);
        assert!((100.0..8000.0).contains(&rms), "layer {l}: residual rms {rms}");
        assert!(rclip < 1e-4, "layer {l}: residual saturates");
    }
    let n_out = (nonces * spec.d_model as u64) as f64;
    let out_rms = (out_sq / n_out).sqrt();
    eprintln!(
        "output: rms {out_rms:.1}, clipped {:.4}%, zero {:.2}%",
        out_clipped as f64 / n_out * 100.0,
        out_zero as f64 / n_out * 100.0
    );
    assert!((24.0..40.0).contains(&out_rms));
    assert!((out_clipped as f64) / n_out < 0.01);
}

#[test]
fn devnet_activations_neither_vanish_nor_saturate() {
    activations_are_well_scaled(ModelSpec::DEVNET, 500);
}

#[test]
fn mainnet_activations_neither_vanish_nor_saturate() {
    activations_are_well_scaled(ModelSpec::MAINNET, 100);
}
