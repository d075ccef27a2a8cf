//! The forward-pass request as bytes, for engines on the other side of a message
//! channel (the Web Worker): `spec (24) ‖ prev_id (32) ‖ template (152) ‖ nonce
//! (8, LE) ‖ claimed digest (32)` = 248 bytes.

use tpow_core::chain::PowInput;
use tpow_core::header::TEMPLATE_LEN;
use tpow_core::ModelSpec;

/// Encoded length.
pub const POW_INPUT_LEN: usize = 24 + 32 + TEMPLATE_LEN + 8 + 32;

/// Encodes `input`.
pub fn encode(input: &PowInput) -> Vec<u8> {
    let mut out = Vec::with_capacity(POW_INPUT_LEN);
    out.extend_from_slice(&input.spec.to_bytes());
    out.extend_from_slice(&input.prev_id);
    out.extend_from_slice(&input.template);
    out.extend_from_slice(&input.nonce.to_le_bytes());
    out.extend_from_slice(&input.output_digest);
    out
}

/// Decodes [`encode`]'s output; `None` for any other length.
pub fn decode(b: &[u8]) -> Option<PowInput> {
    if b.len() != POW_INPUT_LEN {
        return None;
    }
    let u = |i: usize| u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
    let spec = ModelSpec { vocab: u(0), seq_len: u(1), d_model: u(2), n_heads: u(3), n_layers: u(4), d_ffn: u(5) };
    let mut prev_id = [0u8; 32];
    prev_id.copy_from_slice(&b[24..56]);
    let mut template = [0u8; TEMPLATE_LEN];
    template.copy_from_slice(&b[56..56 + TEMPLATE_LEN]);
    let n = 56 + TEMPLATE_LEN;
    let mut nonce = [0u8; 8];
    nonce.copy_from_slice(&b[n..n + 8]);
    let mut output_digest = [0u8; 32];
    output_digest.copy_from_slice(&b[n + 8..]);
    Some(PowInput { spec, prev_id, template, nonce: u64::from_le_bytes(nonce), output_digest })
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let input = PowInput {
            spec: ModelSpec::MAINNET,
            prev_id: [3; 32],
            template: [9; TEMPLATE_LEN],
            nonce: u64::MAX - 5,
            output_digest: [7; 32],
        };
        let b = encode(&input);
        assert_eq!(b.len(), POW_INPUT_LEN);
        assert_eq!(decode(&b), Some(input));
        assert_eq!(decode(&b[1..]), None);
    }
}
