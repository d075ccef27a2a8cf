//! The model on the batched Q8_0 matmul computes candle's numbers: the same logits,
//! bit for bit, alone and in a batch, as the model on candle's matmul (where the
//! batched kernel reproduces candle's arithmetic, i.e. on x86-64). The reference
//! is candle's Q8_0 vector dot product: on CPUs with AVX-512 VNNI or AVX-VNNI
//! candle would send the MLP's down projection through its repacked kernel
//! (activations quantised per 256 values, other numbers), so this test turns that
//! path off with candle's own switch.

mod common;

use candle_core::quantized::gguf_file;
use tpow_chat::model::{KvCache, Matmul, Model, SeqInput, WeightFormat};
use tpow_chat::sampling::argmax;

fn load(matmul: Matmul) -> Model {
    let mut file = std::fs::File::open(common::model_path()).expect("the model opens");
    let mut reader = std::io::BufReader::new(&mut file);
    let ct = gguf_file::Content::read(&mut reader).expect("a GGUF file");
    Model::load_with(&ct, &mut reader, WeightFormat::Q8_0, matmul).expect("the model loads")
}

/// Greedy decoding of `steps` tokens after each prompt, all prompts as one batch
/// (prompts in one step, then one decode step per token); every logit vector.
fn run(model: &Model, prompts: &[Vec<u32>], steps: usize) -> Vec<Vec<Vec<f32>>> {
    let mut caches: Vec<KvCache> = prompts.iter().map(|_| KvCache::with_capacity(&model.config, 128)).collect();
    let mut logits: Vec<Vec<Vec<f32>>> = vec![Vec::new(); prompts.len()];
    let mut inputs: Vec<SeqInput<'_>> = caches
        .iter_mut()
        .zip(prompts)
        .map(|(cache, p)| SeqInput { cache, tokens: p.as_slice(), logits: true })
        .collect();
    let out = model.forward_batch(&mut inputs).expect("prefill");
    drop(inputs);
    for (l, o) in logits.iter_mut().zip(out) {
        l.push(o.expect("logits"));
    }
    for _ in 0..steps {
        let next: Vec<[u32; 1]> = logits.iter().map(|l| [argmax(l.last().expect("logits"))]).collect();
        let mut inputs: Vec<SeqInput<'_>> = caches
            .iter_mut()
            .zip(&next)
            .map(|(cache, t)| SeqInput { cache, tokens: t.as_slice(), logits: true })
            .collect();
        let out = model.forward_batch(&mut inputs).expect("decode");
        for (l, o) in logits.iter_mut().zip(out) {
            l.push(o.expect("logits"));
        }
    }
    logits
}

fn bits(v: &[Vec<f32>]) -> Vec<Vec<u32>> {
    v.iter().map(|l| l.iter().map(|x| x.to_bits()).collect()).collect()
}

#[test]
fn batched_matmul_gives_candles_logits_alone_and_batched() {
    // SAFETY: the only test of this binary, set before any thread of it (or candle's
    // pool) starts and before candle reads the variable (once, at its first matmul).
    unsafe { std::env::set_var("MISTRALRS_FORCE_AVX2", "1") };
    let candle = load(Matmul::Candle);
    let batched = load(Matmul::Batched);
    // Token ids of ordinary text, of different lengths.
    let prompts: Vec<Vec<u32>> = [9usize, 23, 4, 40]
        .iter()
        .enumerate()
        .map(|(i, &len)| (0..len).map(|j| 500 + ((i * 131 + j * 17) % 3000) as u32).collect())
        .collect();
    let steps = 12;
    let together = run(&batched, &prompts, steps);
    for (i, p) in prompts.iter().enumerate() {
        let alone = run(&batched, std::slice::from_ref(p), steps).remove(0);
        assert!(bits(&alone) == bits(&together[i]), "prompt {i}: batched logits differ from its logits alone");
        // Where the kernel reproduces candle's arithmetic (x86-64) the model uses it;
        // elsewhere the model keeps candle's matmul: the same logits either way.
        let reference = run(&candle, std::slice::from_ref(p), steps).remove(0);
        assert!(bits(&alone) == bits(&reference), "prompt {i}: logits differ from candle's matmul");
    }
}
