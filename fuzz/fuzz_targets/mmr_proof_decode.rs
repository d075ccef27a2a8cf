//! MMR proof decoding and verification never panic on untrusted bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tpow_core::mmr::{MmrNode, MmrProof};
use tpow_core::U256;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = MmrProof::decode(data) {
        assert_eq!(p.encode(), data);
        let leaf = MmrNode { hash: [0; 32], work: U256::from(1u8) };
        let _ = p.verify(&[0; 32], &leaf);
    }
});
