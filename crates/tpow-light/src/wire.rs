//! Parsing the node HTTP API (docs/API.md), with a cap on every size and count.
//!
//! Pure functions from bytes to typed values; the fetching is the platform's job.
//! The JSON shapes are tpow-api's (the types the node renders from); this module
//! adds what a client that trusts nothing must check on top: sizes, counts, hex,
//! decimal work, header encodings and proofs. Every failure is a [`NodeFault`], so
//! the caller can name the node that sent it.

use serde::de::DeserializeOwned;
use tpow_core::header::{Header, HEADER_LEN};
use tpow_core::mmr::MmrProof;
use tpow_core::{BlockId, U256};

use crate::error::NodeFault;

/// Most headers one `/api/headers` request asks for (the node's own cap).
pub const MAX_HEADERS_PER_REQUEST: u64 = 2_000;
/// Most bytes accepted for `/api/tip` or one WebSocket message.
pub const MAX_TIP_BYTES: usize = 4 * 1024;
/// Most bytes accepted for one `/api/chain` response.
pub const MAX_CHAIN_BYTES: usize = 4 * 1024;
/// Most bytes accepted for one `/api/headers` response.
pub const MAX_HEADERS_BYTES: usize = MAX_HEADERS_PER_REQUEST as usize * HEADER_LEN;
/// Most bytes accepted for one `/api/mmr-proof` response (hex doubles the sizes).
pub const MAX_PROOF_BYTES: usize = 4 * 1024 + 2 * (MmrProof::MAX_ENCODED_LEN + 2 * HEADER_LEN);
/// Most `last` headers the client asks `/api/flyclient` for (the node's cap).
pub const MAX_FLY_LAST: u64 = 100;
/// Most draws (so most samples) one `/api/flyclient` answer may hold (the node's cap).
pub const MAX_FLY_DRAWS: u64 = tpow_core::flyclient::MAX_DRAWS;

/// Most bytes accepted for one `/api/flyclient` answer at tip height `tip`: the
/// JSON frame, `MAX_FLY_LAST` hex headers and `MAX_FLY_DRAWS` samples, each a hex
/// header and a hex proof no longer than a proof in an MMR of `tip` leaves can be
/// (18 bytes plus at most `2·bitlen(tip)` nodes of 64 bytes). 100,000 headers:
/// about 10 MB; an honest answer with λ = 50 is about a fifth of that.
pub fn max_fly_bytes(tip: u64) -> usize {
    let bits = (64 - tip.max(1).leading_zeros()) as usize;
    let proof = (18 + 128 * bits).min(MmrProof::MAX_ENCODED_LEN);
    4 * 1024 + MAX_FLY_LAST as usize * (2 * HEADER_LEN + 4) + MAX_FLY_DRAWS as usize * (2 * (HEADER_LEN + proof) + 256)
}

/// A node's announced best tip (`/api/tip`, WebSocket messages). Claims only: the
/// client verifies before it believes any of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TipClaim {
    /// Height.
    pub height: u64,
    /// Block id.
    pub id: BlockId,
    /// Claimed cumulative work.
    pub total_work: U256,
}

/// One FlyClient sample: an old header, the cumulative work up to it and its MMR
/// proof against the tip's `mmr_root`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlySample {
    /// The header.
    pub header: Header,
    /// Claimed work of heights `0..=header.height`.
    pub total_work: U256,
    /// Inclusion proof.
    pub proof: MmrProof,
}

/// A decoded `/api/flyclient` response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlyResponse {
    /// Draws the node made (the client checks this against its own rule).
    pub draws: u64,
    /// Tip height.
    pub tip: u64,
    /// Claimed tip id.
    pub tip_id: BlockId,
    /// Claimed total work of the tip.
    pub total_work: U256,
    /// The newest headers, ascending, ending at the tip.
    pub last: Vec<Header>,
    /// The samples.
    pub sampled: Vec<FlySample>,
}

/// A decoded `/api/mmr-proof` response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProofResponse {
    /// The proven header.
    pub header: Header,
    /// The header whose `mmr_root` the proof is against.
    pub tip_header: Header,
    /// The proof.
    pub proof: MmrProof,
}

fn malformed(e: impl core::fmt::Display) -> NodeFault {
    NodeFault::Malformed(e.to_string())
}

fn check_len(bytes: &[u8], limit: usize) -> Result<(), NodeFault> {
    if bytes.len() > limit {
        return Err(NodeFault::TooLarge { got: bytes.len(), limit });
    }
    Ok(())
}

/// At most `limit` bytes of JSON of type `T`.
fn json<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, NodeFault> {
    check_len(bytes, limit)?;
    serde_json::from_slice(bytes).map_err(malformed)
}

fn hex_array<const N: usize>(s: &str, what: &str) -> Result<[u8; N], NodeFault> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|e| malformed(format!("{what}: {e}")))?;
    Ok(out)
}

fn decimal_u256(s: &str, what: &str) -> Result<U256, NodeFault> {
    // 2^256 has 78 decimal digits; anything longer is not a work value.
    if s.is_empty() || s.len() > 78 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(format!("{what}: not a decimal 256-bit number")));
    }
    U256::from_str_radix(s, 10).map_err(|e| malformed(format!("{what}: {e}")))
}

fn header_hex(s: &str, index: usize) -> Result<Header, NodeFault> {
    if s.len() != 2 * HEADER_LEN {
        let error = tpow_core::header::DecodeError::Length(s.len() / 2);
        return Err(NodeFault::Decode { index, error });
    }
    let bytes: [u8; HEADER_LEN] = hex_array(s, "header")?;
    Header::decode(&bytes).map_err(|error| NodeFault::Decode { index, error })
}

fn proof_hex(s: &str, height: u64) -> Result<MmrProof, NodeFault> {
    if s.len() > 2 * MmrProof::MAX_ENCODED_LEN {
        return Err(NodeFault::TooLarge { got: s.len() / 2, limit: MmrProof::MAX_ENCODED_LEN });
    }
    let bytes = hex::decode(s).map_err(|e| malformed(format!("proof: {e}")))?;
    MmrProof::decode(&bytes).map_err(|error| NodeFault::Proof { height, error })
}

/// What a node says about the chain it follows (`/api/chain`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainClaim {
    /// Chain name (`devnet`, `mainnet`).
    pub name: String,
    /// Id of its genesis header.
    pub genesis_id: BlockId,
    /// Its genesis time (a devnet's is chosen when it starts).
    pub genesis_timestamp_ms: u64,
}

/// Parses `/api/chain`.
pub fn parse_chain(bytes: &[u8]) -> Result<ChainClaim, NodeFault> {
    let j: tpow_api::ChainInfo = json(bytes, MAX_CHAIN_BYTES)?;
    Ok(ChainClaim {
        name: j.name,
        genesis_id: hex_array(&j.genesis_id, "genesis_id")?,
        genesis_timestamp_ms: j.genesis_timestamp_ms,
    })
}

/// Parses `/api/tip` or a WebSocket tip message.
pub fn parse_tip(bytes: &[u8]) -> Result<TipClaim, NodeFault> {
    let j: tpow_api::Tip = json(bytes, MAX_TIP_BYTES)?;
    Ok(TipClaim {
        height: j.height,
        id: hex_array(&j.id, "id")?,
        total_work: decimal_u256(&j.total_work, "total_work")?,
    })
}

/// Parses a binary `/api/headers?from=FROM&count=COUNT` response: whole headers
/// only, at most `count`, at consecutive heights starting at `from`.
pub fn parse_headers(bytes: &[u8], from: u64, count: u64) -> Result<Vec<Header>, NodeFault> {
    let count = count.min(MAX_HEADERS_PER_REQUEST);
    check_len(bytes, count as usize * HEADER_LEN)?;
    if bytes.is_empty() {
        return Err(NodeFault::Count("no headers in the response".into()));
    }
    if !bytes.len().is_multiple_of(HEADER_LEN) {
        let error = tpow_core::header::DecodeError::Length(bytes.len() % HEADER_LEN);
        return Err(NodeFault::Decode { index: bytes.len() / HEADER_LEN, error });
    }
    let mut out = Vec::with_capacity(bytes.len() / HEADER_LEN);
    for (index, chunk) in bytes.chunks_exact(HEADER_LEN).enumerate() {
        let h = Header::decode(chunk).map_err(|error| NodeFault::Decode { index, error })?;
        let expected = from + index as u64;
        if h.height != expected {
            return Err(NodeFault::Mismatch { height: expected, what: format!("served height {}", h.height) });
        }
        out.push(h);
    }
    Ok(out)
}

/// Parses `/api/flyclient?tip=TIP&last=LAST&seed=SEED&security=BITS`, checking the
/// counts against the request and the caps.
pub fn parse_flyclient(bytes: &[u8], tip: u64, last: u64) -> Result<FlyResponse, NodeFault> {
    let j: tpow_api::FlyAnswer = json(bytes, max_fly_bytes(tip))?;
    if j.tip != tip {
        return Err(NodeFault::Mismatch { height: tip, what: format!("flyclient answered for tip {}", j.tip) });
    }
    let expected_last = last.min(tip + 1);
    if j.last.len() as u64 != expected_last {
        return Err(NodeFault::Count(format!("{} last headers, asked for {expected_last}", j.last.len())));
    }
    if j.draws > MAX_FLY_DRAWS || j.sampled.len() as u64 > j.draws {
        return Err(NodeFault::Count(format!(
            "{} samples from {} draws, at most {MAX_FLY_DRAWS} allowed",
            j.sampled.len(),
            j.draws
        )));
    }
    let last = j.last.iter().enumerate().map(|(i, s)| header_hex(s, i)).collect::<Result<Vec<_>, _>>()?;
    let mut sampled = Vec::with_capacity(j.sampled.len());
    for (i, s) in j.sampled.iter().enumerate() {
        let header = header_hex(&s.header, i)?;
        if header.height != s.height {
            return Err(NodeFault::Mismatch {
                height: s.height,
                what: format!("sample holds height {}", header.height),
            });
        }
        sampled.push(FlySample {
            header,
            total_work: decimal_u256(&s.total_work, "sample total_work")?,
            proof: proof_hex(&s.proof, s.height)?,
        });
    }
    Ok(FlyResponse {
        draws: j.draws,
        tip: j.tip,
        tip_id: hex_array(&j.tip_id, "tip_id")?,
        total_work: decimal_u256(&j.total_work, "total_work")?,
        last,
        sampled,
    })
}

/// Parses `/api/mmr-proof?height=HEIGHT&tip=...`.
pub fn parse_mmr_proof(bytes: &[u8], height: u64) -> Result<ProofResponse, NodeFault> {
    let j: tpow_api::MmrProofAnswer = json(bytes, MAX_PROOF_BYTES)?;
    if j.height != height {
        return Err(NodeFault::Mismatch { height, what: format!("proof answered for height {}", j.height) });
    }
    Ok(ProofResponse {
        header: header_hex(&j.header, 0)?,
        tip_header: header_hex(&j.tip_header, 1)?,
        proof: proof_hex(&j.proof, height)?,
    })
}

/// The JSON a node sends for a tip (as `tpow-node` renders it), for fakes and tests.
pub fn tip_json(height: u64, id: &BlockId, total_work: &U256, target: &U256, timestamp_ms: u64) -> String {
    let tip = tpow_api::Tip::new(height, id, total_work, target, timestamp_ms);
    serde_json::to_string(&tip).unwrap_or_default()
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn tip_rejects_bad_input() {
        let ok = tip_json(5, &[7; 32], &U256::from(99u8), &U256::from(3u8), 1);
        assert_eq!(parse_tip(ok.as_bytes()).map(|t| t.height), Ok(5));
        assert!(matches!(parse_tip(b"{"), Err(NodeFault::Malformed(_))));
        let bad_work = ok.replace("\"99\"", "\"-1\"");
        assert!(matches!(parse_tip(bad_work.as_bytes()), Err(NodeFault::Malformed(_))));
        let huge = vec![b' '; MAX_TIP_BYTES + 1];
        assert!(matches!(parse_tip(&huge), Err(NodeFault::TooLarge { .. })));
        let short_id = ok.replace(&hex::encode([7u8; 32]), "0707");
        assert!(matches!(parse_tip(short_id.as_bytes()), Err(NodeFault::Malformed(_))));
    }

    #[test]
    fn headers_reject_truncation_and_wrong_heights() {
        let g = tpow_core::chain::genesis_header(&tpow_core::ChainParams::devnet());
        let bytes = g.encode();
        assert_eq!(parse_headers(&bytes, 0, 1).map(|v| v.len()), Ok(1));
        assert!(matches!(parse_headers(&bytes[..191], 0, 1), Err(NodeFault::Decode { .. })));
        assert!(matches!(parse_headers(&bytes, 1, 1), Err(NodeFault::Mismatch { .. })));
        let two = [bytes, bytes].concat();
        assert!(matches!(parse_headers(&two, 0, 1), Err(NodeFault::TooLarge { .. })));
        assert!(matches!(parse_headers(&[], 0, 1), Err(NodeFault::Count(_))));
    }
}
