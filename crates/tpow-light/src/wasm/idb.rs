//! The verified state in IndexedDB: one object store, one record per chain.

use std::cell::RefCell;
use std::rc::Rc;

use futures_channel::oneshot;
use js_sys::Uint8Array;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{IdbDatabase, IdbFactory, IdbRequest, IdbTransactionMode};

use super::js::{global_get, js_err};

const DB: &str = "tpow-light";
const STORE: &str = "state";

/// Resolves with the request's result once it succeeds or fails.
async fn done(req: &IdbRequest) -> Result<JsValue, String> {
    let (tx, rx) = oneshot::channel::<Result<JsValue, String>>();
    let tx = Rc::new(RefCell::new(Some(tx)));
    let ok = {
        let tx = Rc::clone(&tx);
        let req = req.clone();
        Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
            if let Some(t) = tx.borrow_mut().take() {
                let _ = t.send(req.result().map_err(js_err));
            }
        })
    };
    let err = {
        let tx = Rc::clone(&tx);
        let req = req.clone();
        Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
            if let Some(t) = tx.borrow_mut().take() {
                let msg = req.error().ok().flatten().map(|e| e.message()).unwrap_or_else(|| "IndexedDB error".into());
                let _ = t.send(Err(msg));
            }
        })
    };
    req.set_onsuccess(Some(ok.as_ref().unchecked_ref()));
    req.set_onerror(Some(err.as_ref().unchecked_ref()));
    let out = rx.await.unwrap_or_else(|_| Err("IndexedDB request dropped".into()));
    req.set_onsuccess(None);
    req.set_onerror(None);
    out
}

async fn open() -> Result<IdbDatabase, String> {
    let factory: IdbFactory = global_get("indexedDB").ok_or("no IndexedDB here")?.dyn_into().map_err(js_err)?;
    let req = factory.open_with_u32(DB, 1).map_err(js_err)?;
    let upgrade = {
        let req = req.clone();
        Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
            if let Ok(db) = req.result().and_then(|r| r.dyn_into::<IdbDatabase>()) {
                if !db.object_store_names().contains(STORE) {
                    let _ = db.create_object_store(STORE);
                }
            }
        })
    };
    req.set_onupgradeneeded(Some(upgrade.as_ref().unchecked_ref()));
    let db = done(&req).await?;
    req.set_onupgradeneeded(None);
    db.dyn_into().map_err(js_err)
}

/// The stored record under `key`, if any.
pub async fn load(key: &str) -> Result<Option<Vec<u8>>, String> {
    let db = open().await?;
    let tx = db.transaction_with_str_and_mode(STORE, IdbTransactionMode::Readonly).map_err(js_err)?;
    let store = tx.object_store(STORE).map_err(js_err)?;
    let v = done(&store.get(&JsValue::from_str(key)).map_err(js_err)?).await?;
    db.close();
    Ok(v.dyn_into::<Uint8Array>().ok().map(|a| a.to_vec()))
}

/// Stores `bytes` under `key`.
pub async fn save(key: &str, bytes: &[u8]) -> Result<(), String> {
    let db = open().await?;
    let tx = db.transaction_with_str_and_mode(STORE, IdbTransactionMode::Readwrite).map_err(js_err)?;
    let store = tx.object_store(STORE).map_err(js_err)?;
    let value = Uint8Array::from(bytes);
    done(&store.put_with_key(&value, &JsValue::from_str(key)).map_err(js_err)?).await?;
    db.close();
    Ok(())
}
