//! The committed test vectors (tests/vectors/*.json), reproduced through the
//! engines the light client uses in wasm32.

use serde::Deserialize;
use tpow_core::chain::PowInput;
use tpow_core::header::TEMPLATE_LEN;
use tpow_core::{ChainParams, ModelCache};

#[derive(Deserialize)]
pub struct Case {
    pub prev_id: String,
    pub template: String,
    pub nonce: u64,
    pub output_digest: String,
    pub pow_hash: String,
}

#[derive(Deserialize)]
pub struct Vectors {
    pub chain: String,
    pub genesis_id: String,
    pub cases: Vec<Case>,
}

pub fn load(chain: &str) -> Vectors {
    let text = match chain {
        "devnet" => include_str!("../../../../tests/vectors/devnet.json"),
        _ => include_str!("../../../../tests/vectors/mainnet.json"),
    };
    serde_json::from_str(text).expect("vector file parses")
}

pub fn input(chain: &str, c: &Case) -> PowInput {
    let spec = ChainParams::by_name(chain).expect("chain").model;
    let mut prev_id = [0u8; 32];
    hex::decode_to_slice(&c.prev_id, &mut prev_id).expect("hex");
    let mut template = [0u8; TEMPLATE_LEN];
    hex::decode_to_slice(&c.template, &mut template).expect("hex");
    PowInput { spec, prev_id, template, nonce: c.nonce, output_digest: [0; 32] }
}

/// Every case of `chain` through tpow-core in this build (wasm32 here), plus
/// the genesis id and pow hashes. Returns the number of cases checked.
pub fn check_cpu(chain: &str) -> usize {
    let v = load(chain);
    assert_eq!(v.chain, chain);
    let params = ChainParams::by_name(chain).expect("chain");
    assert_eq!(hex::encode(tpow_core::chain::ChainEntry::genesis(&params).expect("valid params").id), v.genesis_id);
    let mut cache = ModelCache::new();
    for c in &v.cases {
        let inp = input(chain, c);
        let d = cache.output_digest(&inp).expect("pass");
        assert_eq!(hex::encode(d), c.output_digest, "{chain} nonce {}", c.nonce);
        let pow = tpow_core::puzzle::pow_hash(&inp.template, inp.nonce, &d);
        assert_eq!(hex::encode(pow), c.pow_hash);
        // The worker's entry point agrees.
        let encoded = tpow_light::pass::encode(&inp);
        assert_eq!(tpow_light::pass::decode(&encoded), Some(inp));
    }
    v.cases.len()
}
