//! Small bindings that work on the page, in a Web Worker and in Node.js: the
//! global `fetch`, `setTimeout`, `performance.now`, `indexedDB`.

use js_sys::{Function, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::error::FetchError;

/// A JS exception as text.
pub fn js_err(v: JsValue) -> String {
    if let Some(e) = v.dyn_ref::<js_sys::Error>() {
        return String::from(e.message());
    }
    v.as_string().unwrap_or_else(|| format!("{v:?}"))
}

fn global_fn(name: &str) -> Result<Function, String> {
    Reflect::get(&js_sys::global(), &JsValue::from_str(name))
        .map_err(js_err)?
        .dyn_into::<Function>()
        .map_err(|_| format!("`{name}` is not available here"))
}

/// A global property (`navigator`, `indexedDB`), if defined.
pub fn global_get(name: &str) -> Option<JsValue> {
    Reflect::get(&js_sys::global(), &JsValue::from_str(name)).ok().filter(|v| !v.is_undefined() && !v.is_null())
}

/// Why `fetch` rejected: a timeout or an abort (DOMException `TimeoutError`,
/// `AbortError`), else no connection (a `TypeError`: refused, DNS, CORS, offline).
fn fetch_failure(v: JsValue) -> FetchError {
    let name = Reflect::get(&v, &JsValue::from_str("name")).ok().and_then(|n| n.as_string()).unwrap_or_default();
    match name.as_str() {
        "TimeoutError" | "AbortError" => FetchError::Timeout(js_err(v)),
        _ => FetchError::Unreachable(js_err(v)),
    }
}

/// GET `url`; a body longer than `limit` is cut to `limit + 1` bytes so the caller
/// sees it is too large without holding all of it.
pub async fn http_get(url: &str, limit: usize) -> Result<Vec<u8>, FetchError> {
    let fetch = global_fn("fetch").map_err(FetchError::Unreachable)?;
    let promise: Promise = fetch
        .call1(&JsValue::NULL, &JsValue::from_str(url))
        .map_err(fetch_failure)?
        .dyn_into()
        .map_err(fetch_failure)?;
    let resp: web_sys::Response =
        JsFuture::from(promise).await.map_err(fetch_failure)?.dyn_into().map_err(|v| FetchError::Body(js_err(v)))?;
    if !resp.ok() {
        return Err(FetchError::Status { status: resp.status(), message: format!("from {url}") });
    }
    if let Ok(Some(len)) = resp.headers().get("content-length") {
        if len.parse::<usize>().is_ok_and(|n| n > limit) {
            return Ok(vec![0; limit + 1]);
        }
    }
    let body = |v: JsValue| FetchError::Body(js_err(v));
    let buf = JsFuture::from(resp.array_buffer().map_err(body)?).await.map_err(body)?;
    let arr = Uint8Array::new(&buf);
    let len = arr.length() as usize;
    Ok(if len > limit { arr.subarray(0, limit as u32 + 1).to_vec() } else { arr.to_vec() })
}

/// Resolves after `ms` milliseconds (0: yields to the event loop, so the page
/// can repaint between forward passes).
pub async fn sleep_ms(ms: i32) {
    let Ok(set_timeout) = global_fn("setTimeout") else { return };
    let p = Promise::new(&mut |resolve, _| {
        let _ = set_timeout.call2(&JsValue::NULL, &resolve, &JsValue::from(ms));
    });
    let _ = JsFuture::from(p).await;
}

/// `performance.now()`, or `Date.now()` where there is no `performance`.
pub fn monotonic_ms() -> f64 {
    global_get("performance")
        .and_then(|p| {
            let now = Reflect::get(&p, &JsValue::from_str("now")).ok()?.dyn_into::<Function>().ok()?;
            now.call0(&p).ok()?.as_f64()
        })
        .unwrap_or_else(js_sys::Date::now)
}

/// Whether `navigator.gpu` exists (WebGPU may still refuse an adapter).
pub fn has_webgpu() -> bool {
    global_get("navigator")
        .is_some_and(|n| Reflect::get(&n, &JsValue::from_str("gpu")).is_ok_and(|g| !g.is_undefined() && !g.is_null()))
}

/// 32 bytes from the global `crypto.getRandomValues` (page, Worker, Node.js ≥ 19):
/// the client's FlyClient seed, which must be unpredictable to the nodes. There is
/// no fallback to a weaker source: without it a sampled sync fails.
pub fn random_bytes() -> Result<[u8; 32], String> {
    let crypto = Reflect::get(&js_sys::global(), &JsValue::from_str("crypto")).map_err(js_err)?;
    let get = Reflect::get(&crypto, &JsValue::from_str("getRandomValues"))
        .map_err(js_err)?
        .dyn_into::<Function>()
        .map_err(|_| "crypto.getRandomValues is not available".to_string())?;
    let buf = Uint8Array::new_with_length(32);
    get.call1(&crypto, &buf).map_err(js_err)?;
    let mut out = [0u8; 32];
    buf.copy_to(&mut out);
    Ok(out)
}
