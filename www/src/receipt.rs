//! Chat receipts (docs/API.md, "Chat receipts"): the node signs what it was asked and
//! what it answered with its ed25519 identity key. The browser checks the signature
//! itself, against the exact request bytes it sent and the text it received.
//!
//! ```text
//! message = BLAKE3-derive_key("tpow 2026-11 chat receipt", BLAKE3(request body) ‖ BLAKE3(content))
//! ```

use serde::Deserialize;

/// BLAKE3 key-derivation context of the signed message (the node's `RECEIPT_CONTEXT`).
pub const RECEIPT_CONTEXT: &str = "tpow 2026-11 chat receipt";

/// The `tpow` object a node attaches to its answer.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Receipt {
    /// The node's ed25519 public key, hex.
    pub node_key: String,
    /// Its libp2p peer id.
    #[serde(default)]
    pub peer_id: String,
    /// BLAKE3 of the request body as the node saw it, hex.
    #[serde(default)]
    pub request_hash: String,
    /// BLAKE3 of the answer as the node generated it, hex.
    #[serde(default)]
    pub response_hash: String,
    /// Ed25519 signature, hex.
    pub signature: String,
}

/// Outcome of checking a receipt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReceiptCheck {
    /// The key signed exactly this request and this answer.
    Valid,
    /// Why not.
    Invalid(String),
}

/// The 32 bytes a receipt signs.
pub fn receipt_message(request_hash: &[u8; 32], response_hash: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(RECEIPT_CONTEXT);
    h.update(request_hash);
    h.update(response_hash);
    *h.finalize().as_bytes()
}

/// Checks `receipt` against the body this page sent and the text it received.
pub fn check(receipt: &Receipt, request_body: &[u8], content: &str) -> ReceiptCheck {
    let key: [u8; 32] = match hex::decode(&receipt.node_key).ok().and_then(|k| k.try_into().ok()) {
        Some(k) => k,
        None => return ReceiptCheck::Invalid("node key is not 32 bytes of hex".into()),
    };
    let sig: [u8; 64] = match hex::decode(&receipt.signature).ok().and_then(|s| s.try_into().ok()) {
        Some(s) => s,
        None => return ReceiptCheck::Invalid("signature is not 64 bytes of hex".into()),
    };
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&key) else {
        return ReceiptCheck::Invalid("node key is not a curve point".into());
    };
    let request_hash = *blake3::hash(request_body).as_bytes();
    let response_hash = *blake3::hash(content.as_bytes()).as_bytes();
    if !receipt.response_hash.is_empty() && receipt.response_hash != hex::encode(response_hash) {
        return ReceiptCheck::Invalid("the answer received differs from the answer signed".into());
    }
    if !receipt.request_hash.is_empty() && receipt.request_hash != hex::encode(request_hash) {
        return ReceiptCheck::Invalid("the request signed differs from the request sent".into());
    }
    let msg = receipt_message(&request_hash, &response_hash);
    match key.verify_strict(&msg, &ed25519_dalek::Signature::from_bytes(&sig)) {
        Ok(()) => ReceiptCheck::Valid,
        Err(_) => ReceiptCheck::Invalid("signature does not verify".into()),
    }
}

/// The ed25519 public key of a 32-byte secret (used for the miner key).
pub fn public_key(secret: &[u8; 32]) -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(secret).verifying_key().to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Signer;

    fn sign(secret: [u8; 32], body: &[u8], content: &str) -> Receipt {
        let sk = ed25519_dalek::SigningKey::from_bytes(&secret);
        let rq = *blake3::hash(body).as_bytes();
        let rs = *blake3::hash(content.as_bytes()).as_bytes();
        Receipt {
            node_key: hex::encode(sk.verifying_key().to_bytes()),
            peer_id: String::new(),
            request_hash: hex::encode(rq),
            response_hash: hex::encode(rs),
            signature: hex::encode(sk.sign(&receipt_message(&rq, &rs)).to_bytes()),
        }
    }

    #[test]
    fn a_signed_answer_checks_and_tampering_does_not() {
        let body = br#"{"model":"m","messages":[]}"#;
        let r = sign([7; 32], body, "Hi there.");
        assert_eq!(check(&r, body, "Hi there."), ReceiptCheck::Valid);
        assert!(matches!(check(&r, body, "Hi there!"), ReceiptCheck::Invalid(_)));
        assert!(matches!(check(&r, b"{}", "Hi there."), ReceiptCheck::Invalid(_)));
        let mut other = r.clone();
        other.node_key = hex::encode(public_key(&[8; 32]));
        assert!(matches!(check(&other, body, "Hi there."), ReceiptCheck::Invalid(_)));
        let mut bad = r.clone();
        bad.signature.replace_range(0..2, if &r.signature[0..2] == "00" { "01" } else { "00" });
        assert!(matches!(check(&bad, body, "Hi there."), ReceiptCheck::Invalid(_)));
        let mut short = r;
        short.signature.truncate(126);
        assert!(matches!(check(&short, body, "Hi there."), ReceiptCheck::Invalid(_)));
    }

    #[test]
    fn hashes_are_optional_but_the_signature_is_not() {
        let body = b"{}";
        let mut r = sign([1; 32], body, "x");
        r.request_hash.clear();
        r.response_hash.clear();
        assert_eq!(check(&r, body, "x"), ReceiptCheck::Valid);
        assert!(matches!(check(&r, body, "y"), ReceiptCheck::Invalid(_)));
    }
}
