//! What peers learn about each other without an extra protocol: the identify
//! agent version carries the chat models a node serves and its HTTP port.

/// The identify agent version of a node: `tpow-node/VERSION`, then
/// ` models=ID[,ID...]` when it serves chat, then ` http=PORT`. Peers learn
/// from it which node offers which model, with no extra protocol.
pub fn agent_version(models: &[String], http_port: Option<u16>) -> String {
    let mut agent = format!("tpow-node/{}", env!("CARGO_PKG_VERSION"));
    // Ids are made safe for the format: no separators inside an id.
    let ids: Vec<String> = models
        .iter()
        .map(|m| m.chars().map(|c| if c.is_whitespace() || c == ',' || c == '=' { '_' } else { c }).collect())
        .filter(|m: &String| !m.is_empty())
        .collect();
    if !ids.is_empty() {
        agent.push_str(" models=");
        agent.push_str(&ids.join(","));
    }
    if let Some(port) = http_port {
        agent.push_str(&format!(" http={port}"));
    }
    agent
}

/// Most models read from one peer's agent version (the string comes from the network).
const MAX_PEER_MODELS: usize = 32;

/// The models and HTTP port in a peer's agent version (see [`agent_version`]);
/// anything malformed is ignored.
pub fn parse_agent(agent: &str) -> (Vec<String>, Option<u16>) {
    let mut models = Vec::new();
    let mut port = None;
    for field in agent.split_whitespace() {
        if let Some(list) = field.strip_prefix("models=") {
            models = list
                .split(',')
                .filter(|m| !m.is_empty() && m.len() <= 128)
                .take(MAX_PEER_MODELS)
                .map(str::to_string)
                .collect();
        } else if let Some(p) = field.strip_prefix("http=") {
            port = p.parse().ok();
        }
    }
    (models, port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_versions_round_trip_models_and_port() {
        let a = agent_version(&["SmolLM2-135M-Instruct".into(), "my model,v2".into()], Some(8645));
        assert!(a.starts_with("tpow-node/"), "{a}");
        assert_eq!(parse_agent(&a), (vec!["SmolLM2-135M-Instruct".to_string(), "my_model_v2".to_string()], Some(8645)));
        assert_eq!(parse_agent(&agent_version(&[], None)), (Vec::new(), None));
        // Other implementations' agents and junk give nothing.
        assert_eq!(parse_agent("rust-libp2p/0.47.0"), (Vec::new(), None));
        assert_eq!(parse_agent("x models= http=99999"), (Vec::new(), None));
        let many = format!("tpow-node/0 models={}", vec!["m"; 100].join(","));
        assert_eq!(parse_agent(&many).0.len(), MAX_PEER_MODELS);
    }
}
