//! The tokenizer, built from the GGUF's own metadata.
//!
//! SmolLM2 uses a GPT-2 style byte-level BPE (`tokenizer.ggml.model = "gpt2"`,
//! `tokenizer.ggml.pre = "smollm"`): digits are split one by one, then the GPT-2
//! regex splits words, numbers, punctuation and whitespace runs; every byte maps to
//! a printable character; merges apply in rank order. Control tokens
//! (`<|im_start|>`, `<|im_end|>`, `<|endoftext|>`, ...) are matched as single
//! tokens anywhere in the text. Encoding uses the `tokenizers` crate configured
//! programmatically like SmolLM2's `tokenizer.json`; decoding maps tokens straight
//! to their bytes so that a stream can be decoded token by token.

use std::collections::HashMap;

use candle_core::quantized::gguf_file;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, Tokenizer as HfTokenizer};

/// GGUF token type of control tokens.
const TOKEN_TYPE_CONTROL: i32 = 3;
/// GGUF token type of user-defined tokens (matched like specials).
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// A byte-level BPE tokenizer read from a GGUF file.
pub struct Tokenizer {
    inner: HfTokenizer,
    /// The same BPE without the added (special) tokens: text a user wrote goes
    /// through this one, so `<|im_end|>` typed in a message stays the ten
    /// characters it is and never becomes the control token (prompt injection).
    plain: HfTokenizer,
    /// Most bytes any one non-special token stands for: a text of `n` bytes is at
    /// least `n / max_token_bytes` tokens, which refuses a huge prompt unread.
    max_token_bytes: usize,
    /// The raw bytes of each token (control tokens: their text).
    bytes: Vec<Vec<u8>>,
    /// Whether each token is a control token.
    control: Vec<bool>,
    /// Whether each token is a control or user-defined token (matched as a whole
    /// by [`Tokenizer::encode`], never produced by [`Tokenizer::encode_plain`]).
    special: Vec<bool>,
    /// `tokenizer.ggml.bos_token_id`, if any.
    pub bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_id: u32,
    /// `tokenizer.ggml.padding_token_id`, if any.
    pub pad_id: Option<u32>,
    by_text: HashMap<String, u32>,
}

fn md<'a>(ct: &'a gguf_file::Content, key: &str) -> Result<&'a gguf_file::Value, String> {
    ct.metadata.get(key).ok_or_else(|| format!("metadata {key} is missing"))
}

fn md_u32(ct: &gguf_file::Content, key: &str) -> Option<u32> {
    ct.metadata.get(key).and_then(|v| v.to_u32().ok().or_else(|| v.to_i32().ok().map(|x| x as u32)))
}

/// GPT-2's byte to printable character map (bytes that are printable map to themselves).
fn bytes_to_unicode() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u32 {
        let printable =
            (b'!' as u32..=b'~' as u32).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        map[b as usize] = if printable {
            char::from_u32(b).unwrap()
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap()
        };
    }
    map
}

impl Tokenizer {
    /// Builds the tokenizer from the metadata of a GGUF file.
    pub fn from_gguf(ct: &gguf_file::Content) -> Result<Tokenizer, String> {
        let model = md(ct, "tokenizer.ggml.model")?.to_string().map_err(|e| e.to_string())?;
        if model != "gpt2" {
            return Err(format!("tokenizer model {model:?} is not supported (only gpt2 byte-level BPE)"));
        }
        if let Some(pre) = ct.metadata.get("tokenizer.ggml.pre").and_then(|v| v.to_string().ok()) {
            if pre != "smollm" {
                // Other gpt2-style pre-tokenisers differ in their regex; refuse rather than
                // tokenise subtly wrong.
                return Err(format!("pre-tokenizer {pre:?} is not supported (only smollm)"));
            }
        }
        let tokens: Vec<String> = md(ct, "tokenizer.ggml.tokens")?
            .to_vec()
            .map_err(|e| e.to_string())?
            .iter()
            .map(|v| v.to_string().cloned().map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        let types: Vec<i32> = match ct.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .map_err(|e| e.to_string())?
                .iter()
                .map(|v| v.to_i32().or_else(|_| v.to_u32().map(|x| x as i32)).map_err(|e| e.to_string()))
                .collect::<Result<_, _>>()?,
            None => vec![1; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err("token_type and tokens differ in length".into());
        }
        let merges: Vec<(String, String)> = md(ct, "tokenizer.ggml.merges")?
            .to_vec()
            .map_err(|e| e.to_string())?
            .iter()
            .map(|v| {
                let s = v.to_string().map_err(|e| e.to_string())?;
                let (a, b) = s.split_once(' ').ok_or_else(|| format!("bad merge {s:?}"))?;
                Ok((a.to_string(), b.to_string()))
            })
            .collect::<Result<_, String>>()?;

        let mut vocab = tokenizers::models::bpe::Vocab::default();
        let mut by_text = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            vocab.insert(t.clone(), i as u32);
            by_text.insert(t.clone(), i as u32);
        }
        let bpe =
            BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| format!("cannot build BPE: {e}"))?;
        let pre = || {
            PreTokenizerWrapper::Sequence(Sequence::new(vec![
                PreTokenizerWrapper::Digits(Digits::new(true)),
                PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
            ]))
        };
        let mut plain = HfTokenizer::new(bpe.clone());
        plain.with_pre_tokenizer(Some(pre()));
        let mut inner = HfTokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(pre()));
        let specials: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, &t)| t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED)
            .map(|(s, _)| AddedToken::from(s.clone(), true))
            .collect();
        let _added = inner.add_special_tokens(specials).map_err(|e| format!("cannot add special tokens: {e}"))?;

        let b2u = bytes_to_unicode();
        let mut u2b = HashMap::with_capacity(256);
        for (b, c) in b2u.iter().enumerate() {
            u2b.insert(*c, b as u8);
        }
        let control: Vec<bool> = types.iter().map(|&t| t == TOKEN_TYPE_CONTROL).collect();
        let special: Vec<bool> =
            types.iter().map(|&t| t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED).collect();
        let bytes: Vec<Vec<u8>> = tokens
            .iter()
            .zip(&types)
            .map(|(t, &ty)| {
                if ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED {
                    t.as_bytes().to_vec()
                } else {
                    // A character outside the byte map cannot occur in a byte-level
                    // vocabulary; keep its UTF-8 if it does.
                    let mut out = Vec::with_capacity(t.len());
                    for c in t.chars() {
                        match u2b.get(&c) {
                            Some(&b) => out.push(b),
                            None => out.extend_from_slice(c.to_string().as_bytes()),
                        }
                    }
                    out
                }
            })
            .collect();
        let max_token_bytes = bytes
            .iter()
            .zip(&types)
            .filter(|(_, &ty)| ty != TOKEN_TYPE_CONTROL && ty != TOKEN_TYPE_USER_DEFINED)
            .map(|(b, _)| b.len())
            .max()
            .unwrap_or(1)
            .max(1);
        Ok(Tokenizer {
            inner,
            plain,
            max_token_bytes,
            bytes,
            control,
            special,
            bos_id: md_u32(ct, "tokenizer.ggml.bos_token_id"),
            eos_id: md_u32(ct, "tokenizer.ggml.eos_token_id")
                .ok_or("metadata tokenizer.ggml.eos_token_id is missing")?,
            pad_id: md_u32(ct, "tokenizer.ggml.padding_token_id"),
            by_text,
        })
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.bytes.len()
    }

    /// Token ids of `text`; control tokens written in the text become single tokens.
    /// No BOS is added (SmolLM2's `add_bos_token` is false).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        let enc = self.inner.encode_fast(text, false).map_err(|e| format!("tokenizer: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of `text` read as plain text: special-token strings in it (`<|im_end|>`,
    /// `<|im_start|>system`) are tokenised as the characters they are. For a text
    /// without them this is exactly [`Tokenizer::encode`].
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, String> {
        let enc = self.plain.encode_fast(text, false).map_err(|e| format!("tokenizer: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Appends the plain-text ids of `text` to `out`, a piece of at most about
    /// [`PIECE_BYTES`] at a time, and stops as soon as `out` holds more than `limit`
    /// ids: a prompt far over the context costs the work of `limit` tokens, not of
    /// the whole text, and the tokenizer's scratch (offsets, alignments: tens of
    /// bytes per input byte) stays that of one piece. Returns false when it stopped
    /// early (`out` then holds more than `limit` ids, not all of them).
    ///
    /// Pieces end where a non-whitespace character is followed by whitespace: no
    /// pre-token of the GPT-2 regex spans such a point, so the ids are those of the
    /// whole text. A run of [`MAX_PIECE_BYTES`] without such a point (no natural
    /// text has one) is cut at a character boundary instead.
    pub fn encode_plain_bounded(&self, text: &str, limit: usize, out: &mut Vec<u32>) -> Result<bool, String> {
        for piece in pieces(text) {
            if out.len() > limit {
                return Ok(false);
            }
            let enc = self.plain.encode_fast(piece, false).map_err(|e| format!("tokenizer: {e}"))?;
            out.extend_from_slice(enc.get_ids());
        }
        Ok(out.len() <= limit)
    }

    /// Most bytes one non-special token stands for.
    pub fn max_token_bytes(&self) -> usize {
        self.max_token_bytes
    }

    /// The raw bytes of one token (a token may hold part of a UTF-8 character).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.bytes.get(id as usize).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether `id` is a control token (`<|im_end|>`, `<|endoftext|>`, ...).
    pub fn is_control(&self, id: u32) -> bool {
        self.control.get(id as usize).copied().unwrap_or(false)
    }

    /// Whether `id` is a control or user-defined token.
    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// The id of a token given its text (e.g. `<|im_end|>`).
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.by_text.get(text).copied()
    }

    /// The text of `ids` (control tokens included as their text); invalid UTF-8
    /// becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut out = Vec::new();
        for &id in ids {
            out.extend_from_slice(self.token_bytes(id));
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Bytes of text tokenised at once by [`Tokenizer::encode_plain_bounded`].
pub const PIECE_BYTES: usize = 4096;
/// Longest piece when no whitespace boundary comes (then cut at a character).
pub const MAX_PIECE_BYTES: usize = 16 * 1024;

/// Splits `text` into pieces of about [`PIECE_BYTES`] at points no pre-token spans.
fn pieces(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        if rest.len() <= PIECE_BYTES {
            return Some(std::mem::take(&mut rest));
        }
        // Only unambiguous characters on both sides: an ASCII letter, digit or
        // punctuation mark (never `\s` to any regex engine) before a space or newline.
        let mut cut = None;
        let mut prev_solid = false;
        for (i, c) in rest.char_indices() {
            if i >= PIECE_BYTES && prev_solid && (c == ' ' || c == '\n') {
                cut = Some(i);
                break;
            }
            if i >= MAX_PIECE_BYTES {
                cut = Some(i);
                break;
            }
            prev_solid = c.is_ascii_graphic();
        }
        let cut = cut.unwrap_or(rest.len());
        let (head, tail) = rest.split_at(cut);
        rest = tail;
        Some(head)
    })
}

/// Turns a stream of token bytes into whole UTF-8 characters.
#[derive(Default)]
pub struct Utf8Stream {
    buf: Vec<u8>,
}

impl Utf8Stream {
    /// Adds bytes and returns the whole characters now available; an incomplete
    /// character at the end stays buffered, invalid bytes become U+FFFD.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.buf.extend_from_slice(bytes);
        let mut out = String::new();
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.buf[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.buf.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.buf[start..start + valid]).unwrap());
                    start += valid;
                    match e.error_len() {
                        Some(n) => {
                            out.push('\u{FFFD}');
                            start += n;
                        }
                        None => break, // incomplete: wait for more bytes
                    }
                }
            }
        }
        self.buf.drain(..start);
        out
    }

    /// Whatever is left at the end of the stream (an incomplete character: U+FFFD).
    pub fn finish(&mut self) -> String {
        let out = if self.buf.is_empty() { String::new() } else { String::from_utf8_lossy(&self.buf).into_owned() };
        self.buf.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_stream_splits_characters() {
        let text = "aé中😀b";
        let bytes = text.as_bytes();
        let mut s = Utf8Stream::default();
        let mut out = String::new();
        for b in bytes {
            let piece = s.push(&[*b]);
            assert!(text.starts_with(&(out.clone() + &piece)));
            out.push_str(&piece);
        }
        out.push_str(&s.finish());
        assert_eq!(out, text);
    }

    #[test]
    fn utf8_stream_invalid_bytes() {
        let mut s = Utf8Stream::default();
        assert_eq!(s.push(&[b'a', 0xff, b'b']), "a\u{FFFD}b");
        assert_eq!(s.push(&[0xe4, 0xb8]), "");
        assert_eq!(s.finish(), "\u{FFFD}");
    }

    #[test]
    fn pieces_cover_the_text_at_whitespace() {
        let text = "word ".repeat(3000) + &"x".repeat(40_000) + " tail";
        let parts: Vec<&str> = pieces(&text).collect();
        assert_eq!(parts.concat(), text);
        assert!(parts.len() > 3);
        for p in &parts[..parts.len() - 1] {
            assert!(p.len() <= MAX_PIECE_BYTES + 4, "{}", p.len());
        }
        // Natural text is cut just before a space that follows a word.
        assert!(parts[0].ends_with("word") && parts[1].starts_with(' '));
        let cjk = "中文".repeat(5000);
        assert_eq!(pieces(&cjk).collect::<String>(), cjk);
        assert_eq!(pieces("").count(), 0);
    }

    #[test]
    fn byte_map_is_a_bijection() {
        let m = bytes_to_unicode();
        let set: std::collections::HashSet<char> = m.iter().copied().collect();
        assert_eq!(set.len(), 256);
        assert_eq!(m[b' ' as usize], 'Ġ');
        assert_eq!(m[b'\n' as usize], 'Ċ');
    }
}
