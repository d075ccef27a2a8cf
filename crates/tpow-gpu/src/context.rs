//! Adapter and device selection, and turning wgpu's error reporting into [`GpuError`].
//!
//! wgpu reports most failures asynchronously (error scopes, the device-lost callback)
//! and by default panics on any error nobody captured. A consensus client must never
//! panic because a GPU misbehaved, so every fallible step runs inside error scopes,
//! the uncaptured-error handler only records, and the device-lost callback sets a
//! flag that every later call checks.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::GpuError;

/// Whether the kernels may use WGSL's `dot4I8Packed`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PackedDot {
    /// Use it where the instance offers the `packed_4x8_integer_dot_product` language
    /// extension (every native wgpu; Chromium's WebGPU), else the exact fallback.
    #[default]
    Auto,
    /// Always use the fallback (four sign-extending `extractBits` products). Same
    /// results; for tests and for drivers whose `dot4I8Packed` is suspect.
    Off,
}

/// How to pick the GPU.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// `dot4I8Packed` or the fallback.
    pub packed_dot: PackedDot,
    /// Prefer a low-power adapter (an integrated GPU) over a discrete one.
    pub low_power: bool,
    /// Ask for GPU timestamp queries where the adapter offers them, for
    /// [`crate::GpuMiner::profile`]'s per-dispatch times. Off by default: a verifier
    /// or miner has no use for them, and some drivers add overhead when they are on.
    pub profile: bool,
}

/// What a [`GpuContext`] runs on, for logs and benchmark tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterSummary {
    /// Adapter name as the driver reports it (`llvmpipe (LLVM 15.0.6, 256 bits)`).
    pub name: String,
    /// Graphics API (`vulkan`, `metal`, `dx12`, `webgpu`).
    pub backend: String,
    /// Discrete, integrated, CPU, ...
    pub device_type: String,
    /// Driver name and version, where reported.
    pub driver: String,
    /// Whether the kernels use `dot4I8Packed`.
    pub packed_dot: bool,
    /// Whether the device records GPU timestamps (asked for with
    /// [`GpuOptions::profile`] and offered by the adapter).
    pub timestamps: bool,
}

/// Errors that wgpu reported outside an error scope, and the device-lost reason.
#[derive(Default)]
struct ErrorSink {
    uncaptured: Option<GpuError>,
    lost: Option<String>,
}

/// A GPU device and queue ready for the forward-pass kernels. Cheap to clone (the
/// miner and a verifier can share one device).
#[derive(Clone)]
pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    summary: AdapterSummary,
    sink: Arc<Mutex<ErrorSink>>,
}

/// The backends tried unless `WGPU_BACKEND` names others: never GL (Mesa's GL adapter
/// computes i32 division and remainder wrongly), Vulkan first.
fn default_backends() -> wgpu::Backends {
    if cfg!(target_arch = "wasm32") {
        wgpu::Backends::BROWSER_WEBGPU
    } else if cfg!(target_vendor = "apple") {
        wgpu::Backends::METAL | wgpu::Backends::VULKAN
    } else if cfg!(windows) {
        wgpu::Backends::VULKAN | wgpu::Backends::DX12
    } else {
        wgpu::Backends::VULKAN
    }
}

impl GpuContext {
    /// Picks an adapter and opens a device.
    ///
    /// Errors: [`GpuError::NoAdapter`] when the pinned backends offer none (no Vulkan
    /// driver, WebGPU disabled in the browser); [`GpuError::RequestDevice`] when the
    /// adapter refuses a device. Callers fall back to the CPU forward pass on either.
    pub async fn new(options: &GpuOptions) -> Result<Self, GpuError> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = default_backends().with_env();
        let backends = desc.backends;
        let instance = wgpu::Instance::new(desc);
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: if options.low_power {
                    wgpu::PowerPreference::LowPower
                } else {
                    wgpu::PowerPreference::HighPerformance
                },
                force_fallback_adapter: false,
                compatible_surface: None,
                apply_limit_buckets: false,
            })
            .await
            .map_err(|e| GpuError::NoAdapter(format!("backends {backends:?}: {e}")))?;
        let info = adapter.get_info();
        let alimits = adapter.limits();
        // WebGPU's default limits, except the buffer sizes, which bound the batch: take
        // what the adapter offers there.
        let mut limits = wgpu::Limits::defaults();
        limits.max_storage_buffer_binding_size = alimits.max_storage_buffer_binding_size;
        limits.max_buffer_size = alimits.max_buffer_size;
        if !limits.check_limits(&alimits) {
            // A downlevel adapter (below WebGPU's defaults): ask for what it has; the
            // engine checks the few limits it depends on itself.
            limits = alimits.clone();
        }
        let timestamps = options.profile && adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("tpow-gpu"),
                required_features: if timestamps { wgpu::Features::TIMESTAMP_QUERY } else { wgpu::Features::empty() },
                required_limits: limits,
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| GpuError::RequestDevice(e.to_string()))?;
        let sink = Arc::new(Mutex::new(ErrorSink::default()));
        {
            let sink = Arc::clone(&sink);
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
                s.uncaptured.get_or_insert(GpuError::from_wgpu(e));
            }));
        }
        {
            let sink = Arc::clone(&sink);
            device.set_device_lost_callback(move |reason, msg| {
                let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
                s.lost.get_or_insert(format!("{reason:?}: {msg}"));
            });
        }
        let packed_dot = options.packed_dot == PackedDot::Auto
            && instance.wgsl_language_features().contains(wgpu::WgslLanguageFeatures::Packed4x8IntegerDotProduct);
        let summary = AdapterSummary {
            name: info.name.clone(),
            backend: info.backend.to_string(),
            device_type: format!("{:?}", info.device_type),
            driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
            packed_dot,
            timestamps,
        };
        Ok(GpuContext { device, queue, summary, sink })
    }

    /// [`GpuContext::new`], blocking (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking(options: &GpuOptions) -> Result<Self, GpuError> {
        pollster::block_on(Self::new(options))
    }

    /// The adapter in use.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.summary
    }

    /// The device's limits.
    pub(crate) fn limits(&self) -> wgpu::Limits {
        self.device.limits()
    }

    /// Fails with the first error wgpu reported outside a scope, or device loss.
    pub(crate) fn check(&self) -> Result<(), GpuError> {
        let mut s = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(reason) = &s.lost {
            return Err(GpuError::DeviceLost(reason.clone()));
        }
        match s.uncaptured.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Runs `f` (resource creation, encoding, submission) inside out-of-memory,
    /// validation and internal error scopes, and reports what they caught.
    pub(crate) async fn scoped<T>(&self, f: impl FnOnce() -> T) -> Result<T, GpuError> {
        self.check()?;
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let int = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let value = f();
        // Scopes pop in reverse order; popping is immediate, only the result is async.
        let (int, val, oom) = (int.pop(), val.pop(), oom.pop());
        let errors = [oom.await, val.await, int.await];
        if let Some(e) = errors.into_iter().flatten().next() {
            // A lost device also fails validation; report the root cause.
            self.check()?;
            return Err(GpuError::from_wgpu(e));
        }
        self.check()?;
        Ok(value)
    }

    /// Maps `buffer` (a MAP_READ buffer, last written by submission `index`) for
    /// reading: on native by blocking until that submission is done (not later ones,
    /// which may still run), in the browser by awaiting the mapping callback.
    pub(crate) async fn map_read(
        &self,
        buffer: &wgpu::Buffer,
        len: u64,
        index: wgpu::SubmissionIndex,
    ) -> Result<(), GpuError> {
        let state = Arc::new(Mutex::new(MapState::default()));
        {
            let state = Arc::clone(&state);
            buffer.slice(..len).map_async(wgpu::MapMode::Read, move |r| {
                let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                s.result = Some(r.is_ok());
                if let Some(w) = s.waker.take() {
                    w.wake();
                }
            });
        }
        #[cfg(target_arch = "wasm32")]
        let _ = index;
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::Wait { submission_index: Some(index), timeout: None })
            .map_err(|e| self.check().err().unwrap_or_else(|| GpuError::Map(e.to_string())))?;
        let ok = MapFuture { state }.await;
        if let Err(e) = self.check() {
            if ok {
                buffer.unmap();
            }
            return Err(e);
        }
        if ok {
            Ok(())
        } else {
            Err(GpuError::Map("the buffer could not be mapped".into()))
        }
    }
}

#[derive(Default)]
struct MapState {
    result: Option<bool>,
    waker: Option<Waker>,
}

/// Resolves when the `map_async` callback has run.
struct MapFuture {
    state: Arc<Mutex<MapState>>,
}

impl Future for MapFuture {
    type Output = bool;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match s.result {
            Some(ok) => Poll::Ready(ok),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
