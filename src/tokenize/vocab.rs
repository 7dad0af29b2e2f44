//! Training a vocabulary on a sample of the source with the `tokenizers` crate's trainers.

use std::collections::BTreeMap;

use ahash::AHashMap;
use compact_str::CompactString;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{
    AddedToken, NormalizedString, Normalizer, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer,
    Tokenizer,
};

use crate::error::{Error, Result};
use crate::spec::{TokenizerModel, TrainTokenizerSpec};

/// Trains a WordPiece (BERT-style, lower-cased) or byte-level BPE (RoBERTa-style) tokenizer on
/// `texts`. The same texts in the same order give the same `tokenizer.json`, byte for byte.
///
/// `Tokenizer::train` would not: its trainer counts words into a map with a per-process random
/// hasher and numbers the `##` pieces in that map's order, and the merges break ties between
/// equal counts by those numbers. So this counts the words itself, then hands the trainer a map
/// with a fixed hasher filled in sorted order (`BpeTrainer::do_train`); a WordPiece vocabulary
/// is a BPE one trained with the `##` prefix, as `WordPieceTrainer` does it.
pub fn train_tokenizer(spec: &TrainTokenizerSpec, texts: &[String]) -> Result<Tokenizer> {
    if texts.is_empty() {
        return Err(Error::data_hint(
            "cannot train a tokenizer: the source has no text rows",
            "check `source.path` and `source.sql`, or use `tokenizer: { bytes: {} }`",
        ));
    }
    let fail = |e: tokenizers::Error| {
        Error::data_hint(
            format!("training the tokenizer failed: {e}"),
            "check `tokenizer.train` (vocab_size, min_frequency) and the sample texts",
        )
    };
    let (specials, template): (Vec<&str>, &str) = match spec.model {
        TokenizerModel::Wordpiece => (vec!["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], "[CLS] $A [SEP]"),
        TokenizerModel::Bpe => (vec!["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "<s> $A </s>"),
    };
    let added: Vec<AddedToken> = specials.iter().map(|s| AddedToken::from(s.to_string(), true)).collect();
    let trainer = BpeTrainer::builder()
        .vocab_size(spec.vocab_size as usize)
        .min_frequency(spec.min_frequency)
        .special_tokens(added.clone())
        .show_progress(false);
    let mut bpe = BPE::default();
    let mut tok = match spec.model {
        TokenizerModel::Wordpiece => {
            let mut tok = Tokenizer::new(WordPiece::default());
            tok.with_normalizer(Some(BertNormalizer::new(true, true, None, true))).map_err(fail)?;
            tok.with_pre_tokenizer(Some(BertPreTokenizer));
            tok.with_decoder(Some(WordPieceDecoder::default()));
            let trainer = trainer.continuing_subword_prefix("##".into()).build();
            trainer.do_train(&word_counts(&tok, texts).map_err(fail)?, &mut bpe).map_err(fail)?;
            let model = WordPiece::builder()
                .vocab(bpe.get_vocab().into_iter().collect::<AHashMap<_, _>>())
                .unk_token("[UNK]".into())
                .continuing_subword_prefix("##".into())
                .build()
                .map_err(fail)?;
            tok.with_model(model);
            tok
        }
        TokenizerModel::Bpe => {
            let mut tok = Tokenizer::new(BPE::default());
            tok.with_pre_tokenizer(Some(ByteLevel::default()));
            tok.with_decoder(Some(ByteLevelDecoder::default()));
            let trainer = trainer.initial_alphabet(ByteLevel::alphabet().into_iter().collect()).build();
            trainer.do_train(&word_counts(&tok, texts).map_err(fail)?, &mut bpe).map_err(fail)?;
            tok.with_model(bpe);
            tok
        }
    };
    tok.add_special_tokens(added.clone()).map_err(fail)?;
    let ids: Vec<(String, u32)> = specials
        .iter()
        .filter(|s| template.contains(*s))
        .map(|s| {
            tok.token_to_id(s)
                .map(|id| (s.to_string(), id))
                .ok_or_else(|| Error::internal(format!("trained vocabulary lacks {s}")))
        })
        .collect::<Result<_>>()?;
    let post = TemplateProcessing::builder()
        .try_single(template)
        .map_err(|e| Error::internal(format!("template: {e}")))?
        .special_tokens(ids)
        .build()
        .map_err(|e| Error::internal(format!("template: {e}")))?;
    tok.with_post_processor(Some(post));
    Ok(tok)
}

/// How often each word of `texts` occurs after `tok`'s normalizer and pre-tokenizer (what
/// `Tokenizer::train` feeds its trainer), counted on all cores, in a map whose iteration order
/// depends only on the words.
fn word_counts(tok: &Tokenizer, texts: &[String]) -> tokenizers::Result<AHashMap<CompactString, u64>> {
    let count = |chunk: &[String]| -> tokenizers::Result<AHashMap<CompactString, u64>> {
        let mut counts = AHashMap::new();
        for text in chunk {
            let mut normalized = NormalizedString::from(text.as_str());
            if let Some(n) = tok.get_normalizer() {
                n.normalize(&mut normalized)?;
            }
            let mut pre = PreTokenizedString::from(normalized);
            if let Some(p) = tok.get_pre_tokenizer() {
                p.pre_tokenize(&mut pre)?;
            }
            for (word, _, _) in pre.get_splits(OffsetReferential::Original, OffsetType::Byte) {
                *counts.entry(CompactString::from(word)).or_default() += 1;
            }
        }
        Ok(counts)
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = texts.len().div_ceil(threads).max(1);
    let parts = std::thread::scope(|s| {
        let handles: Vec<_> = texts.chunks(chunk).map(|c| s.spawn(move || count(c))).collect();
        handles.into_iter().map(|h| h.join().expect("word counting does not panic")).collect::<Vec<_>>()
    });
    let mut sorted = BTreeMap::new();
    for part in parts {
        for (word, n) in part? {
            *sorted.entry(word).or_insert(0) += n;
        }
    }
    // Fixed seeds: the map's order is a function of its keys, the same in every process.
    let mut counts = AHashMap::with_capacity_and_hasher(sorted.len(), ahash::RandomState::with_seeds(1, 2, 3, 4));
    counts.extend(sorted);
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Texts with many ties between piece counts, the case where the trainer's choice depends
    /// on the ids it gave the pieces.
    fn texts() -> Vec<String> {
        let words = ["absorbs", "crosses", "predicts", "cools", "emits", "decays", "orbit", "enzyme", "signal"];
        (0..400).map(|i| (0..12).map(|j| words[(i * 7 + j * 3) % words.len()]).collect::<Vec<_>>().join(" ")).collect()
    }

    #[test]
    fn training_twice_gives_the_same_tokenizer_byte_for_byte() {
        for model in [TokenizerModel::Wordpiece, TokenizerModel::Bpe] {
            let spec = TrainTokenizerSpec { model, vocab_size: 300, sample_rows: 400, min_frequency: 2 };
            let json = |_| train_tokenizer(&spec, &texts()).unwrap().to_string(false).unwrap();
            let first = json(0);
            for run in 1..4 {
                assert_eq!(first, json(run), "{model:?}: training run {run} differs from the first");
            }
        }
    }
}
