//! Which engine a verifier keeps when it has both WebGPU and a CPU engine.
//!
//! The fastest exact engine depends on the device, not on the code: a real GPU beats
//! the simd128 CPU kernel, while a software WebGPU adapter (SwiftShader, which
//! headless Chromium and GPU-less machines expose) is 30-50x slower than it. Adapter
//! names do not say which (browsers may hide them), so the client races: the first
//! headers run on both engines, the digests must agree (the CPU is the reference, so
//! a disagreeing GPU is dropped), and the faster engine is kept. The first round pays
//! one-time costs (shader compilation, worker start-up) and is not counted.
//!
//! Pure bookkeeping: the platform runs the passes and reports their digests and
//! times here.

use crate::client::Backend;

/// Passes run on both engines before the choice (the first one is not timed).
pub const RACE_ROUNDS: u32 = 3;

/// What one raced pass decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaceOutcome {
    /// More rounds to go.
    Racing,
    /// The race is over: this engine runs every further pass.
    Chosen(Backend),
    /// WebGPU's digest differed from the CPU's: the GPU is wrong (driver bug or a
    /// lost device) and is not used again.
    GpuDisagrees,
}

/// One engine race: a CPU engine against WebGPU.
#[derive(Clone, Debug)]
pub struct EngineRace {
    cpu: Backend,
    rounds: u32,
    gpu_ms: f64,
    cpu_ms: f64,
    chosen: Option<Backend>,
}

impl EngineRace {
    /// A race of WebGPU against `cpu` (the worker or this thread).
    pub fn new(cpu: Backend) -> Self {
        EngineRace { cpu, rounds: 0, gpu_ms: 0.0, cpu_ms: 0.0, chosen: None }
    }

    /// The engine kept, once the race is over.
    pub fn chosen(&self) -> Option<Backend> {
        self.chosen
    }

    /// Timed milliseconds so far: (WebGPU, CPU), summed over the counted rounds.
    pub fn timings(&self) -> (f64, f64) {
        (self.gpu_ms, self.cpu_ms)
    }

    /// Records one pass run on both engines: each side's digest and milliseconds.
    pub fn record(&mut self, gpu: ([u8; 32], f64), cpu: ([u8; 32], f64)) -> RaceOutcome {
        if let Some(b) = self.chosen {
            return RaceOutcome::Chosen(b);
        }
        if gpu.0 != cpu.0 {
            self.chosen = Some(self.cpu);
            return RaceOutcome::GpuDisagrees;
        }
        self.rounds += 1;
        if self.rounds > 1 {
            // Negative or NaN times (a clock that went backwards) count as zero.
            self.gpu_ms += gpu.1.max(0.0);
            self.cpu_ms += cpu.1.max(0.0);
        }
        if self.rounds < RACE_ROUNDS {
            return RaceOutcome::Racing;
        }
        // Ties go to the CPU: it is the reference and needs no adapter.
        let b = if self.gpu_ms < self.cpu_ms { Backend::WebGpu } else { self.cpu };
        self.chosen = Some(b);
        RaceOutcome::Chosen(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: [u8; 32] = [7; 32];

    #[test]
    fn a_slow_software_adapter_loses_to_the_cpu() {
        let mut r = EngineRace::new(Backend::CpuWorker);
        // The first round (shader compilation) is not counted, however slow the CPU was.
        assert_eq!(r.record((D, 2_000.0), (D, 9_000.0)), RaceOutcome::Racing);
        assert_eq!(r.record((D, 700.0), (D, 22.0)), RaceOutcome::Racing);
        assert_eq!(r.chosen(), None);
        assert_eq!(r.record((D, 690.0), (D, 21.0)), RaceOutcome::Chosen(Backend::CpuWorker));
        assert_eq!(r.chosen(), Some(Backend::CpuWorker));
        assert_eq!(r.timings(), (1_390.0, 43.0));
        // Decided: later reports change nothing.
        assert_eq!(r.record((D, 1.0), (D, 500.0)), RaceOutcome::Chosen(Backend::CpuWorker));
    }

    #[test]
    fn a_real_gpu_wins() {
        let mut r = EngineRace::new(Backend::CpuWasm);
        for _ in 1..RACE_ROUNDS {
            assert_eq!(r.record((D, 3.0), (D, 20.0)), RaceOutcome::Racing);
        }
        assert_eq!(r.record((D, 3.0), (D, 20.0)), RaceOutcome::Chosen(Backend::WebGpu));
    }

    #[test]
    fn a_disagreeing_gpu_is_dropped_at_once() {
        let mut r = EngineRace::new(Backend::CpuWasm);
        assert_eq!(r.record((D, 3.0), (D, 20.0)), RaceOutcome::Racing);
        assert_eq!(r.record(([8; 32], 1.0), (D, 20.0)), RaceOutcome::GpuDisagrees);
        assert_eq!(r.chosen(), Some(Backend::CpuWasm));
        // Even a faster GPU stays dropped.
        assert_eq!(r.record((D, 0.1), (D, 20.0)), RaceOutcome::Chosen(Backend::CpuWasm));
    }

    #[test]
    fn ties_and_bad_clocks_go_to_the_cpu() {
        let mut r = EngineRace::new(Backend::CpuWorker);
        r.record((D, 5.0), (D, 5.0));
        r.record((D, -3.0), (D, f64::NAN));
        assert_eq!(r.record((D, 5.0), (D, 5.0)), RaceOutcome::Chosen(Backend::CpuWorker));
    }
}
