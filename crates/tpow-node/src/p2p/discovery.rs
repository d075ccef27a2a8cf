//! What peers learn about each other beyond the chain: the chat models a node
//! serves and the port of its HTTP API. Exchanged on a protocol of its own
//! (`/tpow/meta/1`, not chain-scoped, request-response over the bounded frame
//! codec) right after connecting, as a typed, validated message; the identify
//! agent string is only `tpow-node/VERSION`.
//!
//! Encoding of [`NodeMeta`] (the answer; the request is an empty frame):
//! version `1` (u8), HTTP port (u16 LE, 0 = none), model count (u8, at most
//! [`MAX_MODELS`]), then per model its length (u8, 1..=[`MAX_MODEL_LEN`]) and
//! UTF-8 bytes without control characters. Nothing may follow.

/// Most models one node announces (and we read from a peer).
pub const MAX_MODELS: usize = 32;
/// Longest model id, in bytes.
pub const MAX_MODEL_LEN: usize = 128;
/// Hard cap on an encoded [`NodeMeta`] (the frame cap of the answer).
pub const MAX_META_BYTES: usize = 4 + MAX_MODELS * (1 + MAX_MODEL_LEN);

const VERSION: u8 = 1;

/// The identify agent version of a node: `tpow-node/VERSION`, nothing else.
pub fn agent_version() -> String {
    format!("tpow-node/{}", env!("CARGO_PKG_VERSION"))
}

/// A node's discovery metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeMeta {
    /// Port of its HTTP API (its host is the one the connection came from).
    pub http_port: Option<u16>,
    /// Chat models it serves.
    pub models: Vec<String>,
}

/// Why a peer's metadata was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// Ends early.
    #[error("metadata truncated")]
    Truncated,
    /// Bytes after the last model.
    #[error("trailing bytes after the metadata")]
    Trailing,
    /// Another version of the message.
    #[error("metadata version {0} unknown")]
    Version(u8),
    /// More models than [`MAX_MODELS`].
    #[error("{0} models, more than {MAX_MODELS}")]
    TooManyModels(usize),
    /// A model id empty, over [`MAX_MODEL_LEN`], not UTF-8 or with control characters.
    #[error("model id {0} is not a valid id")]
    BadModel(usize),
}

fn valid_model(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_MODEL_LEN && !id.chars().any(char::is_control)
}

impl NodeMeta {
    /// Our own metadata; ids that could not be sent (empty, too long, control
    /// characters) are left out, and at most [`MAX_MODELS`] are kept.
    pub fn new(models: &[String], http_port: Option<u16>) -> Self {
        let models = models.iter().filter(|m| valid_model(m)).take(MAX_MODELS).cloned().collect();
        NodeMeta { http_port, models }
    }

    /// The encoding (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        out.extend_from_slice(&self.http_port.unwrap_or(0).to_le_bytes());
        let models: Vec<&String> = self.models.iter().filter(|m| valid_model(m)).take(MAX_MODELS).collect();
        out.push(models.len() as u8);
        for m in models {
            out.push(m.len() as u8);
            out.extend_from_slice(m.as_bytes());
        }
        out
    }

    /// Decodes and validates a peer's metadata; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, MetaError> {
        let mut r = bytes;
        let mut take = |n: usize| -> Result<&[u8], MetaError> {
            if r.len() < n {
                return Err(MetaError::Truncated);
            }
            let (a, b) = r.split_at(n);
            r = b;
            Ok(a)
        };
        let version = take(1)?[0];
        if version != VERSION {
            return Err(MetaError::Version(version));
        }
        let port = u16::from_le_bytes([take(1)?[0], take(1)?[0]]);
        let count = take(1)?[0] as usize;
        if count > MAX_MODELS {
            return Err(MetaError::TooManyModels(count));
        }
        let mut models = Vec::with_capacity(count);
        for i in 0..count {
            let len = take(1)?[0] as usize;
            let id = std::str::from_utf8(take(len)?).map_err(|_| MetaError::BadModel(i))?;
            if !valid_model(id) {
                return Err(MetaError::BadModel(i));
            }
            models.push(id.to_string());
        }
        if !r.is_empty() {
            return Err(MetaError::Trailing);
        }
        Ok(NodeMeta { http_port: (port != 0).then_some(port), models })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_and_junk_is_refused() {
        let meta = NodeMeta::new(&["SmolLM2-135M-Instruct".into(), "my model,v2".into()], Some(8645));
        let bytes = meta.encode();
        assert!(bytes.len() <= MAX_META_BYTES);
        assert_eq!(NodeMeta::decode(&bytes), Ok(meta));
        assert_eq!(NodeMeta::decode(&NodeMeta::default().encode()), Ok(NodeMeta::default()));
        assert_eq!(agent_version(), format!("tpow-node/{}", env!("CARGO_PKG_VERSION")));
        // Our own unsendable ids are dropped, not sent.
        let long = "x".repeat(MAX_MODEL_LEN + 1);
        let many: Vec<String> = (0..100).map(|i| format!("m{i}")).chain([long, String::new(), "a\nb".into()]).collect();
        let own = NodeMeta::new(&many, None);
        assert_eq!(own.models.len(), MAX_MODELS);
        assert!(NodeMeta::decode(&own.encode()).is_ok());
        // A peer's junk.
        assert_eq!(NodeMeta::decode(&[]), Err(MetaError::Truncated));
        assert_eq!(NodeMeta::decode(&[2, 0, 0, 0]), Err(MetaError::Version(2)));
        assert_eq!(NodeMeta::decode(&[1, 0, 0, 33]), Err(MetaError::TooManyModels(33)));
        assert_eq!(NodeMeta::decode(&[1, 0, 0, 1, 5, b'a']), Err(MetaError::Truncated));
        assert_eq!(NodeMeta::decode(&[1, 0, 0, 1, 0]), Err(MetaError::BadModel(0)));
        assert_eq!(NodeMeta::decode(&[1, 0, 0, 1, 2, 0xff, 0xfe]), Err(MetaError::BadModel(0)));
        assert_eq!(NodeMeta::decode(&[1, 0, 0, 1, 1, 7]), Err(MetaError::BadModel(0)));
        assert_eq!(NodeMeta::decode(&[1, 0, 0, 0, 9]), Err(MetaError::Trailing));
        assert_eq!(NodeMeta::decode(&[1, 0x45, 0x21, 0]), Ok(NodeMeta { http_port: Some(0x2145), models: vec![] }));
    }
}
