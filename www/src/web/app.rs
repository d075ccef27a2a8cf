//! The yew components: the page shell with three views (chain, chat, miner).
//! All three stay mounted (inactive ones are `hidden`), so a running miner or an
//! answer that is still streaming survives switching views.

use std::rc::Rc;

use gloo::storage::{SessionStorage, Storage};
use wasm_bindgen::JsCast;
use web_sys::{AbortController, HtmlInputElement, HtmlSelectElement, HtmlTextAreaElement};
use yew::prelude::*;

use crate::api::{ChatMessage, ChatRequest, Miners};
use crate::chain::{ChainSnapshot, NodeState, Verification};
use crate::chart::{bounds, polyline};
use crate::mining::{default_workers, Backend, WorkerReport};
use crate::nodes::{host_label, node_urls};
use crate::receipt::{check, Receipt, ReceiptCheck};
use crate::sse::ChatEvent;
use crate::units::{duration_ms, hashrate, short_id, si};
use crate::web::chat::{self, ChatFailure, ChatNode};
use crate::web::miner::{hardware_concurrency, miner_key, MinerHost};
use crate::web::net::has_webgpu;
use crate::web::net::{get_json, sleep_ms};

#[derive(Clone, Copy, PartialEq, Eq)]
enum View {
    Chain,
    Chat,
    Miner,
}

/// The nodes of this page: `?nodes=` or the page's origin.
fn page_nodes() -> Vec<String> {
    let Some(loc) = web_sys::window().map(|w| w.location()) else { return Vec::new() };
    node_urls(&loc.origin().unwrap_or_default(), &loc.search().unwrap_or_default())
}

/// The page.
#[function_component(App)]
pub fn app() -> Html {
    let nodes = use_memo((), |_| page_nodes());
    let view = use_state(|| View::Chain);
    let snapshot = use_state(ChainSnapshot::default);
    {
        let snapshot = snapshot.clone();
        let nodes = nodes.clone();
        use_effect_with((), move |_| {
            crate::web::light_source::start((*nodes).clone(), Rc::new(move |s| snapshot.set(s)));
        });
    }
    let tab = |v: View, label: &str, id: &str| {
        let view2 = view.clone();
        let selected = *view == v;
        html! {
            <button role="tab" id={format!("tab-{id}")} aria-controls={format!("panel-{id}")}
                aria-selected={selected.to_string()} tabindex={if selected { "0" } else { "-1" }}
                class={classes!("tab", selected.then_some("active"))}
                onclick={Callback::from(move |_| view2.set(v))}>{label}</button>
        }
    };
    html! {
        <>
        <header class="top">
            <h1><span class="logo" aria-hidden="true">{"◆"}</span>{" tpow"}</h1>
            <p class="tagline">{"Transformer proof of work — verified in your browser"}</p>
            <nav role="tablist" aria-label="Views">
                {tab(View::Chain, "Chain", "chain")}
                {tab(View::Chat, "Chat", "chat")}
                {tab(View::Miner, "Miner", "miner")}
            </nav>
        </header>
        <main>
            <section id="panel-chain" role="tabpanel" aria-labelledby="tab-chain" hidden={*view != View::Chain}>
                <ChainView snapshot={(*snapshot).clone()} />
            </section>
            <section id="panel-chat" role="tabpanel" aria-labelledby="tab-chat" hidden={*view != View::Chat}>
                <ChatView nodes={nodes.clone()} />
            </section>
            <section id="panel-miner" role="tabpanel" aria-labelledby="tab-miner" hidden={*view != View::Miner}>
                <MinerView nodes={nodes.clone()} />
            </section>
        </main>
        <footer>{"tpow verifies every header in this page: linkage, time, ASERT difficulty, MMR root, pow hash and a re-run of its forward pass."}</footer>
        </>
    }
}

// ---------------------------------------------------------------- chain view

#[derive(Properties, PartialEq)]
struct ChainProps {
    snapshot: ChainSnapshot,
}

#[function_component(ChainView)]
fn chain_view(props: &ChainProps) -> Html {
    let s = &props.snapshot;
    let pct = (s.progress() * 100.0).round();
    let tip = s.tip.as_ref();
    html! {
        <div class="chain">
            if let Some(n) = &s.notice {
                <p class="notice" role="alert">{n}</p>
            }
            <div class="cards">
                <div class="card tip" aria-live="polite">
                    <h2>{"Best verified tip"}</h2>
                    <dl>
                        <dt>{"Height"}</dt>
                        <dd data-testid="tip-height" class="big">{tip.map_or("–".to_string(), |t| t.height.to_string())}</dd>
                        <dt>{"Id"}</dt>
                        <dd class="mono" title={tip.map(|t| t.id.clone())}>{tip.map_or("–", |t| short_id(&t.id))}</dd>
                        <dt>{"Total work"}</dt>
                        <dd data-testid="total-work">{tip.map_or("–".to_string(), |t| t.total_work.clone())}</dd>
                        <dt>{"Difficulty"}</dt>
                        <dd>{tip.map_or("–".to_string(), |t| format!("{} passes/block", si(t.difficulty)))}</dd>
                    </dl>
                </div>
                <div class="card">
                    <h2>{"Sync"}</h2>
                    <progress max="100" value={pct.to_string()} aria-label="verified share of the chain"></progress>
                    <p data-testid="sync-text">{format!("{} of {} headers verified ({pct:.0} %)", s.verified_height, s.network_height)}</p>
                    <p>{"Verifier: "}<strong data-testid="engine">{&s.engine}</strong></p>
                    <p>{"Guarantee: "}<span data-testid="security">{&s.security}</span></p>
                    <p>{"Chain: "}{if s.chain.is_empty() { "–" } else { &s.chain }}</p>
                </div>
                <div class="card">
                    <h2>{"Nodes"}</h2>
                    <ul class="nodes" data-testid="nodes">
                        { for s.nodes.iter().map(|n| {
                            let (cls, text) = match &n.state {
                                NodeState::Connecting => ("wait", "connecting…".to_string()),
                                NodeState::Online { height, peers, .. } => ("ok", match peers {
                                    Some(p) => format!("online · height {height} · {p} peer{}", if *p == 1 { "" } else { "s" }),
                                    None => format!("online · height {height}"),
                                }),
                                NodeState::Unreachable(e) => ("bad", format!("unreachable: {e}")),
                            };
                            html! { <li class={cls}><span class="dot" aria-hidden="true"></span>
                                <span class="mono">{host_label(&n.url)}</span>{" "}<span class="state">{text}</span></li> }
                        }) }
                    </ul>
                </div>
            </div>
            <div class="charts">
                <Chart title="Difficulty (passes per block)" values={s.difficulty.clone()} unit="" />
                <Chart title="Block time (seconds)" values={s.block_times.clone()} unit=" s" />
            </div>
            <h2>{"Recent headers"}</h2>
            <div class="table-wrap">
            <table class="headers" data-testid="headers">
                <thead><tr><th scope="col">{"Height"}</th><th scope="col">{"Id"}</th><th scope="col">{"Difficulty"}</th><th scope="col">{"Verification"}</th></tr></thead>
                <tbody>
                { for s.rows.iter().map(|r| {
                    let (cls, text) = match &r.status {
                        Verification::Pending => ("pending", "pending".to_string()),
                        Verification::Verified { backend, ms } => ("verified", format!("✓ verified · {backend} · {}", duration_ms(*ms))),
                        Verification::Failed(e) => ("failed", format!("✗ failed: {e}")),
                    };
                    html! { <tr data-status={cls}>
                        <td>{r.height}</td>
                        <td class="mono" title={r.id.clone()}>{short_id(&r.id)}</td>
                        <td>{si(r.difficulty)}</td>
                        <td><span class={classes!("badge", cls)}>{text}</span></td>
                    </tr> }
                }) }
                </tbody>
            </table>
            </div>
        </div>
    }
}

#[derive(Properties, PartialEq)]
struct ChartProps {
    title: AttrValue,
    values: Vec<f64>,
    unit: AttrValue,
}

#[function_component(Chart)]
fn chart(props: &ChartProps) -> Html {
    let (w, h) = (300.0, 100.0);
    let points = polyline(&props.values, w, h);
    let (lo, hi) = bounds(&props.values);
    let label = if props.values.is_empty() {
        "no blocks yet".to_string()
    } else {
        format!("{} blocks, from {}{} to {}{}", props.values.len(), si(lo), props.unit, si(hi), props.unit)
    };
    html! {
        <figure class="card chart">
            <figcaption>{&props.title}</figcaption>
            <svg viewBox={format!("-4 -4 {} {}", w + 8.0, h + 8.0)} role="img" aria-label={format!("{}: {label}", props.title)} preserveAspectRatio="none">
                <line x1="0" y1={h.to_string()} x2={w.to_string()} y2={h.to_string()} class="axis" />
                <polyline points={points} class="line" />
            </svg>
            <p class="range">{label}</p>
        </figure>
    }
}

// ---------------------------------------------------------------- chat

#[derive(Clone, PartialEq, Default)]
struct Turn {
    role: String,
    content: String,
    node: String,
    /// The key the node announces in `/api/info`.
    announced_key: String,
    receipt: Option<(Receipt, ReceiptCheck)>,
    error: Option<String>,
    streaming: bool,
}

#[derive(Clone, PartialEq, Default)]
struct Conversation {
    turns: Vec<Turn>,
}

enum ChatAction {
    Push(Turn),
    Append(usize, String),
    Receipt(usize, Receipt, ReceiptCheck),
    Error(usize, String),
    Finish(usize),
    Clear,
}

impl Reducible for Conversation {
    type Action = ChatAction;
    fn reduce(self: Rc<Self>, action: ChatAction) -> Rc<Self> {
        let mut c = (*self).clone();
        match action {
            ChatAction::Push(t) => c.turns.push(t),
            ChatAction::Append(i, s) => {
                if let Some(t) = c.turns.get_mut(i) {
                    t.content.push_str(&s)
                }
            }
            ChatAction::Receipt(i, r, k) => {
                if let Some(t) = c.turns.get_mut(i) {
                    t.receipt = Some((r, k))
                }
            }
            ChatAction::Error(i, e) => {
                if let Some(t) = c.turns.get_mut(i) {
                    t.error = Some(e)
                }
            }
            ChatAction::Finish(i) => {
                if let Some(t) = c.turns.get_mut(i) {
                    t.streaming = false
                }
            }
            ChatAction::Clear => c.turns.clear(),
        }
        save_conversation(&c);
        Rc::new(c)
    }
}

const CONVERSATION_KEY: &str = "tpow.chat";

fn save_conversation(c: &Conversation) {
    let msgs: Vec<ChatMessage> = c
        .turns
        .iter()
        .filter(|t| !t.streaming && t.error.is_none())
        .map(|t| ChatMessage::text(t.role.clone(), t.content.clone()))
        .collect();
    let _ = SessionStorage::set(CONVERSATION_KEY, &msgs);
}

fn load_conversation() -> Conversation {
    let msgs: Vec<ChatMessage> = SessionStorage::get(CONVERSATION_KEY).unwrap_or_default();
    Conversation {
        turns: msgs
            .iter()
            .map(|m| Turn { role: m.role.clone(), content: m.content_text(), ..Turn::default() })
            .collect(),
    }
}

#[derive(Properties, PartialEq)]
struct NodesProps {
    nodes: Rc<Vec<String>>,
}

#[function_component(ChatView)]
fn chat_view(props: &NodesProps) -> Html {
    // (node, model) pairs the nodes announce.
    let options = use_state(Vec::<ChatNode>::new);
    let status = use_state(|| "Asking the nodes which models they serve…".to_string());
    let selected = use_state(|| 0usize);
    let convo = use_reducer(load_conversation);
    let abort = use_mut_ref(|| None::<AbortController>);
    let input = use_node_ref();
    let temperature_input = use_node_ref();
    let max_tokens_input = use_node_ref();
    let reload = use_state(|| 0u32);
    {
        let options = options.clone();
        let status = status.clone();
        let nodes = props.nodes.clone();
        use_effect_with(*reload, move |_| {
            wasm_bindgen_futures::spawn_local(async move {
                let (found, notes) = chat::discover(&nodes).await;
                status.set(if found.is_empty() {
                    format!("No node serves a model right now. {}", notes.join("; "))
                } else {
                    notes.join("; ")
                });
                options.set(found);
            });
        });
    }
    let streaming = convo.turns.iter().any(|t| t.streaming);
    let send = {
        let convo = convo.clone();
        let options = options.clone();
        let selected = selected.clone();
        let abort = abort.clone();
        let input = input.clone();
        let temperature_input = temperature_input.clone();
        let max_tokens_input = max_tokens_input.clone();
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let Some(area) = input.cast::<HtmlTextAreaElement>() else { return };
            let prompt = area.value().trim().to_string();
            let Some(ChatNode { url: node, model, node_key, sampling, .. }) = options.get(*selected).cloned() else {
                return;
            };
            // The settings: a number typed by the person wins; else the model's
            // recommended sampling (SmolLM2: 0.2 / 0.9), else the node's defaults.
            let typed = |r: &NodeRef| r.cast::<HtmlInputElement>().and_then(|i| i.value().trim().parse::<f64>().ok());
            let temperature = typed(&temperature_input).map(|t| t.clamp(0.0, 2.0)).or(sampling.map(|s| s.temperature));
            let top_p = sampling.map(|s| s.top_p);
            let max_tokens = typed(&max_tokens_input).map_or(256, |m| m.clamp(1.0, 512.0) as u32);
            if prompt.is_empty() || convo.turns.iter().any(|t| t.streaming) {
                return;
            }
            area.set_value("");
            let mut messages: Vec<ChatMessage> = convo
                .turns
                .iter()
                .filter(|t| t.error.is_none())
                .map(|t| ChatMessage::text(t.role.clone(), t.content.clone()))
                .collect();
            messages.push(ChatMessage::text("user", prompt.clone()));
            let body = serde_json::to_string(&ChatRequest {
                model: Some(model.clone()),
                messages: Some(messages),
                stream: Some(true),
                max_tokens: Some(max_tokens),
                temperature,
                top_p,
                ..ChatRequest::default()
            })
            .unwrap_or_default();
            let idx = convo.turns.len() + 1;
            convo.dispatch(ChatAction::Push(Turn { role: "user".into(), content: prompt, ..Turn::default() }));
            convo.dispatch(ChatAction::Push(Turn {
                role: "assistant".into(),
                node: node.clone(),
                announced_key: node_key,
                streaming: true,
                ..Turn::default()
            }));
            let Ok(ctrl) = AbortController::new() else { return };
            let signal = ctrl.signal();
            *abort.borrow_mut() = Some(ctrl);
            let convo = convo.clone();
            wasm_bindgen_futures::spawn_local(async move {
                let mut content = String::new();
                let mut receipt = None;
                let d = convo.dispatcher();
                let result = chat::stream(&node, &body, &signal, |ev| match ev {
                    ChatEvent::Delta(t) => {
                        content.push_str(&t);
                        d.dispatch(ChatAction::Append(idx, t));
                    }
                    ChatEvent::Receipt(r) => receipt = Some(r),
                    ChatEvent::Error(e) => d.dispatch(ChatAction::Error(idx, e)),
                    ChatEvent::Done | ChatEvent::Other => {}
                })
                .await;
                match result {
                    Ok(()) | Err(ChatFailure::Stopped) => {
                        if let Err(f) = result {
                            d.dispatch(ChatAction::Error(idx, f.to_string()));
                        }
                        if let Some(r) = receipt {
                            let k = check(&r, body.as_bytes(), &content);
                            d.dispatch(ChatAction::Receipt(idx, r, k));
                        }
                    }
                    Err(f) => d.dispatch(ChatAction::Error(idx, f.to_string())),
                }
                d.dispatch(ChatAction::Finish(idx));
            });
        })
    };
    let stop = {
        let abort = abort.clone();
        Callback::from(move |_| {
            if let Some(c) = abort.borrow_mut().take() {
                c.abort();
            }
        })
    };
    let on_select = {
        let selected = selected.clone();
        Callback::from(move |e: Event| {
            if let Some(s) = e.target().and_then(|t| t.dyn_into::<HtmlSelectElement>().ok()) {
                selected.set(s.value().parse().unwrap_or(0));
            }
        })
    };
    let on_key = {
        Callback::from(move |e: KeyboardEvent| {
            // Enter sends, Shift+Enter adds a line.
            if e.key() == "Enter" && !e.shift_key() {
                e.prevent_default();
                if let Some(form) = e
                    .target()
                    .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
                    .and_then(|el| el.closest("form").ok().flatten())
                    .and_then(|f| f.dyn_into::<web_sys::HtmlFormElement>().ok())
                {
                    let _ = form.request_submit();
                }
            }
        })
    };
    let clear = {
        let convo = convo.clone();
        Callback::from(move |_| convo.dispatch(ChatAction::Clear))
    };
    let refresh = {
        let reload = reload.clone();
        Callback::from(move |_| reload.set(*reload + 1))
    };
    html! {
        <div class="chat">
            <div class="row">
                <label for="chat-model">{"Model and node"}</label>
                <select id="chat-model" data-testid="chat-model" onchange={on_select} disabled={options.is_empty()}>
                    { for options.iter().enumerate().map(|(i, c)| html! {
                        <option value={i.to_string()} selected={i == *selected}>{format!("{} @ {}{}{}", c.model, host_label(&c.url),
                            if c.node_key.is_empty() { String::new() } else { format!(" · key {}…", short_id(&c.node_key)) },
                            if c.demand > 0 { format!(" · busy ({} queued)", c.demand) } else { String::new() })}</option>
                    }) }
                </select>
                <button type="button" class="secondary" onclick={refresh}>{"Refresh"}</button>
                <button type="button" class="secondary" onclick={clear} disabled={streaming}>{"Clear"}</button>
            </div>
            if !status.is_empty() {
                <p class="notice" role="status">{(*status).clone()}</p>
            }
            <ol class="messages" aria-live="polite" data-testid="messages">
                { for convo.turns.iter().map(|t| html! {
                    <li class={classes!("msg", t.role.clone())} data-streaming={t.streaming.to_string()}>
                        <div class="who">{if t.role == "user" { "You" } else { "Assistant" }}</div>
                        <div class="text" data-testid={if t.role == "assistant" { "answer" } else { "prompt" }}>{&t.content}
                            if t.streaming { <span class="cursor" aria-hidden="true">{"▍"}</span> }</div>
                        if let Some(e) = &t.error { <p class="error" role="alert">{e}</p> }
                        if t.role == "assistant" && !t.streaming {
                            <p class="receipt" data-testid="receipt">{receipt_text(t)}</p>
                        }
                    </li>
                }) }
            </ol>
            <form class="compose" onsubmit={send}>
                <label for="chat-input" class="sr-only">{"Your message"}</label>
                <textarea id="chat-input" ref={input} rows="3" placeholder="Ask something… (Enter sends, Shift+Enter for a new line)" onkeydown={on_key} />
                <details class="chat-settings">
                    <summary>{"Settings"}</summary>
                    <label for="chat-temperature">{"Temperature"}</label>
                    <input id="chat-temperature" data-testid="chat-temperature" ref={temperature_input} type="number"
                        min="0" max="2" step="0.1"
                        placeholder={options.get(*selected).and_then(|o| o.sampling).map_or("node default".to_string(), |s| format!("{} (recommended)", s.temperature))} />
                    <label for="chat-max-tokens">{"Max tokens"}</label>
                    <input id="chat-max-tokens" data-testid="chat-max-tokens" ref={max_tokens_input} type="number"
                        min="1" max="512" step="1" placeholder="256" />
                </details>
                <div class="buttons">
                    if streaming {
                        <button type="button" class="danger" onclick={stop} data-testid="chat-stop">{"Stop"}</button>
                    } else {
                        <button type="submit" data-testid="chat-send" disabled={options.is_empty()}>{"Send"}</button>
                    }
                </div>
            </form>
        </div>
    }
}

fn receipt_text(t: &Turn) -> String {
    let node = if t.node.is_empty() { String::new() } else { format!(" via {}", host_label(&t.node)) };
    let announced = |key: &str| {
        if t.announced_key.is_empty() {
            ""
        } else if t.announced_key == key {
            " (the key this node announces)"
        } else {
            " (NOT the key this node announces)"
        }
    };
    match &t.receipt {
        Some((r, ReceiptCheck::Valid)) => {
            format!(
                "Answered by node key {}…{}{node}: signature valid ✓",
                short_id(&r.node_key),
                announced(&r.node_key)
            )
        }
        Some((r, ReceiptCheck::Invalid(why))) => {
            format!("Answered by node key {}…{node}: signature INVALID ({why})", short_id(&r.node_key))
        }
        None if t.node.is_empty() => String::new(),
        None => format!("Answered{node}: no signed receipt"),
    }
}

// ---------------------------------------------------------------- miner

#[derive(Clone, PartialEq, Default)]
struct Reports(Vec<WorkerReport>);

enum ReportAction {
    Reset(usize),
    Set(usize, WorkerReport),
}

impl Reducible for Reports {
    type Action = ReportAction;
    fn reduce(self: Rc<Self>, action: ReportAction) -> Rc<Self> {
        let mut r = (*self).clone();
        match action {
            ReportAction::Reset(n) => r.0 = vec![WorkerReport::default(); n],
            ReportAction::Set(i, w) => {
                if let Some(slot) = r.0.get_mut(i) {
                    *slot = w;
                }
            }
        }
        Rc::new(r)
    }
}

#[function_component(MinerView)]
fn miner_view(props: &NodesProps) -> Html {
    let gpu = use_memo((), |_| has_webgpu());
    let cores = use_memo((), |_| hardware_concurrency());
    let backend = use_state(|| if *gpu { Backend::WebGpu } else { Backend::Cpu });
    let workers = use_state(|| default_workers(*cores));
    let duty = use_state(|| 50u8);
    let node = use_state(|| 0usize);
    let running = use_state(|| false);
    let reports = use_reducer(Reports::default);
    let host = use_mut_ref(|| None::<MinerHost>);
    let error = use_state(|| None::<String>);
    let node_count = use_state(|| None::<(u64, u64)>);
    let key = use_memo((), |_| miner_key());
    let key_hex = key.as_ref().as_ref().ok().cloned().unwrap_or_default();

    // While running, ask the node what it has recorded for this key.
    {
        let node_count = node_count.clone();
        let url = props.nodes.get(*node).cloned().unwrap_or_default();
        let key_hex = key_hex.clone();
        let running_now = *running;
        use_effect_with((running_now, url.clone()), move |_| {
            let alive = Rc::new(std::cell::Cell::new(running_now));
            let alive2 = alive.clone();
            if running_now {
                wasm_bindgen_futures::spawn_local(async move {
                    while alive2.get() {
                        if let Ok(m) = get_json::<Miners>(&format!("{url}/api/miners")).await {
                            let me = m.miners.iter().find(|e| e.miner == key_hex);
                            node_count.set(Some(me.map_or((0, 0), |e| (e.shares, e.blocks))));
                        }
                        sleep_ms(2_000).await;
                    }
                });
            }
            move || alive.set(false)
        });
    }

    let toggle = {
        let running = running.clone();
        let host = host.clone();
        let reports = reports.clone();
        let error = error.clone();
        let nodes = props.nodes.clone();
        let (backend, workers, duty, node) = (*backend, *workers, *duty, *node);
        let key = key.clone();
        Callback::from(move |_| {
            if *running {
                if let Some(mut h) = host.borrow_mut().take() {
                    h.stop();
                }
                running.set(false);
                return;
            }
            let key = match key.as_ref() {
                Ok(k) => k.clone(),
                Err(e) => {
                    error.set(Some(format!("cannot make a miner key: {e}")));
                    return;
                }
            };
            let Some(url) = nodes.get(node) else {
                error.set(Some("no node to mine at".into()));
                return;
            };
            let n = if backend == Backend::WebGpu { 1 } else { workers as usize };
            reports.dispatch(ReportAction::Reset(n));
            let d = reports.dispatcher();
            match MinerHost::start(
                url,
                &key,
                backend,
                workers,
                duty,
                Rc::new(move |i, r| d.dispatch(ReportAction::Set(i, r))),
            ) {
                Ok(h) => {
                    *host.borrow_mut() = Some(h);
                    error.set(None);
                    running.set(true);
                }
                Err(e) => error.set(Some(e)),
            }
        })
    };
    let total = |f: fn(&WorkerReport) -> u64| reports.0.iter().map(f).sum::<u64>();
    let rate: f64 = reports.0.iter().map(|r| r.hashrate).sum();
    let engines: Vec<String> = {
        let mut e: Vec<String> = reports.0.iter().map(|r| r.engine.clone()).filter(|e| !e.is_empty()).collect();
        e.dedup();
        e
    };
    let notes: Vec<String> = {
        let mut n: Vec<String> =
            reports.0.iter().flat_map(|r| r.fallback.iter().chain(r.error.iter()).cloned()).collect();
        n.dedup();
        n
    };
    let disabled = *running;
    let set_backend = {
        let backend = backend.clone();
        Callback::from(move |e: Event| {
            if let Some(s) = e.target().and_then(|t| t.dyn_into::<HtmlSelectElement>().ok()) {
                backend.set(if s.value() == "gpu" { Backend::WebGpu } else { Backend::Cpu });
            }
        })
    };
    let set_workers = {
        let workers = workers.clone();
        Callback::from(move |e: Event| {
            if let Some(s) = e.target().and_then(|t| t.dyn_into::<HtmlInputElement>().ok()) {
                workers.set(s.value().parse().unwrap_or(1));
            }
        })
    };
    let set_duty = {
        let duty = duty.clone();
        Callback::from(move |e: Event| {
            if let Some(s) = e.target().and_then(|t| t.dyn_into::<HtmlInputElement>().ok()) {
                duty.set(s.value().parse().unwrap_or(50));
            }
        })
    };
    let set_node = {
        let node = node.clone();
        Callback::from(move |e: Event| {
            if let Some(s) = e.target().and_then(|t| t.dyn_into::<HtmlSelectElement>().ok()) {
                node.set(s.value().parse().unwrap_or(0));
            }
        })
    };
    html! {
        <div class="miner">
            <p>{"Mining is off until you start it. It runs in Web Workers, so the page stays responsive, and stops the moment you press Stop."}</p>
            if !*gpu {
                <p class="notice" role="status" data-testid="no-webgpu">{"WebGPU is not available in this browser: the miner uses the CPU (wasm)."}</p>
            }
            <div class="settings">
                <label>{"Engine"}
                    <select onchange={set_backend} disabled={disabled} data-testid="miner-backend">
                        <option value="gpu" selected={*backend == Backend::WebGpu} disabled={!*gpu}>{"WebGPU"}</option>
                        <option value="cpu" selected={*backend == Backend::Cpu}>{"CPU (wasm)"}</option>
                    </select>
                </label>
                <label>{format!("CPU workers: {} of {} cores", *workers, *cores)}
                    <input type="range" min="1" max={cores.to_string()} value={workers.to_string()} onchange={set_workers}
                        disabled={disabled || *backend == Backend::WebGpu} />
                </label>
                <label>{format!("Intensity: {} % of the time", *duty)}
                    <input type="range" min="10" max="100" step="10" value={duty.to_string()} onchange={set_duty} disabled={disabled} />
                </label>
                <label>{"Node"}
                    <select onchange={set_node} disabled={disabled}>
                        { for props.nodes.iter().enumerate().map(|(i, n)| html! {
                            <option value={i.to_string()} selected={i == *node}>{host_label(n)}</option>
                        }) }
                    </select>
                </label>
            </div>
            <button class={classes!("big-button", running.then_some("danger"))} onclick={toggle} data-testid="miner-toggle"
                aria-pressed={running.to_string()}>{if *running { "Stop mining" } else { "Start mining" }}</button>
            if let Some(e) = &*error { <p class="error" role="alert">{e}</p> }
            { for notes.iter().map(|n| html! { <p class="notice" role="status">{n}</p> }) }
            <dl class="stats" aria-live="polite">
                <div><dt>{"Status"}</dt><dd data-testid="miner-status">{if *running { "mining" } else { "stopped" }}</dd></div>
                <div><dt>{"Engine"}</dt><dd>{if engines.is_empty() { "–".to_string() } else { engines.join(", ") }}</dd></div>
                <div><dt>{"Hashrate"}</dt><dd data-testid="hashrate">{hashrate(rate)}</dd></div>
                <div><dt>{"Attempts"}</dt><dd data-testid="attempts">{total(|r| r.attempts)}</dd></div>
                <div><dt>{"Shares sent"}</dt><dd data-testid="shares-sent">{total(|r| r.shares_sent)}</dd></div>
                <div><dt>{"Shares accepted"}</dt><dd data-testid="shares-accepted">{total(|r| r.shares_accepted)}</dd></div>
                <div><dt>{"Blocks found"}</dt><dd data-testid="blocks-found">{total(|r| r.blocks)}</dd></div>
                <div><dt>{"At the node"}</dt><dd>{node_count.map_or("–".to_string(), |(s, b)| format!("{s} shares, {b} blocks"))}</dd></div>
            </dl>
            <p class="key">{"Miner key (made in this browser, kept in local storage): "}
                <span class="mono" data-testid="miner-key">{match key.as_ref() { Ok(k) => k.clone(), Err(e) => format!("unavailable: {e}") }}</span></p>
        </div>
    }
}
