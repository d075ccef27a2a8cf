//! Serves the web app (the Trunk build of `www/`, committed as `www/dist`) next to
//! the API, so one URL gives a person the dashboard, the chat and the miner, and
//! the app's default node is the origin that served it.
//!
//! Files are served as they are; any other path that is not an API path gets
//! `index.html` (the app reads its own URL). Unknown `/api/...` and `/v1/...` paths
//! stay JSON 404s, as docs/API.md promises.

use std::path::{Path, PathBuf};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use tower_http::services::{ServeDir, ServeFile};

/// The app's directory in the source tree, so `cargo run --release -p tpow-node` serves it
/// from any working directory.
pub fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../www/dist")
}

/// Routes that serve the built app in `dir`. Merge it into the API router in place
/// of the API's own fallback (a router has one fallback).
pub fn router(dir: &Path) -> Router {
    let files =
        ServeDir::new(dir).append_index_html_on_directories(true).fallback(ServeFile::new(dir.join("index.html")));
    Router::new()
        .route("/api/{*rest}", any(no_endpoint))
        .route("/v1/{*rest}", any(no_endpoint))
        .fallback_service(files)
        .layer(axum::middleware::map_response(json_file_errors))
}

/// A path the file system cannot even look up (a segment longer than a file name
/// may be, say) makes the file service answer 500 with a text body; it is a
/// path that does not exist, so answer as the API does: a JSON 404.
async fn json_file_errors(res: Response) -> Response {
    if res.status().is_server_error() {
        return (StatusCode::NOT_FOUND, Json(serde_json::json!({"error": "no such file"}))).into_response();
    }
    res
}

/// Whether `dir` holds a built app (its `index.html`).
pub fn has_app(dir: &Path) -> bool {
    dir.join("index.html").is_file()
}

async fn no_endpoint() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, Json(serde_json::json!({"error": "no such endpoint"})))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// One plain HTTP/1.1 GET; returns the status line and the body.
    fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        let status = out.lines().next().unwrap_or_default().to_string();
        let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_files_index_fallback_and_json_404_for_api_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("index.html"), "<html>app</html>").expect("write index");
        std::fs::write(dir.path().join("app.js"), "console.log(1)").expect("write js");
        assert!(has_app(dir.path()));
        let app = Router::new().route("/api/health", axum::routing::get(|| async { "ok" })).merge(router(dir.path()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let r = tokio::task::spawn_blocking(move || {
            [
                get(addr, "/"),
                get(addr, "/app.js"),
                get(addr, "/chat?x=1"),
                get(addr, "/api/nope"),
                get(addr, "/api/health"),
                get(addr, &format!("/{}", "a".repeat(300))),
            ]
        })
        .await
        .expect("client");
        assert!(r[0].0.contains("200") && r[0].1.contains("app</html>"), "{:?}", r[0]);
        assert!(r[1].0.contains("200") && r[1].1.contains("console.log"), "{:?}", r[1]);
        assert!(r[2].0.contains("200") && r[2].1.contains("app</html>"), "index for app paths: {:?}", r[2]);
        assert!(r[3].0.contains("404") && r[3].1.contains("no such endpoint"), "{:?}", r[3]);
        assert!(r[4].0.contains("200") && r[4].1.contains("ok"), "API routes win: {:?}", r[4]);
        assert!(!r[5].0.contains(" 5"), "a name too long for the file system is no server error: {:?}", r[5]);
        assert!(r[5].1.contains("app</html>") || r[5].1.contains("\"error\""), "{:?}", r[5]);
        assert!(!has_app(&dir.path().join("missing")));
    }
}
