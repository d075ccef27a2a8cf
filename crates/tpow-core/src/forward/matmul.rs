//! Matrix products of int8 activations with int8 weights into i32.
//!
//! Integer sums are exact, so every kernel here returns the same bits as the
//! scalar loop as long as no partial sum overflows i32, which the forward pass's
//! bounds rule out (|sum| <= 4096 · 127 · 128 < 2^31).

use crate::model::Matrix;

/// Which kernels run the matrix products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Portable loops (the reference; also what wasm32 runs).
    Scalar,
}

impl Backend {
    /// The fastest backend this CPU supports.
    pub fn detect() -> Self {
        Backend::Scalar
    }

    /// `out[r * w.rows + j] = Σ_k x[r * w.cols + k] · w[j][k]` for `rows` rows of `x`.
    pub fn matmul(self, x: &[i8], rows: usize, w: &Matrix, out: &mut [i32]) {
        match self {
            Backend::Scalar => matmul_scalar(x, rows, w, out),
        }
    }
}

/// Name of the backend [`Backend::detect`] picks, for logs and benchmarks.
pub fn simd_backend_name() -> &'static str {
    match Backend::detect() {
        Backend::Scalar => "scalar",
    }
}

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
