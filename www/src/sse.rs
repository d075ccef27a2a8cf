//! Server-sent events as the chat endpoint streams them (OpenAI style: `data: {json}`
//! lines, a blank line after each event, `data: [DONE]` at the end).
//!
//! The parser is fed raw bytes as they arrive from `fetch`, so it keeps partial
//! lines (and partial UTF-8 sequences) between calls.

use crate::receipt::Receipt;

/// Incremental SSE parser.
#[derive(Default)]
pub struct SseParser {
    buf: Vec<u8>,
    data: Vec<String>,
}

impl SseParser {
    /// A parser with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the data of every event completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line[..line.len() - 1]);
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if line.is_empty() {
                if !self.data.is_empty() {
                    events.push(self.data.join("\n"));
                    self.data.clear();
                }
            } else if let Some(rest) = line.strip_prefix("data:") {
                self.data.push(rest.strip_prefix(' ').unwrap_or(rest).to_string());
            }
            // Comments (`:`), `event:`, `id:` and `retry:` carry nothing we use.
        }
        events
    }

    /// Data of an event left open when the stream ended without its blank line.
    pub fn finish(&mut self) -> Option<String> {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            let line = String::from_utf8_lossy(&rest).into_owned();
            if let Some(d) = line.trim_end_matches('\r').strip_prefix("data:") {
                self.data.push(d.strip_prefix(' ').unwrap_or(d).to_string());
            }
        }
        if self.data.is_empty() {
            None
        } else {
            let d = self.data.join("\n");
            self.data.clear();
            Some(d)
        }
    }
}

/// What one event of a streamed chat completion says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatEvent {
    /// More answer text.
    Delta(String),
    /// The node's signed receipt for the whole answer.
    Receipt(Receipt),
    /// The node reported an error inside the stream.
    Error(String),
    /// `[DONE]`.
    Done,
    /// Nothing the app shows (role-only deltas, finish reasons).
    Other,
}

/// Interprets the data of one event. An event can carry text and a receipt at once
/// (a final chunk with both), so this returns a list.
pub fn chat_events(data: &str) -> Vec<ChatEvent> {
    let data = data.trim();
    if data == "[DONE]" {
        return vec![ChatEvent::Done];
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else {
        return vec![ChatEvent::Error(format!("unreadable event: {}", data.chars().take(80).collect::<String>()))];
    };
    let mut out = Vec::new();
    if let Some(e) = v.get("error") {
        let msg = e.as_str().map(str::to_string).or_else(|| e.get("message")?.as_str().map(str::to_string));
        out.push(ChatEvent::Error(msg.unwrap_or_else(|| e.to_string())));
    }
    if let Some(text) = v.pointer("/choices/0/delta/content").and_then(|c| c.as_str()) {
        if !text.is_empty() {
            out.push(ChatEvent::Delta(text.to_string()));
        }
    }
    if let Some(r) = v.get("tpow").and_then(|r| serde_json::from_value::<Receipt>(r.clone()).ok()) {
        out.push(ChatEvent::Receipt(r));
    }
    if out.is_empty() {
        out.push(ChatEvent::Other);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_reassemble() {
        let stream = "data: {\"a\":1}\n\n: comment\ndata: x\r\ndata: y\r\n\r\ndata: [DONE]\n\n";
        for cut in 0..stream.len() {
            let mut p = SseParser::new();
            let mut got = p.push(&stream.as_bytes()[..cut]);
            got.extend(p.push(&stream.as_bytes()[cut..]));
            assert_eq!(got, vec!["{\"a\":1}", "x\ny", "[DONE]"], "cut at {cut}");
        }
    }

    #[test]
    fn multibyte_text_split_mid_character_survives() {
        let stream = "data: {\"t\":\"héllo 🙂\"}\n\n".as_bytes();
        let mut p = SseParser::new();
        let mut got = Vec::new();
        for b in stream {
            got.extend(p.push(std::slice::from_ref(b)));
        }
        assert_eq!(got, vec!["{\"t\":\"héllo 🙂\"}"]);
    }

    #[test]
    fn unterminated_last_event_is_kept() {
        let mut p = SseParser::new();
        assert!(p.push(b"data: [DONE]").is_empty());
        assert_eq!(p.finish().as_deref(), Some("[DONE]"));
        assert_eq!(p.finish(), None);
    }

    #[test]
    fn chat_chunks_give_text_receipts_and_errors() {
        let delta = r#"{"choices":[{"index":0,"delta":{"content":"Hel"}}]}"#;
        assert_eq!(chat_events(delta), vec![ChatEvent::Delta("Hel".into())]);
        let role = r#"{"choices":[{"index":0,"delta":{"role":"assistant"}}]}"#;
        assert_eq!(chat_events(role), vec![ChatEvent::Other]);
        assert_eq!(chat_events("[DONE]"), vec![ChatEvent::Done]);
        let err = r#"{"error":{"message":"model busy"}}"#;
        assert_eq!(chat_events(err), vec![ChatEvent::Error("model busy".into())]);
        let fin = r#"{"choices":[{"delta":{},"finish_reason":"stop"}],"tpow":{"node_key":"ab","peer_id":"p",
            "request_hash":"01","response_hash":"02","signature":"03"}}"#;
        match chat_events(fin).as_slice() {
            [ChatEvent::Receipt(r)] => assert_eq!(r.node_key, "ab"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(chat_events("not json").as_slice(), [ChatEvent::Error(_)]));
    }
}
