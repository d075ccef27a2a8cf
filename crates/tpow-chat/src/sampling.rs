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
            self.probs.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let target = self.top_p * sum;
            let mut acc = 0f32;
            for (k, &(p, _)) in self.probs.iter().enumerate() {
                acc += p;
                if acc >= target {
                    n = k + 1;
                    break;
                }
            }
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
}
