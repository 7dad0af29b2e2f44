//! Masked language modelling with HuggingFace `DataCollatorForLanguageModeling` semantics:
//! each non-special token is selected with probability `mask_prob`; a selected token becomes the
//! mask token with probability `mask_token_prob`, a random token with `random_token_prob`, and
//! stays otherwise; `labels` hold the original id at selected positions and −100 elsewhere.
//!
//! Where we differ on purpose: random replacements are drawn from the non-special ids only (HF
//! draws from the whole vocabulary and can insert `[CLS]` or `[PAD]` mid-sentence).

use std::sync::Arc;

use arrow::array::{RecordBatch, UInt64Array};
use arrow::datatypes::SchemaRef;
use rand::RngCore;

use super::{fixed_list, key_and_lists, list_values, Task, TaskContext};
use crate::error::{Error, Result};
use crate::spec::MlmSpec;

/// Label of positions that carry no loss (PyTorch's `ignore_index`).
pub const IGNORE: i32 = -100;

/// The MLM objective, configured.
#[derive(Debug, Clone)]
pub struct Mlm {
    pub seq_len: usize,
    pub whole_word: bool,
    mask_id: i32,
    select_threshold: u64,
    mask_threshold: u64,
    random_threshold: u64,
    pool: Arc<Vec<i32>>,
    schema: SchemaRef,
}

/// `p` as a threshold on a uniform u64: `draw < threshold` has probability `p` (to 2^-64).
fn threshold(p: f64) -> u64 {
    if p >= 1.0 {
        u64::MAX
    } else if p <= 0.0 {
        0
    } else {
        (p * 18_446_744_073_709_551_616.0) as u64
    }
}

impl Mlm {
    /// `mask_id` is the tokenizer's mask token; `pool` the ids a random replacement may take.
    pub fn new(spec: &MlmSpec, mask_id: u32, pool: Vec<i32>) -> Result<Self> {
        if pool.is_empty() && spec.random_token_prob > 0.0 {
            return Err(Error::data_hint(
                "the tokenizer has no non-special token to draw random replacements from",
                "use a tokenizer with a real vocabulary, or set `task.mlm.random_token_prob: 0`",
            ));
        }
        let seq_len = spec.seq_len as usize;
        Ok(Mlm {
            seq_len,
            whole_word: spec.whole_word,
            mask_id: mask_id as i32,
            select_threshold: threshold(spec.mask_prob),
            mask_threshold: threshold(spec.mask_token_prob),
            random_threshold: threshold((spec.mask_token_prob + spec.random_token_prob).min(1.0)),
            pool: Arc::new(pool),
            schema: output_schema(seq_len),
        })
    }
}

/// The MLM example schema: `example_key`, then fixed-size Int32 lists of `seq_len`.
pub fn output_schema(seq_len: usize) -> SchemaRef {
    key_and_lists(seq_len, &["input_ids", "attention_mask", "labels", "special_tokens_mask"])
}

impl Task for Mlm {
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn apply(&self, batch: &RecordBatch, keys: &[u64], cx: &TaskContext) -> Result<RecordBatch> {
        let l = self.seq_len;
        let ids = list_values(batch, "input_ids")?;
        let special = list_values(batch, "special_tokens_mask")?;
        let words = if self.whole_word { Some(list_values(batch, "word_ids")?) } else { None };
        let mut input = ids.to_vec();
        let mut labels = vec![IGNORE; ids.len()];
        for (row, &key) in keys.iter().enumerate() {
            let range = row * l..(row + 1) * l;
            let mut rng = cx.rng(key);
            let (ids, special) = (&ids[range.clone()], &special[range.clone()]);
            let (input, labels) = (&mut input[range.clone()], &mut labels[range.clone()]);
            match words {
                None => {
                    for (i, &s) in special.iter().enumerate() {
                        if s == 0 && rng.next_u64() < self.select_threshold {
                            self.corrupt(i, ids, input, labels, &mut rng);
                        }
                    }
                }
                Some(words) => {
                    let words = &words[range];
                    let (mut current, mut selected) = (-1i32, false);
                    for i in 0..l {
                        if special[i] != 0 || words[i] < 0 {
                            continue;
                        }
                        if words[i] != current {
                            current = words[i];
                            selected = rng.next_u64() < self.select_threshold;
                        }
                        if selected {
                            self.corrupt(i, ids, input, labels, &mut rng);
                        }
                    }
                }
            }
        }
        let attention = list_values(batch, "attention_mask")?.to_vec();
        Ok(RecordBatch::try_new(
            self.schema.clone(),
            vec![
                Arc::new(UInt64Array::from(keys.to_vec())),
                fixed_list(input, l),
                fixed_list(attention, l),
                fixed_list(labels, l),
                fixed_list(special.to_vec(), l),
            ],
        )?)
    }
}

impl Mlm {
    #[inline]
    fn corrupt(&self, i: usize, ids: &[i32], input: &mut [i32], labels: &mut [i32], rng: &mut impl RngCore) {
        labels[i] = ids[i];
        let u = rng.next_u64();
        if u < self.mask_threshold {
            input[i] = self.mask_id;
        } else if u < self.random_threshold {
            input[i] = self.pool[(rng.next_u64() % self.pool.len() as u64) as usize];
        }
    }
}
