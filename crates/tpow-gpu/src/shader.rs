//! WGSL source of the forward pass, generated per model shape.
//!
//! Every constant of the forward pass (shapes, shifts) is written into the source
//! from `tpow-core`, and the GELU and 2^-x tables are uploaded from its constants
//! ([`tables`]), so the kernels cannot drift from the reference: change a constant
//! there and the GPU follows. The kernels mirror `tpow_core::forward` line by line;
//! the comments there are the specification.
//!
//! Portability rules (the reason for several odd-looking choices below):
//! - only i32/u32 arithmetic: no floats, no 64-bit integers, no atomics;
//! - no i32 `/` or `%` (one driver got them wrong); every index division is by a
//!   power of two and written as a shift or mask, and the two real divisions of the
//!   forward pass (RMS norm and softmax) go through `udiv`, a shift-subtract loop
//!   that only uses shifts, compares and subtractions;
//! - int8 values travel packed four to a `u32`; lanes are unpacked with
//!   `extractBits` on an `i32`, which sign-extends;
//! - every reduction is a sequential loop in one invocation, so the summation order
//!   is fixed (integer sums are exact anyway: the bounds in `tpow_core::forward::ops`
//!   exclude overflow).
//!
//! All entry points share one bind group layout (a uniform and four storage
//! buffers), so one pipeline layout serves them all and no two entry points declare
//! different variables at the same binding.

use core::fmt::Write;

use tpow_core::forward::ops::{
    act_shift, residual_shift, score_shift, ACT_MAX, EMBED_SHIFT, GELU_TABLE, NORM_RMS_LOG2, POW2_FRAC, PROB_BITS,
    RESIDUAL_MAX,
};
use tpow_core::ModelSpec;

/// Word offset of the GELU table in the tables buffer ([`tables`]).
const GELU_AT: u32 = 0;
/// Word offset of the 2^(-f/16) table in the tables buffer.
const POW2_AT: u32 = 256;

/// The lookup tables of the forward pass, as the kernels read them (binding `in_c` of
/// the MLP-up and attention kernels): `GELU_TABLE` then `POW2_FRAC`, one i32 per
/// entry, straight from `tpow-core`'s constants.
///
/// Why a buffer and not a `const` array in the WGSL: indexing a WGSL `const` array
/// with a runtime value makes naga copy the whole array into a local variable at each
/// use, which costs local memory on GPUs and took lavapipe's LLVM 150 s to compile for
/// the 16 GELU lookups of one MLP kernel. A small storage buffer is cached like any
/// other read and is just as impossible to drift from the reference.
pub(crate) fn tables() -> Vec<u8> {
    GELU_TABLE.iter().map(|&v| v as i32).chain(POW2_FRAC).flat_map(i32::to_le_bytes).collect()
}

/// Invocations per workgroup of the one-dimensional kernels.
pub(crate) const LINEAR_WG: u32 = 64;
/// Workgroup width of the matrix products (over invocations along the outputs).
pub(crate) const MM_WG_X: u32 = 16;

/// How the matrix products and the attention divide their work.
///
/// `blocks: false` ([`MmShape::GPU`]) is the word-indexed kernel set: each
/// matrix-product invocation computes 4 outputs for `rows` rows, each attention
/// invocation one query. `blocks: true` ([`MmShape::CPU`]) reads activations and
/// weights 16 bytes per load and computes `groups` groups of 4 outputs for `rows` rows
/// per invocation, and each attention invocation serves several queries
/// ([`attn_queries`]) with every key and value word it loads.
///
/// Why two: the profile (`examples/gpu_profile.rs`) showed that on lavapipe a
/// storage-buffer load is a per-lane loop, so the loads per multiply-accumulate set
/// the speed and the arithmetic hardly counts; the blocked kernels cut them (16 x 16
/// outputs per invocation: 1/32 of a word per multiply-accumulate, against 1/8) and
/// run the mainnet pass in about a third of the CPU time. They are not used
/// elsewhere: a real GPU would spill that many accumulators out of its registers, and
/// SwiftShader (Chromium's software WebGPU) ran them slower than the word kernels and
/// took far longer to compile their unrolled code, where lavapipe compiles once into
/// Mesa's disk cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MmShape {
    /// Rows per matrix-product invocation in the kernels over every position.
    pub rows: u32,
    /// Groups of 4 outputs per matrix-product invocation.
    pub groups: u32,
    /// Workgroup height: row tiles per workgroup.
    pub wg_y: u32,
    /// The blocked kernels (16-byte loads, several queries per attention invocation).
    pub blocks: bool,
}

impl MmShape {
    /// For GPUs and SwiftShader: 4 outputs x 4 rows per invocation, 64-invocation
    /// workgroups, one query per attention invocation.
    pub(crate) const GPU: MmShape = MmShape { rows: 4, groups: 1, wg_y: 4, blocks: false };
    /// For lavapipe: 16 outputs x 16 rows per invocation, 16-invocation workgroups (a
    /// small matrix still makes several workgroups for the threads).
    pub(crate) const CPU: MmShape = MmShape { rows: 16, groups: 4, wg_y: 1, blocks: true };

    /// The shape for an adapter: [`MmShape::CPU`] on lavapipe (Mesa's llvmpipe).
    pub(crate) fn for_adapter(a: &crate::AdapterSummary) -> MmShape {
        if a.name.to_ascii_lowercase().contains("llvmpipe") {
            MmShape::CPU
        } else {
            MmShape::GPU
        }
    }

    /// Rows per matrix-product invocation of a kernel. The blocked last-block kernels
    /// take one (the last block has one row per item, so a verifier's single row is
    /// not computed many times); the word kernels keep their row count.
    pub(crate) fn rows_for(self, rows: Rows) -> u32 {
        match rows {
            Rows::Last if self.blocks => 1,
            _ => self.rows,
        }
    }
}

/// How the shader multiplies packed int8 vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DotImpl {
    /// WGSL's `dot4I8Packed` (language extension `packed_4x8_integer_dot_product`).
    Packed,
    /// Four `extractBits` products: exact on every adapter.
    Unpacked,
}

/// Which rows of each batch item a kernel touches: all `seq_len` positions, or only
/// the last one (the last block needs nothing else beyond its keys and values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rows {
    All,
    Last,
}

impl Rows {
    fn suffix(self) -> &'static str {
        match self {
            Rows::All => "all",
            Rows::Last => "last",
        }
    }

    /// Rows per batch item.
    pub(crate) fn per_item(self, spec: &ModelSpec) -> u32 {
        match self {
            Rows::All => spec.seq_len,
            Rows::Last => 1,
        }
    }
}

/// Entry point names, shared with the host code.
pub(crate) mod entry {
    pub const EMBED: &str = "embed";
    pub const NORM_ALL: &str = "norm_all";
    pub const NORM_LAST: &str = "norm_last";
    pub const NORM_OUT: &str = "norm_out";
    pub const MM_QKV: &str = "mm_qkv";
    pub const ATTN_ALL: &str = "attn_all";
    pub const ATTN_LAST: &str = "attn_last";
    pub const MM_WO_ALL: &str = "mm_wo_all";
    pub const MM_WO_LAST: &str = "mm_wo_last";
    pub const MM_UP_ALL: &str = "mm_up_all";
    pub const MM_UP_LAST: &str = "mm_up_last";
    pub const MM_DOWN_ALL: &str = "mm_down_all";
    pub const MM_DOWN_LAST: &str = "mm_down_last";
}

/// What a matrix product does with its i32 results.
enum Epilogue {
    /// `clamp_i8(round_shift(acc, shift))`, optionally through the GELU table, packed.
    Act { shift: u32, gelu: bool },
    /// `x = clamp(x + round_shift(acc, shift), ±RESIDUAL_MAX)` into the residual stream.
    Residual { shift: u32 },
}

fn log2(v: u32) -> u32 {
    debug_assert!(v.is_power_of_two());
    v.trailing_zeros()
}

/// The `requires` line and the shape constants every module starts with.
fn header(w: &mut String, spec: &ModelSpec, dot: DotImpl) {
    let (s, d) = (spec.seq_len, spec.d_model);
    let hd = d / spec.n_heads;
    if dot == DotImpl::Packed {
        w.push_str("requires packed_4x8_integer_dot_product;\n\n");
    }
    let _ = write!(
        w,
        "// Generated by tpow-gpu from tpow-core's constants; do not edit.
const S: u32 = {s}u;
const LOG2_S: u32 = {log2_s}u;
const D: u32 = {d}u;
const D4: u32 = {d4}u;
const LOG2_D: u32 = {log2_d}u;
const LOG2_D4: u32 = {log2_d4}u;
const QKV4: u32 = {qkv4}u;
const NH: u32 = {nh}u;
const LOG2_NH: u32 = {log2_nh}u;
const HD: u32 = {hd}u;
const HD4: u32 = {hd4}u;
const VOCAB_MASK: u32 = {vmask}u;
const EMBED_SHIFT: u32 = {EMBED_SHIFT}u;
const NORM_RMS_LOG2: u32 = {NORM_RMS_LOG2}u;
const SCORE_SHIFT: u32 = {score_shift}u;
const PROB_BITS: u32 = {PROB_BITS}u;
const ACT_MAX: i32 = {ACT_MAX}i;
const RESIDUAL_MAX: i32 = {RESIDUAL_MAX}i;
const LINEAR_WG: u32 = {LINEAR_WG}u;
const GELU_AT: u32 = {gelu_at}u;
const POW2_AT: u32 = {pow2_at}u;
",
        log2_s = log2(s),
        d4 = d / 4,
        log2_d = log2(d),
        log2_d4 = log2(d / 4),
        qkv4 = 3 * d / 4,
        nh = spec.n_heads,
        log2_nh = log2(spec.n_heads),
        hd4 = hd / 4,
        vmask = spec.vocab - 1,
        score_shift = score_shift(hd as usize),
        gelu_at = GELU_AT,
        pow2_at = POW2_AT,
    );
}

/// The WGSL module of every kernel but the matrix products ([`matmul_module`]) for
/// `spec` (the spec must be valid).
pub(crate) fn forward_module(spec: &ModelSpec, dot: DotImpl, shape: MmShape) -> String {
    let mut w = String::with_capacity(32 * 1024);
    header(&mut w, spec, dot);
    // Head widths of 4..=64 give HD4 >= 1; every other dimension is a power of two >= 16.
    w.push_str(&COMMON.replace("{BINDINGS}", BINDINGS));
    w.push_str(match dot {
        DotImpl::Packed => DOT_PACKED,
        DotImpl::Unpacked => DOT_UNPACKED,
    });
    w.push_str(FIXED_KERNELS);
    for rows in [Rows::All, Rows::Last] {
        if shape.blocks {
            attention(&mut w, spec, rows);
        } else {
            attention_per_query(&mut w, spec, rows);
        }
    }
    w
}

/// The WGSL module of the matrix products for `spec` (the spec must be valid): a
/// module of its own because the blocked kernels read their activations and weights
/// as `array<vec4<u32>>` (16 bytes per load instruction), where the other kernels
/// index single words of the same bindings.
pub(crate) fn matmul_module(spec: &ModelSpec, dot: DotImpl, shape: MmShape) -> String {
    let (d, f) = (spec.d_model, spec.d_ffn);
    let mut w = String::with_capacity(64 * 1024);
    header(&mut w, spec, dot);
    w.push_str(&COMMON.replace("{BINDINGS}", if shape.blocks { BINDINGS_VEC4 } else { BINDINGS }));
    let matmul = if shape.blocks { matmul } else { matmul_words };
    w.push_str(match dot {
        DotImpl::Packed => DOT_PACKED,
        DotImpl::Unpacked => DOT_UNPACKED,
    });
    let (d4, f4) = (d / 4, f / 4);
    let act_d = act_shift(d as usize);
    matmul(&mut w, spec, shape, entry::MM_QKV, Rows::All, d4, 3 * d4, Epilogue::Act { shift: act_d, gelu: false });
    for rows in [Rows::All, Rows::Last] {
        let name = |base: &str| format!("{base}_{}", rows.suffix());
        let wo = name("mm_wo");
        let up = name("mm_up");
        let down = name("mm_down");
        let res_d = residual_shift(d as usize);
        let res_f = residual_shift(f as usize);
        matmul(&mut w, spec, shape, &wo, rows, d4, d4, Epilogue::Residual { shift: res_d });
        matmul(&mut w, spec, shape, &up, rows, d4, f4, Epilogue::Act { shift: act_d, gelu: true });
        matmul(&mut w, spec, shape, &down, rows, f4, d4, Epilogue::Residual { shift: res_f });
    }
    w
}

/// Bindings, helpers and the integer building blocks of `tpow_core::forward::ops`.
/// The storage bindings as the word-indexed kernels declare them.
const BINDINGS: &str = "@group(0) @binding(1) var<storage, read> in_a: array<u32>;
@group(0) @binding(2) var<storage, read> in_b: array<u32>;
@group(0) @binding(3) var<storage, read> in_c: array<u32>;
@group(0) @binding(4) var<storage, read_write> dst: array<u32>;";

/// The same bindings for the matrix products: activations and weights four words
/// (16 bytes) per element, so that a load instruction moves four words. Every buffer
/// bound there is a multiple of 16 bytes long (rows of `d_model` or `d_ffn` int8).
const BINDINGS_VEC4: &str = "@group(0) @binding(1) var<storage, read> in_a: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> in_b: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> in_c: array<u32>;
@group(0) @binding(4) var<storage, read_write> dst: array<u32>;";

/// Bindings ([`BINDINGS`] at `{BINDINGS}`), helpers and the integer building blocks
/// of `tpow_core::forward::ops`.
const COMMON: &str = r#"
struct Params {
    // Batch items in this dispatch.
    batch: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
{BINDINGS}

// Lane t (0..4) of four packed int8, sign-extended.
fn lane(a: u32, t: u32) -> i32 {
    return extractBits(bitcast<i32>(a), 8u * t, 8u);
}

fn pack4(v: vec4<i32>) -> u32 {
    let u = bitcast<vec4<u32>>(v) & vec4<u32>(0xffu);
    return u.x | (u.y << 8u) | (u.z << 16u) | (u.w << 24u);
}

// (v + 2^(s-1)) >> s, arithmetic shift; 1 <= s <= 30.
fn round_shift(v: i32, s: u32) -> i32 {
    return (v + (1i << (s - 1u))) >> s;
}

fn clamp_i8(v: i32) -> i32 {
    return clamp(v, -ACT_MAX, ACT_MAX);
}

// floor(n / d) for d in 1..2^31, by restoring shift-subtract division: no division
// instruction, so no driver's integer division is trusted.
fn udiv(n: u32, d: u32) -> u32 {
    var q = 0u;
    var r = 0u;
    for (var i = 0u; i < 32u; i++) {
        let bit = 31u - i;
        r = (r << 1u) | ((n >> bit) & 1u);
        if (r >= d) {
            r = r - d;
            q = q | (1u << bit);
        }
    }
    return q;
}

// Floor of the square root, bit by bit (tpow_core::forward::ops::isqrt).
fn isqrt(n: u32) -> u32 {
    var rem = n;
    var root = 0u;
    var bit = 1u << 30u;
    while (bit > rem) {
        bit = bit >> 2u;
    }
    while (bit != 0u) {
        if (rem >= root + bit) {
            rem = rem - (root + bit);
            root = (root >> 1u) + bit;
        } else {
            root = root >> 1u;
        }
        bit = bit >> 2u;
    }
    return root;
}

// POW2_FRAC[t & 15] >> (t >> 4), zero from t = 256 on; t >= 0. The table is in_c.
fn exp2_weight(t: i32) -> i32 {
    if (t >= 256i) {
        return 0i;
    }
    return bitcast<i32>(in_c[POW2_AT + u32(t & 15i)]) >> u32(t >> 4u);
}

// One index per invocation of a 1-D kernel dispatched as a 2-D grid of LINEAR_WG-wide
// workgroups (a grid dimension holds at most 65535 workgroups).
fn linear_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * LINEAR_WG;
}
"#;

const DOT_PACKED: &str = r#"
fn dot4(a: u32, b: u32) -> i32 {
    return dot4I8Packed(a, b);
}
"#;

const DOT_UNPACKED: &str = r#"
fn dot4(a: u32, b: u32) -> i32 {
    let x = bitcast<i32>(a);
    let y = bitcast<i32>(b);
    return extractBits(x, 0u, 8u) * extractBits(y, 0u, 8u)
        + extractBits(x, 8u, 8u) * extractBits(y, 8u, 8u)
        + extractBits(x, 16u, 8u) * extractBits(y, 16u, 8u)
        + extractBits(x, 24u, 8u) * extractBits(y, 24u, 8u);
}
"#;

/// Embedding and RMS norm: the same for every shape (the shape is in the constants).
const FIXED_KERNELS: &str = r#"
// x[row] = (tok_emb[token] + pos_emb[p]) << EMBED_SHIFT.
// in_a: tokens (one u32 per row), in_b: token embedding, in_c: position embedding
// (both packed int8, D4 words per row); dst: residual stream (i32 bits, D per row).
@compute @workgroup_size(64)
fn embed(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_id(gid, nwg);
    if (idx >= params.batch * S * D4) {
        return;
    }
    let row = idx >> LOG2_D4;
    let c = idx & (D4 - 1u);
    let p = row & (S - 1u);
    let tok = in_a[row] & VOCAB_MASK;
    let te = in_b[tok * D4 + c];
    let pe = in_c[p * D4 + c];
    let base = row * D + 4u * c;
    for (var t = 0u; t < 4u; t++) {
        dst[base + t] = bitcast<u32>((lane(te, t) + lane(pe, t)) << EMBED_SHIFT);
    }
}

// rms_norm of the residual row at in_a[xbase..xbase + D] into packed int8 at
// dst[obase..obase + D4]; the sums run in index order in this one invocation.
fn norm_row(xbase: u32, obase: u32) {
    var ms = 0u;
    for (var i = 0u; i < D; i++) {
        let v = bitcast<i32>(in_a[xbase + i]);
        ms = ms + (bitcast<u32>(v * v) >> LOG2_D);
    }
    let r = max(isqrt(ms), 1u);
    let b = 32u - countLeadingZeros(r);
    let inv = bitcast<i32>(udiv(1u << (b + 14u), r));
    let s = b + 14u - NORM_RMS_LOG2;
    for (var c = 0u; c < D4; c++) {
        let o = xbase + 4u * c;
        let y = vec4<i32>(
            clamp_i8(round_shift(bitcast<i32>(in_a[o]) * inv, s)),
            clamp_i8(round_shift(bitcast<i32>(in_a[o + 1u]) * inv, s)),
            clamp_i8(round_shift(bitcast<i32>(in_a[o + 2u]) * inv, s)),
            clamp_i8(round_shift(bitcast<i32>(in_a[o + 3u]) * inv, s)),
        );
        dst[obase + c] = pack4(y);
    }
}

// Every row: in_a = residual stream, dst = normalised activations (same row index).
@compute @workgroup_size(64)
fn norm_all(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = linear_id(gid, nwg);
    if (row >= params.batch * S) {
        return;
    }
    norm_row(row * D, row * D4);
}

// The last position of each item only.
@compute @workgroup_size(64)
fn norm_last(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let item = linear_id(gid, nwg);
    if (item >= params.batch) {
        return;
    }
    let row = item * S + S - 1u;
    norm_row(row * D, row * D4);
}

// The final norm: the consensus output, D int8 per item, packed at dst[item * D4].
@compute @workgroup_size(64)
fn norm_out(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let item = linear_id(gid, nwg);
    if (item >= params.batch) {
        return;
    }
    let row = item * S + S - 1u;
    norm_row(row * D, item * D4);
}
"#;

/// `rows` positions of each item: memory row of the `r`-th row handled, as WGSL.
fn mem_row_expr(spec: &ModelSpec, rows: Rows, r: &str) -> String {
    match rows {
        Rows::All => r.to_string(),
        Rows::Last => format!("({r} * S + {})", spec.seq_len - 1),
    }
}

/// A matrix product `dst = epilogue(src · Wᵀ)`: `in_a` holds the packed int8 input
/// rows (`k4` words each, read 4 words at a time), `in_b` the weights packed k-major
/// (word `k * n4 * 4 + 4 G + t` holds inputs `4k..4k+4` of output `4G + t`, so the
/// four outputs of a group at one input word are one 16-byte element). Invocation
/// `g` computes output groups `g * groups ..` for a tile of rows ([`MmShape`]), 4
/// input words per step. Integer sums are exact, so the order of the additions does
/// not change the result.
#[allow(clippy::too_many_arguments)]
fn matmul(w: &mut String, spec: &ModelSpec, shape: MmShape, name: &str, rows: Rows, k4: u32, n4: u32, epi: Epilogue) {
    const C: [&str; 4] = ["x", "y", "z", "w"];
    let per_item = rows.per_item(spec);
    let r_n = shape.rows_for(rows);
    let cg = shape.groups;
    let k16 = k4 / 4;
    let _ = write!(
        w,
        "
@compute @workgroup_size({MM_WG_X}, {wg_y})
fn {name}(@builtin(global_invocation_id) gid: vec3<u32>) {{
    let g = gid.x * {cg}u;
    let n_rows = params.batch * {per_item}u;
    let tile = gid.y * {r_n}u;
    if (g >= {n4}u || tile >= n_rows) {{
        return;
    }}
",
        wg_y = shape.wg_y,
    );
    // Rows past the end of the batch re-read the last row; their results are dropped.
    for t in 0..r_n {
        let r = format!("min(tile + {t}u, n_rows - 1u)");
        let _ = writeln!(w, "    let m{t} = {};", mem_row_expr(spec, rows, &r));
        let _ = writeln!(w, "    let xb{t} = m{t} * {k16}u;");
        for c in 0..cg {
            let _ = writeln!(w, "    var a{t}_{c} = vec4<i32>(0i);");
        }
    }
    let _ = writeln!(w, "    for (var kq = 0u; kq < {k16}u; kq++) {{\n        let wb = kq * {}u + g;", 4 * n4);
    for kk in 0..4 {
        for c in 0..cg {
            let _ = writeln!(w, "        let w{kk}_{c} = in_b[wb + {}u];", kk * n4 + c);
        }
    }
    for t in 0..r_n {
        let _ = writeln!(w, "        let x{t} = in_a[xb{t} + kq];");
        for c in 0..cg {
            let sums: Vec<String> = C
                .iter()
                .map(|o| {
                    (0..4).map(|kk| format!("dot4(x{t}.{}, w{kk}_{c}.{o})", C[kk])).collect::<Vec<_>>().join(" + ")
                })
                .collect();
            let _ = writeln!(
                w,
                "        a{t}_{c} = a{t}_{c} + vec4<i32>(\n            {},\n        );",
                sums.join(",\n            ")
            );
        }
    }
    w.push_str("    }\n");
    for t in 0..r_n {
        let _ = writeln!(w, "    if (tile + {t}u < n_rows) {{");
        for c in 0..cg {
            let acc = format!("a{t}_{c}");
            let (at, o, base) =
                (format!("m{t} * {n4}u + g + {c}u"), format!("o{t}_{c}"), format!("m{t} * D + 4u * (g + {c}u)"));
            epilogue(w, &epi, &acc, &at, &o, &base);
        }
        w.push_str("    }\n");
    }
    w.push_str("}\n");
}

/// Writes `epi` for the `vec4<i32>` accumulator `acc`: an activation packed into
/// `dst[at]`, or the four residual adds at `dst[o + lane]` with `let o = base`. One
/// text for both matrix-product shapes, so they cannot drift apart.
fn epilogue(w: &mut String, epi: &Epilogue, acc: &str, at: &str, o: &str, base: &str) {
    const C: [&str; 4] = ["x", "y", "z", "w"];
    match *epi {
        Epilogue::Act { shift, gelu } => {
            let lanes: Vec<String> = C
                .iter()
                .map(|c| {
                    let v = format!("clamp_i8(round_shift({acc}.{c}, {shift}u))");
                    if gelu {
                        format!("bitcast<i32>(in_c[GELU_AT + u32({v} + 128i)])")
                    } else {
                        v
                    }
                })
                .collect();
            let _ = writeln!(w, "        dst[{at}] = pack4(vec4<i32>({}));", lanes.join(", "));
        }
        Epilogue::Residual { shift } => {
            let _ = writeln!(w, "        let {o} = {base};");
            for (l, c) in C.iter().enumerate() {
                let _ = writeln!(
                    w,
                    "        dst[{o} + {l}u] = bitcast<u32>(clamp(bitcast<i32>(dst[{o} + {l}u]) + round_shift({acc}.{c}, {shift}u), -RESIDUAL_MAX, RESIDUAL_MAX));"
                );
            }
        }
    }
}

/// A matrix product `dst = epilogue(src · Wᵀ)`: `in_a` holds the packed int8 input
/// rows (`k4` words each), `in_b` the weights packed k-major (word `k * n4 * 4 + 4 g
/// + t` holds inputs `4k..4k+4` of output `4g + t`, so the four outputs of one
/// invocation are one contiguous 16-byte load). Each invocation computes 4 outputs
/// for `shape.rows` rows: the kernel for GPUs ([`MmShape::GPU`]).
#[allow(clippy::too_many_arguments)]
fn matmul_words(
    w: &mut String,
    spec: &ModelSpec,
    shape: MmShape,
    name: &str,
    rows: Rows,
    k4: u32,
    n4: u32,
    epi: Epilogue,
) {
    let (mm_rows, mm_wg_y) = (shape.rows, shape.wg_y);
    let per_item = rows.per_item(spec);
    let _ = write!(
        w,
        "
@compute @workgroup_size({MM_WG_X}, {mm_wg_y})
fn {name}(@builtin(global_invocation_id) gid: vec3<u32>) {{
    let g = gid.x;
    let n_rows = params.batch * {per_item}u;
    let tile = gid.y * {mm_rows}u;
    if (g >= {n4}u || tile >= n_rows) {{
        return;
    }}
"
    );
    // Rows past the end of the batch re-read the last row; their results are dropped.
    for t in 0..mm_rows {
        let r = format!("min(tile + {t}u, n_rows - 1u)");
        let _ = writeln!(w, "    let m{t} = {};", mem_row_expr(spec, rows, &r));
        let _ = writeln!(w, "    let xb{t} = m{t} * {k4}u;");
        let _ = writeln!(w, "    var a{t} = vec4<i32>(0i);");
    }
    let _ = write!(
        w,
        "    for (var k = 0u; k < {k4}u; k++) {{
        let wb = (k * {n4}u + g) * 4u;
        let w0 = in_b[wb];
        let w1 = in_b[wb + 1u];
        let w2 = in_b[wb + 2u];
        let w3 = in_b[wb + 3u];
"
    );
    for t in 0..mm_rows {
        let _ = writeln!(
            w,
            "        let x{t} = in_a[xb{t} + k];
        a{t} = a{t} + vec4<i32>(dot4(x{t}, w0), dot4(x{t}, w1), dot4(x{t}, w2), dot4(x{t}, w3));"
        );
    }
    w.push_str("    }\n");
    for t in 0..mm_rows {
        let _ = writeln!(w, "    if (tile + {t}u < n_rows) {{");
        let (acc, at, o, base) =
            (format!("a{t}"), format!("m{t} * {n4}u + g"), format!("o{t}"), format!("m{t} * D + 4u * g"));
        epilogue(w, &epi, &acc, &at, &o, &base);
        w.push_str("    }\n");
    }
    w.push_str("}\n");
}

/// Causal multi-head attention (`tpow_core::forward::attention`) for GPUs, one
/// invocation per (item, head, query position). `in_a` holds the q|k|v rows (QKV4 words each), `dst`
/// the packed attention output (D4 words per row). The scores are recomputed in each
/// of the three passes (max, sum, weighted values) instead of being stored: that keeps
/// the per-invocation state to a q row and HD accumulators for any `seq_len`.
fn attention_per_query(w: &mut String, spec: &ModelSpec, rows: Rows) {
    let per_item = rows.per_item(spec);
    let first = spec.seq_len - per_item;
    let log2_ri = log2(per_item);
    let name = format!("attn_{}", rows.suffix());
    let _ = write!(
        w,
        "
@compute @workgroup_size(64)
fn {name}(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {{
    let idx = linear_id(gid, nwg);
    if (idx >= params.batch * NH * {per_item}u) {{
        return;
    }}
    let i = {first}u + (idx & {ri_mask}u);
    let h = (idx >> {log2_ri}u) & (NH - 1u);
    let item = (idx >> ({log2_ri}u + LOG2_NH)) * S;
    let qb = (item + i) * QKV4 + h * HD4;
    var q: array<u32, HD4>;
    for (var c = 0u; c < HD4; c++) {{
        q[c] = in_a[qb + c];
    }}
    let kb = item * QKV4 + D4 + h * HD4;
    var mx = attn_score(q, kb);
    for (var j = 1u; j <= i; j++) {{
        mx = max(mx, attn_score(q, kb + j * QKV4));
    }}
    var sum = 0i;
    for (var j = 0u; j <= i; j++) {{
        sum = sum + exp2_weight((mx - attn_score(q, kb + j * QKV4)) >> SCORE_SHIFT);
    }}
    let r = bitcast<i32>(udiv(1u << 30u, bitcast<u32>(sum)));
    var acc: array<i32, HD>;
    for (var j = 0u; j <= i; j++) {{
        let wj = exp2_weight((mx - attn_score(q, kb + j * QKV4)) >> SCORE_SHIFT);
        let p = min((wj * r + (1i << 22u)) >> 23u, 127i);
        let vb = (item + j) * QKV4 + 2u * D4 + h * HD4;
        for (var c = 0u; c < HD4; c++) {{
            let v = in_a[vb + c];
            acc[4u * c] = acc[4u * c] + p * lane(v, 0u);
            acc[4u * c + 1u] = acc[4u * c + 1u] + p * lane(v, 1u);
            acc[4u * c + 2u] = acc[4u * c + 2u] + p * lane(v, 2u);
            acc[4u * c + 3u] = acc[4u * c + 3u] + p * lane(v, 3u);
        }}
    }}
    let ob = (item + i) * D4 + h * HD4;
    for (var c = 0u; c < HD4; c++) {{
        dst[ob + c] = pack4(vec4<i32>(
            clamp_i8(round_shift(acc[4u * c], PROB_BITS)),
            clamp_i8(round_shift(acc[4u * c + 1u], PROB_BITS)),
            clamp_i8(round_shift(acc[4u * c + 2u], PROB_BITS)),
            clamp_i8(round_shift(acc[4u * c + 3u], PROB_BITS)),
        ));
    }}
}}
",
        ri_mask = per_item - 1,
    );
    if rows == Rows::All {
        w.push_str(
            "
// q · k_j for one head: HD4 packed words of the query against the key at in_a[kb..].
fn attn_score(q: array<u32, HD4>, kb: u32) -> i32 {
    var s = 0i;
    for (var c = 0u; c < HD4; c++) {
        s = s + dot4(q[c], in_a[kb + c]);
    }
    return s;
}
",
        );
    }
}

/// Query positions per attention invocation: each key and value word loaded serves
/// this many queries (at most 64 accumulators of 4 lanes per invocation).
pub(crate) fn attn_queries(spec: &ModelSpec, rows: Rows, shape: MmShape) -> u32 {
    if !shape.blocks {
        return 1;
    }
    let hd4 = spec.d_model / spec.n_heads / 4;
    rows.per_item(spec).min(if hd4 <= 8 { 4 } else { 2 })
}

/// Causal multi-head attention (`tpow_core::forward::attention`), one invocation per
/// (item, head, block of [`attn_queries`] consecutive query positions). `in_a` holds
/// the q|k|v rows (QKV4 words each), `dst` the packed attention output (D4 words per
/// row). Three passes over the keys (max, sum, weighted values) recompute the scores
/// instead of storing them, which keeps the state to the queries and HD accumulators
/// per query for any `seq_len`; every key and value word loaded serves all the
/// queries of the block (the loads, not the arithmetic, are what a software adapter
/// pays for). A key after a query's position is masked by giving it the exponent
/// 256, whose weight `exp2_weight` makes exactly 0, so the sums and the max are the
/// reference's.
fn attention(w: &mut String, spec: &ModelSpec, rows: Rows) {
    let per_item = rows.per_item(spec);
    let first = spec.seq_len - per_item;
    let qn = attn_queries(spec, rows, MmShape::CPU);
    let blocks = per_item / qn;
    let log2_b = log2(blocks);
    let hd4 = spec.d_model / spec.n_heads / 4;
    let name = format!("attn_{}", rows.suffix());
    let _ = write!(
        w,
        "
@compute @workgroup_size(64)
fn {name}(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {{
    let idx = linear_id(gid, nwg);
    if (idx >= params.batch * NH * {blocks}u) {{
        return;
    }}
    let i0 = {first}u + (idx & {b_mask}u) * {qn}u;
    let h = (idx >> {log2_b}u) & (NH - 1u);
    let item = (idx >> ({log2_b}u + LOG2_NH)) * S;
    let kb = item * QKV4 + D4 + h * HD4;
    let end = i0 + {qn}u;
",
        b_mask = blocks - 1,
    );
    for q in 0..qn {
        let _ = writeln!(w, "    let qb{q} = (item + i0 + {q}u) * QKV4 + h * HD4;");
        for c in 0..hd4 {
            let _ = writeln!(w, "    let q{q}_{c} = in_a[qb{q} + {c}u];");
        }
    }
    // Loads key j's words and its score against each query into s{q}.
    let scores = |w: &mut String| {
        let _ = writeln!(w, "        let kj = kb + j * QKV4;");
        for c in 0..hd4 {
            let _ = writeln!(w, "        let k{c} = in_a[kj + {c}u];");
        }
        for q in 0..qn {
            let terms: Vec<String> = (0..hd4).map(|c| format!("dot4(q{q}_{c}, k{c})")).collect();
            let _ = writeln!(w, "        let s{q} = {};", terms.join(" + "));
        }
    };
    // Exponent of key j's weight for query q; 256 (weight 0) past the query.
    let exponent = |q: u32| format!("select(256i, (mx{q} - s{q}) >> SCORE_SHIFT, j <= i0 + {q}u)");
    // Pass 1: the max over keys 0..=i of each query (key 0 is never masked).
    for q in 0..qn {
        let _ = writeln!(w, "    var mx{q} = -2147483647i - 1i;");
    }
    w.push_str("    for (var j = 0u; j < end; j++) {\n");
    scores(w);
    for q in 0..qn {
        let _ = writeln!(w, "        mx{q} = select(mx{q}, max(mx{q}, s{q}), j <= i0 + {q}u);");
    }
    w.push_str("    }\n");
    // Pass 2: the sums of the weights.
    for q in 0..qn {
        let _ = writeln!(w, "    var sum{q} = 0i;");
    }
    w.push_str("    for (var j = 0u; j < end; j++) {\n");
    scores(w);
    for q in 0..qn {
        let _ = writeln!(w, "        sum{q} = sum{q} + exp2_weight({});", exponent(q));
    }
    w.push_str("    }\n");
    // Pass 3: probabilities times values.
    for q in 0..qn {
        let _ = writeln!(w, "    let r{q} = bitcast<i32>(udiv(1u << 30u, bitcast<u32>(sum{q})));");
        for c in 0..hd4 {
            let _ = writeln!(w, "    var acc{q}_{c} = vec4<i32>(0i);");
        }
    }
    w.push_str("    for (var j = 0u; j < end; j++) {\n");
    scores(w);
    let _ = writeln!(w, "        let vb = (item + j) * QKV4 + 2u * D4 + h * HD4;");
    for c in 0..hd4 {
        let _ = writeln!(w, "        let v{c} = in_a[vb + {c}u];");
        let _ = writeln!(
            w,
            "        let vu{c} = vec4<i32>(lane(v{c}, 0u), lane(v{c}, 1u), lane(v{c}, 2u), lane(v{c}, 3u));"
        );
    }
    for q in 0..qn {
        let _ =
            writeln!(w, "        let p{q} = min((exp2_weight({}) * r{q} + (1i << 22u)) >> 23u, 127i);", exponent(q));
        for c in 0..hd4 {
            let _ = writeln!(w, "        acc{q}_{c} = acc{q}_{c} + p{q} * vu{c};");
        }
    }
    w.push_str("    }\n");
    for q in 0..qn {
        let _ = writeln!(w, "    let ob{q} = (item + i0 + {q}u) * D4 + h * HD4;");
        for c in 0..hd4 {
            let _ = writeln!(
                w,
                "    dst[ob{q} + {c}u] = pack4(vec4<i32>(clamp_i8(round_shift(acc{q}_{c}.x, PROB_BITS)), clamp_i8(round_shift(acc{q}_{c}.y, PROB_BITS)), clamp_i8(round_shift(acc{q}_{c}.z, PROB_BITS)), clamp_i8(round_shift(acc{q}_{c}.w, PROB_BITS))));"
            );
        }
    }
    w.push_str("}\n");
}

/// A small module exercising `udiv` and `isqrt` on the GPU: `dst[2i] =
/// udiv(in_a[2i], in_a[2i+1])`, `dst[2i+1] = isqrt(in_a[2i])`.
#[cfg(test)]
pub(crate) fn arith_test_module() -> String {
    let mut w = String::new();
    let _ = writeln!(w, "const LINEAR_WG: u32 = 64u;\nconst ACT_MAX: i32 = 127i;\nconst POW2_AT: u32 = {POW2_AT}u;");
    w.push_str(&COMMON.replace("{BINDINGS}", BINDINGS));
    w.push_str(
        "
@compute @workgroup_size(64)
fn arith(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i >= params.batch) {
        return;
    }
    dst[2u * i] = udiv(in_a[2u * i], in_a[2u * i + 1u]);
    dst[2u * i + 1u] = isqrt(in_a[2u * i]);
}
",
    );
    w
}
