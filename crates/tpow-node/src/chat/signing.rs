//! Chat receipts: the node signs what it was asked and what it answered, so a
//! client can later prove which node said what.
//!
//! The exact bytes (docs/API.md, "Chat receipts"):
//!
//! ```text
//! request_hash  = BLAKE3(raw HTTP request body)
//! response_hash = BLAKE3(UTF-8 of the complete generated content string)
//! message       = BLAKE3-derive_key("tpow 2026-11 chat receipt", request_hash ‖ response_hash)
//! signature     = Ed25519(node identity key, message)
//! ```
//!
//! The key is the node's libp2p ed25519 identity, so the signer is also the
//! peer that announces its models on the network.

use libp2p::identity::ed25519;

/// BLAKE3 key-derivation context of the signed message.
pub const RECEIPT_CONTEXT: &str = "tpow 2026-11 chat receipt";

/// A signed receipt, as carried in the `tpow` field of responses (its wire
/// form lives with the other API types).
pub use tpow_api::Receipt;

/// The 32 bytes that get signed.
pub fn receipt_message(request_hash: &[u8; 32], response_hash: &[u8; 32]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key(RECEIPT_CONTEXT);
    hasher.update(request_hash);
    hasher.update(response_hash);
    *hasher.finalize().as_bytes()
}

/// Signs receipts with the node's identity key.
#[derive(Clone)]
pub struct Signer {
    key: ed25519::Keypair,
    peer_id: String,
}

impl Signer {
    /// A signer for the node's identity key.
    pub fn new(key: ed25519::Keypair) -> Signer {
        let peer_id = libp2p::PeerId::from(libp2p::identity::PublicKey::from(key.public())).to_string();
        Signer { key, peer_id }
    }

    /// The raw public key (what clients verify against).
    pub fn public_key(&self) -> [u8; 32] {
        self.key.public().to_bytes()
    }

    /// Signs the receipt of `request_body` answered by `content`.
    pub fn sign(&self, request_body: &[u8], content: &str) -> Receipt {
        let request_hash = *blake3::hash(request_body).as_bytes();
        let response_hash = *blake3::hash(content.as_bytes()).as_bytes();
        let signature = self.key.sign(&receipt_message(&request_hash, &response_hash));
        Receipt {
            node_key: hex::encode(self.public_key()),
            peer_id: self.peer_id.clone(),
            request_hash: hex::encode(request_hash),
            response_hash: hex::encode(response_hash),
            signature: hex::encode(signature),
        }
    }
}

/// Checks that `node_key` signed "this request body was answered with this
/// content". Pure: clients (the browser app) mirror it with any Ed25519 and
/// BLAKE3 implementation. False on any malformed input. The node never verifies
/// its own receipts; this is the reference the tests and docs/API.md follow.
#[cfg_attr(not(test), allow(dead_code))]
pub fn verify_receipt(node_key: &[u8], request_body: &[u8], content: &str, signature: &[u8]) -> bool {
    let Ok(key) = ed25519::PublicKey::try_from_bytes(node_key) else { return false };
    let request_hash = *blake3::hash(request_body).as_bytes();
    let response_hash = *blake3::hash(content.as_bytes()).as_bytes();
    key.verify(&receipt_message(&request_hash, &response_hash), signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer::new(ed25519::Keypair::generate())
    }

    #[test]
    fn a_receipt_verifies_and_any_change_breaks_it() {
        let s = signer();
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let r = s.sign(body, "Hello there.");
        let key = hex::decode(&r.node_key).expect("hex");
        let sig = hex::decode(&r.signature).expect("hex");
        assert_eq!(r.request_hash, blake3::hash(body).to_hex().as_str());
        assert_eq!(r.response_hash, blake3::hash(b"Hello there.").to_hex().as_str());
        assert!(verify_receipt(&key, body, "Hello there.", &sig));
        assert!(!verify_receipt(&key, body, "Hello there!", &sig), "tampered content");
        assert!(!verify_receipt(&key, &body[1..], "Hello there.", &sig), "tampered request");
        let mut bad = sig.clone();
        bad[10] ^= 1;
        assert!(!verify_receipt(&key, body, "Hello there.", &bad), "tampered signature");
        let other = signer().public_key();
        assert!(!verify_receipt(&other, body, "Hello there.", &sig), "another node's key");
        assert!(!verify_receipt(&key[..31], body, "Hello there.", &sig), "short key");
        assert!(!verify_receipt(&key, body, "Hello there.", &sig[..63]), "short signature");
    }

    #[test]
    fn request_and_response_hashes_are_not_interchangeable() {
        // Swapping the two halves must give another message (order is bound).
        let a = [1u8; 32];
        let b = [2u8; 32];
        assert_ne!(receipt_message(&a, &b), receipt_message(&b, &a));
        // And the message is domain-separated from a plain hash of the same bytes.
        let mut cat = a.to_vec();
        cat.extend_from_slice(&b);
        assert_ne!(receipt_message(&a, &b), *blake3::hash(&cat).as_bytes());
    }

    #[test]
    fn the_peer_id_belongs_to_the_key() {
        let s = signer();
        let key = ed25519::PublicKey::try_from_bytes(&s.public_key()).expect("key");
        let id = libp2p::PeerId::from(libp2p::identity::PublicKey::from(key));
        assert_eq!(id.to_string(), s.sign(b"", "").peer_id);
    }
}
