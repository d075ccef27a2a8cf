//! `fetch` for both the page and the workers, with a timeout, and JSON helpers.
//! Every failure is a readable `String` for the UI: nodes are untrusted and may be
//! down, so nothing here panics on what comes back.

use js_sys::{Promise, Uint8Array};
use serde::de::DeserializeOwned;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortSignal, Request, RequestInit, Response, Window, WorkerGlobalScope};

/// Timeout of ordinary API calls.
pub const TIMEOUT_MS: u32 = 8_000;

/// Text of a JS error value.
pub fn js_error(e: &JsValue) -> String {
    if let Some(err) = e.dyn_ref::<js_sys::Error>() {
        return String::from(err.message());
    }
    e.as_string().unwrap_or_else(|| format!("{e:?}"))
}

fn global_fetch(req: &Request) -> Promise {
    let g = js_sys::global();
    match g.dyn_ref::<Window>() {
        Some(w) => w.fetch_with_request(req),
        None => g.unchecked_into::<WorkerGlobalScope>().fetch_with_request(req),
    }
}

/// Sends a request. `signal` cancels it (the chat's stop button); without one it
/// times out after [`TIMEOUT_MS`].
pub async fn fetch(
    url: &str,
    method: &str,
    json_body: Option<&str>,
    signal: Option<&AbortSignal>,
) -> Result<Response, String> {
    let init = RequestInit::new();
    init.set_method(method);
    if let Some(b) = json_body {
        init.set_body(&JsValue::from_str(b));
    }
    match signal {
        Some(s) => init.set_signal(Some(s)),
        None => {
            let t = AbortSignal::timeout_with_u32(TIMEOUT_MS);
            init.set_signal(Some(&t));
        }
    }
    let req = Request::new_with_str_and_init(url, &init).map_err(|e| js_error(&e))?;
    if json_body.is_some() {
        req.headers().set("content-type", "application/json").map_err(|e| js_error(&e))?;
    }
    let resp = JsFuture::from(global_fetch(&req)).await.map_err(|e| unreachable_text(url, &e))?;
    resp.dyn_into::<Response>().map_err(|_| "fetch returned something that is not a response".to_string())
}

fn unreachable_text(url: &str, e: &JsValue) -> String {
    let msg = js_error(e);
    if msg.contains("abort") || msg.contains("timed out") || msg.contains("TimeoutError") {
        format!("{url} did not answer in time")
    } else {
        format!("{url} is unreachable ({msg})")
    }
}

/// The body as text.
pub async fn text(resp: &Response) -> Result<String, String> {
    let p = resp.text().map_err(|e| js_error(&e))?;
    let v = JsFuture::from(p).await.map_err(|e| js_error(&e))?;
    v.as_string().ok_or_else(|| "response body is not text".to_string())
}

/// The body as bytes.
pub async fn bytes(resp: &Response) -> Result<Vec<u8>, String> {
    let p = resp.array_buffer().map_err(|e| js_error(&e))?;
    let v = JsFuture::from(p).await.map_err(|e| js_error(&e))?;
    Ok(Uint8Array::new(&v).to_vec())
}

/// GET and parse JSON; non-2xx answers become their error text.
pub async fn get_json<T: DeserializeOwned>(url: &str) -> Result<T, String> {
    let resp = fetch(url, "GET", None, None).await?;
    let body = text(&resp).await?;
    if !resp.ok() {
        return Err(crate::api::error_text(resp.status(), &body));
    }
    serde_json::from_str(&body).map_err(|e| format!("{url}: unexpected answer ({e})"))
}

/// GET raw bytes; non-2xx answers become their error text.
pub async fn get_bytes(url: &str) -> Result<Vec<u8>, String> {
    let resp = fetch(url, "GET", None, None).await?;
    if !resp.ok() {
        let body = text(&resp).await.unwrap_or_default();
        return Err(crate::api::error_text(resp.status(), &body));
    }
    bytes(&resp).await
}

/// POST JSON; returns the status and the body text.
pub async fn post_json(url: &str, body: &str) -> Result<(u16, String), String> {
    let resp = fetch(url, "POST", Some(body), None).await?;
    let status = resp.status();
    Ok((status, text(&resp).await?))
}

/// Milliseconds since the page or worker started, high resolution.
pub fn perf_now() -> f64 {
    let g = js_sys::global();
    let perf = match g.dyn_ref::<Window>() {
        Some(w) => w.performance(),
        None => g.unchecked_into::<WorkerGlobalScope>().performance(),
    };
    perf.map_or_else(js_sys::Date::now, |p| p.now())
}

/// Wall clock, unix milliseconds.
pub fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

/// Sleeps without blocking the event loop.
pub async fn sleep_ms(ms: u32) {
    gloo::timers::future::TimeoutFuture::new(ms).await;
}

/// Cryptographically random bytes from the browser.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], String> {
    let g = js_sys::global();
    let crypto = match g.dyn_ref::<Window>() {
        Some(w) => w.crypto(),
        None => g.unchecked_into::<WorkerGlobalScope>().crypto(),
    }
    .map_err(|e| js_error(&e))?;
    let mut b = [0u8; N];
    crypto.get_random_values_with_u8_array(&mut b).map_err(|e| js_error(&e))?;
    Ok(b)
}

/// Whether the browser exposes WebGPU at all (`navigator.gpu`).
pub fn has_webgpu() -> bool {
    let nav = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("navigator")).unwrap_or(JsValue::UNDEFINED);
    !nav.is_undefined()
        && js_sys::Reflect::get(&nav, &JsValue::from_str("gpu")).map(|g| !g.is_undefined()).unwrap_or(false)
}
