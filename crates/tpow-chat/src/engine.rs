//! The worker thread: one generation at a time, from a bounded queue.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::mpsc;

use crate::model::Model;
use crate::sampling::Sampler;
use crate::tokenizer::{Tokenizer, Utf8Stream};
use crate::{Event, FinishReason, GenerateParams, Usage};

/// Prompt tokens run through the model in one forward pass (bounds the memory of
/// the attention scores and the time between cancellation checks).
pub(crate) const PREFILL_CHUNK: usize = 256;

pub(crate) struct Job {
    pub tokens: Vec<u32>,
    pub params: GenerateParams,
    pub events: mpsc::Sender<Event>,
    pub cancel: Arc<AtomicBool>,
}

pub(crate) struct QueueState {
    pub jobs: VecDeque<Job>,
    pub stopped: bool,
}

pub(crate) struct Shared {
    pub queue: Mutex<QueueState>,
    pub wake: Condvar,
    /// Queued + running requests.
    pub demand: Arc<AtomicUsize>,
}

impl Shared {
    /// Drops queued jobs whose `Generation` is gone; the caller holds the lock.
    pub fn purge_cancelled(&self, state: &mut QueueState) {
        let before = state.jobs.len();
        state.jobs.retain(|j| !j.cancel.load(Ordering::Relaxed));
        let removed = before - state.jobs.len();
        if removed > 0 {
            self.demand.fetch_sub(removed, Ordering::SeqCst);
        }
    }
}

/// Holds back generated text that could be the start of a stop string.
pub(crate) struct StopFilter {
    stops: Vec<String>,
    pending: String,
}

impl StopFilter {
    pub fn new(stops: Vec<String>) -> StopFilter {
        StopFilter { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), pending: String::new() }
    }

    /// Adds text; returns what can be emitted now and whether a stop string was hit
    /// (then the text before it is returned and generation ends).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        self.pending.push_str(text);
        // Earliest stop string occurrence.
        let hit = self.stops.iter().filter_map(|s| self.pending.find(s.as_str())).min();
        if let Some(pos) = hit {
            let out = self.pending[..pos].to_string();
            self.pending.clear();
            return (out, true);
        }
        // Longest suffix of pending that is a proper prefix of some stop string.
        let mut keep_from = self.pending.len();
        for (i, _) in self.pending.char_indices() {
            let suffix = &self.pending[i..];
            if self.stops.iter().any(|s| s.len() > suffix.len() && s.starts_with(suffix)) {
                keep_from = i;
                break;
            }
        }
        let out = self.pending[..keep_from].to_string();
        self.pending.drain(..keep_from);
        (out, false)
    }

    /// The held-back text at the end of a generation that hit no stop string.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

/// The worker's state across jobs.
pub(crate) struct Worker {
    pub model: Model,
    pub tokenizer: Arc<Tokenizer>,
    pub shared: Arc<Shared>,
    /// The tokens whose keys and values are in the model's cache.
    pub history: Vec<u32>,
    /// Leading positions of `history` computed as whole prompt chunks (reusable).
    pub reusable: usize,
}

enum Outcome {
    Finished,
    Cancelled,
}

impl Worker {
    pub fn run(mut self) {
        loop {
            let job = {
                let mut state = self.shared.queue.lock().unwrap();
                loop {
                    if state.stopped {
                        for job in state.jobs.drain(..) {
                            let _ = job.events.try_send(Event::Error("the engine has stopped".into()));
                        }
                        return;
                    }
                    if let Some(job) = state.jobs.pop_front() {
                        break job;
                    }
                    state = self.shared.wake.wait(state).unwrap();
                }
            };
            if !job.cancel.load(Ordering::Relaxed) {
                match self.generate(&job) {
                    Ok(Outcome::Finished) | Ok(Outcome::Cancelled) => {}
                    Err(e) => {
                        // The cache may be half-written: start the next job from scratch.
                        self.model.truncate_cache(0);
                        self.history.clear();
                        self.reusable = 0;
                        let _ = job.events.try_send(Event::Error(format!("generation failed: {e}")));
                    }
                }
            }
            self.shared.demand.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn stopped(&self) -> bool {
        // `try_lock`: never wait on a submitter here; a missed stop is seen next token.
        self.shared.queue.try_lock().map(|s| s.stopped).unwrap_or(false)
    }

    fn generate(&mut self, job: &Job) -> candle_core::Result<Outcome> {
        let prompt = &job.tokens;
        let ctx = self.model.config.context_length;
        // Reuse the cached prefix of an earlier prompt (a long conversation's earlier
        // turns). Prompts run in chunks aligned to multiples of PREFILL_CHUNK and only
        // whole chunks are reused, so a position's keys and values are always computed
        // the same way and a prompt gives bit-identical logits whatever ran before it
        // (greedy and seeded generations stay reproducible). At least one prompt
        // token must run to produce logits.
        let common = self.history[..self.reusable].iter().zip(prompt.iter()).take_while(|(a, b)| a == b).count();
        let reuse = common.min(prompt.len() - 1) / PREFILL_CHUNK * PREFILL_CHUNK;
        self.model.truncate_cache(reuse);
        self.history.truncate(reuse);
        self.reusable = reuse;
        let mut logits = Vec::new();
        for chunk in prompt[reuse..].chunks(PREFILL_CHUNK) {
            if job.cancel.load(Ordering::Relaxed) || self.stopped() {
                return Ok(Outcome::Cancelled);
            }
            logits = self.model.forward(chunk)?;
            self.history.extend_from_slice(chunk);
            if chunk.len() == PREFILL_CHUNK {
                self.reusable = self.history.len();
            }
        }

        let p = &job.params;
        let mut sampler = Sampler::new(p.temperature, p.top_p, p.seed);
        let mut utf8 = Utf8Stream::default();
        let mut stops = StopFilter::new(p.stop.clone());
        let mut completion = 0u32;
        let send = |ev: Event| -> bool { job.events.try_send(ev).is_ok() };
        let finish;
        loop {
            let token = sampler.sample(&logits);
            if token == self.tokenizer.eos_id || self.tokenizer.is_control(token) {
                finish = FinishReason::Stop;
                break;
            }
            completion += 1;
            let text = utf8.push(self.tokenizer.token_bytes(token));
            let (out, hit) = stops.push(&text);
            if !out.is_empty() && !send(Event::Token(out)) {
                return Ok(Outcome::Cancelled);
            }
            if hit {
                let usage = Usage { prompt_tokens: prompt.len() as u32, completion_tokens: completion };
                send(Event::Done { finish: FinishReason::Stop, usage });
                return Ok(Outcome::Finished);
            }
            if completion >= p.max_tokens || self.model.cached() + 1 >= ctx {
                finish = FinishReason::Length;
                break;
            }
            if job.cancel.load(Ordering::Relaxed) || self.stopped() {
                return Ok(Outcome::Cancelled);
            }
            logits = self.model.forward(&[token])?;
            self.history.push(token);
        }
        // No stop string was hit: flush the text held back. Bytes of a character cut
        // off by the end of the generation are dropped (never half a character or
        // a replacement character).
        drop(utf8);
        let out = stops.finish();
        if !out.is_empty() && !send(Event::Token(out)) {
            return Ok(Outcome::Cancelled);
        }
        send(Event::Done {
            finish,
            usage: Usage { prompt_tokens: prompt.len() as u32, completion_tokens: completion },
        });
        Ok(Outcome::Finished)
    }
}

#[cfg(test)]
mod tests {
    use super::StopFilter;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut f = StopFilter::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            let (o, hit) = f.push(p);
            out.push_str(&o);
            if hit {
                return (out, true);
            }
        }
        out.push_str(&f.finish());
        (out, false)
    }

    #[test]
    fn stop_across_pieces() {
        assert_eq!(run(&["END"], &["abc E", "N", "D tail"]), ("abc ".into(), true));
        assert_eq!(run(&["END"], &["abc E", "N", "x"]), ("abc ENx".into(), false));
        assert_eq!(run(&["\n\n"], &["a\n", "\nb"]), ("a".into(), true));
        assert_eq!(run(&["xyz", "b"], &["aab"]), ("aa".into(), true));
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
        assert_eq!(run(&[""], &["a", "b"]), ("ab".into(), false));
    }

    #[test]
    fn holds_back_only_possible_prefixes() {
        let mut f = StopFilter::new(vec!["é!".into()]);
        assert_eq!(f.push("caf"), ("caf".into(), false));
        assert_eq!(f.push("é"), ("".into(), false));
        assert_eq!(f.push("s"), ("és".into(), false));
    }
}
