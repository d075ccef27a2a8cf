//! The batched Q8_0 matmul against candle's on SmolLM2-135M's shapes.
//!
//! `CANDLE_NUM_THREADS=1 cargo run --release -p tpow-chat --example qmatmul_bench`
//!
//! For each shape (k inputs -> n outputs) and number of rows m, the median over
//! `REPS` (default 7) samples of about 30M multiply-adds each of this thread's CPU time, as G multiply-adds per
//! second, for candle's `QMatMul` and for [`tpow_chat::qmatmul::Q8Matrix`] (the two
//! alternate call by call, so machine load hits both alike). CPU time rather than
//! wall time: the machine may be shared; at one thread every call runs here.
//! `BASELINE=avx2` puts the batched AVX2 kernel in candle's column (to measure
//! another kernel of this CPU against it).

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use tpow_chat::qmatmul::{Kernel, Q8Matrix};

fn cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let reps: usize = std::env::var("REPS").ok().and_then(|s| s.parse().ok()).unwrap_or(7);
    let dev = Device::Cpu;
    // (name, n, k): the fused q|k|v, attention output, fused gate|up, down, lm head.
    let shapes = [
        ("qkv", 960, 576),
        ("attn out", 576, 576),
        ("gate|up", 3072, 576),
        ("down", 576, 1536),
        ("lm head", 49152, 576),
    ];
    let avx2_baseline = std::env::var("BASELINE").is_ok_and(|b| b == "avx2");
    let base = if avx2_baseline { "AVX2 kernel" } else { "candle" };
    println!("kernel: {:?}", Kernel::detect());
    println!("| matrix | n x k | m | {base} (G MAC/s) | batched (G MAC/s) | speed-up | wall ms {base} / batched |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    for (name, n, k) in shapes {
        let w: Vec<f32> = (0..n * k).map(|_| rand() * 0.1).collect();
        let q = QTensor::quantize(&Tensor::from_vec(w, (n, k), &dev).unwrap(), GgmlDType::Q8_0).unwrap();
        let ours = Q8Matrix::from_qtensor(&q, Kernel::detect()).unwrap().unwrap();
        let avx2 = avx2_baseline.then(|| Q8Matrix::from_qtensor(&q, Kernel::Avx2).unwrap().unwrap());
        let theirs = QMatMul::from_qtensor(q).unwrap();
        for m in [1usize, 2, 4, 8, 16, 64] {
            if name == "lm head" && m > 16 {
                continue;
            }
            let x: Vec<f32> = (0..m * k).map(|_| rand()).collect();
            let xt = Tensor::from_slice(&x, (1, m, k), &dev).unwrap();
            let mut out = vec![0f32; m * n];
            // Calls per sample: about 30M multiply-adds each.
            let calls = (30_000_000 / (m * n * k)).max(1);
            let (mut c_cpu, mut o_cpu, mut c_wall, mut o_wall) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for _ in 0..reps {
                let (t, c) = (Instant::now(), cpu_ns());
                for _ in 0..calls {
                    if let Some(avx2) = &avx2 {
                        avx2.matmul(&x, &mut out);
                        std::hint::black_box(&out);
                    } else {
                        std::hint::black_box(theirs.forward(&xt).unwrap());
                    }
                }
                c_cpu.push((cpu_ns() - c) as f64 / calls as f64);
                c_wall.push(t.elapsed().as_secs_f64() / calls as f64);
                let (t, c) = (Instant::now(), cpu_ns());
                for _ in 0..calls {
                    ours.matmul(&x, &mut out);
                    std::hint::black_box(&out);
                }
                o_cpu.push((cpu_ns() - c) as f64 / calls as f64);
                o_wall.push(t.elapsed().as_secs_f64() / calls as f64);
            }
            let macs = (m * n * k) as f64;
            let (c, o) = (median(c_cpu), median(o_cpu));
            println!(
                "| {name} | {n} x {k} | {m} | {:.1} | {:.1} | {:.1}x | {:.2} / {:.2} |",
                macs / c,
                macs / o,
                c / o,
                median(c_wall) * 1e3,
                median(o_wall) * 1e3
            );
        }
    }
}
