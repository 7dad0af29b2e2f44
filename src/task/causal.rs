//! Next-token prediction over packed rows (GPT-2 / Megatron style). Documents end with EOS and
//! are packed into rows of `seq_len` (greedy concatenate-and-chunk, or best-fit, see
//! [`crate::stream::Packer`]). Conventions, chosen to match HuggingFace causal-LM models:
//!
//! - `labels` are aligned with `input_ids` and **the model shifts** (position `t` predicts
//!   `labels[t + 1]`), −100 where no loss is due: padding, and with `mask_across_documents` the
//!   first token of every document that does not start the row (it would be predicted from the
//!   previous document);
//! - `position_ids` restart at 0 at every document start (`reset_position_ids`), else count 0…;
//! - `segment_ids` number the documents inside a row 1, 2, … (0 for padding); boundaries for
//!   `cu_seqlens` are where `segment_ids` changes.
//!
//! Document boundaries are read from EOS tokens. No randomness.

use std::sync::Arc;

use arrow::array::{RecordBatch, UInt64Array};
use arrow::datatypes::SchemaRef;

use super::{fixed_list, key_and_lists, list_values, Task, TaskContext};
use crate::error::Result;
use crate::task::mlm::IGNORE;

/// The causal objective, configured.
#[derive(Debug, Clone)]
pub struct Causal {
    pub seq_len: usize,
    eos: i32,
    mask_across_documents: bool,
    reset_position_ids: bool,
    schema: SchemaRef,
}

/// Schema: `example_key`, then `input_ids`, `labels`, `position_ids`, `segment_ids`,
/// `attention_mask` as fixed-size Int32 lists of `seq_len`.
pub fn output_schema(seq_len: usize) -> SchemaRef {
    key_and_lists(seq_len, &["input_ids", "labels", "position_ids", "segment_ids", "attention_mask"])
}

impl Causal {
    pub fn new(seq_len: usize, eos: u32, mask_across_documents: bool, reset_position_ids: bool) -> Self {
        Causal { seq_len, eos: eos as i32, mask_across_documents, reset_position_ids, schema: output_schema(seq_len) }
    }
}

/// `cu_seqlens` of one row (FlashAttention's varlen layout) from its `segment_ids`: the start
/// of every segment and the end of the last; padding (segment 0) is excluded.
///
/// ```
/// // Two documents (3 and 2 tokens) packed into a row of 7, then padding.
/// assert_eq!(pretext::cu_seqlens(&[1, 1, 1, 2, 2, 0, 0]), vec![0, 3, 5]);
/// ```
pub fn cu_seqlens(segment_ids: &[i32]) -> Vec<i32> {
    let mut out = vec![0];
    for i in 1..segment_ids.len() {
        if segment_ids[i] != segment_ids[i - 1] {
            out.push(i as i32);
        }
    }
    let real = segment_ids.iter().take_while(|&&s| s != 0).count() as i32;
    out.retain(|&b| b <= real);
    if out.last() != Some(&real) {
        out.push(real);
    }
    out
}

impl Task for Causal {
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn apply(&self, batch: &RecordBatch, keys: &[u64], _cx: &TaskContext) -> Result<RecordBatch> {
        let l = self.seq_len;
        let ids = list_values(batch, "input_ids")?;
        let attention = list_values(batch, "attention_mask")?;
        let n = keys.len() * l;
        let (mut labels, mut positions, mut segments) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        for row in 0..keys.len() {
            let r = row * l..(row + 1) * l;
            let (ids, att) = (&ids[r.clone()], &attention[r]);
            let (mut seg, mut pos) = (1, 0);
            for i in 0..l {
                if att[i] == 0 {
                    labels.push(IGNORE);
                    positions.push(0);
                    segments.push(0);
                    continue;
                }
                let doc_start = i > 0 && ids[i - 1] == self.eos;
                if doc_start {
                    seg += 1;
                    pos = 0;
                }
                labels.push(if doc_start && self.mask_across_documents { IGNORE } else { ids[i] });
                positions.push(if self.reset_position_ids { pos } else { i as i32 });
                segments.push(seg);
                pos += 1;
            }
        }
        Ok(RecordBatch::try_new(
            self.schema.clone(),
            vec![
                Arc::new(UInt64Array::from(keys.to_vec())),
                fixed_list(ids.to_vec(), l),
                fixed_list(labels, l),
                fixed_list(positions, l),
                fixed_list(segments, l),
                fixed_list(attention.to_vec(), l),
            ],
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cu_seqlens_follow_segments() {
        assert_eq!(cu_seqlens(&[1, 1, 2, 2, 2, 3, 0, 0]), vec![0, 2, 5, 6]);
        assert_eq!(cu_seqlens(&[1, 1, 1]), vec![0, 3]);
    }
}
