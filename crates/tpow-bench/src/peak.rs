//! The machine's integer multiply-accumulate peak, measured rather than assumed.
//!
//! Twelve independent accumulator chains of one SIMD instruction keep every
//! execution port busy; the rate of multiply-accumulates they reach is the ceiling
//! any int8 kernel on this CPU can approach. Reported per instruction so that a
//! kernel can be judged against the instruction it actually uses.

use std::time::Instant;

/// A named microbenchmark returning the multiply-accumulates it performed.
type Kernel = (&'static str, fn() -> u64);

/// One measured instruction.
pub struct Peak {
    /// Instruction name.
    pub name: &'static str,
    /// Multiply-accumulates per second on one thread.
    pub one_thread: f64,
    /// Multiply-accumulates per second with every hardware thread running it.
    pub all_threads: f64,
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::hint::black_box;

    const ITERS: u64 = 20_000_000;

    macro_rules! chains {
        ($feature:literal, $name:ident, $ty:ty, $zero:expr, $seed:expr, $op:ident, $macs:expr) => {
            #[target_feature(enable = $feature)]
            unsafe fn $name() -> u64 {
                let b: $ty = black_box($seed);
                let mut acc: [$ty; 12] = [$zero; 12];
                for _ in 0..ITERS {
                    for c in acc.iter_mut() {
                        // The multiplier input is the accumulator itself: no
                        // loop-invariant product the compiler could hoist.
                        *c = $op(*c, *c, b);
                    }
                }
                black_box(acc);
                ITERS * 12 * $macs
            }
        };
    }

    #[inline(always)]
    unsafe fn maddubs_step(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi16(acc, _mm256_maddubs_epi16(a, b))
    }
    #[inline(always)]
    unsafe fn madd_step(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi32(acc, _mm256_madd_epi16(a, b))
    }
    #[inline(always)]
    unsafe fn dpbusd_step(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
        _mm512_dpbusd_epi32(acc, a, b)
    }

    chains!("avx2", maddubs, __m256i, _mm256_setzero_si256(), _mm256_set1_epi8(1), maddubs_step, 32);
    chains!("avx2", madd, __m256i, _mm256_setzero_si256(), _mm256_set1_epi16(1), madd_step, 16);
    chains!(
        "avx512f,avx512bw,avx512vnni",
        dpbusd,
        __m512i,
        _mm512_setzero_si512(),
        _mm512_set1_epi8(1),
        dpbusd_step,
        64
    );

    pub fn kernels() -> Vec<super::Kernel> {
        let mut v: Vec<super::Kernel> = Vec::new();
        if is_x86_feature_detected!("avx2") {
            v.push(("vpmaddubsw (u8 x i8 -> i16, saturating) + add", || unsafe { maddubs() }));
            v.push(("vpmaddwd (i16 x i16 -> i32, exact) + add", || unsafe { madd() }));
        }
        if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512bw") {
            v.push(("vpdpbusd zmm (u8 x i8 -> i32)", || unsafe { dpbusd() }));
        }
        v
    }
}

fn rate(threads: usize, f: fn() -> u64) -> f64 {
    let start = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads).map(|_| s.spawn(f)).collect();
        hs.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    total as f64 / start.elapsed().as_secs_f64()
}

/// Measures every SIMD integer multiply-accumulate instruction this CPU has.
pub fn measure() -> Vec<Peak> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    #[cfg(target_arch = "x86_64")]
    let kernels = x86::kernels();
    #[cfg(not(target_arch = "x86_64"))]
    let kernels: Vec<Kernel> = Vec::new();
    kernels.into_iter().map(|(name, f)| Peak { name, one_thread: rate(1, f), all_threads: rate(threads, f) }).collect()
}
