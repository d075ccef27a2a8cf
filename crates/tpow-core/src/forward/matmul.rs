//! Matrix products of int8 activations with int8 weights into i32.
//!
//! Integer sums are exact, so every kernel here returns the same bits as the
//! scalar loop as long as no partial sum overflows i32, which the forward pass's
//! bounds rule out (|sum| <= 4096 · 127 · 128 < 2^31).
//!
//! The weight layout belongs to the kernels, not to the consensus [`Matrix`] (the
//! row-major weights of docs/PROTOCOL.md §5): [`Backend::pack`] lays one matrix out
//! for a backend as a [`PackedMatrix`], which records its layout and shape, so a
//! kernel never reads another backend's layout (it runs the scalar loop instead).
//! The SIMD kernels of x86_64 (with `std` only, chosen at run time) read packed
//! copies; the scalar loop and the wasm kernels read `Matrix::data` and pack
//! nothing. Both x86 kernels are exact for every int8 weight and activation (the
//! consensus ranges, [-127, 127], are not needed).
//!
//! - AVX2 (`Layout::Avx2`): the weights as signed bytes in the pairs-of-16 layout
//!   of [`pack_pairs16`]: blocks of 16 outputs of `cols / 2` groups of 32 bytes,
//!   group `kp` being, for each of the 16 outputs `j` in turn, `w[16 nb + j][2 kp]`
//!   and `w[16 nb + j][2 kp + 1]`. Half a group (8 outputs × 2 inputs) is
//!   sign-extended to i16 (`vpmovsxbw`) and multiplied by 2 activations (as i16)
//!   broadcast with `vpmaddwd`, which adds each output's 2 products into an i32 lane
//!   (at most 2 · 128² = 2^15: exact); a register tile is [`AVX2_ROWS`](x86) input
//!   rows × 16 outputs, and no correction is needed.
//!
//!   Why not `vpmaddubsw` (u8 × i8, 32 products per instruction) with the sign
//!   trick `vpmaddubsw(|x|, sign(w, x))`, exact for |w| <= 127 since each 16-bit pair
//!   sum is at most 2 · 128 · 127 < 2^15? It needs a `vpsignb` per product vector and
//!   a `vpmaddwd` by ones to widen the pair sums (two of them can exceed i16): four
//!   vector instructions per 32 products, like `2 · (vpmaddwd + vpaddd)` here, and
//!   measured slower on AMD Zen 3 (one thread, 64 × 1024 · 256 tiles with the weights
//!   in L1: 65 G MAC/s against 74 for `vpmaddwd` on i16 weights; 93 without the
//!   `vpsignb`, which would need unsigned activations).
//! - AVX-512 VNNI (`Layout::Vnni`): the weights as signed bytes, in blocks of 16
//!   outputs of `cols / 4` groups of 64 bytes (output `j`'s 4 weights
//!   `w[16 nb + j][4 kg .. 4 kg + 4]` in turn), then `rows` little-endian i32
//!   `128 · Σ_k w[j][k]`. `vpdpbusd` (unsigned × signed bytes, no saturation)
//!   multiplies the activations offset by +128 (`x ^ 0x80`, unsigned) by the weights:
//!   one 64-byte load feeds 16 outputs × 4 inputs with 4 activation bytes broadcast,
//!   and the correction `128 · Σ_k w` is subtracted at the end (sums wrap mod 2^32:
//!   exact whenever the true result fits in i32). 6 input rows × 4 blocks per tile.
//!
//! On wasm32 the SIMD kernels are chosen at compile time (a module cannot probe the
//! engine): `simd128` and relaxed SIMD, both on the row-major weights (no packed
//! layout: it would cost a verifier time per header and gained nothing there), with
//! their exactness arguments in `wasm_simd.rs`.

use alloc::vec;
use alloc::vec::Vec;

use crate::model::Matrix;

/// Which kernels run the matrix products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Portable loops (the reference; what wasm32 without `simd128` runs).
    Scalar,
    /// AVX2 kernels on the AVX2 layout, and SIMD attention. Falls back to the
    /// scalar loop on a CPU without avx2 or for a matrix it did not pack (a shape
    /// that is not a multiple of 16 rows and 4 columns).
    #[cfg(all(target_arch = "x86_64", feature = "std"))]
    Avx2,
    /// AVX-512 VNNI (`vpdpbusd`) kernels on the VNNI layout, and SIMD attention.
    /// Falls back to the scalar loop on a CPU without avx512f, avx512bw and
    /// avx512vnni, or for a matrix it did not pack.
    #[cfg(all(target_arch = "x86_64", feature = "std"))]
    Avx512Vnni,
    /// WebAssembly `simd128` kernels on the row-major weights, and SIMD attention:
    /// built with `-C target-feature=+simd128` (the engine validates the
    /// instructions when it loads the module, so there is no run-time check). Falls
    /// back to the scalar loop for a shape that is not a multiple of 4 outputs and 8
    /// inputs.
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    WasmSimd128,
    /// The simd128 backend with the matrix products on relaxed SIMD's
    /// `i32x4.relaxed_dot_i8x16_i7x16_add_s`, fed so that its result is the same on
    /// every engine (`wasm_simd.rs`); built with `+simd128,+relaxed-simd`. Falls
    /// back to the simd128 kernel for a shape that is not a multiple of 4 outputs and
    /// 16 inputs and for activations holding -128 (and from there to the scalar loop).
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128", target_feature = "relaxed-simd"))]
    WasmRelaxedSimd,
}

/// The backend of builds without run-time detection: the wasm SIMD kernel compiled
/// in, else the scalar loop.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128", target_feature = "relaxed-simd"))]
const COMPILED: Backend = Backend::WasmRelaxedSimd;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128", not(target_feature = "relaxed-simd")))]
const COMPILED: Backend = Backend::WasmSimd128;
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
const COMPILED: Backend = Backend::Scalar;

/// How a [`PackedMatrix`] holds its weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// Nothing packed: the kernel reads the row-major `Matrix::data`.
    RowMajor,
    /// The AVX2 layout of the module docs.
    #[cfg(all(target_arch = "x86_64", feature = "std"))]
    Avx2,
    /// The VNNI layout of the module docs (weights, then the corrections).
    #[cfg(all(target_arch = "x86_64", feature = "std"))]
    Vnni,
}

/// One weight matrix laid out for one backend's kernel ([`Backend::pack`]): the
/// engine's copy, derived from a [`Matrix`], never hashed or compared across
/// machines. Empty (row-major) where the backend reads `Matrix::data` itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedMatrix {
    rows: usize,
    cols: usize,
    layout: Layout,
    bytes: Vec<u8>,
}

impl PackedMatrix {
    /// The row-major form: no copy, the kernel reads `Matrix::data`.
    fn row_major(w: &Matrix) -> Self {
        PackedMatrix { rows: w.rows, cols: w.cols, layout: Layout::RowMajor, bytes: Vec::new() }
    }

    /// Bytes held beyond the row-major weights (0 for the row-major form).
    pub fn packed_len(&self) -> usize {
        self.bytes.len()
    }
}

impl Backend {
    /// The fastest backend this CPU supports (on wasm32: the one compiled in).
    pub fn detect() -> Self {
        #[cfg(all(target_arch = "x86_64", feature = "std"))]
        {
            if x86::has_vnni() {
                return Backend::Avx512Vnni;
            }
            if x86::has_avx2() {
                return Backend::Avx2;
            }
        }
        COMPILED
    }

    /// Every backend this machine runs, the scalar reference first and
    /// [`Backend::detect`]'s choice last: on x86_64 the ones whose CPU features are
    /// present, on wasm32 the ones compiled into the module.
    pub fn available() -> Vec<Backend> {
        #[allow(unused_mut)]
        let mut v = vec![Backend::Scalar];
        #[cfg(all(target_arch = "x86_64", feature = "std"))]
        {
            if x86::has_avx2() {
                v.push(Backend::Avx2);
            }
            if x86::has_vnni() {
                v.push(Backend::Avx512Vnni);
            }
        }
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        v.push(Backend::WasmSimd128);
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128", target_feature = "relaxed-simd"))]
        v.push(Backend::WasmRelaxedSimd);
        v
    }

    /// A short name, for logs and benchmarks.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Scalar => "scalar",
            #[cfg(all(target_arch = "x86_64", feature = "std"))]
            Backend::Avx2 => "avx2",
            #[cfg(all(target_arch = "x86_64", feature = "std"))]
            Backend::Avx512Vnni => "avx512-vnni",
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Backend::WasmSimd128 => "wasm-simd128",
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128", target_feature = "relaxed-simd"))]
            Backend::WasmRelaxedSimd => "wasm-relaxed-simd",
        }
    }

    /// `w` laid out for this backend's matrix kernel (the layouts in the module
    /// docs): a packed copy for the x86 SIMD backends where the shape allows it
    /// (multiples of 16 rows and 4 columns), else the row-major form, which holds
    /// nothing (the scalar loop, the wasm kernels).
    pub fn pack(self, w: &Matrix) -> PackedMatrix {
        assert_eq!(w.data.len(), w.rows * w.cols, "data must hold rows * cols weights");
        match self {
            #[cfg(all(target_arch = "x86_64", feature = "std"))]
            Backend::Avx2 if x86::shape_ok(w.rows, w.cols) => {
                PackedMatrix { rows: w.rows, cols: w.cols, layout: Layout::Avx2, bytes: x86::pack_avx2(w) }
            }
            #[cfg(all(target_arch = "x86_64", feature = "std"))]
            Backend::Avx512Vnni if x86::shape_ok(w.rows, w.cols) => {
                PackedMatrix { rows: w.rows, cols: w.cols, layout: Layout::Vnni, bytes: x86::pack_vnni(w) }
            }
            _ => PackedMatrix::row_major(w),
        }
    }

    /// Whether this backend's SIMD matrix kernel (not the scalar fallback) runs on
    /// `w` laid out as `p` on this machine. `false` for the scalar backend.
    pub fn runs_simd(self, w: &Matrix, p: &PackedMatrix) -> bool {
        let _ = (w, p);
        match self {
            Backend::Scalar => false,
            #[cfg(all(target_arch = "x86_64", feature = "std"))]
            Backend::Avx2 => x86::has_avx2() && p.layout == Layout::Avx2 && (p.rows, p.cols) == (w.rows, w.cols),
            #[cfg(all(target_arch = "x86_64", feature = "std"))]
            Backend::Avx512Vnni => x86::has_vnni() && p.layout == Layout::Vnni && (p.rows, p.cols) == (w.rows, w.cols),
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Backend::WasmSimd128 => wasm::simd128_ok(w),
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128", target_feature = "relaxed-simd"))]
            Backend::WasmRelaxedSimd => wasm::simd128_ok(w),
        }
    }

    /// `out[r * w.rows + j] = Σ_k x[r * w.cols + k] · w[j][k]` for `rows` rows of `x`,
    /// laying `w` out first: for one-off products (tests); a forward pass packs once
    /// ([`crate::forward::PackedModel`]) and calls [`Backend::matmul_packed`].
    pub fn matmul(self, x: &[i8], rows: usize, w: &Matrix, out: &mut [i32]) {
        self.matmul_packed(x, rows, w, &self.pack(w), out)
    }

    /// [`Backend::matmul`] with `w` already laid out as `p` (from [`Backend::pack`]
    /// of this backend for best speed; another backend's layout runs the scalar
    /// loop). Panics if `p`'s shape is not `w`'s.
    pub fn matmul_packed(self, x: &[i8], rows: usize, w: &Matrix, p: &PackedMatrix, out: &mut [i32]) {
        assert!((p.rows, p.cols) == (w.rows, w.cols), "packed matrix of another shape");
        match self {
            Backend::Scalar => matmul_scalar(x, rows, w, out),
            #[cfg(all(target_arch = "x86_64", feature = "std"))]
            Backend::Avx2 => {
                if x86::has_avx2() && p.layout == Layout::Avx2 {
                    assert!(x.len() >= rows * w.cols && out.len() >= rows * w.rows);
                    // SAFETY: avx2 is present, `p` holds the AVX2 layout of a
                    // `p.rows x p.cols` matrix (made only by `pack`), and the slice
                    // lengths were checked.
                    unsafe { x86::matmul_avx2(x, rows, p, out) }
                } else {
                    matmul_scalar(x, rows, w, out)
                }
            }
            #[cfg(all(target_arch = "x86_64", feature = "std"))]
            Backend::Avx512Vnni => {
                if x86::has_vnni() && p.layout == Layout::Vnni {
                    assert!(x.len() >= rows * w.cols && out.len() >= rows * w.rows);
                    // SAFETY: the CPU features are present, `p` holds the VNNI layout
                    // of a `p.rows x p.cols` matrix (made only by `pack`), and the
                    // slice lengths were checked.
                    unsafe { x86::matmul_vnni(x, rows, p, out) }
                } else {
                    matmul_scalar(x, rows, w, out)
                }
            }
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Backend::WasmSimd128 => {
                if wasm::simd128_ok(w) {
                    wasm::matmul_simd128(x, rows, w, out)
                } else {
                    matmul_scalar(x, rows, w, out)
                }
            }
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128", target_feature = "relaxed-simd"))]
            Backend::WasmRelaxedSimd => {
                if wasm::relaxed_ok(w) {
                    wasm::matmul_relaxed(x, rows, w, out)
                } else if wasm::simd128_ok(w) {
                    wasm::matmul_simd128(x, rows, w, out)
                } else {
                    matmul_scalar(x, rows, w, out)
                }
            }
        }
    }

    /// Causal multi-head attention (heads of width `hd`, model width `d`) for the
    /// query positions `first..s`, with SIMD kernels: writes `att[i * d..(i + 1) * d]`
    /// for those `i`, exactly the values of the scalar loop in the forward pass
    /// (scores, softmax, p · v, requantisation; no statistics). `q`, `k` and `v` hold
    /// `s` rows of `d` values (only rows `first..s` of `q` are read).
    ///
    /// Returns `false`, touching nothing, when this backend has no such kernel (the
    /// scalar backend, a CPU without the features, or `hd % 16 != 0`): the caller
    /// then runs the scalar loop.
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        self,
        hd: usize,
        d: usize,
        first: usize,
        s: usize,
        q: &[i8],
        k: &[i8],
        v: &[i8],
        att: &mut [i8],
    ) -> bool {
        let _ = (hd, d, first, s, q, k, v, &att);
        match self {
            Backend::Scalar => false,
            #[cfg(all(target_arch = "x86_64", feature = "std"))]
            Backend::Avx2 => {
                if !x86::has_avx2() || !hd.is_multiple_of(16) || !d.is_multiple_of(hd) || first >= s {
                    return false;
                }
                assert!(q.len() >= s * d && k.len() >= s * d && v.len() >= s * d && att.len() >= s * d);
                // SAFETY: avx2 checked above; lengths asserted.
                unsafe { x86::attention_avx2(hd, d, first, s, q, k, v, att) };
                true
            }
            #[cfg(all(target_arch = "x86_64", feature = "std"))]
            Backend::Avx512Vnni => {
                if !x86::has_vnni() || !hd.is_multiple_of(16) || !d.is_multiple_of(hd) || first >= s {
                    return false;
                }
                assert!(q.len() >= s * d && k.len() >= s * d && v.len() >= s * d && att.len() >= s * d);
                // SAFETY: features checked above; lengths asserted.
                unsafe { x86::attention::attention(hd, d, first, s, q, k, v, att) };
                true
            }
            // Attention is a few percent of the work: both wasm backends share the
            // simd128 kernel (it packs its own operands, no weight layout involved).
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Backend::WasmSimd128 => wasm_attention(hd, d, first, s, q, k, v, att),
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128", target_feature = "relaxed-simd"))]
            Backend::WasmRelaxedSimd => wasm_attention(hd, d, first, s, q, k, v, att),
        }
    }
}

/// Name of the backend [`Backend::detect`] picks, for logs and benchmarks.
pub fn simd_backend_name() -> &'static str {
    Backend::detect().name()
}

/// The pairs-of-16 layout shared by the AVX2 weights and the key operand of the
/// AVX2 and wasm attention kernels: `n` rows of `k` values (row `j` at
/// `src[j * stride..][..k]`, `k` even) in blocks of 16 rows of `k / 2` groups of
/// 32 values, group `c / 2` holding, for each of the block's 16 rows in turn, the
/// values `c` and `c + 1`:
///
/// `dst[(j / 16) · 16 k + (c / 2) · 32 + (j % 16) · 2 + c % 2] = src[j · stride + c]`.
///
/// Writes only rows `0..n`: the rest of the last block (when `n % 16 != 0`) keeps
/// what `dst` held (the kernels keep it zero). Panics if `dst` has not room for
/// `n.div_ceil(16)` blocks or `src` lacks a row.
#[cfg_attr(
    not(any(
        all(target_arch = "x86_64", feature = "std"),
        all(target_arch = "wasm32", target_feature = "simd128"),
        test
    )),
    allow(dead_code)
)]
pub(crate) fn pack_pairs16<T: Copy>(src: &[T], stride: usize, n: usize, k: usize, dst: &mut [T]) {
    assert!(k.is_multiple_of(2) && dst.len() >= n.div_ceil(16) * 16 * k);
    assert!(n == 0 || src.len() >= (n - 1) * stride + k);
    for (j, row) in (0..n).map(|j| (j, &src[j * stride..][..k])) {
        let block = &mut dst[(j / 16) * 16 * k + (j % 16) * 2..];
        // Each pair of the row goes to its group, 32 values apart.
        for (pair, out) in row.chunks_exact(2).zip(block.chunks_mut(32)) {
            out[..2].copy_from_slice(pair);
        }
    }
}

/// [`Backend::attention`] for the wasm backends: `false` where the kernel does not
/// apply, like the x86 ones.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[allow(clippy::too_many_arguments)]
fn wasm_attention(hd: usize, d: usize, first: usize, s: usize, q: &[i8], k: &[i8], v: &[i8], att: &mut [i8]) -> bool {
    if !hd.is_multiple_of(16) || !d.is_multiple_of(hd) || first >= s {
        return false;
    }
    wasm::attention(hd, d, first, s, q, k, v, att);
    true
}

/// The wasm SIMD kernels (`wasm_simd.rs`, beside this file).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[path = "wasm_simd.rs"]
mod wasm;

fn matmul_scalar(x: &[i8], rows: usize, w: &Matrix, out: &mut [i32]) {
    let k = w.cols;
    for r in 0..rows {
        let xr = &x[r * k..(r + 1) * k];
        let o = &mut out[r * w.rows..(r + 1) * w.rows];
        for (j, oj) in o.iter_mut().enumerate() {
            *oj = dot_i8(xr, w.row(j));
        }
    }
}

/// Dot product of two int8 vectors in i32.
#[inline]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

/// The AVX-512 VNNI matrix kernel, written once and expanded twice: in `x86` with
/// the real intrinsics, and in the tests with a portable emulation of them (so the
/// kernel's logic is checked on machines without AVX-512). The expanding module
/// provides the intrinsics and a `simd!` macro that adds the target features.
#[cfg(all(target_arch = "x86_64", feature = "std"))]
macro_rules! vnni_matmul_kernel {
    () => {
        simd! {
            /// Callers guarantee the CPU features, that `w` holds the VNNI layout
            /// (`Layout::Vnni`), `x.len() >= rows * w.cols` and
            /// `out.len() >= rows * w.rows`.
            pub(crate) unsafe fn matmul_vnni(x: &[i8], rows: usize, w: &PackedMatrix, out: &mut [i32]) {
                const ROWS: usize = 6;
                const COLS: usize = 4;
                let (n, k) = (w.rows, w.cols);
                let nblocks = n / 16;
                // The per-output corrections 128 · Σ_k w follow the weights.
                let corr = w.bytes.as_ptr().add(n * k);
                let mut nb = 0;
                while nb < nblocks {
                    let c = (nblocks - nb).min(COLS);
                    let wp = w.bytes.as_ptr().add(nb * 16 * k);
                    let cp = corr.add(nb * 16 * 4);
                    let mut r = 0;
                    while r < rows {
                        let rr = (rows - r).min(ROWS);
                        let xp = x.as_ptr().add(r * k);
                        let op = out.as_mut_ptr().add(r * n + nb * 16);
                        match (rr, c) {
                            (1, 1) => block_vnni::<1, 1>(xp, k, wp, op, n, cp),
                            (1, 2) => block_vnni::<1, 2>(xp, k, wp, op, n, cp),
                            (1, 3) => block_vnni::<1, 3>(xp, k, wp, op, n, cp),
                            (1, 4) => block_vnni::<1, 4>(xp, k, wp, op, n, cp),
                            (2, 1) => block_vnni::<2, 1>(xp, k, wp, op, n, cp),
                            (2, 2) => block_vnni::<2, 2>(xp, k, wp, op, n, cp),
                            (2, 3) => block_vnni::<2, 3>(xp, k, wp, op, n, cp),
                            (2, 4) => block_vnni::<2, 4>(xp, k, wp, op, n, cp),
                            (3, 1) => block_vnni::<3, 1>(xp, k, wp, op, n, cp),
                            (3, 2) => block_vnni::<3, 2>(xp, k, wp, op, n, cp),
                            (3, 3) => block_vnni::<3, 3>(xp, k, wp, op, n, cp),
                            (3, 4) => block_vnni::<3, 4>(xp, k, wp, op, n, cp),
                            (4, 1) => block_vnni::<4, 1>(xp, k, wp, op, n, cp),
                            (4, 2) => block_vnni::<4, 2>(xp, k, wp, op, n, cp),
                            (4, 3) => block_vnni::<4, 3>(xp, k, wp, op, n, cp),
                            (4, 4) => block_vnni::<4, 4>(xp, k, wp, op, n, cp),
                            (5, 1) => block_vnni::<5, 1>(xp, k, wp, op, n, cp),
                            (5, 2) => block_vnni::<5, 2>(xp, k, wp, op, n, cp),
                            (5, 3) => block_vnni::<5, 3>(xp, k, wp, op, n, cp),
                            (5, 4) => block_vnni::<5, 4>(xp, k, wp, op, n, cp),
                            (6, 1) => block_vnni::<6, 1>(xp, k, wp, op, n, cp),
                            (6, 2) => block_vnni::<6, 2>(xp, k, wp, op, n, cp),
                            (6, 3) => block_vnni::<6, 3>(xp, k, wp, op, n, cp),
                            _ => block_vnni::<6, 4>(xp, k, wp, op, n, cp),
                        }
                        r += rr;
                    }
                    nb += c;
                }
            }

            /// `R` input rows times `C` blocks of 16 outputs over the whole `k`;
            /// `corr` points at the blocks' 16 · `C` corrections (i32, unaligned).
            #[inline]
            unsafe fn block_vnni<const R: usize, const C: usize>(
                x: *const i8,
                k: usize,
                wp: *const u8,
                out: *mut i32,
                n: usize,
                corr: *const u8,
            ) {
                let mut acc = [[_mm512_setzero_si512(); C]; R];
                let bstride = k * 16;
                let mut kk = 0;
                while kk < k {
                    let mut wv = [_mm512_setzero_si512(); C];
                    for (c, wc) in wv.iter_mut().enumerate() {
                        *wc = _mm512_loadu_si512(wp.add(c * bstride + kk * 16).cast());
                    }
                    for (r, ar) in acc.iter_mut().enumerate() {
                        // x + 128 as unsigned bytes.
                        let xu = x.add(r * k + kk).cast::<i32>().read_unaligned() ^ (0x8080_8080u32 as i32);
                        let xb = _mm512_set1_epi32(xu);
                        for (c, a) in ar.iter_mut().enumerate() {
                            *a = _mm512_dpbusd_epi32(*a, xb, wv[c]);
                        }
                    }
                    kk += 4;
                }
                for c in 0..C {
                    let cv = _mm512_loadu_si512(corr.add(c * 64).cast());
                    for (r, ar) in acc.iter().enumerate() {
                        _mm512_storeu_si512(out.add(r * n + c * 16).cast(), _mm512_sub_epi32(ar[c], cv));
                    }
                }
            }
        }
    };
}

#[cfg(all(target_arch = "x86_64", feature = "std"))]
mod x86 {
    use alloc::vec;
    use alloc::vec::Vec;
    use core::arch::x86_64::*;
    use std::cell::Cell;

    use super::PackedMatrix;
    use crate::model::Matrix;

    macro_rules! simd {
        ($($i:item)*) => { $( #[target_feature(enable = "avx512f,avx512bw,avx512vnni")] $i )* };
    }

    vnni_matmul_kernel!();

    /// Causal attention with AVX-512 VNNI (see `attention_simd.rs`).
    pub(super) mod attention {
        use super::*;
        include!("attention_simd.rs");
    }

    pub(super) fn has_vnni() -> bool {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vnni")
    }

    pub(super) fn has_avx2() -> bool {
        std::is_x86_feature_detected!("avx2")
    }

    /// Shapes the x86 layouts take: whole blocks of 16 outputs and groups of 4 inputs.
    pub(super) fn shape_ok(rows: usize, cols: usize) -> bool {
        rows.is_multiple_of(16) && cols.is_multiple_of(4) && rows > 0 && cols > 0
    }

    /// The AVX2 layout of the module docs ([`pack_pairs16`](super::pack_pairs16) of
    /// the weights as bytes). Callers check [`shape_ok`].
    pub(super) fn pack_avx2(w: &Matrix) -> Vec<u8> {
        let (rows, cols) = (w.rows, w.cols);
        let mut p = vec![0u8; rows * cols];
        if !cols.is_multiple_of(16) {
            let mut q = vec![0i8; rows * cols];
            super::pack_pairs16(&w.data, cols, rows, cols, &mut q);
            return q.into_iter().map(|v| v as u8).collect();
        }
        // 16 rows x 16 columns at a time: an 8 x 8 transpose of u16 pairs for each
        // half of the rows (SSE2, part of x86_64), 8 groups of 32 bytes out.
        let src = w.data.as_ptr();
        for nb in 0..rows / 16 {
            for kc in 0..cols / 16 {
                let out = &mut p[nb * 16 * cols + kc * 8 * 32..][..8 * 32];
                for half in 0..2 {
                    // SAFETY: rows nb·16 + half·8 .. + 8 < rows and columns kc·16 .. + 16
                    // <= cols exist in `data` (rows · cols bytes); SSE2 is part of the
                    // x86_64 baseline; each store is to 16 bytes of `out`.
                    unsafe {
                        let r: [__m128i; 8] = core::array::from_fn(|i| {
                            _mm_loadu_si128(src.add((nb * 16 + half * 8 + i) * cols + kc * 16).cast())
                        });
                        let a = [
                            _mm_unpacklo_epi16(r[0], r[1]),
                            _mm_unpackhi_epi16(r[0], r[1]),
                            _mm_unpacklo_epi16(r[2], r[3]),
                            _mm_unpackhi_epi16(r[2], r[3]),
                            _mm_unpacklo_epi16(r[4], r[5]),
                            _mm_unpackhi_epi16(r[4], r[5]),
                            _mm_unpacklo_epi16(r[6], r[7]),
                            _mm_unpackhi_epi16(r[6], r[7]),
                        ];
                        let b = [
                            _mm_unpacklo_epi32(a[0], a[2]),
                            _mm_unpackhi_epi32(a[0], a[2]),
                            _mm_unpacklo_epi32(a[1], a[3]),
                            _mm_unpackhi_epi32(a[1], a[3]),
                            _mm_unpacklo_epi32(a[4], a[6]),
                            _mm_unpackhi_epi32(a[4], a[6]),
                            _mm_unpacklo_epi32(a[5], a[7]),
                            _mm_unpackhi_epi32(a[5], a[7]),
                        ];
                        // Pair g of the 8 rows: group g's 16 bytes for this half.
                        let t = [
                            _mm_unpacklo_epi64(b[0], b[4]),
                            _mm_unpackhi_epi64(b[0], b[4]),
                            _mm_unpacklo_epi64(b[1], b[5]),
                            _mm_unpackhi_epi64(b[1], b[5]),
                            _mm_unpacklo_epi64(b[2], b[6]),
                            _mm_unpackhi_epi64(b[2], b[6]),
                            _mm_unpacklo_epi64(b[3], b[7]),
                            _mm_unpackhi_epi64(b[3], b[7]),
                        ];
                        for (g, v) in t.iter().enumerate() {
                            let dst = &mut out[g * 32 + half * 16..][..16];
                            _mm_storeu_si128(dst.as_mut_ptr().cast(), *v);
                        }
                    }
                }
            }
        }
        p
    }

    /// The VNNI layout of the module docs (signed bytes, then the corrections).
    /// Callers check [`shape_ok`].
    pub(super) fn pack_vnni(w: &Matrix) -> Vec<u8> {
        let (rows, cols) = (w.rows, w.cols);
        let mut p = vec![0u8; rows * (cols + 4)];
        let (weights, corr) = p.split_at_mut(rows * cols);
        for (j, (wr, c)) in w.data.chunks_exact(cols).zip(corr.chunks_exact_mut(4)).enumerate() {
            let sum: i32 = wr.iter().map(|&v| v as i32).sum();
            c.copy_from_slice(&sum.wrapping_mul(128).to_le_bytes());
            if cols.is_multiple_of(16) {
                continue;
            }
            // Output j's 4-weight groups go 64 bytes apart in its block.
            let block = &mut weights[(j / 16) * 16 * cols + (j % 16) * 4..];
            for (group, out) in wr.chunks_exact(4).zip(block.chunks_mut(64)) {
                for (o, &v) in out[..4].iter_mut().zip(group) {
                    *o = v as u8;
                }
            }
        }
        if !cols.is_multiple_of(16) {
            return p;
        }
        // 16 rows x 16 columns at a time: a 4 x 4 transpose of u32 groups for each
        // quarter of the rows (SSE2), 4 groups of 64 bytes out.
        let src = w.data.as_ptr();
        for nb in 0..rows / 16 {
            for kc in 0..cols / 16 {
                let out = &mut weights[nb * 16 * cols + kc * 4 * 64..][..4 * 64];
                for quarter in 0..4 {
                    // SAFETY: rows nb·16 + quarter·4 .. + 4 < rows and columns kc·16 ..
                    // + 16 <= cols exist in `data`; SSE2 is part of the x86_64
                    // baseline; each store is to 16 bytes of `out`.
                    unsafe {
                        let r: [__m128i; 4] = core::array::from_fn(|i| {
                            _mm_loadu_si128(src.add((nb * 16 + quarter * 4 + i) * cols + kc * 16).cast())
                        });
                        let a = [
                            _mm_unpacklo_epi32(r[0], r[1]),
                            _mm_unpackhi_epi32(r[0], r[1]),
                            _mm_unpacklo_epi32(r[2], r[3]),
                            _mm_unpackhi_epi32(r[2], r[3]),
                        ];
                        let t = [
                            _mm_unpacklo_epi64(a[0], a[2]),
                            _mm_unpackhi_epi64(a[0], a[2]),
                            _mm_unpacklo_epi64(a[1], a[3]),
                            _mm_unpackhi_epi64(a[1], a[3]),
                        ];
                        for (g, v) in t.iter().enumerate() {
                            let dst = &mut out[g * 64 + quarter * 16..][..16];
                            _mm_storeu_si128(dst.as_mut_ptr().cast(), *v);
                        }
                    }
                }
            }
        }
        p
    }

    /// Input rows per AVX2 register tile (× 16 outputs: `2 · AVX2_ROWS` accumulators).
    pub(super) const AVX2_ROWS: usize = 6;

    std::thread_local! {
        /// The activations as i16, reused across calls so the hot loop never allocates.
        static X16: Cell<Vec<i16>> = const { Cell::new(Vec::new()) };
    }

    /// Callers guarantee avx2, that `w` holds the AVX2 layout (`Layout::Avx2`),
    /// `x.len() >= rows * w.cols` and `out.len() >= rows * w.rows`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn matmul_avx2(x: &[i8], rows: usize, w: &PackedMatrix, out: &mut [i32]) {
        let (n, k) = (w.rows, w.cols);
        let mut x16 = X16.take();
        x16.clear();
        x16.extend(x[..rows * k].iter().map(|&v| v as i16));
        let wq = w.bytes.as_ptr().cast::<i8>();
        // One block of 16 outputs (16 · k bytes, in L1 for mainnet) for all rows.
        for nb in 0..n / 16 {
            let wp = wq.add(nb * 16 * k);
            let mut r = 0;
            while r < rows {
                let rr = (rows - r).min(AVX2_ROWS);
                tile_avx2(rr, x16.as_ptr().add(r * k), k, k, wp, out.as_mut_ptr().add(r * n + nb * 16), n);
                r += rr;
            }
        }
        X16.set(x16);
    }

    /// Causal attention with AVX2, built on the matrix tile [`block_avx2`]: per head,
    /// the scores are `Q_h · K_hᵀ` with the keys packed like weights (keys as
    /// outputs), the softmax runs on 8 lanes with the scalar loop's integer steps, and
    /// the output is `P · V_h` with `V_hᵀ` packed like weights (channels as outputs,
    /// keys as inputs; the probabilities are the activations). Bit-identical to the
    /// scalar loop in `forward::attention`, for any int8 inputs.
    ///
    /// Callers guarantee avx2, `hd % 16 == 0`, `d % hd == 0`, `first < s` and `q`, `k`,
    /// `v`, `att` at least `s * d` long.
    #[target_feature(enable = "avx2")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn attention_avx2(
        hd: usize,
        d: usize,
        first: usize,
        s: usize,
        q: &[i8],
        k: &[i8],
        v: &[i8],
        att: &mut [i8],
    ) {
        use crate::forward::ops::{clamp_i8, round_shift, score_shift, PROB_BITS};
        let n_heads = d / hd;
        let sh = score_shift(hd) as i32;
        // Keys padded to whole packed blocks of 16 (padding keys and values are 0).
        let sp = s.div_ceil(16) * 16;
        let nq = s - first;
        let mut kp = vec![0i8; sp * hd]; // K_h: sp x hd, AVX2 layout
        let mut vp = vec![0i8; hd * sp]; // V_hᵀ: hd x sp, AVX2 layout
        let mut q16 = vec![0i16; nq * hd];
        let mut sc = vec![0i32; AVX2_ROWS * sp];
        let mut p16 = vec![0i16; AVX2_ROWS * sp];
        let mut acc = vec![0i32; AVX2_ROWS * hd];
        for h in 0..n_heads {
            let off = h * hd;
            // kp[(j / 16) * 16 * hd + (c / 2) * 32 + (j % 16) * 2 + c % 2] = k[j][off + c].
            super::pack_pairs16(&k[off..], d, s, hd, &mut kp);
            // vp[(c / 16) * 16 * sp + (j / 2) * 32 + (c % 16) * 2 + j % 2] = v[j][off + c],
            // 2 keys x 16 channels at a time; keys past s stay 0.
            for b in 0..hd / 16 {
                for jp in 0..s.div_ceil(2) {
                    let row = |j: usize| {
                        if j < s {
                            _mm_loadu_si128(v.as_ptr().add(j * d + off + b * 16).cast())
                        } else {
                            _mm_setzero_si128()
                        }
                    };
                    let (r0, r1) = (row(2 * jp), row(2 * jp + 1));
                    let dst = vp.as_mut_ptr().add(b * 16 * sp + jp * 32);
                    _mm_storeu_si128(dst.cast(), _mm_unpacklo_epi8(r0, r1));
                    _mm_storeu_si128(dst.add(16).cast(), _mm_unpackhi_epi8(r0, r1));
                }
            }
            for (t, i) in (first..s).enumerate() {
                for (dst, &x) in q16[t * hd..][..hd].iter_mut().zip(&q[i * d + off..][..hd]) {
                    *dst = x as i16;
                }
            }
            let mut i0 = first;
            while i0 < s {
                let rr = (s - i0).min(AVX2_ROWS);
                let last = i0 + rr - 1;
                // Scores of keys 0..=last, 16 keys per block.
                let qp = q16.as_ptr().add((i0 - first) * hd);
                for kb in 0..(last + 1).div_ceil(16) {
                    tile_avx2(rr, qp, hd, hd, kp.as_ptr().add(kb * 16 * hd), sc.as_mut_ptr().add(kb * 16), sp);
                }
                let klen = (last + 1).div_ceil(8) * 8;
                for r in 0..rr {
                    softmax_avx2(&mut sc[r * sp..][..sp], i0 + r + 1, sh, klen, &mut p16[r * sp..][..sp]);
                }
                for b in 0..hd / 16 {
                    let wp = vp.as_ptr().add(b * 16 * sp);
                    tile_avx2(rr, p16.as_ptr(), sp, klen, wp, acc.as_mut_ptr().add(b * 16), hd);
                }
                for r in 0..rr {
                    let out = &mut att[(i0 + r) * d + off..][..hd];
                    for (o, &a) in out.iter_mut().zip(&acc[r * hd..][..hd]) {
                        *o = clamp_i8(round_shift(a, PROB_BITS));
                    }
                }
                i0 += rr;
            }
        }
    }

    /// The softmax of `forward::attention` on the first `n` scores of `s`: writes the
    /// Q7 probabilities (0..=127) to `p[..n]` and zeros to `p[n..klen]`.
    /// `s` and `p` hold at least `klen` rounded up to 8 entries; `s` is overwritten.
    #[target_feature(enable = "avx2")]
    unsafe fn softmax_avx2(s: &mut [i32], n: usize, sh: i32, klen: usize, p: &mut [i16]) {
        use crate::forward::ops::POW2_FRAC;
        let chunks = klen.div_ceil(8);
        assert!(s.len() >= chunks * 8 && p.len() >= chunks * 8 && n <= klen);
        let max = s[..n].iter().copied().max().unwrap_or(0);
        let vmax = _mm256_set1_epi32(max);
        let shift = _mm256_set1_epi32(sh);
        let tab_lo = _mm256_loadu_si256(POW2_FRAC.as_ptr().cast());
        let tab_hi = _mm256_loadu_si256(POW2_FRAC.as_ptr().add(8).cast());
        let (seven, fifteen) = (_mm256_set1_epi32(7), _mm256_set1_epi32(15));
        let vn = _mm256_set1_epi32(n as i32);
        let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        // w_j = exp2_weight((max - s_j) >> sh): t >= 0 on valid lanes, and for
        // t >= 256 the shift t >> 4 >= 16 clears every table entry (< 2^16).
        let mut vsum = _mm256_setzero_si256();
        for c in 0..chunks {
            let ptr = s.as_mut_ptr().add(c * 8);
            let t = _mm256_srav_epi32(_mm256_sub_epi32(vmax, _mm256_loadu_si256(ptr.cast())), shift);
            let idx = _mm256_and_si256(t, fifteen);
            let frac = _mm256_blendv_epi8(
                _mm256_permutevar8x32_epi32(tab_lo, idx),
                _mm256_permutevar8x32_epi32(tab_hi, idx),
                _mm256_cmpgt_epi32(idx, seven),
            );
            let w = _mm256_srlv_epi32(frac, _mm256_srli_epi32::<4>(t));
            let valid = _mm256_cmpgt_epi32(vn, _mm256_add_epi32(iota, _mm256_set1_epi32((c * 8) as i32)));
            let w = _mm256_and_si256(w, valid);
            _mm256_storeu_si256(ptr.cast(), w);
            vsum = _mm256_add_epi32(vsum, w);
        }
        let r = _mm256_set1_epi32(((1u32 << 30) / hsum(vsum) as u32) as i32);
        let (round, cap) = (_mm256_set1_epi32(1 << 22), _mm256_set1_epi32(127));
        // p_j = min((w_j · r + 2^22) >> 23, 127); masked lanes give 0.
        for c in 0..chunks {
            let w = _mm256_loadu_si256(s.as_ptr().add(c * 8).cast());
            let pv = _mm256_srai_epi32::<23>(_mm256_add_epi32(_mm256_mullo_epi32(w, r), round));
            let pv = _mm256_min_epi32(pv, cap);
            let packed = _mm256_permute4x64_epi64::<0x08>(_mm256_packs_epi32(pv, pv));
            _mm_storeu_si128(p.as_mut_ptr().add(c * 8).cast(), _mm256_castsi256_si128(packed));
        }
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn hsum(v: __m256i) -> i32 {
        let x = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let x = _mm_add_epi32(x, _mm_shuffle_epi32::<0x4E>(x));
        let x = _mm_add_epi32(x, _mm_shuffle_epi32::<0xB1>(x));
        _mm_cvtsi128_si32(x)
    }

    /// [`block_avx2`] for `rr` (1..=[`AVX2_ROWS`]) rows.
    #[target_feature(enable = "avx2")]
    unsafe fn tile_avx2(rr: usize, x: *const i16, xs: usize, k: usize, wp: *const i8, out: *mut i32, n: usize) {
        const _: () = assert!(AVX2_ROWS >= 4 && AVX2_ROWS <= 6);
        match rr {
            1 => block_avx2::<1>(x, xs, k, wp, out, n),
            2 => block_avx2::<2>(x, xs, k, wp, out, n),
            3 => block_avx2::<3>(x, xs, k, wp, out, n),
            4 => block_avx2::<4>(x, xs, k, wp, out, n),
            5 => block_avx2::<5>(x, xs, k, wp, out, n),
            _ => block_avx2::<AVX2_ROWS>(x, xs, k, wp, out, n),
        }
    }

    /// `out[r * n + j] = Σ_{kk < k} x[r * xs + kk] · w[j][kk]` for `R` input rows
    /// (as i16, row stride `xs`) and the 16 outputs `j` of the AVX2-packed block at
    /// `wp` (group stride 32 bytes). `k % 2 == 0`. Exact for any int8 values: each
    /// `vpmaddwd` lane adds 2 products of at most 128² into i32.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn block_avx2<const R: usize>(x: *const i16, xs: usize, k: usize, wp: *const i8, out: *mut i32, n: usize) {
        let mut acc = [[_mm256_setzero_si256(); 2]; R];
        let mut kk = 0;
        while kk < k {
            let g = wp.add(kk * 16);
            let w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(g.cast()));
            let w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(g.add(16).cast()));
            for (r, ar) in acc.iter_mut().enumerate() {
                let xb = _mm256_set1_epi32(x.add(r * xs + kk).cast::<i32>().read_unaligned());
                ar[0] = _mm256_add_epi32(ar[0], _mm256_madd_epi16(w0, xb));
                ar[1] = _mm256_add_epi32(ar[1], _mm256_madd_epi16(w1, xb));
            }
            kk += 2;
        }
        for (r, ar) in acc.iter().enumerate() {
            _mm256_storeu_si256(out.add(r * n).cast(), ar[0]);
            _mm256_storeu_si256(out.add(r * n + 8).cast(), ar[1]);
        }
    }
}

#[cfg(all(test, target_arch = "x86_64", feature = "std"))]
mod tests {
    use super::*;
    use alloc::vec;

    /// Portable emulation of the AVX-512 intrinsics the VNNI kernels use, following
    /// Intel's definitions, so that the kernels' logic (layouts, offsets, masks,
    /// softmax steps) is tested on every x86_64 machine, AVX-512 or not.
    #[allow(non_camel_case_types, dead_code, clippy::missing_safety_doc)]
    mod emu {
        pub use core::arch::x86_64::{
            __m128i, _mm_loadu_si128, _mm_setzero_si128, _mm_storeu_si128, _mm_unpackhi_epi16, _mm_unpackhi_epi8,
            _mm_unpacklo_epi16, _mm_unpacklo_epi8,
        };

        use crate::forward::matmul::PackedMatrix;

        #[derive(Clone, Copy, Debug)]
        #[repr(C, align(64))]
        pub struct __m512i([i32; 16]);
        pub type __mmask16 = u16;

        fn map(a: __m512i, f: impl Fn(i32) -> i32) -> __m512i {
            __m512i(a.0.map(f))
        }
        fn zip(a: __m512i, b: __m512i, f: impl Fn(i32, i32) -> i32) -> __m512i {
            __m512i(core::array::from_fn(|i| f(a.0[i], b.0[i])))
        }
        pub fn _mm512_setzero_si512() -> __m512i {
            __m512i([0; 16])
        }
        pub fn _mm512_set1_epi32(v: i32) -> __m512i {
            __m512i([v; 16])
        }
        pub unsafe fn _mm512_loadu_si512(p: *const __m512i) -> __m512i {
            p.read_unaligned()
        }
        pub unsafe fn _mm512_storeu_si512(p: *mut __m512i, a: __m512i) {
            p.write_unaligned(a)
        }
        /// Per lane: src + Σ of 4 products of unsigned bytes of `a` by signed bytes of `b`.
        pub fn _mm512_dpbusd_epi32(src: __m512i, a: __m512i, b: __m512i) -> __m512i {
            __m512i(core::array::from_fn(|i| {
                let (x, y) = (a.0[i].to_le_bytes(), b.0[i].to_le_bytes());
                (0..4).fold(src.0[i], |acc, t| acc.wrapping_add(x[t] as i32 * y[t] as i8 as i32))
            }))
        }
        pub fn _mm512_add_epi32(a: __m512i, b: __m512i) -> __m512i {
            zip(a, b, i32::wrapping_add)
        }
        pub fn _mm512_sub_epi32(a: __m512i, b: __m512i) -> __m512i {
            zip(a, b, i32::wrapping_sub)
        }
        pub fn _mm512_mullo_epi32(a: __m512i, b: __m512i) -> __m512i {
            zip(a, b, i32::wrapping_mul)
        }
        pub fn _mm512_min_epi32(a: __m512i, b: __m512i) -> __m512i {
            zip(a, b, i32::min)
        }
        pub fn _mm512_max_epi32(a: __m512i, b: __m512i) -> __m512i {
            zip(a, b, i32::max)
        }
        pub fn _mm512_and_si512(a: __m512i, b: __m512i) -> __m512i {
            zip(a, b, |x, y| x & y)
        }
        /// Arithmetic shift by per-lane counts; counts above 31 fill with the sign.
        pub fn _mm512_srav_epi32(a: __m512i, c: __m512i) -> __m512i {
            zip(a, c, |x, n| if n as u32 > 31 { x >> 31 } else { x >> n })
        }
        /// Logical shift by per-lane counts; counts above 31 give 0.
        pub fn _mm512_srlv_epi32(a: __m512i, c: __m512i) -> __m512i {
            zip(a, c, |x, n| if n as u32 > 31 { 0 } else { ((x as u32) >> n) as i32 })
        }
        pub fn _mm512_srli_epi32<const IMM8: u32>(a: __m512i) -> __m512i {
            map(a, |x| if IMM8 > 31 { 0 } else { ((x as u32) >> IMM8) as i32 })
        }
        pub fn _mm512_srai_epi32<const IMM8: u32>(a: __m512i) -> __m512i {
            map(a, |x| if IMM8 > 31 { x >> 31 } else { x >> IMM8 })
        }
        pub fn _mm512_permutexvar_epi32(idx: __m512i, a: __m512i) -> __m512i {
            __m512i(core::array::from_fn(|i| a.0[(idx.0[i] & 15) as usize]))
        }
        pub fn _mm512_mask_max_epi32(src: __m512i, k: __mmask16, a: __m512i, b: __m512i) -> __m512i {
            __m512i(core::array::from_fn(|i| if k >> i & 1 == 1 { a.0[i].max(b.0[i]) } else { src.0[i] }))
        }
        pub fn _mm512_maskz_mov_epi32(k: __mmask16, a: __m512i) -> __m512i {
            __m512i(core::array::from_fn(|i| if k >> i & 1 == 1 { a.0[i] } else { 0 }))
        }
        pub fn _mm512_reduce_max_epi32(a: __m512i) -> i32 {
            a.0.into_iter().max().unwrap()
        }
        pub fn _mm512_reduce_add_epi32(a: __m512i) -> i32 {
            a.0.into_iter().fold(0, i32::wrapping_add)
        }
        /// Truncates each lane to its low byte (`vpmovdb`).
        pub fn _mm512_cvtepi32_epi8(a: __m512i) -> __m128i {
            let b: [u8; 16] = a.0.map(|x| x as u8);
            // SAFETY: same size, any bits are valid.
            unsafe { core::mem::transmute(b) }
        }

        macro_rules! simd {
            ($($i:item)*) => { $( $i )* };
        }

        vnni_matmul_kernel!();

        pub(super) mod attention {
            use super::*;
            include!("attention_simd.rs");
        }
    }

    /// xorshift64*: deterministic test data without extra dependencies.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn i8(&mut self) -> i8 {
            (self.next() >> 56) as u8 as i8
        }
        /// An activation (or consensus weight) in [-127, 127].
        fn act(&mut self) -> i8 {
            (((self.next() >> 32) % 255) as i32 - 127) as i8
        }
    }

    /// A row-major matrix (the consensus form; each backend packs it itself).
    fn matrix(rows: usize, cols: usize, data: Vec<i8>) -> Matrix {
        Matrix { rows, cols, data }
    }

    /// The real SIMD backends this CPU runs (besides the scalar reference).
    fn simd_backends() -> Vec<Backend> {
        Backend::available().into_iter().filter(|&b| b != Backend::Scalar).collect()
    }

    /// Every kernel (real ones this CPU has, each on its own layout, and the
    /// emulated VNNI one unless the shape is too big for it) against the scalar loop.
    fn check(rows: usize, x: &[i8], w: &Matrix, emulate: bool) {
        let mut want = vec![0i32; rows * w.rows];
        Backend::Scalar.matmul(x, rows, w, &mut want);
        // Unavailable backends fall back to the scalar loop: always safe to call.
        for b in [Backend::Avx2, Backend::Avx512Vnni] {
            let pb = b.pack(w);
            let mut got = vec![1i32; rows * w.rows];
            b.matmul_packed(x, rows, w, &pb, &mut got);
            assert!(got == want, "{b:?} rows={rows} n={} k={}", w.rows, w.cols);
            // Another backend's layout is never misread: the scalar loop runs.
            for other in [Backend::Avx2, Backend::Avx512Vnni, Backend::Scalar] {
                let mut got = vec![1i32; rows * w.rows];
                other.matmul_packed(x, rows, w, &pb, &mut got);
                assert!(got == want, "{other:?} on {b:?} layout rows={rows} n={} k={}", w.rows, w.cols);
            }
        }
        // The emulated kernel is called directly: only on a VNNI-packed matrix.
        let pv = Backend::Avx512Vnni.pack(w);
        if emulate && pv.layout == Layout::Vnni {
            let mut got = vec![1i32; rows * w.rows];
            unsafe { emu::matmul_vnni(x, rows, &pv, &mut got) };
            assert!(got == want, "emulated vnni rows={rows} n={} k={}", w.rows, w.cols);
        }
    }

    #[test]
    fn simd_matmul_matches_scalar_on_random_shapes() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for &rows in &[1usize, 2, 3, 4, 5, 6, 7, 13, 64, 65, 300] {
            for &n in &[16usize, 32, 48, 64, 80, 256] {
                for &k in &[16usize, 32, 64, 256, 1024, 4096] {
                    if rows * k > 300 * 1024 {
                        continue;
                    }
                    let w = matrix(n, k, (0..n * k).map(|_| rng.act()).collect());
                    assert!(Backend::Avx2.pack(&w).layout == Layout::Avx2);
                    assert!(Backend::Avx512Vnni.pack(&w).layout == Layout::Vnni);
                    let x: Vec<i8> = (0..rows * k).map(|_| rng.act()).collect();
                    check(rows, &x, &w, rows * n * k <= 8 << 20);
                }
            }
        }
        // Any i8 activation (-128 included) is exact too.
        let w = matrix(32, 64, (0..32 * 64).map(|_| rng.act()).collect());
        let x: Vec<i8> = (0..9 * 64).map(|_| rng.i8()).collect();
        check(9, &x, &w, true);
    }

    #[test]
    fn simd_matmul_matches_scalar_on_extreme_values() {
        for &(rows, n, k) in &[(1usize, 16usize, 4096usize), (3, 64, 4096), (64, 256, 1024), (7, 32, 16)] {
            for &xv in &[-127i8, 127, -128, 0, 1, -1] {
                for &wv in &[-128i8, 127, -127, 0, 1, -1] {
                    let w = matrix(n, k, vec![wv; n * k]);
                    let x = vec![xv; rows * k];
                    check(rows, &x, &w, rows * n * k <= 1 << 20);
                    for b in simd_backends() {
                        let mut out = vec![0i32; rows * n];
                        b.matmul(&x, rows, &w, &mut out);
                        assert!(out.iter().all(|&o| o == xv as i32 * wv as i32 * k as i32));
                    }
                }
            }
        }
        // Alternating signs so that partial sums swing both ways.
        let (rows, n, k) = (5, 48, 4096);
        let w = matrix(n, k, (0..n * k).map(|i| if i % 3 == 0 { -127 } else { 127 }).collect());
        let x: Vec<i8> = (0..rows * k).map(|i| if i % 2 == 0 { -127 } else { 127 }).collect();
        check(rows, &x, &w, true);
        // Equal-sign neighbours: every pair sum at its largest (±2 · 128², where
        // 16-bit sums would saturate), with zeros mixed in.
        for (xa, xb) in [(-128i8, -128i8), (127, 127), (-127, -127), (-128, 127), (0, -128), (127, 0)] {
            for (wa, wb) in [(127i8, 127i8), (-127, -127), (-128, -128), (127, -128), (0, 127), (-128, 0)] {
                let (rows, n, k) = (6, 32, 256);
                let w = matrix(n, k, (0..n * k).map(|i| if i % 2 == 0 { wa } else { wb }).collect());
                let x: Vec<i8> = (0..rows * k).map(|i| if i % 2 == 0 { xa } else { xb }).collect();
                check(rows, &x, &w, true);
                let want = (xa as i32 * wa as i32 + xb as i32 * wb as i32) * (k as i32 / 2);
                for b in simd_backends() {
                    let mut out = vec![0i32; rows * n];
                    b.matmul(&x, rows, &w, &mut out);
                    assert!(out.iter().all(|&o| o == want), "{b:?} x=({xa},{xb}) w=({wa},{wb})");
                }
            }
        }
    }

    #[test]
    fn simd_matmul_is_exact_for_every_product() {
        // w[j][p] runs through all 256 int8 weights in every output j; row p of x is
        // one-hot at p with value xv, so out[p][j] = xv · w[j][p].
        let (n, k) = (16usize, 256usize);
        let wv = |j: usize, p: usize| ((p + 17 * j) % 256) as i32 - 128;
        let w = matrix(n, k, (0..n * k).map(|i| wv(i / k, i % k) as i8).collect());
        for xv in i8::MIN..=i8::MAX {
            let mut x = vec![0i8; k * k];
            for p in 0..k {
                x[p * k + p] = xv;
            }
            for b in simd_backends() {
                let mut out = vec![1i32; k * n];
                b.matmul(&x, k, &w, &mut out);
                for p in 0..k {
                    for j in 0..n {
                        assert_eq!(out[p * n + j], xv as i32 * wv(j, p), "{b:?} x={xv} p={p} j={j}");
                    }
                }
            }
            if xv % 32 == 0 {
                check(k, &x, &w, true);
            }
        }
    }

    #[test]
    fn unpacked_or_odd_shapes_fall_back_to_scalar() {
        let mut rng = Rng(5);
        // 24 rows is no multiple of 16: nothing packed, the scalar loop runs.
        let w = matrix(24, 8, (0..24 * 8).map(|_| rng.act()).collect());
        for b in Backend::available() {
            let p = b.pack(&w);
            assert!(p.layout == Layout::RowMajor && p.packed_len() == 0 && !b.runs_simd(&w, &p));
        }
        let x: Vec<i8> = (0..3 * 8).map(|_| rng.act()).collect();
        check(3, &x, &w, false);
        // A matrix given in the row-major form to an x86 SIMD backend.
        let w = matrix(16, 16, (0..256).map(|_| rng.act()).collect());
        let x: Vec<i8> = (0..2 * 16).map(|_| rng.act()).collect();
        let mut want = vec![0i32; 2 * 16];
        Backend::Scalar.matmul(&x, 2, &w, &mut want);
        for b in simd_backends() {
            let mut got = vec![1i32; 2 * 16];
            let p = Backend::Scalar.pack(&w);
            assert!(!b.runs_simd(&w, &p));
            b.matmul_packed(&x, 2, &w, &p, &mut got);
            assert_eq!(got, want, "{b:?}");
        }
    }

    #[test]
    fn x86_layouts_follow_the_module_docs() {
        let mut rng = Rng(99);
        // Column counts with and without the 16-column fast paths.
        for (rows, cols) in [(16usize, 4usize), (32, 20), (16, 16), (48, 64), (32, 1040)] {
            let w = matrix(rows, cols, (0..rows * cols).map(|_| rng.i8()).collect());
            let a = Backend::Avx2.pack(&w);
            let v = Backend::Avx512Vnni.pack(&w);
            assert_eq!((a.layout, v.layout), (Layout::Avx2, Layout::Vnni));
            assert_eq!((a.bytes.len(), v.bytes.len()), (rows * cols, rows * (cols + 4)));
            for j in 0..rows {
                let (nb, jj) = (j / 16, j % 16);
                for k in 0..cols {
                    let x = w.data[j * cols + k] as u8;
                    assert_eq!(a.bytes[nb * 16 * cols + (k / 2) * 32 + jj * 2 + k % 2], x, "avx2 {rows}x{cols}");
                    assert_eq!(v.bytes[(nb * (cols / 4) + k / 4) * 64 + jj * 4 + k % 4], x, "vnni {rows}x{cols}");
                }
                let sum: i32 = w.row(j).iter().map(|&x| x as i32).sum();
                assert_eq!(v.bytes[rows * cols + 4 * j..][..4], (sum * 128).to_le_bytes());
            }
        }
    }

    #[test]
    #[should_panic(expected = "packed matrix of another shape")]
    fn a_layout_of_another_shape_is_refused() {
        let w = matrix(16, 16, vec![1; 256]);
        let other = Backend::Avx2.pack(&matrix(32, 8, vec![1; 256]));
        Backend::Avx2.matmul_packed(&[0; 16], 1, &w, &other, &mut [0; 16]);
    }

    #[test]
    fn each_backend_packs_the_model_weights_itself() {
        use crate::forward::PackedModel;
        use crate::{Model, ModelSpec};
        let m = Model::derive(&ModelSpec::DEVNET, &[7; 32]).unwrap();
        for b in [Backend::Scalar, Backend::Avx2, Backend::Avx512Vnni] {
            let p = PackedModel::new(&m, b);
            let l = &p.layers[0];
            let want = match b {
                Backend::Scalar => Layout::RowMajor,
                Backend::Avx2 => Layout::Avx2,
                Backend::Avx512Vnni => Layout::Vnni,
            };
            for w in [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_up, &l.w_down] {
                assert_eq!(w.layout, want, "{b:?}");
            }
            assert_eq!(l.w_up, b.pack(&m.layers[0].w_up));
            // Every matrix on the backend's own kernel wherever the CPU has it.
            let simd = b != Backend::Scalar && Backend::available().contains(&b);
            assert_eq!(p.simd_matrices(), if simd { 6 * m.layers.len() } else { 0 }, "{b:?}");
        }
        assert_eq!(simd_backend_name(), Backend::detect().name());
        assert_eq!(Backend::available().last(), Some(&Backend::detect()));
        assert_eq!(Backend::available()[0], Backend::Scalar);
    }

    #[test]
    fn simd_attention_matches_scalar() {
        use crate::forward::Scratch;
        let mut rng = Rng(77);
        for &(s, d, hd) in &[
            (1usize, 16usize, 16usize),
            (3, 32, 16),
            (16, 64, 16),
            (17, 64, 32),
            (64, 256, 32),
            (64, 128, 64),
            (100, 64, 16),
            (8, 128, 64),
        ] {
            for variant in 0..5 {
                let gen = |rng: &mut Rng| -> Vec<i8> {
                    (0..s * d)
                        .map(|_| match variant {
                            0 => rng.act(),
                            1 => 127,
                            2 => (rng.act() as i32 / 16) as i8,
                            3 => [-127i8, 127, 0][(rng.next() % 3) as usize],
                            // Any int8, -128 included (outside the activation range).
                            _ => rng.i8(),
                        })
                        .collect()
                };
                let (q, k, v) = (gen(&mut rng), gen(&mut rng), gen(&mut rng));
                for first in [0, s / 2, s - 1] {
                    let mut sc = Scratch {
                        x: Vec::new(),
                        h: Vec::new(),
                        q: q.clone(),
                        k: k.clone(),
                        v: v.clone(),
                        att: vec![0; s * d],
                        up: Vec::new(),
                        acc: Vec::new(),
                        scores: vec![0; s],
                        backend: Backend::Scalar,
                    };
                    super::super::attention(Backend::Scalar, hd, d, first, s, &mut sc, None);
                    let what = format!("s={s} d={d} hd={hd} first={first} variant={variant}");
                    let mut att = vec![0i8; s * d];
                    unsafe { emu::attention::attention(hd, d, first, s, &q, &k, &v, &mut att) };
                    assert!(att[first * d..] == sc.att[first * d..], "emulated: {what}");
                    for b in simd_backends() {
                        let mut att = vec![0i8; s * d];
                        assert!(b.attention(hd, d, first, s, &q, &k, &v, &mut att));
                        assert!(att[first * d..] == sc.att[first * d..], "{b:?}: {what}");
                    }
                }
            }
        }
        let z = [0i8; 256];
        assert!(!Backend::Avx512Vnni.attention(8, 64, 0, 4, &z, &z, &z, &mut [0; 256]));
        assert!(!Backend::Avx2.attention(8, 64, 0, 4, &z, &z, &z, &mut [0; 256]));
        assert!(!Backend::Scalar.attention(16, 64, 0, 4, &z, &z, &z, &mut [0; 256]));
    }

    #[test]
    fn forward_is_identical_on_every_backend() {
        use crate::forward::{forward, Scratch};
        use crate::puzzle::input_tokens;
        use crate::{Model, ModelSpec};
        for (spec, seeds, nonces) in [(ModelSpec::DEVNET, 4u8, 50u64), (ModelSpec::MAINNET, 2, 4)] {
            for seed in 0..seeds {
                let model = Model::derive(&spec, &[seed; 32]).unwrap();
                let mut reference = Scratch::with_backend(&model, Backend::Scalar);
                let mut others: Vec<Scratch> =
                    simd_backends().into_iter().map(|b| Scratch::with_backend(&model, b)).collect();
                let mut tokens = vec![0u16; spec.seq_len as usize];
                let d = spec.d_model as usize;
                for nonce in 0..nonces {
                    let mut template = [0u8; 152];
                    template[..8].copy_from_slice(&(nonce * 31 + seed as u64).to_le_bytes());
                    input_tokens(&spec, &template, nonce, &mut tokens);
                    let mut want = vec![0i8; d];
                    forward(&model, &tokens, &mut reference, &mut want);
                    for sc in others.iter_mut() {
                        let mut got = vec![0i8; d];
                        forward(&model, &tokens, sc, &mut got);
                        assert_eq!(got, want, "{:?} seed {seed} nonce {nonce}", sc.backend());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;

    #[test]
    fn pack_pairs16_follows_its_formula() {
        // 21 rows (a partial last block) of k = 6 values at stride 9, values distinct.
        let (n, k, stride) = (21usize, 6usize, 9usize);
        let src: Vec<u16> = (0..n * stride).map(|i| i as u16 + 1).collect();
        let mut dst = vec![0u16; n.div_ceil(16) * 16 * k];
        pack_pairs16(&src, stride, n, k, &mut dst);
        let mut seen = 0;
        for j in 0..n {
            for c in 0..k {
                assert_eq!(dst[(j / 16) * 16 * k + (c / 2) * 32 + (j % 16) * 2 + c % 2], src[j * stride + c]);
                seen += 1;
            }
        }
        // Padding rows of the last block are left untouched (zero here).
        assert_eq!(dst.iter().filter(|&&v| v != 0).count(), seen);
    }
}
