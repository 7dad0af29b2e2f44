//! A fast, exact encoder for BERT-style `tokenizer.json` files: `BertNormalizer` (or none),
//! `BertPreTokenizer`, `WordPiece`.
//!
//! It gives the ids and word indices the `tokenizers` crate gives, token for token
//! (`tests/tokenizer.rs` checks it against `tokenizers` on real text and on generated Unicode), but
//! without what pretext never reads: no offsets, no alignment tables, no token strings, no
//! allocation per word. Texts that contain an added token (`[MASK]` written out, say) go to
//! `tokenizers` instead, which splits them out as it should; so does every tokenizer.json of
//! another shape.
//!
//! The normalizer's character classes come from the crates `tokenizers` itself uses
//! (`unicode_categories`, `unicode-normalization-alignments`), so the Unicode tables are the same.

use std::cell::RefCell;
use std::collections::HashMap;

use aho_corasick::AhoCorasick;
use rustc_hash::FxBuildHasher;
use serde_json::Value;
use unicode_categories::UnicodeCategories;
use unicode_normalization_alignments::UnicodeNormalization;

/// `BertNormalizer`'s switches, as in the tokenizer.json.
#[derive(Debug, Clone, Copy)]
struct BertNorm {
    clean_text: bool,
    handle_chinese_chars: bool,
    strip_accents: bool,
    lowercase: bool,
}

impl BertNorm {
    /// Step 1 of the normalizer for one character: cleaning and Chinese spacing, pushed to `out`.
    fn clean_push(&self, c: char, out: &mut String) {
        if self.clean_text {
            if c == '\0' || c == '\u{fffd}' || is_control(c) {
                return;
            }
            if is_whitespace(c) {
                out.push(' ');
                return;
            }
        }
        if self.handle_chinese_chars && is_chinese_char(c) {
            out.push(' ');
            out.push(c);
            out.push(' ');
        } else {
            out.push(c);
        }
    }

    /// Step 2 for one character of the (decomposed, when stripping accents) text.
    fn finish_push(&self, c: char, out: &mut String) {
        if self.strip_accents && c.is_mark_nonspacing() {
            return;
        }
        if self.lowercase {
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }

    /// The whole normalizer over a text, as `tokenizers` applies it: clean, space Chinese
    /// characters, decompose and drop non-spacing marks, lowercase.
    fn normalize(&self, text: &str, stage: &mut String, out: &mut String) {
        stage.clear();
        for c in text.chars() {
            self.clean_push(c, stage);
        }
        if self.strip_accents {
            // NFD runs over the whole text: canonical reordering crosses character boundaries.
            for (c, _) in stage.nfd() {
                self.finish_push(c, out);
            }
        } else {
            for c in stage.chars() {
                self.finish_push(c, out);
            }
        }
    }
}

fn is_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

fn is_control(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\r') && c.is_other()
}

fn is_chinese_char(c: char) -> bool {
    matches!(
        c as u32,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

fn is_bert_punc(c: char) -> bool {
    c.is_ascii_punctuation() || c.is_punctuation()
}

/// What one character of the normalized text does to the pre-tokenizer: whitespace separates
/// words, punctuation is a word of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Space,
    Punct,
}

impl Class {
    fn of(c: char) -> Self {
        if c.is_whitespace() {
            Class::Space
        } else if is_bert_punc(c) {
            Class::Punct
        } else {
            Class::Letter
        }
    }
}

/// A `tokenizer.json` with the BERT pipeline, compiled for speed.
pub(super) struct FastWordPiece {
    norm: Option<BertNorm>,
    /// For each ASCII byte of a text, what the normalizer makes of it (`None`: dropped).
    ascii_norm: [Option<u8>; 128],
    ascii_class: [Class; 128],
    /// Vocabulary entries, as looked up at the start of a word.
    initial: HashMap<Box<[u8]>, u32, FxBuildHasher>,
    /// Entries that begin with the continuing-subword prefix, the prefix removed.
    continuing: HashMap<Box<[u8]>, u32, FxBuildHasher>,
    max_initial: usize,
    max_continuing: usize,
    unk: u32,
    max_chars: usize,
    /// Added tokens matched in the raw text, and in the normalized text.
    added_raw: Option<AhoCorasick>,
    added_normalized: Option<AhoCorasick>,
}

/// Why a text is left to `tokenizers`.
pub(super) struct Fallback;

/// Bytes of scratch a worker keeps between texts.
const SCRATCH_KEEP: usize = 1 << 22;

thread_local! {
    static SCRATCH: RefCell<(String, String)> = const { RefCell::new((String::new(), String::new())) };
}

impl FastWordPiece {
    /// Compiles the tokenizer described by `json` (a serialized `tokenizer.json`), or `None` when
    /// its pipeline is not one this encoder reproduces exactly.
    pub(super) fn from_json(json: &Value) -> Option<Self> {
        let norm = match json.get("normalizer") {
            None | Some(Value::Null) => None,
            Some(n) if n.get("type")?.as_str()? == "BertNormalizer" => {
                let lowercase = n.get("lowercase")?.as_bool()?;
                Some(BertNorm {
                    clean_text: n.get("clean_text")?.as_bool()?,
                    handle_chinese_chars: n.get("handle_chinese_chars")?.as_bool()?,
                    strip_accents: match n.get("strip_accents") {
                        None | Some(Value::Null) => lowercase,
                        Some(v) => v.as_bool()?,
                    },
                    lowercase,
                })
            }
            Some(_) => return None,
        };
        if json.get("pre_tokenizer")?.get("type")?.as_str()? != "BertPreTokenizer" {
            return None;
        }
        let model = json.get("model")?;
        if model.get("type")?.as_str()? != "WordPiece" {
            return None;
        }
        let prefix = model.get("continuing_subword_prefix")?.as_str()?;
        let max_chars = usize::try_from(model.get("max_input_chars_per_word")?.as_u64()?).ok()?;
        let vocab = model.get("vocab")?.as_object()?;
        let unk = u32::try_from(vocab.get(model.get("unk_token")?.as_str()?)?.as_u64()?).ok()?;
        let mut initial = HashMap::with_capacity_and_hasher(vocab.len(), FxBuildHasher);
        let mut continuing = HashMap::with_capacity_and_hasher(vocab.len() / 4, FxBuildHasher);
        let (mut max_initial, mut max_continuing) = (0, 0);
        for (piece, id) in vocab {
            let id = u32::try_from(id.as_u64()?).ok()?;
            initial.insert(piece.as_bytes().into(), id);
            max_initial = max_initial.max(piece.len());
            if let Some(rest) = piece.strip_prefix(prefix).filter(|_| !prefix.is_empty()) {
                continuing.insert(rest.as_bytes().into(), id);
                max_continuing = max_continuing.max(rest.len());
            }
        }
        if prefix.is_empty() {
            // Every entry continues a word as well.
            continuing = initial.clone();
            max_continuing = max_initial;
        }

        let mut ascii_norm = [None; 128];
        let mut ascii_class = [Class::Letter; 128];
        for b in 0..128u8 {
            let c = b as char;
            ascii_norm[b as usize] = match norm {
                None => Some(b),
                Some(n) => {
                    let (mut stage, mut out) = (String::new(), String::new());
                    n.normalize(c.encode_utf8(&mut [0; 4]), &mut stage, &mut out);
                    match out.as_bytes() {
                        [] => None,
                        [x] if x.is_ascii() => Some(*x),
                        _ => return None,
                    }
                }
            };
            ascii_class[b as usize] = Class::of(c);
        }

        let mut fast = FastWordPiece {
            norm,
            ascii_norm,
            ascii_class,
            initial,
            continuing,
            max_initial,
            max_continuing,
            unk,
            max_chars,
            added_raw: None,
            added_normalized: None,
        };
        let (mut raw, mut normalized) = (Vec::new(), Vec::new());
        for t in json.get("added_tokens").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
            let content = t.get("content")?.as_str()?;
            if content.is_empty() {
                continue;
            }
            if t.get("normalized").and_then(Value::as_bool).unwrap_or(false) {
                // Matched in the normalized text, as written or as normalized: look for both.
                let (mut stage, mut out) = (String::new(), String::new());
                fast.normalize_into(content, &mut stage, &mut out);
                normalized.push(content.to_string());
                if !out.is_empty() {
                    normalized.push(out);
                }
            } else {
                raw.push(content.to_string());
            }
        }
        fast.added_raw = (!raw.is_empty()).then(|| AhoCorasick::new(&raw)).transpose().ok()?;
        fast.added_normalized = (!normalized.is_empty()).then(|| AhoCorasick::new(&normalized)).transpose().ok()?;
        Some(fast)
    }

    fn normalize_into(&self, text: &str, stage: &mut String, out: &mut String) {
        out.clear();
        match self.norm {
            None => out.push_str(text),
            Some(_) if text.is_ascii() => {
                out.extend(text.bytes().filter_map(|b| self.ascii_norm[b as usize]).map(char::from));
            }
            Some(n) => n.normalize(text, stage, out),
        }
    }

    /// Appends the ids of `text` (no special tokens added), at most `limit` of them, and their
    /// word indices when `words` is given. Leaves the text to `tokenizers` when it holds an
    /// added token.
    pub(super) fn encode(
        &self,
        text: &str,
        limit: usize,
        ids: &mut Vec<i32>,
        mut words: Option<&mut Vec<i32>>,
    ) -> Result<(), Fallback> {
        if self.added_raw.as_ref().is_some_and(|a| a.is_match(text)) {
            return Err(Fallback);
        }
        SCRATCH.with_borrow_mut(|(stage, normalized)| {
            // One huge document must not pin its size in every worker for the rest of the run.
            if normalized.capacity() > SCRATCH_KEEP {
                *stage = String::new();
                *normalized = String::new();
            }
            self.normalize_into(text, stage, normalized);
            if self.added_normalized.as_ref().is_some_and(|a| a.is_match(normalized.as_str())) {
                return Err(Fallback);
            }
            let start = ids.len();
            let words_start = words.as_ref().map_or(0, |w| w.len());
            let s = normalized.as_bytes();
            let mut word = 0i32;
            let mut i = 0;
            while i < s.len() && ids.len() - start < limit {
                // The next word: a run of letters, or one punctuation character.
                let b = s[i];
                let (len, class) = if b.is_ascii() {
                    (1, self.ascii_class[b as usize])
                } else {
                    let c = normalized[i..].chars().next().unwrap_or(' ');
                    (c.len_utf8(), Class::of(c))
                };
                let end = match class {
                    Class::Space => {
                        i += len;
                        continue;
                    }
                    Class::Punct => i + len,
                    Class::Letter => {
                        let mut j = i + len;
                        while j < s.len() {
                            let b = s[j];
                            if b.is_ascii() {
                                if self.ascii_class[b as usize] != Class::Letter {
                                    break;
                                }
                                j += 1;
                            } else {
                                let c = normalized[j..].chars().next().unwrap_or(' ');
                                if Class::of(c) != Class::Letter {
                                    break;
                                }
                                j += c.len_utf8();
                            }
                        }
                        j
                    }
                };
                let before = ids.len();
                self.word(&normalized[i..end], ids);
                if let Some(w) = words.as_deref_mut() {
                    w.extend(std::iter::repeat_n(word, ids.len() - before));
                }
                word += 1;
                i = end;
            }
            if ids.len() - start > limit {
                ids.truncate(start + limit);
                if let Some(w) = words {
                    w.truncate(words_start + limit);
                }
            }
            Ok(())
        })
    }

    /// WordPiece on one word: greedy longest match first; the whole word is unknown when any
    /// part of it has no entry.
    fn word(&self, word: &str, ids: &mut Vec<i32>) {
        let chars = if word.is_ascii() { word.len() } else { word.chars().count() };
        if chars > self.max_chars {
            ids.push(self.unk as i32);
            return;
        }
        let bytes = word.as_bytes();
        let first = ids.len();
        let mut start = 0;
        while start < bytes.len() {
            let (map, longest) =
                if start == 0 { (&self.initial, self.max_initial) } else { (&self.continuing, self.max_continuing) };
            let mut end = bytes.len().min(start + longest);
            while !word.is_char_boundary(end) {
                end -= 1;
            }
            let found = loop {
                if end <= start {
                    break None;
                }
                if let Some(&id) = map.get(&bytes[start..end]) {
                    break Some(id);
                }
                end -= 1;
                while !word.is_char_boundary(end) {
                    end -= 1;
                }
            };
            match found {
                Some(id) => {
                    ids.push(id as i32);
                    start = end;
                }
                None => {
                    ids.truncate(first);
                    ids.push(self.unk as i32);
                    return;
                }
            }
        }
    }
}
