//! tpow-core as a conformance-protocol implementation (tests/vectors/README.md):
//! reads one JSON request per line on stdin, `{"id", "op", "input"}`, and writes
//! one JSON reply per line on stdout, `{"id", "output"}` or `{"id", "error"}`.
//!
//! Run the whole suite against it:
//! `python3 tests/vectors/conformance.py -- cargo run -q --release -p tpow-core --example conformance`

#[path = "../tests/conformance_dispatch.rs"]
mod conformance_dispatch;

use std::io::{BufRead, BufWriter, Write};

use serde_json::{json, Value};

fn main() {
    let stdin = std::io::stdin();
    let mut out = BufWriter::new(std::io::stdout().lock());
    for line in stdin.lock().lines() {
        let line = line.expect("stdin");
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Value>(&line) {
            Ok(req) => {
                let id = req.get("id").cloned().unwrap_or(Value::Null);
                let op = req.get("op").and_then(Value::as_str).unwrap_or("");
                let input = req.get("input").cloned().unwrap_or_else(|| json!({}));
                conformance_dispatch::reply_json(&id, conformance_dispatch::handle(op, &input))
            }
            Err(e) => json!({"id": null, "bad_request": e.to_string()}),
        };
        writeln!(out, "{reply}").expect("stdout");
        out.flush().expect("stdout");
    }
}
