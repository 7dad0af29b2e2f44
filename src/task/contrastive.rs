//! Two views of each document for SimCSE / DeCLUTR-style contrastive training. Each view is the
//! document's tokens (truncated to `seq_len` with the tokenizer's special tokens) after, in order,
//! an optional random contiguous `crop`, `token_dropout` (each token dropped with p, at least one
//! kept) and `mask` (each token replaced by the mask token with p); `identical` gives SimCSE's
//! dropout-only recipe (both views equal; the model's dropout makes them differ). Views are drawn
//! from the example's own RNG, view a first. In-batch negatives are the trainer's job; the stream
//! never puts an example twice in one batch.

use std::sync::Arc;

use arrow::array::{RecordBatch, UInt64Array};
use arrow::datatypes::SchemaRef;
use rand::Rng;

use super::{fixed_list, framed_rows, key_and_lists, push_padded, Task, TaskContext};
use crate::error::Result;

/// How a view is made.
#[derive(Debug, Clone, PartialEq)]
pub struct Views {
    pub crop: Option<(usize, usize)>,
    pub token_dropout: f64,
    pub mask_prob: f64,
    pub identical: bool,
}

/// The contrastive-text objective, configured.
#[derive(Debug, Clone)]
pub struct Contrastive {
    pub seq_len: usize,
    views: Views,
    mask_id: i32,
    pad: i32,
    schema: SchemaRef,
}

/// Schema: `example_key`, `input_ids_a`, `attention_mask_a`, `input_ids_b`, `attention_mask_b`.
pub fn output_schema(seq_len: usize) -> SchemaRef {
    key_and_lists(seq_len, &["input_ids_a", "attention_mask_a", "input_ids_b", "attention_mask_b"])
}

impl Contrastive {
    pub fn new(seq_len: usize, views: Views, mask_id: Option<u32>, pad: u32) -> Self {
        Contrastive {
            seq_len,
            views,
            mask_id: mask_id.map(|m| m as i32).unwrap_or(-1),
            pad: pad as i32,
            schema: output_schema(seq_len),
        }
    }

    /// One view of `inner` (the document without its special tokens) into `out`.
    pub fn view(&self, inner: &[i32], rng: &mut impl Rng, out: &mut Vec<i32>) {
        let v = &self.views;
        let mut tokens: &[i32] = inner;
        if v.identical {
            out.extend_from_slice(tokens);
            return;
        }
        if let Some((lo, hi)) = v.crop {
            let n = tokens.len();
            let (lo, hi) = (lo.min(n), hi.min(n));
            let len = if hi > lo { rng.random_range(lo..=hi) } else { hi };
            let start = if n > len { rng.random_range(0..=n - len) } else { 0 };
            tokens = &tokens[start..start + len];
        }
        let first = out.len();
        for &t in tokens {
            if v.token_dropout > 0.0 && rng.random_bool(v.token_dropout) {
                continue;
            }
            out.push(if v.mask_prob > 0.0 && rng.random_bool(v.mask_prob) { self.mask_id } else { t });
        }
        if out.len() == first && !tokens.is_empty() {
            out.push(tokens[0]);
        }
    }
}

impl Task for Contrastive {
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn apply(&self, batch: &RecordBatch, keys: &[u64], cx: &TaskContext) -> Result<RecordBatch> {
        let l = self.seq_len;
        let n = keys.len() * l;
        let mut cols: [Vec<i32>; 4] = std::array::from_fn(|_| Vec::with_capacity(n));
        let mut view = Vec::with_capacity(l);
        for (row, &key) in framed_rows(batch, l)?.iter().zip(keys) {
            let mut rng = cx.rng(key);
            for side in 0..2 {
                view.clear();
                view.extend_from_slice(row.prefix());
                self.view(row.body(), &mut rng, &mut view);
                view.extend_from_slice(row.suffix());
                let [ids, mask] = &mut cols[side * 2..side * 2 + 2] else { unreachable!() };
                push_padded(ids, mask, &view, l, self.pad);
            }
        }
        let [a, am, b, bm] = cols;
        Ok(RecordBatch::try_new(
            self.schema.clone(),
            vec![
                Arc::new(UInt64Array::from(keys.to_vec())),
                fixed_list(a, l),
                fixed_list(am, l),
                fixed_list(b, l),
                fixed_list(bm, l),
            ],
        )?)
    }
}
