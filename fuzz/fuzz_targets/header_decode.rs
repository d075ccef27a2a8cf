//! Header decoding never panics, and whatever decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tpow_core::Header;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = Header::decode(data) {
        assert_eq!(&h.encode()[..], data);
        // The cheap pow check must also be total on any decodable header.
        let _ = tpow_core::chain::check_pow_hash(&h);
    }
});
