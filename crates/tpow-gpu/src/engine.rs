//! Buffers, pipelines and the dispatch sequence of one batched forward pass.

use tpow_core::model::Matrix;
use tpow_core::{Model, ModelSpec};

use crate::context::GpuContext;
use crate::shader::{self, entry, DotImpl, MmShape, Rows, LINEAR_WG, MM_WG_X};
use crate::GpuError;

/// The kernels, in the order of [`Kernels::pipes`]: the word-indexed kernels of
/// [`shader::forward_module`], then the matrix products of [`shader::matmul_module`].
#[derive(Clone, Copy)]
enum K {
    Embed,
    NormAll,
    NormLast,
    NormOut,
    AttnAll,
    AttnLast,
    MmQkv,
    MmWoAll,
    MmWoLast,
    MmUpAll,
    MmUpLast,
    MmDownAll,
    MmDownLast,
}

const KERNELS: [(K, &str); 13] = [
    (K::Embed, entry::EMBED),
    (K::NormAll, entry::NORM_ALL),
    (K::NormLast, entry::NORM_LAST),
    (K::NormOut, entry::NORM_OUT),
    (K::AttnAll, entry::ATTN_ALL),
    (K::AttnLast, entry::ATTN_LAST),
    (K::MmQkv, entry::MM_QKV),
    (K::MmWoAll, entry::MM_WO_ALL),
    (K::MmWoLast, entry::MM_WO_LAST),
    (K::MmUpAll, entry::MM_UP_ALL),
    (K::MmUpLast, entry::MM_UP_LAST),
    (K::MmDownAll, entry::MM_DOWN_ALL),
    (K::MmDownLast, entry::MM_DOWN_LAST),
];

struct Kernels {
    layout: wgpu::BindGroupLayout,
    pipes: Vec<wgpu::ComputePipeline>,
}

impl Kernels {
    fn get(&self, k: K) -> &wgpu::ComputePipeline {
        &self.pipes[k as usize]
    }
}

/// The bind group layout every kernel shares: a uniform, three read-only and one
/// writable storage buffer (see `shader.rs`).
pub(crate) fn layout_entries() -> [wgpu::BindGroupLayoutEntry; 5] {
    let storage = |binding, read_only| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    };
    [
        wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        },
        storage(1, true),
        storage(2, true),
        storage(3, true),
        storage(4, false),
    ]
}

/// One bind group binding `bufs` to bindings 0, 1, 2, ... in order (every kernel
/// uses the same layout: parameters, three inputs, one output).
pub(crate) fn bind_group(
    device: &wgpu::Device,
    layout: &wgpu::BindGroupLayout,
    bufs: &[&wgpu::Buffer],
) -> wgpu::BindGroup {
    let entries: Vec<wgpu::BindGroupEntry> = bufs
        .iter()
        .enumerate()
        .map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.as_entire_binding() })
        .collect();
    device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout, entries: &entries })
}

/// Compiles each module's source and creates one pipeline per entry point it names,
/// in order; all share one bind group layout ([`layout_entries`]).
pub(crate) fn build_pipelines(
    ctx: &GpuContext,
    modules: &[(&str, &[&str])],
) -> (wgpu::BindGroupLayout, Vec<wgpu::ComputePipeline>) {
    let device = &ctx.device;
    let layout = device
        .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some("tpow"), entries: &layout_entries() });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some("tpow"),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let mut pipes = Vec::new();
    for (source, entries) in modules {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("tpow forward"),
            source: wgpu::ShaderSource::Wgsl((*source).into()),
        });
        pipes.extend(entries.iter().map(|name| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(name),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(name),
                // Every variable is written before it is read.
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &[],
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            })
        }));
    }
    (layout, pipes)
}

/// One model's weights, laid out for the kernels.
pub(crate) struct Weights {
    prev_id: [u8; 32],
    tok_emb: wgpu::Buffer,
    pos_emb: wgpu::Buffer,
    /// Per layer: q|k|v concatenated, attention output, MLP up, MLP down.
    layers: Vec<[wgpu::Buffer; 4]>,
}

impl Weights {
    /// Buffers filled elsewhere (derived on the device: `derive.rs`), in the order
    /// and layout [`weight_bytes`] gives; `None` unless that is 2 + 4 per layer.
    pub(crate) fn from_buffers(prev_id: [u8; 32], buffers: Vec<wgpu::Buffer>) -> Option<Self> {
        if buffers.len() < 2 || !(buffers.len() - 2).is_multiple_of(4) {
            return None;
        }
        let mut it = buffers.into_iter();
        let (tok_emb, pos_emb) = (it.next()?, it.next()?);
        let mut layers = Vec::new();
        while let (Some(a), Some(b), Some(c), Some(d)) = (it.next(), it.next(), it.next(), it.next()) {
            layers.push([a, b, c, d]);
        }
        Some(Weights { prev_id, tok_emb, pos_emb, layers })
    }

    /// The buffers in [`weight_bytes`] order.
    pub(crate) fn buffers(&self) -> Vec<&wgpu::Buffer> {
        let mut v = vec![&self.tok_emb, &self.pos_emb];
        v.extend(self.layers.iter().flatten());
        v
    }
}

/// The bytes [`Engine::set_model`] uploads, one entry per weight buffer in
/// [`Weights`] order (the reference the GPU derivation is tested against).
pub(crate) fn weight_bytes(model: &Model) -> Vec<Vec<u8>> {
    let mut v = vec![row_major(&model.tok_emb), row_major(&model.pos_emb)];
    for l in &model.layers {
        v.extend([k_major(&[&l.wq, &l.wk, &l.wv]), k_major(&[&l.wo]), k_major(&[&l.w_up]), k_major(&[&l.w_down])]);
    }
    v
}

/// Per-batch buffers, sized for `capacity` items.
struct Batch {
    params: wgpu::Buffer,
    dummy: wgpu::Buffer,
    /// GELU and 2^-x tables ([`shader::tables`]).
    tables: wgpu::Buffer,
    tokens: wgpu::Buffer,
    x: wgpu::Buffer,
    h: wgpu::Buffer,
    qkv: wgpu::Buffer,
    att: wgpu::Buffer,
    up: wgpu::Buffer,
    out: wgpu::Buffer,
    /// Two read-back buffers, so that one batch's results can be read while the next
    /// batch runs (the other buffers are reused in queue order and need no copy).
    readback: [wgpu::Buffer; 2],
}

struct Binds {
    embed: wgpu::BindGroup,
    norm: wgpu::BindGroup,
    out: wgpu::BindGroup,
    attn: wgpu::BindGroup,
    /// Per layer: qkv, wo, up, down.
    layers: Vec<[wgpu::BindGroup; 4]>,
}

/// Bytes per batch item of each per-batch buffer; the largest bounds the batch size.
fn item_bytes(spec: &ModelSpec) -> [u64; 7] {
    let (s, d, f) = (spec.seq_len as u64, spec.d_model as u64, spec.d_ffn as u64);
    [
        s * 4,     // tokens
        s * d * 4, // x (i32)
        s * d,     // h
        3 * s * d, // qkv
        s * d,     // att
        s * f,     // up
        d,         // out
    ]
}

/// The largest batch the device's limits allow for `spec` (0 if not even one item fits).
pub(crate) fn max_batch(spec: &ModelSpec, limits: &wgpu::Limits, shape: MmShape) -> u32 {
    let per_buffer = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
    let biggest = item_bytes(spec).into_iter().max().unwrap_or(1).max(1);
    let by_memory = per_buffer / biggest;
    // Matrix-product grids: rows / (rows per invocation * wg_y) workgroups along y.
    let max_wg = limits.max_compute_workgroups_per_dimension as u64;
    let tile = |r: Rows| (shape.rows_for(r) * shape.wg_y) as u64;
    let by_grid = (max_wg * tile(Rows::All) / spec.seq_len as u64).min(max_wg * tile(Rows::Last));
    by_memory.min(by_grid).min(u32::MAX as u64) as u32
}

/// A 1-D kernel over `threads` invocations as a 2-D grid of `LINEAR_WG`-wide groups.
fn linear_grid(threads: u32, max_dim: u32) -> (u32, u32) {
    let groups = threads.div_ceil(LINEAR_WG).max(1);
    let x = groups.min(max_dim);
    (x, groups.div_ceil(x))
}

/// The grid of a matrix product with `n` outputs over `n_rows` rows of kind `rows`.
fn mm_grid(shape: MmShape, n: u32, n_rows: u32, rows: Rows) -> (u32, u32) {
    ((n / 4).div_ceil(shape.groups * MM_WG_X), n_rows.div_ceil(shape.rows_for(rows) * shape.wg_y))
}

/// Row-major weights as packed int8 words (four consecutive weights per word, the
/// first in the low byte; GPU buffers are little-endian).
fn row_major(m: &Matrix) -> Vec<u8> {
    m.data.iter().map(|&v| v as u8).collect()
}

/// Stacked matrices (same `cols`) packed k-major: word `k * n + j` holds weights
/// `4k..4k+4` of output row `j`, so one invocation's four outputs are one 16-byte load.
fn k_major(ms: &[&Matrix]) -> Vec<u8> {
    let cols = ms[0].cols;
    let n: usize = ms.iter().map(|m| m.rows).sum();
    let mut out = vec![0u8; n * cols];
    let mut j = 0;
    for m in ms {
        debug_assert_eq!(m.cols, cols);
        for r in 0..m.rows {
            let row = m.row(r);
            for k in 0..cols / 4 {
                let dst = (k * n + j) * 4;
                for t in 0..4 {
                    out[dst + t] = row[4 * k + t] as u8;
                }
            }
            j += 1;
        }
    }
    out
}

/// One dispatch of a profiled forward pass ([`crate::GpuMiner::profile`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DispatchTime {
    /// What it computes: `embedding`, `norms`, `qkv`, `attention`, `wo`, `up`,
    /// `down`, or `read-back` (copying the outputs out and mapping them).
    pub stage: &'static str,
    /// The WGSL entry point.
    pub kernel: &'static str,
    /// Workgroups dispatched along x and y.
    pub grid: (u32, u32),
    /// Wall time of a submission holding only this dispatch, waited for.
    pub wall: std::time::Duration,
    /// Its GPU time between timestamps, where the device records them.
    pub gpu: Option<std::time::Duration>,
    /// CPU time that all threads of this process spent during `wall` (Linux only).
    /// A software adapter (lavapipe) runs the kernels on threads of this process, so
    /// this is the kernel's cost however busy the rest of the machine is.
    pub cpu: Option<std::time::Duration>,
    /// Wall time of an empty submission and its wait on this device (median of 9):
    /// the part of `wall` that is not the kernel.
    pub overhead: std::time::Duration,
}

/// CPU time used so far by all threads of this process, from Linux's per-thread
/// `/proc/self/task/*/schedstat` (nanoseconds on the CPU); `None` elsewhere.
#[cfg(not(target_arch = "wasm32"))]
fn process_cpu_time() -> Option<std::time::Duration> {
    let mut total = 0u64;
    for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        // A thread that exits meanwhile is skipped.
        let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else { continue };
        total += text.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    Some(std::time::Duration::from_nanos(total))
}

/// The profile stage a kernel belongs to.
#[cfg(not(target_arch = "wasm32"))]
fn stage_of(k: K) -> &'static str {
    match k {
        K::Embed => "embedding",
        K::NormAll | K::NormLast | K::NormOut => "norms",
        K::MmQkv => "qkv",
        K::AttnAll | K::AttnLast => "attention",
        K::MmWoAll | K::MmWoLast => "wo",
        K::MmUpAll | K::MmUpLast => "up",
        K::MmDownAll | K::MmDownLast => "down",
    }
}

/// A submitted batch: where its output will be and which submission writes it.
pub(crate) struct Pending {
    slot: usize,
    out_len: u64,
    index: wgpu::SubmissionIndex,
}

/// The batched forward pass for one model shape.
pub(crate) struct Engine {
    ctx: GpuContext,
    spec: ModelSpec,
    capacity: u32,
    max_dim: u32,
    /// Work per matrix-product invocation, by adapter kind.
    shape: MmShape,
    kernels: Kernels,
    batch: Batch,
    weights: Option<Weights>,
    binds: Option<Binds>,
}

impl Engine {
    /// Compiles the kernels for `spec` and allocates buffers for up to `capacity`
    /// items (fewer if the device's limits demand it).
    pub(crate) async fn new(ctx: &GpuContext, spec: &ModelSpec, capacity: u32, dot: DotImpl) -> Result<Self, GpuError> {
        Self::with_shape(ctx, spec, capacity, dot, MmShape::for_adapter(ctx.adapter())).await
    }

    /// [`Engine::new`] with the matrix-product shape given (tests run both shapes on
    /// whatever adapter they have).
    pub(crate) async fn with_shape(
        ctx: &GpuContext,
        spec: &ModelSpec,
        capacity: u32,
        dot: DotImpl,
        shape: MmShape,
    ) -> Result<Self, GpuError> {
        spec.validate()?;
        let limits = ctx.limits();
        let fit = max_batch(spec, &limits, shape);
        if fit == 0 {
            return Err(GpuError::UnsupportedLimits(format!(
                "one item needs {} bytes per buffer; max_storage_buffer_binding_size is {}",
                item_bytes(spec).into_iter().max().unwrap_or(0),
                limits.max_storage_buffer_binding_size
            )));
        }
        let (d, f, v) = (spec.d_model as u64, spec.d_ffn as u64, spec.vocab as u64);
        let biggest_matrix = (3 * d * d).max(f * d).max(v * d);
        if biggest_matrix > limits.max_storage_buffer_binding_size {
            return Err(GpuError::UnsupportedLimits(format!(
                "a weight matrix of {biggest_matrix} bytes exceeds max_storage_buffer_binding_size {}",
                limits.max_storage_buffer_binding_size
            )));
        }
        if limits.max_compute_invocations_per_workgroup < LINEAR_WG
            || limits.max_compute_workgroup_size_x < LINEAR_WG
            || limits.max_storage_buffers_per_shader_stage < 4
        {
            return Err(GpuError::UnsupportedLimits(
                "needs 64-invocation workgroups and 4 storage buffers per stage".into(),
            ));
        }
        let capacity = capacity.clamp(1, fit);
        let source = shader::forward_module(spec, dot, shape);
        let mm_source = shader::matmul_module(spec, dot, shape);
        let (mm, other): (Vec<&str>, Vec<&str>) = KERNELS.iter().map(|(_, n)| *n).partition(|n| n.starts_with("mm_"));
        // Pipelines in KERNELS order: the word-indexed kernels come first there.
        debug_assert!(KERNELS.iter().map(|(_, n)| *n).eq(other.iter().chain(&mm).copied()));
        let (layout, pipes) = ctx.scoped(|| build_pipelines(ctx, &[(&source, &other), (&mm_source, &mm)])).await?;
        let batch = ctx.scoped(|| Self::alloc_batch(ctx, spec, capacity)).await?;
        Ok(Engine {
            ctx: ctx.clone(),
            spec: *spec,
            capacity,
            max_dim: limits.max_compute_workgroups_per_dimension,
            shape,
            kernels: Kernels { layout, pipes },
            batch,
            weights: None,
            binds: None,
        })
    }

    fn alloc_batch(ctx: &GpuContext, spec: &ModelSpec, capacity: u32) -> Batch {
        let dev = &ctx.device;
        let b = capacity as u64;
        let [tokens, x, h, qkv, att, up, out] = item_bytes(spec);
        let mk = |label, size: u64, usage| {
            dev.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size, usage, mapped_at_creation: false })
        };
        let st = wgpu::BufferUsages::STORAGE;
        let cd = wgpu::BufferUsages::COPY_DST;
        let table_bytes = shader::tables();
        let tables = mk("tables", table_bytes.len() as u64, st | cd);
        ctx.queue.write_buffer(&tables, 0, &table_bytes);
        Batch {
            params: mk("params", 16, wgpu::BufferUsages::UNIFORM | cd),
            dummy: mk("dummy", 16, st),
            tables,
            tokens: mk("tokens", b * tokens, st | cd),
            x: mk("x", b * x, st),
            h: mk("h", b * h, st),
            qkv: mk("qkv", b * qkv, st),
            att: mk("att", b * att, st),
            up: mk("up", b * up, st),
            out: mk("out", b * out, st | wgpu::BufferUsages::COPY_SRC),
            readback: [0, 1].map(|_| mk("readback", b * out, wgpu::BufferUsages::MAP_READ | cd)),
        }
    }

    /// The model shape.
    pub(crate) fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Items per dispatch.
    pub(crate) fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The previous block id of the loaded model.
    pub(crate) fn loaded(&self) -> Option<[u8; 32]> {
        self.weights.as_ref().map(|w| w.prev_id)
    }

    /// Uploads `model`'s weights (its spec must be this engine's). Returns when the
    /// upload has reached the device (natively), so it can be timed.
    pub(crate) async fn set_model(&mut self, model: &Model) -> Result<(), GpuError> {
        if model.spec != self.spec {
            return Err(GpuError::Validation("model spec differs from the engine's".into()));
        }
        // Drop the old weights first so two models never coexist on the device.
        self.unload();
        let ctx = self.ctx.clone();
        let weights = ctx.scoped(|| Self::upload(&ctx, model)).await?;
        self.set_weights(weights).await
    }

    /// Drops the loaded model (call before filling a new one's buffers).
    pub(crate) fn unload(&mut self) {
        self.binds = None;
        self.weights = None;
    }

    /// Makes `weights` (filled by queued work, in [`weight_bytes`] layout) the loaded
    /// model. Returns when that work is done (natively), so it can be timed.
    pub(crate) async fn set_weights(&mut self, weights: Weights) -> Result<(), GpuError> {
        self.unload();
        let ctx = self.ctx.clone();
        let binds = ctx.scoped(|| self.bind(&weights)).await?;
        #[cfg(not(target_arch = "wasm32"))]
        {
            ctx.queue.submit([]);
            ctx.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| ctx.check().err().unwrap_or(GpuError::Map(e.to_string())))?;
        }
        ctx.check()?;
        self.weights = Some(weights);
        self.binds = Some(binds);
        Ok(())
    }

    fn upload(ctx: &GpuContext, model: &Model) -> Weights {
        let mk = |label: &str, bytes: &[u8]| {
            let buf = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes.len() as u64,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            ctx.queue.write_buffer(&buf, 0, bytes);
            buf
        };
        Weights {
            prev_id: model.prev_id,
            tok_emb: mk("tok_emb", &row_major(&model.tok_emb)),
            pos_emb: mk("pos_emb", &row_major(&model.pos_emb)),
            layers: model
                .layers
                .iter()
                .map(|l| {
                    [
                        mk("wqkv", &k_major(&[&l.wq, &l.wk, &l.wv])),
                        mk("wo", &k_major(&[&l.wo])),
                        mk("w_up", &k_major(&[&l.w_up])),
                        mk("w_down", &k_major(&[&l.w_down])),
                    ]
                })
                .collect(),
        }
    }

    fn bind(&self, w: &Weights) -> Binds {
        let b = &self.batch;
        let group = |a: &wgpu::Buffer, bb: &wgpu::Buffer, c: &wgpu::Buffer, dst: &wgpu::Buffer| {
            bind_group(&self.ctx.device, &self.kernels.layout, &[&b.params, a, bb, c, dst])
        };
        let dm = &b.dummy;
        Binds {
            embed: group(&b.tokens, &w.tok_emb, &w.pos_emb, &b.x),
            norm: group(&b.x, dm, dm, &b.h),
            out: group(&b.x, dm, dm, &b.out),
            attn: group(&b.qkv, dm, &b.tables, &b.att),
            layers: w
                .layers
                .iter()
                .map(|[qkv, wo, up, down]| {
                    [
                        group(&b.h, qkv, dm, &b.qkv),
                        group(&b.att, wo, dm, &b.x),
                        group(&b.h, up, &b.tables, &b.up),
                        group(&b.up, down, dm, &b.x),
                    ]
                })
                .collect(),
        }
    }

    /// Queues the forward pass on `n` items (`tokens`: `n * seq_len` token ids),
    /// its output copied to read-back buffer `slot` (0 or 1); collect it with
    /// [`Engine::read`]. Two batches may be in flight in different slots.
    pub(crate) async fn submit(&mut self, tokens: &[u32], n: u32, slot: usize) -> Result<Pending, GpuError> {
        let binds = self.binds.as_ref().ok_or(GpuError::NoModel)?;
        assert!(n >= 1 && n <= self.capacity, "batch of {n} items");
        assert_eq!(tokens.len(), (n * self.spec.seq_len) as usize);
        let out_len = n as u64 * self.spec.d_model as u64;
        let ctx = self.ctx.clone();
        let readback = &self.batch.readback[slot];
        let index = ctx
            .scoped(|| {
                // Queue writes land before the next submission and after earlier ones,
                // so reusing these buffers for consecutive batches is safe.
                let q = &ctx.queue;
                q.write_buffer(&self.batch.params, 0, &params_bytes(n));
                let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
                q.write_buffer(&self.batch.tokens, 0, &bytes);
                let mut enc =
                    ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("tpow forward") });
                {
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("tpow forward"),
                        timestamp_writes: None,
                    });
                    self.encode(&mut pass, binds, n);
                }
                enc.copy_buffer_to_buffer(&self.batch.out, 0, readback, 0, out_len);
                q.submit([enc.finish()])
            })
            .await?;
        Ok(Pending { slot, out_len, index })
    }

    /// The `n * d_model` output bytes (int8, two's complement, item by item) of a
    /// submitted batch; waits for it.
    pub(crate) async fn read(&mut self, p: Pending) -> Result<Vec<u8>, GpuError> {
        let buf = &self.batch.readback[p.slot];
        self.ctx.map_read(buf, p.out_len, p.index).await?;
        let bytes =
            buf.get_mapped_range(..p.out_len).map(|view| view.to_vec()).map_err(|e| GpuError::Map(e.to_string()));
        buf.unmap();
        bytes
    }

    /// Runs the forward pass on `n` items (`tokens` as for [`Engine::submit`]) once per
    /// timing method and reports each dispatch: its GPU time from timestamp queries
    /// (where the device records them; all dispatches in one submission, each in its
    /// own compute pass) and its wall time with one submission per dispatch, waited
    /// for (so it includes the submit-and-wait overhead, reported as
    /// [`DispatchTime::overhead`]). The last entry is the read-back (copy and map).
    /// Native only: the browser has no blocking wait.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn profile(&mut self, tokens: &[u32], n: u32) -> Result<Vec<DispatchTime>, GpuError> {
        use std::time::{Duration, Instant};
        let binds = self.binds.as_ref().ok_or(GpuError::NoModel)?;
        if n == 0 || n > self.capacity || tokens.len() != (n * self.spec.seq_len) as usize {
            return Err(GpuError::Validation(format!("profile: {n} items of {} tokens", self.spec.seq_len)));
        }
        let ctx = self.ctx.clone();
        let dev = &ctx.device;
        let q = &ctx.queue;
        let plan = self.plan(binds, n);
        let out_len = n as u64 * self.spec.d_model as u64;
        let wait = |index: wgpu::SubmissionIndex| {
            dev.poll(wgpu::PollType::Wait { submission_index: Some(index), timeout: None })
                .map(|_| ())
                .map_err(|e| ctx.check().err().unwrap_or_else(|| GpuError::Map(e.to_string())))
        };
        let load_inputs = || {
            q.write_buffer(&self.batch.params, 0, &params_bytes(n));
            let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
            q.write_buffer(&self.batch.tokens, 0, &bytes);
        };
        let one_pass = |enc: &mut wgpu::CommandEncoder,
                        op: &(K, &wgpu::BindGroup, (u32, u32)),
                        ts: Option<wgpu::ComputePassTimestampWrites<'_>>| {
            let mut pass = enc
                .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("tpow profile"), timestamp_writes: ts });
            pass.set_pipeline(self.kernels.get(op.0));
            pass.set_bind_group(0, op.1, &[]);
            pass.dispatch_workgroups(op.2 .0, op.2 .1, 1);
        };

        // GPU timestamps: begin and end of each dispatch's pass, one submission.
        let mut gpu: Vec<Option<Duration>> = vec![None; plan.len()];
        if dev.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            let count = 2 * plan.len() as u32;
            let bytes = count as u64 * wgpu::QUERY_SIZE as u64;
            let (read, index) = pollster::block_on(ctx.scoped(|| {
                load_inputs();
                let set = dev.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("tpow profile"),
                    ty: wgpu::QueryType::Timestamp,
                    count,
                });
                let mk = |usage| {
                    dev.create_buffer(&wgpu::BufferDescriptor {
                        label: None,
                        size: bytes,
                        usage,
                        mapped_at_creation: false,
                    })
                };
                let resolve = mk(wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC);
                let read = mk(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
                let mut enc = dev.create_command_encoder(&Default::default());
                for (i, op) in plan.iter().enumerate() {
                    let ts = wgpu::ComputePassTimestampWrites {
                        query_set: &set,
                        beginning_of_pass_write_index: Some(2 * i as u32),
                        end_of_pass_write_index: Some(2 * i as u32 + 1),
                    };
                    one_pass(&mut enc, op, Some(ts));
                }
                enc.resolve_query_set(&set, 0..count, &resolve, 0);
                enc.copy_buffer_to_buffer(&resolve, 0, &read, 0, bytes);
                (read, q.submit([enc.finish()]))
            }))?;
            pollster::block_on(ctx.map_read(&read, bytes, index))?;
            let ticks: Vec<u64> = read
                .get_mapped_range(..)
                .map_err(|e| GpuError::Map(e.to_string()))?
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect();
            read.unmap();
            let period = f64::from(q.get_timestamp_period());
            for (i, g) in gpu.iter_mut().enumerate() {
                let dt = ticks[2 * i + 1].saturating_sub(ticks[2 * i]);
                *g = Some(Duration::from_secs_f64(dt as f64 * period * 1e-9));
            }
        }

        // The cost of a submission and its wait with nothing in it (median of 9).
        let mut empty = Vec::with_capacity(9);
        for _ in 0..9 {
            let t = Instant::now();
            let enc = dev.create_command_encoder(&Default::default());
            let index = pollster::block_on(ctx.scoped(|| q.submit([enc.finish()])))?;
            wait(index)?;
            empty.push(t.elapsed());
        }
        empty.sort();
        let overhead = empty[empty.len() / 2];

        // Wall time: one submission per dispatch, each waited for.
        pollster::block_on(ctx.scoped(load_inputs))?;
        let mut times = Vec::with_capacity(plan.len() + 1);
        for (op, g) in plan.iter().zip(gpu) {
            let cpu0 = process_cpu_time();
            let t = Instant::now();
            let index = pollster::block_on(ctx.scoped(|| {
                let mut enc = dev.create_command_encoder(&Default::default());
                one_pass(&mut enc, op, None);
                q.submit([enc.finish()])
            }))?;
            wait(index)?;
            let wall = t.elapsed();
            let cpu = process_cpu_time().zip(cpu0).map(|(b, a)| b.saturating_sub(a));
            times.push(DispatchTime {
                stage: stage_of(op.0),
                kernel: KERNELS[op.0 as usize].1,
                grid: op.2,
                wall,
                gpu: g,
                cpu,
                overhead,
            });
        }
        let t = Instant::now();
        let readback = &self.batch.readback[0];
        let index = pollster::block_on(ctx.scoped(|| {
            let mut enc = dev.create_command_encoder(&Default::default());
            enc.copy_buffer_to_buffer(&self.batch.out, 0, readback, 0, out_len);
            q.submit([enc.finish()])
        }))?;
        pollster::block_on(ctx.map_read(readback, out_len, index))?;
        let copied = readback.get_mapped_range(..out_len).map(|v| v.len()).map_err(|e| GpuError::Map(e.to_string()));
        readback.unmap();
        copied?;
        times.push(DispatchTime {
            stage: "read-back",
            kernel: "copy+map",
            grid: (0, 0),
            wall: t.elapsed(),
            gpu: None,
            cpu: None,
            overhead,
        });
        Ok(times)
    }

    fn encode(&self, pass: &mut wgpu::ComputePass<'_>, binds: &Binds, n: u32) {
        for (kern, bg, (x, y)) in self.plan(binds, n) {
            pass.set_pipeline(self.kernels.get(kern));
            pass.set_bind_group(0, bg, &[]);
            pass.dispatch_workgroups(x, y, 1);
        }
    }

    /// The dispatches of one forward pass over `n` items, in order: kernel, bind
    /// group, grid.
    fn plan<'b>(&self, binds: &'b Binds, n: u32) -> Vec<(K, &'b wgpu::BindGroup, (u32, u32))> {
        let spec = &self.spec;
        let (s, d, f) = (spec.seq_len, spec.d_model, spec.d_ffn);
        let linear = |threads: u32| linear_grid(threads, self.max_dim);
        let mut ops = Vec::with_capacity(2 + 7 * binds.layers.len());
        ops.push((K::Embed, &binds.embed, linear(n * s * d / 4)));
        let n_layers = binds.layers.len();
        for (l, [qkv, wo, up, down]) in binds.layers.iter().enumerate() {
            let rows = if l + 1 == n_layers { Rows::Last } else { Rows::All };
            let r = n * rows.per_item(spec);
            let (attn, k_wo, norm, k_up, k_down) = match rows {
                Rows::All => (K::AttnAll, K::MmWoAll, K::NormAll, K::MmUpAll, K::MmDownAll),
                Rows::Last => (K::AttnLast, K::MmWoLast, K::NormLast, K::MmUpLast, K::MmDownLast),
            };
            // Keys and values are needed at every position, even in the last block.
            ops.push((K::NormAll, &binds.norm, linear(n * s)));
            ops.push((K::MmQkv, qkv, mm_grid(self.shape, 3 * d, n * s, Rows::All)));
            let blocks = rows.per_item(spec) / shader::attn_queries(spec, rows, self.shape);
            ops.push((attn, &binds.attn, linear(n * spec.n_heads * blocks)));
            ops.push((k_wo, wo, mm_grid(self.shape, d, r, rows)));
            ops.push((norm, &binds.norm, linear(r)));
            ops.push((k_up, up, mm_grid(self.shape, f, r, rows)));
            ops.push((k_down, down, mm_grid(self.shape, d, r, rows)));
        }
        ops.push((K::NormOut, &binds.out, linear(n)));
        ops
    }
}

fn params_bytes(n: u32) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[..4].copy_from_slice(&n.to_le_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_major_layout() {
        let m = Matrix { rows: 2, cols: 8, data: (0..16).collect() };
        // word k*n + j = weights 4k..4k+4 of row j.
        assert_eq!(k_major(&[&m]), vec![0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15]);
    }

    #[test]
    fn batch_limits() {
        let limits = wgpu::Limits::defaults();
        // Mainnet: the x and up buffers take 64 KiB per item; 128 MiB binding limit.
        for shape in [MmShape::GPU, MmShape::CPU] {
            assert_eq!(max_batch(&ModelSpec::MAINNET, &limits, shape), 2048);
            assert!(max_batch(&ModelSpec::DEVNET, &limits, shape) >= 16384);
        }
        let mut tiny = limits.clone();
        tiny.max_storage_buffer_binding_size = 1024;
        assert_eq!(max_batch(&ModelSpec::MAINNET, &tiny, MmShape::GPU), 0);
    }

    #[test]
    fn grids_cover_their_threads() {
        assert_eq!(linear_grid(1, 65535), (1, 1));
        assert_eq!(linear_grid(64 * 70000, 65535), (65535, 2));
        assert_eq!(mm_grid(MmShape::GPU, 64, 1, Rows::All), (1, 1));
        assert_eq!(mm_grid(MmShape::GPU, 768, 64 * 256, Rows::All), (12, 1024));
        assert_eq!(mm_grid(MmShape::GPU, 256, 16, Rows::Last), (4, 1));
        assert_eq!(mm_grid(MmShape::CPU, 768, 64, Rows::All), (3, 4));
        assert_eq!(mm_grid(MmShape::CPU, 256, 3, Rows::Last), (1, 3));
    }
}

#[cfg(test)]
mod gpu_tests {
    use super::*;

    /// The device, or `None` (test skipped) when there is none and
    /// `TPOW_GPU_TESTS=skip`; a missing adapter otherwise fails, as in tests/common.
    fn gpu() -> Option<GpuContext> {
        match GpuContext::new_blocking(&crate::GpuOptions::default()) {
            Ok(ctx) => Some(ctx),
            Err(e) if std::env::var("TPOW_GPU_TESTS").as_deref() == Ok("skip") => {
                eprintln!("no GPU ({e}): skipped");
                None
            }
            Err(e) => panic!("no GPU adapter: {e} (install mesa-vulkan-drivers, or TPOW_GPU_TESTS=skip)"),
        }
    }

    fn buffer(ctx: &GpuContext, bytes: &[u8], usage: wgpu::BufferUsages) -> wgpu::Buffer {
        let b = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes.len().max(16) as u64,
            usage: usage | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        ctx.queue.write_buffer(&b, 0, bytes);
        b
    }

    /// With the grid's per-dimension limit forced down to 2 workgroups, the 1-D
    /// kernels run on 2-D grids (as a batch of 16k devnet items would on any GPU); the
    /// results must not change.
    #[test]
    fn two_dimensional_grids_are_exact() {
        let Some(ctx) = gpu() else { return };
        let spec = ModelSpec::DEVNET;
        let model = Model::derive(&spec, &[5; 32]).expect("spec");
        let mut e = pollster::block_on(Engine::new(&ctx, &spec, 9, DotImpl::Unpacked)).expect("engine");
        pollster::block_on(e.set_model(&model)).expect("upload");
        e.max_dim = 2;
        assert!(e.plan(e.binds.as_ref().expect("bound"), 9).iter().any(|op| op.2 .1 > 1));
        let template = [1u8; 152];
        let mut ids = Vec::new();
        let mut tokens = vec![0u16; spec.seq_len as usize];
        for nonce in 0..9 {
            tpow_core::puzzle::input_tokens(&spec, &template, nonce, &mut tokens);
            ids.extend(tokens.iter().map(|&t| t as u32));
        }
        let p = pollster::block_on(e.submit(&ids, 9, 1)).expect("submit");
        let got = pollster::block_on(e.read(p)).expect("read");
        let mut solver = tpow_core::puzzle::Solver::new(&model);
        for (nonce, out) in got.chunks_exact(spec.d_model as usize).enumerate() {
            let want: Vec<u8> = solver.output(&template, nonce as u64).iter().map(|&v| v as u8).collect();
            assert_eq!(out, want.as_slice(), "nonce {nonce}");
        }
    }

    /// The matrix-product shape this adapter does not pick gives the CPU's outputs too
    /// (the other tests run the one it picks), on devnet and on shapes at the edges of
    /// `ModelSpec::validate` (one position, head width 4 and 64, one layer, `d_model`
    /// 16), in batches with a short last one.
    #[test]
    fn the_other_matmul_shape_is_exact() {
        let Some(ctx) = gpu() else { return };
        let specs = [
            ModelSpec::DEVNET,
            ModelSpec { vocab: 16, seq_len: 1, d_model: 16, n_heads: 4, n_layers: 1, d_ffn: 16 },
            ModelSpec { vocab: 64, seq_len: 8, d_model: 32, n_heads: 1, n_layers: 3, d_ffn: 64 },
            ModelSpec { vocab: 2, seq_len: 4, d_model: 64, n_heads: 16, n_layers: 2, d_ffn: 32 },
        ];
        let dot = if ctx.adapter().packed_dot { DotImpl::Packed } else { DotImpl::Unpacked };
        let picked = MmShape::for_adapter(ctx.adapter());
        for shape in [MmShape::GPU, MmShape::CPU].into_iter().filter(|&s| s != picked) {
            for (i, spec) in specs.iter().enumerate() {
                let model = Model::derive(spec, &[i as u8 + 1; 32]).expect("spec");
                let mut e = pollster::block_on(Engine::with_shape(&ctx, spec, 5, dot, shape)).expect("engine");
                pollster::block_on(e.set_model(&model)).expect("upload");
                let template = [i as u8; 152];
                let mut solver = tpow_core::puzzle::Solver::new(&model);
                let mut tokens = vec![0u16; spec.seq_len as usize];
                for batch in [(0..5u64), (5..7)] {
                    let nonces: Vec<u64> = batch.collect();
                    let mut ids = Vec::new();
                    for &nonce in &nonces {
                        tpow_core::puzzle::input_tokens(spec, &template, nonce, &mut tokens);
                        ids.extend(tokens.iter().map(|&t| t as u32));
                    }
                    let p = pollster::block_on(e.submit(&ids, nonces.len() as u32, 0)).expect("submit");
                    let got = pollster::block_on(e.read(p)).expect("read");
                    for (&nonce, out) in nonces.iter().zip(got.chunks_exact(spec.d_model as usize)) {
                        let want: Vec<u8> = solver.output(&template, nonce).iter().map(|&v| v as u8).collect();
                        assert_eq!(out, want.as_slice(), "{shape:?} {dot:?} {spec:?} nonce {nonce}");
                    }
                }
            }
        }
    }

    /// The shift-subtract division and the bitwise square root of the kernels agree
    /// with Rust's `/` and `tpow_core`'s `isqrt` on edge cases and on every argument
    /// pattern the forward pass produces.
    #[test]
    fn udiv_and_isqrt_match_rust() {
        let Some(ctx) = gpu() else { return };
        let mut pairs: Vec<(u32, u32)> = vec![
            (0, 1),
            (1, 1),
            (u32::MAX, 1),
            (u32::MAX, 2),
            (u32::MAX, (1 << 31) - 1),
            (5, 7),
            (1 << 30, 3),
            ((1 << 31) + 5, 1 << 30),
        ];
        // RMS norm: 2^(b+14) / r for r in 1..=2^15 with b = bit_length(r).
        pairs.extend((1u32..=1 << 15).map(|r| (1 << (32 - r.leading_zeros() + 14), r)));
        // Softmax: 2^30 / sum, sum in 2^15..2^25.
        pairs.extend((0..20_000u32).map(|i| (1 << 30, (1 << 15) + i * 1657)));
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let d = ((x >> 32) as u32 >> (x % 31)).max(1) & 0x7fff_ffff;
            pairs.push((x as u32, d.max(1)));
        }
        let input: Vec<u8> = pairs.iter().flat_map(|&(n, d)| [n.to_le_bytes(), d.to_le_bytes()]).flatten().collect();
        let src = shader::arith_test_module();
        let (layout, pipes) = build_pipelines(&ctx, &[(&src, &["arith"])]);
        let st = wgpu::BufferUsages::STORAGE;
        let n = pairs.len() as u32;
        let params = buffer(&ctx, &params_bytes(n), wgpu::BufferUsages::UNIFORM);
        let a = buffer(&ctx, &input, st);
        let dummy = buffer(&ctx, &[], st);
        let out = buffer(&ctx, &vec![0; input.len()], st | wgpu::BufferUsages::COPY_SRC);
        let read = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: input.len() as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let bg = bind_group(&ctx.device, &layout, &[&params, &a, &dummy, &dummy, &out]);
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipes[0]);
            pass.set_bind_group(0, &bg, &[]);
            let (gx, gy) = linear_grid(n, 65535);
            pass.dispatch_workgroups(gx, gy, 1);
        }
        enc.copy_buffer_to_buffer(&out, 0, &read, 0, input.len() as u64);
        let index = ctx.queue.submit([enc.finish()]);
        pollster::block_on(ctx.map_read(&read, input.len() as u64, index)).expect("map");
        let got: Vec<u32> = read
            .get_mapped_range(..)
            .expect("mapped")
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        for (i, &(n, d)) in pairs.iter().enumerate() {
            assert_eq!(got[2 * i], n / d, "udiv({n}, {d})");
            assert_eq!(got[2 * i + 1], tpow_core::forward::ops::isqrt(n), "isqrt({n})");
        }
    }
}
