//! The two modes: [`GpuMiner`] (batches of nonces, weights uploaded once per block)
//! and [`GpuVerifier`] (one nonce, low latency).

use tpow_core::chain::PowInput;
use tpow_core::header::TEMPLATE_LEN;
use tpow_core::puzzle::{input_tokens, output_digest, pow_hash, Attempt};
use tpow_core::target::hash_meets_target;
use tpow_core::{Model, ModelSpec, U256};

use crate::context::GpuContext;
use crate::derive::Deriver;
use crate::engine::{Engine, Pending};
use crate::shader::DotImpl;
use crate::GpuError;

/// Work done by a [`GpuMiner`] so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MinerStats {
    /// Nonces whose pow hash was computed.
    pub attempts: u64,
    /// Forward-pass dispatches (one per batch).
    pub batches: u64,
    /// Models uploaded.
    pub models: u64,
    /// Nonces found meeting their target.
    pub solutions: u64,
}

/// Mines on the GPU: input tokens are derived on the CPU per nonce, a whole batch
/// runs as one sequence of dispatches, and the outputs come back to be hashed on the
/// CPU (blake3 is cheap next to a forward pass, and this keeps the consensus hashing
/// in one audited implementation).
pub struct GpuMiner {
    ctx: GpuContext,
    batch_size: u32,
    engine: Option<Engine>,
    /// The weight derivation kernel, compiled on first use.
    deriver: Option<Deriver>,
    stats: MinerStats,
    tokens: Vec<u16>,
}

impl GpuMiner {
    /// A miner that runs up to `batch_size` nonces per dispatch (clamped to what the
    /// device's limits allow once a model is set). Nothing is allocated yet.
    pub fn new(ctx: &GpuContext, batch_size: u32) -> Self {
        GpuMiner {
            ctx: ctx.clone(),
            batch_size: batch_size.max(1),
            engine: None,
            deriver: None,
            stats: MinerStats::default(),
            tokens: Vec::new(),
        }
    }

    /// Nonces per dispatch: the requested batch size, or less where the device's
    /// limits demand it (known after [`GpuMiner::set_model`]).
    pub fn batch_size(&self) -> u32 {
        self.engine.as_ref().map_or(self.batch_size, Engine::capacity)
    }

    /// Counters since creation.
    pub fn stats(&self) -> MinerStats {
        self.stats
    }

    /// The previous block id of the loaded model, if any.
    pub fn model_prev_id(&self) -> Option<[u8; 32]> {
        self.engine.as_ref().and_then(Engine::loaded)
    }

    /// Uploads the weights of a given model (compiling the kernels first if the shape
    /// changed): for a model the caller already holds, or one that is not a block's
    /// (the §14.1 conformance models). A block's model is cheaper through
    /// [`GpuMiner::derive_model_async`].
    pub async fn set_model_async(&mut self, model: &Model) -> Result<(), GpuError> {
        self.engine_for(&model.spec).await?.set_model(model).await?;
        self.stats.models += 1;
        Ok(())
    }

    /// Derives the model that mines on top of `prev_id` on the GPU and loads it
    /// (compiling the kernels first if the shape changed): the same weights as
    /// `Model::derive(spec, prev_id)` (docs/PROTOCOL.md §5), computed where they are
    /// used, so neither the CPU derivation nor the upload of every weight is paid.
    pub async fn derive_model_async(&mut self, spec: &ModelSpec, prev_id: &[u8; 32]) -> Result<(), GpuError> {
        if self.deriver.is_none() {
            self.deriver = Some(Deriver::new(&self.ctx).await?);
        }
        self.engine_for(spec).await?;
        let (Some(engine), Some(deriver)) = (self.engine.as_mut(), self.deriver.as_ref()) else {
            return Err(GpuError::NoModel);
        };
        // The old weights go first, so two models never coexist on the device.
        engine.unload();
        let weights = deriver.derive(spec, prev_id, wgpu::BufferUsages::empty()).await?;
        engine.set_weights(weights).await?;
        self.stats.models += 1;
        Ok(())
    }

    /// The engine for `spec`, built (kernels compiled, batch buffers allocated) if the
    /// loaded one has another shape.
    async fn engine_for(&mut self, spec: &ModelSpec) -> Result<&mut Engine, GpuError> {
        let rebuild = match &self.engine {
            Some(e) => e.spec() != spec,
            None => true,
        };
        if rebuild {
            self.engine = None;
            let dot = if self.ctx.adapter().packed_dot { DotImpl::Packed } else { DotImpl::Unpacked };
            self.engine = Some(Engine::new(&self.ctx, spec, self.batch_size, dot).await?);
        }
        self.engine.as_mut().ok_or(GpuError::NoModel)
    }

    /// The forward-pass outputs (`d_model` int8 each) for `nonces` on `template`.
    pub async fn outputs_async(
        &mut self,
        template: &[u8; TEMPLATE_LEN],
        nonces: &[u64],
    ) -> Result<Vec<Vec<i8>>, GpuError> {
        let mut all = Vec::with_capacity(nonces.len());
        let mut chunks = nonces.chunks(self.batch_size() as usize);
        self.pipelined(
            template,
            || chunks.next().map(<[u64]>::to_vec),
            |batch, bytes| {
                let d = bytes.len() / batch.len();
                all.extend(bytes.chunks_exact(d).map(|o| o.iter().map(|&b| b as i8).collect()));
                false
            },
        )
        .await?;
        Ok(all)
    }

    /// The forward-pass outputs (`d_model` int8 each) of the loaded model on given
    /// input tokens: `tokens` holds `seq_len` ids (each `< vocab`) per item, items in
    /// turn. For conformance tests, whose vectors give tokens rather than a puzzle
    /// (tests/vectors/forward.json); mining derives tokens from nonces instead.
    pub async fn outputs_of_tokens_async(&mut self, tokens: &[u16]) -> Result<Vec<Vec<i8>>, GpuError> {
        let batch = self.batch_size() as usize;
        let engine = self.engine.as_mut().ok_or(GpuError::NoModel)?;
        if engine.loaded().is_none() {
            return Err(GpuError::NoModel);
        }
        let spec = *engine.spec();
        let s = spec.seq_len as usize;
        if !tokens.len().is_multiple_of(s) || tokens.iter().any(|&t| u32::from(t) >= spec.vocab) {
            return Err(GpuError::Validation(format!("tokens: whole items of {s} ids, each below {}", spec.vocab)));
        }
        let mut all = Vec::with_capacity(tokens.len() / s);
        for items in tokens.chunks(batch * s) {
            let ids: Vec<u32> = items.iter().map(|&t| u32::from(t)).collect();
            let p = engine.submit(&ids, (items.len() / s) as u32, 0).await?;
            let bytes = engine.read(p).await?;
            self.stats.batches += 1;
            all.extend(bytes.chunks_exact(spec.d_model as usize).map(|o| o.iter().map(|&b| b as i8).collect()));
        }
        Ok(all)
    }

    /// Full attempts (output digest and pow hash) for `nonces` on `template`.
    pub async fn attempts_async(
        &mut self,
        template: &[u8; TEMPLATE_LEN],
        nonces: &[u64],
    ) -> Result<Vec<Attempt>, GpuError> {
        let mut all = Vec::with_capacity(nonces.len());
        let mut chunks = nonces.chunks(self.batch_size() as usize);
        self.pipelined(
            template,
            || chunks.next().map(<[u64]>::to_vec),
            |batch, bytes| {
                all.extend(attempts_of(template, batch, bytes));
                false
            },
        )
        .await?;
        self.stats.attempts += nonces.len() as u64;
        Ok(all)
    }

    /// Tries nonces `start_nonce, start_nonce + 1, ...` (wrapping), `count` of them,
    /// in batches, and returns the first (in that order) whose pow hash meets
    /// `target`, or `None`. It returns after the batch holding a solution; call it
    /// with a `count` of a few batches and check for a new tip between calls.
    pub async fn mine_batch_async(
        &mut self,
        template: &[u8; TEMPLATE_LEN],
        start_nonce: u64,
        count: u64,
        target: &U256,
    ) -> Result<Option<Attempt>, GpuError> {
        let cap = self.batch_size() as u64;
        let mut queued = 0u64;
        let mut tried = 0u64;
        let mut found = None;
        self.pipelined(
            template,
            || {
                if queued >= count {
                    return None;
                }
                let n = cap.min(count - queued);
                let batch = (0..n).map(|i| start_nonce.wrapping_add(queued + i)).collect();
                queued += n;
                Some(batch)
            },
            |batch, bytes| {
                let d = bytes.len() / batch.len();
                for (&nonce, out) in batch.iter().zip(bytes.chunks_exact(d)) {
                    tried += 1;
                    let digest = output_digest_bytes(out);
                    let hash = pow_hash(template, nonce, &digest);
                    if hash_meets_target(&hash, target) {
                        found = Some(Attempt { nonce, output_digest: digest, pow_hash: hash });
                        return true;
                    }
                }
                false
            },
        )
        .await?;
        self.stats.attempts += tried;
        self.stats.solutions += found.is_some() as u64;
        Ok(found)
    }

    /// Runs the batches `next_batch` yields (each at most `batch_size` nonces) with
    /// two in flight: while the GPU computes one, the CPU derives the next one's tokens
    /// and hashes the previous one's outputs. `consume` gets each batch's nonces and
    /// output bytes in order and returns `true` to stop (a batch still in flight is
    /// then abandoned).
    async fn pipelined(
        &mut self,
        template: &[u8; TEMPLATE_LEN],
        mut next_batch: impl FnMut() -> Option<Vec<u64>>,
        mut consume: impl FnMut(&[u64], &[u8]) -> bool,
    ) -> Result<(), GpuError> {
        let GpuMiner { engine, stats, tokens, .. } = self;
        let engine = engine.as_mut().ok_or(GpuError::NoModel)?;
        if engine.loaded().is_none() {
            return Err(GpuError::NoModel);
        }
        let spec = *engine.spec();
        tokens.resize(spec.seq_len as usize, 0);
        let mut pending: Option<(Vec<u64>, Pending)> = None;
        let mut slot = 0;
        loop {
            let next = match next_batch() {
                Some(nonces) if !nonces.is_empty() => {
                    let mut ids = Vec::with_capacity(nonces.len() * tokens.len());
                    for &nonce in &nonces {
                        input_tokens(&spec, template, nonce, tokens);
                        ids.extend(tokens.iter().map(|&t| t as u32));
                    }
                    let p = engine.submit(&ids, nonces.len() as u32, slot).await?;
                    slot ^= 1;
                    Some((nonces, p))
                }
                _ => None,
            };
            if let Some((nonces, p)) = pending.take() {
                let bytes = engine.read(p).await?;
                stats.batches += 1;
                if consume(&nonces, &bytes) {
                    return Ok(());
                }
            }
            match next {
                Some(n) => pending = Some(n),
                None => return Ok(()),
            }
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl GpuMiner {
    /// [`GpuMiner::set_model_async`], blocking.
    pub fn set_model(&mut self, model: &Model) -> Result<(), GpuError> {
        pollster::block_on(self.set_model_async(model))
    }

    /// [`GpuMiner::derive_model_async`], blocking (returns when the weights are on
    /// the device, so it can be timed).
    pub fn derive_model(&mut self, spec: &ModelSpec, prev_id: &[u8; 32]) -> Result<(), GpuError> {
        pollster::block_on(self.derive_model_async(spec, prev_id))
    }

    /// [`GpuMiner::outputs_async`], blocking.
    pub fn outputs(&mut self, template: &[u8; TEMPLATE_LEN], nonces: &[u64]) -> Result<Vec<Vec<i8>>, GpuError> {
        pollster::block_on(self.outputs_async(template, nonces))
    }

    /// [`GpuMiner::outputs_of_tokens_async`], blocking.
    pub fn outputs_of_tokens(&mut self, tokens: &[u16]) -> Result<Vec<Vec<i8>>, GpuError> {
        pollster::block_on(self.outputs_of_tokens_async(tokens))
    }

    /// [`GpuMiner::attempts_async`], blocking.
    pub fn attempts(&mut self, template: &[u8; TEMPLATE_LEN], nonces: &[u64]) -> Result<Vec<Attempt>, GpuError> {
        pollster::block_on(self.attempts_async(template, nonces))
    }

    /// Per-dispatch times of one forward pass over `nonces` (at most one batch) on
    /// `template`, for benchmarks: see `examples/gpu_profile.rs`.
    pub fn profile(
        &mut self,
        template: &[u8; TEMPLATE_LEN],
        nonces: &[u64],
    ) -> Result<Vec<crate::DispatchTime>, GpuError> {
        let engine = self.engine.as_mut().ok_or(GpuError::NoModel)?;
        let mut tokens = vec![0u16; engine.spec().seq_len as usize];
        let mut ids = Vec::with_capacity(nonces.len() * tokens.len());
        for &nonce in nonces {
            input_tokens(engine.spec(), template, nonce, &mut tokens);
            ids.extend(tokens.iter().map(|&t| u32::from(t)));
        }
        engine.profile(&ids, nonces.len() as u32)
    }

    /// [`GpuMiner::mine_batch_async`], blocking.
    pub fn mine_batch(
        &mut self,
        template: &[u8; TEMPLATE_LEN],
        start_nonce: u64,
        count: u64,
        target: &U256,
    ) -> Result<Option<Attempt>, GpuError> {
        pollster::block_on(self.mine_batch_async(template, start_nonce, count, target))
    }
}

fn output_digest_bytes(out: &[u8]) -> [u8; 32] {
    let v: Vec<i8> = out.iter().map(|&b| b as i8).collect();
    output_digest(&v)
}

fn attempts_of(template: &[u8; TEMPLATE_LEN], nonces: &[u64], bytes: &[u8]) -> Vec<Attempt> {
    let d = bytes.len() / nonces.len();
    nonces
        .iter()
        .zip(bytes.chunks_exact(d))
        .map(|(&nonce, out)| {
            let digest = output_digest_bytes(out);
            Attempt { nonce, output_digest: digest, pow_hash: pow_hash(template, nonce, &digest) }
        })
        .collect()
}

/// Verifies headers on the GPU, one at a time: buffers for a single item keep the
/// latency down, each new parent's model is derived on the GPU, and the model of the
/// last `prev_id` stays loaded (siblings share a parent). Mirrors
/// `tpow_core::ModelCache::output_digest`.
pub struct GpuVerifier {
    miner: GpuMiner,
}

impl GpuVerifier {
    /// A verifier on `ctx`. Nothing is allocated until the first header.
    pub fn new(ctx: &GpuContext) -> Self {
        GpuVerifier { miner: GpuMiner::new(ctx, 1) }
    }

    /// Makes `model` the loaded one, if a caller already derived it.
    pub async fn set_model_async(&mut self, model: &Model) -> Result<(), GpuError> {
        self.miner.set_model_async(model).await
    }

    async fn ensure_model(&mut self, spec: &ModelSpec, prev_id: &[u8; 32]) -> Result<(), GpuError> {
        let loaded =
            self.miner.engine.as_ref().is_some_and(|e| e.spec() == spec && e.loaded().as_ref() == Some(prev_id));
        if !loaded {
            // On the GPU: no CPU derivation, no 5.8 MB upload (mainnet). Any error
            // sends the caller to its CPU path, as for a failed pass.
            self.miner.derive_model_async(spec, prev_id).await?;
        }
        Ok(())
    }

    /// The forward-pass output for `input` (deriving and uploading its model first if
    /// it is not the loaded one).
    pub async fn output_async(&mut self, input: &PowInput) -> Result<Vec<i8>, GpuError> {
        self.ensure_model(&input.spec, &input.prev_id).await?;
        let mut outs = self.miner.outputs_async(&input.template, &[input.nonce]).await?;
        outs.pop().ok_or(GpuError::Map("no output read back".into()))
    }

    /// The output digest of `input`'s forward pass; compare it with
    /// `input.output_digest` (or hand it to `PendingHeader::complete`).
    pub async fn output_digest_async(&mut self, input: &PowInput) -> Result<[u8; 32], GpuError> {
        Ok(output_digest(&self.output_async(input).await?))
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl GpuVerifier {
    /// [`GpuVerifier::set_model_async`], blocking.
    pub fn set_model(&mut self, model: &Model) -> Result<(), GpuError> {
        pollster::block_on(self.set_model_async(model))
    }

    /// [`GpuVerifier::output_async`], blocking.
    pub fn output(&mut self, input: &PowInput) -> Result<Vec<i8>, GpuError> {
        pollster::block_on(self.output_async(input))
    }

    /// [`GpuVerifier::output_digest_async`], blocking.
    pub fn output_digest(&mut self, input: &PowInput) -> Result<[u8; 32], GpuError> {
        pollster::block_on(self.output_digest_async(input))
    }
}
