//! The puzzle model derived on the GPU: BLAKE3 in WGSL, written straight into the
//! engine's weight buffers.
//!
//! A verifier pays one model per header, and on the CPU the derivation costs more
//! than the forward pass (docs/PROTOCOL.md §5: 5.8 M weights on mainnet, one BLAKE3
//! output byte each), followed by a 5.8 MB upload. On the GPU it is embarrassingly
//! parallel: each tensor's stream is
//! `blake3-XOF(derive_key(CTX_MODEL_WEIGHTS), prev_id ‖ spec ‖ layer u32 LE ‖ kind u32 LE)`,
//! whose input is exactly one 64-byte block, so output block `i` of the stream is
//! the root compression of that block with counter `i`: one invocation per 64-byte
//! output block, no dependency between invocations, and nothing but 64 bytes of
//! input per tensor crosses the bus.
//!
//! Each invocation maps its 64 bytes to int8 weights (`max(x as i8, -127)`, §5) and
//! writes them into the buffer and position where `Engine::upload` puts them (token
//! and position embeddings row-major, the matrices k-major with q, k and v stacked),
//! so the forward kernels read the same bytes whichever way the model arrived. The
//! integration test `tests/derive.rs` compares every buffer with the CPU upload
//! bytes, so a change of the engine's layout that is not mirrored in [`placements`]
//! fails there.
//!
//! Only u32 arithmetic (wrapping add, xor, shifts): exact on every adapter.

use core::fmt::Write;

use tpow_core::hash::CTX_MODEL_WEIGHTS;
use tpow_core::model::{TensorKind, NO_LAYER};
use tpow_core::ModelSpec;

use crate::context::GpuContext;
use crate::engine::Weights;
use crate::GpuError;

/// BLAKE3's initialisation vector (the SHA-256 one).
const IV: [u32; 8] = [0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19];
/// The message word permutation applied between rounds.
const MSG_PERMUTATION: [usize; 16] = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8];
const CHUNK_START: u32 = 1;
const CHUNK_END: u32 = 2;
const ROOT: u32 = 8;
const DERIVE_KEY_CONTEXT: u32 = 32;
const DERIVE_KEY_MATERIAL: u32 = 64;
/// Flags of every output block of a weight stream: its input is one block, which
/// starts and ends the only chunk, which is the root, in derive-key mode.
const STREAM_FLAGS: u32 = CHUNK_START | CHUNK_END | ROOT | DERIVE_KEY_MATERIAL;

/// Invocations per workgroup (one 64-byte output block each).
const WG: u32 = 64;
/// Bytes of one [`Job`] in the uniform buffer (`Job` in the WGSL).
const JOB_BYTES: u64 = 96;

/// The eight column/diagonal mixes of one round: state indices a, b, c, d.
const MIXES: [[usize; 4]; 8] = [
    [0, 4, 8, 12],
    [1, 5, 9, 13],
    [2, 6, 10, 14],
    [3, 7, 11, 15],
    [0, 5, 10, 15],
    [1, 6, 11, 12],
    [2, 7, 8, 13],
    [3, 4, 9, 14],
];

/// Which original message word each round reads at each position: round `r` uses
/// `schedule()[r][i]` where the specification permutes the block `r` times.
fn schedule() -> [[usize; 16]; 7] {
    let mut s = [[0usize; 16]; 7];
    let mut cur: [usize; 16] = core::array::from_fn(|i| i);
    for round in s.iter_mut() {
        *round = cur;
        cur = core::array::from_fn(|i| cur[MSG_PERMUTATION[i]]);
    }
    s
}

/// BLAKE3's compression function, all 16 output words (the extended output). The
/// reference the WGSL mirrors (same [`MIXES`] and [`MSG_PERMUTATION`]); used on the
/// CPU only for the context key.
fn compress(cv: &[u32; 8], block: &[u32; 16], counter: u64, block_len: u32, flags: u32) -> [u32; 16] {
    let mut v = [
        cv[0],
        cv[1],
        cv[2],
        cv[3],
        cv[4],
        cv[5],
        cv[6],
        cv[7],
        IV[0],
        IV[1],
        IV[2],
        IV[3],
        counter as u32,
        (counter >> 32) as u32,
        block_len,
        flags,
    ];
    for round in schedule() {
        for (i, &[a, b, c, d]) in MIXES.iter().enumerate() {
            let (x, y) = (block[round[2 * i]], block[round[2 * i + 1]]);
            v[a] = v[a].wrapping_add(v[b]).wrapping_add(x);
            v[d] = (v[d] ^ v[a]).rotate_right(16);
            v[c] = v[c].wrapping_add(v[d]);
            v[b] = (v[b] ^ v[c]).rotate_right(12);
            v[a] = v[a].wrapping_add(v[b]).wrapping_add(y);
            v[d] = (v[d] ^ v[a]).rotate_right(8);
            v[c] = v[c].wrapping_add(v[d]);
            v[b] = (v[b] ^ v[c]).rotate_right(7);
        }
    }
    for i in 0..8 {
        v[i] ^= v[i + 8];
        v[i + 8] ^= cv[i];
    }
    v
}

/// Little-endian words of a block of at most 64 bytes, zero-padded.
fn words(bytes: &[u8]) -> [u32; 16] {
    let mut b = [0u8; 64];
    b[..bytes.len()].copy_from_slice(bytes);
    core::array::from_fn(|i| u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]))
}

/// The derive-key mode key of a context string of at most 64 bytes (the hash of the
/// context in `DERIVE_KEY_CONTEXT` mode: one block, one chunk).
fn context_key(context: &str) -> [u32; 8] {
    let bytes = context.as_bytes();
    debug_assert!(bytes.len() <= 64, "one-block contexts only");
    let out = compress(&IV, &words(bytes), 0, bytes.len() as u32, CHUNK_START | CHUNK_END | ROOT | DERIVE_KEY_CONTEXT);
    core::array::from_fn(|i| out[i])
}

/// The one input block of a tensor's stream: prev_id ‖ spec ‖ layer ‖ kind is
/// 32 + 24 + 4 + 4 = 64 bytes (§5), whatever the spec.
fn stream_block(prev_id: &[u8; 32], spec: &ModelSpec, layer: u32, kind: TensorKind) -> [u32; 16] {
    let mut b = [0u8; 64];
    b[..32].copy_from_slice(prev_id);
    b[32..56].copy_from_slice(&spec.to_bytes());
    b[56..60].copy_from_slice(&layer.to_le_bytes());
    b[60..].copy_from_slice(&(kind as u32).to_le_bytes());
    words(&b)
}

/// Output block `counter` of a tensor's stream, on the CPU (tests compare it with
/// `tpow_core::model::derive_tensor`).
#[cfg(test)]
fn stream_output(prev_id: &[u8; 32], spec: &ModelSpec, layer: u32, kind: TensorKind, counter: u64) -> [u32; 16] {
    compress(&context_key(CTX_MODEL_WEIGHTS), &stream_block(prev_id, spec, layer, kind), counter, 64, STREAM_FLAGS)
}

/// Four stream bytes to four weights: each byte 0x80 (-128) becomes 0x81 (-127),
/// the others stay (§5). Branch-free, as the WGSL `weights` does it.
#[cfg(test)]
fn weights_of(w: u32) -> u32 {
    let z = w ^ 0x8080_8080;
    let nonzero = (((z & 0x7f7f_7f7f).wrapping_add(0x7f7f_7f7f)) | z) & 0x8080_8080;
    w + ((!nonzero & 0x8080_8080) >> 7)
}

/// Where one tensor's stream goes: stream word `w` (weights `4w..4w+4`, row
/// `r = w >> row_shift`, word `k = w & (2^row_shift - 1)` of that row) lands at word
/// `base + r * row_stride + k * col_stride` of buffer `buffer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Placement {
    /// Index into the engine's weight buffers, in [`Weights`] order: token and
    /// position embeddings, then per layer q|k|v, attention output, MLP up, MLP down.
    pub(crate) buffer: usize,
    pub(crate) layer: u32,
    pub(crate) kind: TensorKind,
    /// Stream length in 4-byte words (`rows * cols / 4`).
    pub(crate) words: u32,
    /// log2 of the words per row (`cols / 4`; every `cols` is a power of two ≥ 16).
    pub(crate) row_shift: u32,
    pub(crate) row_stride: u32,
    pub(crate) col_stride: u32,
    pub(crate) base: u32,
}

/// The weight buffers' sizes in bytes and every tensor's placement, mirroring
/// `Engine::upload`: `row_major` for the embeddings (word `w` at `w`), `k_major`
/// for the matrices (word `k` of row `j` of the stacked rows at `k * n + j`, where `n`
/// is the buffer's total row count and q, k, v stack in that order).
pub(crate) fn placements(spec: &ModelSpec) -> (Vec<u64>, Vec<Placement>) {
    let (d, f) = (spec.d_model, spec.d_ffn);
    let mut sizes = Vec::new();
    let mut out = Vec::new();
    let row_major = |buffer, layer, kind, rows: u32, cols: u32| Placement {
        buffer,
        layer,
        kind,
        words: rows * cols / 4,
        row_shift: (cols / 4).trailing_zeros(),
        row_stride: cols / 4,
        col_stride: 1,
        base: 0,
    };
    // Rows `first..first + rows` of a k-major buffer of `n` rows.
    let k_major = |buffer, layer, kind, rows: u32, cols: u32, n: u32, first: u32| Placement {
        buffer,
        layer,
        kind,
        words: rows * cols / 4,
        row_shift: (cols / 4).trailing_zeros(),
        row_stride: 1,
        col_stride: n,
        base: first,
    };
    sizes.push(u64::from(spec.vocab) * u64::from(d));
    out.push(row_major(0, NO_LAYER, TensorKind::TokenEmbedding, spec.vocab, d));
    sizes.push(u64::from(spec.seq_len) * u64::from(d));
    out.push(row_major(1, NO_LAYER, TensorKind::PositionEmbedding, spec.seq_len, d));
    for l in 0..spec.n_layers {
        let b = sizes.len();
        sizes.extend([3 * u64::from(d) * u64::from(d), u64::from(d) * u64::from(d), u64::from(f) * u64::from(d)]);
        sizes.push(u64::from(d) * u64::from(f));
        for (i, kind) in [TensorKind::Query, TensorKind::Key, TensorKind::Value].into_iter().enumerate() {
            out.push(k_major(b, l, kind, d, d, 3 * d, i as u32 * d));
        }
        out.push(k_major(b + 1, l, TensorKind::AttnOut, d, d, d, 0));
        out.push(k_major(b + 2, l, TensorKind::MlpUp, f, d, f, 0));
        out.push(k_major(b + 3, l, TensorKind::MlpDown, d, f, d, 0));
    }
    (sizes, out)
}

/// `Job` (the uniform of one dispatch): the stream's input block, then its placement.
fn job_bytes(p: &Placement, block: &[u32; 16]) -> [u8; JOB_BYTES as usize] {
    let mut b = [0u8; JOB_BYTES as usize];
    let fields = block.iter().copied().chain([p.words, p.row_shift, p.row_stride, p.col_stride, p.base, 0, 0, 0]);
    for (dst, v) in b.chunks_exact_mut(4).zip(fields) {
        dst.copy_from_slice(&v.to_le_bytes());
    }
    b
}

/// The WGSL of the derivation kernel: the context key baked in, state and message
/// in 32 scalar variables (no runtime array indexing, which would put them in local
/// memory), one 64-byte output block per invocation.
pub(crate) fn module() -> String {
    let key = context_key(CTX_MODEL_WEIGHTS);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "// Generated by tpow-gpu/src/derive.rs: the §5 weight streams (BLAKE3 XOF, root \
         output blocks).\n\
         struct Job {{\n  msg: array<vec4<u32>, 4>,\n  words: u32,\n  row_shift: u32,\n  row_stride: u32,\n  \
         col_stride: u32,\n  base: u32,\n  pad0: u32,\n  pad1: u32,\n  pad2: u32,\n}}\n\
         @group(0) @binding(0) var<uniform> job: Job;\n\
         @group(0) @binding(1) var<storage, read_write> dst: array<u32>;\n\n\
         fn rotr(x: u32, n: u32) -> u32 {{ return (x >> n) | (x << (32u - n)); }}\n\n\
         // Four stream bytes to four int8 weights: bytes 0x80 (-128) become 0x81 (-127).\n\
         fn weights(w: u32) -> u32 {{\n  let z = w ^ 0x80808080u;\n  \
         let nonzero = (((z & 0x7f7f7f7fu) + 0x7f7f7f7fu) | z) & 0x80808080u;\n  \
         return w + ((~nonzero & 0x80808080u) >> 7u);\n}}\n\n\
         fn put(w: u32, value: u32) {{\n  if (w < job.words) {{\n    \
         let at = job.base + (w >> job.row_shift) * job.row_stride + (w & ((1u << job.row_shift) - 1u)) * job.col_stride;\n    \
         dst[at] = weights(value);\n  }}\n}}\n\n\
         @compute @workgroup_size({WG})\n\
         fn derive(@builtin(global_invocation_id) gid: vec3<u32>) {{\n  \
         let block = gid.x;\n  let first = block * 16u;\n  if (first >= job.words) {{ return; }}"
    );
    for i in 0..16 {
        let _ = writeln!(s, "  var m{i} = job.msg[{}].{};", i / 4, ["x", "y", "z", "w"][i % 4]);
    }
    for (i, k) in key.iter().enumerate() {
        let _ = writeln!(s, "  var v{i} = {k:#010x}u;");
    }
    for (i, iv) in IV[..4].iter().enumerate() {
        let _ = writeln!(s, "  var v{} = {iv:#010x}u;", i + 8);
    }
    // Counter (low word = block index; streams stay far below 2^32 blocks), block
    // length, flags.
    let _ = writeln!(s, "  var v12 = block;\n  var v13 = 0u;\n  var v14 = 64u;\n  var v15 = {STREAM_FLAGS}u;");
    // Seven rounds: the eight mixes on m0..m15, then the message permutation, as
    // scalar moves (a loop, not seven unrolled copies: software adapters such as
    // SwiftShader compile without unrolling, and the unrolled kernel took them
    // seconds to compile).
    let _ = writeln!(s, "  for (var round = 0u; round < 7u; round = round + 1u) {{");
    for (i, &[a, b, c, d]) in MIXES.iter().enumerate() {
        let (x, y) = (2 * i, 2 * i + 1);
        let _ = writeln!(
            s,
            "    v{a} = v{a} + v{b} + m{x}; v{d} = rotr(v{d} ^ v{a}, 16u); v{c} = v{c} + v{d}; v{b} = rotr(v{b} ^ v{c}, 12u);\n    \
             v{a} = v{a} + v{b} + m{y}; v{d} = rotr(v{d} ^ v{a}, 8u); v{c} = v{c} + v{d}; v{b} = rotr(v{b} ^ v{c}, 7u);"
        );
    }
    for i in 0..16 {
        let _ = writeln!(s, "    let p{i} = m{i};");
    }
    for (i, &from) in MSG_PERMUTATION.iter().enumerate() {
        let _ = writeln!(s, "    m{i} = p{from};");
    }
    s.push_str("  }\n");
    for i in 0..8 {
        let _ = writeln!(s, "  put(first + {i}u, v{i} ^ v{});", i + 8);
    }
    for (i, k) in key.iter().enumerate() {
        let _ = writeln!(s, "  put(first + {}u, v{} ^ {k:#010x}u);", i + 8, i + 8);
    }
    s.push_str("}\n");
    s
}

/// The compiled derivation kernel (shape-independent: compiled once per context).
pub(crate) struct Deriver {
    ctx: GpuContext,
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
    /// Bytes between consecutive jobs in the uniform buffer (the device's dynamic
    /// offset alignment, at least [`JOB_BYTES`]).
    stride: u64,
}

impl Deriver {
    /// Compiles the kernel.
    pub(crate) async fn new(ctx: &GpuContext) -> Result<Self, GpuError> {
        let limits = ctx.limits();
        if limits.max_compute_invocations_per_workgroup < WG || limits.max_compute_workgroup_size_x < WG {
            return Err(GpuError::UnsupportedLimits("needs 64-invocation workgroups".into()));
        }
        let align = u64::from(limits.min_uniform_buffer_offset_alignment).max(1);
        let stride = JOB_BYTES.div_ceil(align) * align;
        let (layout, pipeline) = ctx
            .scoped(|| {
                let device = &ctx.device;
                let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some("tpow derive"),
                    entries: &[
                        wgpu::BindGroupLayoutEntry {
                            binding: 0,
                            visibility: wgpu::ShaderStages::COMPUTE,
                            ty: wgpu::BindingType::Buffer {
                                ty: wgpu::BufferBindingType::Uniform,
                                has_dynamic_offset: true,
                                min_binding_size: wgpu::BufferSize::new(JOB_BYTES),
                            },
                            count: None,
                        },
                        wgpu::BindGroupLayoutEntry {
                            binding: 1,
                            visibility: wgpu::ShaderStages::COMPUTE,
                            ty: wgpu::BindingType::Buffer {
                                ty: wgpu::BufferBindingType::Storage { read_only: false },
                                has_dynamic_offset: false,
                                min_binding_size: None,
                            },
                            count: None,
                        },
                    ],
                });
                let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                    label: Some("tpow derive"),
                    bind_group_layouts: &[Some(&layout)],
                    immediate_size: 0,
                });
                let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some("tpow derive"),
                    source: wgpu::ShaderSource::Wgsl(module().into()),
                });
                let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some("tpow derive"),
                    layout: Some(&pipeline_layout),
                    module: &module,
                    entry_point: Some("derive"),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &[],
                        zero_initialize_workgroup_memory: false,
                    },
                    cache: None,
                });
                (layout, pipeline)
            })
            .await?;
        Ok(Deriver { ctx: ctx.clone(), layout, pipeline, stride })
    }

    /// Allocates the weight buffers of `spec`'s model for `prev_id` and submits the
    /// dispatches that fill them. Returns without waiting: later submissions on the
    /// queue (the forward pass) run after them. `extra` usages are added to the
    /// buffers' (`COPY_SRC` to read them back).
    pub(crate) async fn derive(
        &self,
        spec: &ModelSpec,
        prev_id: &[u8; 32],
        extra: wgpu::BufferUsages,
    ) -> Result<Weights, GpuError> {
        spec.validate()?;
        let (sizes, places) = placements(spec);
        let max_dim = self.ctx.limits().max_compute_workgroups_per_dimension;
        let grids: Vec<u32> = places.iter().map(|p| p.words.div_ceil(16).div_ceil(WG)).collect();
        if grids.iter().any(|&g| g > max_dim) {
            return Err(GpuError::UnsupportedLimits(format!("a weight stream needs more than {max_dim} workgroups")));
        }
        let ctx = &self.ctx;
        let buffers = ctx
            .scoped(|| {
                let device = &ctx.device;
                let mut jobs = vec![0u8; (self.stride * places.len() as u64) as usize];
                for (i, p) in places.iter().enumerate() {
                    let at = i * self.stride as usize;
                    jobs[at..at + JOB_BYTES as usize]
                        .copy_from_slice(&job_bytes(p, &stream_block(prev_id, spec, p.layer, p.kind)));
                }
                let uniform = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("tpow derive jobs"),
                    size: jobs.len() as u64,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                ctx.queue.write_buffer(&uniform, 0, &jobs);
                let buffers: Vec<wgpu::Buffer> = sizes
                    .iter()
                    .map(|&size| {
                        device.create_buffer(&wgpu::BufferDescriptor {
                            label: Some("weights"),
                            size,
                            usage: wgpu::BufferUsages::STORAGE | extra,
                            mapped_at_creation: false,
                        })
                    })
                    .collect();
                let binds: Vec<wgpu::BindGroup> = buffers
                    .iter()
                    .map(|b| {
                        device.create_bind_group(&wgpu::BindGroupDescriptor {
                            label: Some("tpow derive"),
                            layout: &self.layout,
                            entries: &[
                                wgpu::BindGroupEntry {
                                    binding: 0,
                                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                        buffer: &uniform,
                                        offset: 0,
                                        size: wgpu::BufferSize::new(JOB_BYTES),
                                    }),
                                },
                                wgpu::BindGroupEntry { binding: 1, resource: b.as_entire_binding() },
                            ],
                        })
                    })
                    .collect();
                let mut enc =
                    device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("tpow derive") });
                {
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("tpow derive"),
                        timestamp_writes: None,
                    });
                    pass.set_pipeline(&self.pipeline);
                    for (i, (p, &groups)) in places.iter().zip(&grids).enumerate() {
                        pass.set_bind_group(0, &binds[p.buffer], &[(i as u64 * self.stride) as u32]);
                        pass.dispatch_workgroups(groups, 1, 1);
                    }
                }
                ctx.queue.submit([enc.finish()]);
                buffers
            })
            .await?;
        Weights::from_buffers(*prev_id, buffers).ok_or_else(|| GpuError::Validation("weight buffer count".into()))
    }
}

/// Every weight buffer of the model for `prev_id`, derived on the GPU and read
/// back, in [`Weights`] order (for the bit-exactness tests).
pub(crate) async fn derived_bytes(
    ctx: &GpuContext,
    spec: &ModelSpec,
    prev_id: &[u8; 32],
) -> Result<Vec<Vec<u8>>, GpuError> {
    let deriver = Deriver::new(ctx).await?;
    let weights = deriver.derive(spec, prev_id, wgpu::BufferUsages::COPY_SRC).await?;
    let mut out = Vec::new();
    for buf in weights.buffers() {
        let size = buf.size();
        let (read, index) = ctx
            .scoped(|| {
                let read = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("weights read-back"),
                    size,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                let mut enc = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
                enc.copy_buffer_to_buffer(buf, 0, &read, 0, size);
                let index = ctx.queue.submit([enc.finish()]);
                (read, index)
            })
            .await?;
        ctx.map_read(&read, size, index).await?;
        let bytes = read.get_mapped_range(..).map(|v| v.to_vec()).map_err(|e| GpuError::Map(e.to_string()));
        read.unmap();
        out.push(bytes?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tpow_core::model::derive_tensor;

    /// The CPU reference of the kernel (same schedule, key and flags) reproduces
    /// `tpow_core`'s streams, past the first block and at a counter above 255.
    #[test]
    fn compress_reproduces_the_weight_streams() {
        for (spec, prev_id) in [(ModelSpec::DEVNET, [7u8; 32]), (ModelSpec::MAINNET, [0xa5; 32])] {
            for (layer, kind) in [(NO_LAYER, TensorKind::TokenEmbedding), (1, TensorKind::MlpDown)] {
                let mut want = vec![0i8; 64 * 300];
                derive_tensor(&prev_id, &spec, layer, kind, &mut want);
                for counter in [0u64, 1, 2, 299] {
                    let block = stream_output(&prev_id, &spec, layer, kind, counter);
                    let got: Vec<i8> =
                        block.iter().flat_map(|&w| weights_of(w).to_le_bytes()).map(|b| b as i8).collect();
                    let at = counter as usize * 64;
                    assert_eq!(got, want[at..at + 64], "{layer} {kind:?} block {counter}");
                }
            }
        }
    }

    #[test]
    fn weight_mapping_matches_the_spec() {
        for x in 0..=255u8 {
            for shift in [0, 8, 16, 24] {
                let w = 0x1122_3344u32 & !(0xff << shift) | (u32::from(x) << shift);
                let got = weights_of(w).to_le_bytes();
                let want = w.to_le_bytes().map(|b| (b as i8).max(-127) as u8);
                assert_eq!(got, want, "{w:#010x}");
            }
        }
        assert_eq!(weights_of(0x8080_8080), 0x8181_8181);
    }

    /// Every weight lands exactly once, inside its buffer.
    #[test]
    fn placements_cover_each_buffer_once() {
        for spec in [ModelSpec::DEVNET, ModelSpec::MAINNET] {
            let (sizes, places) = placements(&spec);
            assert_eq!(sizes.len(), 2 + 4 * spec.n_layers as usize);
            assert_eq!(sizes.iter().sum::<u64>(), spec.parameter_count());
            let mut hit: Vec<Vec<bool>> = sizes.iter().map(|&s| vec![false; s as usize / 4]).collect();
            for p in &places {
                let mask = (1u32 << p.row_shift) - 1;
                for w in 0..p.words {
                    let at = (p.base + (w >> p.row_shift) * p.row_stride + (w & mask) * p.col_stride) as usize;
                    assert!(!hit[p.buffer][at], "{p:?} word {w}");
                    hit[p.buffer][at] = true;
                }
            }
            assert!(hit.iter().flatten().all(|&h| h));
        }
    }
}
