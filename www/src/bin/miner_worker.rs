//! The miner's Web Worker: one per core the person lends (see `tpow_web::web::worker`).

#[cfg(target_arch = "wasm32")]
fn main() {
    tpow_web::web::worker::start_worker();
}

/// Natively there is nothing to run.
#[cfg(not(target_arch = "wasm32"))]
fn main() {}
