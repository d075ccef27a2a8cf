//! Network message encodings, pure and bounded.
//!
//! Every length is checked before anything is allocated from it, and decoding
//! never panics: what a peer sends is untrusted. A decode failure is the peer's
//! fault and gets it banned.
//!
//! - Gossip block: 192-byte header, then the body encoding (docs/PROTOCOL.md §15).
//! - Sync request `GetBlocks`: `0x01`, locator count `n` (u8, at most
//!   [`MAX_LOCATOR`]), `n` ids of 32 bytes, max blocks wanted (u16 LE).
//! - Sync response `Blocks`: count (u16 LE, at most [`MAX_BLOCKS_PER_RESPONSE`]),
//!   then per block: header (192), body length (u32 LE), body.

use tpow_core::body::{Body, BodyError, MAX_BODY_LEN};
use tpow_core::header::{DecodeError, HEADER_LEN};
use tpow_core::{BlockId, Header};

/// Most ids in a locator.
pub const MAX_LOCATOR: usize = 64;
/// Most blocks in one sync response.
pub const MAX_BLOCKS_PER_RESPONSE: usize = 500;
/// Hard cap on one sync request frame.
pub const MAX_REQUEST_BYTES: usize = 2 + MAX_LOCATOR * 32 + 2;
/// Hard cap on one sync response frame (sized for coinbase-only bodies with
/// plenty of headroom; raise with transactions).
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;
/// Hard cap on one gossip message.
pub const MAX_GOSSIP_BYTES: usize = HEADER_LEN + 64 * 1024;

/// Why a peer's message does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Ends early.
    #[error("message truncated")]
    Truncated,
    /// Bytes after the last field.
    #[error("trailing bytes")]
    Trailing,
    /// Unknown message tag.
    #[error("unknown request tag {0}")]
    Tag(u8),
    /// A count above its cap.
    #[error("{what} count {got} above the cap {max}")]
    TooMany {
        /// Which list.
        what: &'static str,
        /// Claimed count.
        got: usize,
        /// Cap.
        max: usize,
    },
    /// A header does not decode.
    #[error("header: {0}")]
    Header(#[from] DecodeError),
    /// A body does not decode.
    #[error("body: {0}")]
    Body(#[from] BodyError),
}

/// A sync request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetBlocks {
    /// The asker's locator, newest first.
    pub locator: Vec<BlockId>,
    /// How many blocks it wants at most.
    pub max: u16,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn end(&self) -> Result<(), WireError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(WireError::Trailing)
        }
    }
}

/// Encodes a gossip block.
pub fn encode_block(header: &Header, body: &Body) -> Vec<u8> {
    let mut out = header.encode().to_vec();
    out.extend_from_slice(&body.encode());
    out
}

/// Decodes a gossip block.
pub fn decode_block(bytes: &[u8]) -> Result<(Header, Body), WireError> {
    if bytes.len() < HEADER_LEN {
        return Err(WireError::Truncated);
    }
    if bytes.len() > MAX_GOSSIP_BYTES {
        return Err(WireError::TooMany { what: "gossip byte", got: bytes.len(), max: MAX_GOSSIP_BYTES });
    }
    let (h, b) = bytes.split_at(HEADER_LEN);
    Ok((Header::decode(h)?, Body::decode(b)?))
}

impl GetBlocks {
    /// Encodes the request (the locator is cut to [`MAX_LOCATOR`]).
    pub fn encode(&self) -> Vec<u8> {
        let ids = &self.locator[..self.locator.len().min(MAX_LOCATOR)];
        let mut out = Vec::with_capacity(4 + ids.len() * 32);
        out.push(1);
        out.push(ids.len() as u8);
        for id in ids {
            out.extend_from_slice(id);
        }
        out.extend_from_slice(&self.max.to_le_bytes());
        out
    }

    /// Decodes a request.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader(bytes);
        let tag = r.u8()?;
        if tag != 1 {
            return Err(WireError::Tag(tag));
        }
        let n = r.u8()? as usize;
        if n > MAX_LOCATOR {
            return Err(WireError::TooMany { what: "locator", got: n, max: MAX_LOCATOR });
        }
        let mut locator = Vec::with_capacity(n);
        for _ in 0..n {
            let mut id = [0u8; 32];
            id.copy_from_slice(r.take(32)?);
            locator.push(id);
        }
        let max = r.u16()?;
        r.end()?;
        Ok(GetBlocks { locator, max })
    }
}

/// Encodes a sync response from stored blocks (body already encoded).
pub fn encode_blocks(blocks: &[(Header, Vec<u8>)]) -> Vec<u8> {
    let blocks = &blocks[..blocks.len().min(MAX_BLOCKS_PER_RESPONSE)];
    let mut out = Vec::with_capacity(2 + blocks.len() * (HEADER_LEN + 64));
    out.extend_from_slice(&(blocks.len() as u16).to_le_bytes());
    for (h, b) in blocks {
        out.extend_from_slice(&h.encode());
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    }
    out
}

/// Decodes a sync response.
pub fn decode_blocks(bytes: &[u8]) -> Result<Vec<(Header, Body)>, WireError> {
    let mut r = Reader(bytes);
    let n = r.u16()? as usize;
    if n > MAX_BLOCKS_PER_RESPONSE {
        return Err(WireError::TooMany { what: "block", got: n, max: MAX_BLOCKS_PER_RESPONSE });
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let header = Header::decode(r.take(HEADER_LEN)?)?;
        let len = r.u32()? as usize;
        if len > MAX_BODY_LEN {
            return Err(WireError::TooMany { what: "body byte", got: len, max: MAX_BODY_LEN });
        }
        let body = Body::decode(r.take(len)?)?;
        out.push((header, body));
    }
    r.end()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tpow_core::chain::genesis_header;
    use tpow_core::ChainParams;

    fn block() -> (Header, Body) {
        let body = Body::coinbase_only(1, [1; 32]);
        let h = Header { height: 1, body_root: body.root(), ..genesis_header(&ChainParams::devnet()) };
        (h, body)
    }

    #[test]
    fn gossip_roundtrip_and_garbage() {
        let (h, b) = block();
        let e = encode_block(&h, &b);
        assert_eq!(decode_block(&e), Ok((h, b)));
        assert_eq!(decode_block(&e[..100]), Err(WireError::Truncated));
        assert!(decode_block(&[0xff; 245]).is_err());
        assert!(decode_block(&vec![0; MAX_GOSSIP_BYTES + 1]).is_err());
    }

    #[test]
    fn request_roundtrip_and_caps() {
        let req = GetBlocks { locator: vec![[7; 32], [8; 32]], max: 500 };
        assert_eq!(GetBlocks::decode(&req.encode()), Ok(req));
        assert_eq!(GetBlocks::decode(&[2]), Err(WireError::Tag(2)));
        assert!(matches!(GetBlocks::decode(&[1, 65]), Err(WireError::TooMany { .. })));
        assert_eq!(GetBlocks::decode(&[1, 1, 0]), Err(WireError::Truncated));
        let mut long = GetBlocks { locator: vec![], max: 1 }.encode();
        long.push(0);
        assert_eq!(GetBlocks::decode(&long), Err(WireError::Trailing));
    }

    #[test]
    fn response_roundtrip_and_caps() {
        let (h, b) = block();
        let e = encode_blocks(&[(h, b.encode())]);
        assert_eq!(decode_blocks(&e), Ok(vec![(h, b)]));
        assert_eq!(decode_blocks(&encode_blocks(&[])), Ok(vec![]));
        assert!(matches!(decode_blocks(&u16::MAX.to_le_bytes()), Err(WireError::TooMany { .. })));
        let mut huge_body = 1u16.to_le_bytes().to_vec();
        huge_body.extend_from_slice(&h.encode());
        huge_body.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode_blocks(&huge_body), Err(WireError::TooMany { .. })));
        assert_eq!(decode_blocks(&e[..e.len() - 1]), Err(WireError::Truncated));
    }
}
