//! Streaming a chat completion with `fetch` and a body reader, so tokens show as
//! they arrive and the stop button can abort the request.

use js_sys::{Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortSignal, ReadableStreamDefaultReader};

use crate::api::{error_text, Info, Models, Peers};
use crate::nodes::host_label;
use crate::sse::{chat_events, ChatEvent, SseParser};
use crate::web::net::{fetch, get_json, js_error, text};

/// Why a chat request did not stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatFailure {
    /// The node's generation queue is full (HTTP 429).
    Busy(String),
    /// The node could not be reached or broke off.
    Network(String),
    /// The node refused the request.
    Refused(String),
    /// The person pressed stop.
    Stopped,
}

impl std::fmt::Display for ChatFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChatFailure::Busy(m) => write!(f, "The model is busy with other requests; try again in a moment ({m})."),
            ChatFailure::Network(m) => write!(f, "The node could not be reached: {m}"),
            ChatFailure::Refused(m) => write!(f, "The node refused the request: {m}"),
            ChatFailure::Stopped => write!(f, "Stopped."),
        }
    }
}

/// A node that serves chat, as it announces itself.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatNode {
    /// Base URL.
    pub url: String,
    /// A served model id.
    pub model: String,
    /// The key it announces (receipts must be signed with it), hex; empty if unknown.
    pub node_key: String,
    /// Generations queued or running there.
    pub demand: u64,
    /// The model's recommended sampling, if the node announces it.
    pub sampling: Option<crate::api::Sampling>,
}

/// The (node, model) pairs the page's nodes and their peers announce: `/api/info`
/// of each node (or `/v1/models` from a node without it), then the `models` and
/// `http_port` each node reports for its peers. Also returns readable notes about
/// nodes without chat.
pub async fn discover(nodes: &[String]) -> (Vec<ChatNode>, Vec<String>) {
    let mut found: Vec<ChatNode> = Vec::new();
    let mut notes = Vec::new();
    let mut peer_urls: Vec<(String, Vec<String>)> = Vec::new();
    for n in nodes {
        match get_json::<Info>(&format!("{n}/api/info")).await {
            Ok(info) => {
                if info.models.is_empty() {
                    let why = info.unavailable().unwrap_or("no model").to_string();
                    notes.push(format!("{} serves no chat ({why})", host_label(n)));
                }
                let (demand, sampling) = (info.demand(), info.sampling());
                for m in info.models {
                    found.push(ChatNode {
                        url: n.clone(),
                        model: m,
                        node_key: info.node_key.clone(),
                        demand,
                        sampling,
                    });
                }
            }
            Err(_) => match get_json::<Models>(&format!("{n}/v1/models")).await {
                Ok(ms) => found.extend(ms.data.into_iter().map(|e| ChatNode {
                    url: n.clone(),
                    model: e.id,
                    node_key: String::new(),
                    demand: 0,
                    sampling: None,
                })),
                Err(e) => notes.push(format!("{}: {e}", host_label(n))),
            },
        }
        if let Ok(p) = get_json::<Peers>(&format!("{n}/api/peers")).await {
            for peer in p.peers {
                if let Some(url) = peer.http_url() {
                    if !peer.models.is_empty() {
                        peer_urls.push((url, peer.models));
                    }
                }
            }
        }
    }
    // Peers that announce models and are not among the page's nodes: ask them who
    // they are (they may not be reachable from this browser).
    for (url, models) in peer_urls {
        if found.iter().any(|f| f.url == url) || nodes.contains(&url) {
            continue;
        }
        let info = get_json::<Info>(&format!("{url}/api/info")).await;
        match info {
            Ok(info) => {
                let (demand, sampling) = (info.demand(), info.sampling());
                for m in info.models {
                    found.push(ChatNode {
                        url: url.clone(),
                        model: m,
                        node_key: info.node_key.clone(),
                        demand,
                        sampling,
                    });
                }
            }
            Err(_) => notes.push(format!(
                "a peer at {} announces {} but cannot be reached from here",
                host_label(&url),
                models.join(", ")
            )),
        }
    }
    (found, notes)
}

/// Posts `body` (the exact bytes the receipt will be checked against) and calls
/// `on_event` for every event as it arrives.
pub async fn stream(
    node: &str,
    body: &str,
    signal: &AbortSignal,
    mut on_event: impl FnMut(ChatEvent),
) -> Result<(), ChatFailure> {
    let url = format!("{node}/v1/chat/completions");
    let resp = fetch(&url, "POST", Some(body), Some(signal)).await.map_err(|e| stopped_or(signal, e))?;
    let status = resp.status();
    if !resp.ok() {
        let t = text(&resp).await.unwrap_or_default();
        let msg = error_text(status, &t);
        return Err(if status == 429 { ChatFailure::Busy(msg) } else { ChatFailure::Refused(msg) });
    }
    let Some(body_stream) = resp.body() else {
        return Err(ChatFailure::Network("the answer has no body".into()));
    };
    let reader: ReadableStreamDefaultReader = body_stream
        .get_reader()
        .dyn_into()
        .map_err(|_| ChatFailure::Network("the answer cannot be read as a stream".into()))?;
    let mut parser = SseParser::new();
    loop {
        let chunk = JsFuture::from(reader.read()).await.map_err(|e| stopped_or(signal, js_error(&e)))?;
        let done = Reflect::get(&chunk, &JsValue::from_str("done")).map(|d| d.is_truthy()).unwrap_or(true);
        if done {
            break;
        }
        let value = Reflect::get(&chunk, &JsValue::from_str("value")).unwrap_or(JsValue::UNDEFINED);
        let bytes = value.dyn_into::<Uint8Array>().map(|a| a.to_vec()).unwrap_or_default();
        for data in parser.push(&bytes) {
            for ev in chat_events(&data) {
                let finished = ev == ChatEvent::Done;
                on_event(ev);
                if finished {
                    return Ok(());
                }
            }
        }
    }
    if let Some(data) = parser.finish() {
        chat_events(&data).into_iter().for_each(&mut on_event);
    }
    Ok(())
}

fn stopped_or(signal: &AbortSignal, msg: String) -> ChatFailure {
    if signal.aborted() {
        ChatFailure::Stopped
    } else {
        ChatFailure::Network(msg)
    }
}
