//! BART-style denoising (Lewis et al. 2020; fairseq `DenoisingDataset`): the document (truncated
//! to `seq_len` with its special tokens) is corrupted by, in order, sentence permutation, text
//! infilling (span lengths ~ Poisson(λ), each span replaced by one mask token, a zero-length span
//! inserts one, until `mask_ratio` of the tokens are covered) and token deletion (p); `labels` are
//! the original tokens (−100 at padding), `input_ids` the corrupted ones with `attention_mask`.

use std::sync::Arc;

use arrow::array::{RecordBatch, UInt64Array};
use arrow::datatypes::SchemaRef;
use rand::seq::SliceRandom;
use rand::Rng;
use rand_distr::{Distribution, Poisson};

use super::{fixed_list, framed_rows, key_and_lists, push_padded, Task, TaskContext};
use crate::error::{Error, Result};
use crate::task::mlm::IGNORE;

/// The denoising objective, configured.
#[derive(Debug, Clone)]
pub struct Denoise {
    pub seq_len: usize,
    mask_ratio: f64,
    poisson: Option<Poisson<f64>>,
    delete: f64,
    permute_sentences: bool,
    mask_id: i32,
    pad: i32,
    /// `sentence_end[id]`: the token ends a sentence (`.`, `!`, `?`).
    sentence_end: Arc<Vec<bool>>,
    schema: SchemaRef,
}

/// Schema: `example_key`, then `input_ids`, `labels`, `attention_mask` of `seq_len`.
pub fn output_schema(seq_len: usize) -> SchemaRef {
    key_and_lists(seq_len, &["input_ids", "labels", "attention_mask"])
}

impl Denoise {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        seq_len: usize,
        mask_ratio: f64,
        lambda: f64,
        delete: f64,
        permute_sentences: bool,
        mask_id: u32,
        pad: u32,
        sentence_end: Vec<bool>,
    ) -> Result<Self> {
        let poisson = if mask_ratio > 0.0 {
            Some(Poisson::new(lambda).map_err(|e| Error::data(format!("poisson_lambda {lambda}: {e}")))?)
        } else {
            None
        };
        Ok(Denoise {
            seq_len,
            mask_ratio,
            poisson,
            delete,
            permute_sentences,
            mask_id: mask_id as i32,
            pad: pad as i32,
            sentence_end: Arc::new(sentence_end),
            schema: output_schema(seq_len),
        })
    }

    fn ends_sentence(&self, id: i32) -> bool {
        self.sentence_end.get(id as usize).copied().unwrap_or(false)
    }

    /// Corrupts `inner` (the document without special tokens) into `out`.
    pub fn corrupt(&self, inner: &[i32], rng: &mut impl Rng, out: &mut Vec<i32>) {
        let mut tokens: Vec<i32> = inner.to_vec();
        if self.permute_sentences {
            let mut sentences: Vec<&[i32]> = tokens.split_inclusive(|&t| self.ends_sentence(t)).collect();
            sentences.shuffle(rng);
            tokens = sentences.concat();
        }
        let n = tokens.len();
        // masked[i]: token i is covered by a span; inserts[i]: a mask goes before token i.
        let mut masked = vec![false; n];
        let mut inserts = vec![false; n + 1];
        if let Some(poisson) = &self.poisson {
            let target = (n as f64 * self.mask_ratio).round() as usize;
            let mut covered = 0;
            let mut guard = 0;
            while covered < target && guard < 4 * n + 16 {
                guard += 1;
                let len = poisson.sample(rng) as usize;
                let start = rng.random_range(0..=n.saturating_sub(1));
                if len == 0 {
                    inserts[start] = true;
                    continue;
                }
                for m in masked.iter_mut().skip(start).take(len) {
                    if !*m {
                        *m = true;
                        covered += 1;
                    }
                }
            }
        }
        for i in 0..n {
            if inserts[i] {
                out.push(self.mask_id);
            }
            if masked[i] {
                if i == 0 || !masked[i - 1] {
                    out.push(self.mask_id);
                }
                continue;
            }
            if self.delete > 0.0 && rng.random_bool(self.delete) {
                continue;
            }
            out.push(tokens[i]);
        }
        if inserts[n] {
            out.push(self.mask_id);
        }
    }
}

impl Task for Denoise {
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn apply(&self, batch: &RecordBatch, keys: &[u64], cx: &TaskContext) -> Result<RecordBatch> {
        let l = self.seq_len;
        let n = keys.len() * l;
        let (mut inputs, mut labels, mut masks) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let mut row_out = Vec::with_capacity(l);
        for (row, &key) in framed_rows(batch, l)?.iter().zip(keys) {
            let mut rng = cx.rng(key);
            row_out.clear();
            row_out.extend_from_slice(row.prefix());
            self.corrupt(row.body(), &mut rng, &mut row_out);
            row_out.extend_from_slice(row.suffix());
            push_padded(&mut inputs, &mut masks, &row_out, l, self.pad);
            labels.extend_from_slice(&row.ids[..row.real]);
            labels.extend(std::iter::repeat_n(IGNORE, l - row.real));
        }
        Ok(RecordBatch::try_new(
            self.schema.clone(),
            vec![
                Arc::new(UInt64Array::from(keys.to_vec())),
                fixed_list(inputs, l),
                fixed_list(labels, l),
                fixed_list(masks, l),
            ],
        )?)
    }
}
