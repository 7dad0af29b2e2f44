//! Training a vocabulary on a sample of the source with the `tokenizers` crate's trainers.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainer};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{Error, Result};
use crate::spec::{TokenizerModel, TrainTokenizerSpec};

/// Trains a WordPiece (BERT-style, lower-cased) or byte-level BPE (RoBERTa-style) tokenizer on
/// `texts`. The result is deterministic for the same texts in the same order.
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
    let mut tok = match spec.model {
        TokenizerModel::Wordpiece => {
            let mut tok = Tokenizer::new(WordPiece::builder().unk_token("[UNK]".into()).build().map_err(fail)?);
            tok.with_normalizer(Some(BertNormalizer::new(true, true, None, true))).map_err(fail)?;
            tok.with_pre_tokenizer(Some(BertPreTokenizer));
            tok.with_decoder(Some(WordPieceDecoder::default()));
            let mut trainer = TrainerWrapper::WordPieceTrainer(
                WordPieceTrainer::builder()
                    .vocab_size(spec.vocab_size as usize)
                    .min_frequency(spec.min_frequency)
                    .special_tokens(added.clone())
                    .show_progress(false)
                    .build(),
            );
            tok.train(&mut trainer, texts.iter()).map_err(fail)?;
            tok
        }
        TokenizerModel::Bpe => {
            let mut tok = Tokenizer::new(BPE::default());
            tok.with_pre_tokenizer(Some(ByteLevel::default()));
            tok.with_decoder(Some(ByteLevelDecoder::default()));
            let mut trainer = TrainerWrapper::BpeTrainer(
                BpeTrainer::builder()
                    .vocab_size(spec.vocab_size as usize)
                    .min_frequency(spec.min_frequency)
                    .special_tokens(added.clone())
                    .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
                    .show_progress(false)
                    .build(),
            );
            tok.train(&mut trainer, texts.iter()).map_err(fail)?;
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
