//! Header encoding: round trips, and every malformed input gets a typed error.

use proptest::prelude::*;
use tpow_core::header::{DecodeError, HEADER_LEN, TEMPLATE_LEN, VERSION};
use tpow_core::target::{CompactTarget, TargetError};
use tpow_core::Header;

fn arb_header() -> impl Strategy<Value = Header> {
    (
        any::<u64>(),
        any::<[u8; 32]>(),
        any::<u64>(),
        (1u32..0x1f00_0000).prop_filter("canonical positive target", |b| CompactTarget(*b).to_target().is_ok()),
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
        any::<u64>(),
        any::<[u8; 32]>(),
    )
        .prop_map(|(height, prev_id, timestamp_ms, bits, body_root, mmr_root, miner_key, nonce, output_digest)| {
            Header {
                version: VERSION,
                height,
                prev_id,
                timestamp_ms,
                bits: CompactTarget(bits),
                body_root,
                mmr_root,
                miner_key,
                nonce,
                output_digest,
            }
        })
}

proptest! {
    #[test]
    fn encode_decode_round_trip(h in arb_header()) {
        let bytes = h.encode();
        prop_assert_eq!(Header::decode(&bytes).unwrap(), h);
        prop_assert_eq!(&bytes[..TEMPLATE_LEN], &h.template()[..]);
    }

    #[test]
    fn any_byte_change_changes_the_id(h in arb_header(), pos in 0..HEADER_LEN, flip in 1u8..=255) {
        let mut bytes = h.encode();
        bytes[pos] ^= flip;
        if let Ok(other) = Header::decode(&bytes) {
            prop_assert_ne!(other.id(), h.id());
        }
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        match Header::decode(&bytes) {
            Ok(h) => prop_assert_eq!(&h.encode()[..], &bytes[..]),
            Err(DecodeError::Length(n)) => prop_assert!(n != HEADER_LEN && n == bytes.len()),
            Err(_) => prop_assert_eq!(bytes.len(), HEADER_LEN),
        }
    }
}

#[test]
fn malformed_headers_get_typed_errors() {
    let h = Header {
        version: VERSION,
        height: 1,
        prev_id: [1; 32],
        timestamp_ms: 5,
        bits: CompactTarget(0x1f00ffff),
        body_root: [0; 32],
        mmr_root: [0; 32],
        miner_key: [0; 32],
        nonce: 0,
        output_digest: [0; 32],
    };
    let good = h.encode();
    assert_eq!(Header::decode(&good[..191]), Err(DecodeError::Length(191)));
    assert_eq!(Header::decode(&[]), Err(DecodeError::Length(0)));
    let mut long = good.to_vec();
    long.push(0);
    assert_eq!(Header::decode(&long), Err(DecodeError::Length(193)));

    let mut v2 = good;
    v2[0] = 2;
    assert_eq!(Header::decode(&v2), Err(DecodeError::Version(2)));

    let with_bits = |bits: u32| {
        let mut b = good;
        b[52..56].copy_from_slice(&bits.to_le_bytes());
        Header::decode(&b)
    };
    assert_eq!(with_bits(0), Err(DecodeError::Bits(TargetError::Zero)));
    assert_eq!(with_bits(0x1d80_0001), Err(DecodeError::Bits(TargetError::Negative)));
    assert_eq!(with_bits(0x2200_ffff), Err(DecodeError::Bits(TargetError::Overflow)));
}
