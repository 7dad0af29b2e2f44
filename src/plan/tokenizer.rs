//! The tokenizer a pipeline asks for: a `tokenizer.json`, the built-in byte vocabulary, or a
//! vocabulary trained on a sample of the sources (saved with the run or the export, and read
//! back on `--resume`).

use std::path::PathBuf;

use arrow::array::AsArray;
use futures::StreamExt;

use super::BuildOptions;
use crate::error::{Error, Result, SpecErrors};
use crate::source::{ScanOptions, Shard, Source};
use crate::spec::{Format, Pipeline, TokenizerSpec};
use crate::tokenize::{train_tokenizer, TextTokenizer};

/// The tokenizer `pipeline` asks for: a file, the byte vocabulary, or one trained on a sample
/// of `sources` (saved into `opts.tokenizer_dir`, or read back from it on resume); and the file
/// it lives in.
pub(super) async fn build(
    pipeline: &Pipeline,
    sources: &[Source],
    weights: &[f64],
    opts: &BuildOptions,
) -> Result<(TextTokenizer, Option<PathBuf>)> {
    let source = &sources[0];
    match &pipeline.spec.tokenizer {
        TokenizerSpec::Bytes(_) => Ok((TextTokenizer::bytes(), None)),
        TokenizerSpec::File(f) => {
            let path = pipeline.resolve_path(f);
            if !path.is_file() {
                return Err(Error::Spec(SpecErrors(vec![pipeline.error_at(
                    &["tokenizer", "file"],
                    format!("tokenizer file `{f}` does not exist (resolved to `{}`)", path.display()),
                    Some("paths are relative to the pipeline file; or use `tokenizer: { bytes: {} }`".into()),
                )])));
            }
            let tok = TextTokenizer::from_file(&path).map_err(|e| match e {
                Error::Data { message, hint } => {
                    Error::Spec(SpecErrors(vec![pipeline.error_at(&["tokenizer", "file"], message, hint)]))
                }
                other => other,
            })?;
            Ok((tok, Some(path)))
        }
        TokenizerSpec::Train(_) if opts.check_only => Ok((TextTokenizer::bytes(), None)),
        TokenizerSpec::Train(_) if source.format == Format::Pretext => {
            // An export saves the tokenizer it trained beside its parts.
            let p = source.root.join("tokenizer.json");
            if !p.is_file() {
                return Err(Error::Spec(SpecErrors(vec![pipeline.error_at(
                    &["tokenizer"],
                    format!("`format: pretext` with a trained tokenizer needs `{}`, which does not exist", p.display()),
                    Some("point `tokenizer: { file: … }` at the tokenizer.json the examples were made with".into()),
                )])));
            }
            Ok((TextTokenizer::from_file(&p)?, Some(p)))
        }
        TokenizerSpec::Train(t) => {
            let saved = opts.tokenizer_dir.as_ref().map(|d| d.join("tokenizer.json"));
            let describe = |tok: &tokenizers::Tokenizer| {
                format!("trained {:?} ({} ids)", t.model, tok.get_vocab_size(true)).to_lowercase()
            };
            if let Some(p) = saved.as_ref().filter(|p| opts.reuse_tokenizer && p.is_file()) {
                let mut tok = TextTokenizer::from_file(p)?;
                tok.description = tok.hf().map(describe).unwrap_or_default();
                return Ok((tok, Some(p.clone())));
            }
            // A mixture trains on each source's share of the sample.
            let mut texts = Vec::new();
            for (s, w) in sources.iter().zip(weights) {
                let n = ((t.sample_rows as f64) * w).ceil() as usize;
                texts.extend(sample_texts(s, n).await?);
            }
            let tok = tokio::task::spawn_blocking({
                let t = t.clone();
                move || train_tokenizer(&t, &texts)
            })
            .await
            .map_err(|e| Error::internal(format!("tokenizer training stopped: {e}")))??;
            let bytes = tok.to_string(false).map_err(|e| Error::internal(format!("serializing the tokenizer: {e}")))?;
            let hash = crate::ground::identity::hash_hex(bytes.as_bytes());
            if let Some(p) = &saved {
                crate::ground::durable::write_atomic(p, bytes.as_bytes())?;
            }
            let desc = describe(&tok);
            Ok((TextTokenizer::from_hf(tok, desc, Some(hash)), saved))
        }
    }
}

/// The first `n` texts of the whole source, in scan order.
pub async fn sample_texts(source: &Source, n: usize) -> Result<Vec<String>> {
    // A copy with its own counters, so sampling does not count as reading.
    let mut sampler = source.clone();
    sampler.stats = Default::default();
    let mut docs = sampler.scan(Shard::WHOLE, ScanOptions::default());
    let mut out = Vec::new();
    while out.len() < n {
        let Some(batch) = docs.next().await else { break };
        let batch = batch?;
        let text = batch.column(1).as_string_view();
        out.extend(text.iter().flatten().take(n - out.len()).map(str::to_string));
    }
    Ok(out)
}
