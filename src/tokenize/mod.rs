//! Text → token ids. One [`TextTokenizer`] wraps either a HuggingFace `tokenizer.json` (through the
//! `tokenizers` crate) or the built-in byte vocabulary, and knows its special tokens.

pub mod batch;
mod vocab;
mod wordpiece;

use std::path::Path;
use std::sync::Arc;

use tokenizers::{PostProcessor, Token, TruncationDirection};

use crate::error::{Error, Result};
pub use vocab::train_tokenizer;

/// Ids of the special tokens pretext needs (those the tokenizer has).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Specials {
    pub pad: Option<u32>,
    pub unk: Option<u32>,
    pub cls: Option<u32>,
    pub sep: Option<u32>,
    pub mask: Option<u32>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
}

/// Number of byte ids in the built-in vocabulary; special tokens follow them.
pub const BYTE_VOCAB: u32 = 256;
const BYTE_SPECIALS: [&str; 7] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[BOS]", "[EOS]"];
/// Sentinels of the byte vocabulary for span corruption: `<extra_id_0>` is the top id, counting
/// down, as in T5's vocabulary.
pub const BYTE_SENTINELS: u32 = 100;

/// What special tokens a document gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// The tokenizer's own template (`[CLS] … [SEP]`); packed documents without one get a
    /// separator appended.
    Template,
    /// No template; the document ends with EOS (causal LM, T5).
    Eos,
}

#[derive(Clone)]
enum Backend {
    Bytes,
    Hf(Arc<tokenizers::Tokenizer>),
}

/// Token ids of one document, appended to reusable buffers (no allocation per token).
#[derive(Debug, Default, Clone)]
pub struct Encoded {
    pub ids: Vec<i32>,
    /// 1 for special tokens (added by the post-processor or listed as special), 0 otherwise.
    pub special: Vec<i8>,
    /// Word index inside the document (−1 for special tokens); only filled when asked for.
    pub words: Vec<i32>,
}

impl Encoded {
    #[cfg(any(test, feature = "internals"))]
    pub fn clear(&mut self) {
        self.ids.clear();
        self.special.clear();
        self.words.clear();
    }
}

/// The fast encoder of a BERT-style tokenizer.json, and the special tokens its template puts
/// around one document (id, special flag).
struct Fast {
    encoder: wordpiece::FastWordPiece,
    prefix: Vec<(i32, i8)>,
    suffix: Vec<(i32, i8)>,
}

/// A tokenizer with its special tokens resolved. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct TextTokenizer {
    backend: Backend,
    /// Set when the tokenizer.json is one [`wordpiece::FastWordPiece`] reproduces exactly.
    fast: Option<Arc<Fast>>,
    pub specials: Specials,
    /// Ids that are special (never masked, never drawn as random replacements), sorted.
    pub special_ids: Vec<u32>,
    pub vocab_size: u32,
    /// Human-readable description for the manifest and messages.
    pub description: String,
    /// xxh3 of the tokenizer.json bytes (`None` for the built-in vocabulary).
    pub file_hash: Option<String>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("description", &self.description)
            .field("vocab_size", &self.vocab_size)
            .finish()
    }
}

impl TextTokenizer {
    /// The built-in byte-level vocabulary: ids 0–255 are bytes, then
    /// `[PAD] [UNK] [CLS] [SEP] [MASK] [BOS] [EOS]` (256–262), then 100 sentinels
    /// (`<extra_id_99>` = 263 … `<extra_id_0>` = 362).
    pub fn bytes() -> Self {
        let id = |name: &str| BYTE_SPECIALS.iter().position(|s| *s == name).map(|i| BYTE_VOCAB + i as u32);
        TextTokenizer {
            backend: Backend::Bytes,
            fast: None,
            specials: Specials {
                pad: id("[PAD]"),
                unk: id("[UNK]"),
                cls: id("[CLS]"),
                sep: id("[SEP]"),
                mask: id("[MASK]"),
                bos: id("[BOS]"),
                eos: id("[EOS]"),
            },
            special_ids: (BYTE_VOCAB..BYTE_VOCAB + BYTE_SPECIALS.len() as u32 + BYTE_SENTINELS).collect(),
            vocab_size: BYTE_VOCAB + BYTE_SPECIALS.len() as u32 + BYTE_SENTINELS,
            description: "bytes (256 byte ids + 7 special tokens + 100 sentinels)".into(),
            file_hash: None,
        }
    }

    /// Loads a HuggingFace `tokenizer.json`. Its padding and truncation settings are dropped:
    /// pretext owns sequence lengths.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| {
            Error::env_hint(
                format!("cannot read tokenizer `{}`: {e}", path.display()),
                "point `tokenizer.file` at a HuggingFace tokenizer.json, or use `tokenizer: { bytes: {} }`",
            )
        })?;
        let tok = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| {
            Error::data_hint(
                format!("`{}` is not a HuggingFace tokenizer.json: {e}", path.display()),
                "save one with `tokenizer.save(\"tokenizer.json\")` in Python (`tokenizers` or `transformers`), or use `tokenizer: { bytes: {} }`",
            )
        })?;
        let hash = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes));
        Ok(Self::wrap(tok, format!("file {}", path.display()), Some(hash), Some(&bytes)))
    }

    /// Wraps an in-memory HuggingFace tokenizer.
    pub fn from_hf(tok: tokenizers::Tokenizer, description: String, file_hash: Option<String>) -> Self {
        Self::wrap(tok, description, file_hash, None)
    }

    /// Wraps `tok`; `json` is the tokenizer.json it was read from, when there is one (the fast
    /// encoder is compiled from it instead of from `tok` serialized again).
    fn wrap(
        mut tok: tokenizers::Tokenizer,
        description: String,
        file_hash: Option<String>,
        json: Option<&[u8]>,
    ) -> Self {
        let _ = tok.with_truncation(None);
        tok.with_padding(None);
        let added = tok.get_added_tokens_decoder();
        let mut special_ids: Vec<u32> = added.iter().filter(|(_, t)| t.special).map(|(id, _)| *id).collect();
        special_ids.sort_unstable();
        let find = |names: &[&str]| names.iter().find_map(|n| tok.token_to_id(n));
        let specials = Specials {
            pad: find(&["[PAD]", "<pad>", "<|pad|>", "<|padding|>"]),
            unk: find(&["[UNK]", "<unk>", "<|unk|>"]),
            cls: find(&["[CLS]", "<s>", "<|startoftext|>"]),
            sep: find(&["[SEP]", "</s>", "<|endoftext|>"]),
            mask: find(&["[MASK]", "<mask>", "<MASK>", "<|mask|>"]),
            bos: find(&["[BOS]", "<s>", "<|begin_of_text|>", "<|startoftext|>", "<bos>"]),
            eos: find(&["[EOS]", "</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>"]),
        };
        for id in
            [specials.pad, specials.cls, specials.sep, specials.mask, specials.bos, specials.eos].into_iter().flatten()
        {
            if let Err(i) = special_ids.binary_search(&id) {
                special_ids.insert(i, id);
            }
        }
        let vocab_size = tok.get_vocab_size(true) as u32;
        let mut t = TextTokenizer {
            backend: Backend::Hf(Arc::new(tok)),
            fast: None,
            specials,
            special_ids,
            vocab_size,
            description,
            file_hash,
        };
        if std::env::var_os("PRETEXT_REFERENCE_TOKENIZER").is_none_or(|v| v.is_empty() || v == "0") {
            // A file that leaves out fields with defaults compiles from `tok` serialized in full.
            t.fast = json.and_then(|j| t.compile_fast(Some(j))).or_else(|| t.compile_fast(None)).map(Arc::new);
        }
        t
    }

    /// Builds the fast encoder when the tokenizer.json has the BERT shape and a template of
    /// special tokens around a single sequence.
    fn compile_fast(&self, json: Option<&[u8]>) -> Option<Fast> {
        let tok = self.hf()?;
        let json: serde_json::Value = match json {
            Some(bytes) => serde_json::from_slice(bytes).ok()?,
            None => serde_json::from_str(&tok.to_string(false).ok()?).ok()?,
        };
        let encoder = wordpiece::FastWordPiece::from_json(&json)?;
        // What the post-processor puts around one sequence, read off a probe token.
        const PROBE: u32 = u32::MAX - 7;
        let probe = tokenizers::Encoding::from_tokens(vec![Token::new(PROBE, "x".into(), (0, 1))], 0);
        let framed = tok.post_process(probe, None, true).ok()?;
        let ids = framed.get_ids();
        let at = ids.iter().position(|&i| i == PROBE)?;
        if ids.iter().filter(|&&i| i == PROBE).count() != 1 {
            return None;
        }
        let added = tok.get_post_processor().map(|p| p.added_tokens(false)).unwrap_or(0);
        if added != ids.len() - 1 {
            return None;
        }
        let mask = framed.get_special_tokens_mask();
        let flagged = |k: usize| (i32::try_from(ids[k]).ok(), (mask[k] != 0 || self.is_special(ids[k])) as i8);
        let side = |r: std::ops::Range<usize>| -> Option<Vec<(i32, i8)>> {
            r.map(flagged).map(|(id, s)| id.map(|id| (id, s))).collect()
        };
        Some(Fast { encoder, prefix: side(0..at)?, suffix: side(at + 1..ids.len())? })
    }

    /// The same tokenizer without the fast encoder: every text goes through `tokenizers`. The
    /// ids are the same; this is for checking that they are (and for bisecting a suspected
    /// difference: `PRETEXT_REFERENCE_TOKENIZER=1` does the same for a whole run).
    #[cfg(any(test, feature = "internals"))]
    pub fn reference(&self) -> Self {
        TextTokenizer { fast: None, ..self.clone() }
    }

    /// Whether texts go through pretext's own encoder (ids identical to `tokenizers`).
    #[cfg(any(test, feature = "internals"))]
    pub fn is_fast(&self) -> bool {
        self.fast.is_some()
    }

    /// The HuggingFace tokenizer inside, when there is one.
    pub fn hf(&self) -> Option<&tokenizers::Tokenizer> {
        match &self.backend {
            Backend::Hf(t) => Some(t),
            Backend::Bytes => None,
        }
    }

    pub fn is_special(&self, id: u32) -> bool {
        self.special_ids.binary_search(&id).is_ok()
    }

    /// Appends the tokens of `text` (with the tokenizer's special tokens, e.g. `[CLS] … [SEP]`),
    /// truncated to `max_len` tokens in total when given. Word indices are filled when `words`.
    #[cfg(any(test, feature = "internals"))]
    pub fn encode_into(&self, text: &str, max_len: Option<usize>, words: bool, out: &mut Encoded) -> Result<()> {
        self.encode_framed(text, Framing::Template, max_len, words, out)
    }

    /// Appends the tokens of `text` with the document's framing chosen: the tokenizer's template, or
    /// plain tokens closed by EOS (which must exist: checked when the plan is built).
    pub fn encode_framed(
        &self,
        text: &str,
        framing: Framing,
        max_len: Option<usize>,
        words: bool,
        out: &mut Encoded,
    ) -> Result<()> {
        if let Some(fast) = &self.fast {
            if self.encode_fast(fast, text, framing, max_len, words, out)? {
                return Ok(());
            }
        }
        if framing == Framing::Eos {
            let eos = self.eos()?;
            let start = out.ids.len();
            match &self.backend {
                Backend::Bytes => {
                    let room = max_len.map(|m| m.saturating_sub(1)).unwrap_or(usize::MAX);
                    let body = &text.as_bytes()[..text.len().min(room)];
                    out.ids.extend(body.iter().map(|&b| b as i32));
                    out.special.extend(std::iter::repeat_n(0, body.len()));
                    if words {
                        out.words.extend(std::iter::repeat_n(-1, body.len()));
                    }
                }
                Backend::Hf(tok) => {
                    let mut enc = hf_encode(tok, text, false, words)
                        .map_err(|e| Error::data(format!("tokenizer failed on a text: {e}")))?;
                    if let Some(max) = max_len {
                        enc.truncate(max.saturating_sub(1), 0, TruncationDirection::Right);
                    }
                    let ids = enc.get_ids();
                    out.ids.extend(ids.iter().map(|&i| i as i32));
                    out.special.extend(ids.iter().map(|&id| self.is_special(id) as i8));
                    if words {
                        out.words.extend(enc.get_word_ids().iter().map(|w| w.map(|w| w as i32).unwrap_or(-1)));
                    }
                }
            }
            if out.ids.len() > start {
                push_special(out, eos, words);
            }
            return Ok(());
        }
        match &self.backend {
            Backend::Bytes => {
                let (cls, sep) = (self.specials.cls, self.specials.sep);
                let room = max_len.map(|m| m.saturating_sub(2)).unwrap_or(usize::MAX);
                let body = &text.as_bytes()[..text.len().min(room)];
                if let Some(c) = cls {
                    push_special(out, c, words);
                }
                out.ids.extend(body.iter().map(|&b| b as i32));
                out.special.extend(std::iter::repeat_n(0, body.len()));
                if words {
                    // Words are runs of non-whitespace bytes; whitespace belongs to no word.
                    let mut word = -1i32;
                    let mut prev_space = true;
                    for &b in body {
                        let space = b.is_ascii_whitespace();
                        if !space && prev_space {
                            word += 1;
                        }
                        out.words.push(if space { -1 } else { word });
                        prev_space = space;
                    }
                }
                if let Some(s) = sep {
                    push_special(out, s, words);
                }
                Ok(())
            }
            Backend::Hf(tok) => {
                let enc = match max_len {
                    None => hf_encode(tok, text, true, words),
                    Some(max) => hf_encode(tok, text, false, words).and_then(|mut enc| {
                        let added = tok.get_post_processor().map(|p| p.added_tokens(false)).unwrap_or(0);
                        enc.truncate(max.saturating_sub(added), 0, TruncationDirection::Right);
                        tok.post_process(enc, None, true)
                    }),
                }
                .map_err(|e| Error::data(format!("tokenizer failed on a text: {e}")))?;
                let start = out.ids.len();
                let ids = enc.get_ids();
                out.ids.extend(ids.iter().map(|&i| i as i32));
                let specials = enc.get_special_tokens_mask();
                out.special.extend(ids.iter().zip(specials).map(|(&id, &s)| (s != 0 || self.is_special(id)) as i8));
                if words {
                    out.words.extend(enc.get_word_ids().iter().map(|w| w.map(|w| w as i32).unwrap_or(-1)));
                }
                if max_len.is_none() {
                    self.close_packed(out, start, words);
                }
                Ok(())
            }
        }
    }

    /// The token that closes a document under [`Framing::Eos`].
    fn eos(&self) -> Result<u32> {
        self.specials.eos.or(self.specials.sep).ok_or_else(|| Error::internal("EOS checked at plan time"))
    }

    /// Packed documents need a boundary: a tokenizer.json without a post-processor adds none, so
    /// a document (from `start` in `out`) not ending in a special token gets its separator (or
    /// end-of-text) token.
    fn close_packed(&self, out: &mut Encoded, start: usize, words: bool) {
        if out.ids.len() > start && out.special.last() == Some(&0) {
            if let Some(sep) = self.specials.sep.or(self.specials.eos) {
                push_special(out, sep, words);
            }
        }
    }

    /// [`Self::encode_framed`] through the fast encoder. `false` (and `out` unchanged) when the
    /// text must go through `tokenizers`.
    fn encode_fast(
        &self,
        fast: &Fast,
        text: &str,
        framing: Framing,
        max_len: Option<usize>,
        words: bool,
        out: &mut Encoded,
    ) -> Result<bool> {
        let (start, words_start) = (out.ids.len(), out.words.len());
        let frame = |out: &mut Encoded, side: &[(i32, i8)]| {
            out.ids.extend(side.iter().map(|t| t.0));
            out.special.extend(side.iter().map(|t| t.1));
            if words {
                out.words.extend(std::iter::repeat_n(-1, side.len()));
            }
        };
        let (prefix, suffix): (&[_], &[_]) = match framing {
            Framing::Template => (&fast.prefix, &fast.suffix),
            Framing::Eos => (&[], &[]),
        };
        let added = match framing {
            Framing::Template => prefix.len() + suffix.len(),
            Framing::Eos => 1,
        };
        let limit = max_len.map_or(usize::MAX, |m| m.saturating_sub(added));
        frame(out, prefix);
        let body = out.ids.len();
        let word_ids = if words { Some(&mut out.words) } else { None };
        if fast.encoder.encode(text, limit, &mut out.ids, word_ids).is_err() {
            out.ids.truncate(start);
            out.special.truncate(start);
            out.words.truncate(words_start);
            return Ok(false);
        }
        for k in body..out.ids.len() {
            out.special.push(self.is_special(out.ids[k] as u32) as i8);
        }
        match framing {
            Framing::Eos => {
                if out.ids.len() > start {
                    push_special(out, self.eos()?, words);
                }
            }
            Framing::Template => {
                frame(out, suffix);
                if max_len.is_none() {
                    self.close_packed(out, start, words);
                }
            }
        }
        Ok(true)
    }

    /// Decodes ids to text, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> String {
        match &self.backend {
            Backend::Bytes => {
                let mut out = String::new();
                let mut bytes = Vec::new();
                for &id in ids {
                    if id < BYTE_VOCAB {
                        bytes.push(id as u8);
                    } else {
                        out.push_str(&String::from_utf8_lossy(&bytes));
                        bytes.clear();
                        out.push_str(&self.token(id));
                    }
                }
                out.push_str(&String::from_utf8_lossy(&bytes));
                out
            }
            Backend::Hf(tok) => tok
                .decode(ids, false)
                .unwrap_or_else(|_| ids.iter().map(|&i| self.token(i)).collect::<Vec<_>>().join(" ")),
        }
    }

    /// The vocabulary entry of one id.
    pub fn token(&self, id: u32) -> String {
        match &self.backend {
            Backend::Bytes if id < BYTE_VOCAB => {
                let b = id as u8;
                if b.is_ascii_graphic() || b == b' ' {
                    (b as char).to_string()
                } else {
                    format!("<0x{b:02X}>")
                }
            }
            Backend::Bytes => match BYTE_SPECIALS.get((id - BYTE_VOCAB) as usize) {
                Some(s) => s.to_string(),
                None if id < self.vocab_size => format!("<extra_id_{}>", self.vocab_size - 1 - id),
                None => format!("<{id}>"),
            },
            Backend::Hf(tok) => tok.id_to_token(id).unwrap_or_else(|| format!("<{id}>")),
        }
    }

    /// Span-corruption sentinels in order of use (`<extra_id_0>`, `<extra_id_1>`, …).
    pub fn sentinels(&self) -> Vec<i32> {
        match &self.backend {
            Backend::Bytes => (0..BYTE_SENTINELS).map(|k| (self.vocab_size - 1 - k) as i32).collect(),
            Backend::Hf(tok) => {
                (0..).map_while(|k| tok.token_to_id(&format!("<extra_id_{k}>"))).map(|i| i as i32).collect()
            }
        }
    }

    /// `v[id]`: the token ends a sentence (its text ends with `.`, `!` or `?`).
    pub fn sentence_ends(&self) -> Vec<bool> {
        (0..self.vocab_size).map(|id| !self.is_special(id) && self.token(id).ends_with(['.', '!', '?'])).collect()
    }

    /// Ids a random replacement may take: every non-special id.
    pub fn replacement_pool(&self) -> Vec<i32> {
        (0..self.vocab_size).filter(|&i| !self.is_special(i)).map(|i| i as i32).collect()
    }
}

/// `tokenizers`' encoding of one text. Its `encode_fast` skips offsets and, with them, word
/// indices (every token gets none), so whole-word masking needs the full `encode`.
fn hf_encode(
    tok: &tokenizers::Tokenizer,
    text: &str,
    add_special_tokens: bool,
    words: bool,
) -> tokenizers::Result<tokenizers::Encoding> {
    if words {
        tok.encode(text, add_special_tokens)
    } else {
        tok.encode_fast(text, add_special_tokens)
    }
}

fn push_special(out: &mut Encoded, id: u32, words: bool) {
    out.ids.push(id as i32);
    out.special.push(1);
    if words {
        out.words.push(-1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_add_cls_sep_and_word_ids() {
        let t = TextTokenizer::bytes();
        let mut out = Encoded::default();
        t.encode_into("ab c", None, true, &mut out).unwrap();
        assert_eq!(out.ids, vec![258, 97, 98, 32, 99, 259]);
        assert_eq!(out.special, vec![1, 0, 0, 0, 0, 1]);
        assert_eq!(out.words, vec![-1, 0, 0, -1, 1, -1]);
        assert_eq!(t.decode(&[258, 97, 259]), "[CLS]a[SEP]");
    }

    #[test]
    fn bytes_truncate_keeps_specials() {
        let t = TextTokenizer::bytes();
        let mut out = Encoded::default();
        t.encode_into("abcdef", Some(4), false, &mut out).unwrap();
        assert_eq!(out.ids, vec![258, 97, 98, 259]);
    }
}
