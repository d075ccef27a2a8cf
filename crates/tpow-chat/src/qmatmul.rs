//! A batched Q8_0 matrix multiplication that reads each weight block once for all
//! the rows of a step, with the exact arithmetic of candle's own Q8_0 kernel.
//!
//! The Q8_0 format (GGML): a row of `k` weights is cut into blocks of 32; a block
//! is 34 bytes, a little-endian IEEE half `d` followed by 32 signed bytes `q`, and
//! stands for `d * q[i]`. candle multiplies `x · Wᵀ` by quantising each row of `x`
//! to Q8_0 too (`d = max|x| / 127`, `q = round(x / d)`) and, for every (row,
//! column) pair on its own, summing `d_w * d_x * Σ q_w q_x` over the blocks. That
//! walk reads the whole weight matrix through one dependency chain per output, so a
//! step of 8 sequences costs 8 single steps.
//!
//! Here the weights are repacked at load into tiles of [`COLS`] (or
//! [`WIDE_COLS`]) columns (one block of each column side by side, scales as
//! `f32`), and a tile's block is combined
//! with every row of the step while it is in registers and L1: a step reads the
//! weights once, whatever its number of rows, and many independent accumulators
//! keep the vector units busy. Each output is still accumulated block by block in
//! the same order, with the same operations, as candle's kernel for this CPU:
//!
//! - x86-64 with AVX2 and FMA (candle's `avx::vec_dot_q8_0_q8_0`): per block,
//!   `|w|` times `x` carrying `w`'s sign, pairs summed to 16 bits
//!   (`vpmaddubsw`), then to eight 32-bit lanes (`vpmaddwd`), converted to
//!   `f32` and added to an 8-lane accumulator with one FMA by `d_w * d_x`; the
//!   eight lanes are summed at the end in candle's order. With AVX-512 VNNI the
//!   same values come cheaper: the 16-column kernel keeps one
//!   column per 32-bit lane, so a `vpdpbusd` on the offset weights makes that
//!   four-product sum for 16 columns at once, and the lane's conversion and FMA
//!   are done for 16 columns by one instruction each (see [`Kernel::Avx512Vnni`]);
//! - otherwise (the portable kernel, candle's `vec_dot_unopt`): per block the
//!   exact integer sum, then `acc += sum as f32 * d_w * d_x` in that order.
//!
//! So every output is bit-identical to candle's for the same CPU, and a row's
//! results do not depend on the other rows of the batch. [`Kernel::detect`] picks
//! the kernel at run time; [`Kernel::matches_candle`] says whether this CPU is one
//! where candle itself runs the same arithmetic (x86-64; elsewhere candle has its
//! own NEON / WASM kernels with other summation orders, and the model keeps
//! candle's path there).

use candle_core::quantized::{GgmlDType, QTensor};
use half::f16;

/// Values per Q8_0 block.
pub const QK8_0: usize = 32;
/// Bytes of one Q8_0 block in a GGUF tensor.
const BLOCK_BYTES: usize = 2 + QK8_0;
/// Columns per weight tile of the 4-column kernels.
pub const COLS: usize = 4;
/// Columns per weight tile of [`Kernel::Avx512Vnni`] (one per 32-bit lane of a
/// 512-bit register).
pub const WIDE_COLS: usize = 16;
/// Rows combined with one weight tile at a time (the register tile).
const ROWS: usize = 8;
/// Rows per pass of [`Kernel::Avx512Vnni`]: eight accumulators a row fill 24 of
/// the 32 registers at three rows.
const WIDE_ROWS: usize = 3;

/// The inner kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Scalar code, the arithmetic of candle's generic Q8_0 dot product.
    Portable,
    /// x86-64 AVX2 + FMA, the arithmetic of candle's AVX2 Q8_0 dot product.
    Avx2,
    /// [`Kernel::Avx2`] with AVX-512 VNNI's `vpdpbusd` for the block's integer
    /// dot product: the same bits, one multiply fewer per 32 products.
    Avx2Vnni,
    /// AVX-512 VNNI on 16 columns at once: each 32-bit lane holds one column, so
    /// one `vpdpbusd` makes the same four-product sum that the AVX2 kernel keeps
    /// in one lane, for 16 columns; the weights are stored offset to unsigned
    /// bytes and a per-row correction restores the exact signed sum, so no sign
    /// instruction is needed. The same bits as [`Kernel::Avx2`].
    Avx512Vnni,
}

impl Kernel {
    /// Every kernel, slowest first.
    const ALL: [Kernel; 4] = [Kernel::Portable, Kernel::Avx2, Kernel::Avx2Vnni, Kernel::Avx512Vnni];

    /// The best kernel this CPU runs (detected once).
    pub fn detect() -> Kernel {
        static KERNEL: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *KERNEL.get_or_init(|| Kernel::ALL.into_iter().rev().find(|k| k.runs_here()).unwrap_or(Kernel::Portable))
    }

    /// Whether this CPU has what the kernel needs.
    pub fn runs_here(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
            match self {
                Kernel::Portable => true,
                Kernel::Avx2 => avx2,
                Kernel::Avx2Vnni => {
                    avx2 && std::is_x86_feature_detected!("avx512vnni") && std::is_x86_feature_detected!("avx512vl")
                }
                Kernel::Avx512Vnni => {
                    std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vnni")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Kernel::Portable
        }
    }

    /// Whether candle's own Q8_0 vector dot product on this CPU computes the same
    /// numbers as [`Kernel::detect`]'s kernel (true on x86-64: both pick AVX2 +
    /// FMA when present, else the generic code, and the VNNI kernels compute the
    /// AVX2 one's numbers). On CPUs with AVX-512 VNNI or AVX-VNNI candle sends
    /// some shapes (`k` a multiple of 256, `n` of 16) through another, repacked
    /// kernel that quantises activations per 256 values; the batched kernel keeps
    /// the AVX2 arithmetic for every shape, so a model's numbers are the same on
    /// every x86-64 CPU.
    pub fn matches_candle() -> bool {
        cfg!(target_arch = "x86_64")
    }

    /// The kernels this CPU can run (for tests).
    pub fn available() -> Vec<Kernel> {
        Kernel::ALL.into_iter().filter(|k| k.runs_here()).collect()
    }

    /// Columns per weight tile.
    fn cols(self) -> usize {
        if self == Kernel::Avx512Vnni {
            WIDE_COLS
        } else {
            COLS
        }
    }

    /// Rows per pass over a weight tile.
    fn rows(self) -> usize {
        if self == Kernel::Avx512Vnni {
            WIDE_ROWS
        } else {
            ROWS
        }
    }
}

/// A Q8_0 weight matrix of `n` output columns by `k` inputs (GGML's `[n][k]`
/// layout, i.e. the transposed operand of `x · Wᵀ`), repacked into tiles for one
/// kernel.
pub struct Q8Matrix {
    n: usize,
    k: usize,
    /// Blocks per column (`k / 32`).
    nb: usize,
    /// The kernel the tiles are laid out for.
    kernel: Kernel,
    /// The quants of `kernel.cols()` columns, block by block. 4-column kernels:
    /// `[tile][block][col][32]`. [`Kernel::Avx512Vnni`]: `[tile][block][group of
    /// 4][col][4]`, each quant offset by 128 (stored as `q ^ 0x80`, an unsigned
    /// byte). Columns past `n` (the last tile's padding) hold zero weights.
    qs: Vec<i8>,
    /// `[tile][block][col]`: the blocks' scales as `f32` (exact).
    d: Vec<f32>,
}

impl Q8Matrix {
    /// From the bytes of a GGML Q8_0 tensor of shape `[n][k]`, laid out for
    /// `kernel`.
    pub fn from_q8_0_bytes(data: &[u8], n: usize, k: usize, kernel: Kernel) -> candle_core::Result<Q8Matrix> {
        if k == 0 || !k.is_multiple_of(QK8_0) {
            candle_core::bail!("a Q8_0 row of {k} values is not whole blocks");
        }
        let nb = k / QK8_0;
        if data.len() != n * nb * BLOCK_BYTES {
            candle_core::bail!("{} bytes for a {n}x{k} Q8_0 matrix", data.len());
        }
        let cols = kernel.cols();
        let wide = kernel == Kernel::Avx512Vnni;
        let tiles = n.div_ceil(cols);
        // Padding columns: zero weights (0x80 once offset).
        let mut qs = vec![if wide { i8::MIN } else { 0 }; tiles * nb * cols * QK8_0];
        let mut d = vec![0f32; tiles * nb * cols];
        for col in 0..n {
            let (t, c) = (col / cols, col % cols);
            for b in 0..nb {
                let block = &data[(col * nb + b) * BLOCK_BYTES..][..BLOCK_BYTES];
                let at = (t * nb + b) * cols + c;
                d[at] = f16::from_le_bytes([block[0], block[1]]).to_f32();
                for (i, &byte) in block[2..].iter().enumerate() {
                    if wide {
                        qs[(t * nb + b) * cols * QK8_0 + (i / 4) * cols * 4 + c * 4 + i % 4] = (byte ^ 0x80) as i8;
                    } else {
                        qs[at * QK8_0 + i] = byte as i8;
                    }
                }
            }
        }
        Ok(Q8Matrix { n, k, nb, kernel, qs, d })
    }

    /// From a candle tensor, when it is a 2-D Q8_0 tensor (else None).
    pub fn from_qtensor(t: &QTensor, kernel: Kernel) -> candle_core::Result<Option<Q8Matrix>> {
        if t.dtype() != GgmlDType::Q8_0 {
            return Ok(None);
        }
        let (n, k) = t.shape().dims2()?;
        Ok(Some(Q8Matrix::from_q8_0_bytes(&t.data()?, n, k, kernel)?))
    }

    /// Output columns.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Inputs per row.
    pub fn k(&self) -> usize {
        self.k
    }

    /// `x · Wᵀ` for the `m = x.len() / k` rows of `x`, into `out` (`m * n`,
    /// row-major), on candle's thread pool.
    ///
    /// # Panics
    /// When `x` is not whole rows, `out` is not `m * n` long, or the matrix's
    /// kernel is not one this CPU runs.
    pub fn matmul(&self, x: &[f32], out: &mut [f32]) {
        let kernel = self.kernel;
        assert_eq!(x.len() % self.k, 0, "x is not whole rows of {}", self.k);
        let m = x.len() / self.k;
        assert_eq!(out.len(), m * self.n, "out is not {m}x{}", self.n);
        assert!(kernel.runs_here(), "{kernel:?} is not available on this CPU");
        if m == 0 || self.n == 0 {
            return;
        }
        let xq = QuantizedRows::new(x, self.k);
        let (tile_cols, step) = (kernel.cols(), kernel.rows());
        let tiles = self.n.div_ceil(tile_cols);
        let out_addr = out.as_mut_ptr() as usize;
        let work = |range: std::ops::Range<usize>| {
            let mut tile_out = [[0f32; WIDE_COLS]; ROWS];
            let mut scales = vec![0f32; self.nb * COLS * ROWS];
            for t in range {
                let mut r0 = 0;
                while r0 < m {
                    let rows = (m - r0).min(step);
                    self.tile(t, &xq, r0, rows, &mut scales, &mut tile_out);
                    let cols = (self.n - t * tile_cols).min(tile_cols);
                    for (r, vals) in tile_out[..rows].iter().enumerate() {
                        // SAFETY: `out` holds `m * n` f32 and outlives this call (the
                        // pool returns when every item is done); (r0 + r) < m and
                        // t * COLS + cols <= n, so the writes are in bounds; tile `t`
                        // is handled by exactly one work item, so no two threads write
                        // the same element and nothing reads `out` meanwhile.
                        unsafe {
                            let dst = (out_addr as *mut f32).add((r0 + r) * self.n + t * tile_cols);
                            std::ptr::copy_nonoverlapping(vals.as_ptr(), dst, cols);
                        }
                    }
                    r0 += rows;
                }
            }
        };
        if tiles * m * self.k < 1 << 16 {
            work(0..tiles); // too small to be worth waking the pool
        } else {
            candle_core::utils::barrier_pool().execute_chunked(tiles, work);
        }
    }

    /// One tile of columns against `rows` (1..=`kernel.rows()`) rows from `r0`
    /// (a multiple of `kernel.rows()`); `scales` is scratch space of
    /// `nb * COLS * ROWS` values.
    fn tile(
        &self,
        t: usize,
        xq: &QuantizedRows,
        r0: usize,
        rows: usize,
        scales: &mut [f32],
        out: &mut [[f32; WIDE_COLS]; ROWS],
    ) {
        let (nb, kernel) = (self.nb, self.kernel);
        let cols = kernel.cols();
        let wq = &self.qs[t * nb * cols * QK8_0..][..nb * cols * QK8_0];
        let wd = &self.d[t * nb * cols..][..nb * cols];
        match kernel {
            Kernel::Portable => portable_tile(wq, wd, xq, r0, rows, out),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 | Kernel::Avx2Vnni => {
                // SAFETY: `matmul` checked that this CPU has the kernel's
                // features (`Kernel::runs_here`); the slices hold `nb` blocks of every
                // row and column. At least four independent accumulators hide the
                // FMA's latency; at most eight leave room in the 16 ymm registers for
                // the operands, so no accumulator is spilled.
                macro_rules! by_rows {
                    ($tile:ident) => {
                        match rows {
                            1 => avx2::$tile::<4, 1>(wq, wd, xq, r0, scales, out),
                            2 => avx2::$tile::<2, 2>(wq, wd, xq, r0, scales, out),
                            3 => avx2::$tile::<2, 3>(wq, wd, xq, r0, scales, out),
                            4 => avx2::$tile::<2, 4>(wq, wd, xq, r0, scales, out),
                            5 => avx2::$tile::<1, 5>(wq, wd, xq, r0, scales, out),
                            6 => avx2::$tile::<1, 6>(wq, wd, xq, r0, scales, out),
                            7 => avx2::$tile::<1, 7>(wq, wd, xq, r0, scales, out),
                            _ => avx2::$tile::<1, 8>(wq, wd, xq, r0, scales, out),
                        }
                    };
                }
                unsafe {
                    if rows > 1 {
                        avx2::scale_products(wd, xq, r0, scales);
                    }
                    if kernel == Kernel::Avx2Vnni {
                        by_rows!(tile_vnni)
                    } else {
                        by_rows!(tile)
                    }
                }
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above (`Kernel::Avx512Vnni::runs_here`); the slices hold
            // `nb` blocks of the tile's 16 columns and of every row.
            Kernel::Avx512Vnni => unsafe {
                match rows {
                    1 => avx512::tile::<1>(wq, wd, xq, r0, out),
                    2 => avx512::tile::<2>(wq, wd, xq, r0, out),
                    _ => avx512::tile::<WIDE_ROWS>(wq, wd, xq, r0, out),
                }
            },
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx2 | Kernel::Avx2Vnni | Kernel::Avx512Vnni => {
                unreachable!("x86-64 kernels on another architecture")
            }
        }
    }
}

/// Rows of `x` quantised to Q8_0 exactly as candle quantises a matmul's input.
pub struct QuantizedRows {
    /// Blocks per row.
    nb: usize,
    /// Rows, rounded up to a multiple of [`ROWS`] (zero rows past the end).
    m_pad: usize,
    /// `[row][k]`.
    qs: Vec<i8>,
    /// `[row][block]`: the scale as stored (rounded to f16), as `f32`.
    d: Vec<f32>,
    /// `[block][m_pad]`: the same scales by block, so the scales of a tile's
    /// rows for one block are one vector load.
    d_by_block: Vec<f32>,
    /// `[row][k / 4]`: `-128` times the sum of each four quants, which turns
    /// `Σ (w + 128) x` (the offset weights of [`Kernel::Avx512Vnni`]) back into
    /// `Σ w x`.
    offsets: Vec<i32>,
}

impl QuantizedRows {
    /// Quantises the rows of `x` (each `k` long, `k` a multiple of 32).
    pub fn new(x: &[f32], k: usize) -> QuantizedRows {
        let nb = k / QK8_0;
        let blocks = x.len() / QK8_0;
        let mut qs = vec![0i8; blocks * QK8_0];
        let mut d = vec![0f32; blocks];
        let mut offsets = vec![0i32; blocks * QK8_0 / 4];
        let x = &x[..blocks * QK8_0];
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: this CPU has AVX2 (checked just above); the slices are `blocks`
            // blocks long.
            unsafe { avx2::quantize(x, &mut qs, &mut d, &mut offsets) };
        } else {
            quantize(x, &mut qs, &mut d, &mut offsets);
        }
        #[cfg(not(target_arch = "x86_64"))]
        quantize(x, &mut qs, &mut d, &mut offsets);
        let m = blocks.checked_div(nb).unwrap_or(0);
        let m_pad = m.next_multiple_of(ROWS);
        let mut d_by_block = vec![0f32; nb * m_pad];
        for (r, row) in d.chunks_exact(nb.max(1)).enumerate() {
            for (b, &v) in row.iter().enumerate() {
                d_by_block[b * m_pad + r] = v;
            }
        }
        QuantizedRows { nb, m_pad, qs, d, d_by_block, offsets }
    }

    fn row_qs(&self, r: usize) -> &[i8] {
        &self.qs[r * self.nb * QK8_0..][..self.nb * QK8_0]
    }

    fn row_d(&self, r: usize) -> &[f32] {
        &self.d[r * self.nb..][..self.nb]
    }
}

/// Quantises whole blocks of `x` as candle's `BlockQ8_0::from_float` does: the
/// scale maps the largest magnitude to 127, values are rounded half away from zero
/// with the unrounded scale, the scale is stored as f16. Also each four quants'
/// [`QuantizedRows::offsets`] entry.
fn quantize(x: &[f32], qs: &mut [i8], d: &mut [f32], offsets: &mut [i32]) {
    let blocks = x.chunks_exact(QK8_0).zip(qs.chunks_exact_mut(QK8_0));
    for ((xs, q), (d, off)) in blocks.zip(d.iter_mut().zip(offsets.chunks_exact_mut(QK8_0 / 4))) {
        let amax = xs.iter().fold(0f32, |a, &v| a.max(v.abs()));
        let scale = amax / 127.0;
        let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        for (q, &v) in q.iter_mut().zip(xs) {
            *q = round_to_i8(v * inv);
        }
        *d = f16::from_f32(scale).to_f32();
        for (o, g) in off.iter_mut().zip(q.chunks_exact(4)) {
            *o = -128 * g.iter().map(|&v| i32::from(v)).sum::<i32>();
        }
    }
}

/// The portable tile: per (row, column), block by block, the exact integer sum then
/// `acc += sum as f32 * d_w * d_x` (candle's `vec_dot_unopt`).
fn portable_tile(
    wq: &[i8],
    wd: &[f32],
    xq: &QuantizedRows,
    r0: usize,
    rows: usize,
    out: &mut [[f32; WIDE_COLS]; ROWS],
) {
    for (r, acc) in out[..rows].iter_mut().enumerate() {
        let (xs, xd) = (xq.row_qs(r0 + r), xq.row_d(r0 + r));
        let acc = &mut acc[..COLS];
        acc.fill(0.0);
        for (b, (xb, &dx)) in xs.chunks_exact(QK8_0).zip(xd).enumerate() {
            for (c, a) in acc.iter_mut().enumerate() {
                let wb = &wq[(b * COLS + c) * QK8_0..][..QK8_0];
                let sum: i32 = wb.iter().zip(xb).map(|(&w, &x)| i32::from(w) * i32::from(x)).sum();
                *a += sum as f32 * wd[b * COLS + c] * dx;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{QuantizedRows, COLS, QK8_0, ROWS, WIDE_COLS};
    use std::arch::x86_64::*;

    /// Sums the 8 lanes in candle's order (`hsum_float_8`): high half plus low half,
    /// then lanes 0+2 and 1+3, then those two.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum(x: __m256) -> f32 {
        let r = _mm_add_ps(_mm256_extractf128_ps::<1>(x), _mm256_castps256_ps128(x));
        let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
        let r = _mm_add_ss(r, _mm_movehdup_ps(r));
        _mm_cvtss_f32(r)
    }

    /// [`super::quantize`] eight values per instruction, with the same results: the
    /// largest magnitude is exact whatever the order (`vmaxps` keeps its second
    /// operand, the running maximum, when the first is NaN, as `f32::max` skips
    /// NaN), the product by `inv` is the same IEEE multiplication, and
    /// [`super::round_to_i8`] is rebuilt from an exact truncation: a NaN gives 0,
    /// anything beyond the i8 range saturates.
    ///
    /// # Safety
    /// The CPU must have AVX2. `qs` must hold `x.len()` values, `d` one per 32,
    /// `offsets` one per 4, and `x.len()` must be a multiple of 32.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn quantize(x: &[f32], qs: &mut [i8], d: &mut [f32], offsets: &mut [i32]) {
        let blocks = x.len() / QK8_0;
        assert!(
            x.len() == blocks * QK8_0
                && qs.len() >= blocks * QK8_0
                && d.len() >= blocks
                && offsets.len() >= blocks * QK8_0 / 4
        );
        let abs_mask = _mm256_set1_ps(f32::from_bits(0x7fff_ffff));
        let (half, neg_half, one) = (_mm256_set1_ps(0.5), _mm256_set1_ps(-0.5), _mm256_set1_ps(1.0));
        let (lo, hi) = (_mm256_set1_ps(-128.0), _mm256_set1_ps(127.0));
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        for (b, db) in d[..blocks].iter_mut().enumerate() {
            // SAFETY: block b is within every slice (asserted above); unaligned accesses.
            let v: [__m256; 4] = std::array::from_fn(|i| unsafe { _mm256_loadu_ps(x.as_ptr().add(b * QK8_0 + 8 * i)) });
            let mut m = _mm256_setzero_ps();
            for vi in v {
                m = _mm256_max_ps(_mm256_and_ps(vi, abs_mask), m);
            }
            let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
            let scale = amax / 127.0;
            let inv = _mm256_set1_ps(if scale != 0.0 { 1.0 / scale } else { 0.0 });
            let q: [__m256i; 4] = std::array::from_fn(|i| {
                let p = _mm256_mul_ps(v[i], inv);
                let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(p);
                let frac = _mm256_sub_ps(p, t);
                let up = _mm256_and_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(frac, half), one);
                let down = _mm256_and_ps(_mm256_cmp_ps::<_CMP_LE_OQ>(frac, neg_half), one);
                let r = _mm256_sub_ps(_mm256_add_ps(t, up), down);
                // NaN to 0, then into [-128, 127].
                let r = _mm256_and_ps(r, _mm256_cmp_ps::<_CMP_ORD_Q>(p, p));
                _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, lo), hi))
            });
            let packed = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
            let packed = _mm256_permutevar8x32_epi32(packed, order);
            let sums = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), packed), _mm256_set1_epi16(1));
            // SAFETY: as above.
            unsafe {
                _mm256_storeu_si256(qs.as_mut_ptr().add(b * QK8_0).cast(), packed);
                _mm256_storeu_si256(
                    offsets.as_mut_ptr().add(b * QK8_0 / 4).cast(),
                    _mm256_mullo_epi32(sums, _mm256_set1_epi32(-128)),
                );
            }
            *db = half::f16::from_f32(scale).to_f32();
        }
    }

    /// The scale of every (block, column, row) of a tile against the rows
    /// `r0..r0 + ROWS`, `[block][col][row]` into `scales`: `d_w * d_x`, the f32
    /// product candle broadcasts, eight rows per multiplication. The kernel then
    /// broadcasts each from memory, which costs a load, not a vector ALU slot.
    ///
    /// # Safety
    /// The CPU must have AVX2. `wd` must hold `nb * COLS` scales, `scales` at
    /// least `nb * COLS * ROWS`, and `r0 + ROWS <= xq.m_pad`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scale_products(wd: &[f32], xq: &QuantizedRows, r0: usize, scales: &mut [f32]) {
        let nb = xq.nb;
        assert!(ROWS == 8 && wd.len() >= nb * COLS && scales.len() >= nb * COLS * ROWS && r0 + ROWS <= xq.m_pad);
        let dp = xq.d_by_block.as_ptr();
        let sp = scales.as_mut_ptr();
        for b in 0..nb {
            // SAFETY: b < nb and r0 + 8 <= m_pad, within `d_by_block` ([nb][m_pad]).
            let dx = unsafe { _mm256_loadu_ps(dp.add(b * xq.m_pad + r0)) };
            for c in 0..COLS {
                let d = _mm256_mul_ps(_mm256_set1_ps(wd[b * COLS + c]), dx);
                // SAFETY: (b * COLS + c + 1) * ROWS <= nb * COLS * ROWS <= scales.len().
                unsafe { _mm256_storeu_ps(sp.add((b * COLS + c) * ROWS), d) };
            }
        }
    }

    /// Defines a tile kernel: `$dot` turns `|w|` (as u8) and `y` signed like `w`
    /// into the eight i32 sums of four products of a block.
    macro_rules! tile_kernel {
        ($(#[$doc:meta])* $name:ident, $features:literal, |$aw:ident, $sy:ident| $dot:expr) => {
        $(#[$doc])*
        ///
        /// `R` rows from `r0` against one tile of [`COLS`] columns, `CS` columns at a
        /// time (`R * CS` accumulators stay in registers), with the scales from
        /// [`scale_products`] when `R > 1`; a single row multiplies its scales in
        /// the loop instead (nothing to share them with, so a table would only add
        /// stores).
        ///
        /// # Safety
        /// The CPU must have the kernel's target features. `wq` must hold `nb * COLS * 32` quants,
        /// `wd` `nb * COLS` scales and, when `R > 1`, `scales` `nb * COLS * ROWS`
        /// values, with `nb` the blocks of `xq`'s rows; rows `r0..r0 + R` must exist
        /// in `xq`; `CS` must divide `COLS`.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $name<const CS: usize, const R: usize>(
            wq: &[i8],
            wd: &[f32],
            xq: &QuantizedRows,
            r0: usize,
            scales: &[f32],
            out: &mut [[f32; WIDE_COLS]; ROWS],
        ) {
            let nb = xq.nb;
            assert!(
                R <= ROWS
                    && COLS.is_multiple_of(CS)
                    && wq.len() >= nb * COLS * QK8_0
                    && wd.len() >= nb * COLS
                    && (R == 1 || scales.len() >= nb * COLS * ROWS)
                    && (r0 + R) * nb * QK8_0 <= xq.qs.len()
            );
            let xd = xq.row_d(r0);
            let xs: [*const i8; R] = std::array::from_fn(|r| xq.row_qs(r0 + r).as_ptr());
            let (wp, sp) = (wq.as_ptr(), scales.as_ptr());
            for c0 in (0..COLS).step_by(CS) {
                let mut acc = [[_mm256_setzero_ps(); CS]; R];
                for b in 0..nb {
                    // SAFETY (all loads below): block b of column c0 + c is within `wq`
                    // (nb blocks of COLS columns of 32 quants), block b of row r0 + r
                    // within that row, scale (b, c0 + c, r) within `scales`; unaligned loads.
                    let w: [__m256i; CS] =
                        std::array::from_fn(|c| unsafe { _mm256_loadu_si256(wp.add((b * COLS + c0 + c) * QK8_0).cast()) });
                    let aw: [__m256i; CS] = std::array::from_fn(|c| _mm256_sign_epi8(w[c], w[c]));
                    for r in 0..R {
                        let y = unsafe { _mm256_loadu_si256(xs[r].add(b * QK8_0).cast()) };
                        for c in 0..CS {
                            // candle's mul_sum_i8_pairs_float then fmadd, operand for operand.
                            let sy = _mm256_sign_epi8(y, w[c]);
                            let q = _mm256_cvtepi32_ps({
                                let ($aw, $sy) = (aw[c], sy);
                                $dot
                            });
                            let d = if R == 1 {
                                _mm256_mul_ps(_mm256_set1_ps(wd[b * COLS + c0 + c]), _mm256_set1_ps(xd[b]))
                            } else {
                                unsafe { _mm256_broadcast_ss(&*sp.add((b * COLS + c0 + c) * ROWS + r)) }
                            };
                            acc[r][c] = _mm256_fmadd_ps(d, q, acc[r][c]);
                        }
                    }
                }
                for r in 0..R {
                    for c in 0..CS {
                        out[r][c0 + c] = hsum(acc[r][c]);
                    }
                }
            }
        }
        };
    }

    tile_kernel!(
        /// The AVX2 kernel: candle's `mul_sum_i8_pairs_float` (`vpmaddubsw`, then
        /// `vpmaddwd` by ones), operand for operand.
        tile,
        "avx2,fma",
        |aw, sy| _mm256_madd_epi16(_mm256_set1_epi16(1), _mm256_maddubs_epi16(aw, sy))
    );

    tile_kernel!(
        /// [`tile`] with one `vpdpbusd` (AVX-512 VNNI, 256 bits) for the two
        /// multiplies. The same integers: `|w|` is at most 128 and `y` signed like
        /// `w` lies in [-128, 127], so `vpmaddubsw`'s pair sums lie in
        /// [-32768, 32512] and never saturate; both then add four products per
        /// i32 lane, exactly.
        tile_vnni,
        "avx2,fma,avx512vnni,avx512vl",
        |aw, sy| _mm256_dpbusd_epi32(_mm256_setzero_si256(), aw, sy)
    );
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{QuantizedRows, QK8_0, ROWS, WIDE_COLS};
    use std::arch::x86_64::*;

    /// Groups of four quants per block: one 32-bit lane of the AVX2 kernel each.
    const GROUPS: usize = QK8_0 / 4;

    /// `R` rows from `r0` against one 16-column tile.
    ///
    /// The AVX2 kernel keeps, per (row, column), eight f32 accumulators, lane `j`
    /// collecting block after block `d_w * d_x * Σ` of products `4j..4j + 4`, and
    /// sums the lanes at the end. Here accumulator `j` of a row holds that lane
    /// for the 16 columns: `vpdpbusd` of the offset weights (`w + 128`, unsigned)
    /// with the row's four quants broadcast (signed), started from the row's
    /// correction `-128 Σ x`, is the exact `Σ w x` of the group for every column;
    /// it is converted and fused-multiply-added exactly as the AVX2 kernel does,
    /// and the eight accumulators are summed in `hsum_float_8`'s order. So the
    /// same operations on the same values, column by column, in other lanes.
    ///
    /// # Safety
    /// The CPU must have AVX-512F and AVX-512 VNNI. `wq` must hold the tile's
    /// `nb * 16 * 32` offset quants, `wd` its `nb * 16` scales, with `nb` the
    /// blocks of `xq`'s rows; rows `r0..r0 + R` must exist in `xq`.
    #[target_feature(enable = "avx512f,avx512vnni")]
    #[allow(clippy::needless_range_loop)] // a register tile: one index runs through several arrays
    pub(super) unsafe fn tile<const R: usize>(
        wq: &[i8],
        wd: &[f32],
        xq: &QuantizedRows,
        r0: usize,
        out: &mut [[f32; WIDE_COLS]; ROWS],
    ) {
        let nb = xq.nb;
        assert!(
            R <= ROWS
                && wq.len() >= nb * WIDE_COLS * QK8_0
                && wd.len() >= nb * WIDE_COLS
                && (r0 + R) * nb * QK8_0 <= xq.qs.len()
                && (r0 + R) * nb * GROUPS <= xq.offsets.len()
        );
        let xs: [*const i8; R] = std::array::from_fn(|r| xq.row_qs(r0 + r).as_ptr());
        let xd: [&[f32]; R] = std::array::from_fn(|r| xq.row_d(r0 + r));
        let off: [*const i32; R] = std::array::from_fn(|r| xq.offsets[(r0 + r) * nb * GROUPS..].as_ptr());
        let (wp, dp) = (wq.as_ptr(), wd.as_ptr());
        let mut acc = [[_mm512_setzero_ps(); GROUPS]; R];
        for b in 0..nb {
            // SAFETY (all loads below): block b's 16 scales and 8 groups of 64 offset
            // quants are within `wd` / `wq`; group j of block b of row r0 + r is within
            // that row's quants and offsets; unaligned loads.
            let dw = unsafe { _mm512_loadu_ps(dp.add(b * WIDE_COLS)) };
            let d: [__m512; R] = std::array::from_fn(|r| _mm512_mul_ps(dw, _mm512_set1_ps(xd[r][b])));
            for j in 0..GROUPS {
                let w = unsafe { _mm512_loadu_si512(wp.add((b * GROUPS + j) * WIDE_COLS * 4).cast()) };
                for r in 0..R {
                    let y = unsafe { xs[r].add(b * QK8_0 + 4 * j).cast::<i32>().read_unaligned() };
                    let start = unsafe { _mm512_set1_epi32(*off[r].add(b * GROUPS + j)) };
                    let q = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(start, w, _mm512_set1_epi32(y)));
                    acc[r][j] = _mm512_fmadd_ps(d[r], q, acc[r][j]);
                }
            }
        }
        for r in 0..R {
            let a = &acc[r];
            // hsum_float_8: (l0 + l4) + (l2 + l6), plus (l1 + l5) + (l3 + l7).
            let even = _mm512_add_ps(_mm512_add_ps(a[4], a[0]), _mm512_add_ps(a[6], a[2]));
            let odd = _mm512_add_ps(_mm512_add_ps(a[5], a[1]), _mm512_add_ps(a[7], a[3]));
            // SAFETY: `out[r]` holds WIDE_COLS f32.
            unsafe { _mm512_storeu_ps(out[r].as_mut_ptr(), _mm512_add_ps(even, odd)) };
        }
    }
}

/// `x.round() as i8` (half away from zero, saturating, NaN to 0) without the libm
/// call that `f32::round` is on baseline x86-64: a vectorisable truncation and a
/// correction by the exact fractional part (exact below 2^23; larger values are
/// integers already, and saturate).
#[inline]
fn round_to_i8(x: f32) -> i8 {
    let t = x as i32;
    let frac = x - t as f32;
    let step = if frac >= 0.5 {
        1
    } else if frac <= -0.5 {
        -1
    } else {
        0
    };
    t.saturating_add(step).clamp(i8::MIN.into(), i8::MAX.into()) as i8
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QMatMul;
    use candle_core::{Device, Module, Tensor};

    /// A small deterministic generator (xorshift64*).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        /// Roughly normal values of a given spread, with a few outliers.
        fn values(&mut self, len: usize, spread: f32) -> Vec<f32> {
            (0..len)
                .map(|_| {
                    let u: f32 = (0..4).map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32).sum::<f32>() - 2.0;
                    let outlier = if self.next().is_multiple_of(64) { 8.0 } else { 1.0 };
                    u * spread * outlier
                })
                .collect()
        }
    }

    /// Whether candle 0.11 multiplies by a Q8_0 matrix of `n` rows of `k` through
    /// its x86 repacked kernel (its own CPU check, `repack_x86::level`, with its
    /// environment overrides): other numbers, so such shapes are not compared.
    fn candle_repacks(n: usize, k: usize) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let var = |name| std::env::var(name).as_deref() == Ok("1");
            let (force_avx2, force_vnni) = (var("MISTRALRS_FORCE_AVX2"), var("MISTRALRS_FORCE_AVXVNNI"));
            let avx512 = std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vnni");
            let avxvnni =
                (force_vnni || std::is_x86_feature_detected!("avxvnni")) && std::is_x86_feature_detected!("avx2");
            let vnni = !force_avx2 && ((!force_vnni && avx512) || avxvnni);
            vnni && k > 0 && k.is_multiple_of(256) && n.is_multiple_of(16)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (n, k);
            false
        }
    }

    /// candle's `x · Wᵀ` with a Q8_0 `W` (quantised by candle from `w`), and ours.
    fn both(w: &[f32], n: usize, k: usize, x: &[f32], kernel: Kernel) -> (Vec<f32>, Vec<f32>) {
        let dev = Device::Cpu;
        let wt = Tensor::from_slice(w, (n, k), &dev).unwrap();
        let q = QTensor::quantize(&wt, GgmlDType::Q8_0).unwrap();
        let ours = Q8Matrix::from_qtensor(&q, kernel).unwrap().expect("a Q8_0 tensor");
        let m = x.len() / k;
        let xt = Tensor::from_slice(x, (1, m, k), &dev).unwrap();
        let theirs = QMatMul::from_qtensor(q).unwrap().forward(&xt).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let mut out = vec![f32::NAN; m * n];
        ours.matmul(x, &mut out);
        (theirs, out)
    }

    /// The shapes of SmolLM2-135M's projections (and odd ones: a partial last tile,
    /// a single block, one row, more rows than a register tile).
    #[test]
    fn bit_identical_to_candle_on_random_blocks() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let shapes =
            [(1, 64, 32), (3, 7, 64), (5, 576, 576), (8, 192, 576), (2, 1536, 576), (9, 576, 1536), (16, 96, 160)];
        for &(m, n, k) in &shapes {
            if candle_repacks(n, k) {
                continue; // candle takes another path for this shape on this CPU
            }
            let w = rng.values(n * k, 0.05);
            let x = rng.values(m * k, 1.0);
            for kernel in Kernel::available() {
                let (theirs, ours) = both(&w, n, k, &x, kernel);
                if (kernel != Kernel::Portable || Kernel::detect() == Kernel::Portable) && Kernel::matches_candle() {
                    // candle runs this arithmetic here (the SIMD kernels all
                    // compute its AVX2 numbers): the same bits.
                    let diff: Vec<usize> =
                        (0..ours.len()).filter(|&i| ours[i].to_bits() != theirs[i].to_bits()).collect();
                    assert!(
                        diff.is_empty(),
                        "{kernel:?} {m}x{n}x{k}: {} outputs differ, first {:?}",
                        diff.len(),
                        diff.first()
                    );
                } else {
                    // Another kernel: the same integers, the float sums in another order.
                    for (i, (&a, &b)) in ours.iter().zip(&theirs).enumerate() {
                        assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{kernel:?} {m}x{n}x{k} [{i}]: {a} vs {b}");
                    }
                }
            }
        }
    }

    /// candle's generic Q8_0 dot product, for the portable kernel on any CPU:
    /// rebuilt from the blocks' bytes with candle's own scalar function.
    #[test]
    fn portable_is_candles_generic_dot_product() {
        use candle_core::quantized::k_quants::{BlockQ8_0, GgmlType};
        let mut rng = Rng(77);
        let (m, n, k) = (3, 10, 192);
        let w = rng.values(n * k, 0.1);
        let x = rng.values(m * k, 2.0);
        let nb = k / QK8_0;
        let wq: Vec<Vec<BlockQ8_0>> = w
            .chunks(k)
            .map(|row| {
                let mut b = vec![BlockQ8_0::zeros(); nb];
                BlockQ8_0::from_float(row, &mut b);
                b
            })
            .collect();
        let mut bytes = Vec::new();
        for row in &wq {
            let mut f = vec![0f32; k];
            BlockQ8_0::to_float(row, &mut f);
            // The bytes of the same blocks, through candle's QTensor.
            let t = QTensor::quantize(&Tensor::from_slice(&f, (1, k), &Device::Cpu).unwrap(), GgmlDType::Q8_0).unwrap();
            let again: Vec<f32> = t.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(again, f, "re-quantising dequantised Q8_0 is lossless");
            bytes.extend_from_slice(&t.data().unwrap());
        }
        let ours = Q8Matrix::from_q8_0_bytes(&bytes, n, k, Kernel::Portable).unwrap();
        let mut out = vec![0f32; m * n];
        ours.matmul(&x, &mut out);
        for r in 0..m {
            let mut xb = vec![BlockQ8_0::zeros(); nb];
            BlockQ8_0::from_float(&x[r * k..(r + 1) * k], &mut xb);
            for c in 0..n {
                let want = BlockQ8_0::vec_dot_unopt(k, &wq[c], &xb);
                assert_eq!(out[r * n + c].to_bits(), want.to_bits(), "row {r} col {c}: {} vs {want}", out[r * n + c]);
            }
        }
    }

    #[test]
    fn activations_quantise_as_candles() {
        let mut rng = Rng(5);
        let mut x = rng.values(32 * 40, 3.0);
        x[32..64].fill(0.0); // an all-zero block: scale 0
        x[70] = 1e-30; // tiny values
        let ours = QuantizedRows::new(&x, 32 * 40);
        let t =
            QTensor::quantize(&Tensor::from_slice(&x, (1, x.len()), &Device::Cpu).unwrap(), GgmlDType::Q8_0).unwrap();
        let bytes = t.data().unwrap();
        for (b, block) in bytes.chunks_exact(BLOCK_BYTES).enumerate() {
            assert_eq!(ours.d[b], f16::from_le_bytes([block[0], block[1]]).to_f32(), "scale of block {b}");
            let q: Vec<i8> = block[2..].iter().map(|&v| v as i8).collect();
            assert_eq!(&ours.qs[b * 32..(b + 1) * 32], q.as_slice(), "quants of block {b}");
        }
    }

    /// The AVX2 quantiser gives the portable one's quants, scales and offsets, on
    /// ordinary values and on blocks of NaN, infinities, exact halves, subnormals
    /// and the ends of the f32 range.
    #[test]
    fn the_avx2_quantiser_is_the_portable_one() {
        #[cfg(target_arch = "x86_64")]
        {
            if !std::is_x86_feature_detected!("avx2") {
                eprintln!("no AVX2 on this CPU: its quantiser is not tested here");
                return;
            }
            let mut rng = Rng(3);
            let mut x = rng.values(32 * 40, 2.0);
            // amax 127: scale 1, so the quants are the values, halves included.
            let halves: Vec<f32> =
                (0..32).map(|i| [127.0, -127.0, 126.5, -126.5, 0.5, -0.5, 1.5, -2.5][i % 8]).collect();
            let specials: [&[f32]; 8] = [
                &[0.0; 32],
                &[f32::NAN; 32],
                &[f32::NAN, 1.0, -3.0, 0.25],
                &[f32::INFINITY, 1.0, -2.0],
                &[f32::NEG_INFINITY, f32::INFINITY, f32::NAN],
                &[f32::MAX, f32::MIN, 1.0, -1e30],
                &[1e-40, -3e-41, 1e-45, 0.0, -0.0],
                &halves,
            ];
            for (i, s) in specials.iter().enumerate() {
                x[i * 32..i * 32 + s.len()].copy_from_slice(s);
            }
            let run = |vector: bool| {
                let blocks = x.len() / QK8_0;
                let (mut q, mut d, mut o) = (vec![0i8; x.len()], vec![0f32; blocks], vec![0i32; x.len() / 4]);
                if vector {
                    unsafe { avx2::quantize(&x, &mut q, &mut d, &mut o) };
                } else {
                    quantize(&x, &mut q, &mut d, &mut o);
                }
                (q, d.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), o)
            };
            let (want, got) = (run(false), run(true));
            for b in 0..x.len() / QK8_0 {
                let (w, g) = (&want.0[b * 32..][..32], &got.0[b * 32..][..32]);
                assert_eq!(w, g, "quants of block {b}");
                assert_eq!(want.1[b], got.1[b], "scale of block {b}");
                assert_eq!(&want.2[b * 8..][..8], &got.2[b * 8..][..8], "offsets of block {b}");
            }
        }
    }

    /// A row's outputs do not depend on the other rows (batch invariance).
    #[test]
    fn rows_do_not_depend_on_the_batch() {
        let mut rng = Rng(99);
        let (n, k) = (40, 256);
        let w = rng.values(n * k, 0.05);
        let q = QTensor::quantize(&Tensor::from_slice(&w, (n, k), &Device::Cpu).unwrap(), GgmlDType::Q8_0).unwrap();
        let x = rng.values(11 * k, 1.0);
        for kernel in Kernel::available() {
            let mat = Q8Matrix::from_qtensor(&q, kernel).unwrap().unwrap();
            let mut all = vec![0f32; 11 * n];
            mat.matmul(&x, &mut all);
            for r in 0..11 {
                let mut one = vec![0f32; n];
                mat.matmul(&x[r * k..(r + 1) * k], &mut one);
                assert_eq!(one, all[r * n..(r + 1) * n], "{kernel:?} row {r}");
            }
        }
    }

    /// Raw Q8_0 blocks may hold -128 (a GGUF need not come from candle's
    /// quantiser) and activations reach ±127: the VNNI kernels still give the AVX2
    /// kernel's bits (no `vpmaddubsw` pair sum saturates; the offset weights reach
    /// 0 and 255).
    #[test]
    fn vnni_kernels_give_the_avx2_bits_on_extreme_quants() {
        let vnni: Vec<Kernel> =
            Kernel::available().into_iter().filter(|k| matches!(k, Kernel::Avx2Vnni | Kernel::Avx512Vnni)).collect();
        if vnni.is_empty() {
            eprintln!("no AVX-512 VNNI on this CPU: the VNNI kernels are not tested here");
            return;
        }
        let mut rng = Rng(7);
        let (n, k) = (20, 96);
        let mut bytes = Vec::new();
        for col in 0..n {
            for b in 0..k / QK8_0 {
                bytes.extend_from_slice(&[0x00, 0x3c]); // scale 1.0 as f16
                for i in 0..QK8_0 {
                    bytes.push(match (col + b) % 3 {
                        0 => 0x80,                // -128
                        1 => [0x80, 0x7f][i % 2], // -128 and 127
                        _ => rng.next() as u8,    // anything
                    });
                }
            }
        }
        let avx2 = Q8Matrix::from_q8_0_bytes(&bytes, n, k, Kernel::Avx2).unwrap();
        for m in 1..=9 {
            let x: Vec<f32> = (0..m * k)
                .map(|i| match i % 4 {
                    0 => 1.0,
                    1 => -1.0,
                    _ => (rng.next() as i32) as f32 / i32::MAX as f32,
                })
                .collect();
            let mut a = vec![0f32; m * n];
            avx2.matmul(&x, &mut a);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            for &kernel in &vnni {
                let mut b = vec![0f32; m * n];
                Q8Matrix::from_q8_0_bytes(&bytes, n, k, kernel).unwrap().matmul(&x, &mut b);
                assert_eq!(bits(&a), bits(&b), "{kernel:?}, {m} rows");
            }
        }
    }

    #[test]
    fn refuses_partial_blocks_and_wrong_sizes() {
        assert!(Q8Matrix::from_q8_0_bytes(&[0; 34], 1, 31, Kernel::Portable).is_err());
        assert!(Q8Matrix::from_q8_0_bytes(&[0; 33], 1, 32, Kernel::Portable).is_err());
        let q =
            QTensor::quantize(&Tensor::zeros((4, 32), candle_core::DType::F32, &Device::Cpu).unwrap(), GgmlDType::Q4_0)
                .unwrap();
        assert!(Q8Matrix::from_qtensor(&q, Kernel::Portable).unwrap().is_none(), "only Q8_0 is repacked");
    }

    /// Exact halves, the floats either side of them, the ends of the i8 range and
    /// beyond, NaN and infinities: what `f32::round` then `as i8` gives.
    #[test]
    fn rounding_is_f32_rounds() {
        let mut xs = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, f32::MIN, 0.0, -0.0, 3e9, -3e9];
        for i in -600..=600 {
            let h = i as f32 * 0.25;
            xs.extend([h, f32::from_bits(h.to_bits().wrapping_add(1)), f32::from_bits(h.to_bits().wrapping_sub(1))]);
        }
        xs.extend([0.49999997, -0.49999997, 8388607.5, -8388607.5, 8388609.0, 16777217.0]);
        let mut rng = Rng(99);
        xs.extend(rng.values(10_000, 200.0));
        for x in xs {
            assert_eq!(round_to_i8(x), x.round() as i8, "{x:e}");
        }
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]
            /// Any shape and scale: bit-identical to candle where candle runs the same
            /// kernel, and extreme quants (±127, zero blocks) included.
            #[test]
            fn matches_candle(m in 1usize..18, n in 1usize..13, kb in 1usize..6, seed in any::<u64>(), spread in prop_oneof![Just(1e-3f32), Just(1.0f32), Just(300.0f32)]) {
                let k = kb * QK8_0;
                let mut rng = Rng(seed | 1);
                let mut w = rng.values(n * k, spread);
                let mut x = rng.values(m * k, spread);
                if seed.is_multiple_of(3) { w[..QK8_0].fill(0.0); }
                if seed.is_multiple_of(5) { x[..QK8_0].fill(0.0); }
                prop_assume!(!candle_repacks(n, k));
                let kernel = Kernel::detect();
                let (theirs, ours) = both(&w, n, k, &x, kernel);
                if Kernel::matches_candle() {
                    prop_assert_eq!(ours.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), theirs.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
                } else {
                    for (&a, &b) in ours.iter().zip(&theirs) {
                        prop_assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()));
                    }
                }
            }
        }
    }
}
