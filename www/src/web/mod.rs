//! The browser side: yew components, `fetch` helpers, the chain client, the chat
//! stream and the miner's workers. Only built for wasm32.

pub mod app;
pub mod chat;
pub mod light_source;
pub mod miner;
pub mod net;
pub mod worker;

/// Mounts the app into `<body>`.
pub fn start_app() {
    yew::Renderer::<app::App>::new().render();
}
