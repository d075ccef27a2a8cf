//! The node API's JSON (docs/API.md): tpow-api's types, the same ones the node
//! renders its answers from and tpow-light parses, under the names the app uses.
//! Unknown fields are ignored, so newer nodes stay readable.

pub use tpow_api::{
    error_text, ApiError, ChatMessage, ChatRequest, Health, Info, MinerRow as MinerEntry, Miners, ModelEntry, Models,
    Peer, Peers, Sampling, ShareAnswer, ShareSubmission as Share, Tip, Work,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_parses_and_converts_its_model() {
        let w: Work = serde_json::from_str(
            r#"{"height":43,"prev_id":"aa","header":"00","template":"bb","target":"01","share_target":"02",
            "model":{"vocab":256,"seq_len":16,"d_model":64,"n_heads":4,"n_layers":2,"d_ffn":256}}"#,
        )
        .expect("valid work");
        assert_eq!(w.height, 43);
        assert_eq!(tpow_core::ModelSpec::from(w.model), tpow_core::ModelSpec::DEVNET);
    }

    #[test]
    fn peers_give_their_chat_urls() {
        let peer = |id: &str, address: &str, port: &str| {
            format!(
                r#"{{"peer_id":"{id}","address":"{address}","outbound":true,"agent":null,"models":["M"],
                "http_port":{port},"blocks_received":3}}"#
            )
        };
        let body = format!(
            r#"{{"peers":[{},{},{},{}]}}"#,
            peer("a", "/ip4/127.0.0.1/tcp/9646", "8646"),
            peer("b", "/ip6/::1/tcp/1", "9000"),
            peer("c", "/ip4/10.0.0.1/tcp/1", "null"),
            peer("d", "garbage", "1"),
        );
        let p: Peers = serde_json::from_str(&body).expect("valid peers");
        let urls: Vec<_> = p.peers.iter().map(Peer::http_url).collect();
        assert_eq!(urls, vec![Some("http://127.0.0.1:8646".into()), Some("http://[::1]:9000".into()), None, None]);
        assert_eq!(p.peers[0].models, vec!["M"]);
    }

    #[test]
    fn info_parses_with_and_without_chat() {
        let i: Info = serde_json::from_str(
            r#"{"version":"0.1.0","chain":"devnet","peer_id":"p","node_key":"ab","models":["M"],
            "chat":{"backend":"local","models":["M"],"demand":2,"engine":null,
            "sampling":{"temperature":0.2,"top_p":0.9},"unavailable":null}}"#,
        )
        .expect("valid info");
        assert_eq!(i.demand(), 2);
        assert_eq!(i.unavailable(), None);
        assert_eq!(i.sampling(), Some(Sampling { temperature: 0.2, top_p: 0.9 }));
        let i: Info = serde_json::from_str(
            r#"{"version":"0.1.0","chain":"devnet","peer_id":"p","node_key":"ab","models":[],"chat":null}"#,
        )
        .expect("valid");
        assert!(i.models.is_empty() && i.chat.is_none() && i.demand() == 0);
        let i: Info = serde_json::from_str(
            r#"{"version":"0.1.0","chain":"devnet","peer_id":"p","node_key":"ab","models":[],
            "chat":{"backend":"none","models":[],"demand":null,"engine":null,"sampling":null,"unavailable":"--no-chat"}}"#,
        )
        .expect("valid");
        assert_eq!((i.demand(), i.unavailable()), (0, Some("--no-chat")));
    }

    #[test]
    fn error_text_reads_both_error_shapes() {
        assert_eq!(error_text(409, r#"{"error":"stale share"}"#), "HTTP 409: stale share");
        assert_eq!(error_text(503, r#"{"error":{"message":"busy"}}"#), "HTTP 503: busy");
        assert_eq!(error_text(500, "oops"), "HTTP 500: oops");
        assert_eq!(error_text(502, ""), "HTTP 502");
    }
}
