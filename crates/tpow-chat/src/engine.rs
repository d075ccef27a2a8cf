//! The worker thread: continuous batching over a bounded queue.
//!
//! Every step runs all active sequences as one batch ([`Model::forward_batch`]):
//! each decoding sequence brings its last token, and prompts run in aligned chunks
//! of [`PREFILL_CHUNK`] tokens, at most [`PREFILL_TOKENS_PER_STEP`] per step, so a
//! long prompt delays the others by one chunk per step instead of stalling them
//! until it is done. A request joins at the step after it is queued (when the
//! batch has room) and leaves at once when it finishes or its `Generation` is
//! dropped. Each sequence keeps its own sampler, stop filter and UTF-8 state, and
//! its numbers do not depend on the rest of the batch, so a seeded or greedy
//! generation gives the same text alone or among others.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::mpsc;

use crate::model::{KvCache, Model, SeqInput};
use crate::sampling::Sampler;
use crate::tokenizer::{Tokenizer, Utf8Stream};
use crate::{EngineEvent, Event, FinishReason, GenerateParams, Usage};

/// Prompt tokens run through the model in one forward pass (bounds the memory of
/// the attention scores). Chunks start at multiples of it, so a position's keys and
/// values are always computed the same way (prefix reuse and batching keep
/// generations reproducible).
pub(crate) const PREFILL_CHUNK: usize = 256;
/// Prompt tokens one step may run, in whole chunks (at least one chunk).
pub(crate) const PREFILL_TOKENS_PER_STEP: usize = PREFILL_CHUNK;

/// What a queued or running request holds of the engine: one unit of demand and
/// its KV-cache reservation, given back when the job is dropped, wherever that is
/// (left the queue, finished, cancelled, failed, engine stopped).
pub(crate) struct Hold {
    pub demand: Arc<AtomicUsize>,
    pub kv_reserved: Arc<AtomicUsize>,
    pub kv_bytes: usize,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.demand.fetch_sub(1, Ordering::SeqCst);
        self.kv_reserved.fetch_sub(self.kv_bytes, Ordering::SeqCst);
    }
}

pub(crate) struct Job {
    pub tokens: Vec<u32>,
    /// `params.max_tokens`, resolved.
    pub max_tokens: u32,
    pub params: GenerateParams,
    pub events: mpsc::Sender<Event>,
    pub cancel: Arc<AtomicBool>,
    /// Held for its drop.
    pub _hold: Hold,
}

impl Job {
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed) || self.events.is_closed()
    }
}

pub(crate) struct QueueState {
    pub jobs: VecDeque<Job>,
    pub stopped: bool,
    /// Sequences in the running batch (kept by the worker).
    pub active: usize,
}

/// Counters the worker keeps for [`crate::Engine::stats`].
#[derive(Default)]
pub(crate) struct Counters {
    pub steps: AtomicU64,
    pub cancelled: AtomicU64,
    pub cancelled_tokens: AtomicU64,
    /// Bytes of KV cache allocated (running sequences and the retained prefix).
    pub kv_allocated: AtomicUsize,
}

pub(crate) struct Shared {
    pub queue: Mutex<QueueState>,
    pub wake: Condvar,
    /// Queued + running requests.
    pub demand: Arc<AtomicUsize>,
    /// KV-cache bytes reserved by queued and running requests.
    pub kv_reserved: Arc<AtomicUsize>,
    pub counters: Counters,
    pub hook: Option<crate::EngineHook>,
}

impl Shared {
    /// Drops queued jobs whose `Generation` is gone; the caller holds the lock.
    pub fn purge_cancelled(&self, state: &mut QueueState) {
        state.jobs.retain(|j| !j.cancel.load(Ordering::Relaxed));
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn report(&self, ev: EngineEvent) {
        if let Some(h) = &self.hook {
            h(&ev);
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

/// One running request.
struct Seq {
    job: Job,
    cache: KvCache,
    /// Prompt tokens in the cache.
    fed: usize,
    /// Leading cached positions computed as whole prompt chunks (reusable).
    reusable: usize,
    /// The sampled token to run next (decoding); None while prefilling.
    next: Option<u32>,
    sampler: Sampler,
    utf8: Utf8Stream,
    stops: StopFilter,
    completion: u32,
}

/// The cache of a finished request's whole prompt chunks, kept for the next
/// request that starts with the same tokens (a conversation's earlier turns).
struct Retained {
    tokens: Vec<u32>,
    cache: KvCache,
}

/// The worker's state.
pub(crate) struct Worker {
    pub model: Model,
    pub tokenizer: Arc<Tokenizer>,
    pub shared: Arc<Shared>,
    /// Most sequences per step.
    pub max_batch: usize,
    /// The KV-cache budget in bytes.
    pub kv_budget: usize,
    retained: Option<Retained>,
    active: Vec<Seq>,
}

/// How a sequence left the batch.
enum Leave {
    Finished,
    Cancelled,
}

impl Worker {
    pub fn new(
        model: Model,
        tokenizer: Arc<Tokenizer>,
        shared: Arc<Shared>,
        max_batch: usize,
        kv_budget: usize,
    ) -> Worker {
        Worker { model, tokenizer, shared, max_batch: max_batch.max(1), kv_budget, retained: None, active: Vec::new() }
    }

    pub fn run(mut self) {
        loop {
            // Admit queued jobs into the batch, or sleep until there is work.
            let admitted: Vec<Job> = {
                let mut state = self.shared.lock();
                loop {
                    if state.stopped {
                        for job in state.jobs.drain(..) {
                            let _ = job.events.try_send(Event::Error("the engine has stopped".into()));
                        }
                        for seq in self.active.drain(..) {
                            let _ = seq.job.events.try_send(Event::Error("the engine has stopped".into()));
                        }
                        state.active = 0;
                        return;
                    }
                    let mut taken = Vec::new();
                    while self.active.len() + taken.len() < self.max_batch {
                        match state.jobs.pop_front() {
                            Some(job) if job.cancelled() => drop(job),
                            Some(job) => taken.push(job),
                            None => break,
                        }
                    }
                    if !self.active.is_empty() || !taken.is_empty() {
                        state.active = self.active.len() + taken.len();
                        break taken;
                    }
                    state.active = 0;
                    state = self.shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
                }
            };
            for job in admitted {
                let seq = self.start(job);
                self.active.push(seq);
            }
            self.step();
            self.publish();
        }
    }

    /// Keeps the shared active count and allocated bytes current.
    fn publish(&mut self) {
        let allocated: usize = self.active.iter().map(|s| s.cache.capacity_bytes()).sum::<usize>()
            + self.retained.as_ref().map_or(0, |r| r.cache.capacity_bytes());
        self.shared.counters.kv_allocated.store(allocated, Ordering::Relaxed);
        self.shared.lock().active = self.active.len();
    }

    /// A job's sequence: its cache (the retained prefix when it shares one, else
    /// fresh), sized to its reservation: prompt plus `max_tokens`.
    fn start(&mut self, job: Job) -> Seq {
        let cfg = &self.model.config;
        let prompt = &job.tokens;
        let positions = (prompt.len() + job.max_tokens as usize).min(cfg.context_length);
        let mut reuse = 0;
        if let Some(r) = &self.retained {
            let common = r.tokens.iter().zip(prompt.iter()).take_while(|(a, b)| a == b).count();
            // At least one prompt token must run to produce logits.
            reuse = common.min(prompt.len().saturating_sub(1)) / PREFILL_CHUNK * PREFILL_CHUNK;
        }
        let cache = match self.retained.take() {
            Some(mut r) if reuse > 0 => {
                r.cache.truncate(reuse, cfg);
                r.cache.set_capacity(positions, cfg);
                r.cache
            }
            other => {
                // Not reusable: keep it only while the budget has room for it beside
                // every reservation (its memory is allocated; theirs may soon be).
                self.retained = other.filter(|r| {
                    self.shared.kv_reserved.load(Ordering::SeqCst) + r.cache.capacity_bytes() <= self.kv_budget
                });
                KvCache::with_capacity(cfg, positions)
            }
        };
        let p = &job.params;
        Seq {
            sampler: Sampler::new(p.temperature, p.top_p, p.seed),
            stops: StopFilter::new(p.stop.clone()),
            utf8: Utf8Stream::default(),
            job,
            cache,
            fed: reuse,
            reusable: reuse,
            next: None,
            completion: 0,
        }
    }

    /// One forward pass of the batch, then sampling for every sequence that got logits.
    fn step(&mut self) {
        // Cancelled sequences leave before any work is done for them.
        let mut i = 0;
        while i < self.active.len() {
            if self.active[i].job.cancelled() {
                let seq = self.active.swap_remove(i);
                self.leave(seq, Leave::Cancelled);
            } else {
                i += 1;
            }
        }
        if self.active.is_empty() {
            return;
        }
        // Decoding sequences first (one block of rows), then prompt chunks in
        // arrival order within the step's prefill budget.
        self.active.sort_by_key(|s| s.next.is_none());
        let mut plan: Vec<(usize, usize, usize)> = Vec::new(); // (seq, from, to) of the prompt
        let mut prefill = 0;
        for (i, s) in self.active.iter().enumerate() {
            if s.next.is_some() {
                continue;
            }
            let to = ((s.fed / PREFILL_CHUNK + 1) * PREFILL_CHUNK).min(s.job.tokens.len());
            let n = to - s.fed;
            if prefill > 0 && prefill + n > PREFILL_TOKENS_PER_STEP {
                break;
            }
            prefill += n;
            plan.push((i, s.fed, to));
        }
        let n_dec = self.active.iter().take_while(|s| s.next.is_some()).count();
        let decode_tokens: Vec<[u32; 1]> = self.active[..n_dec].iter().map(|s| [s.next.unwrap_or(0)]).collect();
        let mut in_step = vec![false; self.active.len()];
        let result = {
            let mut planned = plan.iter().peekable();
            let mut inputs = Vec::with_capacity(n_dec + plan.len());
            for (i, s) in self.active.iter_mut().enumerate() {
                if i < n_dec {
                    in_step[i] = true;
                    inputs.push(SeqInput { cache: &mut s.cache, tokens: &decode_tokens[i], logits: true });
                } else if let Some(&(_, from, to)) = planned.next_if(|p| p.0 == i) {
                    in_step[i] = true;
                    let last = to == s.job.tokens.len();
                    inputs.push(SeqInput { cache: &mut s.cache, tokens: &s.job.tokens[from..to], logits: last });
                }
            }
            self.model.forward_batch(&mut inputs)
        };
        self.shared.counters.steps.fetch_add(1, Ordering::Relaxed);
        self.shared.report(EngineEvent::Step {
            sequences: n_dec + plan.len(),
            decode: n_dec,
            prefill_tokens: prefill,
            kv_reserved_bytes: self.shared.kv_reserved.load(Ordering::Relaxed),
            kv_allocated_bytes: self.shared.counters.kv_allocated.load(Ordering::Relaxed),
        });
        let logits = match result {
            Ok(l) => l,
            Err(e) => {
                // Their caches may be half-written: every sequence of the step fails.
                let mut k = 0;
                self.active.retain(|s| {
                    let keep = !in_step[k];
                    k += 1;
                    if !keep {
                        let _ = s.job.events.try_send(Event::Error(format!("generation failed: {e}")));
                    }
                    keep
                });
                return;
            }
        };
        // Prompt progress.
        for &(i, _, to) in &plan {
            let s = &mut self.active[i];
            s.fed = to;
            if to % PREFILL_CHUNK == 0 {
                s.reusable = to;
            }
        }
        // Sample: decoding sequences and those whose prompt just completed.
        let stepped = (0..self.active.len()).filter(|&i| in_step[i]);
        let draws: Vec<(usize, Vec<f32>)> = stepped.zip(logits).filter_map(|(i, l)| Some((i, l?))).collect();
        let tokens = draw_tokens(&mut self.active, &draws);
        let mut done = Vec::new();
        for (&(i, _), token) in draws.iter().zip(tokens) {
            if let Some(leave) = self.emit(i, token) {
                done.push((i, leave));
            }
        }
        for (i, leave) in done.into_iter().rev() {
            let seq = self.active.remove(i);
            self.leave(seq, leave);
        }
    }

    /// Emits the text of a sequence's next token; `Some` when the sequence ends.
    fn emit(&mut self, i: usize, token: u32) -> Option<Leave> {
        let ctx = self.model.config.context_length;
        let tok = &self.tokenizer;
        let s = &mut self.active[i];
        let send = |job: &Job, ev: Event| -> bool { job.events.try_send(ev).is_ok() };
        let finish = if token == tok.eos_id || tok.is_control(token) {
            FinishReason::Stop
        } else {
            s.completion += 1;
            let text = s.utf8.push(tok.token_bytes(token));
            let (out, hit) = s.stops.push(&text);
            if !out.is_empty() && !send(&s.job, Event::Token(out)) {
                return Some(Leave::Cancelled);
            }
            if hit {
                let usage = Usage { prompt_tokens: s.job.tokens.len() as u32, completion_tokens: s.completion };
                send(&s.job, Event::Done { finish: FinishReason::Stop, usage });
                return Some(Leave::Finished);
            }
            if s.completion < s.job.max_tokens && s.cache.len() + 1 < ctx {
                s.next = Some(token);
                return None;
            }
            FinishReason::Length
        };
        // No stop string was hit: flush the text held back. Bytes of a character cut
        // off by the end of the generation are dropped (never half a character or
        // a replacement character).
        let out = s.stops.finish();
        if !out.is_empty() && !send(&s.job, Event::Token(out)) {
            return Some(Leave::Cancelled);
        }
        let usage = Usage { prompt_tokens: s.job.tokens.len() as u32, completion_tokens: s.completion };
        send(&s.job, Event::Done { finish, usage });
        Some(Leave::Finished)
    }

    /// A sequence leaves the batch: its whole prompt chunks may be retained for
    /// the next request; dropping its job gives back its demand and reservation.
    fn leave(&mut self, mut seq: Seq, how: Leave) {
        if let Leave::Cancelled = how {
            let c = &self.shared.counters;
            c.cancelled.fetch_add(1, Ordering::Relaxed);
            c.cancelled_tokens.fetch_add(u64::from(seq.completion), Ordering::Relaxed);
            self.shared.report(EngineEvent::Cancelled {
                prompt_tokens: seq.job.tokens.len() as u32,
                completion_tokens: seq.completion,
            });
        }
        if seq.reusable >= PREFILL_CHUNK {
            let cfg = &self.model.config;
            seq.cache.truncate(seq.reusable, cfg);
            seq.cache.set_capacity(seq.reusable, cfg);
            let mut tokens = std::mem::take(&mut seq.job.tokens);
            tokens.truncate(seq.reusable);
            self.retained = Some(Retained { tokens, cache: seq.cache });
        }
    }
}

/// The next token of each `(index, logits)` in `draws` (indices into `active`,
/// increasing), each drawn by that sequence's own sampler, on candle's thread pool
/// (with 49,152 logits a draw is a few hundred microseconds, the same order as a
/// sequence's share of a batched step).
fn draw_tokens(active: &mut [Seq], draws: &[(usize, Vec<f32>)]) -> Vec<u32> {
    let mut jobs: Vec<(&mut Sampler, &[f32], u32)> = Vec::with_capacity(draws.len());
    let mut next = draws.iter().peekable();
    for (i, s) in active.iter_mut().enumerate() {
        if let Some((_, logits)) = next.next_if(|d| d.0 == i) {
            jobs.push((&mut s.sampler, logits.as_slice(), 0));
        }
    }
    crate::pool::for_each_mut(&mut jobs, |_, (sampler, logits, token)| *token = sampler.sample(logits));
    jobs.into_iter().map(|(_, _, token)| token).collect()
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
