//! Choosing the next token: greedy at temperature 0, else temperature and nucleus
//! (top-p) sampling driven by a seeded generator, so that a seed replays a text.

/// SplitMix64: small, fast, and the same stream on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// The sampler of one generation.
pub struct Sampler {
    temperature: f32,
    top_p: f32,
    rng: Rng,
    /// Scratch: (probability, token) pairs.
    probs: Vec<(f32, u32)>,
}

/// Index of the largest logit (the lowest index on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best as u32
}

/// Probability (relative to the most likely token's 1.0) below which a token is
/// first assumed to be outside the nucleus. Ranking a vocabulary of 49,152 tokens
/// fully cost about 3 ms per token and stream; the tokens above the floor are
/// usually a few hundred.
const NUCLEUS_FLOOR: f32 = 1e-4;

/// Moves the tokens with probability at least `floor` to the front, ranks them (most
/// probable first, lower id on ties) and returns how many of them reach `target`
/// mass, or `None` if all of them together do not. The tokens at or above a floor
/// are a prefix of the full ranking, so the count, the order of that prefix and the
/// sums taken over it are a full sort's: a seed draws the same text as before.
fn nucleus(probs: &mut [(f32, u32)], target: f32, floor: f32) -> Option<usize> {
    let mut kept = 0;
    for i in 0..probs.len() {
        // A NaN stays in (and makes the target NaN, so the caller ranks
        // everything, as before).
        if probs[i].0 >= floor || probs[i].0.is_nan() {
            probs.swap(i, kept);
            kept += 1;
        }
    }
    let head = &mut probs[..kept];
    head.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut acc = 0f32;
    for (k, &(p, _)) in head.iter().enumerate() {
        acc += p;
        if acc >= target {
            return Some(k + 1);
        }
    }
    None
}

impl Sampler {
    pub fn new(temperature: f32, top_p: f32, seed: u64) -> Sampler {
        Sampler { temperature, top_p, rng: Rng::new(seed), probs: Vec::new() }
    }

    /// Picks the next token from the logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.temperature <= 0.0 {
            return argmax(logits);
        }
        let inv_t = 1.0 / self.temperature;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        self.probs.clear();
        let mut sum = 0f32;
        for (i, &l) in logits.iter().enumerate() {
            let p = ((l - max) * inv_t).exp();
            sum += p;
            self.probs.push((p, i as u32));
        }
        let mut total = sum;
        let mut n = self.probs.len();
        if self.top_p < 1.0 {
            // Most probable first; keep the smallest set whose mass reaches top_p.
            let target = self.top_p * sum;
            n = match nucleus(&mut self.probs, target, NUCLEUS_FLOOR) {
                Some(n) => n,
                // The likely tokens hold too little mass: rank them all.
                None => nucleus(&mut self.probs, target, f32::NEG_INFINITY).unwrap_or(self.probs.len()),
            };
            total = self.probs[..n].iter().map(|x| x.0).sum();
        }
        let mut r = self.rng.next_f64() as f32 * total;
        for &(p, id) in &self.probs[..n] {
            if r < p {
                return id;
            }
            r -= p;
        }
        self.probs[n - 1].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_argmax() {
        let mut s = Sampler::new(0.0, 1.0, 1);
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0]), 1);
    }

    #[test]
    fn tiny_top_p_is_greedy() {
        let mut s = Sampler::new(1.0, 1e-6, 7);
        for _ in 0..20 {
            assert_eq!(s.sample(&[0.1, 2.0, 1.9, -1.0]), 1);
        }
    }

    #[test]
    fn same_seed_same_draws() {
        let logits: Vec<f32> = (0..100).map(|i| (i as f32 * 0.37).sin()).collect();
        let draw = |seed| {
            let mut s = Sampler::new(0.8, 0.95, seed);
            (0..50).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    /// The sampler before the floor: every token ranked on every draw.
    fn full_sort_sample(temperature: f32, top_p: f32, rng: &mut Rng, logits: &[f32]) -> u32 {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut probs: Vec<(f32, u32)> =
            logits.iter().enumerate().map(|(i, &l)| (((l - max) * (1.0 / temperature)).exp(), i as u32)).collect();
        let sum: f32 = probs.iter().map(|x| x.0).sum();
        probs.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let (target, mut acc, mut n) = (top_p * sum, 0f32, probs.len());
        for (k, &(p, _)) in probs.iter().enumerate() {
            acc += p;
            if acc >= target {
                n = k + 1;
                break;
            }
        }
        let total: f32 = probs[..n].iter().map(|x| x.0).sum();
        let mut r = rng.next_f64() as f32 * total;
        for &(p, id) in &probs[..n] {
            if r < p {
                return id;
            }
            r -= p;
        }
        probs[n - 1].1
    }

    /// Peaked and flat distributions, ties, a vocabulary the size of SmolLM2's, and a
    /// long tail below the floor that holds most of the mass (the fallback): the
    /// same draws as ranking every token.
    #[test]
    fn the_floor_draws_what_a_full_sort_draws() {
        let mut gen = Rng::new(11);
        let mut cases: Vec<Vec<f32>> = [0.01f32, 0.5, 3.0, 12.0, 40.0]
            .into_iter()
            .enumerate()
            .map(|(case, spread)| {
                let vocab = if case == 3 { 49_152 } else { 2_000 };
                (0..vocab).map(|i| if i % 97 == 0 { spread } else { (gen.next_f64() as f32 - 0.5) * spread }).collect()
            })
            .collect();
        // p = 5e-5 relative to the top token for 49,151 tokens: 2.5 times its mass.
        cases.push((0..49_152).map(|i| if i == 5 { 0.0 } else { (5e-5f32).ln() }).collect());
        let tail = cases.last().cloned().unwrap_or_default();
        let (mut probe, target) = (Vec::new(), 0.95 * (1.0 + 49_151.0 * 5e-5));
        probe.extend(tail.iter().enumerate().map(|(i, &l)| (l.exp(), i as u32)));
        assert_eq!(nucleus(&mut probe, target, NUCLEUS_FLOOR), None, "the tail case must take the fallback");
        for (case, logits) in cases.iter().enumerate() {
            for (temperature, top_p) in [(0.2, 0.9), (0.8, 0.95), (1.0, 0.5), (1.5, 0.999)] {
                let seed = gen.next_u64();
                let mut sampler = Sampler::new(temperature, top_p, seed);
                let mut reference = Rng::new(seed);
                for draw in 0..40 {
                    assert_eq!(
                        sampler.sample(logits),
                        full_sort_sample(temperature, top_p, &mut reference, logits),
                        "case {case}, temperature {temperature}, top_p {top_p}, draw {draw}"
                    );
                }
            }
        }
    }
}
