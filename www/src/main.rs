//! Entry point of the web app: mounts the yew app into the page.

#[cfg(target_arch = "wasm32")]
fn main() {
    tpow_web::web::start_app();
}

/// Natively there is nothing to run; the library's logic is tested with `cargo test`.
#[cfg(not(target_arch = "wasm32"))]
fn main() {}
